"""ETSI X1 (TS 103 221-1): warrants provisioned by an ADMF over HTTPS with mutual TLS.

* :mod:`lawtap.x1.schema` - the ETSI XSDs (vendored, BSD-3) and validation of X1 documents;
* :mod:`lawtap.x1.messages` - X1 requests read into :class:`X1Task` values, X1 responses built;
* :mod:`lawtap.x1.server` - :class:`X1Service` (dispatch to an :class:`X1Backend`, audit hook)
  and :class:`X1Server` (the HTTPS endpoint).

An X1 task only proposes a warrant: it intercepts nothing until a second person approves it in
lawtap (see ``docs/x1.md``).
"""

from lawtap.x1.messages import (
    REQUEST_MESSAGE_TYPES,
    SCOPE_IRI_CC,
    SCOPE_IRI_ONLY,
    SUPPORTED_REQUESTS,
    TARGET_KIND_OF,
    Envelope,
    ErrorCode,
    Scope,
    TargetKind,
    X1DocumentError,
    X1Error,
    X1Mediation,
    X1Message,
    X1Target,
    X1Task,
    parse_document,
    task_from_details,
    x1_target,
)
from lawtap.x1.schema import X1_NS, X1_VERSION, check_document, load_schema, locate_schema_files
from lawtap.x1.server import (
    AuditHook,
    InMemoryBackend,
    X1Backend,
    X1Reply,
    X1Server,
    X1Service,
    server_tls_context,
)

__all__ = [
    "REQUEST_MESSAGE_TYPES",
    "SCOPE_IRI_CC",
    "SCOPE_IRI_ONLY",
    "SUPPORTED_REQUESTS",
    "TARGET_KIND_OF",
    "X1_NS",
    "X1_VERSION",
    "AuditHook",
    "Envelope",
    "ErrorCode",
    "InMemoryBackend",
    "Scope",
    "TargetKind",
    "X1Backend",
    "X1DocumentError",
    "X1Error",
    "X1Mediation",
    "X1Message",
    "X1Reply",
    "X1Server",
    "X1Service",
    "X1Target",
    "X1Task",
    "check_document",
    "load_schema",
    "locate_schema_files",
    "parse_document",
    "server_tls_context",
    "task_from_details",
    "x1_target",
]
