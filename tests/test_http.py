"""HTTP/1.x analyzer: crafted conversations, then the shared corpus against its oracles.

Corpus oracles (see ``shared/corpus/ORACLES.md``):

* ``tshark/objects_http.tsv`` (``--export-objects http``): the SHA-256 of every object tshark
  exported must be the SHA-256 of one of our FileObjects. tshark exports request and response
  bodies after de-chunking and, with its default preferences, after decompression (checked on
  the gzip captures: the 72 gzip responses of the corpus match our decoded bodies);
* ``tshark/http_requests.tsv``: our requests' (method, host, uri) equal tshark's, as a multiset
  per capture; ``tshark/http_responses.tsv``: tshark's (code, phrase) are among ours;
* Zeek ``http.log`` baselines, Arkime body hashes, and the suricata-verify EICAR upload.

Connection bytes come from ``tests/streamkit.py``; every TCP connection of a capture is fed to
the analyzer (non-HTTP ones must yield nothing), and UDP port 1900 (SSDP/HTTPU) datagrams too.
Every disagreement left is listed below with its reason and is itself checked.
"""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import json
import re
import zlib
from collections import Counter
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit
from conftest import capture_id, corpus_root
from lawtap.analyzers import http as http_mod
from lawtap.analyzers.base import ConnInfo, FileObject
from lawtap.analyzers.http import ANALYZERS, HTTP_SCHEMA, RECORD_SCHEMAS, HttpAnalyzer, SsdpAnalyzer
from lawtap.analyzers.mime_sniff import sniff

try:
    import brotli
except ImportError:  # optional dependency: Content-Encoding br
    brotli = None

CONN = ConnInfo("Ctest", "10.0.0.1", 40000, "10.0.0.2", 80, "tcp")


def run(*events, analyzer=HttpAnalyzer, conn=CONN, **attrs):
    """Feed ("o"|"r", bytes) data events or ("o"|"r", int) gaps, then finish; return the events."""
    a = analyzer(conn)
    for k, v in attrs.items():
        setattr(a, k, v)
    for i, (who, x) in enumerate(events):
        if isinstance(x, int):
            a.gap(who == "o", x, 1.0 + i)
        else:
            a.feed(who == "o", x, 1.0 + i)
    a.finish(1000.0)
    records, files, weirds = a.drain()
    assert not [w for w in weirds if w[0] == "http_analyzer_error"], weirds
    return [r for t, r in records if t == "http"], files, weirds


def names(weirds):
    return [w[0] for w in weirds]


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ---------------------------------------------------------------------------------------------
# Module contract


def test_module_contract():
    assert ANALYZERS["http"] is HttpAnalyzer and HttpAnalyzer.service == "http"
    assert ANALYZERS["ssdp"] is SsdpAnalyzer and SsdpAnalyzer.service == "ssdp"
    assert RECORD_SCHEMAS == {"http": HTTP_SCHEMA}
    common = ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"]
    assert HTTP_SCHEMA.names[:6] == common
    assert HTTP_SCHEMA.field("ts").type == pa.timestamp("us", tz="UTC")
    assert HTTP_SCHEMA.field("id.orig_p").type == pa.uint16()
    for f in ("trans_depth", "method", "host", "uri", "referrer", "version", "user_agent", "origin",
              "request_body_len", "response_body_len", "status_code", "status_msg", "info_code", "info_msg",
              "username", "orig_mime_types", "resp_mime_types", "request_body_sha256", "response_body_sha256"):
        assert f in HTTP_SCHEMA.names
    assert "password" not in HTTP_SCHEMA.names


def test_records_fit_schema():
    recs, _, _ = run(("o", b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"), ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"))
    row = {"uid": "C", "id.orig_h": "a", "id.orig_p": 1, "id.resp_h": "b", "id.resp_p": 2, **recs[0]}
    row["ts"] = int(row["ts"] * 1e6)
    t = pa.Table.from_pylist([row], schema=HTTP_SCHEMA)
    assert t.column("resp_mime_types").to_pylist() == [["text/plain"]]
    assert set(recs[0]) <= set(HTTP_SCHEMA.names)


# ---------------------------------------------------------------------------------------------
# Messages, pairing, bodies


def test_simple_get():
    body = b"<!DOCTYPE html><html><body>hi</body></html>"
    recs, files, weirds = run(
        ("o", b"GET /dir/page.html?q=1 HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: UA/1\r\n"
              b"Referer: http://ref/\r\nOrigin: http://o\r\n\r\n"),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n" % len(body) + body),
    )
    assert weirds == []
    (r,) = recs
    assert r["ts"] == 1.0 and r["trans_depth"] == 1
    assert (r["method"], r["host"], r["uri"], r["version"]) == ("GET", "www.example.com", "/dir/page.html?q=1", "1.1")
    assert (r["user_agent"], r["referrer"], r["origin"]) == ("UA/1", "http://ref/", "http://o")
    assert (r["status_code"], r["status_msg"], r["info_code"]) == (200, "OK", None)
    assert (r["request_body_len"], r["response_body_len"]) == (0, len(body))
    assert r["resp_mime_types"] == ["text/html"] and r["orig_mime_types"] is None
    assert r["response_body_sha256"] == sha(body) and r["request_body_sha256"] is None
    (f,) = files
    assert isinstance(f, FileObject)
    assert (f.source, f.data, f.is_orig, f.filename, f.mime_type) == ("HTTP", body, False, "page.html", "text/html")
    assert (f.total_bytes, f.missing_bytes, f.ts) == (len(body), 0, 2.0)
    assert f.meta["uri"] == "/dir/page.html?q=1" and f.meta["method"] == "GET" and f.meta["status"] == 200


