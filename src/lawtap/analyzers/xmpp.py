"""XMPP (RFC 6120/6121) client and server streams: chat messages, bound JID, STARTTLS.

Each direction is one XML document: ``<stream:stream ...>`` then top-level elements (stanzas:
``<message>``, ``<presence>``, ``<iq>``, plus stream-level ``<starttls>``, ``<proceed>``,
``<auth>``...) then ``</stream:stream>``. A small tolerant tokenizer (not an XML parser: broken
markup never raises) builds each top-level element as a little tree once it is complete, across
any number of ``feed()`` calls. After a gap, or when a capture starts in the middle of a
stream, it resynchronises on the next ``<message``/``<iq``/``<presence``/``<stream:...`` tag.

* ``<message>`` with a ``<body>`` -> ``chat`` record (protocol ``xmpp``): ``from``/``to`` from
  the stanza, or, when the client leaves them out, the JID bound by ``<bind><jid>``; ``channel``
  is the room's bare JID for ``type='groupchat'``.
* ``<starttls/>`` answered by ``<proceed/>`` -> the stream turns into TLS: ``done``.
* one ``xmpp`` record per connection (at ``finish``/``done``): ``from``/``to`` of the client's
  stream header (or what the server's header tells), ``bound_jid``, ``starttls``.
"""

from __future__ import annotations

import re
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import ConnInfo, StreamAnalyzer
from lawtap.analyzers.chat import CHAT_SCHEMA, chat_record, schema_with

__all__ = ["XmppAnalyzer", "XmlTokenizer", "Element", "XMPP_SCHEMA", "RECORD_SCHEMAS", "ANALYZERS"]

XMPP_SCHEMA = schema_with(
    [
        pa.field("from", pa.string()),
        pa.field("to", pa.string()),
        pa.field("bound_jid", pa.string()),
        pa.field("starttls", pa.bool_()),
    ]
)

RECORD_SCHEMAS = {"xmpp": XMPP_SCHEMA, "chat": CHAT_SCHEMA}

MAX_STANZA = 1 << 20  # bytes of one top-level element
MAX_TAG = 64 * 1024
MAX_DEPTH = 64
MAX_CHILDREN = 4096
MAX_WEIRDS = 64

_TAG = re.compile(rb"<(/?)([^\s/>]+)((?:[^>\"']|\"[^\"]*\"|'[^']*')*?)(/?)>", re.S)
_ATTR = re.compile(rb"([^\s=/>]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')", re.S)
_ENT = re.compile(r"&(#x[0-9a-fA-F]{1,8}|#[0-9]{1,10}|lt|gt|amp|quot|apos);")
_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
_RESYNC = re.compile(
    rb"<(?:message|iq|presence|stream:stream|/stream:stream|stream:features|starttls|proceed|"
    rb"failure|success|auth|challenge|response|db:result|db:verify|\?xml)[\s/>]"
)


def _unescape(s: str) -> str:
    if "&" not in s:
        return s

    def rep(m: re.Match) -> str:
        e = m.group(1)
        if e[0] == "#":
            try:
                v = int(e[2:], 16) if e[1] in "xX" else int(e[1:])
                return chr(v) if 0 < v < 0x110000 else m.group(0)
            except ValueError:
                return m.group(0)
        return _ENTITIES[e]

    return _ENT.sub(rep, s)


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _local(name: str) -> str:
    return name.rsplit(":", 1)[-1]


class Element:
    """A parsed element: ``name`` (as written, e.g. ``stream:features``), ``attrs``, ``children``, ``text``."""

    __slots__ = ("name", "attrs", "children", "_text")

    def __init__(self, name: str, attrs: dict[str, str]) -> None:
        self.name = name
        self.attrs = attrs
        self.children: list[Element] = []
        self._text: list[str] = []

    @property
    def local(self) -> str:
        return _local(self.name)

    @property
    def text(self) -> str:
        return "".join(self._text)

    def find(self, local: str) -> Element | None:
        for c in self.children:
            if c.local == local:
                return c
        return None

    def iter(self):
        stack = [self]
        while stack:
            e = stack.pop()
            yield e
            stack.extend(reversed(e.children))

    def __repr__(self) -> str:  # pragma: no cover
        return f"<{self.name} {self.attrs} children={len(self.children)}>"


