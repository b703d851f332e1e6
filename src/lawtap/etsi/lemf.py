"""A reference LEMF: receives HI2/HI3 PS-PDU streams, checks them and turns them into a case.

What it does with every byte received (why in brackets):

* frames the TCP stream into PS-PDUs by their outer BER length and takes each apart with the
  numba scanner of :mod:`lawtap.etsi.pdu`; what the scanner cannot read goes through the schema
  decoder, what neither can read is reported as malformed and skipped;
* checks sequence continuity per (LIID, CIN, IRI|CC): a gap is reported, a PDU at or behind the
  expected number is a *duplicate* (resent after a reconnect) and is dropped, so the store holds
  every PDU exactly once [exactly-once delivery is proven here, not assumed];
* answers keep-alives (keep-aliveResponse, same sequence number) and acknowledgement requests —
  the latter only after everything received before it is fsync'ed [the mediator deletes what we
  acknowledge];
* appends every accepted PDU to ``received.ber`` (the evidence, byte for byte as delivered), writes
  IP CC (and e-mail/multimedia CC that carry whole IP packets, and SIP IRI) as packets into one
  pcap per LIID (LINKTYPE_RAW) so ``lawtap analyze`` rebuilds the intercepted sessions, and keeps
  IRI as records (:data:`IRI_SCHEMA`);
* logs connections, keep-alives, gaps, duplicates and malformed PDUs to ``events.jsonl``.

On start the store replays ``received.ber`` (cutting a torn tail) to rebuild the sequence state
and regenerate the pcaps and IRI records, so a LEMF killed at any moment resumes consistently.

Layout of the store directory::

    received.ber      accepted PS-PDUs, concatenated (append-only)
    cc/<liid>.pcap    CC packets per LIID (derived, rebuilt on start)
    email/            e-mail CC delivered in application format (derived)
    events.jsonl      what happened (append-only)
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import ipaddress
import json
import os
import re
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from lawtap.errors import LawtapError
from lawtap.etsi.pdu import (
    CC_EMAIL,
    CC_IP,
    CC_IPMM,
    F_CIN,
    F_DATA_LEN,
    F_DATA_OFF,
    F_DIR,
    F_END,
    F_FMT,
    F_KIND,
    F_LIID_LEN,
    F_LIID_OFF,
    F_SEC,
    F_SEQ,
    F_START,
    F_STATUS,
    F_SUB,
    F_USEC,
    KIND_CC,
    KIND_IRI,
    KIND_TRI,
    SCAN_DESYNC,
    SCAN_MORE,
    STATUS_BAD,
    STATUS_OK,
    STATUS_SLOW,
    TRI_ACK_REQUEST,
    TRI_ACK_RESPONSE,
    TRI_KEEPALIVE,
    TRI_KEEPALIVE_RESPONSE,
    HeaderParams,
    PduDecodeError,
    decode_pdu,
    header_from_value,
    ps_pdu_tri,
    scan,
)
from lawtap.jit import njit
from lawtap.records import TS
from lawtap.sources.batch import LINKTYPE_RAW, PacketBatch
from lawtap.sources.writer import PcapWriter

IRI_SCHEMA = pa.schema(
    [
        pa.field("ts", TS, nullable=False),  # PSHeader time (of interception)
        pa.field("liid", pa.string(), nullable=False),
        pa.field("cin", pa.int64()),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("service", pa.string(), nullable=False),  # ip-access | email | ip-multimedia | other
        pa.field("iri_type", pa.string()),  # iRI-Begin | iRI-Continue | iRI-End | iRI-Report
        pa.field("event", pa.string()),  # accessEventType / e-mail eventType / SIP request or status
        pa.field("username", pa.string()),
        pa.field("target_ip", pa.string()),
        pa.field("client_ip", pa.string()),
        pa.field("client_port", pa.int64()),
        pa.field("server_ip", pa.string()),
        pa.field("server_port", pa.int64()),
        pa.field("protocol", pa.string()),
        pa.field("sender", pa.string()),
        pa.field("recipients", pa.list_(pa.string())),
        pa.field("status", pa.string()),
        pa.field("detail", pa.string()),  # the whole decoded IRIContents as JSON
    ]
)

_SEQ_MOD = 1 << 32
ACCEPT, DUPLICATE, GAP = 0, 1, 2


class LemfError(LawtapError):
    """The LEMF store or listener cannot work (one line)."""


@dataclass
class Stream:
    """One (LIID, CIN, IRI|CC) sequence of PDUs."""

    liid: bytes
    cin: int  # -1 when the PDUs carry none
    kind: int  # KIND_IRI or KIND_CC
    received: int = 0
    duplicates: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{_liid_text(self.liid)}/{self.cin}/{'IRI' if self.kind == KIND_IRI else 'CC'}"


def _liid_text(liid: bytes) -> str:
    try:
        text = liid.decode("ascii")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return "0x" + liid.hex()


def _safe_name(liid: bytes) -> str:
    text = _liid_text(liid)
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@njit(cache=True)
def _stream_keys(buf, info, out):
    """FNV-1a over the LIID, mixed with CIN and kind: a per-row stream key (0 for non-data rows)."""
    for i in range(info.shape[0]):
        kind = info[i, F_KIND]
        if info[i, F_STATUS] != STATUS_OK or (kind != KIND_IRI and kind != KIND_CC):
            out[i] = 0
            continue
        h = np.uint64(14695981039346656037)
        lo = info[i, F_LIID_OFF]
        for j in range(info[i, F_LIID_LEN]):
            h = (h ^ np.uint64(buf[lo + j])) * np.uint64(1099511628211)
        h = (h ^ np.uint64(info[i, F_CIN] + 1)) * np.uint64(1099511628211)
        h = (h ^ np.uint64(kind + 7)) * np.uint64(1099511628211)
        out[i] = h | np.uint64(1)


@njit(cache=True)
def _check_sequences(gids, seqs, nxt, verdict, gap_from):
    """Sequence continuity in arrival order; updates ``nxt`` (next expected per stream, -1 unseen)."""
    for i in range(gids.shape[0]):
        g = gids[i]
        if g < 0:
            verdict[i] = -1
            continue
        s = seqs[i]
        e = nxt[g]
        if e < 0:
            e = 0
        if s == e:
            verdict[i] = 0
        else:
            d = (s - e) % 4294967296
            if d < 2147483648:
                verdict[i] = 2
                gap_from[i] = e
            else:
                verdict[i] = 1
                continue
        nxt[g] = (s + 1) % 4294967296


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


class LemfStore:
    """Everything the LEMF keeps, with the sequence logic; sans-IO apart from its own files.

    Feed it bytes with :meth:`feed` (one :class:`Connection` per TCP stream); it returns the
    response PDUs to send back. :meth:`sync` makes everything accepted durable.
    """

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = True,
                 response_params: HeaderParams | None = None) -> None:
        self.dir = Path(directory)
        self.fsync = fsync
        self.params = response_params or HeaderParams(operator_id=b"lawtap-lemf")
        self.streams: list[Stream] = []
        self._by_key: dict[int, int] = {}
        self._by_ident: dict[tuple[bytes, int, int], int] = {}
        self._next = np.full(64, -1, np.int64)
        self.iri_records: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {
            "pdus": 0, "accepted": 0, "duplicates": 0, "gaps": 0, "malformed": 0, "keepalives": 0,
            "ack_requests": 0, "cc_packets": 0, "cc_not_in_pcap": 0, "iri": 0, "other": 0,
        }
        self._pcaps: dict[bytes, tuple[PcapWriter, BinaryIO]] = {}
        self._replaying = False
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "cc").mkdir(exist_ok=True)
            # Derived files are rebuilt from received.ber by the replay below.
            for old in [*(self.dir / "cc").glob("*.pcap"), *(self.dir / "email").glob("*.txt")]:
                old.unlink()
            self._events = open(self.dir / "events.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            self._replay()
            self._log = open(self.dir / "received.ber", "ab")  # noqa: SIM115
        except OSError as e:
            raise LemfError(f"LEMF store {self.dir}: {e.strerror or e}") from None

    # -- recovery ----------------------------------------------------------------------------

    def _replay(self) -> None:
        """Rebuild sequence state and derived files from ``received.ber``; cut a torn tail."""
        path = self.dir / "received.ber"
        if not path.exists():
            return
        data = path.read_bytes()
        self._replaying = True
        pos = 0
        try:
            while pos < len(data):
                res = scan(data, pos, max_pdus=65536)
                if not len(res.info):
                    break
                self._ingest(data, res.info, "replay")
                pos = res.consumed
                if res.state == SCAN_DESYNC:
                    break
        finally:
            self._replaying = False
        if pos != len(data):
            with open(path, "r+b") as f:
                f.truncate(pos)
            self.event("truncated_log", kept=pos, dropped=len(data) - pos)

    # -- events ------------------------------------------------------------------------------

    def event(self, name: str, **fields: Any) -> None:
        """One line in ``events.jsonl`` (not while replaying: those were logged the first time)."""
        if self._replaying or self._events.closed:
            return
        rec = {"ts": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"), "event": name}
        rec.update(fields)
        self._events.write(json.dumps(rec, sort_keys=True) + "\n")

    # -- ingest ------------------------------------------------------------------------------

    def _gid(self, key: int | None, liid: bytes, cin: int, kind: int) -> int:
        """Stream id of (LIID, CIN, kind); ``key`` is the scanner's hash of it (a cache only)."""
        if key is not None:
            g = self._by_key.get(key)
            if g is not None:
                s = self.streams[g]
                if s.liid != liid or s.cin != cin or s.kind != kind:
                    raise LemfError(f"stream key collision between {s.name} and {_liid_text(liid)}/{cin}")
                return g
        ident = (liid, cin, kind)
        g = self._by_ident.get(ident)
        if g is not None:
            if key is not None:
                self._by_key[key] = g
            return g
        g = len(self.streams)
        self.streams.append(Stream(liid, cin, kind))
        self._by_ident[ident] = g
        if key is not None:
            self._by_key[key] = g
        if g >= self._next.shape[0]:
            grown = np.full(self._next.shape[0] * 2, -1, np.int64)
            grown[: self._next.shape[0]] = self._next
            self._next = grown
        return g

    def _slow_row(self, data: bytes, row: np.ndarray) -> dict[str, Any] | None:
        """Schema-decode a row the scanner could not take apart; fill its header columns."""
        start, end = int(row[F_START]), int(row[F_END])
        try:
            value = decode_pdu(data[start:end])
        except PduDecodeError:
            row[F_STATUS] = STATUS_BAD
            return None
        h = header_from_value(value)
        row[F_KIND], row[F_SUB], row[F_SEQ] = h.kind, h.sub, h.seq
        row[F_CIN] = -1 if h.cin is None else h.cin
        ts = h.ts_ns or 0
        row[F_SEC], row[F_USEC] = ts // 1_000_000_000, (ts % 1_000_000_000) // 1000
        row[F_DIR] = -1 if h.direction is None else h.direction
        row[F_FMT] = -1 if h.fmt is None else h.fmt
        row[F_DATA_OFF] = row[F_DATA_LEN] = -1  # the payload is read from the decoded value
        row[F_STATUS] = STATUS_SLOW
        return value

    def _ingest(self, data: bytes, info: np.ndarray, peer: str) -> list[tuple[int, int, bytes]]:
        """Accept the data PDUs of ``info`` (rows over ``data``); returns the TRIs (sub, seq, liid)."""
        buf = np.frombuffer(data, np.uint8)
        n = info.shape[0]
        self.counts["pdus"] += n
        slow_values: dict[int, dict[str, Any]] = {}
        liids: dict[int, bytes] = {}
        for i in np.flatnonzero(info[:, F_STATUS] == STATUS_SLOW):
            value = self._slow_row(data, info[i])
            if value is not None:
                slow_values[int(i)] = value
                liids[int(i)] = bytes(value["pSHeader"]["lawfulInterceptionIdentifier"])
        status = info[:, F_STATUS]
        bad = np.flatnonzero(status == STATUS_BAD)
        if bad.shape[0]:
            self.counts["malformed"] += int(bad.shape[0])
            self.event("malformed", peer=peer, count=int(bad.shape[0]),
                       first_offset=int(info[bad[0], F_START]))
        kinds = info[:, F_KIND]
        # Stream ids: a numba hash per row, one Python lookup per distinct stream in the chunk.
        keys = np.zeros(n, np.uint64)
        _stream_keys(buf, np.where((status == STATUS_SLOW)[:, None], -1, info) if slow_values else info, keys)
        gids = np.full(n, -1, np.int64)
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        for u, (k, i) in enumerate(zip(uniq.tolist(), first.tolist())):
            if k == 0:
                continue
            lo, ll = int(info[i, F_LIID_OFF]), int(info[i, F_LIID_LEN])
            gids[inverse == u] = self._gid(k, data[lo:lo + ll], int(info[i, F_CIN]), int(kinds[i]))
        for i, liid in liids.items():
            if int(kinds[i]) in (KIND_IRI, KIND_CC):
                gids[i] = self._gid(None, liid, int(info[i, F_CIN]), int(kinds[i]))
        verdict = np.full(n, -1, np.int8)
        gap_from = np.zeros(n, np.int64)
        _check_sequences(gids, info[:, F_SEQ].copy(), self._next, verdict, gap_from)
        accepted = (verdict == ACCEPT) | (verdict == GAP)
        self._report_sequences(info, gids, verdict, gap_from, peer)
        if not self._replaying:
            self._append_log(data, info, accepted)
        self._derive(data, buf, info, gids, accepted, slow_values)
        tris = []
        for i in np.flatnonzero((kinds == KIND_TRI) & (status != STATUS_BAD)):
            i = int(i)
            lo, ll = int(info[i, F_LIID_OFF]), int(info[i, F_LIID_LEN])
            liid = liids.get(i) or data[lo:lo + ll]
            tris.append((int(info[i, F_SUB]), int(info[i, F_SEQ]), liid))
        other = int(np.count_nonzero((gids < 0) & (status != STATUS_BAD) & (kinds != KIND_TRI)))
        self.counts["other"] += other
        return tris

    def _report_sequences(self, info: np.ndarray, gids: np.ndarray, verdict: np.ndarray,
                          gap_from: np.ndarray, peer: str) -> None:
        acc = np.flatnonzero((verdict == ACCEPT) | (verdict == GAP))
        self.counts["accepted"] += int(acc.shape[0])
        counts = np.bincount(gids[acc], minlength=len(self.streams)) if acc.shape[0] else None
        if counts is not None:
            for g in np.flatnonzero(counts):
                self.streams[g].received += int(counts[g])
        for i in np.flatnonzero(verdict == GAP):
            s = self.streams[int(gids[i])]
            lo, hi = int(gap_from[i]), (int(info[i, F_SEQ]) - 1) % _SEQ_MOD
            s.gaps.append((lo, hi))
            self.counts["gaps"] += 1
            self.event("gap", peer=peer, stream=s.name, missing_from=lo, missing_to=hi)
        dup = np.flatnonzero(verdict == DUPLICATE)
        if dup.shape[0]:
            self.counts["duplicates"] += int(dup.shape[0])
            per = np.bincount(gids[dup], minlength=len(self.streams))
            for g in np.flatnonzero(per):
                s = self.streams[g]
                s.duplicates += int(per[g])
                seqs = info[dup[gids[dup] == g], F_SEQ]
                self.event("duplicates", peer=peer, stream=s.name, count=int(per[g]),
                           first=int(seqs[0]), last=int(seqs[-1]))

    def _append_log(self, data: bytes, info: np.ndarray, accepted: np.ndarray) -> None:
        """Write accepted PDUs in arrival order, as runs of consecutive rows (few write calls)."""
        if not accepted.any():
            return
        idx = np.flatnonzero(accepted)
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        for run in np.split(idx, breaks):
            self._log.write(data[int(info[run[0], F_START]):int(info[run[-1], F_END])])

    def _pcap(self, liid: bytes) -> PcapWriter:
        entry = self._pcaps.get(liid)
        if entry is None:
            f = open(self.dir / "cc" / f"{_safe_name(liid)}.pcap", "wb")  # noqa: SIM115 - closed in close()
            entry = (PcapWriter(f, LINKTYPE_RAW, nanosecond=False), f)
            self._pcaps[liid] = entry
        return entry[0]

    def _derive(self, data: bytes, buf: np.ndarray, info: np.ndarray, gids: np.ndarray,
                accepted: np.ndarray, slow_values: dict[int, dict[str, Any]]) -> None:
        """CC packets to the pcaps (numba batch writes), IRI to records, the rest one by one."""
        kinds, subs, fmts = info[:, F_KIND], info[:, F_SUB], info[:, F_FMT]
        fast = accepted & (info[:, F_STATUS] == STATUS_OK)
        packets = fast & (kinds == KIND_CC) & (info[:, F_DATA_OFF] >= 0) & (
            (subs == CC_IP) | ((subs == CC_EMAIL) & (fmts == 1)) | ((subs == CC_IPMM) & (fmts == 0)))
        idx = np.flatnonzero(packets)
        if idx.shape[0]:
            ts = np.maximum(info[:, F_SEC], 0) * 1_000_000_000 + np.maximum(info[:, F_USEC], 0) * 1000
            offset = np.ascontiguousarray(info[:, F_DATA_OFF])
            caplen = info[:, F_DATA_LEN].astype(np.int32)
            batch = PacketBatch(
                data=buf, offset=offset, caplen=caplen, wirelen=caplen, ts=ts,
                linktype=np.full(info.shape[0], LINKTYPE_RAW, np.int32),
                file_id=np.zeros(info.shape[0], np.int16), file_offset=offset,
            )
            g = gids[idx]
            for sg in np.unique(g):
                self._pcap(self.streams[int(sg)].liid).write_batch(batch, idx[g == sg])
            self.counts["cc_packets"] += int(idx.shape[0])
        rest = np.flatnonzero(accepted & ~packets)
        for i in rest.tolist():
            start, end = int(info[i, F_START]), int(info[i, F_END])
            value = slow_values.get(i)
            if value is None:
                try:
                    value = decode_pdu(data[start:end])
                except PduDecodeError:
                    self.counts["malformed"] += 1
                    continue
            self._one(value, self.streams[int(gids[i])])

    def _one(self, value: dict[str, Any], stream: Stream) -> None:
        """An accepted PDU off the fast path: IRI record, or CC that is not a plain IP packet."""
        hdr = header_from_value(value)
        ts_ns = hdr.ts_ns or 0
        name, body = value["payload"]
        if name == "iRIPayloadSequence":
            for iri in body:
                rec = iri_record(value, iri)
                self.iri_records.append(rec)
                self.counts["iri"] += 1
                pkt = _sip_packet(iri)
                if pkt is not None:
                    self._pcap(stream.liid).write(ts_ns, pkt)
                    self.counts["cc_packets"] += 1
        elif name == "cCPayloadSequence":
            for cc in body:
                alt, v = cc["cCContents"]
                direction = cc.get("payloadDirection", "indeterminate")
                if alt == "iPCC" and v["iPCCContents"][0] == "iPPackets":
                    self._pcap(stream.liid).write(ts_ns, v["iPCCContents"][1])
                elif alt == "emailCC" and v["email-Format"] == "ip-packet":
                    self._pcap(stream.liid).write(ts_ns, v["content"])
                elif alt == "iPMMCC" and v.get("frameType") == "ipFrame":
                    self._pcap(stream.liid).write(ts_ns, v["mMCCContents"])
                elif alt == "emailCC":
                    d = self.dir / "email"
                    d.mkdir(exist_ok=True)
                    with open(d / f"{_safe_name(stream.liid)}-{stream.cin}-{direction}.txt", "ab") as f:
                        f.write(v["content"])
                    self.counts["cc_not_in_pcap"] += 1
                    continue
                else:
                    self.counts["cc_not_in_pcap"] += 1
                    continue
                self.counts["cc_packets"] += 1

    # -- connections -------------------------------------------------------------------------

    def feed(self, conn: Connection, chunk: bytes) -> list[bytes]:
        """Bytes from one TCP connection; returns PDUs to send back on it."""
        data = conn.leftover + chunk if conn.leftover else chunk
        base = conn.received - len(conn.leftover)  # stream offset of data[0]
        out: list[bytes] = []
        pos = 0
        while True:
            res = scan(data, pos, max_pdus=65536)
            tris = self._ingest(data, res.info, conn.peer) if len(res.info) else []
            for sub, seq, liid in tris:
                if sub == TRI_KEEPALIVE:
                    self.counts["keepalives"] += 1
                    self.event("keepalive", peer=conn.peer, seq=seq)
                    out.append(ps_pdu_tri(TRI_KEEPALIVE_RESPONSE, liid, seq, time.time_ns(), self.params))
                elif sub == TRI_ACK_REQUEST:
                    self.counts["ack_requests"] += 1
                    self.sync()  # everything before the request is durable before we say so
                    out.append(ps_pdu_tri(TRI_ACK_RESPONSE, liid, seq, time.time_ns(), self.params))
            pos = res.consumed
            if res.state == SCAN_DESYNC:
                conn.leftover = b""
                self.event("desync", peer=conn.peer, offset=base + pos)
                raise LemfError(f"{conn.peer}: stream is not a sequence of PS-PDUs")
            if res.state == SCAN_MORE and len(res.info) < 65536:
                break
            if pos >= len(data):
                break
        conn.leftover = data[pos:]
        conn.received += len(chunk)
        return out

    def sync(self) -> None:
        """Flush and (if configured) fsync the received log; flush the derived files."""
        try:
            self._log.flush()
            if self.fsync:
                os.fsync(self._log.fileno())
            for _, f in self._pcaps.values():
                f.flush()
            self._events.flush()
        except OSError as e:
            raise LemfError(f"LEMF store {self.dir}: {e.strerror or e}") from None

    def close(self) -> None:
        """Sync and close every file."""
        self.sync()
        for w, f in self._pcaps.values():
            w.close()
            f.close()
        self._pcaps.clear()
        self._log.close()
        self._events.close()

    # -- results -----------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """Counters and per-stream continuity (what a LEMF operator checks first)."""
        return {
            "counts": dict(self.counts),
            "streams": [
                {"liid": _liid_text(s.liid), "cin": s.cin, "kind": "IRI" if s.kind == KIND_IRI else "CC",
                 "received": s.received, "next_seq": int(self._next[g]), "duplicates": s.duplicates,
                 "gaps": [list(x) for x in s.gaps]}
                for g, s in enumerate(self.streams)
            ],
        }

    def pcap_paths(self) -> list[Path]:
        """The CC pcaps written so far (one per LIID)."""
        for _, f in self._pcaps.values():
            f.flush()
        return sorted((self.dir / "cc").glob("*.pcap"))

    def iri_table(self) -> pa.Table:
        """IRI records as an Arrow table with :data:`IRI_SCHEMA`."""
        return pa.Table.from_pylist(self.iri_records, schema=IRI_SCHEMA)


