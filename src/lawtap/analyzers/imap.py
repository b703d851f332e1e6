"""IMAP4rev1 analyzer (RFC 3501/9051): tagged commands, untagged data, literals, messages.

Both directions are parsed into *responses* / *commands*: a line, and when it ends with a
literal announcement ``{n}`` (or ``{n+}``), exactly ``n`` following bytes (which may span any
number of ``feed`` calls, and gaps are accounted byte-exactly) and then the rest of the line.

* ``* n FETCH`` responses: a literal named ``BODY[]`` or ``RFC822`` is a whole message;
  ``BODY[HEADER]``, ``BODY[HEADER.FIELDS (...)]`` and ``RFC822.HEADER`` are header-only
  messages and ``BODY[]<origin>`` a partial one (``partial=True``); a header and a
  ``BODY[TEXT]``/``RFC822.TEXT`` literal of the same FETCH response are joined into one whole
  message. ``BODY[<section>]`` part fetches are not messages and are ignored.
* ``APPEND`` literals (uploaded by the client) are messages too (``is_orig=True``).
* ``LOGIN`` keeps the user name (atom, quoted string or literal), never the password;
  ``AUTHENTICATE`` keeps the login name of PLAIN/LOGIN/XOAUTH2/... SASL exchanges only.
* ``STARTTLS`` answered ``OK``: the rest is TLS, ``tls=True`` and the analyzer is ``done``.
  ``COMPRESS DEFLATE`` answered ``OK``: both directions are inflated from then on.

Events: one ``imap`` record per session and, per message, an ``email`` record, the ``.eml``
FileObject and one FileObject per attachment.
"""

from __future__ import annotations

import re
import zlib

import pyarrow as pa

from lawtap.analyzers.base import ConnInfo, StreamAnalyzer
from lawtap.analyzers.mail import (
    COMMON,
    EMAIL_SCHEMA,
    MAX_LINE,
    MAX_MESSAGE,
    Lines,
    WeirdLimiter,
    b64,
    message_events,
    sasl_user,
    text,
)

IMAP_SCHEMA = pa.schema(
    COMMON
    + [
        pa.field("user", pa.string()),
        pa.field("auth_method", pa.string()),  # LOGIN or the SASL mechanism
        pa.field("auth_success", pa.bool_()),
        pa.field("tls", pa.bool_()),  # STARTTLS accepted: the rest is encrypted
        pa.field("compressed", pa.bool_()),  # COMPRESS=DEFLATE in use
        pa.field("mailboxes", pa.list_(pa.string())),  # SELECT/EXAMINE targets, in order
        pa.field("messages", pa.int64()),  # messages (whole or partial) seen
    ]
)

RECORD_SCHEMAS = {"imap": IMAP_SCHEMA, "email": EMAIL_SCHEMA}

_LITERAL = re.compile(rb"~?\{([0-9]{1,12})(\+|-)?\}$")
_ITEM = re.compile(
    rb"((?:BODY|BINARY)(?:\.PEEK)?\[([^\]]*)\](<[0-9]+>)?|RFC822(?:\.HEADER|\.TEXT|\.SIZE)?)\s*$", re.I
)
_FETCH = re.compile(rb"^\*\s+[0-9]+\s+FETCH\b", re.I)
_TAGGED = re.compile(rb"^([^\s*+]+)\s+(OK|NO|BAD)\b", re.I)
MAX_INFLATE = 256 * 1024 * 1024  # decompressed bytes per direction


def _astring(frags: list, pos: tuple[int, int]) -> tuple[bytes | None, tuple[int, int]]:
    """Next IMAP astring from ``frags`` (list of bytes/literal tuples) starting at ``pos``."""
    fi, off = pos
    while fi < len(frags):
        f = frags[fi]
        if isinstance(f, tuple):  # ("lit", data)
            return f[1], (fi + 1, 0)
        while off < len(f) and f[off : off + 1] in (b" ", b"\t"):
            off += 1
        if off >= len(f):
            fi, off = fi + 1, 0
            continue
        if f[off : off + 1] == b'"':
            out = bytearray()
            i = off + 1
            while i < len(f):
                c = f[i : i + 1]
                if c == b"\\" and i + 1 < len(f):
                    out += f[i + 1 : i + 2]
                    i += 2
                    continue
                if c == b'"':
                    return bytes(out), (fi, i + 1)
                out += c
                i += 1
            return bytes(out), (fi, len(f))
        end = off
        while end < len(f) and f[end : end + 1] not in (b" ", b"\t", b"{"):
            end += 1
        if f[end : end + 1] == b"{":  # literal announcement: the literal follows
            fi, off = fi + 1, 0
            continue
        return f[off:end], (fi, end)
    return None, (fi, off)


