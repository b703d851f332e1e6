"""HTTP/1.x analyzer (sans-IO): requests and responses, bodies, recovered objects.

One :class:`HttpAnalyzer` per TCP connection. Each direction is parsed by its own small state
machine (start line + header block, then a body framed by Content-Length, chunked
Transfer-Encoding with trailers, or the end of the connection). Requests and responses are
paired FIFO, which covers keep-alive and pipelining; interim 1xx responses (``100 Continue``)
become ``info_code``/``info_msg`` and do not consume the request; HEAD, 1xx, 204 and 304
responses have no body. After ``CONNECT`` + 2xx or ``101 Switching Protocols`` the connection
is an opaque tunnel and parsing stops (the client side holds its bytes until the answer is
known); an HTTP/2 prior-knowledge preface stops parsing too.

Bodies are transfer-decoded, then content-decoded (``gzip``/``x-gzip``, ``deflate`` in its zlib
and raw forms, ``br`` when :mod:`brotli` is installed, chains of them) incrementally, capped at
:attr:`HttpAnalyzer.max_body_bytes` (decompression bombs included). Every non-empty body becomes
a :class:`FileObject` holding the *decoded* bytes, which is what ``tshark --export-objects http``
writes (meta ``encoded_sha256`` keeps the hash of the bytes as sent, which Arkime reports); a
body that does not decode at all is kept as sent. Multipart bodies are also split: each
uploaded file of a ``multipart/form-data`` request and each part of a ``multipart/byteranges``
(or other multipart) body becomes a FileObject of its own.

Capture loss: a gap inside a Content-Length body or a chunk counts as
``FileObject.missing_bytes`` (identity bodies are zero-filled, so offsets stay right; a gap stops
content decoding); a gap anywhere else (headers, chunk framing, past the end of a body) makes
that direction resynchronise on the next complete start line. Malformed input never raises:
it becomes a weird (Zeek's names where Zeek has one) and the direction resynchronises.

Robustness for passive capture: the two directions are interleaved by time only, so a response
waits for the request it answers; a response that began before the oldest open request is
logged unmatched (its request was not captured); if the connection's originator speaks first
with a status line (the capture missed the handshake), the roles are flipped.

Each transaction yields one ``http`` record (Zeek's ``http.log`` fields, plus body SHA-256s)
when both its request and its response are complete, or at :meth:`finish`; its FileObjects are
emitted just before it (``meta["trans_depth"]`` links them). HTTP over UDP (SSDP's HTTPU) goes
through :meth:`HttpAnalyzer.datagram`: each datagram is one message and one record.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import quopri
import re
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import pyarrow as pa

from .base import ConnInfo, FileObject, StreamAnalyzer
from .mime_sniff import sniff

try:  # optional: Content-Encoding: br
    import brotli as _brotli
except ImportError:  # pragma: no cover - brotli is a declared dependency
    _brotli = None

__all__ = [
    "ANALYZERS",
    "HTTP_SCHEMA",
    "RECORD_SCHEMAS",
    "HttpAnalyzer",
    "SsdpAnalyzer",
    "split_multipart",
]

_TS = pa.timestamp("us", tz="UTC")
_STRS = pa.list_(pa.string())

HTTP_SCHEMA = pa.schema(
    [
        pa.field("ts", _TS, nullable=False),
        pa.field("uid", pa.string(), nullable=False),
        pa.field("id.orig_h", pa.string(), nullable=False),
        pa.field("id.orig_p", pa.uint16(), nullable=False),
        pa.field("id.resp_h", pa.string(), nullable=False),
        pa.field("id.resp_p", pa.uint16(), nullable=False),
        pa.field("trans_depth", pa.uint32()),
        pa.field("method", pa.string()),
        pa.field("host", pa.string()),
        pa.field("uri", pa.string()),  # as sent (not percent-decoded: Zeek decodes, tshark does not)
        pa.field("referrer", pa.string()),
        pa.field("version", pa.string()),  # "1.1"
        pa.field("user_agent", pa.string()),
        pa.field("origin", pa.string()),
        pa.field("request_body_len", pa.int64()),  # decoded (de-chunked, decompressed) length
        pa.field("response_body_len", pa.int64()),
        pa.field("status_code", pa.uint16()),
        pa.field("status_msg", pa.string()),
        pa.field("info_code", pa.uint16()),  # last interim (1xx) response
        pa.field("info_msg", pa.string()),
        pa.field("username", pa.string()),  # from Basic auth; the password is never kept
        pa.field("orig_filenames", _STRS),  # names given by Content-Disposition / multipart parts
        pa.field("orig_mime_types", _STRS),  # sniffed, one per request FileObject
        pa.field("resp_filenames", _STRS),
        pa.field("resp_mime_types", _STRS),
        # lawtap extras
        pa.field("request_body_sha256", pa.string()),  # of the decoded body
        pa.field("response_body_sha256", pa.string()),
    ]
)

RECORD_SCHEMAS = {"http": HTTP_SCHEMA}

# ----------------------------------------------------------------------------------------------
# Lexical pieces

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_REQ_LINE = re.compile(rb"(" + _TOKEN + rb"{1,32})[ \t]+(\S(?:[^\r\n]*\S)?)[ \t]+HTTP/([0-9])\.([0-9])[ \t]*")
_RESP_LINE = re.compile(rb"HTTP/([0-9])\.([0-9])(?:[ \t]+([0-9]{3})(?:[ \t]([^\r\n]*))?|([0-9]{3}))?[ \t]*")
# Resynchronisation: a complete start line anywhere (after a gap the next message usually
# follows the tail of a body directly, not a line break). Requests need a well-known method.
_RESYNC_MAX_LINE = 8192
_METHODS = (
    rb"GET|POST|HEAD|PUT|DELETE|OPTIONS|CONNECT|TRACE|PATCH|PROPFIND|PROPPATCH|MKCOL|COPY|MOVE|LOCK|UNLOCK"
    rb"|REPORT|SEARCH|SUBSCRIBE|UNSUBSCRIBE|NOTIFY|M-SEARCH|PURGE|MKCALENDAR|RPC_IN_DATA|RPC_OUT_DATA"
)
_REQ_TAIL = re.compile(rb" HTTP/[0-9]\.[0-9]\r?\n")
_METHOD_AT_END = re.compile(rb"(?:" + _METHODS + rb")\Z")
_RESYNC_RESP = re.compile(rb"HTTP/[0-9]\.[0-9] [0-9]{3}[^\r\n]{0,1024}\r?\n")


def _find_request_line(buf: bytearray) -> int:
    """Offset of the first complete ``METHOD URI HTTP/x.y`` line (URI without spaces), or -1."""
    pos = 0
    while True:
        m = _REQ_TAIL.search(buf, pos)
        if m is None:
            return -1
        sp = buf.rfind(b" ", max(0, m.start() - _RESYNC_MAX_LINE), m.start())
        if 0 < sp < m.start() - 1 and b"\n" not in buf[sp:m.start()]:
            mm = _METHOD_AT_END.search(buf, max(0, sp - 16), sp)
            if mm:
                return mm.start()
        pos = m.end()
_EOH = re.compile(rb"\r?\n\r?\n")
_TOKEN_RUN = re.compile(_TOKEN + rb"*")
_HEX = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")

# Parser states of one direction.
_START, _BODY_LEN, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _BODY_CLOSE = range(7)
_RESYNC, _WAIT_ANSWER, _TUNNEL, _DEAD = range(7, 11)
_BODY_STATES = (_BODY_LEN, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _BODY_CLOSE)
_DIRECT_STATES = frozenset((_BODY_LEN, _CHUNK_DATA, _BODY_CLOSE))  # see HttpAnalyzer._direct_body

_MAX_WEIRDS = 200


def _text(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


# ----------------------------------------------------------------------------------------------
# Content decoding


class _Stage:
    """One decompression step: ``feed`` returns at most ``limit`` bytes, raises on bad data.

    ``saturated`` means output is pending that ``limit`` held back.
    """

    saturated = False

    def feed(self, data: bytes, limit: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def flush(self, limit: int) -> bytes:
        return b""


class _ZlibStage(_Stage):
    """gzip (possibly several members) or deflate (zlib-wrapped, or raw as some servers send)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.d: Any = None
        self.head = b""  # deflate: first bytes, to tell zlib from raw
        self.tail = b""  # input held back by the output limit
        self.done = False

    @property
    def saturated(self) -> bool:  # type: ignore[override]
        return bool(self.tail)

    def _start(self, data: bytes) -> None:
        if self.kind == "gzip":
            self.d = zlib.decompressobj(32 + zlib.MAX_WBITS)  # gzip or zlib header, auto-detected
        else:
            b0, b1 = data[0], data[1]
            zlib_hdr = (b0 & 0x0F) == 8 and (b0 >> 4) <= 7 and ((b0 << 8) | b1) % 31 == 0
            self.d = zlib.decompressobj(zlib.MAX_WBITS if zlib_hdr else -zlib.MAX_WBITS)

    def feed(self, data: bytes, limit: int) -> bytes:
        if self.done:
            return b""
        if self.d is None:
            data = self.head + data
            if len(data) < 2:
                self.head = data
                return b""
            self.head = b""
            self._start(data)
        if self.tail:
            data = self.tail + data
        out = self.d.decompress(data, max(limit, 1))
        self.tail = self.d.unconsumed_tail
        if self.d.eof:
            rest = self.d.unused_data
            self.tail = b""
            if self.kind == "gzip" and rest[:2] == b"\x1f\x8b":  # another gzip member
                self.d = zlib.decompressobj(32 + zlib.MAX_WBITS)
                return out + self.feed(rest, max(limit - len(out), 0))
            self.done = True
        return out

    def flush(self, limit: int) -> bytes:
        if self.d is None or self.done:
            return b""
        return self.feed(b"", limit) if self.tail else self.d.flush()


