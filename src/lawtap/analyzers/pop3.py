"""POP3 analyzer (RFC 1939, 2449, 5034): commands, single- and multi-line responses, messages.

Client commands are queued and matched, in order, to the server's responses (pipelining is
allowed by RFC 2449). A ``+OK`` to RETR, TOP, CAPA, and argument-less LIST/UIDL/AUTH is
followed by a multi-line body ending with a ``.`` line; RETR and TOP bodies are dot-unstuffed
and become messages (TOP ones flagged ``partial``). USER and APOP names and the login name in a
SASL AUTH exchange (PLAIN, LOGIN, ...) are kept; PASS arguments and SASL secrets never are.
A ``+OK`` to STLS ends the clear-text part: the analyzer records ``tls=True`` and is ``done``.

Events: one ``pop3`` record per session (user, auth method and outcome, tls, message count),
and per message an ``email`` record, the ``.eml`` FileObject and one per attachment.
"""

from __future__ import annotations

import re
from collections import deque

import pyarrow as pa

from lawtap.analyzers.base import ConnInfo, StreamAnalyzer
from lawtap.analyzers.mail import (
    COMMON,
    EMAIL_SCHEMA,
    MAX_MESSAGE,
    DotBody,
    Lines,
    WeirdLimiter,
    b64,
    message_events,
    sasl_user,
    text,
    unstuff,
)

POP3_SCHEMA = pa.schema(
    COMMON
    + [
        pa.field("user", pa.string()),
        pa.field("auth_method", pa.string()),  # USER, APOP or the SASL mechanism
        pa.field("auth_success", pa.bool_()),
        pa.field("tls", pa.bool_()),  # STLS accepted: the rest of the session is encrypted
        pa.field("messages", pa.int64()),  # RETR/TOP bodies seen
        pa.field("last_reply", pa.string()),
    ]
)

RECORD_SCHEMAS = {"pop3": POP3_SCHEMA, "email": EMAIL_SCHEMA}

KNOWN_COMMANDS = frozenset(
    "USER PASS APOP AUTH STAT LIST RETR DELE NOOP RSET QUIT TOP UIDL CAPA STLS LAST XTND UTF8 LANG".split()
)
_MULTI_ALWAYS = frozenset(("RETR", "TOP", "CAPA"))
_MULTI_NOARG = frozenset(("LIST", "UIDL", "AUTH"))
_OCTETS = re.compile(rb"^\s*([0-9]{1,12})\s+octets", re.I)
IDLE_COMMANDS_LIMIT = 200


