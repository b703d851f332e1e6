"""SMTP analyzer: a command/reply state machine over both directions of one connection.

Handles PIPELINING (replies are matched to a queue of pending commands), DATA (client bytes are
held until the server's reply to DATA: 354 starts the message, anything else resumes command
parsing; the message ends at CRLF.CRLF and is dot-unstuffed), BDAT chunks (RFC 3030, up to
``LAST``), RSET, any number of transactions per session, STARTTLS (after the 220 reply the rest
is TLS: the transaction record gets ``tls=True`` and the analyzer is ``done``), and AUTH PLAIN /
LOGIN / CRAM-MD5 / XOAUTH2 (the login name is decoded; passwords are never kept).

Events:

* ``smtp`` record per transaction, with Zeek's smtp.log semantics (logged at the reply to the
  end of the message, at the next MAIL FROM, or when the connection ends; raw, unfolded header
  values; ``path`` from the Received headers; ``is_webmail`` from the User-Agent);
* ``email`` record per message (see :mod:`lawtap.analyzers.mail`), the ``.eml`` FileObject and
  one FileObject per attachment.

A message's bytes are exactly what follows the 354 reply up to and including the CRLF before
the terminating ``.`` line, dot-unstuffed (Zeek's message/rfc822 file; tshark's IMF export
differs: it keeps the stuffing and drops a final empty line).
"""

from __future__ import annotations

import re
from collections import deque
from typing import Any

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
    extract_addrs,
    message_events,
    parse_message,
    sasl_user,
    text,
    zeek_smtp_fields,
)

SMTP_SCHEMA = pa.schema(
    COMMON
    + [
        pa.field("trans_depth", pa.int64()),
        pa.field("helo", pa.string()),
        pa.field("mailfrom", pa.string()),
        pa.field("rcptto", pa.list_(pa.string())),
        pa.field("date", pa.string()),
        pa.field("from", pa.string()),
        pa.field("to", pa.list_(pa.string())),
        pa.field("cc", pa.list_(pa.string())),
        pa.field("reply_to", pa.string()),
        pa.field("msg_id", pa.string()),
        pa.field("in_reply_to", pa.string()),
        pa.field("subject", pa.string()),
        pa.field("x_originating_ip", pa.string()),
        pa.field("first_received", pa.string()),
        pa.field("second_received", pa.string()),
        pa.field("last_reply", pa.string()),
        pa.field("path", pa.list_(pa.string())),
        pa.field("user_agent", pa.string()),
        pa.field("tls", pa.bool_()),
        pa.field("is_webmail", pa.bool_()),
    ]
)

RECORD_SCHEMAS = {"smtp": SMTP_SCHEMA, "email": EMAIL_SCHEMA}

KNOWN_COMMANDS = frozenset(
    "HELO EHLO LHLO MAIL RCPT DATA BDAT RSET VRFY EXPN HELP NOOP QUIT STARTTLS AUTH TURN ETRN "
    "ATRN XCLIENT XFORWARD SAML SOML SEND XEXCH50 X-EXPS X-LINK2STATE XUSR".split()
)
_REPLY = re.compile(rb"^([0-9]{3})(?:([ -])(.*))?$", re.S)
_BDAT = re.compile(rb"^\s*([0-9]{1,12})(\s+LAST)?\s*$", re.I)

# client modes
CMD, HOLD, DATA, BDAT, STOP = range(5)
HOLD_LIMIT = 65536  # client bytes held while waiting for the reply to DATA/STARTTLS
MAX_PENDING = 10000  # commands awaiting a reply (the oldest are dropped beyond)
IDLE_COMMANDS_LIMIT = 200  # consecutive unknown commands before giving up


