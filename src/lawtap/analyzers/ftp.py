"""FTP control connections (RFC 959/2428/4217), and the data connections they announce.

``FtpAnalyzer`` reads commands (client) and replies (server, incl. multi-line ``123-...``/``123 ``),
pairs each command with its final reply and emits one ``ftp`` record per command, with Zeek's
``ftp.log`` field names. The password is never stored: a ``PASS`` record has ``arg`` null. The
server greeting becomes a record with command ``<init>``.

Data connections. ``PORT``/``EPRT`` commands and ``227``/``229`` replies to ``PASV``/``EPSV``
announce a connection the pipeline has not seen yet; they are exposed as
:class:`ExpectedChannel` s in ``analyzer.expected_channels`` (the following ``RETR``/``STOR``/
``APPE``/``STOU``/``LIST``/``NLST``/``MLSD`` fills in the command, file name, size and which end
sends). When a new connection matches one (:meth:`ExpectedChannel.matches`), the pipeline creates
its analyzer with :meth:`ExpectedChannel.analyzer` — a :class:`DataChannel` that accumulates the
bytes and emits one :class:`FileObject` at ``finish``. IRC DCC and TFTP reuse both classes.

``AUTH TLS`` answered by ``234``: the control connection turns into TLS. The analyzer then skips
TLS records; if the client later drops back to clear text (``CCC``, seen as plain FTP lines after
the TLS close), parsing resumes. Anything else on the wire ends the analysis (``done``).
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import ConnInfo, FileObject, StreamAnalyzer
from lawtap.analyzers.chat import schema_with
from lawtap.analyzers.tls import RECORD_SCHEMAS as _TLS_RECORD_SCHEMAS

try:  # a sibling module; the FileObject's MIME type is only a convenience
    from lawtap.analyzers.mime_sniff import sniff as _sniff
except ImportError:  # pragma: no cover
    _sniff = None

__all__ = [
    "ExpectedChannel",
    "DataChannel",
    "FtpAnalyzer",
    "LineReader",
    "match_channel",
    "EXPECT_TIMEOUT",
    "FTP_SCHEMA",
    "RECORD_SCHEMAS",
    "ANALYZERS",
    "decode_text",
    "norm_ip",
]

FTP_SCHEMA = schema_with(
    [
        pa.field("user", pa.string()),
        pa.field("command", pa.string()),
        pa.field("arg", pa.string()),
        pa.field("mime_type", pa.string()),
        pa.field("file_size", pa.uint64()),
        pa.field("reply_code", pa.uint16()),
        pa.field("reply_msg", pa.string()),
        pa.field("data_channel.passive", pa.bool_()),
        pa.field("data_channel.orig_h", pa.string()),
        pa.field("data_channel.resp_h", pa.string()),
        pa.field("data_channel.resp_p", pa.uint16()),
    ]
)

RECORD_SCHEMAS = {"ftp": FTP_SCHEMA, **_TLS_RECORD_SCHEMAS}  # AUTH TLS sessions log their handshake

MAX_WEIRDS = 64  # per analyzer; a garbage stream must not flood the weird table


# ---------------------------------------------------------------------------------------------
# helpers shared with irc.py / tftp.py
# ---------------------------------------------------------------------------------------------


def decode_text(b: bytes) -> str:
    """Protocol text as str: UTF-8 when valid, else Latin-1 (never fails)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def norm_ip(s: str) -> str | None:
    """Canonical text of an IPv4/IPv6 address, or None when ``s`` is not one."""
    try:
        a = ipaddress.ip_address(s.strip())
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return str(a.ipv4_mapped)
    return str(a)


