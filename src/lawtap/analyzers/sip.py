"""SIP (RFC 3261) over UDP and TCP: messages, one ``sip`` record per transaction, MESSAGE chats.

Framing
  * UDP: one message per datagram (a datagram holding several Content-Length framed messages
    is split too); without Content-Length the body is the rest of the datagram. CRLF
    keep-alives are ignored.
  * TCP (and any stream): messages are framed by the header block's blank line and
    Content-Length (absent = 0, RFC 3261 18.3); several messages per segment and messages
    split across segments both work. Garbage or a gap makes the framer resynchronise on the
    next line that looks like a request/status line.

Headers are unfolded, names are case-insensitive and the compact forms (i f t v m l c k s e o
r b u x a j d y n) map to their long names.

Transactions are keyed by (Call-ID, CSeq number, CSeq method), so a CANCEL or the ACK of a
non-2xx answer is its own transaction (as in Zeek's sip.log) and retransmissions of requests and
of final responses fold into the transaction they repeat. A ``sip`` record is written when the
final response (>= 200) arrives, at once for ACK (which has none), and at ``finish`` for the
rest (last provisional status, or none).

The ``sip`` record uses Zeek's sip.log fields and their meaning (request_from/response_from
without the ;tag parameter, request_to/response_to verbatim, request_path/response_path = Via
values up to ";branch", content_type of the response) with these differences, all deliberate:
one record per transaction carrying its last response (Zeek writes one per response and
accumulates Via lists across retransmissions), and trans_depth counts the transactions of the
connection from 1.

SIP MESSAGE bodies of type text/* (or text inside message/cpim) become ``chat`` records.

Every parsed message is also handed, in order, to ``tracker.sip_message(msg, ts, conn)`` when a
:class:`lawtap.analyzers.calls.CallTracker` is attached (``SipAnalyzer(conn, tracker=...)``
or the ``tracker`` attribute), and to ``on_message(msg, ts, conn, is_orig)`` when set.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import COMMON_FIELDS, ConnInfo, StreamAnalyzer

TS = pa.timestamp("us", tz="UTC")

_COMMON = COMMON_FIELDS  # lawtap.analyzers.base

SIP_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("trans_depth", pa.uint32()),
        pa.field("method", pa.string()),
        pa.field("uri", pa.string()),
        pa.field("date", pa.string()),
        pa.field("request_from", pa.string()),
        pa.field("request_to", pa.string()),
        pa.field("response_from", pa.string()),
        pa.field("response_to", pa.string()),
        pa.field("reply_to", pa.string()),
        pa.field("call_id", pa.string()),
        pa.field("seq", pa.string()),
        pa.field("subject", pa.string()),
        pa.field("request_path", pa.list_(pa.string())),
        pa.field("response_path", pa.list_(pa.string())),
        pa.field("user_agent", pa.string()),
        pa.field("status_code", pa.uint16()),
        pa.field("status_msg", pa.string()),
        pa.field("warning", pa.string()),
        pa.field("request_body_len", pa.uint64()),
        pa.field("response_body_len", pa.uint64()),
        pa.field("content_type", pa.string()),
    ]
)

# Shared with the IRC/XMPP analyzers (same record type "chat", same fields).
CHAT_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("protocol", pa.string()),
        pa.field("from", pa.string()),
        pa.field("to", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("text", pa.string()),
        pa.field("is_orig", pa.bool_()),
    ]
)

RECORD_SCHEMAS = {"sip": SIP_SCHEMA, "chat": CHAT_SCHEMA}

# RFC 3261 7.3.3 and later RFCs' compact header forms.
COMPACT_FORMS = {
    "i": "call-id", "f": "from", "t": "to", "v": "via", "m": "contact", "l": "content-length",
    "c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding", "o": "event",
    "r": "refer-to", "b": "referred-by", "u": "allow-events", "x": "session-expires",
    "a": "accept-contact", "j": "reject-contact", "d": "request-disposition", "y": "identity",
    "n": "identity-info",
}

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1 << 20
MAX_HEADERS = 256
MAX_PENDING_TRANSACTIONS = 256
MAX_DONE_TRANSACTIONS = 1024
MAX_WEIRDS = 64

_TOKEN = r"[A-Za-z0-9!%*_+`'~.\-]+"
# Lenient on the Request-URI: some stacks put spaces in it ("sip:Outbound Call@host").
_REQ_RE = re.compile(r"(" + _TOKEN + r") +(\S.{0,4095}?) +SIP/(\d+\.\d+)[ \t]*")
_RESP_RE = re.compile(r"SIP/(\d+\.\d+) +(\d{3})(?:[ \t]+(.*?))?[ \t]*")
# A request or status line (matched at the start of a line, for framing and resynchronisation).
_START_RE = re.compile(rb"(?:SIP/2\.0 \d{3}[ \t\r\n]|[A-Za-z][A-Za-z0-9!%*_+`'~.\-]{0,31} [^\r\n]{1,2048}? SIP/2\.0\r?\n)")
_TAG_RE = re.compile(r";\s*tag=", re.I)
_BRANCH_RE = re.compile(r";\s?branch", re.I)


def _isnum(s: str) -> bool:
    """ASCII digits only (str.isdigit() also accepts e.g. superscripts, which int() rejects)."""
    return s.isascii() and s.isdigit()


@dataclass
class SipMessage:
    """One parsed SIP request or response."""

    is_request: bool
    method: str | None = None
    uri: str | None = None
    version: str = "2.0"
    status_code: int | None = None
    reason: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)  # (lower-case long name, value)
    body: bytes = b""
    content_length: int | None = None  # the header's value, when present and valid
    truncated: bool = False  # body shorter than Content-Length announced

    def get(self, name: str) -> str | None:
        """First value of header ``name`` (case-insensitive; compact forms accepted)."""
        n = _canon_name(name)
        for k, v in self.headers:
            if k == n:
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        n = _canon_name(name)
        return [v for k, v in self.headers if k == n]

    @property
    def call_id(self) -> str | None:
        v = self.get("call-id")
        return v.strip() if v else v

    @property
    def cseq(self) -> str | None:
        return self.get("cseq")

    @property
    def cseq_number(self) -> int | None:
        c = self.cseq
        if not c:
            return None
        num = c.split(None, 1)[0] if c.split() else ""
        return int(num) if _isnum(num) and len(num) <= 10 else None

    @property
    def cseq_method(self) -> str | None:
        c = self.cseq
        parts = c.split() if c else []
        return parts[1] if len(parts) > 1 else None

    @property
    def transaction_method(self) -> str | None:
        """The method this message belongs to: its own (request) or its CSeq's (response)."""
        if self.is_request:
            return self.method
        return self.cseq_method

    @property
    def transaction_key(self) -> tuple[str, int | None, str]:
        return (self.call_id or "", self.cseq_number, (self.cseq_method or self.method or "").upper())

    @property
    def via(self) -> list[str]:
        out: list[str] = []
        for v in self.get_all("via"):
            out.extend(split_header_list(v))
        return out

    @property
    def content_type(self) -> str | None:
        return self.get("content-type")

    @property
    def mime_type(self) -> str | None:
        ct = self.content_type
        return ct.split(";", 1)[0].strip().lower() if ct else None


