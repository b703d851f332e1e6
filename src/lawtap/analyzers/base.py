"""The contract between the stream layer and the application analyzers (sans-IO).

An analyzer is one small state machine per connection. The pipeline creates it when DPI (or a
port hint) names the connection's service, then feeds it bytes: for TCP, the reassembled
in-order stream of each direction (with explicit gaps); for UDP, one datagram at a time. It
never reads a socket or a file. Everything it learns comes back as events the pipeline drains:

* ``records``: ``(record_type, fields)`` pairs, e.g. ``("http", {...})``; field names follow
  Zeek's log where Zeek has one. The pipeline adds ``ts`` (when absent), ``uid`` and ``id.*``.
* ``files``: :class:`FileObject` s — whole objects (HTTP bodies, attachments, transferred files,
  emails as .eml, audio as .wav) that become ``files`` records and artifacts.
* ``weirds``: ``(name, detail)`` anomalies.

Analyzers must never raise on bad input: malformed data becomes a weird and the analyzer stops
or resynchronises. Every analyzer has hypothesis tests feeding it random and truncated bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

#: The fields every analyzer record starts with; the pipeline fills them in.
COMMON_FIELDS = [
    pa.field("ts", TS),
    pa.field("uid", pa.string()),
    pa.field("id.orig_h", pa.string()),
    pa.field("id.orig_p", pa.uint16()),
    pa.field("id.resp_h", pa.string()),
    pa.field("id.resp_p", pa.uint16()),
]


def record_schema(fields: list[pa.Field]) -> pa.Schema:
    """An analyzer record's schema: the common fields, then the analyzer's own."""
    return pa.schema(COMMON_FIELDS + list(fields))


class ConnInfo(NamedTuple):
    """The connection an analyzer belongs to (orig = the side that opened it).

    A named tuple rather than a frozen dataclass: one is made per analyzed flow (hundreds of
    thousands of DNS flows in a large capture) and a tuple is five times cheaper to create.
    """

    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str  # "tcp" | "udp"


@dataclass
class FileObject:
    """A whole object recovered from a connection.

    ``source`` names the protocol (HTTP, SMTP, POP3, IMAP, FTP_DATA, TFTP, IRC_DCC, SIP/RTP);
    ``is_orig`` says which side sent it. ``missing_bytes`` counts bytes lost to gaps.
    """

    source: str
    data: bytes
    ts: float
    is_orig: bool
    filename: str | None = None
    mime_type: str | None = None
    total_bytes: int | None = None  # announced size (Content-Length, SIZE reply...) when known
    missing_bytes: int = 0
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. {"http_uri": ..., "email_index": 0}
    sha256: str | None = None  # the data's SHA-256 when the analyzer computed it already (HTTP)
    # Made by lawtap rather than carried on the wire (WAV audio rebuilt from RTP): hashed by
    # SHA-256 only, its artifact's name. md5 and sha1 serve to look carried files up in hash
    # sets (NSRL, threat feeds), which never hold a WAV of our own making; they stay null.
    derived: bool = False


class StreamAnalyzer:
    """Base class: collects events; subclasses override the ``feed``/``gap``/``datagram`` hooks."""

    service: str = ""

    def __init__(self, conn: ConnInfo) -> None:
        self.conn = conn
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.files: list[FileObject] = []
        self.weirds: list[tuple[str, str]] = []

    # TCP: in-order bytes of one direction.
    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        """Bytes that follow, without a hole, the bytes fed before in this direction."""

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        """``length`` bytes of this direction were never seen (capture loss)."""

    # UDP: one datagram.
    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        """One UDP payload."""

    def datagram_batch(self, data: np.ndarray, offs: np.ndarray, lens: np.ndarray, is_orig: np.ndarray,
                       times: np.ndarray) -> None:
        """Several UDP payloads of this flow at once, in capture order.

        ``data`` is the batch buffer (uint8); payload ``k`` is ``data[offs[k]:offs[k] + lens[k]]``,
        sent by the originator when ``is_orig[k]``, at ``times[k]`` (seconds). The dispatcher
        hands each flow its datagrams of a batch in one call, so an analyzer with a vectorized
        path (RTP) can override this; the default feeds them to :meth:`datagram` one by one and
        stops early when the analyzer says it is ``done``.
        """
        mv = memoryview(data)
        for off, n, orig, t in zip(offs.tolist(), lens.tolist(), is_orig.tolist(), times.tolist()):
            self.datagram(bool(orig), bytes(mv[off : off + n]), t)
            if getattr(self, "done", False):
                return

    def finish(self, ts: float) -> None:
        """The connection ended (FIN/RST, timeout or end of input): flush partial state."""

    def drain(self) -> tuple[list[tuple[str, dict[str, Any]]], list[FileObject], list[tuple[str, str]]]:
        """Take the events produced so far."""
        out = (self.records, self.files, self.weirds)
        self.records, self.files, self.weirds = [], [], []
        return out
