"""DNS, TLS, QUIC and X.509 analyzers never raise on random, truncated or bit-flipped input,
and whatever records they produce fit their Arrow schemas."""

from __future__ import annotations

import struct

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawtap.analyzers import dns as D
from lawtap.analyzers import quic as Q
from lawtap.analyzers import tls as T
from lawtap.analyzers import x509 as X
from lawtap.analyzers.base import ConnInfo

UDP = ConnInfo("F1", "10.0.0.1", 5353, "10.0.0.2", 53, "udp")
TCP = ConnInfo("F2", "10.0.0.1", 40000, "10.0.0.2", 443, "tcp")
SCHEMAS = {**D.RECORD_SCHEMAS, **T.RECORD_SCHEMAS, **Q.RECORD_SCHEMAS, **X.RECORD_SCHEMAS}
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_output(an) -> None:
    recs, files, weirds = an.drain()
    for rtype, rec in recs:
        schema = SCHEMAS[rtype]
        assert set(rec) <= set(schema.names), set(rec) - set(schema.names)
        assert rec.get("ts") is None or isinstance(rec["ts"], float)
        pa.Table.from_pylist([{k: v for k, v in rec.items() if k != "ts"}], schema=schema.remove(0))
    for f in files:
        assert isinstance(f.data, bytes)
    for w in weirds:
        assert isinstance(w[0], str) and isinstance(w[1], str)


# ------------------------------------------------------------------------------------------
# seeds: valid messages to truncate and bit-flip


def _name(n: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\0"


def _rr(t: int, rdata: bytes) -> bytes:
    return b"\xc0\x0c" + struct.pack("!HHIH", t, 1, 60, len(rdata)) + rdata


DNS_SEED = (
    struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 6, 0, 1)
    + _name("www.example.com") + struct.pack("!HH", 1, 1)
    + _rr(5, _name("a.example.com")) + _rr(1, bytes(4)) + _rr(16, b"\x03abc") + _rr(15, b"\x00\x01\xc0\x0c")
    + _rr(46, struct.pack("!HBBIIIH", 1, 8, 2, 60, 0, 0, 1) + b"\xc0\x0c" + b"sig")
    + _rr(65, b"\x00\x01\x00\x00\x01\x00\x03\x02h2")
    + b"\x00" + struct.pack("!HHIH", 41, 4096, 0, 11) + struct.pack("!HHHBB", 8, 7, 1, 24, 0) + b"\x01\x02\x03"
)


def _ext(t: int, b: bytes) -> bytes:
    return struct.pack("!HH", t, len(b)) + b


_CH_BODY = (
    b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x06\x1a\x1a\x13\x01\xc0\x2f" + b"\x01\x00"
)
_CH_EXTS = (_ext(0, b"\x00\x0e\x00\x00\x0bexample.com") + _ext(16, b"\x00\x03\x02h2") + _ext(10, b"\x00\x04\x00\x1d\x00\x17")
            + _ext(11, b"\x01\x00") + _ext(13, b"\x00\x02\x04\x03") + _ext(43, b"\x04\x03\x04\x03\x03"))
CH = b"\x01" + (len(_CH_BODY) + 2 + len(_CH_EXTS)).to_bytes(3, "big") + _CH_BODY + struct.pack("!H", len(_CH_EXTS)) + _CH_EXTS
_SH_BODY = b"\x03\x03" + bytes(32) + b"\x00" + b"\xc0\x2f\x00" + struct.pack("!H", 6) + _ext(51, b"\x00\x1d")
SH = b"\x02" + len(_SH_BODY).to_bytes(3, "big") + _SH_BODY
CERT_MSG = b"\x0b" + (3 + 3 + 5).to_bytes(3, "big") + (3 + 5).to_bytes(3, "big") + (5).to_bytes(3, "big") + b"\x30\x03\x02\x01\x00"


def _rec(ct: int, body: bytes) -> bytes:
    return struct.pack("!BHH", ct, 0x0303, len(body)) + body


TLS_CLIENT_SEED = _rec(22, CH) + _rec(20, b"\x01") + _rec(23, bytes(30))
TLS_SERVER_SEED = _rec(22, SH + CERT_MSG + b"\x0c\x00\x00\x03\x03\x00\x17" + b"\x0e\x00\x00\x00") + _rec(20, b"\x01") + _rec(22, bytes(20))