class SMTPAnalyzer(StreamAnalyzer):
    service = "smtp"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self.done = False
        self._cli = Lines()
        self._srv = Lines()
        self._mode = CMD
        self._pending: deque[str] = deque(["<greeting>"])
        self._hold_for: str | None = None  # DATA or STARTTLS while in HOLD
        self._body: DotBody | None = None
        self._bdat = bytearray()
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_missing = 0
        self._msg_ts = 0.0
        self._auth_mech: str | None = None
        self._auth_step = 0
        self._auth_expect = False
        self._unknown = 0
        self._weird = WeirdLimiter()
        self._ts = 0.0
        self._srv_seen = False
        # session
        self.helo: str | None = None
        self.user: str | None = None
        self.tls = False
        self.messages = 0
        # envelope of the current transaction
        self._mailfrom: str | None = None
        self._rcptto: list[str] = []
        # Zeek-style transaction record
        self._tx: dict[str, Any] | None = None
        self._tx_activity = False

    # ------------------------------------------------------------ helpers
    def _w(self, name: str, detail: str = "") -> None:
        if self._weird.allow(name):
            self.weirds.append((name, detail))

    def _new_tx(self, ts: float) -> dict[str, Any]:
        self._tx = {
            "ts": ts,
            "trans_depth": self.messages + 1,
            "helo": self.helo,
            "path": [self.conn.resp_h, self.conn.orig_h],
            "tls": False,
            "is_webmail": False,
        }
        self._tx_activity = False
        return self._tx

    def _tx_get(self, ts: float) -> dict[str, Any]:
        return self._tx if self._tx is not None else self._new_tx(ts)

    def _flush_tx(self, ts: float, new: bool = True) -> None:
        if self._tx is not None and self._tx_activity:
            self.records.append(("smtp", self._tx))
            self._tx = None
            if new:
                self._new_tx(ts)

    # ------------------------------------------------------------ contract
    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self.done or not data:
            return
        self._ts = ts
        try:
            if is_orig:
                self._feed_client(data, ts)
            else:
                self._srv_seen = True
                self._srv.push(data)
                self._drain_server(ts)
        except Exception as exc:  # defensive: a bug must not stop the pipeline
            self._w("smtp_analyzer_error", f"{type(exc).__name__}: {exc}")
            self.done = True

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        if self.done:
            return
        self._w("smtp_content_gap", f"{'orig' if is_orig else 'resp'} {length}")
        if is_orig:
            if self._mode == DATA and self._body is not None:
                self._body.gap(length)
            elif self._mode == BDAT:
                n = min(length, self._bdat_left)
                self._bdat_missing += n
                self._bdat_left -= n
                if self._bdat_left == 0:
                    self._bdat_chunk_done(ts)
            else:
                self._cli.clear()
        else:
            self._srv.clear()

    def finish(self, ts: float) -> None:
        if self.done and self._tx is None:
            return
        try:
            if not self.done:
                if self._mode == HOLD and self._hold_for == "DATA" and self._cli.buf:
                    # never saw the reply to DATA: assume the message followed (one-sided capture)
                    self._w("smtp_data_reply_missing", "")
                    self._start_data(ts)
                    self._run_client(ts)
                if self._mode == DATA and self._body is not None and self._body.buf:
                    self._w("smtp_unterminated_data", f"{len(self._body.buf)} bytes")
                    self._message(self._body.unstuffed, ts, partial=True, missing=self._body.missing)
                    self._body = None
                elif self._mode == BDAT and self._bdat:
                    self._message(bytes(self._bdat), ts, partial=True, missing=self._bdat_missing)
                    self._bdat = bytearray()
            self._flush_tx(ts, new=False)
        except Exception as exc:
            self._w("smtp_analyzer_error", f"{type(exc).__name__}: {exc}")
        self._tx = None
        self.done = True

    # ------------------------------------------------------------ client side
    def _feed_client(self, data: bytes, ts: float) -> None:
        if self._mode == DATA and self._body is not None and not self._cli.buf:
            rest = self._body.push(data)
            if rest is None:
                return
            self._data_done(ts)
            data = rest
        self._cli.push(data)
        self._run_client(ts)

    def _run_client(self, ts: float) -> None:
        while not self.done:
            mode = self._mode
            if mode == HOLD:
                if len(self._cli.buf) > HOLD_LIMIT:
                    if self._hold_for == "DATA":
                        self._w("smtp_data_reply_missing", "client sent data without a 354 reply")
                        self._start_data(ts)
                        continue
                    # no reply to STARTTLS but the client went on: assume the handshake started
                    self._w("smtp_starttls_reply_missing", "")
                    self.tls = True
                    self._tx_get(ts)["tls"] = True
                    self._tx_activity = True
                    self._cli.clear()
                    self._flush_tx(ts, new=False)
                    self.done = True
                return
            if mode == DATA:
                assert self._body is not None
                buf = bytes(self._cli.buf)
                self._cli.buf.clear()
                rest = self._body.push(buf)
                if rest is None:
                    return
                self._data_done(ts)
                self._cli.push(rest)
                continue
            if mode == BDAT:
                if not self._cli.buf:
                    return
                chunk = self._cli.take(self._bdat_left)
                self._bdat_left -= len(chunk)
                if len(self._bdat) < MAX_MESSAGE:
                    self._bdat += chunk[: MAX_MESSAGE - len(self._bdat)]
                if self._bdat_left == 0:
                    self._bdat_chunk_done(ts)
                continue
            line = self._cli.pop()
            if line is None:
                return
            if self._cli.overflow:
                self._cli.overflow = False
                self._w("smtp_line_too_long", "client")
                continue
            self._client_line(line, ts)

    def _client_line(self, line: bytes, ts: float) -> None:
        if self._auth_expect:
            self._auth_expect = False
            self._auth_response(line.strip())
            return
        parts = line.strip().split(None, 1)
        if not parts:
            return
        if not self._srv_seen and self._pending and self._pending[0] == "<greeting>":
            # the client speaks first: the server's greeting was not captured
            self._pending.popleft()
        verb = text(parts[0]).upper()
        arg = text(parts[1]) if len(parts) > 1 else ""
        if verb not in KNOWN_COMMANDS and not verb.startswith("X"):
            self._unknown += 1
            self._w("smtp_unknown_command", verb[:32])
            if self._unknown > IDLE_COMMANDS_LIMIT:
                self._w("smtp_gave_up", "too many unknown commands")
                self.done = True
                return
        else:
            self._unknown = 0
        self._pending.append("BDAT_LAST" if verb == "BDAT" and line.rstrip().upper().endswith(b"LAST") else verb)
        if len(self._pending) > MAX_PENDING:
            self._pending.popleft()
        tx = self._tx_get(ts)
        if verb in ("HELO", "EHLO", "LHLO"):
            self.helo = arg
            tx["helo"] = arg
        elif verb == "MAIL" and arg[:5].upper() == "FROM:":
            self._flush_tx(ts)
            tx = self._tx_get(ts)
            addrs = extract_addrs(arg)
            self._mailfrom = addrs[0] if addrs else None
            self._rcptto = []
            if self._mailfrom:
                tx["mailfrom"] = self._mailfrom
            self._tx_activity = True
        elif verb == "RCPT" and arg[:3].upper() == "TO:":
            for a in extract_addrs(arg):
                a = a.replace("ORCPT=rfc822;", "").replace("ORCPT=rfc822", "")
                if a not in self._rcptto:
                    self._rcptto.append(a)
                rl = tx.setdefault("rcptto", [])
                if a not in rl:
                    rl.append(a)
            self._tx_activity = True
        elif verb == "DATA":
            self._mode = HOLD
            self._hold_for = "DATA"
        elif verb == "BDAT":
            m = _BDAT.match(parts[1] if len(parts) > 1 else b"")
            if m is None:
                self._w("smtp_bad_bdat", arg[:64])
                return
            size = int(m.group(1))
            if not self._bdat:
                self._msg_ts = ts
            self._bdat_last = m.group(2) is not None
            self._bdat_left = size
            if size == 0:
                self._bdat_chunk_done(ts)
            else:
                self._mode = BDAT
        elif verb == "RSET":
            self._mailfrom = None
            self._rcptto = []
            self._bdat = bytearray()
        elif verb == "STARTTLS":
            self._mode = HOLD
            self._hold_for = "STARTTLS"
        elif verb == "AUTH":
            aparts = arg.split(None, 1)
            self._auth_mech = aparts[0].upper() if aparts else None
            self._auth_step = 0
            if len(aparts) > 1 and aparts[1].strip() != "=":
                self._auth_response(aparts[1].strip().encode("latin-1", "replace"))
            elif len(aparts) > 1:  # "=": an empty initial response
                self._auth_step += 1

    def _auth_response(self, line: bytes) -> None:
        """One SASL client response; only the login name is ever kept."""
        step = self._auth_step
        self._auth_step += 1
        if line == b"*" or not self._auth_mech:
            self._auth_mech = None
            return
        if step == 0:  # PLAIN: the credentials; LOGIN: the user name; CRAM-MD5: "user digest"
            user = sasl_user(self._auth_mech, b64(line))
            if user:
                self.user = user
        # later responses (LOGIN password...) are dropped here and never stored

    def _start_data(self, ts: float) -> None:
        self._mode = DATA
        self._hold_for = None
        self._body = DotBody()
        self._msg_ts = ts

    def _data_done(self, ts: float) -> None:
        body = self._body
        assert body is not None
        self._body = None
        self._mode = CMD
        self._pending.append(".")
        if body.truncated:
            self._w("smtp_message_truncated", f"> {MAX_MESSAGE} bytes")
        self._message(body.unstuffed, ts, partial=body.truncated, missing=body.missing)

    def _bdat_chunk_done(self, ts: float) -> None:
        self._mode = CMD
        if self._bdat_last:
            raw = bytes(self._bdat)
            self._bdat = bytearray()
            missing, self._bdat_missing = self._bdat_missing, 0
            self._bdat_last = False
            self._message(raw, ts, partial=False, missing=missing)

    def _message(self, raw: bytes, ts: float, partial: bool, missing: int) -> None:
        self.messages += 1
        pm = parse_message(raw)
        rec, files, defects = message_events(
            protocol="smtp",
            raw=raw,
            ts=self._msg_ts or ts,
            is_orig=True,
            index=self.messages,
            user=self.user,
            mailfrom=self._mailfrom,
            rcptto=self._rcptto,
            partial=partial,
            missing_bytes=missing,
            parsed=pm,
        )
        self.records.append(("email", rec))
        self.files.extend(files)
        for d in defects[:3]:
            self._w("mime_parse_error", d)
        tx = self._tx_get(ts)
        zf = zeek_smtp_fields(pm, self.conn.resp_h, self.conn.orig_h)
        tx.update({k: v for k, v in zf.items() if v is not None})
        self._tx_activity = True
        self._mailfrom = None
        self._rcptto = []
        self._msg_ts = 0.0

    # ------------------------------------------------------------ server side
    def _drain_server(self, ts: float) -> None:
        while not self.done:
            line = self._srv.pop()
            if line is None:
                return
            if self._srv.overflow:
                self._srv.overflow = False
                self._w("smtp_line_too_long", "server")
                continue
            m = _REPLY.match(line)
            if m is None:
                if line.strip():
                    self._w("smtp_bad_reply", text(line[:64]))
                continue
            code = int(m.group(1))
            cont = m.group(2) == b"-"
            msg = text(m.group(3) or b"").strip()
            tx = self._tx_get(ts)
            tx["last_reply"] = f"{code} {msg}"
            if cont:
                continue
            self._reply(code, msg, ts)

    def _reply(self, code: int, msg: str, ts: float) -> None:
        cmd = self._pending[0] if self._pending else None
        if cmd == "AUTH" and code == 334:
            self._auth_expect = True
            return  # intermediate: AUTH stays pending
        if self._pending:
            self._pending.popleft()
        if cmd is None:
            if code != 220 and code != 421:
                self._w("smtp_unmatched_reply", str(code))
            return
        if cmd == "AUTH":
            self._auth_expect = False
            self._auth_mech = None
        elif cmd == "DATA":
            if self._mode == HOLD and self._hold_for == "DATA":
                if code == 354:
                    self._start_data(ts)
                else:
                    self._mode = CMD
                    self._hold_for = None
                self._run_client(ts)
        elif cmd == "STARTTLS":
            if self._mode == HOLD and self._hold_for == "STARTTLS":
                self._hold_for = None
                if code == 220:
                    self.tls = True
                    tx = self._tx_get(ts)
                    tx["tls"] = True
                    self._tx_activity = True
                    self._mode = STOP
                    self._cli.clear()
                    self._srv.clear()
                    self._flush_tx(ts, new=False)
                    self.done = True
                    return
                self._mode = CMD
                self._run_client(ts)
        elif cmd in (".", "BDAT_LAST"):
            # the reply to the end of a message logs the transaction (Zeek's smtp_message)
            self._flush_tx(ts)


ANALYZERS = {"smtp": SMTPAnalyzer}
