"""TFTP (RFC 1350, options RFC 2347/2348/2349) over UDP.

A read (RRQ) or write (WRQ) request goes to port 69; the server answers from a *new* port, so
the transfer is another UDP flow: server host, any port <-> the client's port. ``TftpAnalyzer``
(service ``tftp``, the port-69 flow) exposes each request as an
:class:`~lawtap.analyzers.ftp.ExpectedChannel` (``orig_h`` = server, ``orig_p`` = None,
``resp_h``/``resp_p`` = client; UDP matches either orientation). The pipeline gives the matching
flow to :class:`TftpTransfer` (via ``ExpectedChannel.analyzer``), which reassembles the DATA
blocks (numbered from 1, duplicates ignored, 16-bit roll-over followed, the block shorter than
the block size — 512, or the ``blksize`` option acknowledged by OACK — ends the file) and emits
one :class:`FileObject` (source ``TFTP``) and one ``tftp`` record.

Who writes the ``tftp`` record: the transfer, which knows the outcome (size, blocks, error);
the request flow writes one itself only for requests answered inside it (a server replying
from port 69) or never claimed by a transfer. A transfer flow that DPI recognises on its own
(no request seen) is analysed the same way, with ``fname``/``mode``/``wrq`` unknown.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import ConnInfo, FileObject, StreamAnalyzer
from lawtap.analyzers.chat import schema_with
from lawtap.analyzers.ftp import ExpectedChannel, decode_text

try:
    from lawtap.analyzers.mime_sniff import sniff as _sniff
except ImportError:  # pragma: no cover
    _sniff = None

__all__ = ["TftpAnalyzer", "TftpTransfer", "TFTP_SCHEMA", "RECORD_SCHEMAS", "ANALYZERS", "parse_request"]

TFTP_SCHEMA = schema_with(
    [
        pa.field("wrq", pa.bool_()),
        pa.field("fname", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("size", pa.uint64()),
        pa.field("block_count", pa.uint64()),
        pa.field("error_code", pa.uint16()),
        pa.field("error_msg", pa.string()),
    ]
)

RECORD_SCHEMAS = {"tftp": TFTP_SCHEMA}

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6
DEFAULT_BLKSIZE = 512
MAX_BLKSIZE = 65464
MAX_FILE = 256 * 1024 * 1024
MAX_REQUESTS = 256
MAX_WEIRDS = 64


def parse_request(p: bytes) -> tuple[bool, str, str, dict[str, str]] | None:
    """``(wrq, filename, mode, options)`` of an RRQ/WRQ datagram, None if it is not one."""
    if len(p) < 4 or p[0] != 0 or p[1] not in (RRQ, WRQ):
        return None
    parts = p[2:].split(b"\x00")
    if len(parts) < 2:  # filename, mode (its terminating NUL tolerated when missing)
        return None
    fname, mode = decode_text(parts[0]), decode_text(parts[1]).lower()
    opts: dict[str, str] = {}
    rest = [x for x in parts[2:]]
    while rest and rest[-1] == b"":
        rest.pop()
    for i in range(0, len(rest) - 1, 2):
        opts[decode_text(rest[i]).lower()] = decode_text(rest[i + 1])
    return p[1] == WRQ, fname, mode, opts


def _parse_oack(p: bytes) -> dict[str, str]:
    parts = p[2:].split(b"\x00")
    while parts and parts[-1] == b"":
        parts.pop()
    return {decode_text(parts[i]).lower(): decode_text(parts[i + 1]) for i in range(0, len(parts) - 1, 2)}


def _int_opt(opts: dict[str, str], name: str) -> int | None:
    v = opts.get(name, "").strip()
    return int(v) if v.isascii() and v.isdigit() and len(v) < 12 else None


class _Transfer:
    """The state of one file transfer (DATA/ACK/OACK/ERROR datagrams)."""

    def __init__(self, channel: ExpectedChannel | None, ts: float) -> None:
        self.channel = channel
        self.ts = ts
        self.blksize = (channel.blksize if channel and channel.blksize else None) or DEFAULT_BLKSIZE
        self.requested_blksize = channel.meta.get("blksize_requested") if channel else None
        self.chunks: list[bytes] = []
        self.size = 0
        self.next_block = 1  # absolute number of the block expected next
        self.blocks = 0
        self.missing = 0
        self.complete = False
        self.error: tuple[int, str] | None = None
        self.data_from_orig: bool | None = None
        self.first_data_ts: float | None = None
        self.weirds: list[tuple[str, str]] = []
        self.closed = False  # record/file emitted

    def datagram(self, is_orig: bool, p: bytes, ts: float) -> None:
        if len(p) < 4 or p[0] != 0:
            self._weird("tftp_bad_packet", f"{len(p)} bytes")
            return
        op = p[1]
        if op == DATA:
            self._data(is_orig, (p[2] << 8) | p[3], p[4:], ts)
        elif op == ERROR:
            code = (p[2] << 8) | p[3]
            msg = decode_text(p[4:].split(b"\x00", 1)[0])
            if self.error is None:
                self.error = (code, msg)
        elif op == OACK:
            opts = _parse_oack(p)
            bs = _int_opt(opts, "blksize")
            if bs is not None and 8 <= bs <= MAX_BLKSIZE and self.blocks == 0:
                self.blksize = bs
        elif op == ACK:
            return
        else:
            self._weird("tftp_unexpected_opcode", str(op))

    def _data(self, is_orig: bool, num16: int, payload: bytes, ts: float) -> None:
        if self.complete:
            if num16 == ((self.next_block - 1) & 0xFFFF):
                return  # retransmitted last block
            self._weird("tftp_data_after_end", str(num16))
            return
        if self.data_from_orig is None:
            self.data_from_orig = is_orig
            self.first_data_ts = ts
            if self.blocks == 0 and self.blksize == DEFAULT_BLKSIZE and len(payload) > DEFAULT_BLKSIZE:
                # blksize negotiated by an OACK we did not see
                self.blksize = len(payload)
        elif is_orig != self.data_from_orig:
            self._weird("tftp_data_both_directions", str(num16))
            return
        expect16 = self.next_block & 0xFFFF
        if num16 == expect16:
            pass
        elif num16 == ((self.next_block - 1) & 0xFFFF) or ((expect16 - num16) & 0xFFFF) < 0x8000:
            return  # duplicate / old block
        else:
            lost = (num16 - expect16) & 0xFFFF
            self._weird("tftp_missing_blocks", f"{lost} before block {num16}")
            self.missing += lost * self.blksize
            self.next_block += lost
        self.next_block += 1
        self.blocks += 1
        if self.size + len(payload) <= MAX_FILE:
            self.chunks.append(bytes(payload))
            self.size += len(payload)
        else:
            self._weird("tftp_file_too_large", str(MAX_FILE))
        if len(payload) < self.blksize:
            self.complete = True

    def _weird(self, name: str, detail: str) -> None:
        if len(self.weirds) < MAX_WEIRDS:
            self.weirds.append((name, detail))

    def seen_anything(self) -> bool:
        return self.blocks > 0 or self.error is not None

    def close(self, an: StreamAnalyzer, conn: ConnInfo, ts: float) -> None:
        if self.closed:
            return
        self.closed = True
        ch = self.channel
        rec: dict[str, Any] = {
            "ts": ch.created if ch is not None and ch.created else self.ts,
            "wrq": (ch.command == "WRQ") if ch is not None and ch.command else None,
            "fname": ch.filename if ch is not None else None,
            "mode": ch.mode if ch is not None else None,
            "size": self.size if self.blocks else None,
            "block_count": self.blocks,
            "error_code": self.error[0] if self.error else None,
            "error_msg": self.error[1] if self.error else None,
        }
        an.records.append(("tftp", rec))
        if self.blocks:
            data = b"".join(self.chunks)
            meta: dict[str, Any] = {"complete": self.complete, "blocks": self.blocks, "blksize": self.blksize}
            if ch is not None:
                if ch.mode:
                    meta["mode"] = ch.mode
                if ch.parent is not None:
                    meta["control_uid"] = ch.parent.uid
            an.files.append(
                FileObject(
                    source="TFTP",
                    data=data,
                    ts=self.first_data_ts if self.first_data_ts is not None else ts,
                    is_orig=bool(self.data_from_orig),
                    filename=ch.filename if ch is not None else None,
                    mime_type=_sniff(data) if (_sniff and data) else None,
                    total_bytes=ch.size if ch is not None else None,
                    missing_bytes=self.missing,
                    meta=meta,
                )
            )
        self.chunks = []
        an.weirds.extend(self.weirds[: max(0, MAX_WEIRDS - len(an.weirds))])


class TftpTransfer(StreamAnalyzer):
    """The data flow of one transfer (created from the request's ExpectedChannel, or bare)."""

    service = "tftp-data"

    def __init__(self, conn: ConnInfo, channel: ExpectedChannel | None = None) -> None:
        super().__init__(conn)
        self.channel = channel
        if channel is not None:
            channel.claimed = True
        self.expected_channels: list[ExpectedChannel] = []
        self._t: _Transfer | None = None
        self._req: TftpAnalyzer | None = None

    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self._req is not None:
            self._req.datagram(is_orig, data, ts)
            self._pull()
            return
        if self.channel is None and parse_request(data) is not None:
            # DPI handed us a request flow after all: behave as the request analyzer
            self._req = TftpAnalyzer(self.conn)
            self.expected_channels = self._req.expected_channels
            self._req.datagram(is_orig, data, ts)
            self._pull()
            return
        if self._t is None:
            self._t = _Transfer(self.channel, ts)
        if len(data) >= 2 and data[0] == 0 and data[1] in (RRQ, WRQ):
            self._t._weird("tftp_request_on_transfer", "")
            return
        self._t.datagram(is_orig, data, ts)
        if self._t.complete or self._t.error is not None:
            # the file is whole (or refused): emit now, later datagrams are only ACKs/retries
            self._t.close(self, self.conn, ts)

    def _pull(self) -> None:
        assert self._req is not None
        r, f, w = self._req.drain()
        self.records.extend(r)
        self.files.extend(f)
        self.weirds.extend(w)

    def finish(self, ts: float) -> None:
        if self._req is not None:
            self._req.finish(ts)
            self._pull()
            return
        if self._t is None:
            # a claimed channel whose flow carried nothing usable: still log the request
            self._t = _Transfer(self.channel, ts) if self.channel is not None else None
        if self._t is not None:
            self._t.close(self, self.conn, ts)


class TftpAnalyzer(StreamAnalyzer):
    """The request flow (client port -> server port 69)."""

    service = "tftp"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self.expected_channels: list[ExpectedChannel] = []
        self._requests: list[tuple[ExpectedChannel, _Transfer]] = []
        self._bare: _Transfer | None = None  # DATA without any request in this flow

    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        req = parse_request(data)
        if req is not None:
            self._request(is_orig, req, ts)
            return
        if len(data) < 4 or data[0] != 0 or not 3 <= data[1] <= 6:
            if len(self.weirds) < MAX_WEIRDS:
                self.weirds.append(("tftp_bad_packet", f"{len(data)} bytes"))
            return
        if self._requests:
            t = self._requests[-1][1]
        else:
            if self._bare is None:
                self._bare = _Transfer(None, ts)
            t = self._bare
        t.datagram(is_orig, data, ts)

    def _request(self, is_orig: bool, req: tuple[bool, str, str, dict[str, str]], ts: float) -> None:
        wrq, fname, mode, opts = req
        # the requester is the client; the answer comes from the other host, any port
        client_h, client_p = (self.conn.orig_h, self.conn.orig_p) if is_orig else (self.conn.resp_h, self.conn.resp_p)
        server_h = self.conn.resp_h if is_orig else self.conn.orig_h
        if self._requests:
            last_ch, last_t = self._requests[-1]
            if last_ch.filename == fname and last_ch.command == ("WRQ" if wrq else "RRQ") and not last_t.seen_anything():
                return  # retransmitted request
        ch = ExpectedChannel(
            resp_h=client_h,
            resp_p=client_p,
            source="TFTP",
            orig_h=server_h,
            orig_p=None,
            proto="udp",
            filename=fname,
            direction="resp" if wrq else "orig",  # WRQ: the client sends; RRQ: the server
            created=ts,
            command="WRQ" if wrq else "RRQ",
            mode=mode,
            parent=self.conn,
        )
        bs = _int_opt(opts, "blksize")
        if bs is not None:
            ch.meta["blksize_requested"] = bs
        tsize = _int_opt(opts, "tsize")
        if tsize is not None and wrq:
            ch.size = tsize  # WRQ announces the size; an RRQ's tsize is 0 (asks for it)
        if opts:
            ch.meta["options"] = dict(opts)
        if len(self.expected_channels) >= MAX_REQUESTS:
            del self.expected_channels[: MAX_REQUESTS // 2]
            del self._requests[: MAX_REQUESTS // 2]
        self.expected_channels.append(ch)
        self._requests.append((ch, _Transfer(ch, ts)))

    def finish(self, ts: float) -> None:
        for ch, t in self._requests:
            if t.seen_anything() or not ch.claimed:
                t.close(self, self.conn, ts)
        self._requests = []
        if self._bare is not None and self._bare.seen_anything():
            self._bare.close(self, self.conn, ts)
        self._bare = None


ANALYZERS = {"tftp": TftpAnalyzer, "tftp-data": TftpTransfer}