def _message_item(name: bytes) -> bool:
    m = _ITEM.search(name)
    if m is None:
        return False
    item = m.group(1).upper()
    if item.startswith(b"RFC822"):
        return not item.endswith(b".SIZE")
    section = (m.group(2) or b"").upper().strip()
    return item.startswith(b"BODY") and (section in (b"", b"TEXT") or section.startswith(b"HEADER"))


def _keep_server(first: bytes, name: bytes, size: int) -> bool:
    """Only literals that carry (part of) a message are kept; part fetches, ENVELOPE strings..."""
    return _message_item(name)


def _keep_client(first: bytes, name: bytes, size: int) -> bool:
    """APPEND messages and short literals (a LOGIN user name) are kept."""
    return size <= 65536 or b" APPEND " in first.upper()[:64]


class _Reader:
    """Splits one direction into items: lists of line fragments and literals."""

    __slots__ = (
        "lines", "frags", "lit_left", "lit", "lit_missing", "lit_total", "lit_name", "lit_ts", "lit_keep", "ts",
        "on_item", "weird", "keep",
    )

    def __init__(self, on_item, weird, keep) -> None:
        self.lines = Lines()
        self.frags: list = []  # bytes (line text) and ("lit", data, missing, total, name)
        self.lit_left = 0
        self.lit: bytearray | None = None
        self.lit_missing = 0
        self.lit_total = 0
        self.lit_name = b""
        self.lit_ts = 0.0
        self.lit_keep = True
        self.ts = 0.0
        self.on_item = on_item
        self.weird = weird
        self.keep = keep  # (first fragment, text before the literal, size) -> store its bytes?

    def push(self, data: bytes) -> None:
        self.lines.push(data)

    def gap(self, n: int) -> None:
        if self.lit is not None and self.lit_left > 0:
            k = min(n, self.lit_left)
            self.lit_left -= k
            self.lit_missing += k
            n -= k
            if self.lit_left == 0:
                self._lit_done()
            if n == 0:
                return
        self.lines.clear()
        self.frags = []
        self.lit = None
        self.lit_left = 0

    def run(self, stop) -> None:
        while not stop():
            if self.lit is not None:
                if not self.lines.buf:
                    return
                chunk = self.lines.take(self.lit_left)
                self.lit_left -= len(chunk)
                room = MAX_MESSAGE - len(self.lit) if self.lit_keep else 0
                if room > 0:
                    self.lit += chunk[:room]
                if self.lit_left == 0:
                    self._lit_done()
                continue
            line = self.lines.pop()
            if line is None:
                return
            if self.lines.overflow:
                self.lines.overflow = False
                self.weird("imap_line_too_long", "")
                self.frags = []
                continue
            m = _LITERAL.search(line)
            if m is not None:
                n = int(m.group(1))
                self.frags.append(line)
                self.lit = bytearray()
                self.lit_left = n
                self.lit_total = n
                self.lit_missing = 0
                self.lit_name = line[: m.start()]
                self.lit_ts = self.ts
                first = self.frags[0] if isinstance(self.frags[0], bytes) else b""
                self.lit_keep = self.keep(first, self.lit_name, n)
                if n == 0:
                    self._lit_done()
                continue
            self.frags.append(line)
            frags, self.frags = self.frags, []
            self.on_item(frags)

    def _lit_done(self) -> None:
        data = bytes(self.lit or b"")
        self.frags.append(("lit", data, self.lit_missing, self.lit_total, self.lit_name, self.lit_ts))
        self.lit = None
        self.lit_left = 0
        if sum(len(f) if isinstance(f, bytes) else 0 for f in self.frags) > MAX_LINE * 4:
            self.frags = self.frags[-2:]


