"""Hypothesis tests: the HTTP analyzer never raises, whatever bytes, cuts, gaps or flips it gets.

Every generated input goes through the public hooks (feed/gap/datagram/finish); the analyzer's
own safety net reports an unexpected exception as the weird ``http_analyzer_error``, so the
tests also assert that this weird never appears (a bug must not hide behind the net). Records
must fit ``HTTP_SCHEMA``. A clean conversation split at arbitrary points must give the same
records and objects as when fed whole.
"""

from __future__ import annotations

import gzip
import zlib

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawtap.analyzers.base import ConnInfo
from lawtap.analyzers.http import HTTP_SCHEMA, HttpAnalyzer, SsdpAnalyzer, split_multipart
from lawtap.analyzers.mime_sniff import sniff

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONN = ConnInfo("Cfuzz", "10.0.0.1", 40000, "10.0.0.2", 80, "tcp")
COMMON = {"uid": "Cfuzz", "id.orig_h": "10.0.0.1", "id.orig_p": 40000, "id.resp_h": "10.0.0.2", "id.resp_p": 80}


def _check(a: HttpAnalyzer) -> tuple[list, list, list]:
    records, files, weirds = a.drain()
    assert not [w for w in weirds if w[0] == "http_analyzer_error"], weirds
    rows = []
    for rtype, rec in records:
        assert rtype == "http"
        row = dict(COMMON)
        row.update(rec)
        row["ts"] = int(rec["ts"] * 1e6) if rec.get("ts") is not None else 0
        rows.append(row)
    if rows:
        pa.Table.from_pylist(rows, schema=HTTP_SCHEMA.remove_metadata())  # types and names fit
    for f in files:
        assert isinstance(f.data, bytes)
        assert f.missing_bytes >= 0
        assert f.source == "HTTP"
    return records, files, weirds


# --- a few well-formed conversations to cut, flip and split ----------------------------------

_BODY = b"<html><body>" + b"hello world " * 40 + b"</body></html>"
_GZ = gzip.compress(_BODY)
_DEFLATE = zlib.compress(_BODY)


def _chunked(data: bytes, size: int = 37) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        piece = data[i : i + size]
        out += b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\nX-Trailer: yes\r\n\r\n"


_MP = (
    b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nvalue\r\n"
    b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.bin\"\r\n"
    b"Content-Type: application/octet-stream\r\n\r\nMZ\x90\x00" + bytes(range(256)) + b"\r\n--XyZ--\r\n"
)

CONVERSATIONS = [
    (
        b"GET /a.html HTTP/1.1\r\nHost: h\r\n\r\nGET /b.gz HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip\r\n\r\n"
        b"HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(_BODY)
        + _BODY
        + b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        + _chunked(_GZ)
        + b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n",
    ),
    (
        b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
        b"Content-Length: %d\r\n\r\n" % len(_MP) + _MP,
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n"
        % len(_DEFLATE)
        + _DEFLATE,
    ),
    (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01\x00\x05hello",
        b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x03\x00\x02hi",
    ),
    (
        b"GET /old HTTP/1.0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the connection closes",
    ),
]


def _feed_pieces(a: HttpAnalyzer, is_orig: bool, data: bytes, cuts: list[int], ts: float) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for lo, hi in zip(points, points[1:]):
        a.feed(is_orig, data[lo:hi], ts)


@FAST
@given(st.binary(max_size=3000), st.binary(max_size=3000), st.lists(st.integers(0, 5000), max_size=8))
def test_random_bytes_never_raise(orig, resp, cuts):
    a = HttpAnalyzer(CONN)
    _feed_pieces(a, True, orig, cuts, 1.0)
    _feed_pieces(a, False, resp, cuts, 2.0)
    a.finish(3.0)
    _check(a)


@FAST
@given(
    st.lists(
        st.tuples(st.booleans(), st.one_of(st.binary(max_size=400), st.integers(1, 5000))),
        max_size=30,
    )
)
def test_random_events_with_gaps_never_raise(events):
    a = HttpAnalyzer(CONN)
    for k, (is_orig, x) in enumerate(events):
        if isinstance(x, int):
            a.gap(is_orig, x, float(k))
        else:
            a.feed(is_orig, x, float(k))
    a.finish(99.0)
    _check(a)