def _quic_seed(version: int) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    dcid = bytes(range(8))
    key, iv, hp = Q.initial_keys(version, dcid, True)
    payload = b"\x06\x00" + struct.pack("!H", 0x4000 | len(CH)) + CH + bytes(30)
    first = 0xC0 | ((1 if version == Q.V2 else 0) << 4) | 0x01
    length = 2 + len(payload) + 16
    hdr = bytes([first]) + struct.pack("!I", version) + b"\x08" + dcid + b"\x00" + b"\x00" + struct.pack("!H", 0x4000 | length)
    pn_off = len(hdr)
    hdr += b"\x00\x00"
    pkt = bytearray(hdr + AESGCM(key).encrypt(bytes(iv), payload, hdr))
    mask = Cipher(algorithms.AES(hp), modes.ECB()).encryptor().update(bytes(pkt[pn_off + 4 : pn_off + 20]))
    pkt[0] ^= mask[0] & 0x0F
    pkt[pn_off] ^= mask[1]
    pkt[pn_off + 1] ^= mask[2]
    return bytes(pkt)


QUIC_SEEDS = [_quic_seed(1), _quic_seed(Q.V2)]


def flipped(seed: bytes):
    """A seed with a few bits flipped, then possibly truncated."""
    return st.tuples(st.lists(st.tuples(st.integers(0, len(seed) - 1), st.integers(0, 7)), max_size=6),
                     st.integers(0, len(seed))).map(lambda a: _flip(seed, *a))


def _flip(seed: bytes, flips, cut: int) -> bytes:
    b = bytearray(seed)
    for i, bit in flips:
        b[i] ^= 1 << bit
    return bytes(b[:cut]) if cut else bytes(b)


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in points + [len(data)]:
        out.append(data[prev:p])
        prev = p
    return [c for c in out if c]


# ------------------------------------------------------------------------------------------
# DNS


@FAST
@given(st.lists(st.tuples(st.booleans(), st.one_of(st.binary(max_size=600), flipped(DNS_SEED))), max_size=6))
def test_dns_datagrams_never_raise(msgs) -> None:
    an = D.DNSAnalyzer(UDP)
    for i, (is_orig, data) in enumerate(msgs):
        an.datagram(is_orig, data, float(i))
    an.finish(10.0)
    check_output(an)


@FAST
@given(st.one_of(st.binary(max_size=600), flipped(struct.pack("!H", len(DNS_SEED)) + DNS_SEED)),
       st.lists(st.integers(0, 1000), max_size=5), st.booleans())
def test_dns_tcp_never_raises(data, cuts, with_gap) -> None:
    an = D.DNSAnalyzer(ConnInfo("F3", "10.0.0.1", 4000, "10.0.0.2", 53, "tcp"))
    for i, c in enumerate(chunks(data, cuts)):
        an.feed(i % 2 == 0, c, float(i))
        if with_gap and i == 1:
            an.gap(True, 7, float(i))
    an.finish(10.0)
    check_output(an)


@FAST
@given(st.one_of(st.binary(max_size=400), flipped(DNS_SEED)))
def test_dns_parse_message_never_raises(data) -> None:
    m = D.parse_message(data)
    assert m is None or isinstance(m, D.Message)


# ------------------------------------------------------------------------------------------
# TLS


@FAST
@given(st.one_of(st.binary(max_size=800), flipped(TLS_CLIENT_SEED)),
       st.one_of(st.binary(max_size=800), flipped(TLS_SERVER_SEED)),
       st.lists(st.integers(0, 2000), max_size=6), st.integers(-1, 5))
def test_tls_never_raises(client, server, cuts, gap_at) -> None:
    an = T.TLSAnalyzer(TCP)
    cs, ss = chunks(client, cuts), chunks(server, cuts)
    for i in range(max(len(cs), len(ss))):
        if i < len(cs):
            an.feed(True, cs[i], float(i))
        if i == gap_at:
            an.gap(False, 3, float(i))
        if i < len(ss):
            an.feed(False, ss[i], float(i))
    an.finish(10.0)
    check_output(an)


@FAST
@given(st.one_of(st.binary(max_size=300), flipped(CH[4:]), flipped(SH[4:])))
def test_hello_parsers_raise_only_valueerror(body) -> None:
    for fn in (T.parse_client_hello, T.parse_server_hello, T.parse_sslv2_client_hello):
        try:
            h = fn(body)
        except ValueError:
            continue
        if isinstance(h, T.ClientHello) and not h.sslv2:
            assert len(T.ja4(h).split("_")) == 3 and len(T.ja3(h)) == 32


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.binary(max_size=300), flipped(bytes.fromhex(
    "308201" "0a" "3081b0a003020102020101300a06082a8648ce3d040302"))))