class _BrotliStage(_Stage):
    def __init__(self) -> None:
        self.d = _brotli.Decompressor()

    def feed(self, data: bytes, limit: int) -> bytes:
        if self.saturated:
            raise ValueError("decoded data exceeds the size cap")
        try:
            out = self.d.process(data, output_buffer_limit=max(limit, 1))
        except TypeError:  # brotli < 1.2: no output limit
            return self.d.process(data)
        can = getattr(self.d, "can_accept_more_data", None)
        self.saturated = can is not None and not can()
        return out


class _Decoder:
    """A chain of content codings, decoded incrementally; output capped at ``cap`` bytes.

    Intermediate stages are held to ``cap`` too, so a decompression bomb costs at most a few
    times ``cap`` of work per input chunk.
    """

    def __init__(self, codings: list[str], cap: int) -> None:
        self.cap = cap
        self.error: str | None = None
        self.unsupported = False
        self.capped = False
        self.stages: list[_Stage] = []
        for c in reversed(codings):  # codings are listed in the order they were applied
            if c in ("gzip", "x-gzip"):
                self.stages.append(_ZlibStage("gzip"))
            elif c == "deflate":
                self.stages.append(_ZlibStage("deflate"))
            elif c == "br" and _brotli is not None:
                self.stages.append(_BrotliStage())
            elif c in ("identity", ""):
                continue
            else:
                self.error = f"unsupported coding {c!r}"
                self.unsupported = True
                break
        self.out_len = 0

    def _limit(self, i: int) -> int:
        return self.cap - self.out_len if i == len(self.stages) - 1 else self.cap

    def feed(self, data: bytes) -> bytes:
        if self.error or self.capped or not data:
            return b""
        if self.stages and self.stages[-1].saturated and self.out_len >= self.cap:
            self.capped = True
            return b""
        try:
            for i, st in enumerate(self.stages):
                data = st.feed(data, self._limit(i))
                if not data:
                    break
        except Exception as e:  # zlib.error, brotli.error: corrupt stream
            self.error = f"{type(e).__name__}: {e}"[:200]
            return b""
        return self._account(data)

    def finish(self) -> bytes:
        if self.error or self.capped:
            return b""
        carry = b""
        try:
            for i, st in enumerate(self.stages):
                limit = self._limit(i)
                carry = (st.feed(carry, limit) if carry else b"") + st.flush(limit)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"[:200]
            carry = b""
        return self._account(carry)

    def _account(self, data: bytes) -> bytes:
        room = self.cap - self.out_len
        if len(data) > room or (self.stages and self.stages[-1].saturated and len(data) >= room):
            self.capped = True
            data = data[: max(room, 0)]
        self.out_len += len(data)
        return data