@dataclass
class Connection:
    """Per-connection framing state."""

    peer: str
    leftover: bytes = b""
    received: int = 0


# ---------------------------------------------------------------------------------------------
# IRI records
# ---------------------------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        try:
            text = v.decode("utf-8")
            if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
                return text
        except UnicodeDecodeError:
            pass
        return "0x" + v.hex()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, _dt.datetime):
        return v.isoformat()
    return v


def _ip_text(v: dict[str, Any] | None) -> str | None:
    if not v:
        return None
    kind, val = v["iP-value"]
    if kind == "iPBinaryAddress":
        try:
            return str(ipaddress.ip_address(bytes(val)))
        except ValueError:
            return "0x" + bytes(val).hex()
    return str(val)


_SIP_FIRST = re.compile(rb"^(?:SIP/2\.0 (\d{3})|([A-Z]+) )")


def _sip_event(sip: bytes) -> str | None:
    m = _SIP_FIRST.match(sip)
    if not m:
        return None
    return (m.group(1) or m.group(2)).decode()


def iri_record(value: dict[str, Any], iri: dict[str, Any]) -> dict[str, Any]:
    """One :data:`IRI_SCHEMA` row from a decoded PS-PDU and one of its IRIPayloads."""
    hdr = header_from_value(value)
    alt, v = iri["iRIContents"]
    rec: dict[str, Any] = {
        "ts": _dt.datetime.fromtimestamp((hdr.ts_ns or 0) / 1e9, _dt.timezone.utc),
        "liid": _liid_text(hdr.liid), "cin": hdr.cin, "seq": hdr.seq,
        "service": {"iPIRI": "ip-access", "emailIRI": "email", "iPMMIRI": "ip-multimedia"}.get(alt, alt),
        "iri_type": iri.get("iRIType"), "detail": json.dumps(_jsonable(v), sort_keys=True),
    }
    if alt == "iPIRI":
        c = v["iPIRIContents"]
        rec.update(event=c.get("accessEventType"), username=_jsonable(c.get("targetUsername")),
                   target_ip=_ip_text(c.get("targetIPAddress")))
    elif alt == "emailIRI":
        rec.update(event=v.get("eventType"), client_ip=_ip_text(v.get("client-Address")),
                   server_ip=_ip_text(v.get("server-Address")), client_port=v.get("client-Port"),
                   server_port=v.get("server-Port"), protocol=v.get("protocol-ID"),
                   sender=v.get("e-mail-Sender"), recipients=v.get("e-mail-Recipients"),
                   status=v.get("status"))
    elif alt == "iPMMIRI":
        kind, c = v["iPMMIRIContents"]
        if kind in ("sIPMessage", "iRIOnlySIPMessage"):
            rec.update(event=_sip_event(c["sIPContent"]), client_ip=_ip_text(c["iPSourceAddress"]),
                       server_ip=_ip_text(c["iPDestinationAddress"]), protocol="sip")
        elif kind in ("originalIPMMMessage", "iRIOnlyOriginalIPMMMessage"):
            rec.update(event=_sip_event(_l4_payload(c) or b""), protocol="sip")
    return rec


