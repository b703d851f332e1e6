"""Shared e-mail machinery for the SMTP, POP3 and IMAP analyzers (sans-IO, never raises).

* :func:`parse_message` turns the raw bytes of an RFC 5322 message, as transferred (after
  dot-unstuffing), into its header fields and attachments. It uses Python's ``email`` package
  with ``policy=compat32``: the same parser and policy the corpus oracle (``imf_attachments.tsv``)
  used, so attachment boundaries, transfer decoding (base64, quoted-printable, uuencode) and the
  part numbering (``Message.walk()`` order) agree byte for byte.
* :func:`message_events` builds the protocol-independent ``email`` record and the
  :class:`FileObject` s (the ``.eml`` itself and one per attachment) of one message.
* :class:`Lines` is a bounded CRLF line splitter; :func:`unstuff` undoes SMTP/POP3 dot-stuffing;
  :func:`sasl_user` pulls the login name (never the secret) out of SASL initial responses.

An attachment is every non-multipart part with a filename or ``Content-Disposition:
attachment`` (the oracle's rule). Header values in the ``email`` record are unfolded and
RFC 2047-decoded; the ``smtp`` record keeps Zeek's raw (unfolded, undecoded) values.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.header
import email.message
import email.policy
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import FileObject
from lawtap.analyzers.base64_lines import decode_base64_lines

TS = pa.timestamp("us", tz="UTC")
COMMON = [
    pa.field("ts", TS, nullable=False),
    pa.field("uid", pa.string(), nullable=False),
    pa.field("id.orig_h", pa.string(), nullable=False),
    pa.field("id.orig_p", pa.uint16(), nullable=False),
    pa.field("id.resp_h", pa.string(), nullable=False),
    pa.field("id.resp_p", pa.uint16(), nullable=False),
]

# One row per message seen in clear on any mail protocol.
EMAIL_SCHEMA = pa.schema(
    COMMON
    + [
        pa.field("protocol", pa.string()),  # smtp | pop3 | imap
        pa.field("trans_depth", pa.int64()),  # 1-based index of the message on its connection
        pa.field("is_orig", pa.bool_()),  # True: sent by the connection's originator (SMTP, IMAP APPEND)
        pa.field("user", pa.string()),  # login name seen in clear on this connection (never a secret)
        pa.field("mailfrom", pa.string()),  # SMTP envelope sender
        pa.field("rcptto", pa.list_(pa.string())),  # SMTP envelope recipients
        pa.field("from", pa.string()),
        pa.field("to", pa.list_(pa.string())),
        pa.field("cc", pa.list_(pa.string())),
        pa.field("reply_to", pa.string()),
        pa.field("subject", pa.string()),  # RFC 2047-decoded
        pa.field("date", pa.string()),
        pa.field("message_id", pa.string()),
        pa.field("in_reply_to", pa.string()),
        pa.field("user_agent", pa.string()),
        pa.field("attachments", pa.list_(pa.string())),  # filenames (None entries become "")
        pa.field("partial", pa.bool_()),  # headers only / truncated fetch (POP3 TOP, IMAP BODY[HEADER]...)
        pa.field("size", pa.int64()),  # bytes of the message as transferred (after unstuffing)
        pa.field("missing_bytes", pa.int64()),  # bytes of it lost to capture gaps
    ]
)

MAX_LINE = 65536  # a command/response line longer than this is garbage
MAX_MESSAGE = 64 * 1024 * 1024  # a message is cut (and flagged) beyond this

_WEBMAIL = re.compile(
    r"^iPlanet Messenger|^Sun Java\(tm\) System Messenger Express|\(IMP\)|^SquirrelMail|^NeoMail|ZimbraWebClient"
)
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_CRLF = re.compile(r"[\r\n]")
_ADDR_SPLIT = re.compile(r'(?:"[^"]*")?[^,]+')
_EMAIL_ADDR = re.compile(r"(?:^|[<,:\s])([^<,:\s@]+@[^>,;\s]+)(?:[>,;\s]|$)")
_IPV4 = re.compile(r"(?<![0-9])(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?![0-9])")
_IPV6 = re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?<=:)(?:[0-9]{1,3}\.){3}[0-9]{1,3})?")
_WRAP = {"[": "]", "(": ")", "{": "}", " ": " "}


# ---------------------------------------------------------------- small helpers
class Lines:
    """Accumulates bytes and yields complete lines (without the line ending).

    A line is terminated by LF (an optional preceding CR is stripped). A line longer than
    :data:`MAX_LINE` without a terminator is returned truncated with ``overflow`` set, then the
    rest up to the next LF is dropped (resync).
    """

    __slots__ = ("buf", "overflow", "_skipping")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.overflow = False
        self._skipping = False

    def push(self, data: bytes) -> None:
        self.buf += data

    def pop(self) -> bytes | None:
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                if len(self.buf) > MAX_LINE:
                    line = bytes(self.buf[:MAX_LINE]) if not self._skipping else None
                    self.buf.clear()
                    self._skipping = True
                    if line is not None:
                        self.overflow = True
                        return line
                return None
            line = bytes(self.buf[:i])
            del self.buf[: i + 1]
            if self._skipping:
                self._skipping = False
                continue
            return line[:-1] if line.endswith(b"\r") else line

    def take(self, n: int) -> bytes:
        """Up to ``n`` raw bytes from the front of the buffer."""
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def clear(self) -> None:
        self.buf.clear()
        self._skipping = False


_STUFFED = re.compile(rb"(^|\n)\.")


def unstuff(raw: bytes) -> bytes:
    """Undo SMTP/POP3 dot-stuffing: a line starting with '.' loses that first dot.

    Two C-level passes rather than a regex substitution of ``(^|LF)\\.``: that alternation is
    tried at every byte and cost ~30 ms per MB of message, more than the rest of the SMTP
    analyzer. Same result: the regex's matches never overlap, so dropping a leading dot and
    then ``replace`` of every LF-dot pair (left to right, non-overlapping) removes the same dots.
    """
    if raw[:1] == b".":
        raw = raw[1:]
    return raw.replace(b"\n.", b"\n")


def restuff(data: bytes) -> bytes:
    """The inverse of :func:`unstuff` (for comparing with tools that keep the stuffing)."""
    return _STUFFED.sub(rb"\1..", data)


class DotBody:
    """Collects a dot-terminated body (SMTP DATA, POP3 multi-line response).

    Bytes are appended with :meth:`push`; once the terminating ``.`` line is seen, :meth:`push`
    returns the bytes that follow it (possibly empty), else ``None``. The body (terminator
    excluded, the last line's CRLF included, still dot-stuffed) is in :attr:`raw`, and
    dot-unstuffed in :attr:`unstuffed`. Beyond :data:`MAX_MESSAGE` bytes the body is cut
    (``truncated``) but the terminator is still found.

    Bodies are handled in bulk, whatever the size of the pieces pushed: each push appends to one
    buffer (amortised O(1) per byte) and searches only the new bytes (plus the 3 before them,
    for a terminator split across pushes), in C: first for a dot at all, then for LF-dot. The
    rare hits are either the terminator or a stuffed line, which is remembered so that
    :attr:`unstuffed` can skip the unstuffing pass over bodies that have none (most of them).
    """

    __slots__ = ("buf", "done", "missing", "truncated", "_tail", "limit", "stuffed")

    _END = re.compile(rb"\n\.\r?\n")
    _DOT = re.compile(rb"\n\.")  # a regex: faster than bytes.find for this needle

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self.buf = bytearray()
        self.done = False
        self.missing = 0
        self.truncated = False
        self._tail = b""
        self.limit = limit
        self.stuffed = False  # a line other than the terminator starts with "." (LF-dot seen)

    def _find_end(self, pos: int) -> tuple[int, int] | None:
        """(start, end) of the first ``\\n.\\r?\\n`` in the buffer at or after ``pos``.

        The same match as ``_END.search(buf, pos)``; the other LF-dot pairs met on the way set
        :attr:`stuffed`.
        """
        buf = self.buf
        search = self._DOT.search
        while True:
            m = search(buf, pos)
            if m is None:
                return None
            i = m.start()
            nxt = buf[i + 2 : i + 4]
            if nxt[:1] == b"\n":
                return i, i + 3
            if nxt == b"\r\n":
                return i, i + 4
            if nxt and nxt != b"\r":  # (an incomplete ".", ".\r" at the end is seen next time)
                self.stuffed = True
            pos = i + 1

    def push(self, data: bytes) -> bytes | None:
        if self.done:
            return data
        if self.truncated:
            window = self._tail + data
            m = self._END.search(window)
            if m is None:
                self._tail = window[-3:]
                return None
            self.done = True
            return window[m.end() :]
        buf = self.buf
        start = len(buf)
        buf += data
        if start < 3:  # an empty body: the terminator is the first line
            for term in (b".\r\n", b".\n"):
                if buf.startswith(term):
                    rest = bytes(buf[len(term) :])
                    buf.clear()
                    self.done = True
                    return rest
        # Any new LF-dot (the terminator, or a stuffed line) has its dot at or after start - 2;
        # base64 has no dots at all, so most pushes stop at this memchr.
        if buf.find(b".", start - 2 if start > 2 else 0) >= 0:
            end = self._find_end(max(0, start - 3))
            if end is not None:
                rest = bytes(buf[end[1] :])
                del buf[end[0] + 1 :]
                self.done = True
                return rest
        if len(buf) > self.limit:
            self.truncated = True
            self._tail = bytes(buf[-3:])
            del buf[self.limit :]
        return None

    def gap(self, n: int) -> None:
        self.missing += n
        self._tail = b""

    @property
    def raw(self) -> bytes:
        return bytes(self.buf)

    @property
    def unstuffed(self) -> bytes:
        """:func:`unstuff` of :attr:`raw`, without the pass over a body that needs none.

        Every LF-dot has been classified except one cut by the end of the buffer (an
        unterminated body), hence the look at the last 3 bytes.
        """
        raw = bytes(self.buf)
        return unstuff(raw) if self.stuffed or raw[:1] == b"." or b"\n." in raw[-3:] else raw


def b64(s: bytes | str) -> bytes | None:
    try:
        if isinstance(s, str):
            s = s.encode("ascii", "replace")
        s = s.strip()
        if not s or s == b"=":
            return b""
        return base64.b64decode(s + b"=" * (-len(s) % 4), validate=False)
    except (binascii.Error, ValueError):
        return None


def text(b: bytes) -> str:
    """Protocol bytes as text: UTF-8 when valid, else Latin-1 (never fails)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def sasl_user(mech: str, response: bytes | None) -> str | None:
    """The login name in a decoded SASL client response (PLAIN: authcid, else authzid)."""
    if response is None:
        return None
    if mech == "PLAIN":
        parts = response.split(b"\x00")
        if len(parts) >= 3:
            user = parts[1] or parts[0]
            return text(user) if user else None
        return None
    if mech == "LOGIN":
        return text(response.rstrip(b"\x00")) if response else None
    if mech in ("CRAM-MD5", "DIGEST-MD5"):
        if mech == "CRAM-MD5":  # "user SP hexdigest"
            user = response.rsplit(b" ", 1)[0] if b" " in response else b""
            return text(user) if user else None
        m = re.search(rb'username="([^"]*)"', response)
        return text(m.group(1)) if m else None
    if mech == "XOAUTH2":  # "user=" {user} "\x01auth=Bearer " {token} "\x01\x01"
        m = re.match(rb"user=([^\x01]*)", response)
        return text(m.group(1)) if m else None
    if mech == "OAUTHBEARER":  # gs2 header "n,a=user,"
        m = re.match(rb"n,a=([^,]*),", response)
        return text(m.group(1)) if m else None
    return None


def extract_addrs(arg: str) -> list[str]:
    """Zeek's extract_email_addrs_vec: bare addresses in an SMTP argument or header."""
    out = []
    for m in _EMAIL_ADDR.finditer(arg):
        a = re.sub(r"[<>,:;\s]", "", m.group(1))
        if a and a not in out:
            out.append(a)
    return out


def split_addresses(value: str) -> list[str]:
    """Zeek's split_mime_email_addresses: comma-separated entries, quotes respected."""
    out = []
    for part in _ADDR_SPLIT.findall(value):
        p = part.strip()
        if p and p not in out:
            out.append(p)
    return out


def unfold(value: str) -> str:
    """RFC 5322 unfolding: CRLF before whitespace removed, the whitespace kept."""
    return _CRLF.sub("", _FOLD.sub("", value)).strip()


def decode_words(value: str) -> str:
    """Unfold and decode RFC 2047 encoded-words; unknown charsets fall back to Latin-1."""
    value = unfold(value)
    if "=?" not in value:
        return value
    try:
        parts = email.header.decode_header(value)
    except Exception:  # malformed encoded words: keep the raw text
        return value
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
            continue
        cs = (charset or "ascii").lower()
        if cs in ("unknown-8bit", "x-unknown"):
            cs = "latin-1"
        try:
            out.append(chunk.decode(cs, "replace"))
        except (LookupError, ValueError):
            out.append(chunk.decode("latin-1"))
    return "".join(out).strip()


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
        return True
    except ValueError:
        return False


def extract_ips(value: str, check_wrapping: bool = False) -> list[str]:
    """Zeek's extract_ip_addresses (IPv4 and IPv6), optionally only bracketed/spaced ones."""
    found: list[tuple[int, int, str]] = []
    for rx in (_IPV4, _IPV6):
        for m in rx.finditer(value):
            s = m.group(0)
            if ":" in s and s.count(":") < 2:
                continue
            if _is_ip(s) and not any(a <= m.start() < b for a, b, _ in found):
                found.append((m.start(), m.end(), s))
    found.sort()
    out = []
    for a, b, s in found:
        if not check_wrapping:
            out.append(s)
            continue
        before = value[a - 1] if a > 0 else ""
        after = value[b] if b < len(value) else ""
        if (not before and not after) or (before in _WRAP and _WRAP[before] == after):
            out.append(s)
    return out


def safe_name(name: str) -> str:
    """A filename with path separators and control characters replaced."""
    name = re.sub(r"[\x00-\x1f\x7f/\\]", "_", name).strip()
    return name[:200] or "_"


# ---------------------------------------------------------------- message parsing
@dataclass
class Attachment:
    index: int  # position in Message.walk()
    filename: str | None
    mime_type: str
    data: bytes


@dataclass
class ParsedMessage:
    headers: list[tuple[str, str]] = field(default_factory=list)  # top-level (name, raw value)
    attachments: list[Attachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)

    def all(self, name: str) -> list[str]:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def first(self, name: str) -> str | None:
        vals = self.all(name)
        return vals[0] if vals else None

    def last(self, name: str) -> str | None:
        vals = self.all(name)
        return vals[-1] if vals else None


_SURROGATE = re.compile("[\udc80-\udcff]")  # a byte compat32 could not decode (surrogateescape)


def _header_str(v: Any) -> str:
    if isinstance(v, email.header.Header):
        try:
            return str(v)
        except Exception:
            return v.encode()
    if not isinstance(v, str):
        return str(v)
    if _SURROGATE.search(v):
        # compat32 keeps undecodable bytes as surrogate escapes: UTF-8 if valid, else Latin-1
        return text(v.encode("utf-8", "surrogateescape"))
    return v


# ---------------------------------------------------------------- fast path for the email package
# Python's feed parser handles a message one line at a time (a few microseconds per line, so
# ~60 ms for a 1 MB base64 attachment of 76-character lines); the analyzers used to spend most
# of their time there. Most lines cannot change what it builds, though: their text only ends up
# in a payload. ``_fold_opaque_runs`` replaces each run of such lines by one placeholder line
# before parsing and ``_unfold_runs`` puts the text back into the parsed payloads, so the
# Message tree, its payloads and everything decoded from them are exactly what the plain parse
# gives (tests/test_email.py checks this differentially, against ``fold_runs=False``).
#
# Why a run is opaque, from the parser (email.feedparser, compat32). Lines are split at CR, LF
# or CRLF. A line's content matters only when it is (a) tested as a header (``headerRE``: starts
# with "From ", a space or tab, or a run of printable non-colon characters followed by ":"),
# (b) tested as a blank line (header/body separator, delivery-status block separator) or (c)
# tested as a multipart boundary (it starts with "--"). Header tests happen only on the first
# line of a (sub)message, which comes after a boundary or blank line, or is the line that ended
# the enclosing headers, and header state lasts only while lines are headers. So in a stretch of
# lines that are neither blank nor start with "-", with no lone CR anywhere: after the first line
# that cannot be a header, every line is payload text until the stretch ends. The run folded is
# that line through the end of the stretch; the placeholder is itself such a line and keeps the
# run's last line ending (which the parser may strip before a boundary, like the original's).

_MIN_RUN_BYTES = 256  # shorter runs are not worth a placeholder
_TOKEN_DIGITS = 8
_LONE_CR = re.compile(rb"\r[^\n]")
# the LF before a blank line or one starting with "-" (a lookahead: "\n\n-" holds two of them)
_HARD_LINE = re.compile(rb"\n(?=[\r\n-])")


def _fold_opaque_runs(raw: bytes) -> tuple[bytes, list[str], re.Pattern[str] | None]:
    """``raw`` with opaque runs replaced by placeholders; the runs' text; the placeholder regex.

    A handful of C-level scans over the message (~3 ms per MB) and Python work per stretch
    (per blank or "-" line), not per line.
    """
    if b"\r" in raw and (_LONE_CR.search(raw) or raw.endswith(b"\r")):
        return raw, [], None  # a lone CR is a line break too: keep it simple, parse as is
    # "Hard" lines end a stretch: blank lines and lines starting with "-" (boundaries).
    hard = [0] if raw[:1] in (b"\n", b"\r", b"-") else []
    hard += [m.start() + 1 for m in _HARD_LINE.finditer(raw)]
    hard.append(len(raw))
    for k in range(4):  # placeholders must not occur in the message itself
        prefix = b"ZzLawtapRun%dx" % k
        if prefix not in raw:
            break
    else:  # a message crafted to collide: not worth more scans, parse it as is
        return raw, [], None
    out: list[bytes] = []
    runs: list[str] = []
    done = 0  # raw[:done] is in ``out``
    start = 0  # first line of the current stretch
    for end in hard:  # the stretch is raw[start:end]; a hard line (or the end) starts at ``end``
        if end - start >= _MIN_RUN_BYTES:
            p = start
            while p < end:  # skip the lines that could be headers
                nl = raw.find(b"\n", p, end)
                if nl < 0:
                    break
                c = raw[p]
                if c == 0x20 or c == 0x09 or raw.startswith(b"From ", p) or raw.find(b":", p, nl) >= 0:
                    p = nl + 1
                    continue
                break
            q = raw.rfind(b"\n", p, end) + 1  # the run: complete lines from p up to q
            if q - p >= _MIN_RUN_BYTES:
                eol = 2 if raw[q - 2 : q - 1] == b"\r" else 1
                out.append(raw[done:p])
                out.append(prefix + b"%0*d" % (_TOKEN_DIGITS, len(runs)))
                runs.append(raw[p : q - eol].decode("ascii", "surrogateescape"))  # as the parser does
                done = q - eol
        if end < len(raw):
            nl = raw.find(b"\n", end)
            start = len(raw) if nl < 0 else nl + 1
    if not runs:
        return raw, [], None
    out.append(raw[done:])
    token_re = re.compile(re.escape(prefix.decode("ascii")) + "([0-9]{%d})" % _TOKEN_DIGITS)
    return b"".join(out), runs, token_re


def _unfold_runs(msg: email.message.Message, token_re: re.Pattern[str], runs: list[str]) -> None:
    """Put the folded runs back into every payload, preamble and epilogue of the tree."""

    def put(m: re.Match[str]) -> str:
        return runs[int(m.group(1))]

    stack = [msg]
    while stack:
        part = stack.pop()
        payload = part._payload  # compat32 keeps the payload here (str, or list of parts)
        if isinstance(payload, list):
            stack.extend(p for p in payload if isinstance(p, email.message.Message))
        elif isinstance(payload, str):
            part._payload = token_re.sub(put, payload)
        for attr in ("preamble", "epilogue"):
            v = getattr(part, attr, None)
            if isinstance(v, str):
                setattr(part, attr, token_re.sub(put, v))


def decoded_payload(part: email.message.Message) -> bytes | str | None:
    """``part.get_payload(decode=True)``, with a shortcut for well-formed base64.

    Why: for base64, the email package splits the payload into lines and joins them again
    (an object per 76-character line, most of an attachment's cost), then decodes strictly.
    When the payload, without its line breaks, is strict base64 the result is the same bytes
    (and the package would note no defect): :mod:`lawtap.analyzers.base64_lines` decodes it
    in one pass. Anything else takes the package's own path.
    """
    payload = part._payload  # (compat32: the str the parser left, or a list of parts)
    if isinstance(payload, str) and str(part.get("content-transfer-encoding", "")).lower() == "base64":
        try:
            raw = payload.encode("ascii")
        except UnicodeError:  # surrogates or non-ASCII: the package knows what to do
            raw = None
        if raw is not None:
            decoded = decode_base64_lines(raw)  # strict base64 of the lines, in one kernel pass
            if decoded is not None:
                return decoded
    return part.get_payload(decode=True)


def parse_message(raw: bytes, *, fold_runs: bool = True) -> ParsedMessage:
    """Headers and attachments of a message; never raises (defects are listed instead).

    Parsed once, with Python's ``email`` package; ``fold_runs`` (the default) hides the opaque
    line runs from its line-by-line parser, see :func:`_fold_opaque_runs` (same result, several
    times faster on attachments).
    """
    pm = ParsedMessage()
    try:
        folded, runs, token_re = _fold_opaque_runs(raw) if fold_runs else (raw, [], None)
        msg = email.message_from_bytes(folded, policy=email.policy.compat32)
        if token_re is not None:
            _unfold_runs(msg, token_re, runs)
    except Exception as exc:  # the parser is lenient; this is a last resort
        pm.defects.append(f"parse:{type(exc).__name__}")
        return pm
    try:
        pm.headers = [(k, _header_str(v)) for k, v in msg.items()]
    except Exception as exc:
        pm.defects.append(f"headers:{type(exc).__name__}")
    try:
        parts = list(msg.walk())
    except Exception as exc:
        pm.defects.append(f"walk:{type(exc).__name__}")
        parts = []
    for i, part in enumerate(parts):
        try:
            if part.is_multipart():
                continue
            fn = part.get_filename()
            disp = (part.get("Content-Disposition") or "")
            disp = _header_str(disp).split(";", 1)[0].strip().lower()
            if not fn and disp != "attachment":
                continue
            data = decoded_payload(part)
            if data is None:
                data = b""
            elif isinstance(data, str):
                data = data.encode("utf-8", "surrogateescape")
            name = decode_words(_header_str(fn)) if fn else None
            pm.attachments.append(Attachment(i, name, part.get_content_type(), data))
        except Exception as exc:
            pm.defects.append(f"part{i}:{type(exc).__name__}")
    return pm


# ---------------------------------------------------------------- records and files
def header_fields(pm: ParsedMessage) -> dict[str, Any]:
    """The decoded header fields of the ``email`` record."""

    def one(name: str) -> str | None:
        v = pm.first(name)
        return decode_words(v) if v is not None else None

    def addrs(name: str) -> list[str]:
        out: list[str] = []
        for v in pm.all(name):
            for a in split_addresses(unfold(v)):
                d = decode_words(a)
                if d not in out:
                    out.append(d)
        return out

    ua = None
    for k, v in pm.headers:
        if k.lower() in ("x-mailer", "user-agent", "x-user-agent"):
            ua = v
    return {
        "from": one("From"),
        "to": addrs("To"),
        "cc": addrs("Cc"),
        "reply_to": one("Reply-To"),
        "subject": one("Subject"),
        "date": one("Date"),
        "message_id": one("Message-ID"),
        "in_reply_to": one("In-Reply-To"),
        "user_agent": decode_words(ua) if ua is not None else None,
    }


def zeek_smtp_fields(pm: ParsedMessage, resp_h: str, orig_h: str) -> dict[str, Any]:
    """Zeek's smtp.log header-derived fields (raw unfolded values, Zeek's splitting rules)."""
    out: dict[str, Any] = {}
    to: list[str] = []
    cc: list[str] = []
    received: list[str] = []
    path = [resp_h, orig_h]
    for k, v in pm.headers:
        name = k.upper()
        val = unfold(v)
        if name == "MESSAGE-ID":
            out["msg_id"] = val
        elif name == "RECEIVED":
            received.append(val)
            ips = extract_ips(val, check_wrapping=True)
            ip = ips[1] if len(ips) > 1 else (ips[0] if ips else "")
            if ip and path[-1] != ip:
                path.append(ip)
        elif name == "IN-REPLY-TO":
            out["in_reply_to"] = val
        elif name == "SUBJECT":
            out["subject"] = val
        elif name == "FROM":
            out["from"] = val
        elif name == "REPLY-TO":
            out["reply_to"] = val
        elif name == "DATE":
            out["date"] = val
        elif name == "TO":
            to += [a for a in split_addresses(val) if a not in to]
        elif name == "CC":
            cc += [a for a in split_addresses(val) if a not in cc]
        elif name == "X-ORIGINATING-IP":
            ips = extract_ips(val)
            if ips:
                out["x_originating_ip"] = ips[0]
        elif name in ("X-MAILER", "USER-AGENT", "X-USER-AGENT"):
            out["user_agent"] = val
            if name == "USER-AGENT" and _WEBMAIL.search(val):
                out["is_webmail"] = True
    if received:
        out["first_received"] = received[-1]
        if len(received) > 1:
            out["second_received"] = received[-2]
    out["to"] = to or None
    out["cc"] = cc or None
    out["path"] = path
    return out


def message_events(
    *,
    protocol: str,
    raw: bytes,
    ts: float,
    is_orig: bool,
    index: int,
    user: str | None = None,
    mailfrom: str | None = None,
    rcptto: list[str] | None = None,
    partial: bool = False,
    missing_bytes: int = 0,
    total_bytes: int | None = None,
    parsed: ParsedMessage | None = None,
) -> tuple[dict[str, Any], list[FileObject], list[str]]:
    """The ``email`` record, the FileObjects (.eml first, then attachments) and parse defects."""
    pm = parsed if parsed is not None else parse_message(raw)
    source = protocol.upper()
    hf = header_fields(pm)
    rec: dict[str, Any] = {
        "ts": ts,
        "protocol": protocol,
        "trans_depth": index,
        "is_orig": is_orig,
        "user": user,
        "mailfrom": mailfrom,
        "rcptto": list(rcptto or []),
        **hf,
        "attachments": [a.filename or "" for a in pm.attachments],
        "partial": partial,
        "size": len(raw),
        "missing_bytes": missing_bytes,
    }
    mid = (hf.get("message_id") or "").strip().strip("<>").strip()
    meta = {"email_index": index, "protocol": protocol, "partial": partial}
    if mid:
        meta["message_id"] = hf["message_id"]
    files = [
        FileObject(
            source=source,
            data=raw,
            ts=ts,
            is_orig=is_orig,
            filename=safe_name(mid) + ".eml" if mid else f"{index}.eml",
            mime_type="message/rfc822",
            total_bytes=total_bytes,
            missing_bytes=missing_bytes,
            meta=meta,
        )
    ]
    for a in pm.attachments:
        files.append(
            FileObject(
                source=source,
                data=a.data,
                ts=ts,
                is_orig=is_orig,
                filename=a.filename,
                mime_type=a.mime_type,
                missing_bytes=0,
                meta={
                    "email_index": index,
                    "part_index": a.index,
                    "protocol": protocol,
                    "parent": "message/rfc822",
                    # bytes lost somewhere in the enclosing message (this part may be damaged)
                    "message_missing_bytes": missing_bytes,
                },
            )
        )
    return rec, files, pm.defects


class WeirdLimiter:
    """Keeps at most ``limit`` weirds of each name per connection."""

    __slots__ = ("counts", "limit")

    def __init__(self, limit: int = 5) -> None:
        self.counts: dict[str, int] = {}
        self.limit = limit

    def allow(self, name: str) -> bool:
        n = self.counts.get(name, 0)
        self.counts[name] = n + 1
        return n < self.limit
