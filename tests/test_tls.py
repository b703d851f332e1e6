"""TLS, QUIC and X.509 analyzers: hand-built handshakes and the corpus oracles.

Oracles: tshark ``tls_hello.tsv`` (SNI, JA3, JA3S per stream), ``tls_certificates.tsv``
(certificate SHA-256), the FoxIO JA4 snapshots, and Zeek's ssl.log / x509.log / quic.log baselines.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
import struct
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import capture_id, corpus_captures, corpus_root, needs_corpus
from lawtap.analyzers import quic as Q
from lawtap.analyzers import tls as T
from lawtap.analyzers import x509 as X
from lawtap.analyzers.base import ConnInfo

CONN = ConnInfo("C1", "10.0.0.1", 40000, "10.0.0.2", 443, "tcp")
UCONN = ConnInfo("C2", "10.0.0.1", 40001, "10.0.0.2", 443, "udp")

# ------------------------------------------------------------------------------------------
# builders


def ext(t: int, body: bytes) -> bytes:
    return struct.pack("!HH", t, len(body)) + body


def u16list(vals, lenfmt="!H") -> bytes:
    b = b"".join(struct.pack("!H", v) for v in vals)
    return struct.pack(lenfmt, len(b)) + b


def sni_ext(name: str) -> bytes:
    n = name.encode()
    entry = b"\x00" + struct.pack("!H", len(n)) + n
    return ext(0, struct.pack("!H", len(entry)) + entry)


def alpn_ext(protos) -> bytes:
    enc = [p.encode() for p in protos]
    body = b"".join(bytes([len(p)]) + p for p in enc)
    return ext(16, struct.pack("!H", len(body)) + body)


def client_hello(exts: bytes, ciphers=(0x1A1A, 0x1301, 0xC02F, 0x002F), version=0x0303, sid=b"") -> bytes:
    body = struct.pack("!H", version) + bytes(32) + bytes([len(sid)]) + sid + u16list(ciphers) + b"\x01\x00"
    body += struct.pack("!H", len(exts)) + exts
    return b"\x01" + len(body).to_bytes(3, "big") + body


def server_hello(cipher=0xC02F, exts: bytes = b"", version=0x0303, sid=b"", random=bytes(range(32))) -> bytes:
    body = struct.pack("!H", version) + random + bytes([len(sid)]) + sid + struct.pack("!HB", cipher, 0)
    if exts:
        body += struct.pack("!H", len(exts)) + exts
    return b"\x02" + len(body).to_bytes(3, "big") + body


def hs_msg(t: int, body: bytes) -> bytes:
    return bytes([t]) + len(body).to_bytes(3, "big") + body


def record(ctype: int, payload: bytes, version=0x0303) -> bytes:
    return struct.pack("!BHH", ctype, version, len(payload)) + payload


def chrome_like_exts() -> bytes:
    return (
        ext(0x0A0A, b"")
        + sni_ext("www.example.com")
        + ext(23, b"")
        + ext(65281, b"\x00")
        + ext(10, u16list([0x2A2A, 29, 23, 24]))
        + ext(11, b"\x01\x00")
        + ext(35, b"")
        + alpn_ext(["h2", "http/1.1"])
        + ext(13, u16list([0x0403, 0x0804, 0x0401]))
        + ext(43, b"\x06" + struct.pack("!HHH", 0x3A3A, 0x0304, 0x0303))
        + ext(51, b"")
        + ext(0x1A1A, b"\x00")
        + ext(21, bytes(10))
    )


def run(an, events):
    for ev in events:
        if ev[0] == "data":
            an.feed(ev[1], ev[2], ev[3])
        elif ev[0] == "gap":
            an.gap(ev[1], ev[2], ev[3])
        else:
            an.datagram(ev[1], ev[2], ev[3])
    an.finish(99.0)
    return an.drain()


def make_cert(cn: str, sans=(), ca=False, key=None, issuer=None):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test, Inc."),
                      x509.NameAttribute(NameOID.EMAIL_ADDRESS, "ops@example.com")])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(0x00ABCDEF)
        .not_valid_before(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc))
        .not_valid_after(dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        import ipaddress

        gn = [x509.IPAddress(ipaddress.ip_address(s)) if s[0].isdigit() else x509.DNSName(s) for s in sans]
        b = b.add_extension(x509.SubjectAlternativeName(gn), critical=False)
    return b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


# ------------------------------------------------------------------------------------------
# unit tests: fingerprints


def test_registry_and_schemas() -> None:
    assert T.ANALYZERS == {"tls": T.TLSAnalyzer} and Q.ANALYZERS == {"quic": Q.QUICAnalyzer}
    for schemas in (T.RECORD_SCHEMAS, Q.RECORD_SCHEMAS, X.RECORD_SCHEMAS):
        for s in schemas.values():
            assert s.names[:6] == ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"]
            assert s.field("ts").type == pa.timestamp("us", tz="UTC")


def test_ja3_ja4_exclude_grease() -> None:
    ch = T.parse_client_hello(client_hello(chrome_like_exts())[4:])
    assert ch.server_names == ["www.example.com"] and ch.alpn == ["h2", "http/1.1"]
    assert T.ja3_string(ch) == "771,4865-49199-47,0-23-65281-10-11-35-16-13-43-51-21,29-23-24,0"
    assert T.ja3(ch) == hashlib.md5(T.ja3_string(ch).encode()).hexdigest()
    # JA4 by the FoxIO spec, computed here step by step
    b = hashlib.sha256(b"002f,1301,c02f").hexdigest()[:12]
    exts = sorted(["0017", "ff01", "000a", "000b", "0023", "000d", "002b", "0033", "0015"])
    c = hashlib.sha256((",".join(exts) + "_0403,0804,0401").encode()).hexdigest()[:12]
    assert T.ja4(ch) == f"t13d0311h2_{b}_{c}"
    assert T.ja4(ch, "q").startswith("q13d0311h2_")


def test_ja4_edge_cases() -> None:
    ch = T.parse_client_hello(client_hello(alpn_ext(["\x01x\xff"]), ciphers=(), version=0x0301)[4:])
    assert T.ja4(ch) == "t10i0001" + "0f" + "_000000000000_000000000000"
    ch = T.parse_client_hello(client_hello(b"", version=0x0302)[4:])
    assert T.ja4(ch).startswith("t11i030000_") and T.ja4(ch).endswith("_000000000000")


def test_ja4_spec_example() -> None:
    # the worked example of the FoxIO JA4 specification (technical_details/JA4.md)
    ciphers = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
    order = [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005, 0x0023, 0x0012, 0x002B, 0xFF01, 0x000B, 0x000A, 0x0015]
    bodies = {0x0000: sni_ext("example.com")[4:], 0x0010: alpn_ext(["h2", "http/1.1"])[4:],
              0x000D: u16list([0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]),
              0x002B: b"\x04\x03\x04\x03\x03"}
    exts = b"".join(ext(t, bodies.get(t, b"")) for t in order)
    ch = T.parse_client_hello(client_hello(exts, ciphers=[0x0A0A] + ciphers)[4:])
    assert T.ja4(ch) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    # ALPN values with non-alphanumeric first/last bytes (spec examples)
    for raw, want in ((b"\xab", "ab"), (b"\xab\xcd", "ad"), (b"\x30\xab", "3b"), (b"\x30\x31\xab\xcd", "3d"),
                      (b"\x30\xab\xcd\x31", "01"), (b"a", "aa")):
        body = bytes([len(raw)]) + raw
        ch = T.parse_client_hello(client_hello(ext(16, struct.pack("!H", len(body)) + body))[4:])
        assert T.ja4(ch)[8:10] == want, raw


def test_ja3s_and_server_hello_fields() -> None:
    exts = ext(43, struct.pack("!H", 0x0304)) + ext(51, struct.pack("!HH", 29, 0))
    sh = T.parse_server_hello(server_hello(0x1301, exts)[4:])
    assert T.ja3s_string(sh) == "771,4865,43-51" and sh.negotiated_version == 0x0304 and sh.key_share_group == 29


# ------------------------------------------------------------------------------------------
# unit tests: record layer


def tls12_events(cert_ders, sni="www.example.com", split=1):
    ch = client_hello(sni_ext(sni) + ext(11, b"\x01\x00") + ext(10, u16list([23])))
    certs = b"".join(len(d).to_bytes(3, "big") + d for d in cert_ders)
    cert_msg = hs_msg(11, len(certs).to_bytes(3, "big") + certs)
    ske = hs_msg(12, b"\x03\x00\x17" + b"\x41" + bytes(65))
    flight = server_hello(0xC02F) + cert_msg + ske + hs_msg(14, b"")
    # the server flight spans several records, messages cut across record boundaries
    recs = b"".join(record(22, flight[i : i + 700]) for i in range(0, len(flight), 700))
    client2 = record(22, hs_msg(16, b"\x41" + bytes(65))) + record(20, b"\x01") + record(22, bytes(40))
    server2 = record(20, b"\x01") + record(22, bytes(40))
    app = record(23, bytes(3000)) + record(23, bytes(100))
    ev = []
    cr = record(22, ch)
    for i in range(0, len(cr), split):
        ev.append(("data", True, cr[i : i + split], 1.0))
    for i in range(0, len(recs), 333):
        ev.append(("data", False, recs[i : i + 333], 1.1))
    ev += [("data", True, client2, 1.2), ("data", False, server2, 1.3), ("data", True, app[:50], 1.4), ("data", True, app[50:], 1.5)]
    return ev


def test_tls12_handshake_certificates_and_established() -> None:
    leaf = make_cert("www.example.com", sans=("www.example.com", "*.example.org", "192.0.2.7"))
    ca = make_cert("Test CA", ca=True)
    recs, files, weirds = run(T.TLSAnalyzer(CONN), tls12_events([leaf, ca], split=7))
    assert not weirds, weirds
    tls = [r for t, r in recs if t == "tls"]
    x5 = [r for t, r in recs if t == "x509"]
    assert len(tls) == 1
    r = tls[0]
    assert r["version"] == "TLSv12" and r["cipher"] == "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
    assert r["curve"] == "secp256r1" and r["server_name"] == "www.example.com"
    assert r["established"] is True and r["resumed"] is False
    assert r["ssl_history"] == "CsxknGIi"
    assert r["cert_chain_fps"] == [hashlib.sha256(leaf).hexdigest(), hashlib.sha256(ca).hexdigest()]
    assert r["sni_matches_cert"] is True
    assert r["ts"] == 1.0 and r["client_version"] == "TLSv12"
    assert [f.mime_type for f in files] == [X.MIME_USER, X.MIME_CA] and files[0].data == leaf and files[0].source == "TLS"
    assert x5[0]["host_cert"] and not x5[1]["host_cert"]
    assert x5[0]["subject"] == "emailAddress=ops@example.com,O=Test\\, Inc.,CN=www.example.com"
    assert x5[0]["serial"] == "ABCDEF" and x5[0]["key_type"] == "ecdsa" and x5[0]["curve"] == "prime256v1"
    assert x5[0]["san_dns"] == ["www.example.com", "*.example.org"] and x5[0]["san_ip"] == ["192.0.2.7"]
    assert x5[0]["basic_constraints_ca"] is False and x5[1]["basic_constraints_ca"] is True
    assert x5[0]["not_valid_before"] == dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
    assert x5[0]["sig_alg"] == "ecdsa-with-SHA256" and x5[0]["key_alg"] == "id-ecPublicKey"
    rows = [{k: v for k, v in x.items() if k != "ts"} for x in x5]
    pa.Table.from_pylist(rows, schema=X.X509_SCHEMA.remove(0))
    pa.Table.from_pylist([{k: v for k, v in r.items() if k != "ts"}], schema=T.TLS_SCHEMA.remove(0))


def test_sni_match_rules() -> None:
    rec = {"san_dns": ["*.example.org"], "san_ip": None, "subject": "CN=x"}
    assert X.hostname_matches(rec, "a.example.org") and not X.hostname_matches(rec, "a.b.example.org")
    assert not X.hostname_matches(rec, "example.org")
    assert X.hostname_matches({"san_dns": None, "subject": "O=A\\, B,CN=host.test"}, "HOST.test")


def test_unparsable_certificate_still_a_file() -> None:
    recs, files, weirds = run(T.TLSAnalyzer(CONN), tls12_events([b"\x30\x03\x02\x01\x00"]))
    x5 = [r for t, r in recs if t == "x509"]
    assert x5[0]["fingerprint"] == hashlib.sha256(b"\x30\x03\x02\x01\x00").hexdigest() and x5[0]["parse_error"]
    assert len(files) == 1 and any(w[0] == "x509_certificate_parse_error" for w in weirds)


def test_tls13_hrr_and_encrypted_flight() -> None:
    exts = chrome_like_exts()
    ch1 = client_hello(exts)
    hrr = server_hello(0x1301, ext(43, struct.pack("!H", 0x0304)) + ext(51, struct.pack("!H", 29)), random=T.HRR_RANDOM)
    ch2 = client_hello(exts + ext(44, b"\x00\x02ab"))
    sh = server_hello(0x1301, ext(43, struct.pack("!H", 0x0304)) + ext(51, struct.pack("!HH", 29, 32) + bytes(32)))
    ev = [
        ("data", True, record(22, ch1, 0x0301), 1.0),
        ("data", False, record(22, hrr) + record(20, b"\x01"), 1.1),
        ("data", True, record(20, b"\x01") + record(22, ch2), 1.2),
        ("data", False, record(22, sh) + record(23, bytes(2000)), 1.3),
        ("data", True, record(23, bytes(50)), 1.4),
    ]
    recs, _, weirds = run(T.TLSAnalyzer(CONN), ev)
    assert not weirds
    r = [r for t, r in recs if t == "tls"][0]
    assert r["version"] == "TLSv13" and r["cipher"] == "TLS_AES_128_GCM_SHA256" and r["curve"] == "x25519"
    assert r["ssl_history"] == "CjiICs" and r["established"] is True
    assert r["ja3"] == T.ja3(T.parse_client_hello(ch1[4:]))  # the first ClientHello's fingerprint
    assert r["alpn"] == ["h2", "http/1.1"]


def test_resumption_alert_and_gap() -> None:
    sid = bytes(range(1, 33))
    ev = [
        ("data", True, record(22, client_hello(b"", sid=sid)), 1.0),
        ("data", False, record(22, server_hello(0x002F, sid=sid)) + record(20, b"\x01") + record(22, bytes(40)), 1.1),
        ("data", True, record(21, b"\x02\x28"), 1.2),
    ]
    recs, _, weirds = run(T.TLSAnalyzer(CONN), ev)
    r = [r for t, r in recs if t == "tls"][0]
    assert r["resumed"] is True and r["last_alert"] == "handshake_failure" and r["ssl_history"] == "CsiL"
    recs, _, weirds = run(T.TLSAnalyzer(CONN), [("gap", True, 5, 1.0), ("data", True, record(22, client_hello(b"")), 1.0)])
    assert weirds[0][0] == "SSL_gap" and [r for t, r in recs if t == "tls"] == []


def test_sslv2_client_hello_and_garbage() -> None:
    body = struct.pack("!BHHHH", 1, 0x0301, 6, 0, 16) + bytes.fromhex("010080000035") + bytes(16)
    msg = bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body
    recs, _, weirds = run(T.TLSAnalyzer(CONN), [("data", True, msg, 1.0)])
    r = [r for t, r in recs if t == "tls"][0]
    assert r["client_version"] == "TLSv10" and r["ssl_history"] == "C" and r["ja3"] is None
    recs, _, weirds = run(T.TLSAnalyzer(CONN), [("data", True, b"GET / HTTP/1.1\r\n\r\n", 1.0)])
    assert weirds and weirds[0][0] == "SSL_bad_record"


# ------------------------------------------------------------------------------------------
# unit tests: QUIC


def test_quic_initial_keys_rfc_vectors() -> None:
    dcid = bytes.fromhex("8394c8f03e515708")  # RFC 9001 appendix A / RFC 9369 appendix A
    assert [k.hex() for k in Q.initial_keys(1, dcid, True)] == [
        "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c", "9f50449e04a0e810283a1e9933adedd2"]
    assert [k.hex() for k in Q.initial_keys(1, dcid, False)] == [
        "cf3a5331653c364c88f0f379b6067e37", "0ac1493ca1905853b0bba03e", "c206b8d9b9f0f37644430b490eeaa314"]
    assert [k.hex() for k in Q.initial_keys(Q.V2, dcid, True)] == [
        "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f", "45b95e15235d6f45a6b19cbcb0294ba9"]
    assert Q.version_params(0xFF00001D)[0] == Q.SALT_D29 and Q.version_params(0xFF000022)[0] == Q.SALT_V1


def varint(v: int) -> bytes:
    if v < 64:
        return bytes([v])
    if v < 16384:
        return struct.pack("!H", 0x4000 | v)
    return struct.pack("!I", 0x80000000 | v)


def protect_initial(version: int, dcid: bytes, scid: bytes, pn: int, payload: bytes, is_client: bool, orig_dcid: bytes) -> bytes:
    """Build one protected Initial packet (RFC 9001 section 5), independently of the analyzer."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, iv, hp = Q.initial_keys(version, orig_dcid, is_client)
    v2 = version == Q.V2
    first = 0xC0 | ((1 if v2 else 0) << 4) | 0x01  # 2-byte packet number
    pn_bytes = struct.pack("!H", pn)
    payload = payload + bytes(max(0, 20 - len(payload)))
    length = len(pn_bytes) + len(payload) + 16
    hdr = bytes([first]) + struct.pack("!I", version) + bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    if True:
        hdr += varint(0)  # token length
    hdr += varint(length)
    pn_off = len(hdr)
    hdr += pn_bytes
    nonce = (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")
    ct = AESGCM(key).encrypt(nonce, payload, hdr)
    pkt = bytearray(hdr + ct)
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(bytes(pkt[pn_off + 4 : pn_off + 20]))
    pkt[0] ^= mask[0] & 0x0F
    for i in range(2):
        pkt[pn_off + i] ^= mask[1 + i]
    return bytes(pkt)


def crypto_frame(off: int, data: bytes) -> bytes:
    return b"\x06" + varint(off) + varint(len(data)) + data


@pytest.mark.parametrize("version", [1, Q.V2, 0xFF00001D])
def test_quic_crypto_frames_out_of_order_across_packets(version: int) -> None:
    dcid, cscid, sscid = bytes(range(8)), b"\xaa\xbb", b"\xcc\xdd\xee"
    ch = client_hello(sni_ext("quic.example") + alpn_ext(["h3"]) + ext(57, b"\x01\x02") + ext(43, b"\x02\x03\x04"))
    first, second = ch[:40], ch[40:]
    p1 = protect_initial(version, dcid, cscid, 0, crypto_frame(40, second) + b"\x01", True, dcid)
    p2 = protect_initial(version, dcid, cscid, 1, b"\x00\x00" + crypto_frame(0, first), True, dcid)
    sh = server_hello(0x1301, ext(43, struct.pack("!H", 0x0304)) + ext(51, struct.pack("!HH", 29, 32) + bytes(32)))
    ack = b"\x02\x00\x00\x00\x00"
    s1 = protect_initial(version, cscid, sscid, 0, ack + crypto_frame(0, sh), False, dcid)
    # a Handshake packet coalesced after the server's Initial, then short-header packets
    hs_type = 3 if version == Q.V2 else 2
    hs_pkt = bytes([0xC0 | (hs_type << 4)]) + struct.pack("!I", version) + b"\x03" + cscid[:2] + b"\x00" + b"\x03" + sscid + varint(30) + bytes(30)
    ev = [("datagram", True, p1 + bytes(50), 1.0), ("datagram", True, p2, 1.1), ("datagram", False, s1 + hs_pkt, 1.2),
          ("datagram", False, b"\x40" + bytes(40), 1.3), ("datagram", True, b"\x41" + bytes(40), 1.4),
          ("datagram", True, b"\x41" + bytes(40), 1.5)]
    recs, _, weirds = run(Q.QUICAnalyzer(UCONN), ev)
    assert not weirds, weirds
    q = [r for t, r in recs if t == "quic"][0]
    t = [r for t, r in recs if t == "tls"][0]
    assert q["version"] == Q.version_name(version) and q["client_initial_dcid"] == dcid.hex()
    assert q["client_scid"] == cscid.hex() and q["server_scid"] == sscid.hex()
    assert q["server_name"] == "quic.example" and q["client_protocol"] == "h3"
    assert q["history"] == "IISishoOO"
    assert t["ja4"].startswith("q13d") and t["server_name"] == "quic.example"
    assert t["ja3"] == T.ja3(T.parse_client_hello(ch[4:])) and t["version"] == "TLSv13" and t["ssl_history"] == "Cs"
    assert t["established"] is False


def test_quic_retry_and_unknown_version() -> None:
    retry = bytes([0xF0]) + struct.pack("!I", 1) + b"\x02ab\x02cd" + b"token" + bytes(16)
    recs, _, weirds = run(Q.QUICAnalyzer(UCONN), [("datagram", False, retry, 1.0)])
    assert [r["history"] for t, r in recs if t == "quic"] == ["r"]
    odd = bytes([0xC0]) + struct.pack("!I", 0x1A2A3A4A) + b"\x01a\x01b" + bytes(30)
    recs, _, weirds = run(Q.QUICAnalyzer(UCONN), [("datagram", True, odd, 1.0)])
    assert [r["version"] for t, r in recs if t == "quic"] == ["unknown-1a2a3a4a"]


# ------------------------------------------------------------------------------------------
# corpus helpers

HELLO = {True: re.compile(rb"\x16\x03[\x00-\x04]..\x01", re.S), False: re.compile(rb"\x16\x03[\x00-\x04]..\x02", re.S)}


def tls_start(c, is_orig: bool) -> int | None:
    """Where TLS starts in one direction: 0 for a TLS (or SSLv2-hello) stream; after STARTTLS,
    the first hello record (the pipeline hands over at that point; this emulates it)."""
    s = c.stream(is_orig)
    if len(s) >= 3 and ((s[0] == 22 and s[1] == 3) or (is_orig and s[0] & 0x80 and s[2] == 1)):
        return 0
    m = HELLO[is_orig].search(s)
    return m.start() if m else None


def run_tcp(c):
    offs = {d: tls_start(c, d) for d in (True, False)}
    if offs[True] is None:
        return None
    an = T.TLSAnalyzer(ConnInfo("C", c.orig_h, c.orig_p, c.resp_h, c.resp_p, c.proto))
    pos = {True: 0, False: 0}
    for ev in c.events:
        d = ev[1]
        if offs[d] is None:
            continue
        if ev[0] == "gap":
            if pos[d] >= offs[d]:
                an.gap(d, ev[2], ev[3])
            pos[d] += ev[2]
            continue
        data, start = ev[2], pos[d]
        pos[d] += len(data)
        if pos[d] <= offs[d]:
            continue
        an.feed(d, data[max(0, offs[d] - start):], ev[3])
    an.finish(0.0)
    return an.drain()


def run_udp(c):
    an = Q.QUICAnalyzer(ConnInfo("C", c.orig_h, c.orig_p, c.resp_h, c.resp_p, c.proto))
    for ev in c.events:
        an.datagram(ev[1], ev[2], ev[3])
    an.finish(0.0)
    return an.drain()


_CACHE: dict[str, dict] = {}


def analyze(path: Path) -> dict:
    """{(orig_h, orig_p, resp_h, resp_p, proto): (records, files, weirds)} for TLS and QUIC."""
    key = str(path)
    if key not in _CACHE:
        from streamkit import connections

        out = {}
        for c in connections(path):
            if c.proto == "tcp":
                res = run_tcp(c)
            elif 443 in (c.orig_p, c.resp_p) or 4433 in (c.orig_p, c.resp_p):
                res = run_udp(c)
            else:
                res = None
            if res is not None:
                out[(c.orig_h, c.orig_p, c.resp_h, c.resp_p, c.proto)] = res
        _CACHE[key] = out
    return _CACHE[key]


def recs_of(results, rtype: str) -> list[dict]:
    return [r for recs, _, _ in results for t, r in recs if t == rtype]


def find(res: dict, a: tuple, b: tuple, proto: str):
    """Results of the connection between endpoints a and b, and whether a is the originator."""
    if (*a, *b, proto) in res:
        return res[(*a, *b, proto)], True
    if (*b, *a, proto) in res:
        return res[(*b, *a, proto)], False
    return None, None


# ------------------------------------------------------------------------------------------
# oracle: tshark tls_hello.tsv

HELLO_CAPTURES = [c for c in corpus_captures() if (c.parent / "oracle" / "tshark" / "tls_hello.tsv").exists()]
# TLS carried inside OpenVPN's own control-channel framing (P_CONTROL packets with OpenVPN
# headers and acks): not a TLS byte stream, so no TLS analyzer is handed it.
NOT_TLS_STREAMS = {"misc/ndpi__openvpn"}


def hello_rows(capture: Path):
    with open(capture.parent / "oracle" / "tshark" / "tls_hello.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            src, dst = row["ip.src"] or row["ipv6.src"], row["ip.dst"] or row["ipv6.dst"]
            if "," in src + dst:
                continue
            proto = "tcp" if row["tcp.srcport"] else "udp"
            sp, dp = int(row[f"{proto}.srcport"]), int(row[f"{proto}.dstport"])
            yield row, proto, (src, sp), (dst, dp)


@needs_corpus
@pytest.mark.parametrize("capture", HELLO_CAPTURES, ids=capture_id)
def test_hellos_match_tshark(capture: Path) -> None:
    if capture_id(capture) in NOT_TLS_STREAMS:
        pytest.skip("TLS inside OpenVPN control packets, not a TLS stream")
    res = analyze(capture)
    # per connection: tshark's first ClientHello (SNI, JA3) and last ServerHello (JA3S) on TCP,
    # where our record reports the first ClientHello and the final ServerHello (after a
    # HelloRetryRequest); for QUIC every hello of the UDP flow, compared as sets.
    tcp_first: dict = {}
    tcp_last_sh: dict = {}
    udp_rows: dict = defaultdict(lambda: (set(), set()))
    for row, proto, a, b in hello_rows(capture):
        htype = row["tls.handshake.type"]
        if htype not in ("1", "2"):
            continue
        client, server = (a, b) if htype == "1" else (b, a)
        key = (client, server)
        if proto == "tcp":
            if htype == "1":
                tcp_first.setdefault(key, (row["tls.handshake.extensions_server_name"] or None, row["tls.handshake.ja3"] or None))
            else:
                tcp_last_sh[key] = row["tls.handshake.ja3s"] or None
        else:
            cs, ss = udp_rows[key]
            if htype == "1":
                cs.add((row["tls.handshake.extensions_server_name"] or None, row["tls.handshake.ja3"]))
            else:
                ss.add(row["tls.handshake.ja3s"])
    ok = total = 0
    bad = []
    for key, exp in tcp_first.items():
        got_res, _ = find(res, key[0], key[1], "tcp")
        tls = recs_of([got_res], "tls") if got_res else []
        got = (tls[0]["server_name"], tls[0]["ja3"]) if tls else None
        total += 1
        ok += got == exp
        if got != exp:
            bad.append(f"CH {key}: tshark {exp} lawtap {got}")
    for key, exp in tcp_last_sh.items():
        got_res, _ = find(res, key[0], key[1], "tcp")
        tls = recs_of([got_res], "tls") if got_res else []
        got = tls[0]["ja3s"] if tls else None
        total += 1
        ok += got == exp
        if got != exp:
            bad.append(f"SH {key}: tshark {exp} lawtap {got}")
    for key, (cs, ss) in udp_rows.items():
        got_res, _ = find(res, key[0], key[1], "udp")
        tls = recs_of([got_res], "tls") if got_res else []
        mine_c = {(r["server_name"], r["ja3"]) for r in tls if r["ja3"]}
        mine_s = {r["ja3s"] for r in tls if r["ja3s"]}
        total += 2
        ok += (cs == mine_c) + (ss == mine_s)
        if cs != mine_c or ss != mine_s:
            bad.append(f"QUIC {key}: tshark {cs} {ss} lawtap {mine_c} {mine_s}")
    print(f"{capture_id(capture)}: {ok}/{total} hello fingerprints agree")
    assert total > 0
    assert ok == total, "\n".join(bad[:10])


# ------------------------------------------------------------------------------------------
# oracle: tshark tls_certificates.tsv

CERT_CAPTURES = [c for c in corpus_captures() if (c.parent / "oracle" / "tshark" / "tls_certificates.tsv").exists()]


@needs_corpus
@pytest.mark.parametrize("capture", CERT_CAPTURES, ids=capture_id)
def test_certificates_match_tshark(capture: Path) -> None:
    if capture_id(capture) in NOT_TLS_STREAMS:
        pytest.skip("TLS inside OpenVPN control packets, not a TLS stream")
    res = analyze(capture)
    mine = {r["fingerprint"]: r for r in recs_of(res.values(), "x509")}
    files = {hashlib.sha256(f.data).hexdigest() for _, fs, _ in res.values() for f in fs}
    expected = {}
    with open(capture.parent / "oracle" / "tshark" / "tls_certificates.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            expected[row["sha256"]] = row
    missing = sorted(set(expected) - set(mine))
    print(f"{capture_id(capture)}: {len(expected) - len(missing)}/{len(expected)} certificates found")
    assert not missing
    assert set(expected) <= files
    # serial and validity as openssl printed them
    for fp, row in expected.items():
        r = mine[fp]
        if r["parse_error"]:
            continue
        assert r["serial"].lstrip("0") == row["serial"].lstrip("0"), fp
        nb = dt.datetime.strptime(row["not_before"].replace("  ", " "), "%b %d %H:%M:%S %Y GMT").replace(tzinfo=dt.timezone.utc)
        assert r["not_valid_before"] == nb, fp
        if "\\" not in row["subject"] and all(ord(ch) < 128 for ch in row["subject"]):
            assert r["subject"] == row["subject"], fp


# ------------------------------------------------------------------------------------------
# oracle: FoxIO JA4 snapshots


def parse_snap(path: Path) -> list[dict]:
    out: list[dict] = []
    cur = None
    for line in path.read_text().splitlines():
        m = re.match(r"^- stream: (\d+)", line)
        if m:
            cur = {"stream": int(m.group(1))}
            out.append(cur)
            continue
        m = re.match(r"^  (\w+): (.*)$", line)
        if m and cur is not None:
            cur[m.group(1)] = m.group(2).strip("'\"")
    return out


SNAPS = sorted(corpus_root().glob("*/*/oracle/upstream/ja4/*.snap")) if corpus_root() else []


@needs_corpus
@pytest.mark.parametrize("snap", SNAPS, ids=lambda p: p.parent.parent.parent.parent.name)
def test_ja4_matches_foxio(snap: Path) -> None:
    capture = next(f for f in snap.parents[3].iterdir() if f.suffix in (".pcap", ".pcapng", ".cap"))
    entries = [e for e in parse_snap(snap) if "ja4" in e]
    if not entries:
        pytest.skip("snapshot holds no plain JA4 (only JA4H etc.)")
    res = analyze(capture)
    ok = 0
    bad = []
    for e in entries:
        got_res, _ = find(res, (e["src"], int(e["src_port"])), (e["dst"], int(e["dst_port"])), e["transport"])
        got = [r["ja4"] for r in recs_of([got_res], "tls")] if got_res else []
        if e["ja4"] in got:
            ok += 1
        else:
            bad.append(f"stream {e['stream']} {e['transport']}: {e['ja4']} lawtap {got}")
    print(f"{capture_id(capture)}: {ok}/{len(entries)} JA4 agree")
    assert ok == len(entries), "\n".join(bad[:10])


# ------------------------------------------------------------------------------------------
# oracle: Zeek baselines (ssl.log, x509.log, quic.log)


def zeek_log(path: Path) -> list[dict]:
    fields: list[str] = []
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#fields"):
            fields = line.split("\t")[1:]
        elif line and not line.startswith("#"):
            rows.append(dict(zip(fields, line.split("\t"))))
    return rows


def zv(v) -> str:
    """Our value as Zeek prints it."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "T" if v else "F"
    if isinstance(v, list):
        return ",".join(zv(x) for x in v) if v else "(empty)"
    if isinstance(v, dt.datetime):
        return f"{v.timestamp():.6f}"
    return str(v)


ZEEK_LOGS = sorted(p for name in ("ssl.log", "x509.log", "quic.log") for p in (corpus_root().glob(f"*/*/oracle/upstream/zeek/*/{name}") if corpus_root() else []))
SSL_FIELDS = ("version", "cipher", "curve", "server_name", "resumed", "last_alert", "next_protocol", "established", "ssl_history", "cert_chain_fps")
X509_FIELDS = {
    "fingerprint": "fingerprint", "certificate.version": "version", "certificate.serial": "serial",
    "certificate.subject": "subject", "certificate.issuer": "issuer", "certificate.not_valid_before": "not_valid_before",
    "certificate.not_valid_after": "not_valid_after", "certificate.key_alg": "key_alg", "certificate.sig_alg": "sig_alg",
    "certificate.key_type": "key_type", "certificate.key_length": "key_length", "certificate.exponent": "exponent",
    "certificate.curve": "curve", "san.dns": "san_dns", "san.uri": "san_uri", "san.email": "san_email", "san.ip": "san_ip",
    "basic_constraints.ca": "basic_constraints_ca", "basic_constraints.path_len": "basic_constraints_path_len",
    "host_cert": "host_cert", "client_cert": "client_cert",
}
QUIC_FIELDS = ("version", "client_initial_dcid", "client_scid", "server_scid", "server_name", "client_protocol", "history")


@needs_corpus
@pytest.mark.parametrize("log", ZEEK_LOGS, ids=lambda p: f"{p.parents[4].name}/{p.parent.name}/{p.name}")
def test_zeek_baselines(log: Path) -> None:
    capture = next(f for f in log.parents[4].iterdir() if f.suffix in (".pcap", ".pcapng", ".cap"))
    res = analyze(capture)
    rows = zeek_log(log)
    assert rows
    agree = total = 0
    diffs = []
    for row in rows:
        if log.name == "x509.log":
            mine = {r["fingerprint"]: r for r in recs_of(res.values(), "x509")}.get(row["fingerprint"])
            pairs = [(z, X509_FIELDS[z]) for z in row if z in X509_FIELDS]
        else:
            got_res, _ = find(res, (row["id.orig_h"], int(row["id.orig_p"])), (row["id.resp_h"], int(row["id.resp_p"])),
                              "udp" if log.name == "quic.log" or "quic" in str(log) else "tcp")
            kind = "quic" if log.name == "quic.log" else "tls"
            found = recs_of([got_res], kind) if got_res else []
            mine = found[-1] if found else None
            names = QUIC_FIELDS if kind == "quic" else SSL_FIELDS
            pairs = [(z, z) for z in names if z in row]
        assert mine is not None, f"no record for {row}"
        for z, ours in pairs:
            total += 1
            if zv(mine[ours]) == row[z]:
                agree += 1
            else:
                diffs.append(f"{z}: zeek {row[z]!r} lawtap {zv(mine[ours])!r}")
    print(f"{log.parents[4].name} {log.name}: {agree}/{total} fields agree")
    assert agree == total, "\n".join(diffs)