class LineReader:
    """Splits one direction of a line protocol into lines (without CR/LF).

    A line longer than ``max_line`` is returned truncated (``overflows`` counts them) and the
    rest of it up to the next LF is skipped. After a gap the partial line is dropped and
    reading resumes after the next LF.
    """

    def __init__(self, max_line: int = 8192) -> None:
        self.max_line = max_line
        self.buf = bytearray()
        self.skipping = False
        self.overflows = 0
        self._data: bytes = b""
        self._pos = 0

    def feed(self, data: bytes) -> list[bytes]:
        return list(self.iter(data))

    def iter(self, data: bytes):
        """Yield the complete lines; :meth:`take_rest` may be called between two lines."""
        self._data, self._pos = data, 0
        n = len(data)
        while self._pos < n:
            pos = self._pos
            nl = data.find(b"\n", pos)
            if self.skipping:
                if nl < 0:
                    break
                self.skipping = False
                self._pos = nl + 1
                continue
            if nl < 0:
                room = self.max_line - len(self.buf)
                chunk = data[pos:]
                self._pos = n
                if len(chunk) > room:
                    self.buf += chunk[: max(room, 0)]
                    line = bytes(self.buf).rstrip(b"\r")
                    self.buf.clear()
                    self.overflows += 1
                    self.skipping = True
                    yield line
                else:
                    self.buf += chunk
                break
            piece = data[pos:nl]
            if len(self.buf) + len(piece) > self.max_line:
                self.buf += piece[: max(self.max_line - len(self.buf), 0)]
                self.overflows += 1
            else:
                self.buf += piece
            line = bytes(self.buf)
            self.buf.clear()
            if line.endswith(b"\r"):
                line = line[:-1]
            self._pos = nl + 1
            yield line
        self._data, self._pos = b"", 0

    def take_rest(self) -> bytes:
        """The bytes not yet turned into lines (partial line + rest of the current feed)."""
        rest = bytes(self.buf) + bytes(self._data[self._pos :])
        self.buf.clear()
        self._data, self._pos = b"", 0
        self.skipping = False
        return rest

    def gap(self) -> None:
        self.buf.clear()
        self.skipping = True

    def pending(self) -> bytes:
        """The unterminated tail (for flushing at the end of a connection)."""
        if self.skipping:
            return b""
        return bytes(self.buf).rstrip(b"\r")


# ---------------------------------------------------------------------------------------------
# expected (announced) connections and the generic data-connection analyzer
# ---------------------------------------------------------------------------------------------


@dataclass
class ExpectedChannel:
    """A connection announced on a control connection, not yet seen.

    Matching: ``resp_h`` (and ``resp_p`` unless None) must equal the new connection's responder;
    ``orig_h``/``orig_p`` when not None must equal its originator. For UDP (TFTP) the reversed
    orientation matches too, since which end of a UDP flow counts as originator is a guess.

    ``alt_resp_h``, when set, is accepted in place of ``resp_h`` (NAT: the announced address is
    private, the peer uses the control connection's address).

    ``direction`` says which end of the *data* connection sends the object: ``"orig"``,
    ``"resp"`` or None (unknown: the :class:`DataChannel` takes the non-empty / larger side).
    ``filename``/``size``/``command`` may be filled in after creation (an FTP ``RETR`` follows
    the ``PASV``), so the data analyzer keeps a reference and reads them at ``finish``.
    ``claimed`` is set when an analyzer is created for it (one data connection per channel).
    """

    resp_h: str
    resp_p: int | None
    source: str  # "FTP_DATA" | "IRC_DCC" | "IRC_DCC_CHAT" | "TFTP"
    orig_h: str | None = None
    orig_p: int | None = None
    proto: str = "tcp"
    filename: str | None = None
    size: int | None = None
    direction: str | None = None
    created: float = 0.0
    command: str | None = None  # RETR/STOR/LIST..., SEND/CHAT (DCC), RRQ/WRQ (TFTP)
    mode: str | None = None  # TFTP transfer mode
    blksize: int | None = None  # TFTP block size (None: 512)
    parent: ConnInfo | None = None  # the control connection
    meta: dict[str, Any] = field(default_factory=dict)
    claimed: bool = False
    alt_resp_h: str | None = None

    def matches(self, conn: ConnInfo) -> bool:
        if conn.proto != self.proto:
            return False
        if self._match(conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p):
            return True
        return self.proto == "udp" and self._match(conn.resp_h, conn.resp_p, conn.orig_h, conn.orig_p)

    def _match(self, oh: str, op: int, rh: str, rp: int) -> bool:
        if rh != self.resp_h and (self.alt_resp_h is None or rh != self.alt_resp_h):
            return False
        if self.resp_p is not None and rp != self.resp_p:
            return False
        if self.orig_h is not None and oh != self.orig_h:
            return False
        return self.orig_p is None or op == self.orig_p

    def reversed_for(self, conn: ConnInfo) -> bool:
        """True when ``conn`` matches only with originator and responder swapped (UDP)."""
        return not self._match(conn.orig_h, conn.orig_p, conn.resp_h, conn.resp_p)

    def analyzer(self, conn: ConnInfo) -> StreamAnalyzer:
        """The analyzer for the data connection ``conn`` (marks the channel claimed)."""
        self.claimed = True
        if self.source == "TFTP":
            from lawtap.analyzers.tftp import TftpTransfer

            return TftpTransfer(conn, self)
        if self.source == "IRC_DCC_CHAT":
            from lawtap.analyzers.irc import DccChat

            return DccChat(conn, self)
        return DataChannel(conn, self)