def _l4_payload(pkt: bytes) -> bytes | None:
    """UDP/TCP payload of a raw IP packet (for naming a SIP message), None if not parseable."""
    if len(pkt) < 20:
        return None
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 0x0F) * 4
        proto, rest = pkt[9], pkt[ihl:]
    elif pkt[0] >> 4 == 6 and len(pkt) >= 40:
        proto, rest = pkt[6], pkt[40:]
    else:
        return None
    if proto == 17:
        return rest[8:]
    if proto == 6 and len(rest) >= 20:
        return rest[(rest[12] >> 4) * 4:]
    return None


def _sip_packet(iri: dict[str, Any]) -> bytes | None:
    """The SIP message of an IP multimedia IRI as an IP packet, for the pcap.

    originalIPMMMessage already is one. An sIPMessage only has addresses and the SIP text, so a
    UDP datagram 5060 -> 5060 is synthesised around it (the SIP analyzer needs a packet; the
    ports are not in the IRI). Returns None for other IRIs.
    """
    alt, v = iri["iRIContents"]
    if alt != "iPMMIRI":
        return None
    kind, c = v["iPMMIRIContents"]
    if kind in ("originalIPMMMessage", "iRIOnlyOriginalIPMMMessage"):
        return bytes(c)
    if kind not in ("sIPMessage", "iRIOnlySIPMessage"):
        return None
    src, dst = _ip_text(c["iPSourceAddress"]), _ip_text(c["iPDestinationAddress"])
    try:
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    except ValueError:
        return None
    payload = bytes(c["sIPContent"])
    udp = struct.pack("!HHHH", 5060, 5060, 8 + len(payload), 0) + payload
    if s.version == 4 and d.version == 4:
        if len(udp) + 20 > 65535:
            return None
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, s.packed, d.packed)
        csum = _ip_checksum(hdr)
        return hdr[:10] + struct.pack("!H", csum) + hdr[12:] + udp
    if s.version == 6 and d.version == 6:
        return struct.pack("!IHBB16s16s", 0x60000000, len(udp), 17, 64, s.packed, d.packed) + udp
    return None