@FAST
@given(
    st.sampled_from(range(len(CONVERSATIONS))),
    st.integers(0, 10**6),
    st.integers(0, 10**6),
    st.lists(st.integers(0, 10**6), max_size=10),
)
def test_truncated_conversations_never_raise(which, cut_o, cut_r, cuts):
    orig, resp = CONVERSATIONS[which]
    a = HttpAnalyzer(CONN)
    _feed_pieces(a, True, orig[: cut_o % (len(orig) + 1)], cuts, 1.0)
    _feed_pieces(a, False, resp[: cut_r % (len(resp) + 1)], cuts, 2.0)
    a.finish(3.0)
    _check(a)


@FAST
@given(
    st.sampled_from(range(len(CONVERSATIONS))),
    st.lists(st.tuples(st.booleans(), st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=12),
    st.lists(st.integers(0, 10**6), max_size=6),
)
def test_bit_flipped_conversations_never_raise(which, flips, cuts):
    orig, resp = (bytearray(x) for x in CONVERSATIONS[which])
    for is_orig, pos, bit in flips:
        target = orig if is_orig else resp
        target[pos % len(target)] ^= 1 << bit
    a = HttpAnalyzer(CONN)
    _feed_pieces(a, True, bytes(orig), cuts, 1.0)
    _feed_pieces(a, False, bytes(resp), cuts, 2.0)
    a.finish(3.0)
    _check(a)


@FAST
@given(
    st.sampled_from(range(len(CONVERSATIONS))),
    st.lists(st.tuples(st.booleans(), st.integers(0, 10**6), st.integers(1, 3000)), min_size=1, max_size=4),
)
def test_gaps_in_conversations_never_raise(which, holes):
    """Gaps cut out of a clean conversation: resynchronisation, missing bytes, never an error."""
    streams = {True: CONVERSATIONS[which][0], False: CONVERSATIONS[which][1]}
    a = HttpAnalyzer(CONN)
    for is_orig in (True, False):
        data = streams[is_orig]
        spots = sorted((p % len(data), n) for o, p, n in holes if o == is_orig)
        pos = 0
        for at, n in spots:
            if at < pos:
                continue
            a.feed(is_orig, data[pos:at], 1.0)
            n = min(n, len(data) - at)
            a.gap(is_orig, n, 1.5)
            pos = at + n
        a.feed(is_orig, data[pos:], 2.0)
    a.finish(3.0)
    _check(a)


def _summary(records, files):
    return (
        [sorted((k, repr(v)) for k, v in r.items()) for _, r in records],
        [(f.is_orig, f.data, f.filename, f.mime_type, f.missing_bytes, f.total_bytes) for f in files],
    )


@FAST
@given(st.sampled_from(range(len(CONVERSATIONS))), st.lists(st.integers(0, 10**6), max_size=20))
def test_segmentation_does_not_change_results(which, cuts):
    orig, resp = CONVERSATIONS[which]
    whole = HttpAnalyzer(CONN)
    whole.feed(True, orig, 1.0)
    whole.feed(False, resp, 1.0)
    whole.finish(3.0)
    split = HttpAnalyzer(CONN)
    _feed_pieces(split, True, orig, cuts, 1.0)
    _feed_pieces(split, False, resp, cuts, 1.0)
    split.finish(3.0)
    r1, f1, _ = _check(whole)
    r2, f2, _ = _check(split)
    assert r1, "the clean conversation produced records"
    assert _summary(r1, f1) == _summary(r2, f2)


@FAST
@given(st.lists(st.binary(max_size=600), max_size=10), st.booleans())
def test_datagrams_never_raise(datagrams, is_orig):
    a = SsdpAnalyzer(ConnInfo("Cu", "10.0.0.1", 1900, "239.255.255.250", 1900, "udp"))
    for k, d in enumerate(datagrams):
        a.datagram(is_orig, b"M-SEARCH * HTTP/1.1\r\n" + d if k % 2 else d, float(k))
    a.finish(99.0)
    _check(a)


@FAST
@given(st.binary(max_size=5000))
def test_sniff_is_total(data):
    m = sniff(data)
    assert (m is None) == (not data)
    assert m is None or "/" in m


@FAST
@given(st.binary(max_size=3000), st.binary(min_size=0, max_size=70))
def test_split_multipart_is_total(data, boundary):
    parts = split_multipart(data, boundary)
    assert isinstance(parts, list)
    for hdrs, content in parts:
        assert isinstance(hdrs, list) and isinstance(content, bytes)