def _canon_name(name: str) -> str:
    n = name.strip().lower()
    return COMPACT_FORMS.get(n, n)


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header value, respecting quotes and <...>."""
    out, cur, quote, angle, esc = [], [], False, False, False
    for ch in value:
        if esc:
            cur.append(ch)
            esc = False
            continue
        if ch == "\\" and quote:
            esc = True
        elif ch == '"':
            quote = not quote
        elif ch == "<" and not quote:
            angle = True
        elif ch == ">" and not quote:
            angle = False
        elif ch == "," and not quote and not angle:
            s = "".join(cur).strip()
            if s:
                out.append(s)
            cur = []
            continue
        cur.append(ch)
    s = "".join(cur).strip()
    if s:
        out.append(s)
    return out


def _tag_param(value: str) -> re.Match[str] | None:
    """The ;tag= parameter of a From/To value, outside <...> and quotes (else it is a URI param)."""
    depth_ok = []
    quote = angle = False
    for ch in value:
        if ch == '"':
            quote = not quote
        elif ch == "<" and not quote:
            angle = True
        elif ch == ">" and not quote:
            angle = False
        depth_ok.append(not quote and not angle)
    for m in _TAG_RE.finditer(value):
        if depth_ok[m.start()]:
            return m
    return None


def strip_tag(value: str | None) -> str | None:
    """A From/To value without its ;tag= parameter (what Zeek logs as request_from)."""
    if value is None:
        return None
    m = _tag_param(value)
    return value[: m.start()].strip() if m else value.strip()


def header_tag(value: str | None) -> str | None:
    """The tag of a From/To value, if any."""
    if not value:
        return None
    m = _tag_param(value)
    if m is None:
        return None
    t = re.match(r"[^;,\s]+", value[m.end() :])
    return t.group(0) if t else None


def addr_uri(value: str | None) -> str | None:
    """The URI of a name-addr / addr-spec header value: '"A" <sip:a@b>;tag=x' -> 'sip:a@b'."""
    if not value:
        return None
    v = value.strip()
    lt = v.find("<")
    if lt >= 0:
        gt = v.find(">", lt + 1)
        return v[lt + 1 : gt if gt > 0 else None].strip() or None
    return v.split(";", 1)[0].strip() or None


def uri_user(uri: str | None) -> str | None:
    """'sip:alice@example.com;transport=udp' -> 'alice'."""
    if not uri:
        return None
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    if "@" not in rest:
        return None
    return rest.split("@", 1)[0].split(";", 1)[0] or None


def _via_path(value: str) -> str:
    return _BRANCH_RE.split(value, 1)[0].strip()


# ---- parsing ----


class SipParseError(ValueError):
    pass


def _find_header_end(buf: bytes | bytearray, start: int = 0, limit: int | None = None) -> tuple[int, int]:
    """(index of the blank line, its length) or (-1, 0)."""
    end = len(buf) if limit is None else min(len(buf), start + limit)
    i = buf.find(b"\r\n\r\n", start, end)
    j = buf.find(b"\n\n", start, end)
    if i < 0 and j < 0:
        return -1, 0
    if i >= 0 and (j < 0 or i < j):
        return i, 4
    return j, 2


def parse_head(head: bytes) -> SipMessage:
    """Parse a start line and header block (without the blank line). Raises SipParseError."""
    text = head.decode("utf-8", "replace")
    lines = text.split("\n")
    start = lines[0].rstrip("\r")
    m = _RESP_RE.fullmatch(start)
    if m:
        msg = SipMessage(is_request=False, version=m.group(1), status_code=int(m.group(2)), reason=(m.group(3) or "").strip())
    else:
        m = _REQ_RE.fullmatch(start)
        if not m:
            raise SipParseError("bad start line: " + start[:80])
        msg = SipMessage(is_request=True, method=m.group(1), uri=m.group(2), version=m.group(3))
    headers: list[list[str]] = []
    for raw in lines[1:]:
        line = raw.rstrip("\r")
        if not line:
            continue
        if line[0] in " \t":
            if headers:
                headers[-1][1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or len(headers) >= MAX_HEADERS:
            continue
        headers.append([_canon_name(name), value.strip()])
    msg.headers = [(k, v) for k, v in headers]
    cl = msg.get("content-length")
    if cl is not None:
        cl = cl.strip()
        if _isnum(cl) and len(cl) <= 10:
            msg.content_length = int(cl)
    return msg


def parse_message(data: bytes, stream: bool = False) -> tuple[SipMessage, int]:
    """Parse one message at the start of ``data``: (message, bytes consumed).

    ``stream=False`` (datagram): a missing blank line or Content-Length takes the rest of the
    data as body. Raises :class:`SipParseError` on a bad start line.
    """
    he, sep = _find_header_end(data)
    if he < 0:
        head, body_start = data, len(data)
    else:
        head, body_start = data[:he], he + sep
    msg = parse_head(bytes(head))
    if msg.content_length is not None:
        end = body_start + msg.content_length
        msg.body = bytes(data[body_start:end])
        if end > len(data):
            msg.truncated = True
            end = len(data)
    else:
        end = body_start if stream else len(data)
        msg.body = bytes(data[body_start:end])
    return msg, end


def parse_datagram(data: bytes) -> tuple[list[SipMessage], list[tuple[str, str]]]:
    """All messages of one UDP payload, and weirds."""
    msgs: list[SipMessage] = []
    weirds: list[tuple[str, str]] = []
    pos = 0
    n = len(data)
    while pos < n:
        while pos < n and data[pos] in b"\r\n\x00 \t":
            pos += 1
        if pos >= n:
            break
        try:
            msg, used = parse_message(data[pos:])
        except SipParseError as e:
            weirds.append(("sip_bad_start_line" if not msgs else "sip_trailing_garbage", str(e)))
            break
        if msg.truncated:
            weirds.append(("sip_truncated_body", f"Content-Length {msg.content_length}, {len(msg.body)} bytes"))
        msgs.append(msg)
        if used <= 0:
            break
        pos += used
        if msg.content_length is None:
            break
    return msgs, weirds


class SipStreamFramer:
    """Content-Length framing of one direction of a SIP byte stream (TCP/TLS-decrypted/SCTP)."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.resync = False
        self.skip = 0  # body bytes still to discard (oversized body)

    def gap(self) -> None:
        self.buf.clear()
        self.skip = 0
        self.resync = True

    def feed(self, data: bytes) -> list[tuple]:
        """Events: ("msg", SipMessage) and ("weird", name, detail)."""
        out: list[tuple] = []
        if self.skip:
            k = min(self.skip, len(data))
            self.skip -= k
            data = data[k:]
        self.buf += data
        while True:
            buf = self.buf
            # CRLF keep-alives (RFC 5626) and stray blank lines between messages.
            i = 0
            while i < len(buf) and buf[i] in b"\r\n":
                i += 1
            if i:
                del buf[:i]
            if not buf:
                break
            if not self.resync and not self._plausible_start(out):
                del buf[:1]  # not a start line here: look further on
                self.resync = True
            if self.resync:
                if not self._resync(out):
                    break
                continue
            he, sep = _find_header_end(buf, 0, MAX_HEADER_BYTES + 4)
            if he < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    out.append(("weird", "sip_header_too_long", f"{len(buf)} bytes without end of headers"))
                    del buf[:1]
                    self.resync = True
                    continue
                break
            try:
                msg = parse_head(bytes(buf[:he]))
            except SipParseError as e:
                out.append(("weird", "sip_bad_start_line", str(e)))
                del buf[:1]
                self.resync = True
                continue
            if msg.get("content-length") is not None and msg.content_length is None:
                out.append(("weird", "sip_bad_content_length", msg.get("content-length") or ""))
            cl = msg.content_length or 0
            body_start = he + sep
            if cl > MAX_BODY_BYTES:
                out.append(("weird", "sip_body_too_large", str(cl)))
                have = min(cl, len(buf) - body_start)
                msg.truncated = True
                del buf[: body_start + have]
                self.skip = cl - have
                out.append(("msg", msg))
                if self.skip:
                    break
                continue
            if len(buf) < body_start + cl:
                break
            msg.body = bytes(buf[body_start : body_start + cl])
            del buf[: body_start + cl]
            out.append(("msg", msg))
        return out

    def flush(self) -> list[tuple]:
        """End of stream: a message whose headers are complete but body short is delivered truncated."""
        out: list[tuple] = []
        buf = self.buf
        while buf and buf[0] in b"\r\n":
            del buf[:1]
        if buf and not self.resync:
            he, sep = _find_header_end(buf)
            if he >= 0:
                try:
                    msg = parse_head(bytes(buf[:he]))
                except SipParseError:
                    msg = None
                if msg is not None:
                    msg.body = bytes(buf[he + sep :])
                    msg.truncated = True
                    out.append(("weird", "sip_truncated_body", f"Content-Length {msg.content_length}, {len(msg.body)} bytes"))
                    out.append(("msg", msg))
            else:
                out.append(("weird", "sip_truncated_message", f"{len(buf)} bytes"))
        self.buf = bytearray()
        return out

    def _plausible_start(self, out: list) -> bool:
        buf = self.buf
        nl = buf.find(b"\n", 0, 4096)
        if nl < 0:
            if len(buf) < 4096:
                # Wait for the line, but reject early what cannot start a SIP message.
                head = bytes(buf[:8])
                if head[:1].isalpha():
                    return True
            out.append(("weird", "sip_bad_start_line", repr(bytes(buf[:40]))))
            return False
        if _START_RE.match(buf, 0, nl + 1):
            return True
        out.append(("weird", "sip_bad_start_line", bytes(buf[:nl]).decode("utf-8", "replace")[:80]))
        return False

    def _resync(self, out: list) -> bool:
        """Drop bytes up to the next line that starts a message; False if none yet."""
        buf = self.buf
        pos, n = 0, len(buf)
        while pos < n:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                break  # a partial last line may still become a start line
            if _START_RE.match(buf, pos, nl + 1):
                del buf[:pos]
                self.resync = False
                return True
            pos = nl + 1
        del buf[:pos]
        if len(buf) > 4096:
            del buf[:-4096]
        return False