EXPECT_TIMEOUT = 3600.0  # seconds an announced connection stays expected


def match_channel(
    channels: list[ExpectedChannel], conn: ConnInfo, ts: float | None = None, max_age: float = EXPECT_TIMEOUT
) -> ExpectedChannel | None:
    """The oldest unclaimed channel that ``conn`` matches (announced at most ``max_age`` s before ``ts``).

    Pipeline use: collect the ``expected_channels`` analyzers announce (take them with
    ``del an.expected_channels[:]`` after reading, or track identities); when a new connection
    appears, before DPI, ``ch = match_channel(pending, conn, ts)``; if found, ``ch.analyzer(conn)``
    is its analyzer (the channel becomes ``claimed``).
    """
    best = None
    for ch in channels:
        if ch.claimed or (ts is not None and ts - ch.created > max_age) or not ch.matches(conn):
            continue
        if best is None or ch.created < best.created:
            best = ch
    return best


class DataChannel(StreamAnalyzer):
    """One data connection carrying one object (FTP data, IRC DCC SEND).

    Accumulates both directions and emits a single :class:`FileObject` at ``finish``: the side
    named by ``channel.direction`` when it carried bytes, else the non-empty side (the larger one
    when both are: a DCC receiver's 4-byte acknowledgements lose to the file).
    """

    service = "ftp-data"
    MAX_BYTES = 256 * 1024 * 1024  # per direction, kept in memory

    def __init__(self, conn: ConnInfo, channel: ExpectedChannel | None = None, source: str | None = None) -> None:
        super().__init__(conn)
        self.channel = channel
        if channel is not None:
            channel.claimed = True
        self.source = source or (channel.source if channel else "FTP_DATA")
        self._buf: dict[bool, list[bytes]] = {True: [], False: []}
        self._len = {True: 0, False: 0}
        self._missing = {True: 0, False: 0}
        self._truncated = {True: 0, False: 0}
        self._first_ts: dict[bool, float | None] = {True: None, False: None}
        self._done_emit = False

    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        if not data or self._done_emit:
            return
        if self._first_ts[is_orig] is None:
            self._first_ts[is_orig] = ts
        room = self.MAX_BYTES - self._len[is_orig]
        if len(data) > room:
            if room > 0:
                self._buf[is_orig].append(bytes(data[:room]))
                self._len[is_orig] += room
            if not self._truncated[is_orig] and len(self.weirds) < MAX_WEIRDS:
                self.weirds.append(("data_channel_truncated", f"object larger than {self.MAX_BYTES} bytes"))
            self._truncated[is_orig] += len(data) - max(room, 0)
            return
        self._buf[is_orig].append(bytes(data))
        self._len[is_orig] += len(data)

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        if length > 0:
            self._missing[is_orig] += length

    def _side(self) -> bool | None:
        ch = self.channel
        want = None
        if ch is not None and ch.direction in ("orig", "resp"):
            want = ch.direction == "orig"
            if ch.proto == "udp" and ch.reversed_for(self.conn):
                want = not want
        if want is not None and self._len[want] + self._missing[want] > 0:
            return want
        o, r = self._len[True] + self._missing[True], self._len[False] + self._missing[False]
        if o == 0 and r == 0:
            return None
        return o >= r if o != r else (want if want is not None else False)

    def finish(self, ts: float) -> None:
        if self._done_emit:
            return
        self._done_emit = True
        side = self._side()
        if side is None:
            return
        data = b"".join(self._buf[side])
        ch = self.channel
        meta: dict[str, Any] = {}
        if ch is not None:
            if ch.command:
                meta["command"] = ch.command
            if ch.parent is not None:
                meta["control_uid"] = ch.parent.uid
            meta.update(ch.meta)
        if self._truncated[side]:
            meta["truncated_bytes"] = self._truncated[side]
        first = self._first_ts[side]
        self.files.append(
            FileObject(
                source=self.source,
                data=data,
                ts=first if first is not None else ts,
                is_orig=side,
                filename=ch.filename if ch else None,
                mime_type=_sniff(data) if (_sniff and data) else None,
                total_bytes=ch.size if ch else None,
                missing_bytes=self._missing[side],
                meta=meta,
            )
        )
        self._buf = {True: [], False: []}