def test_pipelining_and_keep_alive():
    reqs = b"".join(b"GET /%d HTTP/1.1\r\nHost: h\r\n\r\n" % i for i in range(3))
    resps = b"".join(b"HTTP/1.1 %d X\r\nContent-Length: 3\r\n\r\nr%02d" % (200 + i, i) for i in range(3))
    recs, files, weirds = run(("o", reqs), ("r", resps[:50]), ("r", resps[50:]),
                              ("o", b"GET /last HTTP/1.1\r\nHost: h\r\n\r\n"),
                              ("r", b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
    assert weirds == []
    assert [(r["trans_depth"], r["uri"], r["status_code"]) for r in recs] == [
        (1, "/0", 200), (2, "/1", 201), (3, "/2", 202), (4, "/last", 404)]
    assert [f.data for f in files] == [b"r00", b"r01", b"r02"]


def test_response_fed_before_its_request_is_still_paired():
    # Directions are interleaved by time only; with equal times a response may be fed first.
    a = HttpAnalyzer(CONN)
    a.feed(False, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 5.0)
    a.feed(True, b"GET /a HTTP/1.1\r\n\r\n", 5.0)
    a.finish(6.0)
    (r,), _, w = a.drain()
    assert (r[1]["method"], r[1]["status_code"]) == ("GET", 200) and w == []


def test_head_204_304_have_no_body():
    recs, files, weirds = run(
        ("o", b"HEAD /h HTTP/1.1\r\n\r\nGET /n HTTP/1.1\r\n\r\nGET /m HTTP/1.1\r\n\r\nGET /z HTTP/1.1\r\n\r\n"),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
              b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"
              b"HTTP/1.1 304 Not Modified\r\nContent-Length: 77\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    )
    assert [(r["uri"], r["status_code"], r["response_body_len"]) for r in recs] == [
        ("/h", 200, 0), ("/n", 204, 0), ("/m", 304, 0), ("/z", 200, 2)]
    assert [f.data for f in files] == [b"ok"]


def test_chunked_with_extensions_and_trailers():
    body = b"0123456789" * 7
    chunked = b"".join(b"%X;name=v\r\n" % len(body[i:i + 16]) + body[i:i + 16] + b"\r\n" for i in range(0, len(body), 16))
    stream = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\nX-Checksum: 1\r\n\r\n"
    events = [("o", b"GET /c HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\n\r\n")]
    events += [("r", stream[i:i + 5]) for i in range(0, len(stream), 5)]  # split everywhere
    events += [("r", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")]
    recs, files, weirds = run(*events)
    assert weirds == []
    assert [f.data for f in files] == [body, b"abc"]
    assert files[0].total_bytes is None  # no Content-Length announced
    assert recs[0]["response_body_len"] == len(body)


@pytest.mark.parametrize(
    "coding,encode",
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", zlib.compress),  # zlib-wrapped, as RFC 9110 says
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send
        pytest.param("br", lambda b: brotli.compress(b), marks=pytest.mark.skipif(brotli is None, reason="no brotli")),
        pytest.param("gzip, br", lambda b: brotli.compress(gzip.compress(b)),
                     marks=pytest.mark.skipif(brotli is None, reason="no brotli")),
    ],
)
def test_content_encodings(coding, encode):
    body = b'{"k": "' + b"v" * 3000 + b'"}'
    enc = encode(body)
    recs, files, weirds = run(
        ("o", b"GET /api HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (coding.encode(), len(enc))),
        *[("r", enc[i:i + 100]) for i in range(0, len(enc), 100)],
    )
    assert weirds == []
    (f,) = files
    assert f.data == body and f.mime_type == "application/json"
    assert recs[0]["response_body_len"] == len(body) and recs[0]["response_body_sha256"] == sha(body)
    assert f.total_bytes is None and f.meta["content_length"] == len(enc)
    assert f.meta["encoded_sha256"] == sha(enc) and f.meta["encoded_length"] == len(enc)


def test_gzip_with_chunked_transfer():
    body = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(200))  # incompressible
    enc = gzip.compress(body)
    chunked = b"100\r\n" + enc[:256] + b"\r\n" + b"%x\r\n" % (len(enc) - 256) + enc[256:] + b"\r\n0\r\n\r\n"
    _, files, weirds = run(("o", b"GET / HTTP/1.1\r\n\r\n"),
                           ("r", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" + chunked))
    assert weirds == [] and files[0].data == body


def test_undecodable_body_is_kept_as_sent():
    junk = b"this is not gzip at all"
    _, files, weirds = run(("o", b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
                           ("r", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(junk) + junk),
                           ("r", b"HTTP/1.1 200 OK\r\nContent-Encoding: compress\r\nContent-Length: 3\r\n\r\nabc"))
    assert files[0].data == junk and "decode_error" in files[0].meta and files[0].total_bytes == len(junk)
    assert files[1].data == b"abc"
    assert "http_decompress_failed" in names(weirds) and "http_unsupported_encoding" in names(weirds)


def test_decompression_is_capped():
    bomb = gzip.compress(bytes(5_000_000))
    recs, files, weirds = run(("o", b"GET /bomb HTTP/1.1\r\n\r\n"),
                              ("r", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(bomb) + bomb),
                              max_body_bytes=100_000)
    assert len(files[0].data) == 100_000 and files[0].meta.get("truncated")
    assert "http_body_truncated" in names(weirds)


@pytest.mark.parametrize("coding", ["gzip", "deflate", pytest.param("br", marks=pytest.mark.skipif(brotli is None, reason="no brotli")), "gzip, br"])
@pytest.mark.parametrize("cap_delta", [0, -1, -100_000])
def test_decoded_cap_is_exact(coding, cap_delta):
    if "br" in coding and brotli is None:
        pytest.skip("no brotli")
    body = bytes(range(256)) * 400
    enc = body
    for c in coding.split(", "):
        enc = {"gzip": gzip.compress, "deflate": zlib.compress, "br": lambda b: brotli.compress(b)}[c](enc)
    cap = len(body) + cap_delta
    recs, files, weirds = run(("o", b"GET / HTTP/1.1\r\n\r\n"),
                              ("r", b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (coding.encode(), len(enc))),
                              *[("r", enc[i:i + 333]) for i in range(0, len(enc), 333)], max_body_bytes=cap)
    assert files[0].data == body[:cap]
    assert ("http_body_truncated" in names(weirds)) == (cap < len(body)) == bool(files[0].meta.get("truncated"))


def test_identity_body_cap_counts_everything():
    recs, files, weirds = run(("o", b"GET /big HTTP/1.1\r\n\r\n"),
                              ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000),
                              max_body_bytes=1000)
    assert len(files[0].data) == 1000 and recs[0]["response_body_len"] == 5000
    assert "http_body_truncated" in names(weirds)


def test_read_until_close():
    recs, files, weirds = run(("o", b"GET /old HTTP/1.0\r\n\r\n"),
                              ("r", b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, "), ("r", b"part two"))
    assert weirds == [] and files[0].data == b"part one, part two" and recs[0]["version"] == "1.0"


def test_request_without_length_has_no_body():
    recs, files, _ = run(("o", b"POST /x HTTP/1.1\r\n\r\nGET /y HTTP/1.1\r\n\r\n"))
    assert [r["uri"] for r in recs] == ["/x", "/y"] and files == []


def test_multipart_form_data_upload():
    payload = b"MZ\x90\x00\x03" + bytes(100)
    body = (
        b"--b0undary\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nhello\r\n"
        b"--b0undary\r\nContent-Disposition: form-data; name=\"file1\"; filename=\"evil.exe\"\r\n"
        b"Content-Type: application/octet-stream\r\n\r\n" + payload + b"\r\n"
        b"--b0undary\r\nContent-Disposition: form-data; name=\"file2\"; filename*=UTF-8''r%C3%A9sum%C3%A9.txt\r\n"
        b"\r\nplain text\r\n--b0undary--\r\n"
    )
    recs, files, weirds = run(
        ("o", b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    )
    assert weirds == []
    whole, exe, txt, resp = files
    assert whole.data == body and whole.is_orig and whole.filename == "upload"
    assert (exe.data, exe.filename, exe.mime_type, exe.is_orig) == (payload, "evil.exe", "application/x-dosexec", True)
    assert exe.meta["field"] == "file1" and exe.meta["multipart"] == "form-data"
    assert (txt.data, txt.filename) == (b"plain text", "résumé.txt")
    assert resp.data == b"ok"
    r = recs[0]
    assert r["orig_filenames"] == ["evil.exe", "résumé.txt"]
    assert r["orig_mime_types"] == [whole.mime_type, "application/x-dosexec", "text/plain"]
    assert r["request_body_sha256"] == sha(body)


def test_multipart_byteranges_response():
    body = (b"--RANGE\r\nContent-Type: image/png\r\nContent-Range: bytes 0-7/100\r\n\r\n\x89PNG\r\n\x1a\n\r\n"
            b"--RANGE\r\nContent-Type: image/png\r\nContent-Range: bytes 50-52/100\r\n\r\nabc\r\n--RANGE--\r\n")
    _, files, weirds = run(("o", b"GET /img.png HTTP/1.1\r\nRange: bytes=0-7,50-52\r\n\r\n"),
                           ("r", b"HTTP/1.1 206 Partial Content\r\nContent-Type: multipart/byteranges; boundary=RANGE\r\n"
                                 b"Content-Length: %d\r\n\r\n" % len(body) + body))
    assert weirds == []
    assert [f.data for f in files] == [body, b"\x89PNG\r\n\x1a\n", b"abc"]
    assert [f.meta.get("content_range") for f in files[1:]] == ["bytes 0-7/100", "bytes 50-52/100"]
    assert files[1].mime_type == "image/png"


def test_content_disposition_filename_and_206_range():
    recs, files, _ = run(("o", b"GET /dl?id=7 HTTP/1.1\r\n\r\n"),
                         ("r", b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 10-14/99\r\n"
                               b"Content-Disposition: attachment; filename=\"report q3.pdf\"\r\nContent-Length: 5\r\n\r\n%PDF-"))
    f = files[0]
    assert f.filename == "report q3.pdf" and f.meta["content_range"] == "bytes 10-14/99"
    assert f.mime_type == "application/pdf" and recs[0]["resp_filenames"] == ["report q3.pdf"]


def test_connect_tunnel_stops_parsing():
    recs, files, weirds = run(
        ("o", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        ("o", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03GET / HTTP/1.1\r\n\r\n"),  # TLS, sent before the answer
        ("r", b"HTTP/1.1 200 Connection established\r\n\r\n"),
        ("r", b"\x16\x03\x03\x00\x7a\x02HTTP/1.1 200 OK\r\n\r\n"),
        ("o", b"\x17\x03\x03\x00\x10" + bytes(16)),
    )
    assert weirds == [] and files == []
    assert [(r["method"], r["uri"], r["status_code"]) for r in recs] == [("CONNECT", "example.com:443", 200)]


def test_connect_refused_goes_on_with_http():
    recs, _, weirds = run(("o", b"CONNECT a:443 HTTP/1.1\r\n\r\nGET http://a/ HTTP/1.1\r\n\r\n"),
                          ("r", b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
                                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    assert weirds == []
    assert [(r["method"], r["status_code"]) for r in recs] == [("CONNECT", 407), ("GET", 200)]


@pytest.mark.parametrize("early", [False, True])
def test_switching_protocols_stops_parsing(early):
    up = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n"
    frame = b"\x81\x85abcdGET / HTTP/1.1\r\n\r\n"
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"
    events = [("o", up + frame), ("r", answer)] if early else [("o", up), ("r", answer), ("o", frame)]
    recs, _, weirds = run(*events)
    assert weirds == [] and [(r["uri"], r["status_code"]) for r in recs] == [("/ws", 101)]


def test_upgrade_refused_goes_on_with_http():
    recs, _, weirds = run(("o", b"GET /a HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
                          ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"))
    assert weirds == [] and [r["uri"] for r in recs] == ["/a", "/b"]


def test_100_continue():
    body = b"a=1&b=2"
    recs, files, weirds = run(
        ("o", b"POST /form HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)),
        ("r", b"HTTP/1.1 100 Continue\r\n\r\n"),
        ("o", body),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"),
    )
    assert weirds == []
    (r,) = recs
    assert (r["info_code"], r["info_msg"], r["status_code"], r["request_body_len"]) == (100, "Continue", 200, len(body))
    assert [f.data for f in files] == [body, b"done"]
    assert files[0].meta["status"] == 200  # filled in once the response is known


def test_expect_continue_refused_body_never_sent():
    recs, files, weirds = run(
        ("o", b"PUT /big HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n"),
        ("r", b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n"),
        ("o", b"GET /next HTTP/1.1\r\n\r\n"),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    )
    assert [(r["uri"], r["status_code"], r["request_body_len"]) for r in recs] == [("/big", 417, 0), ("/next", 200, 0)]
    assert "http_expected_body_skipped" in names(weirds)


def test_basic_auth_username_without_password():
    cred = base64.b64encode(b"alice:s3cret!").decode()
    recs, _, _ = run(("o", f"GET / HTTP/1.1\r\nAuthorization: Basic {cred}\r\n\r\n".encode()))
    assert recs[0]["username"] == "alice"
    assert "s3cret" not in repr(recs)


def test_gap_inside_body_counts_missing_bytes_and_keeps_offsets():
    recs, files, weirds = run(
        ("o", b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n"),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123"),
        ("r", 3),
        ("r", b"789HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    )
    a, b = files
    assert (a.data, a.missing_bytes, a.total_bytes, a.meta["holes"]) == (b"0123\x00\x00\x00789", 3, 10, [(4, 3)])
    assert b.data == b"ok" and b.missing_bytes == 0
    assert [r["status_code"] for r in recs] == [200, 200]


def test_gap_past_body_resyncs_on_next_message():
    lost = b"456789" + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nbb"  # end of body 1, all of response 2
    recs, files, weirds = run(
        ("o", b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n"),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123"),
        ("r", len(lost) + 5),  # ... and the first 5 bytes of response 3
        ("r", b"/1.1 201 Created\r\nContent-Length: 3\r\n\r\nccc"),  # mid-line: skipped
        ("r", b"HTTP/1.1 202 Accepted\r\nContent-Length: 3\r\n\r\nddd"),  # found again
    )
    assert (files[0].data, files[0].missing_bytes) == (b"0123" + bytes(6), 6)
    assert "content_gap" in names(weirds)
    assert [f.data for f in files] == [b"0123" + bytes(6), b"ddd"]
    # Lost responses can't be told apart: the next one found pairs with the oldest open request.
    assert [(r["uri"], r["status_code"]) for r in recs] == [("/a", 200), ("/b", 202), ("/c", None)]


def test_gap_in_request_headers_resyncs():
    recs, _, weirds = run(("o", b"GET /a HTTP/1.1\r\nHo"), ("o", 100), ("o", b"st: x\r\n\r\nGET /b HTTP/1.1\r\nHost: y\r\n\r\n"))
    assert [r["uri"] for r in recs] == ["/b"] and "content_gap" in names(weirds)


def test_gap_in_encoded_body_keeps_what_decoded():
    body = bytes(range(256)) * 64
    enc = gzip.compress(body, compresslevel=0)  # stored blocks: bytes before the gap still decode
    _, files, weirds = run(("o", b"GET / HTTP/1.1\r\n\r\n"),
                           ("r", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(enc) + enc[:5000]),
                           ("r", 1000), ("r", enc[6000:]))
    f = files[0]
    assert f.missing_bytes == 1000 and 0 < len(f.data) < len(body) and body.startswith(f.data)
    assert "http_gap_in_encoded_body" in names(weirds)


def test_bad_request_line_resyncs():
    recs, _, weirds = run(("o", b"\x00\x01garbage here\r\nmore junk\r\nGET /ok HTTP/1.1\r\nHost: h\r\n\r\n"))
    assert [r["uri"] for r in recs] == ["/ok"] and "bad_HTTP_request" in names(weirds)


def test_non_http_stream_yields_nothing():
    recs, files, weirds = run(("o", b"\x16\x03\x01\x00\xa5" + bytes(range(256)) * 4), ("r", b"SSH-2.0-OpenSSH_9.0\r\n" + bytes(300)))
    assert recs == [] and files == []
    assert set(names(weirds)) <= {"bad_HTTP_request", "bad_HTTP_reply", "http_incomplete_message"}


def test_http2_prior_knowledge_is_not_parsed():
    recs, files, weirds = run(("o", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00"),
                              ("r", b"\x00\x00\x06\x04\x00\x00\x00\x00\x00HTTP/1.1 200 OK\r\n\r\n"))
    assert recs == [] and files == [] and names(weirds) == ["http2_preface"]


def test_unmatched_response():
    recs, files, weirds = run(("r", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"))
    assert recs[0]["method"] is None and recs[0]["status_code"] == 200 and files[0].data == b"abc"
    assert "unmatched_HTTP_reply" in names(weirds)


def test_roles_flipped_when_the_responder_speaks_first():
    # The capture missed the handshake, so the connection's "originator" is really the server.
    recs, files, weirds = run(("o", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
                              ("r", b"GET /again HTTP/1.1\r\n\r\n"), ("o", b"HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n"))
    assert [(r["method"], r["status_code"]) for r in recs] == [(None, 200), ("GET", 404)]
    assert files[0].is_orig is True and "http_roles_flipped" in names(weirds)


def test_content_length_and_transfer_encoding():
    _, files, weirds = run(("o", b"GET / HTTP/1.1\r\n\r\n"),
                           ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"))
    assert files[0].data == b"hello" and "HTTP_CL_and_TE" in names(weirds)


def test_request_smuggling_signs_and_header_quirks():
    recs, files, weirds = run(("o", b"POST /a HTTP/1.1\r\nHost: h\r\nX-Long: part one\r\n  part two\r\nno colon here\r\n"
                                    b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                                    b"GET /b HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello"
                                    b"GET /c HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"))
    assert [(r["uri"], r["request_body_len"]) for r in recs] == [("/a", 3), ("/b", 5), ("/c", 5)]
    assert {"HTTP_CL_and_TE", "http_bad_header_line", "HTTP_multiple_content_length"} <= set(names(weirds))


def test_resync_after_gap_in_post_body_finds_glued_request():
    # After the gap, the next request follows the body's last bytes directly (no line break).
    recs, files, _ = run(("o", b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123"), ("o", 500),
                         ("o", b"tail of something\r\n0\r\n\r\nxyzGET /next?a=1 HTTP/1.1\r\nHost: h\r\n\r\n"),
                         ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    assert [r["uri"] for r in recs] == ["/up", "/next?a=1"]


def test_bad_chunk_size_resyncs():
    recs, files, weirds = run(("o", b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
                              ("r", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n"
                                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
    assert "HTTP_bad_chunk_size" in names(weirds) and [f.data for f in files] == [b"ok"]


def test_finish_is_idempotent_and_final():
    a = HttpAnalyzer(CONN)
    a.feed(True, b"GET / HTTP/1.1\r\n\r\n", 1.0)
    a.finish(2.0)
    a.finish(3.0)
    a.feed(True, b"GET /after HTTP/1.1\r\n\r\n", 4.0)
    records, _, _ = a.drain()
    assert len(records) == 1 and records[0][1]["status_code"] is None


# ---------------------------------------------------------------------------------------------
# The body fast path (HttpAnalyzer._direct_body) is exact: the same calls with and without it
# give the same records, files (bytes and metadata, timestamps included) and weirds.


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i, k = [], 0, 0
    while i < len(body):
        n = sizes[k % len(sizes)]
        k += 1
        out.append(b"%x\r\n" % n + body[i : i + n] + b"\r\n")
        i += n
    return b"".join(out) + b"0\r\nX-Trailer: t\r\n\r\n"


_BIG = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(2000))  # 64000 bytes, incompressible
_TEXT = b"line of text for the body\n" * 2000
_FORM = (b"--FB\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n\r\n" + _BIG[:5000]
         + b"\r\n--FB--\r\n")
_FAST_PATH_SESSIONS = {
    "content-length keep-alive": [
        ("o", b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n"),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(_BIG) + _BIG
              + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(_TEXT) + _TEXT),
    ],
    "chunked and gzip": [
        ("o", b"GET /c HTTP/1.1\r\n\r\nGET /g HTTP/1.1\r\n\r\nGET /gc HTTP/1.1\r\n\r\n"),
        ("r", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(_BIG, [1, 4000, 17, 30000])),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(gzip.compress(_TEXT))
              + gzip.compress(_TEXT)),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
              + _chunked(gzip.compress(_TEXT), [100, 3000])),
    ],
    "uploads and 100-continue": [
        ("o", b"POST /up HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=FB\r\nContent-Length: %d\r\n\r\n"
              % len(_FORM) + _FORM),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        ("o", b"PUT /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(_BIG)),
        ("r", b"HTTP/1.1 100 Continue\r\n\r\n"),
        ("o", _BIG),
        ("r", b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        ("o", b"PUT /skip HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 99999\r\n\r\n"),
        ("r", b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n"),
        ("o", b"GET /after HTTP/1.1\r\n\r\n"),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter"),
    ],
    "gaps": [
        ("o", b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n"),
        ("r", b"HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n" + _BIG[:9000]),
        ("r", 1000),
        ("r", _BIG[10000:30000] + b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n" + _BIG[:5000]),
        ("r", 40000),  # past the body: resync
        ("r", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(_BIG[:9000], [3000])),
    ],
    "read until close, capped": [
        ("o", b"GET /old HTTP/1.0\r\n\r\n"),
        ("r", b"HTTP/1.0 200 OK\r\n\r\n" + _BIG + _TEXT),
    ],
}


def _fast_path_run(events: list, direct: bool, max_body_bytes: int | None = None):
    with pytest.MonkeyPatch.context() as mp:
        if not direct:
            mp.setattr(http_mod, "_DIRECT_STATES", frozenset())  # every byte through _pump
        a = HttpAnalyzer(CONN)
        if max_body_bytes is not None:
            a.max_body_bytes = max_body_bytes
        for i, (who, x) in enumerate(events):
            if isinstance(x, int):
                a.gap(who == "o", x, 1.0 + i)
            else:
                a.feed(who == "o", x, 1.0 + i)
        a.finish(1e6)
        records, files, weirds = a.drain()
    return records, [vars(f) for f in files], weirds


def _rechunk(session: list, sizes: list[int], merge: bool) -> list:
    if merge:  # consecutive same-direction data merged, as a dispatcher handing over several segments
        merged: list = []
        for who, x in session:
            if merged and not isinstance(x, int) and merged[-1][0] == who and not isinstance(merged[-1][1], int):
                merged[-1] = (who, merged[-1][1] + x)
            else:
                merged.append((who, x))
        session = merged
    out, k = [], 0
    for who, x in session:
        if isinstance(x, int):
            out.append((who, x))
            continue
        i = 0
        while i < len(x):
            n = sizes[k % len(sizes)]
            k += 1
            out.append((who, x[i : i + n]))
            i += n
    return out


@pytest.mark.parametrize("name", sorted(_FAST_PATH_SESSIONS))
@pytest.mark.parametrize("sizes", [[1460], [1], [7, 1460, 3, 65536], [1 << 30]], ids=["mss", "bytes", "mixed", "whole"])
@pytest.mark.parametrize("merge", [False, True])
def test_body_fast_path_is_exact(name, sizes, merge):
    events = _rechunk(_FAST_PATH_SESSIONS[name], sizes, merge)
    cap = 50_000 if name.endswith("capped") else None
    fast = _fast_path_run(events, True, cap)
    assert fast == _fast_path_run(events, False, cap)
    assert fast[1], "the session recovers objects"


@given(name=st.sampled_from(sorted(_FAST_PATH_SESSIONS)), sizes=st.lists(st.integers(1, 5000), min_size=1, max_size=8),
       merge=st.booleans())
@settings(max_examples=60, deadline=None)
def test_body_fast_path_is_exact_random_splits(name, sizes, merge):
    events = _rechunk(_FAST_PATH_SESSIONS[name], sizes, merge)
    assert _fast_path_run(events, True) == _fast_path_run(events, False)


def test_httpu_datagrams():
    conn = ConnInfo("Cu", "192.168.1.2", 50000, "239.255.255.250", 1900, "udp")
    a = SsdpAnalyzer(conn)
    a.datagram(True, b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n\r\n", 1.0)
    a.datagram(False, b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\n\r\n", 2.0)
    a.datagram(True, b"not http", 3.0)
    a.finish(4.0)
    records, files, weirds = a.drain()
    assert [(r["method"], r["host"], r["uri"], r["status_code"]) for _, r in records] == [
        ("M-SEARCH", "239.255.255.250:1900", "*", None), (None, None, None, 200)]
    assert files == [] and names(weirds) == ["bad_HTTP_request"]


@pytest.mark.parametrize(
    "data,mime",
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"PK\x03\x04\x14\x00\x00\x00", "application/zip"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"MZ\x90\x00" + bytes(80), "application/x-dosexec"),
        (b"\x1f\x8b\x08\x00\x00\x00", "application/gzip"),
        (b"\x7fELF\x02\x01", "application/x-executable"),
        (b"CWS\x0a\x00\x00", "application/x-shockwave-flash"),
        (b"\x00\x00\x01\x00\x01\x00\x10\x10", "image/x-icon"),
        (b"  \r\n<!DOCTYPE html>\n<html>", "text/html"),
        (b"<html><head><title>x", "text/html"),
        (b"<?xml version=\"1.0\"?>\n<root/>", "application/xml"),
        (b"\xef\xbb\xbf{\"a\": [1, 2]}", "application/json"),
        (b"[{\"a\": 1}]", "application/json"),
        (b"just some words, nothing special\n", "text/plain"),
        (b"\x00\x01\x02\x03\xfe\xff", "application/octet-stream"),
    ],
)
def test_sniff(data, mime):
    assert sniff(data) == mime


def test_sniff_empty():
    assert sniff(b"") is None


# ---------------------------------------------------------------------------------------------
# The corpus

ROOT = corpus_root()
needs_corpus = pytest.mark.skipif(ROOT is None, reason="shared corpus not present")
csv.field_size_limit(1 << 30)


def _capture_dirs(oracle: str, containing: str | None = None) -> list[Path]:
    """Capture folders having an oracle file matching the glob (optionally holding a string)."""
    if ROOT is None:
        return []
    found = set()
    for p in ROOT.glob(f"*/*/oracle/{oracle}"):
        if containing is None or containing in p.read_text(errors="replace"):
            found.add(p.relative_to(ROOT).parents[-3])  # <category>/<capture>
    return sorted(ROOT / d for d in found)


def _capture_file(d: Path) -> Path:
    return next(f for f in sorted(d.iterdir()) if f.is_file() and f.suffix in (".pcap", ".pcapng", ".cap"))


def _tsv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def _keeps_direction_order() -> bool:
    """Does streamkit deliver each direction's bytes in sequence order?

    Its offline reassembly sorts all pieces by their own capture time, so a segment that arrived
    out of order (before the one preceding it in sequence) is delivered first. Probe it.
    """
    o = ("10.0.0.1", 1)
    recs = [(o, 0x02, 99, b"", 0.5), (o, 0x10, 103, b"def", 1.0), (o, 0x10, 100, b"abc", 2.0)]
    data = [e[2] for e in streamkit._reassemble(recs, o) if e[0] == "data"]
    return data == [b"abc", b"def"]


def _completion_times(recs: list, orig: tuple) -> list:
    """Give every segment the time its bytes became deliverable in order (max over the prefix)."""
    out = list(recs)
    for is_orig in (True, False):
        idx = [i for i, r in enumerate(recs) if (r[0] == orig) == is_orig and r[3]]
        if not idx:
            continue
        syn = [r for r in recs if (r[0] == orig) == is_orig and r[1] & 0x02]
        base = (syn[0][2] + 1) if syn else recs[idx[0]][2]
        pos, done = 0, float("-inf")
        for rel, i in sorted((((recs[i][2] - base) & 0xFFFFFFFF), i) for i in idx):
            src, flags, seq, payload, ts = recs[i]
            if rel > 0x7FFFFFFF or rel + len(payload) <= pos:
                continue
            done = max(done, ts)
            out[i] = (src, flags, seq, payload, done)
            pos = max(pos, rel + len(payload))
    return out


@lru_cache(maxsize=None)
def analyze_capture(path: str) -> dict:
    """Every TCP connection (and UDP 1900) of a capture through the analyzer."""
    original = streamkit._reassemble
    if not _keeps_direction_order():
        # Work around the ordering defect above (reported to the lead): same reassembly, with
        # each segment's time raised to its in-order completion time.
        streamkit._reassemble = lambda recs, orig: original(_completion_times(recs, orig), orig)
    try:
        conns = streamkit.connections(path)
    finally:
        streamkit._reassemble = original
    out = {"records": [], "files": [], "weirds": [], "gappy": set()}
    for n, c in enumerate(conns):
        ci = ConnInfo(f"C{n}", c.orig_h, c.orig_p, c.resp_h, c.resp_p, c.proto)
        if c.proto == "tcp":
            a = HttpAnalyzer(ci)
            for e in c.events:
                (a.feed if e[0] == "data" else a.gap)(e[1], e[2], e[3])
            if any(e[0] == "gap" for e in c.events):
                out["gappy"].add(n)
        elif 1900 in (c.orig_p, c.resp_p):
            a = SsdpAnalyzer(ci)
            for e in c.events:
                a.datagram(e[1], e[2], e[3])
        else:
            continue
        a.finish(c.events[-1][3] if c.events else 0.0)
        records, files, weirds = a.drain()
        out["records"] += [(n, r) for t, r in records if t == "http"]
        out["files"] += [(n, f) for f in files]
        out["weirds"] += weirds
    assert not [w for w in out["weirds"] if w[0] == "http_analyzer_error"]
    return out


# Known disagreements with tshark's exported objects, each checked rather than skipped.
# (1) tshark 4.0 does not reassemble out-of-order TCP segments by default: the 1607-byte GIF's
#     last segment arrived before its first, and tshark exported just that 383-byte segment.
TSHARK_TAIL_ONLY = {("dns/markofu__dns", "Logo_25wht.gif")}
# (2) streamkit skips IP fragments (the pipeline's Defragmenter is not in it): in these GTP-U
#     captures the outer IP packets are fragmented, so bodies/requests come with gaps. Allowed
#     only where our stream for the connection really has a gap.
STREAMKIT_FRAGMENTED = {"mobile/zeek__gtp2_different_udp_port", "mobile/zeek__gtp1_gn_normal_incl_fragmentation"}


@needs_corpus
@pytest.mark.parametrize("d", _capture_dirs("tshark/objects_http.tsv"), ids=lambda d: capture_id(d / "x"))
def test_objects_match_tshark(d: Path):
    cid = capture_id(d / "x")
    res = analyze_capture(str(_capture_file(d)))
    files = [f for _, f in res["files"]]
    mine = {sha(f.data) for f in files}
    rows = _tsv(d / "oracle/tshark/objects_http.tsv")
    missed, tail, fragmented = [], 0, 0
    for row in rows:
        if row["sha256"] in mine:
            continue
        size = int(row["size"])
        if (cid, row["exported_name"]) in TSHARK_TAIL_ONLY:
            assert any(len(f.data) > size and sha(f.data[-size:]) == row["sha256"] for f in files), row
            tail += 1
            continue
        if cid in STREAMKIT_FRAGMENTED:
            assert any(f.missing_bytes and f.total_bytes == size for f in files), row
            fragmented += 1
            continue
        missed.append((row["exported_name"], size))
    exact = len(rows) - len(missed) - tail - fragmented
    print(f"{cid}: {exact}/{len(rows)} tshark objects identical (+{tail} tshark-truncated, "
          f"+{fragmented} lost to skipped fragments) among our {len(files)} FileObjects")
    assert missed == []


# tshark files NOTIFY, SUBSCRIBE and UNSUBSCRIBE (GENA) as ``http.notification``, not
# ``http.request``, so they never appear in http_requests.tsv (13 SSDP NOTIFYs in dns.cap; a
# SUBSCRIBE on port 5005 in example.pcap, which tshark only dissects with -d tcp.port==5005,http
# and then also files as a notification).
TSHARK_NOTIFICATIONS = {"NOTIFY", "SUBSCRIBE", "UNSUBSCRIBE"}


@needs_corpus
@pytest.mark.parametrize("d", _capture_dirs("tshark/http_requests.tsv"), ids=lambda d: capture_id(d / "x"))
def test_requests_match_tshark(d: Path):
    cid = capture_id(d / "x")
    res = analyze_capture(str(_capture_file(d)))
    theirs = Counter((r["http.request.method"], r["http.host"] or None, r["http.request.uri"])
                     for r in _tsv(d / "oracle/tshark/http_requests.tsv"))
    mine = Counter((r["method"], r["host"], r["uri"]) for _, r in res["records"]
                   if r["method"] and r["method"] not in TSHARK_NOTIFICATIONS)
    only_theirs, only_mine = theirs - mine, mine - theirs
    if cid in STREAMKIT_FRAGMENTED and only_theirs:
        # the request's packets were fragments streamkit skipped: its stream begins with a gap
        assert res["gappy"] and not only_mine
        only_theirs = Counter()
    print(f"{cid}: {sum((theirs & mine).values())}/{sum(theirs.values())} tshark requests matched")
    assert (dict(only_theirs), dict(only_mine)) == ({}, {})


@needs_corpus
@pytest.mark.parametrize("d", _capture_dirs("tshark/http_responses.tsv"), ids=lambda d: capture_id(d / "x"))
def test_responses_match_tshark(d: Path):
    """tshark's responses are all ours; ours may be more (the ones tshark loses to reordering)."""
    res = analyze_capture(str(_capture_file(d)))
    theirs = Counter((r["http.response.code"], r["http.response.phrase"]) for r in _tsv(d / "oracle/tshark/http_responses.tsv"))
    mine = Counter()
    for _, r in res["records"]:
        for code, msg in ((r["status_code"], r["status_msg"]), (r["info_code"], r["info_msg"])):
            if code is not None:
                mine[(str(code), msg)] += 1
    assert dict(theirs - mine) == {}


def _zeek_logs(d: Path, name: str) -> list[dict]:
    out = []
    for log in sorted(d.glob(f"oracle/upstream/zeek/*/{name}")):
        fields = None
        for line in log.read_text().splitlines():
            if line.startswith("#fields"):
                fields = line.split("\t")[1:]
            elif not line.startswith("#") and fields:
                out.append(dict(zip(fields, line.split("\t"))))
    return out


@needs_corpus
@pytest.mark.parametrize("d", _capture_dirs("upstream/zeek/*/http.log"), ids=lambda d: capture_id(d / "x"))
def test_zeek_http_log(d: Path):
    cid = capture_id(d / "x")
    res = analyze_capture(str(_capture_file(d)))
    zeek = _zeek_logs(d, "http.log")

    def z(v):
        return None if v == "-" else v

    # Zeek logs the URI percent-decoded; we keep it as sent (like tshark).
    mine = {(r["trans_depth"], unquote(r["uri"] or "")): r for _, r in res["records"] if r["method"]}
    for zr in zeek:
        key = (int(zr["trans_depth"]), z(zr["uri"]) or "")
        if key not in mine and cid in STREAMKIT_FRAGMENTED:
            assert res["gappy"]  # the request sits in fragments streamkit skipped
            continue
        r = mine[key]
        assert (r["method"], r["host"], r["referrer"], r["version"], r["user_agent"]) == (
            z(zr["method"]), z(zr["host"]), z(zr["referrer"]), z(zr["version"]), z(zr["user_agent"]))
        assert (str(r["status_code"]), r["status_msg"]) == (zr["status_code"], zr["status_msg"])
        assert (r["info_code"], r["info_msg"]) == (int(zr["info_code"]) if z(zr["info_code"]) else None, z(zr["info_msg"]))
        assert r["request_body_len"] == int(zr["request_body_len"])
        assert r["response_body_len"] == int(zr["response_body_len"])
        assert r["orig_mime_types"] == (zr["orig_mime_types"].split(",") if z(zr["orig_mime_types"]) else None)
        gappy_body = cid in STREAMKIT_FRAGMENTED and any(f.missing_bytes for _, f in res["files"])
        if not gappy_body:  # with the body's first bytes lost, there is nothing to sniff
            # Zeek has no catch-all type: where no signature matches it logs none, we say
            # application/octet-stream.
            ours = [m for m in r["resp_mime_types"] or [] if m != "application/octet-stream"] or None
            assert ours == (zr["resp_mime_types"].split(",") if z(zr["resp_mime_types"]) else None)


def _arkime_http_sha256(d: Path) -> set[str]:
    out: set[str] = set()
    for t in d.glob("oracle/upstream/arkime/*.test"):
        for s in json.loads(t.read_text()).get("sessions3", []):
            out |= set(s["body"].get("http", {}).get("sha256", []))
    return out


@needs_corpus
@pytest.mark.parametrize("d", [d for d in _capture_dirs("upstream/arkime/*.test", '"http"') if _arkime_http_sha256(d)],
                         ids=lambda d: capture_id(d / "x"))
def test_arkime_body_hashes(d: Path):
    """Arkime hashes each body as sent (before content decoding): ours in meta["encoded_sha256"]."""
    expected = _arkime_http_sha256(d)
    res = analyze_capture(str(_capture_file(d)))
    mine = {sha(f.data) for _, f in res["files"]} | {f.meta.get("encoded_sha256") for _, f in res["files"]}
    assert expected <= mine


@needs_corpus
@pytest.mark.parametrize("d", _capture_dirs("upstream/suricata-verify/http-post-file/test.rules"), ids=lambda d: capture_id(d / "x"))
def test_suricata_file_data_to_server(d: Path):
    """The rule alerts once on ``file_data`` to the server containing its content (EICAR)."""
    rules = (d / "oracle/upstream/suricata-verify/http-post-file/test.rules").read_text()
    m = re.search(r"flow:to_server;\s*file_data;\s*content:\"\|([0-9a-fA-F ]+)\|\"", rules)
    assert m, rules
    needle = bytes.fromhex(m.group(1).replace(" ", ""))
    res = analyze_capture(str(_capture_file(d)))
    hits = [f for _, f in res["files"] if f.is_orig and needle in f.data]
    assert len(hits) == 1