# ---- the analyzer ----


def _empty_record(depth: int, ts: float) -> dict[str, Any]:
    return {
        "ts": ts, "trans_depth": depth, "method": None, "uri": None, "date": None,
        "request_from": None, "request_to": None, "response_from": None, "response_to": None,
        "reply_to": None, "call_id": None, "seq": None, "subject": None, "request_path": [],
        "response_path": [], "user_agent": None, "status_code": None, "status_msg": None,
        "warning": None, "request_body_len": None, "response_body_len": None, "content_type": None,
    }


def _body_len(msg: SipMessage) -> int:
    return msg.content_length if msg.content_length is not None else len(msg.body)


def chat_text(msg: SipMessage) -> str | None:
    """The text of a MESSAGE body (text/*, or text inside message/cpim), else None."""
    if not msg.body:
        return None
    mime = msg.mime_type or "text/plain"
    charset = _charset(msg.content_type)
    body = msg.body
    if mime == "message/cpim":
        # CPIM (RFC 3862): message headers, blank line, MIME headers, blank line, content.
        parts = re.split(rb"\r?\n\r?\n", body, maxsplit=2)
        if len(parts) < 3:
            return None
        inner_ct = None
        for line in parts[1].decode("utf-8", "replace").splitlines():
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-type":
                inner_ct = v.strip()
        mime = (inner_ct or "text/plain").split(";", 1)[0].strip().lower()
        charset = _charset(inner_ct) or charset
        body = parts[2]
    if not mime.startswith("text/"):
        return None
    try:
        return body.decode(charset or "utf-8", "replace")
    except LookupError:
        return body.decode("utf-8", "replace")


