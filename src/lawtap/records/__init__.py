"""Record types and their Arrow schemas, defined once.

Every log type lawtap writes is listed in :data:`SCHEMAS`; a sink writes
``CASE_DIR/<type>.parquet`` (and ``<type>.log`` JSON lines with ``--json``) with exactly that
schema, and ``lawtap query`` exposes one DuckDB view per type. Field names follow Zeek's where
Zeek has one, so ``id.orig_h``, ``uid``, ``conn_state`` and ``history`` mean what analysts expect.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")


def as_timestamps(us: pa.Array, ts_type: pa.DataType = TS) -> pa.Array:
    """An int64 column of microseconds since the epoch as ``ts_type`` (a ``timestamp("us")``).

    Why a view, not ``cast``: the two share one layout, and ``cast`` imports
    ``pyarrow.compute``, which costs each process of a run about 0.16 s (it builds a Python
    wrapper, with parsed docs, for every Arrow function)."""
    if pa.types.is_timestamp(ts_type) and ts_type.unit == "us" and pa.types.is_int64(us.type):
        return us.view(ts_type)
    return us.cast(ts_type)

CONN = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("uid", pa.string(), nullable=False),
        pa.field("id.orig_h", pa.string(), nullable=False),
        pa.field("id.orig_p", pa.uint16(), nullable=False),
        pa.field("id.resp_h", pa.string(), nullable=False),
        pa.field("id.resp_p", pa.uint16(), nullable=False),
        pa.field("proto", pa.string(), nullable=False),
        pa.field("service", pa.string()),
        pa.field("duration", pa.float64()),
        pa.field("orig_bytes", pa.int64()),
        pa.field("resp_bytes", pa.int64()),
        pa.field("conn_state", pa.string()),
        pa.field("missed_bytes", pa.int64()),
        pa.field("history", pa.string()),
        pa.field("orig_pkts", pa.int64()),
        pa.field("orig_ip_bytes", pa.int64()),
        pa.field("resp_pkts", pa.int64()),
        pa.field("resp_ip_bytes", pa.int64()),
        pa.field("tunnel_parents", pa.list_(pa.string())),
        pa.field("vlan", pa.uint16()),
        pa.field("inner_vlan", pa.uint16()),
        pa.field("ip_proto", pa.uint8()),
        # Internal flow number: joins conn to packets (the flow -> packets index).
        pa.field("fid", pa.int64(), nullable=False),
    ]
)

TUNNEL = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("uid", pa.string(), nullable=False),
        pa.field("id.orig_h", pa.string(), nullable=False),
        pa.field("id.orig_p", pa.uint16(), nullable=False),
        pa.field("id.resp_h", pa.string(), nullable=False),
        pa.field("id.resp_p", pa.uint16(), nullable=False),
        pa.field("tunnel_type", pa.string(), nullable=False),  # Tunnel::GTPv1, ::GRE, ::IP, ::VXLAN
        pa.field("action", pa.string(), nullable=False),  # Tunnel::DISCOVER
        pa.field("duration", pa.float64()),
        pa.field("packets", pa.int64()),
        pa.field("fid", pa.int64(), nullable=False),
    ]
)

WEIRD = pa.schema(
    [
        pa.field("ts", TS),
        pa.field("uid", pa.string()),
        pa.field("name", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("source", pa.string()),  # which stage reported it: reader, decode, flow, ...
        pa.field("frame", pa.int64()),  # 1-based packet number in the run, when known
        pa.field("file", pa.string()),
        pa.field("file_offset", pa.int64()),
    ]
)

# The flow -> packets index: one row per packet that belongs to a flow (tunnelled packets carry
# both their inner flow and their outer flow), enough to cut the packet back out of its source.
PACKETS = pa.schema(
    [
        pa.field("frame", pa.int64(), nullable=False),  # 1-based, in processing order
        pa.field("ts_ns", pa.int64(), nullable=False),
        pa.field("fid", pa.int64(), nullable=False),  # innermost flow (-1 when none)
        pa.field("outer_fid", pa.int64(), nullable=False),  # UDP tunnel's flow (-1 when none)
        pa.field("file_id", pa.int16(), nullable=False),
        pa.field("file_offset", pa.int64(), nullable=False),
        pa.field("caplen", pa.int32(), nullable=False),
        pa.field("wirelen", pa.int32(), nullable=False),
        pa.field("linktype", pa.int32(), nullable=False),
    ]
)

class _SchemaRegistry(dict):
    """``SCHEMAS``: the core types at once, the application analyzers' types on first need.

    Why lazy: the analyzers' schemas live in their modules, and importing all eighteen (regular
    expressions, the ``email`` package…) costs ~0.1 s, which a flows-only run would pay for
    nothing. Looking up a core type (``conn``, ``packets``…) never loads them; any other lookup,
    a membership test that misses, or walking the registry loads them once (thread-safe).
    """

    _complete = False

    def _load(self) -> None:
        if not self._complete:
            with _REGISTRY_LOCK:
                if not self._complete:
                    _register_analyzer_schemas(self)
                    type(self)._complete = True

    def __missing__(self, key: str) -> pa.Schema:
        if self._complete:
            raise KeyError(key)
        self._load()
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        if dict.__contains__(self, key):
            return True
        self._load()
        return dict.__contains__(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __iter__(self) -> Iterator[str]:
        self._load()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._load()
        return dict.__len__(self)

    def keys(self):  # noqa: ANN201 - dict's signature
        self._load()
        return dict.keys(self)

    def values(self):  # noqa: ANN201 - dict's signature
        self._load()
        return dict.values(self)

    def items(self):  # noqa: ANN201 - dict's signature
        self._load()
        return dict.items(self)


_REGISTRY_LOCK = threading.Lock()

SCHEMAS: dict[str, pa.Schema] = _SchemaRegistry({
    "conn": CONN,
    "tunnel": TUNNEL,
    "weird": WEIRD,
    "packets": PACKETS,
})

FILES = pa.schema(
    [
        pa.field("ts", TS, nullable=False),
        pa.field("fuid", pa.string(), nullable=False),
        pa.field("uid", pa.string()),
        pa.field("id.orig_h", pa.string()),
        pa.field("id.orig_p", pa.uint16()),
        pa.field("id.resp_h", pa.string()),
        pa.field("id.resp_p", pa.uint16()),
        pa.field("source", pa.string(), nullable=False),  # HTTP, SMTP, POP3, IMAP, FTP_DATA, TFTP, IRC_DCC, RTP, TLS
        pa.field("is_orig", pa.bool_()),
        pa.field("filename", pa.string()),
        pa.field("mime_type", pa.string()),
        pa.field("total_bytes", pa.int64()),
        pa.field("seen_bytes", pa.int64(), nullable=False),
        pa.field("missing_bytes", pa.int64(), nullable=False),
        pa.field("md5", pa.string()),  # null for what lawtap made itself (WAV from RTP): FileObject.derived
        pa.field("sha1", pa.string()),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("extracted", pa.string()),  # path of the artifact under the case, if stored
    ]
)
SCHEMAS["files"] = FILES


def _register_analyzer_schemas(registry: dict[str, pa.Schema]) -> None:
    """Record types of the application analyzers join the registry (one view each in queries)."""
    from lawtap.analyzers import record_schemas
    from lawtap.identity import IDENTITY_SCHEMA

    for name, schema in record_schemas().items():
        dict.setdefault(registry, name, schema)
    dict.__setitem__(registry, "identity", IDENTITY_SCHEMA)  # who held which address when (lawtap.identity)