class _Body:
    """One message body: transfer-decoded bytes in, content-decoded bytes accumulated (capped).

    :meth:`data` runs once per body segment, so it is kept to a few operations: the decoded
    bytes are collected as a list of chunks with a running length (``out_len``) and joined once,
    by :meth:`close`. (Appending to one ``bytearray`` cost more than the rest of the segment's
    handling: the buffer is reallocated and copied as it grows.)
    """

    __slots__ = ("ts", "cap", "out", "out_len", "raw", "wire_len", "decoded_len", "missing", "truncated",
                 "holes", "gap_broken", "fallback_raw", "decoder")

    def __init__(self, codings: list[str], cap: int, ts: float) -> None:
        self.ts = ts
        self.cap = cap
        self.out: list[bytes] = []  # the decoded bytes kept (at most ``cap``), in chunks
        self.out_len = 0
        self.raw = bytearray()  # transfer-decoded bytes, kept only while a content decoder runs
        self.wire_len = 0  # transfer-decoded bytes seen (gaps excluded)
        self.decoded_len = 0  # decoded bytes produced, including any beyond the cap
        self.missing = 0
        self.truncated = False
        self.holes: list[tuple[int, int]] = []
        self.gap_broken = False  # a gap interrupted content decoding
        self.fallback_raw = False  # decoding failed from the start: ``out`` holds the bytes as sent
        self.decoder = _Decoder(codings, cap) if codings else None

    def _keep(self, chunk: bytes) -> None:
        if chunk:
            self.out.append(chunk)
            self.out_len += len(chunk)

    def data(self, chunk: bytes) -> None:
        n = len(chunk)
        if not n:
            return
        if type(chunk) is not bytes:  # kept by reference: it must not change under us
            chunk = bytes(chunk)
        self.wire_len += n
        if self.decoder is None:  # stored as is, up to the cap
            self.decoded_len += n
            room = self.cap - self.out_len
            if n > room:
                self.truncated = True
                chunk = chunk[: max(room, 0)]
            self.out.append(chunk)
            self.out_len += len(chunk)
            return
        if len(self.raw) < self.cap:
            self.raw += chunk[: self.cap - len(self.raw)]
        out = self.decoder.feed(chunk)
        self.decoded_len += len(out)
        self._keep(out)
        if self.decoder.capped:
            self.truncated = True

    def gap(self, n: int) -> None:
        self.missing += n
        if self.decoder is None:
            self.holes.append((self.decoded_len, n))
            room = max(self.cap - self.out_len, 0)
            self._keep(bytes(min(n, room)))
            self.decoded_len += n
            if n > room:
                self.truncated = True
        elif self.decoder.error is None:
            self.decoder.error = "gap in encoded body"
            self.gap_broken = True

    def close(self) -> bytes:
        if self.decoder is not None:
            out = self.decoder.finish()
            self.decoded_len += len(out)
            self._keep(out)
            if self.decoder.capped:
                self.truncated = True
            if self.decoder.error and not self.out_len and not self.gap_broken:
                # Nothing decodable (mislabelled or corrupt from the start): keep the bytes as sent.
                self.out, self.out_len = [bytes(self.raw)], len(self.raw)
                self.decoded_len = self.wire_len
                self.fallback_raw = True
        data = b"".join(self.out)
        self.out = [data]
        return data


# ----------------------------------------------------------------------------------------------
# Transactions and per-direction state


@dataclass
class _Txn:
    depth: int
    ts: float
    method: str | None = None
    uri: str | None = None
    version: str | None = None
    host: str | None = None
    referrer: str | None = None
    user_agent: str | None = None
    origin: str | None = None
    username: str | None = None
    expect_continue: bool = False
    upgrade: bool = False  # CONNECT, or Upgrade requested: the client waits for the answer
    status_code: int | None = None
    status_msg: str | None = None
    info_code: int | None = None
    info_msg: str | None = None
    req_done: bool = False
    resp_done: bool = False
    req_len: int = 0
    resp_len: int = 0
    req_sha: str | None = None
    resp_sha: str | None = None
    req_files: list[FileObject] = field(default_factory=list)
    resp_files: list[FileObject] = field(default_factory=list)


@dataclass
class _Msg:
    is_request: bool
    txn: _Txn
    ts: float
    headers: list[tuple[str, str]]
    body: _Body | None = None
    content_length: int | None = None
    codings: list[str] = field(default_factory=list)


class _Side:
    def __init__(self, is_orig: bool) -> None:
        self.is_orig = is_orig
        self.is_request = is_orig  # role: which side sends requests (may be flipped)
        self.buf = bytearray()
        self.buf_ts = 0.0
        self.ts = 0.0
        self.state = _START
        self.msg: _Msg | None = None
        self.remaining = 0  # bytes left in the Content-Length body / current chunk
        self.scan_from = 0  # where to resume looking for the end of the header block
        self.trailers: list[tuple[str, str]] = []
        self.resync_seen = -1  # _RESYNC: buffer length at the last fruitless search
        self.wait_txn: _Txn | None = None  # _WAIT_ANSWER: the CONNECT/Upgrade request waited on


def _headers(lines: list[bytes]) -> tuple[list[tuple[str, str]], int]:
    """Header lines to (lowercased name, value) pairs; also the count of malformed lines."""
    out: list[tuple[str, str]] = []
    bad = 0
    for raw in lines:
        if raw[:1] in (b" ", b"\t") and out:  # obs-fold continuation
            name, value = out[-1]
            out[-1] = (name, (value + " " + _text(raw.strip())).strip())
            continue
        colon = raw.find(b":")
        if colon <= 0:
            bad += 1
            continue
        out.append((_text(raw[:colon].strip()).lower(), _text(raw[colon + 1 :].strip())))
    return out, bad


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def _get_all(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k == name]


def _param(value: str, name: str) -> str | None:
    """A parameter of a header value (``boundary``, ``filename``, ``filename*``), unquoted."""
    for m in re.finditer(r';\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+\*?)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', value):
        if m.group(1).lower() == name:
            v = m.group(2).strip()
            if v.startswith('"') and v.endswith('"') and len(v) >= 2:
                v = re.sub(r"\\(.)", r"\1", v[1:-1])
            return v
    return None


def _disposition_filename(value: str | None) -> str | None:
    if not value:
        return None
    ext = _param(value, "filename*")
    if ext:
        charset, _, rest = ext.partition("'")
        _, _, encoded = rest.partition("'")
        if encoded:
            try:
                return unquote(encoded, encoding=charset or "utf-8", errors="replace") or None
            except LookupError:
                return unquote(encoded, errors="replace") or None
    name = _param(value, "filename")
    return name or None


def _uri_filename(uri: str | None) -> str | None:
    if not uri:
        return None
    path = uri.split("?", 1)[0].split("#", 1)[0]
    if "://" in path:  # absolute-form (proxy requests)
        path = path.split("://", 1)[1]
        path = path[path.find("/") :] if "/" in path else ""
    last = path.rsplit("/", 1)[-1]
    return unquote(last, errors="replace") or None


def _codings(value: str | None) -> list[str]:
    if not value:
        return []
    return [c.strip().lower() for c in value.split(",") if c.strip()]