class POP3Analyzer(StreamAnalyzer):
    service = "pop3"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self.done = False
        self._cli = Lines()
        self._srv = Lines()
        self._pending: deque[tuple[str, str]] = deque([("<greeting>", "")])
        self._body: DotBody | None = None
        self._body_cmd = ""
        self._body_ts = 0.0
        self._body_size: int | None = None
        self._auth_mech: str | None = None
        self._auth_step = 0
        self._auth_expect = False
        self._unknown = 0
        self._weird = WeirdLimiter()
        self.user: str | None = None
        self.auth_method: str | None = None
        self.auth_success: bool | None = None
        self.tls = False
        self.messages = 0
        self.last_reply: str | None = None
        self._ts0: float | None = None
        self._logged = False
        self._srv_seen = False

    def _w(self, name: str, detail: str = "") -> None:
        if self._weird.allow(name):
            self.weirds.append((name, detail))

    # ------------------------------------------------------------ contract
    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self.done or not data:
            return
        if self._ts0 is None:
            self._ts0 = ts
        try:
            if is_orig:
                self._cli.push(data)
                self._run_client(ts)
            else:
                self._srv_seen = True
                self._feed_server(data, ts)
        except Exception as exc:  # defensive: a bug must not stop the pipeline
            self._w("pop3_analyzer_error", f"{type(exc).__name__}: {exc}")
            self._end(ts)

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        if self.done:
            return
        self._w("pop3_content_gap", f"{'orig' if is_orig else 'resp'} {length}")
        if is_orig:
            self._cli.clear()
        elif self._body is not None:
            self._body.gap(length)
        else:
            self._srv.clear()

    def finish(self, ts: float) -> None:
        if self._logged:
            return
        try:
            if not self.done and self._body is not None and self._body.buf:
                self._w("pop3_unterminated_response", f"{len(self._body.buf)} bytes")
                self._body_done(ts, partial=True)
        except Exception as exc:
            self._w("pop3_analyzer_error", f"{type(exc).__name__}: {exc}")
        self._end(ts)

    def _end(self, ts: float) -> None:
        self.done = True
        if self._logged:
            return
        self._logged = True
        if self.user is None and self.auth_method is None and not self.tls and not self.messages and self.last_reply is None:
            return
        self.records.append(
            (
                "pop3",
                {
                    "ts": self._ts0 if self._ts0 is not None else ts,
                    "user": self.user,
                    "auth_method": self.auth_method,
                    "auth_success": self.auth_success,
                    "tls": self.tls,
                    "messages": self.messages,
                    "last_reply": self.last_reply,
                },
            )
        )

    # ------------------------------------------------------------ client
    def _run_client(self, ts: float) -> None:
        while not self.done:
            line = self._cli.pop()
            if line is None:
                return
            if self._cli.overflow:
                self._cli.overflow = False
                self._w("pop3_line_too_long", "client")
                continue
            self._client_line(line.strip(), ts)

    def _client_line(self, line: bytes, ts: float) -> None:
        if self._auth_expect:
            self._auth_expect = False
            self._auth_response(line)
            return
        if not line:
            return
        if not self._srv_seen and self._pending and self._pending[0][0] == "<greeting>":
            self._pending.popleft()  # the client speaks first: the greeting was not captured
        parts = line.split(None, 1)
        verb = text(parts[0]).upper()
        arg = text(parts[1]) if len(parts) > 1 else ""
        if verb not in KNOWN_COMMANDS:
            if self._pending and self._pending[-1][0] == "AUTH" and self._auth_mech and b64(line) is not None:
                # a SASL response that arrived before the server's "+ " (reordered capture)
                self._auth_response(line)
                return
            self._unknown += 1
            self._w("pop3_unknown_command", verb[:32])
            if self._unknown > IDLE_COMMANDS_LIMIT:
                self._w("pop3_gave_up", "too many unknown commands")
                self._end(ts)
                return
        else:
            self._unknown = 0
        if verb == "PASS":
            arg = ""  # the secret is never kept, not even in the queue
        self._pending.append((verb, arg))
        if len(self._pending) > 10000:
            self._pending.popleft()
        if verb == "USER":
            self.user = arg.strip() or self.user
            self.auth_method = "USER"
        elif verb == "APOP":
            name = arg.split(None, 1)[0] if arg.split() else ""
            if name:
                self.user = name
            self.auth_method = "APOP"
        elif verb == "AUTH" and arg.strip():
            aparts = arg.split(None, 1)
            self._auth_mech = aparts[0].upper()
            self._auth_step = 0
            self.auth_method = self._auth_mech
            if len(aparts) > 1:
                self._auth_response(aparts[1].strip().encode("latin-1", "replace"))

    def _auth_response(self, line: bytes) -> None:
        step = self._auth_step
        self._auth_step += 1
        if line == b"*" or not self._auth_mech:
            return
        if step == 0 and line != b"=":
            user = sasl_user(self._auth_mech, b64(line))
            if user:
                self.user = user
        # later steps (LOGIN password, digests) are dropped unread

    # ------------------------------------------------------------ server
    def _feed_server(self, data: bytes, ts: float) -> None:
        if self._body is not None and not self._srv.buf:
            rest = self._body.push(data)
            if rest is None:
                return
            self._body_done(ts)
            data = rest
        self._srv.push(data)
        self._run_server(ts)

    def _run_server(self, ts: float) -> None:
        while not self.done:
            if self._body is not None:
                buf = bytes(self._srv.buf)
                self._srv.buf.clear()
                rest = self._body.push(buf)
                if rest is None:
                    return
                self._body_done(ts)
                self._srv.push(rest)
                continue
            line = self._srv.pop()
            if line is None:
                return
            if self._srv.overflow:
                self._srv.overflow = False
                self._w("pop3_line_too_long", "server")
                continue
            self._server_line(line, ts)

    def _server_line(self, line: bytes, ts: float) -> None:
        head = line[:4].upper()
        if head.startswith(b"+OK") or head == b"-ERR":
            ok = head.startswith(b"+OK")
            self.last_reply = text(line[:200]).strip()
            cmd, arg = self._pending.popleft() if self._pending else ("", "")
            if cmd == "AUTH" or (cmd == "PASS") or (cmd == "APOP"):
                if cmd != "AUTH" or arg.strip():
                    self.auth_success = ok
                self._auth_expect = False
                if cmd == "AUTH":
                    self._auth_mech = None
            if not ok:
                return
            if cmd == "STLS":
                self.tls = True
                self._cli.clear()
                self._srv.clear()
                self._end(ts)
                return
            if cmd in _MULTI_ALWAYS or (cmd in _MULTI_NOARG and not arg.strip()):
                self._body = DotBody()
                self._body_cmd = cmd
                self._body_ts = ts
                m = _OCTETS.match(line[3:])
                self._body_size = int(m.group(1)) if m else None
            return
        if line.startswith(b"+"):  # "+ " SASL continuation
            if self._pending and self._pending[0][0] == "AUTH":
                self._auth_expect = True
            return
        if line.strip():
            self._w("pop3_bad_response", text(line[:64]))

    def _body_done(self, ts: float, partial: bool = False) -> None:
        body = self._body
        assert body is not None
        self._body = None
        if self._body_cmd not in ("RETR", "TOP"):
            return
        if body.truncated:
            self._w("pop3_message_truncated", f"> {MAX_MESSAGE} bytes")
        raw = unstuff(body.raw)
        self.messages += 1
        rec, files, defects = message_events(
            protocol="pop3",
            raw=raw,
            ts=self._body_ts or ts,
            is_orig=False,
            index=self.messages,
            user=self.user,
            partial=partial or body.truncated or self._body_cmd == "TOP",
            missing_bytes=body.missing,
        )
        self.records.append(("email", rec))
        self.files.extend(files)
        for d in defects[:3]:
            self._w("mime_parse_error", d)


ANALYZERS = {"pop3": POP3Analyzer}