def _ip_checksum(hdr: bytes) -> int:
    total = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# ---------------------------------------------------------------------------------------------
# The asyncio server
# ---------------------------------------------------------------------------------------------


class _HandoverProtocol(asyncio.Protocol):
    def __init__(self, server: LemfServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.conn = Connection("?")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.conn = Connection(f"{peer[0]}:{peer[1]}" if peer else "?")
        self.server.connections.add(self)
        self.server.store.event("connected", peer=self.conn.peer)

    def data_received(self, data: bytes) -> None:
        try:
            out = self.server.store.feed(self.conn, data)
        except LemfError as e:
            self.server.store.event("closed", peer=self.conn.peer, reason=str(e))
            assert self.transport is not None
            self.transport.abort()
            return
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        if self.conn.leftover:
            self.server.store.event("partial_pdu_dropped", peer=self.conn.peer, bytes=len(self.conn.leftover))
        self.server.store.event("disconnected", peer=self.conn.peer, error=str(exc) if exc else None)


class LemfServer:
    """TCP (optionally TLS) listener feeding a :class:`LemfStore`; both HI2 and HI3 may use it."""

    def __init__(self, store: LemfStore, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.store = store
        self.host, self.port, self.tls = host, port, tls
        self.connections: set[_HandoverProtocol] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        """Listen; returns the bound port."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(lambda: _HandoverProtocol(self), self.host, self.port,
                                                    ssl=self.tls, reuse_address=True)
        except OSError as e:
            raise LemfError(f"cannot listen on {self.host}:{self.port}: {e.strerror or e}") from None
        self.port = self._server.sockets[0].getsockname()[1]
        self.store.event("listening", host=self.host, port=self.port)
        self.store.sync()
        return self.port

    async def close(self) -> None:
        """Stop listening, drop connections, sync the store (the store stays open)."""
        if self._server is not None:
            self._server.close()
            for c in list(self.connections):
                if c.transport is not None:
                    c.transport.abort()
            await asyncio.sleep(0)  # let connection_lost run while the store is still open
            await self._server.wait_closed()
            self._server = None
        self.store.sync()


async def serve(directory: str | os.PathLike[str], host: str, port: int, *, tls: ssl.SSLContext | None = None,
                fsync: bool = True, stop: asyncio.Event | None = None,
                on_ready: Callable[[int], None] | None = None, sync_every: float = 1.0) -> LemfStore:
    """Run a LEMF until ``stop`` is set (or the task is cancelled); returns the closed store."""
    warm_up()
    store = LemfStore(directory, fsync=fsync)
    server = LemfServer(store, host, port, tls)
    try:
        bound = await server.start()
        if on_ready is not None:
            on_ready(bound)
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), sync_every)
            except asyncio.TimeoutError:
                store.sync()
    finally:
        await server.close()
        store.close()
    return store


def warm_up() -> None:
    """Load (or compile) the numba kernels and the ASN.1 schema before the first PDU arrives, so
    the first keep-alive is not answered late."""
    with_tri = ps_pdu_tri(TRI_KEEPALIVE, b"warm-up", 0, 0)
    buf = np.frombuffer(with_tri, np.uint8)
    res = scan(buf)
    _stream_keys(buf, res.info, np.zeros(len(res.info), np.uint64))
    _check_sequences(np.zeros(1, np.int64), np.zeros(1, np.int64), np.full(1, -1, np.int64),
                     np.zeros(1, np.int8), np.zeros(1, np.int64))


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); LemfError if malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise LemfError(f"--listen wants HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def main(argv: list[str] | None = None) -> None:
    """``python -m lawtap.etsi.lemf --listen HOST:PORT --store DIR``: a bare LEMF for tests and
    benchmarks (prints ``listening PORT``; SIGTERM/SIGINT stop it cleanly)."""
    import argparse
    import signal

    ap = argparse.ArgumentParser(prog="python -m lawtap.etsi.lemf")
    ap.add_argument("--listen", required=True)
    ap.add_argument("--store", required=True)
    ap.add_argument("--no-fsync", action="store_true")
    args = ap.parse_args(argv)
    host, port = parse_listen(args.listen)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        store = await serve(args.store, host, port, fsync=not args.no_fsync, stop=stop,
                            on_ready=lambda p: print(f"listening {p}", flush=True))
        print(json.dumps(store.report()["counts"]), flush=True)

    asyncio.run(run())


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: numba caches and class identity
    # belong to lawtap.etsi.lemf.
    from lawtap.etsi.lemf import main as _main

    _main()