def _basic_user(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, cred = value.strip().partition(" ")
    if scheme.lower() != "basic" or not cred.strip():
        return None
    try:
        raw = base64.b64decode(cred.strip() + "===", validate=False)
    except (binascii.Error, ValueError):
        return None
    user = raw.split(b":", 1)[0]
    return _text(user)


# ----------------------------------------------------------------------------------------------
# Multipart


def split_multipart(data: bytes, boundary: str | bytes) -> list[tuple[list[tuple[str, str]], bytes]]:
    """The parts of a multipart body: ``[(headers, content)]`` (content transfer-decoded).

    Tolerant: a missing closing delimiter keeps the last part up to the end of the data.
    """
    if isinstance(boundary, str):
        boundary = boundary.encode("latin-1", "replace")
    if not boundary or not data:
        return []
    delim = b"--" + boundary
    if data.startswith(delim):
        pos = 0
    else:
        pos = data.find(b"\n" + delim)
        if pos < 0:
            return []
        pos += 1
    parts: list[tuple[list[tuple[str, str]], bytes]] = []
    while len(parts) < 10000:
        after = pos + len(delim)
        if data[after : after + 2] == b"--":
            break
        eol = data.find(b"\n", after)
        if eol < 0:
            break
        start = eol + 1
        nxt = data.find(b"\n" + delim, start)
        end = len(data) if nxt < 0 else nxt
        if nxt >= 0 and end > start and data[end - 1 : end] == b"\r":
            end -= 1
        part = data[start:end]
        if part.startswith((b"\r\n", b"\n")):  # no part headers
            hdrs: list[tuple[str, str]] = []
            content = part[2:] if part.startswith(b"\r\n") else part[1:]
        else:
            m = _EOH.search(part)
            if m:
                hdrs, _ = _headers(part[: m.start()].replace(b"\r\n", b"\n").split(b"\n"))
                content = part[m.end() :]
            else:
                hdrs, content = [], part
        cte = (_get(hdrs, "content-transfer-encoding") or "").strip().lower()
        if cte == "base64":
            try:
                content = base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", content) + b"===")
            except (binascii.Error, ValueError):
                pass
        elif cte == "quoted-printable":
            content = quopri.decodestring(content)
        parts.append((hdrs, bytes(content)))
        if nxt < 0:
            break
        pos = nxt + 1
    return parts


# ----------------------------------------------------------------------------------------------
# The analyzer


class HttpAnalyzer(StreamAnalyzer):
    """HTTP/1.0 and 1.1 over one TCP connection (or HTTPU datagrams)."""

    service = "http"
    #: Decoded bytes kept per body (more is counted, not stored; weird ``http_body_truncated``).
    max_body_bytes = 32 * 1024 * 1024
    #: A start line plus header block longer than this is abandoned (weird, resync).
    max_header_bytes = 64 * 1024
    #: Response bytes buffered while no request is known to pair them with.
    max_wait_bytes = 256 * 1024
    #: Requests allowed to wait for their responses (pipelining depth).
    max_pending = 10000

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self._sides = {True: _Side(True), False: _Side(False)}
        self._pending: deque[_Txn] = deque()  # requests awaiting their final response
        self._open: list[_Txn] = []  # transactions not yet logged, in order
        self._depth = 0
        self._roles_locked = False
        self._finishing = False
        self._finished = False
        self._n_weirds = 0
        self._settled = True  # the last _pump ran until neither side could progress

    # -- public hooks ---------------------------------------------------------------------------

    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self._finished or not data:
            return
        side = self._sides[bool(is_orig)]
        if side.state in (_TUNNEL, _DEAD):
            return
        try:
            side.ts = ts
            if not side.buf:
                side.buf_ts = ts
                if side.state in _DIRECT_STATES and self._settled:
                    data = self._direct_body(side, data)
                    if data is None:
                        return
            side.buf += data
            self._pump()
        except Exception as e:  # safety net; the tests assert it never fires
            self._internal_error(e)

    def _direct_body(self, side: _Side, data: bytes) -> bytes | None:
        """The fast path for body bytes: straight from ``data`` into the body, not via ``side.buf``.

        Most segments of a transfer are the middle of a body; buffering them and running both
        sides' state machines (:meth:`_pump`) cost far more than the body bytes themselves. When
        this side's buffer is empty and it is inside a Content-Length body, a chunk's data or a
        read-until-close body, the bytes that belong to it go to the body directly. Returns
        ``None`` when that was all, else the bytes still to buffer and :meth:`_pump` (the rest
        after the end of the body or chunk, possibly empty; or all of ``data``, for the slow path).

        Same result as the slow path: the other side was settled by the last :meth:`_pump`
        (``_settled``), and nothing it waits on (its own bytes, pending requests, a response's
        status, this side being tunnelled or dead) changes when body bytes arrive here or when a
        body ends, so running it first, as :meth:`_pump` would, does nothing.
        """
        msg = side.msg
        body = msg.body if msg is not None else None
        if body is None:
            return data
        if side.state == _BODY_CLOSE:
            body.data(data)
            return None
        if msg.txn.expect_continue and not body.wire_len and not body.missing:
            return data  # the body may be skipped (_maybe_skip_expected_body): the slow path decides
        take = side.remaining
        if len(data) < take:  # the middle of the body or chunk: the common case
            body.data(data)
            side.remaining = take - len(data)
            return None
        self._take_body(side, data[:take])
        return data[take:]  # the body or chunk ended: the state machine takes it from here

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        if self._finished or length <= 0:
            return
        side = self._sides[bool(is_orig)]
        try:
            side.ts = ts
            self._pump()  # settle what the bytes before the gap allow
            self._gap(side, int(length))
            self._pump()
        except Exception as e:
            self._internal_error(e)

    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self._finished or not data:
            return
        try:
            self._datagram(bool(is_orig), bytes(data), ts)
        except Exception as e:
            self._internal_error(e)

    def finish(self, ts: float) -> None:
        if self._finished:
            return
        try:
            self._finishing = True
            self._pump()
            for side in (self._sides[True], self._sides[False]):
                if side.state == _BODY_CLOSE:
                    self._end_body(side)
                elif side.state in _BODY_STATES and side.msg is not None:
                    self._weird("http_body_incomplete", self._where(side.msg))
                    self._end_body(side)
                elif side.state == _START and bytes(side.buf).strip():
                    self._weird("http_incomplete_message", f"{len(side.buf)} bytes without a complete header")
            for t in self._open:
                self._log(t)
            self._open.clear()
        except Exception as e:
            self._internal_error(e)
        self._finished = True

    # -- plumbing -----------------------------------------------------------------------------------

    def _internal_error(self, e: Exception) -> None:
        self.weirds.append(("http_analyzer_error", f"{type(e).__name__}: {e}"[:300]))
        for s in self._sides.values():
            s.state = _DEAD
            s.buf.clear()

    def _weird(self, name: str, detail: str = "") -> None:
        self._n_weirds += 1
        if self._n_weirds <= _MAX_WEIRDS:
            self.weirds.append((name, detail[:300]))
        elif self._n_weirds == _MAX_WEIRDS + 1:
            self.weirds.append(("http_too_many_weirds", f"further weirds suppressed after {_MAX_WEIRDS}"))

    @staticmethod
    def _where(msg: _Msg) -> str:
        t = msg.txn
        return f"depth {t.depth} {t.method or '-'} {(t.uri or '-')[:120]}"

    def _pump(self) -> None:
        req, resp = self._req_side(), self._resp_side()
        self._settled = False
        for _ in range(100000):
            p1 = self._run(req)
            p2 = self._run(resp)
            if not (p1 or p2):
                self._settled = True
                break

    def _req_side(self) -> _Side:
        return self._sides[True] if self._sides[True].is_request else self._sides[False]

    def _resp_side(self) -> _Side:
        return self._sides[False] if self._sides[True].is_request else self._sides[True]

    def _run(self, side: _Side) -> bool:
        progressed = False
        while True:
            st = side.state
            if st == _START:
                step = self._head(side)
            elif st == _BODY_LEN:
                step = self._body_len(side)
            elif st == _CHUNK_SIZE:
                step = self._chunk_size(side)
            elif st == _CHUNK_DATA:
                step = self._chunk_data(side)
            elif st == _CHUNK_END:
                step = self._chunk_end(side)
            elif st == _TRAILERS:
                step = self._trailers(side)
            elif st == _BODY_CLOSE:
                step = self._body_close(side)
            elif st == _RESYNC:
                step = self._resync(side)
            elif st == _WAIT_ANSWER:
                step = self._wait_answer(side)
            else:  # _TUNNEL, _DEAD
                side.buf.clear()
                step = False
            if not step:
                return progressed
            progressed = True

    # -- start line and headers -------------------------------------------------------------------

    def _head(self, side: _Side) -> bool:
        buf = side.buf
        i = 0
        while buf[i : i + 1] in (b"\r", b"\n"):  # (not lstrip: that would copy the whole buffer)
            i += 1
        if i:
            del buf[:i]
            side.scan_from = 0
        if not buf:
            return False
        if not self._roles_locked and not self._check_roles(side):
            return False
        if not side.is_request and not self._pending and not self._finishing:
            # A response with no request to pair with yet: hold it until the request arrives
            # (the two directions are interleaved by time only), the connection ends, or too
            # much piles up.
            other = self._req_side()
            if other.state not in (_TUNNEL, _DEAD) and len(buf) < self.max_wait_bytes:
                return False
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > self.max_header_bytes:
                return self._bad_start(side, "start line too long")
            if not self._plausible_start(side):
                return self._bad_start(side, bytes(buf[:40]).decode("latin-1"))
            return False
        line = bytes(buf[:nl]).rstrip(b"\r")
        if side.is_request:
            m = _REQ_LINE.fullmatch(line)
        else:
            m = _RESP_LINE.fullmatch(line)
            if m and m.group(3) is None and m.group(5) is None:
                m = None
        if m is None:
            return self._bad_start(side, line[:80].decode("latin-1"))
        if side.is_request and m.group(1) == b"PRI" and m.group(3) == b"2":
            self._weird("http2_preface", "HTTP/2 with prior knowledge: not parsed")
            self._tunnel()
            return True
        eoh = _EOH.search(buf, max(side.scan_from, nl - 1))
        if eoh is None:
            if len(buf) > self.max_header_bytes:
                self._weird("http_header_too_long", f"more than {self.max_header_bytes} bytes of header")
                self._to_resync(side)
                del buf[: buf.rfind(b"\n") + 1]  # none of these lines ends a header block
                side.scan_from = 0
                return True
            side.scan_from = max(0, len(buf) - 3)
            return False
        block = bytes(buf[nl + 1 : eoh.start()])
        end = eoh.end()
        if eoh.start() < nl:  # the start line was immediately followed by the blank line
            block = b""
            end = eoh.end()
        del buf[:end]
        side.scan_from = 0
        ts = side.buf_ts
        side.buf_ts = side.ts
        lines = block.replace(b"\r\n", b"\n").split(b"\n") if block else []
        headers, bad = _headers(lines)
        if bad:
            self._weird("http_bad_header_line", f"{bad} header line(s) without a colon")
        self._roles_locked = True
        if side.is_request:
            self._request_head(side, ts, m, headers)
        else:
            code = int(m.group(3) or m.group(5))
            reason = _text(m.group(4) or b"").strip()
            self._response_head(side, ts, f"{int(m.group(1))}.{int(m.group(2))}", code, reason, headers)
        return True

    @staticmethod
    def _plausible_start(side: _Side) -> bool:
        """Could the (newline-less) buffer still become a valid start line?"""
        prefix = bytes(side.buf[:34])
        if not side.is_request:
            return prefix.startswith(b"HTTP/") or b"HTTP/".startswith(prefix[:5])
        m = _TOKEN_RUN.match(prefix)
        k = m.end() if m else 0
        if k == len(prefix):
            return k <= 32
        return 1 <= k <= 32 and prefix[k : k + 1] in (b" ", b"\t")

    def _check_roles(self, side: _Side) -> bool:
        """Before the first message: a side speaking the other role's start line flips roles."""
        buf = side.buf
        if side.is_request:
            if len(buf) < 5 and b"HTTP/".startswith(bytes(buf)):
                return False  # can't tell yet
            flip = buf.startswith(b"HTTP/")
        else:
            if len(buf) < 5 and b"HTTP/".startswith(bytes(buf)):
                return False
            if buf.startswith(b"HTTP/"):
                self._roles_locked = True
                return True
            nl = buf.find(b"\n")
            if nl < 0:
                return len(buf) > self.max_header_bytes  # let _head decide
            flip = _REQ_LINE.fullmatch(bytes(buf[:nl]).rstrip(b"\r")) is not None
        if flip:
            for s in self._sides.values():
                s.is_request = not s.is_request
            self._weird("http_roles_flipped", "the connection's responder sends requests")
        self._roles_locked = True
        return True

    @staticmethod
    def _to_resync(side: _Side) -> None:
        side.state = _RESYNC
        side.resync_seen = -1

    def _bad_start(self, side: _Side, what: str) -> bool:
        self._weird("bad_HTTP_request" if side.is_request else "bad_HTTP_reply", what)
        nl = side.buf.find(b"\n")
        if nl >= 0:  # drop the bad line so resynchronisation looks past it
            del side.buf[: nl + 1]
        side.scan_from = 0
        self._to_resync(side)
        return True

    def _resync(self, side: _Side) -> bool:
        buf = side.buf
        if len(buf) == side.resync_seen:
            return False  # nothing new since the last search
        if side.is_request:
            at = _find_request_line(buf)
        else:
            m = _RESYNC_RESP.search(buf)
            at = m.start() if m else -1
        if at < 0:
            # No complete start line; one can only begin on the last, unfinished line.
            keep = max(buf.rfind(b"\n") + 1, len(buf) - _RESYNC_MAX_LINE - 32)
            if keep:
                del buf[:keep]
            side.resync_seen = len(buf)
            return False
        del buf[:at]
        side.resync_seen = -1
        side.buf_ts = side.ts
        side.scan_from = 0
        side.state = _START
        return True

    def _request_head(self, side: _Side, ts: float, m: re.Match, headers: list[tuple[str, str]]) -> None:
        self._depth += 1
        method = _text(m.group(1))
        t = _Txn(
            depth=self._depth,
            ts=ts,
            method=method,
            uri=_text(m.group(2)),
            version=f"{int(m.group(3))}.{int(m.group(4))}",
            host=_get(headers, "host"),
            referrer=_get(headers, "referer"),
            user_agent=_get(headers, "user-agent"),
            origin=_get(headers, "origin"),
            username=_basic_user(_get(headers, "authorization")),
        )
        t.expect_continue = (_get(headers, "expect") or "").strip().lower() == "100-continue"
        connection = {c.strip().lower() for c in (_get(headers, "connection") or "").split(",")}
        t.upgrade = method.upper() == "CONNECT" or (_get(headers, "upgrade") is not None and "upgrade" in connection)
        if len(self._pending) >= self.max_pending:
            self._weird("http_too_many_pending", f"{len(self._pending)} requests without responses")
            old = self._pending.popleft()
            old.resp_done = True
            self._emit_ready()
        self._open.append(t)
        self._pending.append(t)
        msg = _Msg(True, t, ts, headers)
        te = _codings(_get(headers, "transfer-encoding"))
        if method.upper() == "CONNECT":
            self._no_body(side, msg)
            return
        if te:
            if _get(headers, "content-length") is not None:
                self._weird("HTTP_CL_and_TE", "request has both Content-Length and Transfer-Encoding")
            if te[-1] != "chunked":
                self._weird("http_bad_transfer_encoding", f"request Transfer-Encoding {','.join(te)}")
                self._no_body(side, msg)
                return
            self._begin_body(side, msg, _CHUNK_SIZE)
            return
        cl = self._content_length(headers)
        if cl is None or cl == 0:
            self._no_body(side, msg)
            return
        msg.content_length = cl
        self._begin_body(side, msg, _BODY_LEN, cl)

    def _response_head(
        self, side: _Side, ts: float, version: str, code: int, reason: str, headers: list[tuple[str, str]]
    ) -> None:
        if self._pending and not self._pending[0].ts > ts + 1e-6:
            t = self._pending[0]
        else:
            # No request to answer, or only requests made after this response began (their
            # answers come later): the request was not captured.
            self._depth += 1
            t = _Txn(depth=self._depth, ts=ts, version=version, req_done=True)
            self._open.append(t)
            self._weird("unmatched_HTTP_reply", f"{code} {reason}"[:100])
            self._pending.appendleft(t)
        if 100 <= code < 200 and code != 101:
            t.info_code, t.info_msg = code, reason
            return  # interim: the final response follows
        self._pending.popleft()
        t.status_code, t.status_msg = code, reason
        if t.version is None:
            t.version = version
        msg = _Msg(False, t, ts, headers)
        method = (t.method or "").upper()
        if (method == "CONNECT" and 200 <= code < 300) or code == 101:
            self._no_body(side, msg)
            self._tunnel()
            return
        req = self._req_side()
        if req.state == _WAIT_ANSWER and req.wait_txn is t:  # refused: the client goes on with HTTP
            req.state = _START
            req.wait_txn = None
        if method == "HEAD" or code in (204, 304) or code < 200:
            self._no_body(side, msg)
            return
        te = _codings(_get(headers, "transfer-encoding"))
        if te:
            if _get(headers, "content-length") is not None:
                self._weird("HTTP_CL_and_TE", "response has both Content-Length and Transfer-Encoding")
            if te[-1] == "chunked":
                self._begin_body(side, msg, _CHUNK_SIZE)
            else:
                self._begin_body(side, msg, _BODY_CLOSE)
            return
        cl = self._content_length(headers)
        if cl is None:
            self._begin_body(side, msg, _BODY_CLOSE)
        elif cl == 0:
            self._no_body(side, msg)
        else:
            msg.content_length = cl
            self._begin_body(side, msg, _BODY_LEN, cl)

    def _content_length(self, headers: list[tuple[str, str]]) -> int | None:
        values = _get_all(headers, "content-length")
        if not values:
            return None
        nums = set()
        for v in values:
            for piece in v.split(","):
                piece = piece.strip()
                if not piece.isdigit() or not piece.isascii():
                    self._weird("HTTP_bad_content_length", v[:60])
                    return None
                nums.add(int(piece))
        if len(nums) > 1:
            self._weird("HTTP_multiple_content_length", ",".join(values)[:80])
        return int(values[0].split(",")[0].strip())

    # -- bodies -------------------------------------------------------------------------------------

    def _no_body(self, side: _Side, msg: _Msg) -> None:
        side.msg = msg
        self._finish_msg(side, b"", None)

    def _begin_body(self, side: _Side, msg: _Msg, state: int, length: int = 0) -> None:
        te = [c for c in _codings(_get(msg.headers, "transfer-encoding")) if c != "chunked"]
        msg.codings = _codings(_get(msg.headers, "content-encoding")) + te
        msg.body = _Body(msg.codings, self.max_body_bytes, side.ts)
        if msg.body.decoder is not None and msg.body.decoder.error:
            self._weird("http_unsupported_encoding", ",".join(msg.codings)[:80])
        side.msg = msg
        side.state = state
        side.remaining = length
        side.trailers = []

    def _maybe_skip_expected_body(self, side: _Side) -> bool:
        """``Expect: 100-continue`` answered by a final response: the client may skip the body."""
        msg = side.msg
        if msg is None or not msg.is_request or not msg.txn.expect_continue or msg.txn.status_code is None:
            return False
        if msg.body is None or msg.body.wire_len or msg.body.missing:
            return False
        nl = side.buf.find(b"\n")
        if nl < 0 or not _REQ_LINE.fullmatch(bytes(side.buf[:nl]).rstrip(b"\r")):
            return False
        self._weird("http_expected_body_skipped", self._where(msg))
        msg.content_length = None
        self._end_body(side)
        return True

    def _body_len(self, side: _Side) -> bool:
        if not side.buf:
            return False
        if self._maybe_skip_expected_body(side):
            return True
        take = min(side.remaining, len(side.buf))
        chunk = bytes(side.buf[:take])
        del side.buf[:take]
        self._take_body(side, chunk)
        return True

    def _take_body(self, side: _Side, chunk: bytes) -> None:
        """Bytes of a Content-Length body or of a chunk (at most ``side.remaining``)."""
        side.msg.body.data(chunk)
        side.remaining -= len(chunk)
        if side.remaining == 0:
            if side.state == _BODY_LEN:
                self._end_body(side)
            else:
                side.state = _CHUNK_END

    def _chunk_size(self, side: _Side) -> bool:
        buf = side.buf
        if not buf:
            return False
        if self._maybe_skip_expected_body(side):
            return True
        nl = buf.find(b"\n")
        if nl < 0:
            if len(buf) > 1024:
                return self._bad_chunk(side, bytes(buf[:40]))
            return False
        m = _HEX.fullmatch(buf, 0, nl + 1)
        if m is None:
            if not bytes(buf[:nl]).strip():  # a stray empty line: tolerate
                del buf[: nl + 1]
                return True
            return self._bad_chunk(side, bytes(buf[:nl][:40]))
        size = int(m.group(1), 16)
        del buf[: nl + 1]
        if size == 0:
            side.state = _TRAILERS
        else:
            side.remaining = size
            side.state = _CHUNK_DATA
        return True

    def _bad_chunk(self, side: _Side, what: bytes) -> bool:
        self._weird("HTTP_bad_chunk_size", what.decode("latin-1"))
        self._end_body(side)
        self._to_resync(side)
        return True

    def _chunk_data(self, side: _Side) -> bool:
        if not side.buf:
            return False
        take = min(side.remaining, len(side.buf))
        chunk = bytes(side.buf[:take])
        del side.buf[:take]
        self._take_body(side, chunk)
        return True

    def _chunk_end(self, side: _Side) -> bool:
        buf = side.buf
        if not buf:
            return False
        if buf.startswith(b"\r\n"):
            del buf[:2]
        elif buf.startswith(b"\n"):
            del buf[:1]
        elif buf == b"\r":
            return False
        else:
            self._weird("HTTP_chunk_missing_crlf", self._where(side.msg))
        side.state = _CHUNK_SIZE
        return True

    def _trailers(self, side: _Side) -> bool:
        buf = side.buf
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > self.max_header_bytes:
                    self._weird("http_header_too_long", "trailer section")
                    self._end_body(side)
                    self._to_resync(side)
                    return True
                return False
            line = bytes(buf[:nl]).rstrip(b"\r")
            del buf[: nl + 1]
            if not line:
                if side.trailers and side.msg is not None:
                    side.msg.headers.extend(side.trailers)
                self._end_body(side)
                return True
            hdrs, _ = _headers([line])
            side.trailers.extend(hdrs)

    def _body_close(self, side: _Side) -> bool:
        if not side.buf:
            return False
        side.msg.body.data(bytes(side.buf))
        side.buf.clear()
        return True

    def _wait_answer(self, side: _Side) -> bool:
        # Bytes sent after CONNECT/Upgrade before the answer: tunnel data if it is accepted.
        if len(side.buf) > self.max_wait_bytes:
            self._weird("http_upgrade_unanswered", "client kept sending after CONNECT/Upgrade")
            self._tunnel()
        return False

    def _tunnel(self) -> None:
        for s in self._sides.values():
            if s.state in _BODY_STATES and s.msg is not None:
                self._end_body(s)
            s.state = _TUNNEL
            s.buf.clear()
        for t in list(self._pending):
            if t.status_code is None:
                t.resp_done = True
        self._pending.clear()
        self._emit_ready()

    def _gap(self, side: _Side, n: int) -> None:
        st = side.state
        if st in (_TUNNEL, _DEAD):
            return
        msg = side.msg
        if st in (_BODY_LEN, _CHUNK_DATA) and msg is not None and msg.body is not None:
            if msg.body.decoder is not None and msg.body.decoder.error is None:
                self._weird("http_gap_in_encoded_body", self._where(msg))
            inside = min(n, side.remaining)
            msg.body.gap(inside)
            side.remaining -= inside
            if inside == n:
                if side.remaining == 0:
                    if st == _BODY_LEN:
                        self._end_body(side)
                    else:
                        side.state = _CHUNK_END
                return
            # The gap runs past the body: the next message start is lost.
            self._weird("content_gap", f"{n - inside} bytes after {self._where(msg)}")
            self._end_body(side)
            self._to_resync(side)
            side.buf.clear()
            return
        if st == _BODY_CLOSE and msg is not None and msg.body is not None:
            if msg.body.decoder is not None and msg.body.decoder.error is None:
                self._weird("http_gap_in_encoded_body", self._where(msg))
            msg.body.gap(n)
            return
        if st in _BODY_STATES and msg is not None:  # chunk framing lost
            self._weird("content_gap", f"{n} bytes in chunk framing of {self._where(msg)}")
            if msg.body is not None:
                msg.body.missing += n
            self._end_body(side)
        elif st == _WAIT_ANSWER:
            return
        else:
            self._weird("content_gap", f"{n} bytes in {'request' if side.is_request else 'response'} headers")
        self._to_resync(side)
        side.buf.clear()
        side.scan_from = 0

    def _end_body(self, side: _Side) -> None:
        msg = side.msg
        if msg is None or msg.body is None:
            side.state = _START
            return
        body = msg.body
        data = body.close()
        if body.decoder is not None and body.decoder.error and not (body.gap_broken or body.decoder.unsupported):
            self._weird("http_decompress_failed", f"{body.decoder.error} ({self._where(msg)})")
        if body.truncated:
            self._weird("http_body_truncated", f"kept {len(data)} of {body.decoded_len} bytes ({self._where(msg)})")
        self._finish_msg(side, data, body)

    def _finish_msg(self, side: _Side, data: bytes, body: _Body | None) -> None:
        msg = side.msg
        side.msg = None
        side.remaining = 0
        if side.state not in (_TUNNEL, _DEAD, _RESYNC):
            side.state = _START
        if msg is None:
            return
        t = msg.txn
        if msg.is_request and t.upgrade and t.status_code is None and side.state == _START:
            # CONNECT / Upgrade: what the client sends next depends on the answer
            side.state = _WAIT_ANSWER
            side.wait_txn = t
        sha = hashlib.sha256(data).hexdigest() if data else None
        files = self._files(side, msg, data, body, sha)
        length = body.decoded_len if body is not None else 0
        if msg.is_request:
            t.req_done, t.req_len, t.req_sha, t.req_files = True, length, sha, files
        else:
            t.resp_done, t.resp_len, t.resp_sha, t.resp_files = True, length, sha, files
        self._emit_ready()

    def _files(self, side: _Side, msg: _Msg, data: bytes, body: _Body | None, sha: str | None) -> list[FileObject]:
        if body is None or not (data or body.missing):
            return []
        t = msg.txn
        cd = _get(msg.headers, "content-disposition")
        fname = _disposition_filename(cd)
        meta: dict[str, Any] = {
            "uri": t.uri,
            "method": t.method,
            "status": t.status_code,
            "host": t.host,
            "trans_depth": t.depth,
            "filename_source": "content-disposition" if fname else None,
        }
        ctype = _get(msg.headers, "content-type")
        if ctype:
            meta["content_type"] = ctype
        if msg.codings:
            meta["content_encoding"] = ",".join(msg.codings)
            if not body.fallback_raw and not body.missing and len(body.raw) == body.wire_len:
                # the body as sent (before content decoding), as Arkime hashes it
                meta["encoded_length"] = len(body.raw)
                meta["encoded_sha256"] = hashlib.sha256(body.raw).hexdigest()
        if msg.content_length is not None:
            meta["content_length"] = msg.content_length
        cr = _get(msg.headers, "content-range")
        if cr:
            meta["content_range"] = cr
        if body.holes:
            meta["holes"] = list(body.holes)
        if body.truncated:
            meta["truncated"] = True
        if body.decoder is not None and body.decoder.error:
            meta["decode_error"] = body.decoder.error
        if fname is None:
            fname = _uri_filename(t.uri)
            if fname:
                meta["filename_source"] = "uri"
        identity = not msg.codings or body.fallback_raw
        whole = FileObject(
            source="HTTP",
            data=data,
            ts=body.ts,
            is_orig=side.is_orig,
            filename=fname,
            mime_type=sniff(data),
            total_bytes=msg.content_length if identity else None,
            missing_bytes=body.missing,
            meta=meta,
            sha256=sha,  # (the record's: the files record need not hash it again)
        )
        files = [whole]
        if ctype and ctype.strip().lower().startswith("multipart/") and data:
            files.extend(self._parts(side, msg, data, ctype, meta))
        return files

    def _parts(self, side: _Side, msg: _Msg, data: bytes, ctype: str, meta: dict) -> list[FileObject]:
        boundary = _param(ctype, "boundary")
        if not boundary:
            self._weird("http_multipart_no_boundary", ctype[:80])
            return []
        subtype = ctype.split(";", 1)[0].strip().lower()[len("multipart/") :]
        parts = split_multipart(data, boundary)
        if not parts:
            self._weird("http_multipart_unparsed", f"no parts with boundary {boundary[:60]!r}")
        out = []
        for i, (hdrs, content) in enumerate(parts):
            cd = _get(hdrs, "content-disposition")
            fname = _disposition_filename(cd)
            if not content or (subtype == "form-data" and fname is None):
                continue  # empty, or an ordinary form field rather than an uploaded file
            pmeta = {k: v for k, v in meta.items() if k in ("uri", "method", "status", "host", "trans_depth")}
            pmeta.update({"part": i, "multipart": subtype, "filename_source": "content-disposition" if fname else None})
            if cd:
                name = _param(cd, "name")
                if name is not None:
                    pmeta["field"] = name
            pct = _get(hdrs, "content-type")
            if pct:
                pmeta["content_type"] = pct
            pcr = _get(hdrs, "content-range")
            if pcr:
                pmeta["content_range"] = pcr
            out.append(
                FileObject(
                    source="HTTP",
                    data=content,
                    ts=msg.body.ts if msg.body else msg.ts,
                    is_orig=side.is_orig,
                    filename=fname,
                    mime_type=sniff(content),
                    meta=pmeta,
                )
            )
        return out

    # -- records ------------------------------------------------------------------------------------

    def _emit_ready(self) -> None:
        if not self._open:
            return
        keep = []
        for t in self._open:
            if t.req_done and t.resp_done:
                self._log(t)
            else:
                keep.append(t)
        self._open = keep

    def _log(self, t: _Txn) -> None:
        for f in t.req_files:  # the response was not known when the request body ended
            f.meta["status"] = t.status_code
        self.files.extend(t.req_files)
        self.files.extend(t.resp_files)

        def names(files: list[FileObject]) -> list[str] | None:
            out = [f.filename for f in files if f.filename and f.meta.get("filename_source") == "content-disposition"]
            return out or None

        def mimes(files: list[FileObject]) -> list[str] | None:
            out = [f.mime_type for f in files if f.mime_type]
            return out or None

        self.records.append(
            (
                "http",
                {
                    "ts": t.ts,
                    "trans_depth": t.depth,
                    "method": t.method,
                    "host": t.host,
                    "uri": t.uri,
                    "referrer": t.referrer,
                    "version": t.version,
                    "user_agent": t.user_agent,
                    "origin": t.origin,
                    "request_body_len": t.req_len,
                    "response_body_len": t.resp_len,
                    "status_code": t.status_code,
                    "status_msg": t.status_msg,
                    "info_code": t.info_code,
                    "info_msg": t.info_msg,
                    "username": t.username,
                    "orig_filenames": names(t.req_files),
                    "orig_mime_types": mimes(t.req_files),
                    "resp_filenames": names(t.resp_files),
                    "resp_mime_types": mimes(t.resp_files),
                    "request_body_sha256": t.req_sha,
                    "response_body_sha256": t.resp_sha,
                },
            )
        )

    # -- HTTPU --------------------------------------------------------------------------------------

    def _datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        data = data.lstrip(b"\r\n")
        nl = data.find(b"\n")
        line = (data if nl < 0 else data[:nl]).rstrip(b"\r")
        mreq = _REQ_LINE.fullmatch(line)
        mresp = None if mreq else _RESP_LINE.fullmatch(line)
        if mresp is not None and mresp.group(3) is None and mresp.group(5) is None:
            mresp = None
        if mreq is None and mresp is None:
            self._weird("bad_HTTP_request" if is_orig else "bad_HTTP_reply", line[:80].decode("latin-1"))
            return
        rest = b"" if nl < 0 else data[nl + 1 :]
        eoh = _EOH.search(b"\n" + rest)
        if eoh is not None:
            block, body_bytes = rest[: max(eoh.start() - 1, 0)], rest[eoh.end() - 1 :]
        else:
            block, body_bytes = rest, b""
        headers, bad = _headers(block.replace(b"\r\n", b"\n").split(b"\n") if block else [])
        if bad:
            self._weird("http_bad_header_line", f"{bad} header line(s) without a colon")
        side = _Side(is_orig)
        side.ts = ts
        self._depth += 1
        if mreq is not None:
            t = _Txn(
                depth=self._depth,
                ts=ts,
                method=_text(mreq.group(1)),
                uri=_text(mreq.group(2)),
                version=f"{int(mreq.group(3))}.{int(mreq.group(4))}",
                host=_get(headers, "host"),
                referrer=_get(headers, "referer"),
                user_agent=_get(headers, "user-agent"),
                origin=_get(headers, "origin"),
                username=_basic_user(_get(headers, "authorization")),
                resp_done=True,
            )
        else:
            t = _Txn(
                depth=self._depth,
                ts=ts,
                version=f"{int(mresp.group(1))}.{int(mresp.group(2))}",
                status_code=int(mresp.group(3) or mresp.group(5)),
                status_msg=_text(mresp.group(4) or b"").strip(),
                req_done=True,
            )
        msg = _Msg(mreq is not None, t, ts, headers)
        cl = self._content_length(headers)
        if cl is not None and cl < len(body_bytes):
            body_bytes = body_bytes[:cl]
        if body_bytes:
            te = [c for c in _codings(_get(headers, "transfer-encoding")) if c != "chunked"]
            msg.codings = _codings(_get(headers, "content-encoding")) + te
            msg.content_length = cl
            msg.body = _Body(msg.codings, self.max_body_bytes, ts)
            msg.body.data(body_bytes)
            side.msg = msg
            self._finish_msg(side, msg.body.close(), msg.body)
        else:
            side.msg = msg
            self._finish_msg(side, b"", None)
        self._log(t)  # a datagram is a whole transaction (never in ``_open``)


class SsdpAnalyzer(HttpAnalyzer):
    """SSDP (HTTPU on UDP 1900): each datagram is an HTTP message, logged as an ``http`` record."""

    service = "ssdp"


ANALYZERS = {"http": HttpAnalyzer, "ssdp": SsdpAnalyzer}