def sdp_body(msg: SipMessage) -> bytes | None:
    """The SDP of a message: its body (application/sdp, or untyped starting with v=) or the
    application/sdp part of a multipart body (e.g. SIP-T's SDP + ISUP)."""
    body = msg.body
    if not body:
        return None
    mime = msg.mime_type
    if mime == "application/sdp" or (mime is None and body.lstrip()[:2] == b"v="):
        return body
    if mime and mime.startswith("multipart/"):
        m = re.search(r';\s*boundary\s*=\s*"?([^";]+)"?', msg.content_type or "", re.I)
        if not m:
            return None
        for part in body.split(b"--" + m.group(1).strip().encode("utf-8", "replace"))[1:16]:
            head, sep, content = part.partition(b"\r\n\r\n")
            if not sep:
                head, sep, content = part.partition(b"\n\n")
            if sep and re.search(rb"content-type\s*:\s*application/sdp", head, re.I):
                return content.rstrip(b"\r\n")
    return None


def _charset(ct: str | None) -> str | None:
    if not ct:
        return None
    m = re.search(r";\s*charset\s*=\s*\"?([A-Za-z0-9_.:\-]+)", ct, re.I)
    return m.group(1) if m else None


class SipAnalyzer(StreamAnalyzer):
    """SIP over UDP datagrams or a TCP stream."""

    service = "sip"

    def __init__(self, conn: ConnInfo, tracker: Any = None) -> None:
        super().__init__(conn)
        self.tracker = tracker
        self.on_message: Callable[[SipMessage, float, ConnInfo, bool], None] | None = None
        self.message_count = 0
        self._framers = {True: SipStreamFramer(), False: SipStreamFramer()}
        self._pending: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._done: OrderedDict[tuple, None] = OrderedDict()
        self._depth = 0
        self._weird_count = 0

    # -- contract --
    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        if not data.strip(b"\r\n\x00 \t"):
            return  # keep-alive
        try:
            msgs, weirds = parse_datagram(data)
        except Exception as e:  # never raise on input
            self._weird("sip_parse_error", repr(e)[:200])
            return
        for name, detail in weirds:
            self._weird(name, detail)
        for msg in msgs:
            self._message(msg, is_orig, ts)

    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        try:
            events = self._framers[is_orig].feed(data)
        except Exception as e:
            self._framers[is_orig].gap()
            self._weird("sip_parse_error", repr(e)[:200])
            return
        self._events(events, is_orig, ts)

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        self._framers[is_orig].gap()
        self._weird("sip_content_gap", f"{length} bytes")

    def finish(self, ts: float) -> None:
        for is_orig, fr in self._framers.items():
            try:
                self._events(fr.flush(), is_orig, ts)
            except Exception as e:
                self._weird("sip_parse_error", repr(e)[:200])
        while self._pending:
            _, rec = self._pending.popitem(last=False)
            self.records.append(("sip", rec))

    # -- internals --
    def _events(self, events: list[tuple], is_orig: bool, ts: float) -> None:
        for ev in events:
            if ev[0] == "msg":
                self._message(ev[1], is_orig, ts)
            else:
                self._weird(ev[1], ev[2])

    def _weird(self, name: str, detail: str) -> None:
        self._weird_count += 1
        if self._weird_count <= MAX_WEIRDS:
            self.weirds.append((name, detail))

    def _message(self, msg: SipMessage, is_orig: bool, ts: float) -> None:
        self.message_count += 1
        if self.tracker is not None:
            try:
                self.tracker.sip_message(msg, ts, self.conn)
            except Exception as e:  # the tracker is fuzzed too; a bug there must not stop SIP
                self._weird("sip_call_tracker_error", repr(e)[:200])
        if self.on_message is not None:
            try:
                self.on_message(msg, ts, self.conn, is_orig)
            except Exception as e:
                self._weird("sip_message_hook_error", repr(e)[:200])
        if msg.call_id is None or msg.cseq_number is None:
            self._weird("sip_missing_header", "Call-ID" if msg.call_id is None else "CSeq")
        key = msg.transaction_key
        if key in self._done:
            return  # retransmission of a finished transaction
        rec = self._pending.get(key)
        if msg.is_request:
            if rec is None:
                rec = self._new(key, ts)
                self._fill_request(rec, msg)
                if (msg.method or "").upper() == "MESSAGE":
                    self._chat(msg, is_orig, ts)
            elif rec["method"] is None or rec["uri"] is None:
                self._fill_request(rec, msg)  # the response came first
            if (msg.method or "").upper() == "ACK":
                self._complete(key)
        else:
            if rec is None:
                rec = self._new(key, ts)
                rec["method"] = msg.cseq_method
                rec["call_id"] = msg.call_id
                rec["seq"] = msg.cseq
            self._fill_response(rec, msg)
            if msg.status_code is not None and msg.status_code >= 200:
                self._complete(key)

    def _new(self, key: tuple, ts: float) -> dict[str, Any]:
        self._depth += 1
        rec = _empty_record(self._depth, ts)
        self._pending[key] = rec
        if len(self._pending) > MAX_PENDING_TRANSACTIONS:
            old_key, old = self._pending.popitem(last=False)
            self.records.append(("sip", old))
            self._remember(old_key)
        return rec

    def _complete(self, key: tuple) -> None:
        rec = self._pending.pop(key, None)
        if rec is not None:
            self.records.append(("sip", rec))
        self._remember(key)

    def _remember(self, key: tuple) -> None:
        self._done[key] = None
        if len(self._done) > MAX_DONE_TRANSACTIONS:
            self._done.popitem(last=False)

    @staticmethod
    def _fill_request(rec: dict[str, Any], msg: SipMessage) -> None:
        rec["method"] = msg.method
        rec["uri"] = msg.uri
        rec["date"] = msg.get("date")
        rec["request_from"] = strip_tag(msg.get("from"))
        rec["request_to"] = msg.get("to")
        rec["reply_to"] = msg.get("reply-to")
        rec["call_id"] = msg.call_id
        rec["seq"] = msg.cseq
        rec["subject"] = msg.get("subject")
        rec["request_path"] = [_via_path(v) for v in msg.via]
        rec["user_agent"] = msg.get("user-agent")
        rec["request_body_len"] = _body_len(msg)

    @staticmethod
    def _fill_response(rec: dict[str, Any], msg: SipMessage) -> None:
        rec["status_code"] = msg.status_code
        rec["status_msg"] = msg.reason
        rec["response_from"] = strip_tag(msg.get("from"))
        rec["response_to"] = msg.get("to")
        rec["response_path"] = [_via_path(v) for v in msg.via]
        rec["warning"] = msg.get("warning")
        rec["response_body_len"] = _body_len(msg)
        rec["content_type"] = msg.content_type
        if rec["call_id"] is None:
            rec["call_id"] = msg.call_id

    def _chat(self, msg: SipMessage, is_orig: bool, ts: float) -> None:
        text = chat_text(msg)
        if text is None:
            return
        self.records.append(
            (
                "chat",
                {
                    "ts": ts,
                    "protocol": "sip",
                    "from": addr_uri(msg.get("from")),
                    "to": addr_uri(msg.get("to")),
                    "channel": None,
                    "text": text,
                    "is_orig": is_orig,
                },
            )
        )


ANALYZERS = {"sip": SipAnalyzer}

__all__ = [
    "ANALYZERS",
    "CHAT_SCHEMA",
    "COMPACT_FORMS",
    "RECORD_SCHEMAS",
    "SIP_SCHEMA",
    "SipAnalyzer",
    "SipMessage",
    "SipParseError",
    "SipStreamFramer",
    "addr_uri",
    "chat_text",
    "header_tag",
    "parse_datagram",
    "parse_head",
    "parse_message",
    "sdp_body",
    "split_header_list",
    "strip_tag",
    "uri_user",
]