def test_x509_never_raises(der) -> None:
    rec = X.parse_certificate(der)
    assert rec["fingerprint"] and len(rec["fingerprint"]) == 64
    pa.Table.from_pylist([rec], schema=X.X509_SCHEMA.remove(0))


# ------------------------------------------------------------------------------------------
# QUIC


@FAST
@given(st.lists(st.tuples(st.booleans(), st.one_of(st.binary(max_size=300), flipped(QUIC_SEEDS[0]), flipped(QUIC_SEEDS[1]),
                                                   st.sampled_from(QUIC_SEEDS))), max_size=5))
def test_quic_never_raises(datagrams) -> None:
    an = Q.QUICAnalyzer(ConnInfo("F4", "10.0.0.1", 50000, "10.0.0.2", 443, "udp"))
    for i, (is_orig, d) in enumerate(datagrams):
        an.datagram(is_orig, d, float(i))
    an.finish(10.0)
    check_output(an)


def test_quic_seed_decrypts() -> None:
    # the fuzz seeds are real Initial packets (so flipped variants exercise the decrypt path)
    for seed in QUIC_SEEDS:
        an = Q.QUICAnalyzer(ConnInfo("F5", "10.0.0.1", 50000, "10.0.0.2", 443, "udp"))
        an.datagram(True, seed, 1.0)
        an.finish(2.0)
        recs, _, weirds = an.drain()
        assert not weirds
        assert [r["server_name"] for t, r in recs if t == "tls"] == ["example.com"]


# ---- the hello parsers against the reader-based ones they replaced (offsets and struct now) ----
def _ref_extensions(r) -> list:
    out = []
    if r.left() == 0:
        return out
    total = r.u16()
    er = T._Reader(r.b, r.o, r.o + total)
    r.take(total)
    while er.left() > 0:
        t = er.u16()
        ln = er.u16()
        out.append((t, er.take(ln)))
    return out


