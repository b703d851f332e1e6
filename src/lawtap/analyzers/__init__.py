"""Application analyzers, one module per protocol, and the registry the pipeline uses.

Each module exports ``ANALYZERS`` (service name -> StreamAnalyzer subclass) and
``RECORD_SCHEMAS`` (record type -> Arrow schema). :func:`registry` and
:func:`record_schemas` merge them.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache

import pyarrow as pa

MODULES = [
    "http", "dns", "tls", "quic", "smtp", "pop3", "imap", "sip", "rtp", "calls",
    "irc", "xmpp", "ftp", "tftp", "ssh", "radius", "dhcp", "gtpc",
]


@lru_cache(maxsize=1)
def _modules() -> tuple:
    mods = []
    for name in MODULES:
        full = f"lawtap.analyzers.{name}"
        if importlib.util.find_spec(full) is not None:
            mods.append(importlib.import_module(full))
    return tuple(mods)


def registry() -> dict[str, type]:
    """Service name (as DPI names it) -> analyzer class."""
    out: dict[str, type] = {}
    for m in _modules():
        out.update(getattr(m, "ANALYZERS", {}))
    return out


def record_schemas() -> dict[str, pa.Schema]:
    out: dict[str, pa.Schema] = {}
    for m in _modules():
        out.update(getattr(m, "RECORD_SCHEMAS", {}))
    return out