class IMAPAnalyzer(StreamAnalyzer):
    service = "imap"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self.done = False
        self._weird = WeirdLimiter()
        self._cli = _Reader(self._client_item, self._w, _keep_client)
        self._srv = _Reader(self._server_item, self._w, _keep_server)
        self._tags: dict[bytes, str] = {}
        self._auth_tag: bytes | None = None
        self._auth_mech: str | None = None
        self._auth_step = 0
        self._inflate: dict[bool, zlib._Decompress | None] = {True: None, False: None}
        self._inflated = {True: 0, False: 0}
        self._compress_tag: bytes | None = None
        self._ts = 0.0
        self._ts0: float | None = None
        self._logged = False
        self.user: str | None = None
        self.auth_method: str | None = None
        self.auth_success: bool | None = None
        self.tls = False
        self.compressed = False
        self.mailboxes: list[str] = []
        self.messages = 0

    def _w(self, name: str, detail: str = "") -> None:
        if self._weird.allow(name):
            self.weirds.append((name, detail))

    # ------------------------------------------------------------ contract
    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self.done or not data:
            return
        self._ts = ts
        if self._ts0 is None:
            self._ts0 = ts
        try:
            data = self._maybe_inflate(is_orig, data)
            if data is None:
                return
            r = self._cli if is_orig else self._srv
            r.ts = ts
            r.push(data)
            r.run(lambda: self.done)
        except Exception as exc:  # defensive: a bug must not stop the pipeline
            self._w("imap_analyzer_error", f"{type(exc).__name__}: {exc}")
            self._end(ts)

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        if self.done:
            return
        self._w("imap_content_gap", f"{'orig' if is_orig else 'resp'} {length}")
        if self._inflate[is_orig] is not None:
            self._w("imap_compressed_gap", "cannot inflate past a gap")
            self._end(ts)
            return
        (self._cli if is_orig else self._srv).gap(length)
        # a literal that just completed through the gap may have finished an item
        try:
            (self._cli if is_orig else self._srv).run(lambda: self.done)
        except Exception as exc:
            self._w("imap_analyzer_error", f"{type(exc).__name__}: {exc}")
            self._end(ts)

    def finish(self, ts: float) -> None:
        if self._logged:
            return
        try:
            if not self.done:
                # an unfinished FETCH response whose message literal is complete (or partial)
                for r, is_orig in ((self._srv, False), (self._cli, True)):
                    frags = list(r.frags)
                    if r.lit is not None and len(r.lit):
                        frags.append(("lit", bytes(r.lit), r.lit_missing + r.lit_left, r.lit_total, r.lit_name, r.lit_ts))
                    if frags and any(isinstance(f, tuple) for f in frags):
                        self._w("imap_unterminated_item", "")
                        (self._client_item if is_orig else self._server_item)(frags, final=True)
        except Exception as exc:
            self._w("imap_analyzer_error", f"{type(exc).__name__}: {exc}")
        self._end(ts)

    def _end(self, ts: float) -> None:
        self.done = True
        if self._logged:
            return
        self._logged = True
        if self.user is None and self.auth_method is None and not self.tls and not self.messages and not self.mailboxes:
            return
        self.records.append(
            (
                "imap",
                {
                    "ts": self._ts0 if self._ts0 is not None else ts,
                    "user": self.user,
                    "auth_method": self.auth_method,
                    "auth_success": self.auth_success,
                    "tls": self.tls,
                    "compressed": self.compressed,
                    "mailboxes": self.mailboxes,
                    "messages": self.messages,
                },
            )
        )

    def _maybe_inflate(self, is_orig: bool, data: bytes) -> bytes | None:
        d = self._inflate[is_orig]
        if d is None:
            return data
        try:
            out = d.decompress(data, MAX_INFLATE - self._inflated[is_orig])
        except zlib.error as exc:
            self._w("imap_inflate_error", str(exc))
            self._end(self._ts)
            return None
        self._inflated[is_orig] += len(out)
        if self._inflated[is_orig] >= MAX_INFLATE:
            self._w("imap_inflate_limit", "")
            self._end(self._ts)
            return None
        return out

    # ------------------------------------------------------------ client
    def _client_item(self, frags: list, final: bool = False) -> None:
        first = frags[0] if frags and isinstance(frags[0], bytes) else b""
        if self._auth_tag is not None and not final:
            # SASL response lines until the tagged completion
            line = first.strip()
            step = self._auth_step
            self._auth_step += 1
            if line == b"*":
                return
            if step == 0 and self._auth_mech:
                user = sasl_user(self._auth_mech, b64(line))
                if user:
                    self.user = user
            return
        parts = first.split(None, 2)
        if len(parts) < 2:
            if first.strip().upper() != b"DONE" and first.strip():
                self._w("imap_bad_command", text(first[:64]))
            return
        tag = parts[0]
        verb = text(parts[1]).upper()
        if verb == "UID" and len(parts) > 2:
            sub = parts[2].split(None, 1)
            verb = "UID " + text(sub[0]).upper() if sub else verb
        if len(self._tags) > 1000:
            self._tags.clear()
        self._tags[tag] = verb
        rest_frags = [parts[2] if len(parts) > 2 else b""] + frags[1:]
        if verb == "LOGIN":
            user, _ = _astring(rest_frags, (0, 0))
            if user is not None:
                self.user = text(user)
            self.auth_method = "LOGIN"
            # the password (next astring) is deliberately not read
        elif verb == "AUTHENTICATE":
            aparts = (parts[2] if len(parts) > 2 else b"").split()
            self._auth_mech = text(aparts[0]).upper() if aparts else None
            self._auth_step = 0
            self._auth_tag = tag
            self.auth_method = self._auth_mech
            if len(aparts) > 1:  # SASL-IR initial response
                self._auth_step = 1
                if aparts[1] != b"=":
                    user = sasl_user(self._auth_mech or "", b64(aparts[1]))
                    if user:
                        self.user = user
        elif verb in ("SELECT", "EXAMINE"):
            box, _ = _astring(rest_frags, (0, 0))
            if box is not None:
                name = text(box)
                if name not in self.mailboxes and len(self.mailboxes) < 1000:
                    self.mailboxes.append(name)
        elif verb == "COMPRESS":
            self._compress_tag = tag
        elif verb == "APPEND":
            lits = [f for f in frags if isinstance(f, tuple)]
            if lits:
                lit = lits[-1]
                self._message(lit[1], is_orig=True, partial=final or lit[2] > 0, missing=lit[2], total=lit[3], ts=lit[5])

    # ------------------------------------------------------------ server
    def _server_item(self, frags: list, final: bool = False) -> None:
        first = frags[0] if frags and isinstance(frags[0], bytes) else b""
        if first.startswith(b"+"):
            return  # continuation request (SASL challenge or literal go-ahead)
        if first.startswith(b"*"):
            if _FETCH.match(first) and len(frags) > 1:
                self._fetch(frags, final)
            return
        m = _TAGGED.match(first)
        if m is None:
            if first.strip():
                self._w("imap_bad_response", text(first[:64]))
            return
        tag, status = m.group(1), m.group(2).upper()
        verb = self._tags.pop(tag, None)
        ok = status == b"OK"
        if tag == self._auth_tag:
            self._auth_tag = None
            self._auth_mech = None
            self.auth_success = ok
        elif verb == "LOGIN":
            self.auth_success = ok
        elif verb == "STARTTLS" and ok:
            self.tls = True
            self._end(self._ts)
        elif verb == "COMPRESS" and ok and tag == self._compress_tag:
            self._compress_tag = None
            self.compressed = True
            for d in (True, False):
                self._inflate[d] = zlib.decompressobj(-15)
            # bytes already buffered after the OK are compressed
            for r, d in ((self._srv, False), (self._cli, True)):
                pending = bytes(r.lines.buf)
                r.lines.buf.clear()
                if pending:
                    out = self._maybe_inflate(d, pending)
                    if out:
                        r.lines.push(out)

    def _fetch(self, frags: list, final: bool) -> None:
        header = None
        text_part = None
        for f in frags:
            if not isinstance(f, tuple):
                continue
            _, data, missing, total, name, ts = f
            m = _ITEM.search(name)
            if m is None:
                continue
            item = m.group(1).upper()
            section = (m.group(2) or b"").upper().strip() if m.group(2) is not None else None
            origin = m.group(3)
            partial = final or missing > 0
            if item.startswith(b"RFC822.SIZE"):
                continue
            if item == b"RFC822" or (section == b"" and item.startswith(b"BODY")):
                self._message(data, is_orig=False, partial=partial or origin is not None, missing=missing, total=total, ts=ts)
            elif item == b"RFC822.HEADER" or (section is not None and section.startswith(b"HEADER") and item.startswith(b"BODY")):
                header = (data, missing, total, ts)
            elif item == b"RFC822.TEXT" or (section == b"TEXT" and item.startswith(b"BODY")):
                text_part = (data, missing, total, ts)
        if header is not None and text_part is not None:
            raw = header[0] + text_part[0]
            missing = header[1] + text_part[1]
            self._message(raw, is_orig=False, partial=final or missing > 0, missing=missing, total=header[2] + text_part[2], ts=header[3])
        elif header is not None:
            self._message(header[0], is_orig=False, partial=True, missing=header[1], total=header[2], ts=header[3])

    def _message(self, raw: bytes, is_orig: bool, partial: bool, missing: int, total: int | None, ts: float) -> None:
        self.messages += 1
        rec, files, defects = message_events(
            protocol="imap",
            raw=raw,
            ts=ts or self._ts,
            is_orig=is_orig,
            index=self.messages,
            user=self.user,
            partial=partial,
            missing_bytes=missing,
            total_bytes=total,
        )
        self.records.append(("email", rec))
        self.files.extend(files)
        for d in defects[:3]:
            self._w("mime_parse_error", d)


ANALYZERS = {"imap": IMAPAnalyzer}
