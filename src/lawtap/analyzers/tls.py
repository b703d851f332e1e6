"""TLS over TCP: handshake metadata (ssl.log), JA3/JA3S/JA4, certificates (x509.log + files).

Sans-IO, in layers that can be reused separately:

* :func:`parse_client_hello` / :func:`parse_server_hello` parse one handshake message body;
  :func:`ja3`, :func:`ja3s`, :func:`ja4` fingerprint them (JA3/JA3S as tshark computes them,
  GREASE values excluded; JA4 per the FoxIO spec, JA4 part "a" protocol ``t`` or ``q``).
* :class:`Handshake` consumes handshake messages per direction (from the TLS record layer or
  from QUIC CRYPTO frames) and builds the ``tls`` record, the ``x509`` records and one
  :class:`FileObject` per DER certificate.
* :class:`TLSAnalyzer` is the record layer: reassembly across ``feed()`` calls, handshake
  messages spanning records, SSLv2-compatible ClientHello; it stops parsing a direction once it
  is encrypted (ChangeCipherSpec in TLS <= 1.2, protected records in TLS 1.3) and skips
  ciphertext without buffering it.

Field names follow Zeek's ssl.log (``version``, ``cipher``, ``curve``, ``server_name``,
``resumed``, ``last_alert``, ``next_protocol``, ``established``, ``ssl_history``,
``cert_chain_fps``, ``client_cert_chain_fps``, ``sni_matches_cert``) plus ``ja3``, ``ja3s``,
``ja4``, ``alpn`` (offered list) and ``client_version``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import COMMON_FIELDS

from .base import ConnInfo, FileObject, StreamAnalyzer
from .x509 import MIME_CA, MIME_USER, X509_SCHEMA, hostname_matches, parse_certificate

# --------------------------------------------------------------------------------------------
# Schema

_COMMON = COMMON_FIELDS  # lawtap.analyzers.base

TLS_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("version", pa.string()),
        pa.field("cipher", pa.string()),
        pa.field("curve", pa.string()),
        pa.field("server_name", pa.string()),
        pa.field("resumed", pa.bool_()),
        pa.field("last_alert", pa.string()),
        pa.field("next_protocol", pa.string()),
        pa.field("established", pa.bool_()),
        pa.field("ssl_history", pa.string()),
        pa.field("cert_chain_fps", pa.list_(pa.string())),
        pa.field("client_cert_chain_fps", pa.list_(pa.string())),
        pa.field("sni_matches_cert", pa.bool_()),
        pa.field("ja3", pa.string()),
        pa.field("ja3s", pa.string()),
        pa.field("ja4", pa.string()),
        pa.field("alpn", pa.list_(pa.string())),
        pa.field("client_version", pa.string()),
    ]
)

RECORD_SCHEMAS = {"tls": TLS_SCHEMA, "x509": X509_SCHEMA}

# --------------------------------------------------------------------------------------------
# Names

VERSIONS = {
    0x0002: "SSLv2", 0x0300: "SSLv3", 0x0301: "TLSv10", 0x0302: "TLSv11", 0x0303: "TLSv12", 0x0304: "TLSv13",
    0xFEFF: "DTLSv10", 0xFEFD: "DTLSv12", 0xFEFC: "DTLSv13",
}


def version_name(v: int) -> str:
    if v in VERSIONS:
        return VERSIONS[v]
    if v >> 8 == 0x7F:
        return f"TLSv13-draft{v & 0xFF}"
    if v >> 8 == 0x7E:
        return f"TLSv13-draft{v & 0xFF}-FB"
    return f"unknown-{v}"


def _cipher_table() -> dict[int, str]:
    t: dict[int, str] = {}
    data = """
    0000 NULL_WITH_NULL_NULL;0001 RSA_WITH_NULL_MD5;0002 RSA_WITH_NULL_SHA;0003 RSA_EXPORT_WITH_RC4_40_MD5;
    0004 RSA_WITH_RC4_128_MD5;0005 RSA_WITH_RC4_128_SHA;0006 RSA_EXPORT_WITH_RC2_CBC_40_MD5;0007 RSA_WITH_IDEA_CBC_SHA;
    0008 RSA_EXPORT_WITH_DES40_CBC_SHA;0009 RSA_WITH_DES_CBC_SHA;000A RSA_WITH_3DES_EDE_CBC_SHA;
    000B DH_DSS_EXPORT_WITH_DES40_CBC_SHA;000C DH_DSS_WITH_DES_CBC_SHA;000D DH_DSS_WITH_3DES_EDE_CBC_SHA;
    000E DH_RSA_EXPORT_WITH_DES40_CBC_SHA;000F DH_RSA_WITH_DES_CBC_SHA;0010 DH_RSA_WITH_3DES_EDE_CBC_SHA;
    0011 DHE_DSS_EXPORT_WITH_DES40_CBC_SHA;0012 DHE_DSS_WITH_DES_CBC_SHA;0013 DHE_DSS_WITH_3DES_EDE_CBC_SHA;
    0014 DHE_RSA_EXPORT_WITH_DES40_CBC_SHA;0015 DHE_RSA_WITH_DES_CBC_SHA;0016 DHE_RSA_WITH_3DES_EDE_CBC_SHA;
    0017 DH_anon_EXPORT_WITH_RC4_40_MD5;0018 DH_anon_WITH_RC4_128_MD5;0019 DH_anon_EXPORT_WITH_DES40_CBC_SHA;
    001A DH_anon_WITH_DES_CBC_SHA;001B DH_anon_WITH_3DES_EDE_CBC_SHA;001E KRB5_WITH_DES_CBC_SHA;
    001F KRB5_WITH_3DES_EDE_CBC_SHA;0020 KRB5_WITH_RC4_128_SHA;0021 KRB5_WITH_IDEA_CBC_SHA;0022 KRB5_WITH_DES_CBC_MD5;
    0023 KRB5_WITH_3DES_EDE_CBC_MD5;0024 KRB5_WITH_RC4_128_MD5;0025 KRB5_WITH_IDEA_CBC_MD5;
    0026 KRB5_EXPORT_WITH_DES_CBC_40_SHA;0027 KRB5_EXPORT_WITH_RC2_CBC_40_SHA;0028 KRB5_EXPORT_WITH_RC4_40_SHA;
    0029 KRB5_EXPORT_WITH_DES_CBC_40_MD5;002A KRB5_EXPORT_WITH_RC2_CBC_40_MD5;002B KRB5_EXPORT_WITH_RC4_40_MD5;
    002C PSK_WITH_NULL_SHA;002D DHE_PSK_WITH_NULL_SHA;002E RSA_PSK_WITH_NULL_SHA;002F RSA_WITH_AES_128_CBC_SHA;
    0030 DH_DSS_WITH_AES_128_CBC_SHA;0031 DH_RSA_WITH_AES_128_CBC_SHA;0032 DHE_DSS_WITH_AES_128_CBC_SHA;
    0033 DHE_RSA_WITH_AES_128_CBC_SHA;0034 DH_anon_WITH_AES_128_CBC_SHA;0035 RSA_WITH_AES_256_CBC_SHA;
    0036 DH_DSS_WITH_AES_256_CBC_SHA;0037 DH_RSA_WITH_AES_256_CBC_SHA;0038 DHE_DSS_WITH_AES_256_CBC_SHA;
    0039 DHE_RSA_WITH_AES_256_CBC_SHA;003A DH_anon_WITH_AES_256_CBC_SHA;003B RSA_WITH_NULL_SHA256;
    003C RSA_WITH_AES_128_CBC_SHA256;003D RSA_WITH_AES_256_CBC_SHA256;003E DH_DSS_WITH_AES_128_CBC_SHA256;
    003F DH_RSA_WITH_AES_128_CBC_SHA256;0040 DHE_DSS_WITH_AES_128_CBC_SHA256;0041 RSA_WITH_CAMELLIA_128_CBC_SHA;
    0042 DH_DSS_WITH_CAMELLIA_128_CBC_SHA;0043 DH_RSA_WITH_CAMELLIA_128_CBC_SHA;0044 DHE_DSS_WITH_CAMELLIA_128_CBC_SHA;
    0045 DHE_RSA_WITH_CAMELLIA_128_CBC_SHA;0046 DH_anon_WITH_CAMELLIA_128_CBC_SHA;
    0060 RSA_EXPORT1024_WITH_RC4_56_MD5;0061 RSA_EXPORT1024_WITH_RC2_CBC_56_MD5;0062 RSA_EXPORT1024_WITH_DES_CBC_SHA;
    0063 DHE_DSS_EXPORT1024_WITH_DES_CBC_SHA;0064 RSA_EXPORT1024_WITH_RC4_56_SHA;0065 DHE_DSS_EXPORT1024_WITH_RC4_56_SHA;
    0066 DHE_DSS_WITH_RC4_128_SHA;0067 DHE_RSA_WITH_AES_128_CBC_SHA256;0068 DH_DSS_WITH_AES_256_CBC_SHA256;
    0069 DH_RSA_WITH_AES_256_CBC_SHA256;006A DHE_DSS_WITH_AES_256_CBC_SHA256;006B DHE_RSA_WITH_AES_256_CBC_SHA256;
    006C DH_anon_WITH_AES_128_CBC_SHA256;006D DH_anon_WITH_AES_256_CBC_SHA256;0084 RSA_WITH_CAMELLIA_256_CBC_SHA;
    0085 DH_DSS_WITH_CAMELLIA_256_CBC_SHA;0086 DH_RSA_WITH_CAMELLIA_256_CBC_SHA;0087 DHE_DSS_WITH_CAMELLIA_256_CBC_SHA;
    0088 DHE_RSA_WITH_CAMELLIA_256_CBC_SHA;0089 DH_anon_WITH_CAMELLIA_256_CBC_SHA;008A PSK_WITH_RC4_128_SHA;
    008B PSK_WITH_3DES_EDE_CBC_SHA;008C PSK_WITH_AES_128_CBC_SHA;008D PSK_WITH_AES_256_CBC_SHA;
    008E DHE_PSK_WITH_RC4_128_SHA;008F DHE_PSK_WITH_3DES_EDE_CBC_SHA;0090 DHE_PSK_WITH_AES_128_CBC_SHA;
    0091 DHE_PSK_WITH_AES_256_CBC_SHA;0092 RSA_PSK_WITH_RC4_128_SHA;0093 RSA_PSK_WITH_3DES_EDE_CBC_SHA;
    0094 RSA_PSK_WITH_AES_128_CBC_SHA;0095 RSA_PSK_WITH_AES_256_CBC_SHA;0096 RSA_WITH_SEED_CBC_SHA;
    0097 DH_DSS_WITH_SEED_CBC_SHA;0098 DH_RSA_WITH_SEED_CBC_SHA;0099 DHE_DSS_WITH_SEED_CBC_SHA;
    009A DHE_RSA_WITH_SEED_CBC_SHA;009B DH_anon_WITH_SEED_CBC_SHA;009C RSA_WITH_AES_128_GCM_SHA256;
    009D RSA_WITH_AES_256_GCM_SHA384;009E DHE_RSA_WITH_AES_128_GCM_SHA256;009F DHE_RSA_WITH_AES_256_GCM_SHA384;
    00A0 DH_RSA_WITH_AES_128_GCM_SHA256;00A1 DH_RSA_WITH_AES_256_GCM_SHA384;00A2 DHE_DSS_WITH_AES_128_GCM_SHA256;
    00A3 DHE_DSS_WITH_AES_256_GCM_SHA384;00A4 DH_DSS_WITH_AES_128_GCM_SHA256;00A5 DH_DSS_WITH_AES_256_GCM_SHA384;
    00A6 DH_anon_WITH_AES_128_GCM_SHA256;00A7 DH_anon_WITH_AES_256_GCM_SHA384;00A8 PSK_WITH_AES_128_GCM_SHA256;
    00A9 PSK_WITH_AES_256_GCM_SHA384;00AA DHE_PSK_WITH_AES_128_GCM_SHA256;00AB DHE_PSK_WITH_AES_256_GCM_SHA384;
    00AC RSA_PSK_WITH_AES_128_GCM_SHA256;00AD RSA_PSK_WITH_AES_256_GCM_SHA384;00AE PSK_WITH_AES_128_CBC_SHA256;
    00AF PSK_WITH_AES_256_CBC_SHA384;00B0 PSK_WITH_NULL_SHA256;00B1 PSK_WITH_NULL_SHA384;
    00B2 DHE_PSK_WITH_AES_128_CBC_SHA256;00B3 DHE_PSK_WITH_AES_256_CBC_SHA384;00B6 RSA_PSK_WITH_AES_128_CBC_SHA256;
    00B7 RSA_PSK_WITH_AES_256_CBC_SHA384;00BA RSA_WITH_CAMELLIA_128_CBC_SHA256;00BE DHE_RSA_WITH_CAMELLIA_128_CBC_SHA256;
    00C0 RSA_WITH_CAMELLIA_256_CBC_SHA256;00C4 DHE_RSA_WITH_CAMELLIA_256_CBC_SHA256;
    00FF EMPTY_RENEGOTIATION_INFO_SCSV;1301 AES_128_GCM_SHA256;1302 AES_256_GCM_SHA384;1303 CHACHA20_POLY1305_SHA256;
    1304 AES_128_CCM_SHA256;1305 AES_128_CCM_8_SHA256;5600 FALLBACK_SCSV;
    C001 ECDH_ECDSA_WITH_NULL_SHA;C002 ECDH_ECDSA_WITH_RC4_128_SHA;C003 ECDH_ECDSA_WITH_3DES_EDE_CBC_SHA;
    C004 ECDH_ECDSA_WITH_AES_128_CBC_SHA;C005 ECDH_ECDSA_WITH_AES_256_CBC_SHA;C006 ECDHE_ECDSA_WITH_NULL_SHA;
    C007 ECDHE_ECDSA_WITH_RC4_128_SHA;C008 ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA;C009 ECDHE_ECDSA_WITH_AES_128_CBC_SHA;
    C00A ECDHE_ECDSA_WITH_AES_256_CBC_SHA;C00B ECDH_RSA_WITH_NULL_SHA;C00C ECDH_RSA_WITH_RC4_128_SHA;
    C00D ECDH_RSA_WITH_3DES_EDE_CBC_SHA;C00E ECDH_RSA_WITH_AES_128_CBC_SHA;C00F ECDH_RSA_WITH_AES_256_CBC_SHA;
    C010 ECDHE_RSA_WITH_NULL_SHA;C011 ECDHE_RSA_WITH_RC4_128_SHA;C012 ECDHE_RSA_WITH_3DES_EDE_CBC_SHA;
    C013 ECDHE_RSA_WITH_AES_128_CBC_SHA;C014 ECDHE_RSA_WITH_AES_256_CBC_SHA;C015 ECDH_anon_WITH_NULL_SHA;
    C016 ECDH_anon_WITH_RC4_128_SHA;C017 ECDH_anon_WITH_3DES_EDE_CBC_SHA;C018 ECDH_anon_WITH_AES_128_CBC_SHA;
    C019 ECDH_anon_WITH_AES_256_CBC_SHA;C01A SRP_SHA_WITH_3DES_EDE_CBC_SHA;C01B SRP_SHA_RSA_WITH_3DES_EDE_CBC_SHA;
    C01C SRP_SHA_DSS_WITH_3DES_EDE_CBC_SHA;C01D SRP_SHA_WITH_AES_128_CBC_SHA;C01E SRP_SHA_RSA_WITH_AES_128_CBC_SHA;
    C01F SRP_SHA_DSS_WITH_AES_128_CBC_SHA;C020 SRP_SHA_WITH_AES_256_CBC_SHA;C021 SRP_SHA_RSA_WITH_AES_256_CBC_SHA;
    C022 SRP_SHA_DSS_WITH_AES_256_CBC_SHA;C023 ECDHE_ECDSA_WITH_AES_128_CBC_SHA256;
    C024 ECDHE_ECDSA_WITH_AES_256_CBC_SHA384;C025 ECDH_ECDSA_WITH_AES_128_CBC_SHA256;
    C026 ECDH_ECDSA_WITH_AES_256_CBC_SHA384;C027 ECDHE_RSA_WITH_AES_128_CBC_SHA256;C028 ECDHE_RSA_WITH_AES_256_CBC_SHA384;
    C029 ECDH_RSA_WITH_AES_128_CBC_SHA256;C02A ECDH_RSA_WITH_AES_256_CBC_SHA384;C02B ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
    C02C ECDHE_ECDSA_WITH_AES_256_GCM_SHA384;C02D ECDH_ECDSA_WITH_AES_128_GCM_SHA256;
    C02E ECDH_ECDSA_WITH_AES_256_GCM_SHA384;C02F ECDHE_RSA_WITH_AES_128_GCM_SHA256;C030 ECDHE_RSA_WITH_AES_256_GCM_SHA384;
    C031 ECDH_RSA_WITH_AES_128_GCM_SHA256;C032 ECDH_RSA_WITH_AES_256_GCM_SHA384;C033 ECDHE_PSK_WITH_RC4_128_SHA;
    C034 ECDHE_PSK_WITH_3DES_EDE_CBC_SHA;C035 ECDHE_PSK_WITH_AES_128_CBC_SHA;C036 ECDHE_PSK_WITH_AES_256_CBC_SHA;
    C037 ECDHE_PSK_WITH_AES_128_CBC_SHA256;C038 ECDHE_PSK_WITH_AES_256_CBC_SHA384;C039 ECDHE_PSK_WITH_NULL_SHA;
    C072 ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256;C073 ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384;
    C076 ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256;C077 ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384;
    C09C RSA_WITH_AES_128_CCM;C09D RSA_WITH_AES_256_CCM;C09E DHE_RSA_WITH_AES_128_CCM;C09F DHE_RSA_WITH_AES_256_CCM;
    C0A0 RSA_WITH_AES_128_CCM_8;C0A1 RSA_WITH_AES_256_CCM_8;C0A2 DHE_RSA_WITH_AES_128_CCM_8;
    C0A3 DHE_RSA_WITH_AES_256_CCM_8;C0A4 PSK_WITH_AES_128_CCM;C0A5 PSK_WITH_AES_256_CCM;C0A8 PSK_WITH_AES_128_CCM_8;
    C0A9 PSK_WITH_AES_256_CCM_8;C0AC ECDHE_ECDSA_WITH_AES_128_CCM;C0AD ECDHE_ECDSA_WITH_AES_256_CCM;
    C0AE ECDHE_ECDSA_WITH_AES_128_CCM_8;C0AF ECDHE_ECDSA_WITH_AES_256_CCM_8;
    CC13 ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256_OLD;CC14 ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256_OLD;
    CC15 DHE_RSA_WITH_CHACHA20_POLY1305_SHA256_OLD;CCA8 ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256;
    CCA9 ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;CCAA DHE_RSA_WITH_CHACHA20_POLY1305_SHA256;
    CCAB PSK_WITH_CHACHA20_POLY1305_SHA256;CCAC ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256;
    CCAD DHE_PSK_WITH_CHACHA20_POLY1305_SHA256;CCAE RSA_PSK_WITH_CHACHA20_POLY1305_SHA256;
    D001 ECDHE_PSK_WITH_AES_128_GCM_SHA256;D002 ECDHE_PSK_WITH_AES_256_GCM_SHA384;
    D003 ECDHE_PSK_WITH_AES_128_CCM_8_SHA256;D005 ECDHE_PSK_WITH_AES_128_CCM_SHA256
    """
    for item in data.split(";"):
        code, name = item.split()
        t[int(code, 16)] = "TLS_" + name
    return t


CIPHERS = _cipher_table()
SSLV2_CIPHERS = {
    0x010080: "SSLv20_CK_RC4_128_WITH_MD5", 0x020080: "SSLv20_CK_RC4_128_EXPORT40_WITH_MD5",
    0x030080: "SSLv20_CK_RC2_128_CBC_WITH_MD5", 0x040080: "SSLv20_CK_RC2_128_CBC_EXPORT40_WITH_MD5",
    0x050080: "SSLv20_CK_IDEA_128_CBC_WITH_MD5", 0x060040: "SSLv20_CK_DES_64_CBC_WITH_MD5",
    0x0700C0: "SSLv20_CK_DES_192_EDE3_CBC_WITH_MD5",
}


def cipher_name(c: int) -> str:
    if c in CIPHERS:
        return CIPHERS[c]
    if c in SSLV2_CIPHERS:
        return SSLV2_CIPHERS[c]
    if c <= 0xFFFF and is_grease(c):
        return f"grease-{c}"
    return f"unknown-{c}"


CURVES = {
    1: "sect163k1", 2: "sect163r1", 3: "sect163r2", 4: "sect193r1", 5: "sect193r2", 6: "sect233k1", 7: "sect233r1",
    8: "sect239k1", 9: "sect283k1", 10: "sect283r1", 11: "sect409k1", 12: "sect409r1", 13: "sect571k1",
    14: "sect571r1", 15: "secp160k1", 16: "secp160r1", 17: "secp160r2", 18: "secp192k1", 19: "secp192r1",
    20: "secp224k1", 21: "secp224r1", 22: "secp256k1", 23: "secp256r1", 24: "secp384r1", 25: "secp521r1",
    26: "brainpoolP256r1", 27: "brainpoolP384r1", 28: "brainpoolP512r1", 29: "x25519", 30: "x448",
    31: "brainpoolP256r1tls13", 32: "brainpoolP384r1tls13", 33: "brainpoolP512r1tls13",
    256: "ffdhe2048", 257: "ffdhe3072", 258: "ffdhe4096", 259: "ffdhe6144", 260: "ffdhe8192",
    0x0200: "MLKEM512", 0x0201: "MLKEM768", 0x0202: "MLKEM1024", 0x11EB: "SecP256r1MLKEM768",
    0x11EC: "X25519MLKEM768", 0x11ED: "SecP384r1MLKEM1024", 0x6399: "X25519Kyber768Draft00",
    0x639A: "SecP256r1Kyber768Draft00", 0xFF01: "arbitrary_explicit_prime_curves",
    0xFF02: "arbitrary_explicit_char2_curves",
}


def curve_name(c: int) -> str:
    return CURVES.get(c, f"unknown-{c}")


ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 21: "decryption_failed", 22: "record_overflow",
    30: "decompression_failure", 40: "handshake_failure", 41: "no_certificate", 42: "bad_certificate",
    43: "unsupported_certificate", 44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error", 51: "decrypt_error",
    60: "export_restriction", 70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
    86: "inappropriate_fallback", 90: "user_canceled", 100: "no_renegotiation", 109: "missing_extension",
    110: "unsupported_extension", 111: "certificate_unobtainable", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 114: "bad_certificate_hash_value", 115: "unknown_psk_identity",
    116: "certificate_required", 120: "no_application_protocol",
}

# handshake message type -> Zeek ssl_history letter (upper case when sent by the client)
HISTORY = {
    0: "h", 1: "c", 2: "s", 3: "v", 4: "t", 5: "e", 6: "j", 8: "o", 11: "x", 12: "k", 13: "r", 14: "n", 15: "y",
    16: "g", 20: "f", 21: "w", 22: "u", 23: "a", 24: "p", 254: "m",
}

HRR_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")

EXT_SNI, EXT_GROUPS, EXT_POINT_FORMATS, EXT_SIG_ALGS, EXT_ALPN = 0, 10, 11, 13, 16
EXT_SESSION_TICKET, EXT_PSK, EXT_SUPPORTED_VERSIONS, EXT_KEY_SHARE = 35, 41, 43, 51


def is_grease(v: int) -> bool:
    """RFC 8701 GREASE value (0x0A0A, 0x1A1A, ... 0xFAFA)."""
    return (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)


GREASE = frozenset(range(0x0A0A, 0x10000, 0x1010))  # the same values, for ``in`` tests in bulk


# --------------------------------------------------------------------------------------------
# Hello parsing


class _Reader:
    __slots__ = ("b", "o", "end")

    def __init__(self, b: bytes, o: int = 0, end: int | None = None) -> None:
        self.b, self.o, self.end = b, o, len(b) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.o + n > self.end:
            raise ValueError("truncated")
        v = self.b[self.o : self.o + n]
        self.o += n
        return v

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        v = self.take(2)
        return (v[0] << 8) | v[1]

    def u24(self) -> int:
        v = self.take(3)
        return (v[0] << 16) | (v[1] << 8) | v[2]

    def left(self) -> int:
        return self.end - self.o


@dataclass
class ClientHello:
    version: int
    random: bytes
    session_id: bytes
    ciphers: list[int]
    compression: list[int]
    extensions: list[tuple[int, bytes]] = field(default_factory=list)
    server_names: list[str] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)
    point_formats: list[int] = field(default_factory=list)
    sig_algs: list[int] = field(default_factory=list)
    alpn: list[str] = field(default_factory=list)
    alpn_raw: list[bytes] = field(default_factory=list)
    supported_versions: list[int] = field(default_factory=list)
    sslv2: bool = False

    @property
    def ext_types(self) -> list[int]:
        return [t for t, _ in self.extensions]


@dataclass
class ServerHello:
    version: int
    random: bytes
    session_id: bytes
    cipher: int
    compression: int
    extensions: list[tuple[int, bytes]] = field(default_factory=list)
    selected_version: int | None = None
    key_share_group: int | None = None
    alpn: str | None = None

    @property
    def ext_types(self) -> list[int]:
        return [t for t, _ in self.extensions]

    @property
    def is_hrr(self) -> bool:
        return self.random == HRR_RANDOM

    @property
    def negotiated_version(self) -> int:
        return self.selected_version if self.selected_version is not None else self.version


def _extensions(b: bytes, o: int) -> list[tuple[int, bytes]]:
    """The extension block at ``b[o:]`` as (type, body) pairs; none if the hello ends at ``o``.
    ValueError("truncated") if the block or an extension in it is cut short."""
    end = len(b)
    if o >= end:
        return []
    if o + 2 > end:
        raise ValueError("truncated")
    stop = o + 2 + ((b[o] << 8) | b[o + 1])
    if stop > end:
        raise ValueError("truncated")
    o += 2
    out: list[tuple[int, bytes]] = []
    while o < stop:
        if o + 4 > stop:
            raise ValueError("truncated")
        t = (b[o] << 8) | b[o + 1]
        ln = (b[o + 2] << 8) | b[o + 3]
        o += 4
        if o + ln > stop:
            raise ValueError("truncated")
        out.append((t, b[o : o + ln]))
        o += ln
    return out


def _u16s(b: bytes, o: int, n: int) -> list[int]:
    """The ``n // 2`` big-endian 16-bit values at ``b[o:]`` (the caller checked the length)."""
    return list(struct.unpack_from(">%dH" % (n // 2), b, o))


def _vector16(v: bytes) -> tuple[int, int] | None:
    """Where the body of a 16-bit-length vector at the start of ``v`` begins and ends; None if
    it is cut short."""
    if len(v) < 2:
        return None
    stop = 2 + ((v[0] << 8) | v[1])
    return (2, stop) if stop <= len(v) else None


def _str(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def parse_client_hello(body: bytes) -> ClientHello:
    """Parse a ClientHello handshake body (after the 4-byte handshake header). Raises ValueError
    when it is cut short; a malformed extension body leaves its field empty (or, for lists of
    names, with the names before the damage).

    Offsets and ``struct`` rather than a reader object: a hello is some 100 fields, and a call
    per field was most of the TLS analyzer's time (tests/test_tls.py checks it against the
    reader-based parser it replaced).
    """
    b = bytes(body)
    end = len(b)
    if end < 35:
        raise ValueError("truncated")
    version = (b[0] << 8) | b[1]
    rnd = b[2:34]
    o = 35 + b[34]
    if o + 2 > end:
        raise ValueError("truncated")
    sid = b[35:o]
    n = (b[o] << 8) | b[o + 1]
    o += 2
    if n % 2:
        raise ValueError("odd cipher suites length")
    if o + n + 1 > end:
        raise ValueError("truncated")
    ciphers = _u16s(b, o, n)
    o += n
    stop = o + 1 + b[o]
    if stop > end:
        raise ValueError("truncated")
    comp = list(b[o + 1 : stop])
    ch = ClientHello(version, rnd, sid, ciphers, comp)
    ch.extensions = _extensions(b, stop)
    for t, v in ch.extensions:
        if t == EXT_SNI and v:
            span = _vector16(v)
            if span is None:
                continue
            p, stop = span
            while p + 3 <= stop:  # (type, 16-bit length, name) entries
                nl = (v[p + 1] << 8) | v[p + 2]
                if p + 3 + nl > stop:
                    break
                if v[p] == 0:
                    ch.server_names.append(_str(v[p + 3 : p + 3 + nl]))
                p += 3 + nl
        elif t == EXT_GROUPS or t == EXT_SIG_ALGS:
            span = _vector16(v)
            if span is not None:
                values = _u16s(v, 2, span[1] - 2)
                if t == EXT_GROUPS:
                    ch.groups = values
                else:
                    ch.sig_algs = values
        elif t == EXT_POINT_FORMATS:
            if v and 1 + v[0] <= len(v):
                ch.point_formats = list(v[1 : 1 + v[0]])
        elif t == EXT_ALPN:
            span = _vector16(v)
            if span is None:
                continue
            p, stop = span
            while p < stop:  # (8-bit length, protocol) entries
                m = v[p]
                if p + 1 + m > stop:
                    break
                name = v[p + 1 : p + 1 + m]
                ch.alpn_raw.append(name)
                ch.alpn.append(_str(name))
                p += 1 + m
        elif t == EXT_SUPPORTED_VERSIONS:
            if v and 1 + v[0] <= len(v):
                ch.supported_versions = _u16s(v, 1, v[0])
    return ch


def parse_sslv2_client_hello(msg: bytes) -> ClientHello:
    """SSLv2 CLIENT-HELLO body (after the 2-byte record header and the message type byte)."""
    r = _Reader(msg)
    version = r.u16()
    cs_len, sid_len, ch_len = r.u16(), r.u16(), r.u16()
    if cs_len % 3:
        raise ValueError("bad SSLv2 cipher spec length")
    cr = _Reader(r.take(cs_len))
    ciphers = [int.from_bytes(cr.take(3), "big") for _ in range(cs_len // 3)]
    sid = r.take(sid_len)
    challenge = r.take(ch_len)
    return ClientHello(version, challenge, sid, ciphers, [], sslv2=True)


def parse_server_hello(body: bytes) -> ServerHello:
    """Parse a ServerHello handshake body (offsets, as :func:`parse_client_hello`)."""
    b = bytes(body)
    end = len(b)
    if end < 34:
        raise ValueError("truncated")
    version = (b[0] << 8) | b[1]
    rnd = b[2:34]
    if version >> 8 in (0x7F, 0x7E) and version & 0xFF < 22:
        # TLS 1.3 drafts before -22: no session id, no compression method
        if end < 36:
            raise ValueError("truncated")
        sid, cipher, comp, o = b"", (b[34] << 8) | b[35], 0, 36
    else:
        if end < 35:
            raise ValueError("truncated")
        o = 35 + b[34]
        if o + 3 > end:
            raise ValueError("truncated")
        sid = b[35:o]
        cipher = (b[o] << 8) | b[o + 1]
        comp = b[o + 2]
        o += 3
    sh = ServerHello(version, rnd, sid, cipher, comp)
    sh.extensions = _extensions(b, o)
    for t, v in sh.extensions:
        if t == EXT_SUPPORTED_VERSIONS and len(v) == 2:
            sh.selected_version = (v[0] << 8) | v[1]
        elif t in (EXT_KEY_SHARE, 40) and len(v) >= 2:  # 40: key_share of drafts <= 22
            sh.key_share_group = (v[0] << 8) | v[1]
        elif t == EXT_ALPN and v:
            span = _vector16(v)
            if span is not None and span[1] > 2 and 3 + v[2] <= span[1]:
                sh.alpn = _str(v[3 : 3 + v[2]])
    return sh


# --------------------------------------------------------------------------------------------
# Fingerprints


def ja3_string(ch: ClientHello) -> str:
    return ",".join(
        [
            str(ch.version),
            "-".join(str(c) for c in ch.ciphers if c not in GREASE),
            "-".join(str(e) for e in ch.ext_types if e not in GREASE),
            "-".join(str(g) for g in ch.groups if g not in GREASE),
            "-".join(str(p) for p in ch.point_formats),
        ]
    )


def ja3(ch: ClientHello) -> str:
    return hashlib.md5(ja3_string(ch).encode()).hexdigest()


def ja3s_string(sh: ServerHello) -> str:
    return ",".join(
        [str(sh.version), str(sh.cipher), "-".join(str(e) for e in sh.ext_types if e not in GREASE)]
    )


def ja3s(sh: ServerHello) -> str:
    return hashlib.md5(ja3s_string(sh).encode()).hexdigest()


JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3", 0x0002: "s2",
                0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}


def _sha12(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()[:12]


def ja4(ch: ClientHello, proto: str = "t") -> str:
    """JA4 (TLS client) fingerprint: ``proto`` is ``t`` (TCP), ``q`` (QUIC) or ``d`` (DTLS)."""
    ciphers = [c for c in ch.ciphers if c not in GREASE]
    exts = [e for e in ch.ext_types if e not in GREASE]
    versions = [v for v in ch.supported_versions if v not in GREASE]
    ver = max(versions) if versions else ch.version
    sni = "d" if EXT_SNI in exts else "i"
    if ch.alpn_raw and ch.alpn_raw[0]:
        a = ch.alpn_raw[0]
        first, last = a[0], a[-1]
        if chr(first).isascii() and chr(first).isalnum() and chr(last).isascii() and chr(last).isalnum():
            alpn = chr(first) + chr(last)
        else:
            alpn = f"{first:02x}"[0] + f"{last:02x}"[1]
    else:
        alpn = "00"
    part_a = f"{proto}{JA4_VERSIONS.get(ver, '00')}{sni}{min(len(ciphers), 99):02d}{min(len(exts), 99):02d}{alpn}"
    part_b = _sha12(",".join(sorted(f"{c:04x}" for c in ciphers))) if ciphers else "000000000000"
    rest = sorted(f"{e:04x}" for e in exts if e not in (EXT_SNI, EXT_ALPN))
    sigs = [f"{s:04x}" for s in ch.sig_algs if s not in GREASE]
    if rest:
        part_c = _sha12(",".join(rest) + ("_" + ",".join(sigs) if sigs else ""))
    else:
        part_c = "000000000000"
    return f"{part_a}_{part_b}_{part_c}"


# --------------------------------------------------------------------------------------------
# Handshake state (shared by TLS-over-TCP and QUIC)

MAX_HANDSHAKE_MESSAGE = 1 << 20


class Handshake:
    """Consumes handshake messages of both directions and accumulates what ssl.log reports.

    ``owner`` receives events (``records``, ``files``, ``weirds`` lists of a StreamAnalyzer).
    """

    def __init__(self, owner: StreamAnalyzer, proto: str = "t") -> None:
        self.owner = owner
        self.proto = proto
        self.ts: float | None = None
        self.history: list[str] = []
        self.client_hello: ClientHello | None = None
        self.server_hello: ServerHello | None = None
        self.hello_count = 0
        self.fields: dict[str, Any] = {name: None for name in TLS_SCHEMA.names[6:]}
        self.fields["resumed"] = False
        self.fields["established"] = False
        self.server_certs: list[dict[str, Any]] = []
        self.client_certs_seen = False
        self.client_key_exchange_seen = False
        self.client_ticket_empty_session = False
        self.client_psk = False
        self.logged = False
        self.tls13 = False

    # -- helpers

    def add_history(self, is_orig: bool, letter: str) -> None:
        if len(self.history) < 100:
            self.history.append(letter.upper() if is_orig else letter.lower())

    def weird(self, name: str, detail: str = "") -> None:
        self.owner.weirds.append((name, detail))

    def touch(self, ts: float) -> None:
        if self.ts is None:
            self.ts = ts

    # -- messages

    def message(self, is_orig: bool, mtype: int, body: bytes, ts: float) -> None:
        self.touch(ts)
        if mtype == 2 and not is_orig and len(body) >= 34 and body[2:34] == HRR_RANDOM:
            self.add_history(is_orig, "j")
        else:
            self.add_history(is_orig, HISTORY.get(mtype, "z"))
        try:
            if mtype == 1 and is_orig:
                self._client_hello(parse_client_hello(body))
            elif mtype == 2 and not is_orig:
                self._server_hello(parse_server_hello(body))
            elif mtype == 11:
                self._certificate(is_orig, body, ts)
            elif mtype == 12 and not is_orig:
                self._server_key_exchange(body)
            elif mtype == 16 and is_orig:
                self.client_key_exchange_seen = True
        except ValueError as e:
            self.weird("SSL_malformed_handshake_message", f"type {mtype}: {e}")

    def sslv2_client_hello(self, ch: ClientHello, ts: float) -> None:
        self.touch(ts)
        self.add_history(True, "c")
        self._client_hello(ch)

    def _client_hello(self, ch: ClientHello) -> None:
        f = self.fields
        self.hello_count += 1
        if self.client_hello is not None:
            return  # second ClientHello (after HelloRetryRequest): keep the first one's fingerprint
        self.client_hello = ch
        f["client_version"] = version_name(ch.version)
        if ch.server_names:
            f["server_name"] = ch.server_names[0]
            if len(ch.server_names) > 1:
                self.weird("SSL_many_server_names", ",".join(ch.server_names))
        f["alpn"] = list(ch.alpn) or None
        if not ch.sslv2:
            f["ja3"] = ja3(ch)
            f["ja4"] = ja4(ch, self.proto)
        for t, v in ch.extensions:
            if t == EXT_SESSION_TICKET and v:
                self.client_ticket_empty_session = True
            elif t == EXT_PSK:
                self.client_psk = True
        if ch.session_id and ch.session_id != bytes(32):
            self.client_ticket_empty_session = False

    def _server_hello(self, sh: ServerHello) -> None:
        f = self.fields
        self.server_hello = sh
        f["version"] = version_name(sh.negotiated_version)
        f["cipher"] = cipher_name(sh.cipher)
        f["ja3s"] = ja3s(sh)
        self.tls13 = sh.negotiated_version == 0x0304 or (sh.negotiated_version >> 8) in (0x7F, 0x7E)
        if sh.key_share_group is not None and not sh.is_hrr:
            f["curve"] = curve_name(sh.key_share_group)
        if sh.alpn is not None:
            f["next_protocol"] = sh.alpn
        ch = self.client_hello
        if ch is not None and ch.session_id and sh.session_id == ch.session_id and not self.tls13 \
                and (sh.negotiated_version >> 8) != 0x7F:
            f["resumed"] = True
        if self.client_psk and EXT_PSK in sh.ext_types:
            f["resumed"] = True

    def _certificate(self, is_orig: bool, body: bytes, ts: float) -> None:
        r = _Reader(body)
        if self.tls13:
            r.take(r.u8())  # certificate_request_context
        total = r.u24()
        lr = _Reader(r.take(total))
        ders = []
        while lr.left() > 0:
            ders.append(lr.take(lr.u24()))
            if self.tls13:
                lr.take(lr.u16())  # per-certificate extensions
        fps: list[str] = []
        for i, der in enumerate(ders):
            rec = parse_certificate(der)
            rec["ts"] = ts
            rec["chain_index"] = i
            rec["host_cert"] = (i == 0) and not is_orig
            rec["client_cert"] = is_orig
            if rec["parse_error"]:
                self.weird("x509_certificate_parse_error", rec["parse_error"])
            fps.append(rec["fingerprint"])
            self.owner.records.append(("x509", rec))
            self.owner.files.append(
                FileObject(
                    source="TLS", data=bytes(der), ts=ts, is_orig=is_orig, mime_type=MIME_USER if i == 0 else MIME_CA,
                    total_bytes=len(der),
                    meta={"chain_index": i, "fingerprint": rec["fingerprint"], "client_cert": is_orig,
                          "server_name": self.fields["server_name"]},
                )
            )
            if not is_orig:
                self.server_certs.append(rec)
        if is_orig:
            self.fields["client_cert_chain_fps"] = (self.fields["client_cert_chain_fps"] or []) + fps
        else:
            self.fields["cert_chain_fps"] = (self.fields["cert_chain_fps"] or []) + fps

    def _server_key_exchange(self, body: bytes) -> None:
        cname = self.fields.get("cipher") or ""
        if ("_ECDHE_" in cname or "_ECDH_anon_" in cname) and len(body) >= 3 and body[0] == 3:
            self.fields["curve"] = curve_name((body[1] << 8) | body[2])

    def change_cipher_spec(self, is_orig: bool, ts: float) -> None:
        self.touch(ts)
        self.add_history(is_orig, "i")
        if is_orig and self.client_ticket_empty_session and not self.client_key_exchange_seen:
            self.fields["resumed"] = True

    def alert(self, is_orig: bool, level: int, desc: int, ts: float) -> None:
        self.touch(ts)
        self.add_history(is_orig, "l")
        self.fields["last_alert"] = ALERTS.get(desc, f"unknown-{desc}")

    def heartbeat(self, is_orig: bool, ts: float) -> None:
        self.add_history(is_orig, "b")

    # -- output

    def record(self) -> dict[str, Any] | None:
        """The ``tls`` record (once; None when nothing TLS-like was seen or already logged)."""
        if self.logged or self.ts is None:
            return None
        self.logged = True
        f = dict(self.fields)
        f["ts"] = self.ts
        f["ssl_history"] = "".join(self.history) or None
        if f["server_name"] and self.server_certs:
            f["sni_matches_cert"] = hostname_matches(self.server_certs[0], f["server_name"])
        return f

    def emit(self) -> None:
        rec = self.record()
        if rec is not None:
            self.owner.records.append(("tls", rec))


# --------------------------------------------------------------------------------------------
# Record layer

CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APPDATA, CT_HEARTBEAT = 20, 21, 22, 23, 24
MAX_RECORD = (1 << 14) + 2048


class _Dir:
    __slots__ = ("buf", "hs", "encrypted", "dead", "skip", "records", "first")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.hs = bytearray()
        self.encrypted = False
        self.dead = False
        self.skip = 0  # ciphertext bytes still to drop (body of the current record)
        self.records = 0
        self.first = True


class TLSAnalyzer(StreamAnalyzer):
    """TLS (SSLv3 - TLS 1.3) over a TCP byte stream."""

    service = "tls"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self.hs = Handshake(self, "t")
        self.dirs = {True: _Dir(), False: _Dir()}
        self.done = False

    # -- StreamAnalyzer hooks

    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self.done or not data:
            return
        d = self.dirs[is_orig]
        if d.dead:
            return
        try:
            self._feed(d, is_orig, data, ts)
        except Exception as e:  # noqa: BLE001 - never raise on input
            self.weirds.append(("SSL_internal_error", f"{type(e).__name__}: {e}"[:200]))
            d.dead = True
            d.buf.clear()

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        d = self.dirs[is_orig]
        if self.done or d.dead:
            return
        if d.skip >= length and not d.buf:
            d.skip -= length  # the hole is inside ciphertext we were skipping anyway
            return
        self.weirds.append(("SSL_gap", f"{'orig' if is_orig else 'resp'} {length}"))
        d.dead = True
        d.buf.clear()
        d.hs.clear()

    def finish(self, ts: float) -> None:
        if not self.done:
            self.done = True
            self.hs.emit()

    # -- internals

    def _feed(self, d: _Dir, is_orig: bool, data: bytes, ts: float) -> None:
        if d.skip:
            if len(data) <= d.skip:
                d.skip -= len(data)
                return
            data = data[d.skip :]
            d.skip = 0
        d.buf += data
        buf = d.buf
        while buf and not d.dead and not self.done:
            if d.first and buf[0] & 0x80:
                if not self._sslv2(d, is_orig, ts):
                    return
                continue
            if len(buf) < 5:
                return
            ctype, major, minor, length = buf[0], buf[1], buf[2], (buf[3] << 8) | buf[4]
            if not (CT_CCS <= ctype <= CT_HEARTBEAT) or major != 3 or length > MAX_RECORD:
                self.weirds.append(("SSL_bad_record", f"type={ctype} version={major}.{minor} length={length}"))
                d.dead = True
                buf.clear()
                return
            d.first = False
            ciphertext = ctype == CT_APPDATA or (d.encrypted and ctype != CT_CCS)
            if ciphertext:
                d.records += 1
                self.hs.touch(ts)
                self._ciphertext(is_orig)
                avail = len(buf) - 5
                if avail >= length:
                    del buf[: 5 + length]
                else:
                    d.skip = length - avail
                    buf.clear()
                    return
                continue
            if len(buf) < 5 + length:
                return
            body = bytes(buf[5 : 5 + length])
            del buf[: 5 + length]
            d.records += 1
            self._record(d, is_orig, ctype, body, ts)

    def _sslv2(self, d: _Dir, is_orig: bool, ts: float) -> bool:
        buf = d.buf
        if len(buf) < 3:
            return False
        length = ((buf[0] & 0x7F) << 8) | buf[1]
        if len(buf) < 2 + length:
            return False
        msg = bytes(buf[2 : 2 + length])
        del buf[: 2 + length]
        d.first = False
        if is_orig and msg and msg[0] == 1:
            try:
                self.hs.sslv2_client_hello(parse_sslv2_client_hello(msg[1:]), ts)
                return True
            except ValueError as e:
                self.weirds.append(("SSLv2_malformed_client_hello", str(e)))
        else:
            self.weirds.append(("SSLv2_unsupported_message", f"type {msg[0] if msg else -1}"))
        d.dead = True
        buf.clear()
        return False

    def _ciphertext(self, is_orig: bool) -> None:
        d = self.dirs[is_orig]
        if not d.encrypted and self.hs.tls13:
            d.encrypted = True  # TLS 1.3: protected records from now on in this direction
        if self.dirs[True].encrypted and self.dirs[False].encrypted and not self.hs.fields["established"]:
            self.hs.fields["established"] = True
            # Nothing more is readable in either direction: log now and ignore the rest.
            self.done = True
            self.hs.emit()

    def _record(self, d: _Dir, is_orig: bool, ctype: int, body: bytes, ts: float) -> None:
        if ctype == CT_HANDSHAKE:
            d.hs += body
            self._handshake_messages(d, is_orig, ts)
        elif ctype == CT_CCS:
            self.hs.change_cipher_spec(is_orig, ts)
            if self.hs.server_hello is not None and not self.hs.tls13:
                d.encrypted = True
                d.hs.clear()
        elif ctype == CT_ALERT:
            if len(body) == 2:
                self.hs.alert(is_orig, body[0], body[1], ts)
            else:
                self.weirds.append(("SSL_bad_alert_length", str(len(body))))
        elif ctype == CT_HEARTBEAT:
            self.hs.heartbeat(is_orig, ts)

    def _handshake_messages(self, d: _Dir, is_orig: bool, ts: float) -> None:
        hs = d.hs
        while len(hs) >= 4:
            mtype = hs[0]
            ln = (hs[1] << 16) | (hs[2] << 8) | hs[3]
            if ln > MAX_HANDSHAKE_MESSAGE:
                self.weirds.append(("SSL_handshake_message_too_large", f"type {mtype} length {ln}"))
                d.dead = True
                hs.clear()
                return
            if len(hs) < 4 + ln:
                return
            body = bytes(hs[4 : 4 + ln])
            del hs[: 4 + ln]
            self.hs.message(is_orig, mtype, body, ts)


ANALYZERS = {"tls": TLSAnalyzer}
