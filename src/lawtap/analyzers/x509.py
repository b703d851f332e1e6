"""X.509 certificates seen in TLS handshakes: one ``x509`` record per certificate.

:func:`parse_certificate` turns one DER certificate into the record's fields (Zeek's x509.log,
with ``certificate.``/``san.``/``basic_constraints.`` prefixes flattened to ``_``). Parsing uses
the ``cryptography`` package; it never raises: a certificate it cannot parse still yields its
fingerprint, with the other fields null and ``parse_error`` set.
"""

from __future__ import annotations

import hashlib
import ipaddress
import warnings
from datetime import timezone
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import COMMON_FIELDS

_COMMON = COMMON_FIELDS  # lawtap.analyzers.base

X509_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("fingerprint", pa.string()),  # SHA-256 of the DER, lowercase hex
        pa.field("sha1", pa.string()),
        pa.field("version", pa.uint8()),
        pa.field("serial", pa.string()),  # hex, upper case (as Zeek/OpenSSL print it)
        pa.field("subject", pa.string()),  # RFC 4514, OpenSSL attribute names
        pa.field("issuer", pa.string()),
        pa.field("not_valid_before", pa.timestamp("us", tz="UTC")),
        pa.field("not_valid_after", pa.timestamp("us", tz="UTC")),
        pa.field("key_alg", pa.string()),
        pa.field("sig_alg", pa.string()),
        pa.field("key_type", pa.string()),
        pa.field("key_length", pa.uint32()),
        pa.field("exponent", pa.string()),
        pa.field("curve", pa.string()),
        pa.field("san_dns", pa.list_(pa.string())),
        pa.field("san_uri", pa.list_(pa.string())),
        pa.field("san_email", pa.list_(pa.string())),
        pa.field("san_ip", pa.list_(pa.string())),
        pa.field("basic_constraints_ca", pa.bool_()),
        pa.field("basic_constraints_path_len", pa.uint32()),
        pa.field("host_cert", pa.bool_()),
        pa.field("client_cert", pa.bool_()),
        pa.field("chain_index", pa.uint16()),
        pa.field("parse_error", pa.string()),
    ]
)

RECORD_SCHEMAS = {"x509": X509_SCHEMA}

MIME_USER = "application/x-x509-user-cert"
MIME_CA = "application/x-x509-ca-cert"

# OpenSSL's short names for attributes cryptography would print as dotted OIDs.
_ATTR_NAMES = {
    "2.5.4.9": "street",
    "2.5.4.17": "postalCode",
    "1.2.840.113549.1.9.1": "emailAddress",
    "2.5.4.5": "serialNumber",
    "2.5.4.15": "businessCategory",
    "1.3.6.1.4.1.311.60.2.1.3": "jurisdictionC",
    "1.3.6.1.4.1.311.60.2.1.2": "jurisdictionST",
    "1.3.6.1.4.1.311.60.2.1.1": "jurisdictionL",
    "2.5.4.4": "SN",
    "2.5.4.42": "GN",
    "2.5.4.12": "title",
    "2.5.4.43": "initials",
    "2.5.4.46": "dnQualifier",
    "2.5.4.65": "pseudonym",
    "2.5.4.97": "organizationIdentifier",
    "1.2.840.113549.1.9.2": "unstructuredName",
    "2.5.4.16": "postalAddress",
    "2.5.4.44": "generationQualifier",
}
_CURVES = {"secp256r1": "prime256v1", "secp192r1": "prime192v1"}


def _overrides() -> dict:
    from cryptography.x509 import ObjectIdentifier

    return {ObjectIdentifier(k): v for k, v in _ATTR_NAMES.items()}


_OVERRIDES: dict | None = None


def _name(n: Any) -> str:
    global _OVERRIDES
    if _OVERRIDES is None:
        _OVERRIDES = _overrides()
    return n.rfc4514_string(_OVERRIDES)


def serial_hex(n: int) -> str:
    neg = n < 0
    h = format(abs(n), "X")
    if len(h) % 2:
        h = "0" + h
    return ("-" if neg else "") + h


def empty_record() -> dict[str, Any]:
    return {name: None for name in X509_SCHEMA.names[6:]}


