"""IRC (RFC 1459/2812, IRCv3 message tags) in both directions, and DCC offers.

Every line is ``[@tags] [:prefix] COMMAND params [:trailing]``. The analyzer keeps the
client's nick (its ``NICK``, or the nick the server's ``001`` welcome confirms) and user, and emits:

* ``irc`` records (Zeek's ``irc.log`` fields; like Zeek, ``nick``/``user`` are the session's
  before the command, the new nick/user is in ``value``) for the session's ``NICK``, ``USER``, ``JOIN``,
  ``PART``, ``QUIT``, and for each CTCP ``DCC`` offer (``dcc_file_name``/``dcc_file_size``).
  The server's echo of the client's own JOIN/PART/NICK/QUIT is not logged twice; other users'
  ones (seen through the server) are, under their nick.
* ``chat`` records (protocol ``irc``) for ``PRIVMSG``/``NOTICE``: ``from`` = the prefix's nick
  (server to client) or the client's nick (client to server), ``to`` = the target (one record
  per comma-separated target), ``channel`` = the target when it starts with ``#``/``&``/``+``/``!``.
  CTCP ``ACTION`` becomes ``/me text``; other CTCP requests (VERSION, PING...) are not chat.

CTCP ``DCC SEND file ip port [size]`` and ``DCC CHAT chat ip port`` (ip as a 32-bit decimal
integer, dotted quad or IPv6 text; the file name possibly quoted) are exposed as
:class:`~lawtap.analyzers.ftp.ExpectedChannel` s in ``expected_channels``: the offerer listens on
``ip:port``, so the channel is ``resp_h``/``resp_p`` = that address, any originator. A DCC SEND
connection is analysed by :class:`~lawtap.analyzers.ftp.DataChannel` (source ``IRC_DCC``; the
file is the responder's stream, the receiver's 4-byte acknowledgements are ignored); a DCC CHAT
connection by :class:`DccChat` (``chat`` records, protocol ``irc-dcc``). A passive ("reverse")
DCC offer (port 0) announces no listener and creates no channel.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import ConnInfo, StreamAnalyzer
from lawtap.analyzers.chat import CHAT_SCHEMA, chat_record, schema_with
from lawtap.analyzers.ftp import ExpectedChannel, LineReader, decode_text, norm_ip

__all__ = [
    "IrcAnalyzer",
    "DccChat",
    "IrcMessage",
    "parse_line",
    "parse_dcc",
    "IRC_SCHEMA",
    "RECORD_SCHEMAS",
    "ANALYZERS",
]

IRC_SCHEMA = schema_with(
    [
        pa.field("nick", pa.string()),
        pa.field("user", pa.string()),
        pa.field("command", pa.string()),
        pa.field("value", pa.string()),
        pa.field("addl", pa.string()),
        pa.field("dcc_file_name", pa.string()),
        pa.field("dcc_file_size", pa.uint64()),
        pa.field("dcc_mime_type", pa.string()),
    ]
)

RECORD_SCHEMAS = {"irc": IRC_SCHEMA, "chat": CHAT_SCHEMA}

MAX_LINE = 16384  # IRCv3 tags may take 8191 bytes + a 512-byte message
MAX_WEIRDS = 64
MAX_CHANNELS = 256
NOT_IRC_AFTER = 16  # unparseable lines, none parseable: not IRC (or encrypted) -> done
_CHANNEL_PREFIX = ("#", "&", "+", "!")


class IrcMessage:
    __slots__ = ("tags", "prefix", "command", "params")

    def __init__(self, tags: str | None, prefix: str | None, command: str, params: list[str]) -> None:
        self.tags, self.prefix, self.command, self.params = tags, prefix, command, params

    @property
    def nick(self) -> str | None:
        """The nick of a ``nick!user@host`` prefix (None for a server prefix or no prefix)."""
        if not self.prefix:
            return None
        if "!" in self.prefix or "@" in self.prefix:
            return self.prefix.split("!", 1)[0].split("@", 1)[0] or None
        return None if "." in self.prefix else self.prefix

    def __repr__(self) -> str:  # pragma: no cover
        return f"IrcMessage({self.tags!r}, {self.prefix!r}, {self.command!r}, {self.params!r})"


def parse_line(line: str) -> IrcMessage | None:
    """One IRC line (no CR/LF) -> message, or None when there is no command."""
    s = line.lstrip(" ")
    tags = prefix = None
    if s.startswith("@"):
        tags, _, s = s[1:].partition(" ")
        s = s.lstrip(" ")
    if s.startswith(":"):
        prefix, _, s = s[1:].partition(" ")
        s = s.lstrip(" ")
    if not s:
        return None
    trailing = None
    head = s
    i = s.find(" :")
    if i >= 0:
        head, trailing = s[:i], s[i + 2 :]
    elif s.startswith(":"):
        head, trailing = "", s[1:]
    words = head.split()
    if not words:
        return None
    command = words[0].upper()
    if not (command.isalpha() or (len(command) == 3 and command.isdigit())):
        return None
    params = words[1:]
    if trailing is not None:
        params.append(trailing)
    return IrcMessage(tags, prefix, command, params)


_DCC = re.compile(r'^DCC\s+(\S+)\s+(?:"([^"]*)"|(\S+))\s+(\S+)\s+(\d+)(?:\s+(\d+))?(?:\s+(\S+))?', re.I | re.A)


def _dcc_addr(s: str) -> str | None:
    if s.isascii() and s.isdigit():
        v = int(s)
        if v < 1 << 32:
            return str(ipaddress.IPv4Address(v))
        if v < 1 << 128:
            return str(ipaddress.IPv6Address(v))
        return None
    return norm_ip(s)


def parse_dcc(ctcp: str) -> dict[str, Any] | None:
    """``DCC <type> <arg> <ip> <port> [size] [token]`` -> fields, or None."""
    m = _DCC.match(ctcp.strip())
    if not m:
        return None
    typ, quoted, bare, ip, port, size, token = m.groups()
    addr = _dcc_addr(ip)
    if addr is None:
        return None
    p = int(port)
    if p > 65535:
        return None
    return {
        "type": typ.upper(),
        "arg": quoted if quoted is not None else bare,
        "ip": addr,
        "port": p,
        "size": int(size) if size is not None and len(size) < 20 else None,
        "token": token,
    }


def _ctcp(text: str) -> str | None:
    if len(text) >= 2 and text[0] == "\x01":
        return text[1:-1] if text.endswith("\x01") else text[1:]
    return None


class IrcAnalyzer(StreamAnalyzer):
    service = "irc"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self.nick: str | None = None
        self.user: str | None = None
        self.expected_channels: list[ExpectedChannel] = []
        self._lines = {True: LineReader(MAX_LINE), False: LineReader(MAX_LINE)}
        self._bad = 0
        self._good = 0
        self.done = False
        self._nicks: set[str] = set()  # every nick the client has used (lower case)

    def _set_nick(self, nick: str) -> None:
        self.nick = nick
        if len(self._nicks) < 64:
            self._nicks.add(nick.lower())

    def _weird(self, name: str, detail: str = "") -> None:
        if len(self.weirds) < MAX_WEIRDS:
            self.weirds.append((name, detail[:200]))

    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        if not data or self.done:
            return
        reader = self._lines[is_orig]
        for line in reader.iter(data):
            self._line(is_orig, line, ts)
            if self._bad >= NOT_IRC_AFTER and not self._good:
                self._weird("irc_not_irc", f"{self._bad} unparseable lines")
                self.done = True
                return
        if reader.overflows:
            self._weird("irc_line_too_long", "client" if is_orig else "server")
            reader.overflows = 0

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        if self.done:
            return
        self._lines[is_orig].gap()
        self._weird("irc_content_gap", f"{'client' if is_orig else 'server'} {length} bytes")

    def finish(self, ts: float) -> None:
        if self.done:
            return
        for is_orig in (True, False):
            tail = self._lines[is_orig].pending()
            self._lines[is_orig].buf.clear()
            if tail:
                self._line(is_orig, tail, ts)

    # ---- one line ----
    def _line(self, is_orig: bool, raw: bytes, ts: float) -> None:
        raw = raw.strip(b"\r\x00")
        if not raw.strip():
            return
        msg = parse_line(decode_text(raw))
        if msg is None:
            self._bad += 1
            self._weird("irc_bad_line", repr(raw[:40]))
            return
        self._good += 1
        cmd, p = msg.command, msg.params
        own = is_orig or (msg.nick is not None and msg.nick.lower() in self._nicks)
        sender = self.nick if is_orig else (msg.nick or msg.prefix)
        if cmd in ("PRIVMSG", "NOTICE") and len(p) >= 2:
            self._message(is_orig, msg, sender, p[0], p[-1], ts)
        elif cmd == "NICK" and p:
            if own:
                old = self.nick
                self._set_nick(p[0])
                if is_orig:
                    self._irc(ts, "NICK", p[0], nick=old)
            else:
                self._irc(ts, "NICK", p[0], nick=msg.nick, user=None)
        elif cmd == "USER" and is_orig and p:
            # as Zeek: the record shows the session before the command (value = the new user)
            addl = " ".join(p[1:]) if len(p) > 1 else None
            self._irc(ts, "USER", p[0], addl=addl)
            self.user = p[0]
        elif cmd == "JOIN" and p:
            if is_orig or not own:
                keys = p[1].split(",") if len(p) > 1 and is_orig else []
                for i, chan in enumerate(x for x in p[0].split(",") if x):
                    self._irc(ts, "JOIN", chan, addl=keys[i] if i < len(keys) else "", **self._who(is_orig, msg))
        elif cmd == "PART" and p:
            if is_orig or not own:
                for chan in (x for x in p[0].split(",") if x):
                    self._irc(ts, "PART", chan, addl=p[1] if len(p) > 1 else None, **self._who(is_orig, msg))
        elif cmd == "QUIT":
            if is_orig or not own:
                self._irc(ts, "QUIT", p[0] if p else None, **self._who(is_orig, msg))
        elif cmd == "001" and not is_orig and p:
            self._set_nick(p[0])  # the nick the server registered

    def _who(self, is_orig: bool, msg: IrcMessage) -> dict[str, Any]:
        if is_orig:
            return {}
        return {"nick": msg.nick, "user": _prefix_user(msg.prefix)}

    def _irc(self, ts: float, command: str, value: str | None, addl: str | None = None, **kw: Any) -> None:
        rec: dict[str, Any] = {
            "ts": ts,
            "nick": kw.get("nick", self.nick),
            "user": kw.get("user", self.user),
            "command": command,
            "value": value,
            "addl": addl,
            "dcc_file_name": kw.get("dcc_file_name"),
            "dcc_file_size": kw.get("dcc_file_size"),
            "dcc_mime_type": None,
        }
        self.records.append(("irc", rec))

    def _message(self, is_orig: bool, msg: IrcMessage, sender: str | None, targets: str, text: str, ts: float) -> None:
        ctcp = _ctcp(text)
        if ctcp is not None:
            word = ctcp.split(" ", 1)[0].upper()
            if word == "DCC" and msg.command == "PRIVMSG":
                self._dcc(is_orig, msg, sender, targets, ctcp, ts)
                return
            if word != "ACTION":
                return  # CTCP request/reply (VERSION, PING, TIME...): not a message
            text = "/me " + ctcp[7:] if len(ctcp) > 7 else "/me"
        for target in (t for t in targets.split(",") if t):
            channel = target if target.startswith(_CHANNEL_PREFIX) else None
            if channel is None and target[:1] in ("@", "%") and target[1:2] in _CHANNEL_PREFIX:
                channel = target.lstrip("@%+")  # STATUSMSG: @#chan
            self.records.append(chat_record("irc", sender, target, text, is_orig, ts=ts, channel=channel))

    def _dcc(self, is_orig: bool, msg: IrcMessage, sender: str | None, target: str, ctcp: str, ts: float) -> None:
        d = parse_dcc(ctcp)
        if d is None:
            self._weird("irc_bad_dcc", ctcp[:80])
            return
        typ = d["type"]
        if typ not in ("SEND", "CHAT", "TSEND", "TSSEND", "SSEND", "RESUME", "ACCEPT", "XMIT"):
            self._weird("irc_unknown_dcc", typ)
        is_send = typ in ("SEND", "TSEND", "SSEND", "TSSEND")
        who = {} if is_orig else {"nick": msg.nick, "user": _prefix_user(msg.prefix)}
        self._irc(
            ts,
            "DCC",
            target,
            addl=" ".join(x for x in (typ, d["arg"]) if x),
            dcc_file_name=d["arg"] if is_send else None,
            dcc_file_size=d["size"] if is_send else None,
            **who,
        )
        if typ not in ("SEND", "CHAT", "TSEND", "SSEND", "TSSEND"):
            return
        if d["port"] == 0:
            self._weird("irc_passive_dcc", f"{typ} {d['arg']}")  # reverse DCC: no listener announced
            return
        ip = d["ip"]
        if ip in ("0.0.0.0", "::"):
            ip = self.conn.orig_h if is_orig else None
            if ip is None:
                return
        ch = ExpectedChannel(
            resp_h=ip,
            resp_p=d["port"],
            source="IRC_DCC" if is_send else "IRC_DCC_CHAT",
            orig_h=None,
            filename=d["arg"] if is_send else None,
            size=d["size"] if is_send else None,
            direction="resp" if is_send else None,
            created=ts,
            command=typ,
            parent=self.conn,
        )
        offerer_h = self.conn.orig_h if is_orig else None  # the client's own address (NAT)
        if offerer_h is not None and offerer_h != ip:
            ch.alt_resp_h = offerer_h
        ch.meta["dcc_from"] = sender
        ch.meta["dcc_to"] = target
        if len(self.expected_channels) >= MAX_CHANNELS:
            del self.expected_channels[: MAX_CHANNELS // 2]
        self.expected_channels.append(ch)


def _prefix_user(prefix: str | None) -> str | None:
    if not prefix or "!" not in prefix:
        return None
    return prefix.split("!", 1)[1].split("@", 1)[0] or None


class DccChat(StreamAnalyzer):
    """A DCC CHAT connection: plain text lines, each a ``chat`` record (protocol ``irc-dcc``).

    The responder is the offerer (it listened), so its lines are ``from`` the offering nick
    and ``to`` the offer's target; the originator's lines the other way round.
    """

    service = "irc-dcc-chat"

    def __init__(self, conn: ConnInfo, channel: ExpectedChannel | None = None) -> None:
        super().__init__(conn)
        self.channel = channel
        if channel is not None:
            channel.claimed = True
        self._lines = {True: LineReader(MAX_LINE), False: LineReader(MAX_LINE)}

    def _names(self, is_orig: bool) -> tuple[str | None, str | None]:
        offerer = self.channel.meta.get("dcc_from") if self.channel else None
        other = self.channel.meta.get("dcc_to") if self.channel else None
        return (other, offerer) if is_orig else (offerer, other)

    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        for line in self._lines[is_orig].iter(data):
            self._line(is_orig, line, ts)
        self._lines[is_orig].overflows = 0

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        self._lines[is_orig].gap()
        if len(self.weirds) < MAX_WEIRDS:
            self.weirds.append(("irc_dcc_chat_gap", f"{length} bytes"))

    def finish(self, ts: float) -> None:
        for is_orig in (True, False):
            tail = self._lines[is_orig].pending()
            self._lines[is_orig].buf.clear()
            if tail:
                self._line(is_orig, tail, ts)

    def _line(self, is_orig: bool, raw: bytes, ts: float) -> None:
        text = decode_text(raw.strip(b"\r\x00"))
        if not text:
            return
        ctcp = _ctcp(text)
        if ctcp is not None:
            if not ctcp.upper().startswith("ACTION"):
                return
            text = "/me " + ctcp[7:]
        frm, to = self._names(is_orig)
        self.records.append(chat_record("irc-dcc", frm, to, text, is_orig, ts=ts))


ANALYZERS = {"irc": IrcAnalyzer, "irc-dcc-chat": DccChat}