def _ref_client_hello(body: bytes) -> T.ClientHello:
    r = T._Reader(body)
    version = r.u16()
    rnd = r.take(32)
    sid = r.take(r.u8())
    n = r.u16()
    if n % 2:
        raise ValueError("odd cipher suites length")
    cr = T._Reader(r.take(n))
    ciphers = [cr.u16() for _ in range(n // 2)]
    comp = list(r.take(r.u8()))
    ch = T.ClientHello(version, rnd, sid, ciphers, comp)
    ch.extensions = _ref_extensions(r)
    for t, v in ch.extensions:
        try:
            er = T._Reader(v)
            if t == T.EXT_SNI and v:
                lr = T._Reader(er.take(er.u16()))
                while lr.left() > 0:
                    typ = lr.u8()
                    name = lr.take(lr.u16())
                    if typ == 0:
                        ch.server_names.append(T._str(name))
            elif t == T.EXT_GROUPS:
                lr = T._Reader(er.take(er.u16()))
                ch.groups = [lr.u16() for _ in range(lr.left() // 2)]
            elif t == T.EXT_POINT_FORMATS:
                ch.point_formats = list(er.take(er.u8()))
            elif t == T.EXT_SIG_ALGS:
                lr = T._Reader(er.take(er.u16()))
                ch.sig_algs = [lr.u16() for _ in range(lr.left() // 2)]
            elif t == T.EXT_ALPN:
                lr = T._Reader(er.take(er.u16()))
                while lr.left() > 0:
                    p = lr.take(lr.u8())
                    ch.alpn_raw.append(p)
                    ch.alpn.append(T._str(p))
            elif t == T.EXT_SUPPORTED_VERSIONS:
                lr = T._Reader(er.take(er.u8()))
                ch.supported_versions = [lr.u16() for _ in range(lr.left() // 2)]
        except ValueError:
            continue
    return ch


def _ref_server_hello(body: bytes) -> T.ServerHello:
    r = T._Reader(body)
    version = r.u16()
    rnd = r.take(32)
    if version >> 8 in (0x7F, 0x7E) and version & 0xFF < 22:
        sid, cipher, comp = b"", r.u16(), 0
    else:
        sid = r.take(r.u8())
        cipher = r.u16()
        comp = r.u8()
    sh = T.ServerHello(version, rnd, sid, cipher, comp)
    sh.extensions = _ref_extensions(r)
    for t, v in sh.extensions:
        try:
            er = T._Reader(v)
            if t == T.EXT_SUPPORTED_VERSIONS and len(v) == 2:
                sh.selected_version = er.u16()
            elif t in (T.EXT_KEY_SHARE, 40) and len(v) >= 2:
                sh.key_share_group = er.u16()
            elif t == T.EXT_ALPN and v:
                lr = T._Reader(er.take(er.u16()))
                sh.alpn = _ref_str_alpn(lr)
        except ValueError:
            continue
    return sh


def _ref_str_alpn(lr) -> str:
    return T._str(lr.take(lr.u8()))


def _outcome(fn, body: bytes):
    try:
        return fn(body)
    except ValueError as e:
        return ("ValueError", str(e))


# Extensions whose bodies are damaged in every way the parsers distinguish (short vectors,
# entries running one byte past their vector or stopping one short, odd lengths), inside
# otherwise valid hellos: random bodies, and well-formed ones with their lengths nudged.
_DELTA = st.sampled_from([0, 0, 0, -1, 1, -2, 2])


def _entries(width: int):
    def build(items):
        return b"".join(bytes([typ]) * (width == 2) + (len(name) + d).to_bytes(width, "big", signed=False)
                        + name for typ, name, d in items if 0 <= len(name) + d < 256 ** width)
    return st.lists(st.tuples(st.sampled_from([0, 1]), st.binary(max_size=6), _DELTA), max_size=3).map(build)


def _vector(inner, width: int = 2):
    return st.tuples(inner, _DELTA, st.binary(max_size=2)).map(
        lambda t: max(0, len(t[0]) + t[1]).to_bytes(width, "big") + t[0] + t[2])


_EXT_BODY = st.one_of(
    st.binary(max_size=12),
    _vector(_entries(2)),  # SNI: (type, 16-bit length, name) entries
    _vector(_entries(1)),  # ALPN: (8-bit length, protocol) entries
    _vector(st.binary(max_size=9)),  # groups, signature algorithms (odd lengths too)
    _vector(st.binary(max_size=9), width=1),  # point formats, supported versions
)
_DAMAGED_EXTS = st.lists(st.tuples(st.sampled_from([0, 10, 11, 13, 16, 43, 51, 40, 0x1A1A, 99]), _EXT_BODY),
                         max_size=6)


def _hello_with(exts: list, server: bool) -> bytes:
    block = b"".join(_ext(t, v) for t, v in exts)
    body = _SH_BODY[:38] if server else _CH_BODY
    return body + struct.pack("!H", len(block)) + block


@FAST
@given(st.one_of(st.binary(max_size=300), flipped(CH[4:]), flipped(SH[4:]),
                 _DAMAGED_EXTS.map(lambda e: _hello_with(e, False)), _DAMAGED_EXTS.map(lambda e: _hello_with(e, True))))
def test_hello_parsers_match_the_reader_based_ones(body) -> None:
    assert _outcome(T.parse_client_hello, body) == _outcome(_ref_client_hello, body)
    assert _outcome(T.parse_server_hello, body) == _outcome(_ref_server_hello, body)


def test_hello_extension_edges_match_the_reader_based_ones() -> None:
    """Every length in an extension body one or two bytes off, both ways, for every extension
    the hello parsers read: the same hello as the reader-based parsers give."""
    import itertools

    deltas = (-2, -1, 0, 1, 2)
    bodies = []
    for d_vec, d_entry, tail, typ in itertools.product(deltas, deltas, (b"", b"\x00"), (0, 1)):
        for width in (1, 2):  # ALPN entries (8-bit lengths), SNI entries (type, 16-bit length)
            first = (bytes([typ]) if width == 2 else b"") + (3).to_bytes(width, "big") + b"abc"
            last = (bytes([typ]) if width == 2 else b"") + max(0, 2 + d_entry).to_bytes(width, "big") + b"xy"
            for inner in (first, first + last):
                bodies.append(max(0, len(inner) + d_vec).to_bytes(2, "big") + inner + tail)
        for width in (1, 2):  # plain vectors of 16-bit values (odd lengths too)
            inner = b"\x00\x1d\x00\x17\x01"[: 4 + (d_entry > 0)]
            bodies.append(max(0, len(inner) + d_vec).to_bytes(width, "big") + inner + tail)
    checked = 0
    for body, t in itertools.product(bodies, (0, 10, 11, 13, 16, 43, 51, 40)):
        for server in (False, True):
            hello = _hello_with([(t, body)], server)
            assert _outcome(T.parse_client_hello, hello) == _outcome(_ref_client_hello, hello), (t, body)
            assert _outcome(T.parse_server_hello, hello) == _outcome(_ref_server_hello, hello), (t, body)
            checked += 1
    assert checked > 3000