def parse_certificate(der: bytes) -> dict[str, Any]:
    """The ``x509`` record fields of one DER certificate (never raises)."""
    rec = empty_record()
    rec["fingerprint"] = hashlib.sha256(der).hexdigest()
    rec["sha1"] = hashlib.sha1(der).hexdigest()
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
    except ImportError:  # pragma: no cover - dependency missing
        rec["parse_error"] = "cryptography not installed"
        return rec
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cert = x509.load_der_x509_certificate(der)
    except Exception as e:  # noqa: BLE001 - any parse failure becomes a field
        rec["parse_error"] = f"{type(e).__name__}: {e}"[:200]
        return rec

    def attempt(field: str, fn: Any, assign: bool = True) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = fn()
                if assign:
                    rec[field] = value
        except Exception as e:  # noqa: BLE001
            if rec["parse_error"] is None:
                rec["parse_error"] = f"{field}: {type(e).__name__}"

    attempt("version", lambda: cert.version.value + 1)
    attempt("serial", lambda: serial_hex(cert.serial_number))
    attempt("subject", lambda: _name(cert.subject))
    attempt("issuer", lambda: _name(cert.issuer))
    attempt("not_valid_before", lambda: cert.not_valid_before_utc.astimezone(timezone.utc))
    attempt("not_valid_after", lambda: cert.not_valid_after_utc.astimezone(timezone.utc))
    attempt("sig_alg", lambda: _oid_name(cert.signature_algorithm_oid))
    attempt("key_alg", lambda: _oid_name(cert.public_key_algorithm_oid, {"ed25519": "ED25519", "ed448": "ED448"}))

    def key() -> None:
        k = cert.public_key()
        if isinstance(k, rsa.RSAPublicKey):
            rec["key_type"], rec["key_length"] = "rsa", k.key_size
            rec["exponent"] = str(k.public_numbers().e)
        elif isinstance(k, dsa.DSAPublicKey):
            rec["key_type"], rec["key_length"] = "dsa", k.key_size
        elif isinstance(k, ec.EllipticCurvePublicKey):
            rec["key_type"], rec["key_length"] = "ecdsa", k.curve.key_size
            rec["curve"] = _CURVES.get(k.curve.name, k.curve.name)
        elif isinstance(k, ed25519.Ed25519PublicKey):
            rec["key_type"], rec["key_length"] = "ed25519", 256
        elif isinstance(k, ed448.Ed448PublicKey):
            rec["key_type"], rec["key_length"] = "ed448", 456
        else:
            rec["key_type"] = type(k).__name__

    attempt("key_type", key, assign=False)

    def san() -> None:
        try:
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return
        dns = [str(v) for v in ext.get_values_for_type(x509.DNSName)]
        uri = [str(v) for v in ext.get_values_for_type(x509.UniformResourceIdentifier)]
        email = [str(v) for v in ext.get_values_for_type(x509.RFC822Name)]
        ips = [str(v) for v in ext.get_values_for_type(x509.IPAddress)]
        rec["san_dns"], rec["san_uri"], rec["san_email"], rec["san_ip"] = dns or None, uri or None, email or None, ips or None

    attempt("san_dns", san, assign=False)

    def bc() -> None:
        try:
            ext = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            return
        rec["basic_constraints_ca"] = bool(ext.ca)
        rec["basic_constraints_path_len"] = ext.path_length

    attempt("basic_constraints_ca", bc, assign=False)
    return rec


def _oid_name(oid: Any, fix: dict | None = None) -> str:
    name = getattr(oid, "_name", None)
    if not name or name == "Unknown OID":
        return oid.dotted_string
    return (fix or {}).get(name, name)


def hostname_matches(rec: dict[str, Any], host: str) -> bool:
    """Whether ``host`` (an SNI) is covered by the certificate: SAN DNS names (one leftmost
    ``*`` label), SAN IPs, else the subject's CN (RFC 6125)."""
    host = host.rstrip(".").lower()
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return str(ip) in (rec.get("san_ip") or [])
    names = rec.get("san_dns") or []
    if not names and rec.get("subject"):
        names = [p[3:] for p in _split_rdns(rec["subject"]) if p.startswith("CN=")]
    for pat in names:
        pat = pat.rstrip(".").lower()
        if pat == host:
            return True
        if pat.startswith("*.") and "." in host:
            first, rest = host.split(".", 1)
            if rest == pat[2:] and first:
                return True
    return False


def _split_rdns(s: str) -> list[str]:
    out, cur, esc = [], [], False
    for ch in s:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch in ",+":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out