class XmlTokenizer:
    """Incremental, tolerant: yields ``("open", Element)`` for a stream header,
    ``("close", name)`` for ``</stream:stream>``, ``("element", Element)`` for each complete
    top-level element, and ``("weird", detail)`` for markup it had to skip."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.stack: list[Element] = []
        self.stanza_bytes = 0
        self.resync = False

    def gap(self) -> None:
        self.buf.clear()
        self.stack = []
        self.stanza_bytes = 0
        self.resync = True

    def feed(self, data: bytes) -> list[tuple[str, Any]]:
        self.buf += data
        out: list[tuple[str, Any]] = []
        buf = self.buf
        pos = 0
        n = len(buf)
        while pos < n:
            if self.resync:
                m = _RESYNC.search(buf, pos)
                if m is None:
                    # keep a short tail: a tag may be split across feeds
                    pos = max(pos, n - 32)
                    break
                pos = m.start()
                self.resync = False
            lt = buf.find(b"<", pos)
            if lt < 0:
                # character data runs to the next tag: wait for it (entities may be split)
                if not self.stack:
                    pos = n  # whitespace keep-alives between stanzas
                break
            if lt > pos:
                self._chars(bytes(buf[pos:lt]))
                pos = lt
            # markup at pos
            if buf.startswith(b"<!--", pos):
                end = buf.find(b"-->", pos + 4)
                if end < 0:
                    if n - pos > MAX_TAG:
                        out.append(("weird", "xml_comment_too_long"))
                        self.resync = True
                        pos = n
                    break
                pos = end + 3
                continue
            if buf.startswith(b"<![CDATA[", pos):
                end = buf.find(b"]]>", pos + 9)
                if end < 0:
                    if n - pos > MAX_STANZA:
                        out.append(("weird", "xml_cdata_too_long"))
                        self.resync = True
                        pos = n
                    break
                if self.stack:
                    self.stack[-1]._text.append(_text(bytes(buf[pos + 9 : end])))
                pos = end + 3
                continue
            if buf.startswith(b"<?", pos) or buf.startswith(b"<!", pos):
                end = buf.find(b">", pos + 2)
                if end < 0:
                    if n - pos > MAX_TAG:
                        out.append(("weird", "xml_decl_too_long"))
                        self.resync = True
                        pos = n
                    break
                pos = end + 1
                continue
            if n - pos < 2:
                break
            m = _TAG.match(buf, pos)
            if m is None:
                gt = buf.find(b">", pos)
                seg = bytes(buf[pos : gt if gt >= 0 else n])
                incomplete = gt < 0 or (seg.count(b'"') % 2 == 1) or (seg.count(b"'") % 2 == 1)
                if incomplete and n - pos <= MAX_TAG:
                    break  # wait for the rest of the tag
                out.append(("weird", f"xml_bad_tag {seg[:40]!r}"))
                self.stack = []
                self.resync = True
                pos = pos + 1
                continue
            self.stanza_bytes += m.end() - pos
            pos = m.end()
            self._tag(m, out)
            if self.stanza_bytes > MAX_STANZA:
                out.append(("weird", "xml_stanza_too_large"))
                self.stack = []
                self.stanza_bytes = 0
                self.resync = True
        del buf[:pos]
        if len(buf) > MAX_STANZA:
            out.append(("weird", "xml_buffer_overflow"))
            buf.clear()
            self.stack = []
            self.resync = True
        return out

    def _chars(self, b: bytes) -> None:
        if self.stack and b:
            self.stanza_bytes += len(b)
            if len(self.stack[-1]._text) < MAX_CHILDREN:
                self.stack[-1]._text.append(_unescape(_text(b)))

    def _tag(self, m: re.Match, out: list[tuple[str, Any]]) -> None:
        closing, name_b, attrs_b, selfclose = m.group(1), m.group(2), m.group(3), m.group(4)
        name = _text(name_b)
        if closing:
            if name == "stream:stream" or _local(name) == "stream" and not self.stack:
                self.stack = []
                out.append(("close", name))
                return
            if not self.stack:
                out.append(("weird", f"xml_unbalanced_close {name[:40]}"))
                return
            # pop to the matching open element (tolerating missing closes)
            for i in range(len(self.stack) - 1, -1, -1):
                if self.stack[i].name == name:
                    del self.stack[i + 1 :]
                    break
            else:
                out.append(("weird", f"xml_mismatched_close {name[:40]}"))
                return
            el = self.stack.pop()
            if not self.stack:
                self.stanza_bytes = 0
                out.append(("element", el))
            return
        attrs = {}
        for a in _ATTR.finditer(attrs_b):
            v = a.group(2) if a.group(2) is not None else a.group(3)
            attrs[_text(a.group(1))] = _unescape(_text(v or b""))
        el = Element(name, attrs)
        if name == "stream:stream" or (_local(name) == "stream" and not self.stack and not selfclose):
            self.stack = []
            self.stanza_bytes = 0
            out.append(("open", el))
            return
        if self.stack:
            parent = self.stack[-1]
            if len(parent.children) < MAX_CHILDREN:
                parent.children.append(el)
        if selfclose:
            if not self.stack:
                self.stanza_bytes = 0
                out.append(("element", el))
            return
        if len(self.stack) >= MAX_DEPTH:
            out.append(("weird", "xml_too_deep"))
            self.stack = []
            self.resync = True
            return
        self.stack.append(el)


def _bare(jid: str | None) -> str | None:
    return jid.split("/", 1)[0] if jid else jid


class XmppAnalyzer(StreamAnalyzer):
    service = "xmpp"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self.done = False
        self.bound_jid: str | None = None
        self.starttls = False
        self._tok = {True: XmlTokenizer(), False: XmlTokenizer()}
        self._started = {True: False, False: False}  # first non-space byte seen
        self._header: dict[bool, Element | None] = {True: None, False: None}
        self._starttls_requested = False
        self._client_jid: str | None = None  # the client's JID as the server addresses it
        self._seen = False  # any XMPP at all
        self._emitted = False
        self._ts: float | None = None

    def _weird(self, name: str, detail: str = "") -> None:
        if len(self.weirds) < MAX_WEIRDS:
            self.weirds.append((name, detail[:200]))

    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self.done or not data:
            return
        if self._ts is None:
            self._ts = ts
        if not self._started[is_orig]:
            s = data.lstrip(b" \t\r\n\xef\xbb\xbf")
            if not s:
                return
            self._started[is_orig] = True
            if s[:1] != b"<":
                if not self._seen and not self._started[not is_orig] and _RESYNC.search(s) is None:
                    # legacy TLS on 5223, or not XMPP at all
                    self._weird("xmpp_not_xml", repr(s[:16]))
                    self.done = True
                    return
                self._tok[is_orig].resync = True
        for kind, val in self._tok[is_orig].feed(data):
            if kind == "weird":
                self._weird("xmpp_" + val.split(" ", 1)[0], val)
            elif kind == "open":
                self._seen = True
                self._header[is_orig] = val
            elif kind == "element":
                self._seen = True
                self._stanza(is_orig, val, ts)
            if self.done:
                break
        if self.done:
            self._emit()

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        if self.done:
            return
        self._tok[is_orig].gap()
        self._weird("xmpp_content_gap", f"{'client' if is_orig else 'server'} {length} bytes")

    def finish(self, ts: float) -> None:
        self._emit()

    def _server_to_server(self) -> bool:
        hs = [h for h in self._header.values() if h is not None]
        if hs:
            return any(h.attrs.get("xmlns") == "jabber:server" for h in hs)
        return self.conn.resp_p == 5269

    def _own_jid(self) -> str | None:
        return self.bound_jid or self._client_jid

    def _stanza(self, is_orig: bool, el: Element, ts: float) -> None:
        name = el.local
        if (
            not is_orig
            and self._client_jid is None
            and name in ("message", "presence", "iq")
            and "@" in el.attrs.get("to", "")
            and not self._server_to_server()
        ):
            # a client stream: what the server sends is addressed to the client's full JID
            self._client_jid = el.attrs["to"]
        if name == "message":
            body = el.find("body")
            if body is None or el.attrs.get("type") == "error":
                return  # chat states, receipts...; an error bounce repeats a message already seen
            frm = el.attrs.get("from") or (self._own_jid() if is_orig else None)
            to = el.attrs.get("to") or (self._own_jid() if not is_orig else None)
            channel = None
            if el.attrs.get("type") == "groupchat":
                channel = _bare(to if is_orig else frm)
            self.records.append(chat_record("xmpp", frm, to, body.text, is_orig, ts=ts, channel=channel))
        elif name == "iq":
            bind = el.find("bind")
            if bind is not None:
                jid = bind.find("jid")
                if jid is not None and jid.text.strip():
                    self.bound_jid = jid.text.strip()
        elif name == "starttls" and is_orig:
            self._starttls_requested = True
        elif name == "proceed" and not is_orig and "xmpp-tls" in el.attrs.get("xmlns", "urn:ietf:params:xml:ns:xmpp-tls"):
            self.starttls = True
            self.done = True

    def _emit(self) -> None:
        if self._emitted or not self._seen:
            return
        self._emitted = True
        ch, sh = self._header[True], self._header[False]
        frm = ch.attrs.get("from") if ch is not None else None
        to = ch.attrs.get("to") if ch is not None else None
        if to is None and sh is not None:
            to = sh.attrs.get("from")
        if frm is None and sh is not None:
            frm = sh.attrs.get("to")
        rec: dict[str, Any] = {"from": frm, "to": to, "bound_jid": self.bound_jid, "starttls": self.starttls}
        if self._ts is not None:
            rec["ts"] = self._ts
        self.records.append(("xmpp", rec))


ANALYZERS = {"xmpp": XmppAnalyzer}
