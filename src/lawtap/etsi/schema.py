"""The ETSI LI ASN.1 modules, compiled once with asn1tools (BER).

Why asn1tools and these files: asn1tools cannot compile the pristine TS 102 232-1 modules (no
RELATIVE-OID, no ``Module.Type`` references, ~25 imports), so we compile the *derived* subset kept
in ``shared/standards/etsi/derived/ip-email-voip/asn1tools/`` (LI-PS-PDU v43, IPAccessPDU v18,
EmailPDU v20, IPMultimediaPDU v17, TS 103 280 v281). RELATIVE-OID fields are OCTET STRINGs there,
which gives the same BER bytes under their IMPLICIT tags when we supply the encoded
sub-identifiers (see :data:`lawtap.etsi.pdu.OBJ_IPCC` and friends). Tests decode every PDU we emit
with pycrate compiled from the pristine modules, an independent compiler.

The same files are vendored in ``lawtap/etsi/asn1/`` (with the ETSI BSD-3 licence), so lawtap
works without the shared research folder; the shared copy wins when it is present so a schema fix
there is picked up, and a test keeps the two identical.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from lawtap.errors import LawtapError

ASN1_FILES = (
    "LI-PS-PDU-subset.asn",
    "IPAccessPDU.asn",
    "EmailPDU.asn",
    "IPMultimediaPDU.asn",
    "TS_103_280.asn1",
)
_DERIVED = Path("standards") / "etsi" / "derived" / "ip-email-voip" / "asn1tools"


class EtsiError(LawtapError):
    """Something in ETSI encoding or handover failed (one clear line)."""


class PduDecodeError(EtsiError):
    """Bytes that are not a PS-PDU we can decode (truncated, malformed or off-schema)."""


def repo_root() -> Path:
    """The source checkout holding ``src/lawtap`` (meaningful for editable installs)."""
    return Path(__file__).resolve().parents[3]


def shared_dir() -> Path | None:
    """The shared research folder: ``$LAWTAP_SHARED``, else ``../shared`` beside the repo root."""
    env = os.environ.get("LAWTAP_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(repo_root().parent / "shared")
    for c in candidates:
        if (c / "standards" / "etsi").is_dir():
            return c
    return None


def vendored_dir() -> Path:
    """The copy shipped inside the package."""
    return Path(__file__).resolve().parent / "asn1"


def module_dir() -> Path:
    """Where the compiled modules come from: the shared derived set if present, else the vendored one."""
    shared = shared_dir()
    if shared is not None and all((shared / _DERIVED / f).is_file() for f in ASN1_FILES):
        return shared / _DERIVED
    return vendored_dir()


@lru_cache(maxsize=1)
def compiled() -> Any:
    """The asn1tools BER specification (compiled on first use, ~1 s, then cached)."""
    import asn1tools

    where = module_dir()
    try:
        return asn1tools.compile_files([str(where / f) for f in ASN1_FILES], "ber")
    except Exception as e:  # asn1tools raises several unrelated types
        raise EtsiError(f"cannot compile the ETSI ASN.1 modules in {where}: {e}") from None


def encode(type_name: str, value: dict[str, Any]) -> bytes:
    """BER-encode ``value`` as ``type_name``; a value off-schema is an :class:`EtsiError`."""
    try:
        return bytes(compiled().encode(type_name, value))
    except Exception as e:
        raise EtsiError(f"cannot encode {type_name}: {e}") from None


def decode(type_name: str, data: bytes) -> Any:
    """BER-decode ``data`` as ``type_name``; anything undecodable is a :class:`PduDecodeError`.

    asn1tools raises its own errors but also IndexError/ValueError/RecursionError on hostile
    input, so every failure is folded into one clean error type for the LEMF and the fuzz tests.
    """
    try:
        return compiled().decode(type_name, bytes(data))
    except RecursionError:
        raise PduDecodeError(f"{type_name}: nesting too deep") from None
    except Exception as e:
        raise PduDecodeError(f"{type_name}: {str(e)[:200] or type(e).__name__}") from None