# ---------------------------------------------------------------------------------------------
# FTP control
# ---------------------------------------------------------------------------------------------

_REPLY = re.compile(rb"^(\d{3})([ -]?)(.*)$", re.S)
_PASV = re.compile(r"(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})", re.A)
_EPSV = re.compile(r"\((.)\1\1(\d{1,5})\1\)", re.A)
_BYTES = re.compile(r"\((\d+)\s+bytes?\)", re.I | re.A)
_COMMAND = re.compile(rb"^[A-Za-z]{3,4}$")

_TRANSFER = {"RETR", "STOR", "STOU", "APPE", "LIST", "NLST", "MLSD"}
_UPLOAD = {"STOR", "STOU", "APPE"}
_SECRET = {"PASS"}  # argument never stored
MAX_PENDING = 64
MAX_MULTILINE = 2000  # lines of one multi-line reply
MAX_CHANNELS = 1024
NOT_FTP_AFTER = 16  # unparseable lines with no valid command or reply: not FTP -> done


@dataclass
class _Cmd:
    command: str
    arg: str | None
    ts: float
    user: str | None
    channel: ExpectedChannel | None = None
    passive: bool | None = None
    file_size: int | None = None


class FtpAnalyzer(StreamAnalyzer):
    service = "ftp"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self.done = False
        self.user: str | None = None
        self.expected_channels: list[ExpectedChannel] = []
        self.tls = False  # AUTH TLS accepted at some point
        self._lines = {True: LineReader(4096), False: LineReader(8192)}
        self._pending: deque[_Cmd] = deque()
        self._ml: tuple[bytes, list[bytes], float] | None = None  # multi-line reply in progress
        self._replies = 0
        self._commands = 0
        self._bad = 0
        self._sizes: dict[str, int] = {}  # path -> size from "213" replies to SIZE
        self._open_channel: ExpectedChannel | None = None  # announced, no transfer command yet
        self._tls_dir = {True: False, False: False}  # direction currently carrying TLS records
        self._tls_buf = {True: bytearray(), False: bytearray()}
        self._tls: StreamAnalyzer | None = None  # inner TLS analyzer after AUTH TLS
        self._now = 0.0

    # ---- events ----
    def _weird(self, name: str, detail: str = "") -> None:
        if len(self.weirds) < MAX_WEIRDS:
            self.weirds.append((name, detail[:200]))

    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self.done or not data:
            return
        self._now = ts
        if self._tls_dir[is_orig]:
            data = self._tls_skip(is_orig, data)
            if not data or self.done:
                return
        elif is_orig and self._pending and self._pending[-1].command == "AUTH" and data[:2] == b"\x16\x03":
            # ClientHello right behind AUTH TLS (reply not seen yet)
            self._start_tls()
            data = self._tls_skip(is_orig, data)
            if not data or self.done:
                return
        reader = self._lines[is_orig]
        for line in reader.iter(data):
            if is_orig:
                self._command(line, ts)
            else:
                self._reply_line(line, ts)
            if self._bad >= NOT_FTP_AFTER and not (self._replies or self._commands):
                self._weird("ftp_not_ftp", f"{self._bad} unparseable lines")
                self.done = True
            if self.done:
                return
            if self._tls_dir[is_orig]:
                # the rest of this segment, after the line that switched to TLS, is TLS
                rest = reader.take_rest()
                if rest:
                    rest = self._tls_skip(is_orig, rest)
                    if rest and not self.done:
                        self.feed(is_orig, rest, ts)
                return
        if reader.overflows:
            self._weird("ftp_line_too_long", "client" if is_orig else "server")
            reader.overflows = 0

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        if self.done:
            return
        if self._tls_dir[is_orig]:
            self.done = True  # lost position in an encrypted stream: nothing more to learn
            return
        self._lines[is_orig].gap()
        if not is_orig and self._ml is not None:
            self._end_reply(self._ml[0], self._ml[1], self._ml[2])
            self._ml = None
        self._weird("ftp_content_gap", f"{'client' if is_orig else 'server'} {length} bytes")

    def finish(self, ts: float) -> None:
        if self._tls is not None:
            self._tls.finish(ts)
            r, f, w = self._tls.drain()
            self.records += r
            self.files += f
            self.weirds += w
        for is_orig in (True, False):
            if self._tls_dir[is_orig]:
                continue
            tail = self._lines[is_orig].pending()
            self._lines[is_orig].buf.clear()
            if tail:
                if is_orig:
                    self._command(tail, ts)
                else:
                    self._reply_line(tail, ts)
        if self._ml is not None:
            self._end_reply(self._ml[0], self._ml[1], self._ml[2])
            self._ml = None
        while self._pending:
            self._emit(self._pending.popleft(), None, None)

    # ---- TLS (AUTH TLS / CCC) ----
    def _start_tls(self) -> None:
        self.tls = True
        for d in (True, False):
            self._tls_dir[d] = True
            self._lines[d].buf.clear()

    def _inner_tls(self, is_orig: bool, records: bytes) -> None:
        """Hand whole TLS records to a TLS analyzer, so the handshake (SNI, JA3/JA4,
        certificates) of an AUTH TLS session is logged like any other TLS connection."""
        if self._tls is None:
            from lawtap.analyzers.tls import TLSAnalyzer

            self._tls = TLSAnalyzer(self.conn)
        self._tls.feed(is_orig, records, self._now)
        r, f, w = self._tls.drain()
        self.records += r
        self.files += f
        self.weirds += w

    def _tls_skip(self, is_orig: bool, data: bytes) -> bytes:
        """Consume whole TLS records; return the clear text that follows them, if any."""
        buf = self._tls_buf[is_orig]
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 5:
            t, major, minor = buf[pos], buf[pos + 1], buf[pos + 2]
            if 20 <= t <= 24 and major == 3 and minor <= 4:
                ln = (buf[pos + 3] << 8) | buf[pos + 4]
                if n - pos < 5 + ln:
                    break
                self._inner_tls(is_orig, bytes(buf[pos : pos + 5 + ln]))
                pos += 5 + ln
                continue
            # not a TLS record: clear text again (after CCC) or garbage
            rest = bytes(buf[pos:])
            buf.clear()
            if self._looks_clear(is_orig, rest):
                self._tls_dir[is_orig] = False
                return rest
            self._weird("ftp_tls_unrecognized", repr(rest[:16]))
            self.done = True
            return b""
        del buf[:pos]
        if len(buf) >= 5 and not (20 <= buf[0] <= 24 and buf[1] == 3):
            rest = bytes(buf)
            buf.clear()
            if self._looks_clear(is_orig, rest):
                self._tls_dir[is_orig] = False
                return rest
            self._weird("ftp_tls_unrecognized", repr(rest[:16]))
            self.done = True
        return b""

    @staticmethod
    def _looks_clear(is_orig: bool, data: bytes) -> bool:
        head = data.split(b"\n", 1)[0][:16]
        if is_orig:
            word = head.split(b" ", 1)[0].rstrip(b"\r")
            return bool(_COMMAND.match(word))
        return len(head) >= 4 and head[:3].isdigit() and head[3:4] in (b" ", b"-", b"\r")

    # ---- client ----
    def _command(self, line: bytes, ts: float) -> None:
        line = line.strip(b"\x00 \t\r")
        if not line:
            return
        verb, _, argb = line.partition(b" ")
        if not verb.isalpha() or len(verb) > 8:
            if verb.startswith(b"\xff"):  # telnet IAC (e.g. before ABOR)
                verb = verb.lstrip(b"\xff\xf4\xf2\xfe\xfd\xfb\xfc")
                if not verb.isalpha():
                    self._bad += 1
                    self._weird("ftp_bad_command", repr(line[:32]))
                    return
            else:
                self._bad += 1
                self._weird("ftp_bad_command", repr(line[:32]))
                return
        cmd = verb.decode("ascii").upper()
        arg: str | None = decode_text(argb.strip()) if argb.strip() else None
        self._commands += 1
        c = _Cmd(cmd, arg, ts, self.user)
        if cmd == "USER":
            self.user = arg
            c.user = arg
        elif cmd in _SECRET:
            c.arg = None
        elif cmd in ("PORT", "EPRT") and arg:
            addr = _parse_port(arg) if cmd == "PORT" else _parse_eprt(arg)
            if addr is None:
                self._weird("ftp_bad_port", arg[:64])
            else:
                host, port = addr
                ch = self._new_channel(False, host, port, ts)
                c.channel, c.passive = ch, False
        elif cmd in _TRANSFER:
            self._attach_transfer(c)
        if len(self._pending) >= MAX_PENDING:
            self._emit(self._pending.popleft(), None, None)
        self._pending.append(c)

    def _new_channel(self, passive: bool, resp_h: str, resp_p: int, ts: float) -> ExpectedChannel:
        # passive: the client connects to the server; active (PORT/EPRT): the server to the client
        orig_h, alt = (self.conn.orig_h, self.conn.resp_h) if passive else (self.conn.resp_h, self.conn.orig_h)
        ch = ExpectedChannel(resp_h=resp_h, resp_p=resp_p, source="FTP_DATA", orig_h=orig_h, created=ts, parent=self.conn)
        ch.meta["passive"] = passive
        if alt is not None and alt != resp_h:
            ch.alt_resp_h = alt
        if len(self.expected_channels) >= MAX_CHANNELS:
            del self.expected_channels[: MAX_CHANNELS // 2]
        self.expected_channels.append(ch)
        self._open_channel = ch
        return ch

    def _attach_transfer(self, c: _Cmd) -> None:
        ch = self._open_channel
        if ch is None:
            return
        self._open_channel = None
        c.channel = ch
        ch.command = c.command
        listing = c.command in ("LIST", "NLST", "MLSD")
        ch.filename = None if listing else c.arg
        if listing and c.arg:
            ch.meta["arg"] = c.arg
        passive = bool(ch.meta.get("passive"))
        upload = c.command in _UPLOAD
        # passive: client opens the data connection; active (PORT): the server does
        if passive:
            ch.direction = "orig" if upload else "resp"
        else:
            ch.direction = "resp" if upload else "orig"
        if c.arg and c.arg in self._sizes and not listing:
            ch.size = self._sizes[c.arg]
            c.file_size = ch.size

    # ---- server ----
    def _reply_line(self, line: bytes, ts: float) -> None:
        m = _REPLY.match(line)
        if self._ml is not None:
            code, lines, t0 = self._ml
            if m and m.group(1) == code and m.group(2) == b" ":
                lines.append(m.group(3))
                self._ml = None
                self._end_reply(code, lines, t0)
            elif m and m.group(1) == code and m.group(2) == b"" and len(line) == 3:
                self._ml = None
                self._end_reply(code, lines, t0)
            else:
                lines.append(line)
                if len(lines) > MAX_MULTILINE:
                    self._weird("ftp_multiline_too_long", code.decode())
                    self._ml = None
                    self._end_reply(code, lines, t0)
            return
        if not m:
            if line.strip():
                self._bad += 1
                self._weird("ftp_bad_reply", repr(line[:32]))
            return
        code, sep, text = m.group(1), m.group(2), m.group(3)
        if sep == b"" and text.strip():
            self._bad += 1
            self._weird("ftp_bad_reply", repr(line[:32]))
            return
        if sep == b"-":
            self._ml = (code, [text], ts)
            return
        self._end_reply(code, [text], ts)

    def _end_reply(self, code_b: bytes, lines: list[bytes], ts: float) -> None:
        code = int(code_b)
        texts = [decode_text(x).strip() for x in lines]
        msg = texts[0] if texts and texts[0] else next((t for t in reversed(texts) if t), "")
        self._replies += 1
        if 100 <= code < 200:
            # preliminary: the command stays pending until its final reply
            if self._pending:
                c = self._pending[0]
                m = _BYTES.search(" ".join(texts))
                if m and c.command in _TRANSFER and len(m.group(1)) < 20:
                    size = int(m.group(1))
                    c.file_size = size
                    if c.channel is not None:
                        c.channel.size = size
            return
        want = {227: "PASV", 229: "EPSV"}.get(code)
        if want and self._pending and self._pending[0].command != want and any(x.command == want for x in self._pending):
            # replies were lost (gap, one-sided capture): realign on the command this code answers
            while self._pending[0].command != want:
                self._emit(self._pending.popleft(), None, None)
            self._weird("ftp_reply_realigned", want)
        if self._pending:
            c = self._pending.popleft()
        else:
            c = _Cmd("<init>" if self._commands == 0 and self._replies == 1 else "<unknown>", None, ts, self.user)
        self._on_final(c, code, msg, ts)
        self._emit(c, code, msg)

    def _on_final(self, c: _Cmd, code: int, msg: str, ts: float) -> None:
        if c.command == "PASV" and code == 227:
            m = _PASV.search(msg)
            if m:
                nums = [int(x) for x in m.groups()]
                if all(x <= 255 for x in nums):
                    host = ".".join(str(x) for x in nums[:4])
                    if host == "0.0.0.0":
                        host = self.conn.resp_h
                    c.channel = self._new_channel(True, host, nums[4] * 256 + nums[5], ts)
                    c.passive = True
                    return
            self._weird("ftp_bad_pasv_reply", msg[:64])
        elif c.command == "EPSV" and code == 229:
            m = _EPSV.search(msg)
            if m and 0 < int(m.group(2)) < 65536:
                c.channel = self._new_channel(True, self.conn.resp_h, int(m.group(2)), ts)
                c.passive = True
            else:
                self._weird("ftp_bad_epsv_reply", msg[:64])
        elif c.command == "SIZE" and code == 213 and c.arg:
            t = msg.strip()
            if t.isascii() and t.isdigit() and len(t) < 20:
                self._sizes[c.arg] = int(t)
                if len(self._sizes) > 4096:
                    self._sizes.clear()
        elif c.command == "AUTH" and code == 234 and (c.arg or "").upper().startswith(("TLS", "SSL")):
            self._start_tls()
        elif c.command in ("PORT", "EPRT") and code >= 400 and c.channel is not None:
            c.channel.meta["refused"] = True

    def _emit(self, c: _Cmd, code: int | None, msg: str | None) -> None:
        ch = c.channel
        rec: dict[str, Any] = {
            "ts": c.ts,
            "user": c.user,
            "command": c.command,
            "arg": c.arg,
            "mime_type": None,
            "file_size": c.file_size if c.file_size is not None else (ch.size if ch is not None and c.command in _TRANSFER else None),
            "reply_code": code,
            "reply_msg": msg,
            "data_channel.passive": None,
            "data_channel.orig_h": None,
            "data_channel.resp_h": None,
            "data_channel.resp_p": None,
        }
        if ch is not None and c.passive is not None:
            rec["data_channel.passive"] = c.passive
            rec["data_channel.orig_h"] = ch.orig_h
            rec["data_channel.resp_h"] = ch.resp_h
            rec["data_channel.resp_p"] = ch.resp_p
        self.records.append(("ftp", rec))


def _parse_port(arg: str) -> tuple[str, int] | None:
    m = _PASV.search(arg)
    if not m:
        return None
    nums = [int(x) for x in m.groups()]
    if any(x > 255 for x in nums):
        return None
    return ".".join(str(x) for x in nums[:4]), nums[4] * 256 + nums[5]


def _parse_eprt(arg: str) -> tuple[str, int] | None:
    arg = arg.strip()
    if len(arg) < 5:
        return None
    d = arg[0]
    parts = arg.split(d)
    # "|1|132.235.1.2|6275|" -> ['', '1', '132.235.1.2', '6275', '']
    if len(parts) != 5 or parts[1] not in ("1", "2") or not (parts[3].isascii() and parts[3].isdigit()):
        return None
    host = norm_ip(parts[2])
    port = int(parts[3])
    if host is None or not 0 < port < 65536:
        return None
    return host, port


ANALYZERS = {"ftp": FtpAnalyzer, "ftp-data": DataChannel}
