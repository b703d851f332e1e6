"""RTP media flows (RFC 3550): per-SSRC statistics, G.711 audio hashes and WAVs; RTCP counted.

One :class:`RtpAnalyzer` per UDP flow. A flow is taken as RTP either because signalling bound it
(SDP seen by the :class:`lawtap.analyzers.calls.CallTracker` attached as ``tracker``: every
version-2 packet is accepted at once), or heuristically, SSRC by SSRC: version 2, a payload type
outside 72-76 (RTCP), and at least two forward sequence steps of 1-3 (duplicates allowed) among
the first packets of that SSRC. Packets of an SSRC waiting for the heuristic are kept (at most a
few) and accounted once it passes; a flow where no SSRC passes after
:data:`HEURISTIC_GIVE_UP` packets is abandoned (``done``), with a weird.

RTCP (second byte 200-204, or a valid compound of types 192-223) is recognised and counted per
sender SSRC, not decoded further.

One ``rtp`` record per (SSRC, direction), at ``finish``:

* ``packets`` counts every packet (duplicates too, as Wireshark does); ``lost`` = expected -
  received with expected from the extended highest sequence number (RFC 3550 A.3), so
  duplicates can make it negative;
* ``jitter`` is RFC 3550 A.8 interarrival jitter at the end of the stream, ``max_jitter`` its
  largest value (updates by marker-bit packets left out, as Wireshark does), in milliseconds, computed with the clock rate of each packet's payload type
  (telephone-event and CN packets skipped);
* ``pcm_sha256`` is the SHA-256 of the 16-bit little-endian PCM decoded from the G.711 (PCMU /
  PCMA) payloads, concatenated in capture order, other payload types (CN, telephone-event, ...)
  excluded — the same bytes ``sox -t ul|al -r 8000 -c 1 in.raw -t s16 -e signed-integer -L``
  writes from the concatenated payloads;
* ``call_id`` when signalling bound the flow.

A G.711 stream also yields a mono 8 kHz WAV (:class:`FileObject`, source "RTP",
``<call_id>-<ssrc>.wav``, or ``<uid>-<ssrc>.wav`` when unbound) rendered for listening: packets
in sequence order without duplicates, placed by RTP timestamp so that lost packets and silence
suppression become silence (gaps longer than :data:`MAX_FILL_SECONDS` are not filled).

:meth:`RtpAnalyzer.datagram_batch` takes a flow's datagrams of a capture batch at once, with the
same result as :meth:`~RtpAnalyzer.datagram` on each: the packets per-packet processing would
simply account to an established stream (well-formed RTP, not RTCP-like, of an SSRC that has a
stream) are accounted by numba kernels, stream by stream, along with what the
:class:`~lawtap.analyzers.calls.CallTracker` does with them; every other datagram (heuristic
phase, RTCP, malformed or non-RTP, a new SSRC...) goes through ``datagram()``, in capture order.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lawtap.analyzers import g711
from lawtap.analyzers.base import COMMON_FIELDS, ConnInfo, FileObject, StreamAnalyzer
from lawtap.analyzers.sdp import clock_rate as _clock_rate
from lawtap.analyzers.sdp import codec_name as _codec_name
from lawtap.jit import njit
from lawtap.streams.gather import gather_payloads

TS = pa.timestamp("us", tz="UTC")

RTP_SCHEMA = pa.schema(
    [
        *COMMON_FIELDS,
        pa.field("is_orig", pa.bool_()),  # direction of the stream within the flow
        pa.field("ssrc", pa.uint32()),
        pa.field("payload_type", pa.uint8()),  # the stream's main payload type
        pa.field("payload_types", pa.list_(pa.uint8())),  # every payload type seen, in order
        pa.field("codec", pa.string()),
        pa.field("clock_rate", pa.uint32()),
        pa.field("packets", pa.int64()),
        pa.field("payload_bytes", pa.int64()),
        pa.field("lost", pa.int64()),
        pa.field("first_seq", pa.uint16()),
        pa.field("last_seq", pa.uint16()),  # highest sequence number
        pa.field("jitter", pa.float64()),  # ms, RFC 3550 A.8, at the end of the stream
        pa.field("max_jitter", pa.float64()),  # ms
        pa.field("first_ts", TS),
        pa.field("last_ts", TS),
        pa.field("rtcp_packets", pa.int64()),
        pa.field("pcm_sha256", pa.string()),
        pa.field("call_id", pa.string()),
        pa.field("bound_by", pa.string()),  # "sdp" | "heuristic" | "rtcp"
    ]
)

RECORD_SCHEMAS = {"rtp": RTP_SCHEMA}

HEURISTIC_KEEP = 8  # packets kept per SSRC while the heuristic decides
HEURISTIC_GIVE_UP = 48  # unaccepted packets after which a flow is abandoned
MAX_STREAMS = 64  # SSRCs tracked per flow
PCM_CHUNK = 1 << 16  # G.711 bytes decoded at a time for the PCM hash
MAX_AUDIO_BYTES = 32 << 20  # G.711 bytes kept per stream for its WAV (about 70 minutes)
MAX_FILL_SECONDS = 60.0  # longest silence inserted for a timestamp gap
MAX_TOTAL_FILL_SECONDS = 600.0  # silence inserted in all, beyond the audio's own length
MAX_WEIRDS = 32
_NO_JITTER_CODECS = frozenset({"telephone-event", "CN"})


def _when(ts: float | None) -> _dt.datetime | None:
    """Float epoch seconds -> aware datetime (what Arrow timestamp columns take from Python)."""
    if ts is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


# ---- packets ----


@dataclass(slots=True)
class RtpPacket:
    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """An RTP packet, or None when the header, CSRC list, extension or padding do not fit."""
    n = len(data)
    if n < 12:
        return None
    b0, b1, seq, ts, ssrc = struct.unpack_from("!BBHII", data, 0)
    if b0 >> 6 != 2:
        return None
    cc = b0 & 0x0F
    off = 12 + 4 * cc
    if off > n:
        return None
    if b0 & 0x10:
        if off + 4 > n:
            return None
        (words,) = struct.unpack_from("!H", data, off + 2)
        off += 4 + 4 * words
        if off > n:
            return None
    end = n
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or off + pad > n:
            return None
        end = n - pad
    return RtpPacket(2, bool(b0 & 0x20), bool(b0 & 0x10), cc, bool(b1 & 0x80), b1 & 0x7F, seq, ts, ssrc, bytes(data[off:end]))


def rtcp_packets(data: bytes) -> list[tuple[int, int]] | None:
    """(packet type, sender SSRC) of each packet of an RTCP compound, or None if not RTCP.

    Second byte 200-204 (SR, RR, SDES, BYE, APP) is RTCP whatever follows (the RTP payload
    types 72-76 with marker are reserved for this, RFC 5761); 192-223 must also have
    consistent length fields.
    """
    n = len(data)
    if n < 4 or data[0] >> 6 != 2:
        return None
    first = data[1]
    if not 192 <= first <= 223:
        return None
    out: list[tuple[int, int]] = []
    pos = 0
    consistent = True
    while pos + 4 <= n:
        if data[pos] >> 6 != 2 or not 192 <= data[pos + 1] <= 223:
            consistent = False
            break
        (length,) = struct.unpack_from("!H", data, pos + 2)
        size = 4 * (length + 1)
        ssrc = struct.unpack_from("!I", data, pos + 4)[0] if pos + 8 <= n else 0
        out.append((data[pos + 1], ssrc))
        pos += size
        if len(out) > 64:
            break
    if pos != n:
        consistent = False
    if consistent or 200 <= first <= 204:
        return out or [(first, 0)]
    return None


def is_rtcp(data: bytes) -> bool:
    return rtcp_packets(data) is not None


def _seq_delta(a: int, b: int) -> int:
    """b - a modulo 2^16, in -32768..32767."""
    d = (b - a) & 0xFFFF
    return d - 0x10000 if d >= 0x8000 else d


# ---- per-stream state ----


_KIND_OF_CODEC = {"PCMU": 1, "PCMA": 2}  # codec name -> its code in _G711_KINDS


class AudioPackets:
    """G.711 packets kept for a WAV -- (extended sequence number, extended RTP timestamp,
    payload, codec) -- column by column.

    Why: a call's audio is tens of thousands of packets per stream, and turning each into a
    tuple (and back into arrays in :func:`stream_pcm`) cost more than decoding them. The batch
    path adds whole runs as arrays (:meth:`add_run`); the per-packet path adds one packet at a
    time (:meth:`append`), gathered into a run when the columns are read. Iterating gives the
    packets as tuples (tests compare the two paths that way).
    """

    __slots__ = ("_runs", "_loose", "count")

    def __init__(self) -> None:
        # (seqs, stamps, lengths, payloads back to back, codec codes), int64 arrays but the
        # payloads (uint8) and codes (int8)
        self._runs: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._loose: list[tuple[int, int, bytes, str]] = []
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def append(self, seq: int, stamp: int, payload: bytes, codec: str) -> None:
        self._loose.append((seq, stamp, payload, codec))
        self.count += 1

    def add_run(self, seqs: np.ndarray, stamps: np.ndarray, lens: np.ndarray, payloads: np.ndarray,
                kinds: np.ndarray) -> None:
        """Packets with these columns (``payloads``: theirs, back to back)."""
        if not len(seqs):
            return
        self._seal()
        self._runs.append((seqs, stamps, lens, payloads, kinds.astype(np.int8, copy=False)))
        self.count += len(seqs)

    def _seal(self) -> None:
        if not self._loose:
            return
        seqs, stamps, payloads, codecs = zip(*self._loose)
        self._loose = []
        self._runs.append((np.array(seqs, dtype=np.int64), np.array(stamps, dtype=np.int64),
                           np.fromiter(map(len, payloads), dtype=np.int64, count=len(payloads)),
                           np.frombuffer(bytearray(b"".join(payloads)), dtype=np.uint8),  # (writable)
                           np.array([_KIND_OF_CODEC[c] for c in codecs], dtype=np.int8)))

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(seqs, stamps, lengths, payloads back to back, codec codes) of every packet, in order."""
        self._seal()
        if not self._runs:
            return (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                    np.zeros(0, dtype=np.uint8), np.zeros(0, dtype=np.int8))
        if len(self._runs) > 1:
            self._runs = [tuple(np.concatenate(cols) for cols in zip(*self._runs))]  # type: ignore[list-item]
        return self._runs[0]

    def __iter__(self):
        seqs, stamps, lens, payloads, kinds = self.columns()
        raw = payloads.tobytes()
        ends = np.cumsum(lens).tolist()
        for seq, stamp, end, n, kind in zip(seqs.tolist(), stamps.tolist(), ends, lens.tolist(), kinds.tolist()):
            yield seq, stamp, raw[end - n : end], _G711_KINDS[kind]

    @classmethod
    def of(cls, packets: Iterable[tuple[int, int, bytes, str]]) -> AudioPackets:
        out = cls()
        for seq, stamp, payload, codec in packets:
            out.append(seq, stamp, payload, codec.upper())
        return out


class RtpStream:
    """Statistics and audio of one SSRC in one direction of a flow."""

    def __init__(self, ssrc: int, is_orig: bool) -> None:
        self.ssrc = ssrc
        self.is_orig = is_orig
        self.packets = 0
        self.payload_bytes = 0
        self.pt_counts: Counter[int] = Counter()
        self.pt_order: list[int] = []
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        # RFC 3550 A.1 sequence state
        self.base_seq = 0
        self.max_seq = 0
        self.cycles = 0
        self.bad_seq: int | None = None
        # timestamps (unwrapped) and jitter
        self.last_rtp_ts: int | None = None
        self.ts_ext = 0
        self.prev_transit: float | None = None
        self.jitter = 0.0  # timestamp units
        self.jitter_rate: int | None = None
        self.max_jitter_ms = 0.0
        # G.711
        self.pcm_hash = hashlib.sha256()
        # G.711 payloads wait here and are decoded into the hash in large vectorized chunks:
        # decoding packet by packet costs more than everything else done per RTP packet.
        self._pcm_pending = bytearray()
        self._pcm_codec: str | None = None
        self.g711_packets = 0
        self.g711_codec: str | None = None
        self.audio = AudioPackets()
        self.audio_bytes = 0
        self.audio_truncated = False
        self.call_id: str | None = None
        self.bound_by = "heuristic"
        self.codecs: dict[int, tuple[str, int, int | None]] | None = None  # rtpmap when bound

    def codec(self, pt: int) -> str | None:
        return _codec_name(pt, self.codecs)

    def add(self, pkt: RtpPacket, ts: float, keep_audio: bool = True) -> None:
        self.packets += 1
        self.payload_bytes += len(pkt.payload)
        pt = pkt.payload_type
        if pt not in self.pt_counts:
            self.pt_order.append(pt)
        self.pt_counts[pt] += 1
        if self.first_ts is None:
            self.first_ts = ts
            self.base_seq = self.max_seq = pkt.seq
            self.last_rtp_ts = pkt.timestamp
            ext_seq = pkt.seq
        else:
            ext_seq = self._update_seq(pkt.seq)
            d = (pkt.timestamp - self.last_rtp_ts) & 0xFFFFFFFF  # type: ignore[operator]
            if d >= 0x80000000:
                d -= 0x100000000
            self.ts_ext += d
            self.last_rtp_ts = pkt.timestamp
        self.last_ts = ts
        codec = self.codec(pt)
        self._jitter(pkt, codec, ts)
        if g711.is_g711(codec):
            assert codec is not None
            codec = codec.upper()
            self.g711_packets += 1
            self.g711_codec = self.g711_codec or codec
            if codec != self._pcm_codec:
                self._flush_pcm()
                self._pcm_codec = codec
            self._pcm_pending += pkt.payload
            if len(self._pcm_pending) >= PCM_CHUNK:
                self._flush_pcm()
            if keep_audio and not self.audio_truncated:
                if self.audio_bytes + len(pkt.payload) > MAX_AUDIO_BYTES:
                    self.audio_truncated = True
                else:
                    self.audio.append(ext_seq, self.ts_ext, pkt.payload, codec)
                    self.audio_bytes += len(pkt.payload)

    def _flush_pcm(self) -> None:
        if self._pcm_pending and self._pcm_codec is not None:
            # The samples' own buffer (int16, little-endian: the bytes g711.pcm_bytes gives).
            codes = np.frombuffer(self._pcm_pending, dtype=np.uint8).copy()  # (writable: the kernel path)
            self.pcm_hash.update(np.ascontiguousarray(g711.decode(codes, self._pcm_codec), dtype="<i2"))
        self._pcm_pending.clear()

    def pcm_sha256(self) -> str | None:
        """SHA-256 of the decoded PCM, payloads in capture order (as sox decodes the stream)."""
        if not self.g711_packets:
            return None
        self._flush_pcm()
        return self.pcm_hash.hexdigest()

    def _update_seq(self, seq: int) -> int:
        """RFC 3550 A.1 without probation; returns the packet's extended sequence number."""
        udelta = (seq - self.max_seq) & 0xFFFF
        if udelta < 3000:  # in order, possibly with a gap
            if seq < self.max_seq:
                self.cycles += 0x10000
            self.max_seq = seq
            self.bad_seq = None
            return self.cycles + seq
        if udelta <= 0x10000 - 100:  # a very large jump
            if self.bad_seq is not None and seq == self.bad_seq:
                # Two sequential packets: the source restarted its sequence; resync.
                self.base_seq = (seq - 1) & 0xFFFF
                self.max_seq = seq
                self.cycles = 0
                self.bad_seq = None
                return seq
            self.bad_seq = (seq + 1) & 0xFFFF
            return self.cycles + seq
        # duplicate or reordered (slightly older)
        ext = self.cycles + seq
        if seq > self.max_seq:
            ext -= 0x10000
        return ext

    def _jitter(self, pkt: RtpPacket, codec: str | None, ts: float) -> None:
        if codec in _NO_JITTER_CODECS:
            return
        rate = _clock_rate(pkt.payload_type, self.codecs)
        if not rate:
            return
        if self.jitter_rate is not None and rate != self.jitter_rate:
            self.prev_transit = None  # a codec change: restart the transit reference
        self.jitter_rate = rate
        assert self.first_ts is not None
        transit = (ts - self.first_ts) * rate - self.ts_ext
        if self.prev_transit is not None:
            d = abs(transit - self.prev_transit)
            self.jitter += (d - self.jitter) / 16.0
            ms = self.jitter * 1000.0 / rate
            # A marker bit starts a talk-spurt (its timestamp may jump after silence
            # suppression): like Wireshark, its update does not count towards the maximum.
            if ms > self.max_jitter_ms and not pkt.marker:
                self.max_jitter_ms = ms
        self.prev_transit = transit

    @property
    def expected(self) -> int:
        return self.cycles + self.max_seq - self.base_seq + 1

    @property
    def main_payload_type(self) -> int | None:
        if not self.pt_counts:
            return None
        ranked = self.pt_counts.most_common()
        for pt, _ in ranked:
            if self.codec(pt) not in _NO_JITTER_CODECS:
                return pt
        return ranked[0][0]

    def pcm(self) -> np.ndarray:
        return stream_pcm(self.audio)

    def record(self, rtcp: int = 0) -> dict[str, Any]:
        pt = self.main_payload_type
        codec = self.codec(pt) if pt is not None else None
        rate = _clock_rate(pt, self.codecs) if pt is not None else None
        return {
            "ts": self.first_ts,
            "is_orig": self.is_orig,
            "ssrc": self.ssrc,
            "payload_type": pt,
            "payload_types": list(self.pt_order),
            "codec": codec,
            "clock_rate": rate,
            "packets": self.packets,
            "payload_bytes": self.payload_bytes,
            "lost": self.expected - self.packets if self.packets else 0,
            "first_seq": self.base_seq if self.packets else None,
            "last_seq": self.max_seq if self.packets else None,
            "jitter": (self.jitter * 1000.0 / self.jitter_rate) if self.jitter_rate else None,
            "max_jitter": self.max_jitter_ms if self.jitter_rate else None,
            "first_ts": _when(self.first_ts),
            "last_ts": _when(self.last_ts),
            "rtcp_packets": rtcp,
            "pcm_sha256": self.pcm_sha256(),
            "call_id": self.call_id,
            "bound_by": self.bound_by,
        }


def stream_pcm(packets: AudioPackets | Iterable[tuple[int, int, bytes, str]], rate: int = g711.SAMPLE_RATE) -> np.ndarray:
    """Decode G.711 packets (ext seq, ext RTP ts, payload, codec) into one int16 track.

    Sequence order, duplicates dropped; each packet is placed at its RTP timestamp relative to
    the first one, the holes (loss, silence suppression) filled with silence up to
    :data:`MAX_FILL_SECONDS` each (and, in all, the audio's length or
    :data:`MAX_TOTAL_FILL_SECONDS`); overlapping or backwards timestamps just append.

    Everything runs on the packets' columns (:class:`AudioPackets`): the order is an argsort,
    placement (a sequential recurrence) and the copy of the samples run in kernels, decoding is
    one lookup per run of packets with the same codec (G.711: one sample per byte).
    """
    if not isinstance(packets, AudioPackets):
        packets = AudioPackets.of(packets)
    if not len(packets):
        return np.zeros(0, dtype=np.int16)
    seq, ts, lens, payloads, kinds = packets.columns()
    n = len(seq)
    if n > 1 and not bool(np.all(seq[1:] > seq[:-1])):  # reordered or duplicated
        order = np.argsort(seq, kind="stable")
        keep = np.ones(n, dtype=np.bool_)
        keep[1:] = seq[order][1:] != seq[order][:-1]  # first of each sequence number, as sorted() kept
        order = order[keep]
        starts_in = np.zeros(n, dtype=np.int64)
        np.cumsum(lens[:-1], out=starts_in[1:])
        ts, lens, kinds = ts[order], lens[order], kinds[order]
        moved = np.empty(int(lens.sum()), dtype=np.uint8)
        gather_payloads(np.ascontiguousarray(payloads), np.ascontiguousarray(starts_in[order]), lens, moved)
        payloads = moved
        n = len(order)
    max_fill = int(MAX_FILL_SECONDS * rate)
    # All the silence inserted stays below the audio's own length or 10 minutes (bogus
    # timestamps must not make a huge file).
    fill_budget = max(int(lens.sum()), int(MAX_TOTAL_FILL_SECONDS * rate))
    starts = np.empty(n, dtype=np.int64)
    total = _place_packets(np.ascontiguousarray(ts - ts[0]), np.ascontiguousarray(lens), max_fill, fill_budget, starts)
    track = np.zeros(total, dtype=np.int16)
    bounds = [0, *(np.flatnonzero(kinds[1:] != kinds[:-1]) + 1).tolist(), n]
    ends = np.cumsum(lens)
    for i, j in zip(bounds, bounds[1:]):
        lo = int(ends[i - 1]) if i else 0
        samples = g711.decode(payloads[lo : int(ends[j - 1])], _G711_KINDS[int(kinds[i])])
        _scatter_samples(track, starts[i:j], np.ascontiguousarray(lens[i:j]), samples)
    return track


@njit(cache=True)
def _place_packets(offs, lens, max_fill, fill_budget, starts):
    """Where each packet's samples start (see :func:`stream_pcm`); returns the track length."""
    cur = 0
    for k in range(offs.shape[0]):
        off = offs[k]
        gap = off - cur
        if gap > 0 and gap <= min(max_fill, fill_budget):
            fill_budget -= gap
            cur = off
        starts[k] = cur
        cur += lens[k]
    return cur


@njit(cache=True)
def _scatter_samples(track, starts, lens, samples):
    """Copy consecutive ``lens[k]`` samples to ``track[starts[k]:]``, k in order (through
    sub-slices, so the loop vectorizes: see ``lawtap.streams.gather.gather_payloads``)."""
    p = 0
    for k in range(starts.shape[0]):
        s = starts[k]
        n = lens[k]
        src = samples[p : p + n]
        dst = track[s : s + n]
        for j in range(min(dst.shape[0], src.shape[0])):
            dst[j] = src[j]
        p += n


_SAFE = re.compile(r"[^A-Za-z0-9@._+\-]+")


def safe_name(s: str, limit: int = 96) -> str:
    """A file-name-safe rendering of a Call-ID or uid."""
    out = _SAFE.sub("_", s).strip("._") or "call"
    return out[:limit]


# ---- batch path (RtpAnalyzer.datagram_batch) ----
#
# A batch of one flow's datagrams is parsed by one kernel; every packet that per-packet
# processing would simply account to an existing stream (a well-formed RTP packet, not RTCP,
# of an SSRC that already has a stream with packets) is accounted in runs, stream by stream,
# by a second kernel running the same recurrences as RtpStream.add / _update_seq / _jitter and
# CallTracker._rtp. Every other packet goes through datagram(), in capture order.

# Rows of the header array returned by _rtp_headers.
_H_OK, _H_SEQ, _H_TS, _H_SSRC, _H_PT, _H_MARK, _H_OFF, _H_LEN = range(8)
# Slots of the integer state vector of _stream_run (in: 0-15, out: 16-21).
(_S_BASE, _S_MAX, _S_CYCLES, _S_BAD, _S_LAST_TS, _S_TS_EXT, _S_JRATE, _S_PREV_OK, _S_TRUNC, _S_ABYTES,
 _S_KEEP, _S_T_EXISTS, _S_T_MAX, _S_T_CYCLES, _S_T_LAST_TS, _S_T_TS_EXT,
 _S_PAYBYTES, _S_G711, _S_T_FIRST, _S_T_COUNT, _S_T_BYTES, _S_KEPT) = range(22)
_S_SIZE = 22
# Slots of the float state vector (in: 0-3, out: 4).
_F_FIRST_TS, _F_PREV_TRANSIT, _F_JITTER, _F_MAX_JITTER, _F_TMAX = range(5)
# Rows of the per-packet output of _stream_run.
_O_EXT, _O_TS_EXT, _O_KIND, _O_KEEP, _O_TKIND, _O_TSEQ, _O_TTS, _O_END, _O_LEN = range(9)

# Below these sizes the kernels' fixed cost (tens of microseconds) exceeds the per-packet path's.
BATCH_MIN = 6  # datagrams in a datagram_batch call
RUN_MIN = 6  # consecutive packets the kernels could take (between packets they can't)
_INT_LIMIT = 1 << 60  # stream counters beyond this (never in practice) stay on the per-packet path
_G711_KINDS = (None, "PCMU", "PCMA")


@njit(cache=True)
def _rtp_headers(data, offs, lens, H):
    """Fill ``H`` (8 x n) with the RTP header fields of each datagram; False if a datagram is
    outside ``data``. ``H[0]`` is 1 for a datagram the per-packet path parses as an RTP packet
    (length, version 2, CSRCs, extension and padding fit) that is not RTCP (second byte
    outside 192-223), else 0."""
    n = offs.shape[0]
    size = data.shape[0]
    for i in range(n):
        off = offs[i]
        ln = lens[i]
        if off < 0 or ln < 0 or off > size or ln > size - off:
            return False
        H[0, i] = 0
        if ln < 12:
            continue
        b0 = np.int64(data[off])
        b1 = np.int64(data[off + 1])
        if (b0 >> 6) != 2 or (b1 >= 192 and b1 <= 223):
            continue
        p = 12 + 4 * (b0 & 0x0F)
        if p > ln:
            continue
        if b0 & 0x10:
            if p + 4 > ln:
                continue
            words = (np.int64(data[off + p + 2]) << 8) | np.int64(data[off + p + 3])
            p += 4 + 4 * words
            if p > ln:
                continue
        end = ln
        if b0 & 0x20:
            pad = np.int64(data[off + ln - 1])
            if pad == 0 or p + pad > ln:
                continue
            end = ln - pad
        H[0, i] = 1
        H[1, i] = (np.int64(data[off + 2]) << 8) | np.int64(data[off + 3])
        H[2, i] = ((np.int64(data[off + 4]) << 24) | (np.int64(data[off + 5]) << 16)
                   | (np.int64(data[off + 6]) << 8) | np.int64(data[off + 7]))
        H[3, i] = ((np.int64(data[off + 8]) << 24) | (np.int64(data[off + 9]) << 16)
                   | (np.int64(data[off + 10]) << 8) | np.int64(data[off + 11]))
        H[4, i] = b1 & 0x7F
        H[5, i] = b1 >> 7
        H[6, i] = off + p
        H[7, i] = end - p
    return True


@njit(cache=True)
def _assign_streams(H, keys, start, ekeys, sidx):
    """``sidx[i]`` (i >= start): index in ``ekeys`` of the datagram's (direction, SSRC) key when
    it is an RTP packet of one of those streams, else -1."""
    n = keys.shape[0]
    ne = ekeys.shape[0]
    for i in range(start, n):
        s = -1
        if H[0, i] == 1:
            k = keys[i]
            for j in range(ne):
                if ekeys[j] == k:
                    s = j
                    break
        sidx[i] = s


@njit(cache=True)
def _stream_run(data, H, times, idx, kind_tab, rate_tab, tkind_tab, S, F, pt_cnt, pt_first, max_audio):
    """Account the RTP packets ``idx`` (ascending) of one existing stream.

    The same recurrences, in the same floating-point order, as RtpStream.add (sequence
    extension, timestamp unwrapping, RFC 3550 jitter, G.711 bookkeeping) and, where
    ``tkind_tab`` says the call tracker keeps a packet's audio, CallTracker._rtp's own
    sequence/timestamp unwrapping. State comes in and goes out through ``S`` and ``F``.
    Returns the per-packet outputs and the stream's G.711 payloads gathered in order.
    """
    m = idx.shape[0]
    out = np.zeros((9, m), np.int64)
    total = 0
    for k in range(m):
        i = idx[k]
        if kind_tab[H[4, i]] != 0:
            total += H[7, i]
    blob = np.empty(total, np.uint8)
    base_seq = S[0]
    max_seq = S[1]
    cycles = S[2]
    bad_seq = S[3]
    last_ts = S[4]
    ts_ext = S[5]
    jrate = S[6]
    prev_ok = S[7]
    trunc = S[8]
    abytes = S[9]
    keep_audio = S[10]
    t_exists = S[11]
    t_max = S[12]
    t_cycles = S[13]
    t_last = S[14]
    t_ext = S[15]
    first_ts = F[0]
    prev_transit = F[1]
    jitter = F[2]
    max_jitter = F[3]
    tmax = -np.inf
    paybytes = 0
    g_count = 0
    t_first = -1
    t_count = 0
    t_bytes = 0
    kept = 0
    pos = 0
    for k in range(m):
        i = idx[k]
        seq = H[1, i]
        rts = H[2, i]
        pt = H[4, i]
        plen = H[7, i]
        t = times[i]
        if t > tmax:
            tmax = t
        paybytes += plen
        pt_cnt[pt] += 1
        if pt_first[pt] < 0:
            pt_first[pt] = k
        # RtpStream._update_seq
        udelta = (seq - max_seq) & 0xFFFF
        if udelta < 3000:
            if seq < max_seq:
                cycles += 0x10000
            max_seq = seq
            bad_seq = -1
            ext = cycles + seq
        elif udelta <= 0x10000 - 100:
            if bad_seq != -1 and seq == bad_seq:
                base_seq = (seq - 1) & 0xFFFF
                max_seq = seq
                cycles = 0
                bad_seq = -1
                ext = seq
            else:
                bad_seq = (seq + 1) & 0xFFFF
                ext = cycles + seq
        else:
            ext = cycles + seq
            if seq > max_seq:
                ext -= 0x10000
        d = (rts - last_ts) & 0xFFFFFFFF
        if d >= 0x80000000:
            d -= 0x100000000
        ts_ext += d
        last_ts = rts
        out[0, k] = ext
        out[1, k] = ts_ext
        out[8, k] = plen
        # RtpStream._jitter
        rate = rate_tab[pt]
        if rate > 0:
            if jrate != 0 and rate != jrate:
                prev_ok = 0
            jrate = rate
            transit = (t - first_ts) * rate - ts_ext
            if prev_ok:
                dd = abs(transit - prev_transit)
                jitter += (dd - jitter) / 16.0
                ms = jitter * 1000.0 / rate
                if ms > max_jitter and H[5, i] == 0:
                    max_jitter = ms
            prev_transit = transit
            prev_ok = 1
        # G.711
        kind = kind_tab[pt]
        if kind != 0:
            g_count += 1
            out[2, k] = kind
            # Unsigned indices: the copy loop then compiles to vector moves (a slice
            # assignment or signed indices copy byte by byte, ~20x slower).
            src = np.uint64(H[6, i])
            dst = np.uint64(pos)
            for j in range(np.uint64(plen)):
                blob[dst + j] = data[src + j]
            pos += plen
            if keep_audio and not trunc:
                if abytes + plen > max_audio:
                    trunc = 1
                else:
                    out[3, k] = 1
                    abytes += plen
                    kept += 1
        out[7, k] = pos
        # CallTracker._rtp
        tkind = tkind_tab[pt]
        if tkind != 0:
            if not t_exists:
                t_exists = 1
                t_max = seq
                t_last = rts
                tseq = seq
                t_first = i
            else:
                ud = (seq - t_max) & 0xFFFF
                if ud < 0x8000:
                    if seq < t_max:
                        t_cycles += 0x10000
                    t_max = seq
                    tseq = t_cycles + seq
                else:
                    tseq = t_cycles + seq
                    if seq > t_max:
                        tseq -= 0x10000
                d = (rts - t_last) & 0xFFFFFFFF
                if d >= 0x80000000:
                    d -= 0x100000000
                t_ext += d
                t_last = rts
            out[4, k] = tkind
            out[5, k] = tseq
            out[6, k] = t_ext
            t_count += 1
            t_bytes += plen
    S[0] = base_seq
    S[1] = max_seq
    S[2] = cycles
    S[3] = bad_seq
    S[4] = last_ts
    S[5] = ts_ext
    S[6] = jrate
    S[7] = prev_ok
    S[8] = trunc
    S[9] = abytes
    S[11] = t_exists
    S[12] = t_max
    S[13] = t_cycles
    S[14] = t_last
    S[15] = t_ext
    S[16] = paybytes
    S[17] = g_count
    S[18] = t_first
    S[19] = t_count
    S[20] = t_bytes
    S[21] = kept
    F[1] = prev_transit
    F[2] = jitter
    F[3] = max_jitter
    F[4] = tmax
    return out, blob


_NO_KIND = np.zeros(128, dtype=np.int64)


@dataclass(slots=True)
class _Batch:
    """One datagram_batch call's arrays."""

    data: np.ndarray
    offs: np.ndarray
    lens: np.ndarray
    is_orig: np.ndarray
    times: np.ndarray
    H: np.ndarray  # _rtp_headers
    sidx: np.ndarray  # _assign_streams: index of the packet's stream in the fast streams, or -1
    mv: memoryview
    targets: dict  # is_orig -> _tracker_target
_calls_mod: Any = None


def _calls() -> Any:
    """lawtap.analyzers.calls (imported late: it imports this module)."""
    global _calls_mod
    if _calls_mod is None:
        from lawtap.analyzers import calls

        _calls_mod = calls
    return _calls_mod


def _pt_tables(codecs: dict | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per payload type under ``codecs`` (a stream's rtpmap or None): G.711 kind (0 none,
    1 PCMU, 2 PCMA), the clock rate RtpStream._jitter uses (0: skipped), and whether the
    kernels can take it (rates that fit their integers)."""
    kind = np.zeros(128, dtype=np.int64)
    rate = np.zeros(128, dtype=np.int64)
    ok = True
    for pt in range(128):
        c = _codec_name(pt, codecs)
        if g711.is_g711(c):
            kind[pt] = 1 if c.upper() == "PCMU" else 2  # type: ignore[union-attr]
        if c in _NO_JITTER_CODECS:
            continue
        r = _clock_rate(pt, codecs)
        if r:
            if type(r) is int and 0 < r < (1 << 31):
                rate[pt] = r
            else:
                ok = False
    return kind, rate, ok


_SHARED_TABLES: dict[Any, tuple[np.ndarray, np.ndarray, bool]] = {}


def _shared_tables(codecs: dict | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """_pt_tables, shared by every rtpmap with the same content (each call's streams and
    bindings hold their own copies of a few common maps). The arrays are never written."""
    try:
        key = None if codecs is None else frozenset(codecs.items())
        hit = _SHARED_TABLES.get(key)
    except TypeError:  # unhashable rtpmap values
        return _pt_tables(codecs)
    if hit is None:
        if len(_SHARED_TABLES) > 1024:
            _SHARED_TABLES.clear()
        hit = _SHARED_TABLES[key] = _pt_tables(codecs)
    return hit


def _row(out: np.ndarray, sel: np.ndarray | None, r: int) -> np.ndarray:
    """Row ``r`` of a run's per-packet output, at positions ``sel`` (None: all)."""
    return out[r] if sel is None else out[r][sel]


def _rows_equal(out: np.ndarray, sel: np.ndarray | None) -> bool:
    """The tracker's (seq, ts, codec) of these packets equal the stream's."""
    a = out[_O_EXT : _O_KIND + 1]
    b = out[_O_TKIND : _O_TTS + 1][[1, 2, 0]]  # (tseq, tts, tkind)
    if sel is not None:
        a, b = a[:, sel], b[:, sel]
    return bool(np.array_equal(a, b))


def _select_payloads(blob: np.ndarray, lens: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Payloads ``pick`` of the back-to-back ``blob`` (payload k ``lens[k]`` long), back to back."""
    starts = np.cumsum(lens) - lens
    out = np.empty(int(lens[pick].sum()), dtype=np.uint8)
    gather_payloads(blob, np.ascontiguousarray(starts[pick]), np.ascontiguousarray(lens[pick]), out)
    return out


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is b
    return bool(np.array_equal(a, b))


def _pcm_feed(st: RtpStream, blob: np.ndarray, kinds: np.ndarray, ends: np.ndarray) -> None:
    """RtpStream.add's PCM bookkeeping for consecutive G.711 payloads: ``blob`` holds them
    back to back, payload k ending at ``ends[k]``, of codec ``kinds[k]``. Same flushes (codec
    changes, pending bytes reaching PCM_CHUNK after a payload) as packet by packet."""
    view = memoryview(blob)
    changes = (np.flatnonzero(kinds[1:] != kinds[:-1]) + 1).tolist() if len(kinds) > 1 else []
    bounds = [0, *changes, len(kinds)]
    for lo, hi in zip(bounds, bounds[1:]):
        codec = _G711_KINDS[int(kinds[lo])]
        if codec != st._pcm_codec:
            st._flush_pcm()
            st._pcm_codec = codec
        E = ends[lo:hi]
        p = int(ends[lo - 1]) if lo else 0
        last = int(E[-1])
        while True:
            need = PCM_CHUNK - len(st._pcm_pending)
            k = int(np.searchsorted(E, p + need, side="left")) if need > 0 else 0
            if k >= len(E):
                st._pcm_pending += view[p:last]
                break
            e = int(E[k])
            st._pcm_pending += view[p:e]
            st._flush_pcm()
            p = e
            if p >= last:
                break


# ---- the analyzer ----


class RtpAnalyzer(StreamAnalyzer):
    """RTP/RTCP over one UDP flow."""

    service = "rtp"

    def __init__(self, conn: ConnInfo, tracker: Any = None, write_wav: bool = True) -> None:
        super().__init__(conn)
        self.tracker = tracker
        self.write_wav = write_wav
        self.done = False
        self.streams: dict[tuple[bool, int], RtpStream] = {}
        self.rtcp: Counter[tuple[bool, int]] = Counter()
        self.rtcp_packets = 0
        self._rtcp_first: dict[tuple[bool, int], float] = {}
        self.non_rtp = 0
        self._candidates: dict[tuple[bool, int], list[tuple[RtpPacket, float]]] = {}
        self._unaccepted = 0
        self._weird_count = 0
        self._finished = False
        self._table_cache: dict[int, tuple] = {}  # id(rtpmap) -> (rtpmap, tables), batch path

    # -- contract --
    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self.done:
            return
        try:
            self._datagram(is_orig, data, ts)
        except Exception as e:  # never raise on input
            self._weird("rtp_analyzer_error", repr(e)[:200])

    def finish(self, ts: float) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            self._finish()
        except Exception as e:
            self._weird("rtp_analyzer_error", repr(e)[:200])

    # -- batch path --
    def datagram_batch(self, data: np.ndarray, offs: np.ndarray, lens: np.ndarray, is_orig: np.ndarray,
                       times: np.ndarray) -> None:
        """Several datagrams of this flow, in capture order: the same result as :meth:`datagram`
        on each, with the packets of established streams accounted by vectorized kernels."""
        if self.done:
            return
        args = self._batch_args(data, offs, lens, is_orig, times)
        if args is None:
            super().datagram_batch(data, offs, lens, is_orig, times)
            return
        try:
            done = self._batch(*args)
        except Exception as e:  # never raise on input
            self._weird("rtp_analyzer_error", repr(e)[:200])
            return
        if not done:  # a datagram outside the buffer: per-packet, as the base class slices it
            super().datagram_batch(data, offs, lens, is_orig, times)

    def _batch_args(self, data: Any, offs: Any, lens: Any, is_orig: Any, times: Any) -> tuple | None:
        """Normalized arrays for the batch path, or None where it does not apply."""
        try:
            n = len(offs)
        except TypeError:
            return None
        if n < BATCH_MIN:
            return None
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1 and data.flags.c_contiguous):
            return None
        for a in (offs, lens, is_orig, times):
            if not isinstance(a, np.ndarray) or a.ndim != 1 or len(a) != n:
                return None
        if offs.dtype.kind not in "iu" or lens.dtype.kind not in "iu" or times.dtype.kind != "f":
            return None
        if is_orig.dtype.kind not in "biuf":
            return None
        tr = self.tracker
        if tr is not None:
            if type(tr) is not _calls().CallTracker:
                return None  # another tracker: it gets its packets one by one
            c = self.conn
            if (c.orig_h, c.orig_p) == (c.resp_h, c.resp_p):
                return None  # both directions would share the tracker's audio state
        return (
            data,
            np.ascontiguousarray(offs, dtype=np.int64),
            np.ascontiguousarray(lens, dtype=np.int64),
            np.ascontiguousarray(is_orig, dtype=np.bool_),
            np.ascontiguousarray(times, dtype=np.float64),
        )

    def _batch(self, data: np.ndarray, offs: np.ndarray, lens: np.ndarray, is_orig: np.ndarray,
               times: np.ndarray) -> bool:
        """Runs of packets of the streams the kernels can take go to _run, every other
        datagram to datagram(), in order; after a datagram that started a stream, the rest is
        reassigned. False (nothing done) when a datagram lies outside ``data``."""
        n = len(offs)
        H = np.empty((8, n), dtype=np.int64)
        if not _rtp_headers(data, offs, lens, H):
            return False
        keys = H[_H_SSRC] | (is_orig.astype(np.int64) << 32)
        targets = {True: None, False: None}
        if self.tracker is not None:
            targets = {True: self._tracker_target(True), False: self._tracker_target(False)}
        bt = _Batch(data, offs, lens, is_orig, times, H, np.empty(n, dtype=np.int64), memoryview(data), targets)
        sidx, mv = bt.sidx, bt.mv
        pos = 0
        while pos < n:
            streams = self._fast_streams(targets)
            nstreams = len(self.streams)
            if streams:
                ekeys = np.array([(int(st.is_orig) << 32) | st.ssrc for st in streams], dtype=np.int64)
                _assign_streams(H, keys, pos, ekeys, sidx)
            else:
                sidx[pos:] = -1
            slow = np.flatnonzero(sidx[pos:] < 0) + pos
            restart = False
            for j in slow.tolist():
                if j > pos:
                    self._run(bt, pos, j, streams)
                off = int(offs[j])
                self.datagram(bool(is_orig[j]), bytes(mv[off : off + int(lens[j])]), float(times[j]))
                pos = j + 1
                if self.done:
                    return True
                if len(self.streams) != nstreams:
                    restart = True  # a new stream: its next packets may take the fast path
                    break
            if not restart:
                if pos < n:
                    self._run(bt, pos, n, streams)
                return True
        return True

    def _run(self, bt: _Batch, a: int, b: int, streams: list[RtpStream]) -> None:
        """Datagrams a..b-1 (packets of fast streams): by the kernels, or one by one when few."""
        if b - a >= RUN_MIN:
            self._fast_run(bt, a, b, streams)
        else:
            self._slow(bt, a, b)

    def _slow(self, bt: _Batch, a: int, b: int) -> None:
        """Datagrams a..b-1 through datagram()."""
        mv = bt.mv
        for off, n, orig, t in zip(bt.offs[a:b].tolist(), bt.lens[a:b].tolist(), bt.is_orig[a:b].tolist(), bt.times[a:b].tolist()):
            self.datagram(orig, bytes(mv[off : off + n]), t)

    def _tracker_target(self, is_orig: bool) -> tuple | None:
        """What CallTracker._rtp finds for a packet of this direction: (binding, call, sender,
        src, dst), or None when it returns None. Constant during a batch (only signalling
        changes bindings and calls)."""
        return self.tracker.media_target(self.conn, is_orig)

    def _tables(self, codecs: dict | None) -> tuple[np.ndarray, np.ndarray, bool]:
        """(G.711 kind, jitter clock rate, usable) per payload type under ``codecs``."""
        if not codecs:
            codecs = None
        cache = self._table_cache
        hit = cache.get(id(codecs))
        if hit is not None and hit[0] is codecs:
            return hit[1]
        tabs = _shared_tables(codecs)
        if len(cache) > 64:
            cache.clear()
        cache[id(codecs)] = (codecs, tabs)
        return tabs

    def _fast_streams(self, targets: dict) -> list[RtpStream]:
        """Streams whose packets the kernels can account."""
        out = []
        for st in self.streams.values():
            if st.packets <= 0 or st.first_ts is None or st.last_rtp_ts is None:
                continue
            if not (-_INT_LIMIT < st.ts_ext < _INT_LIMIT and 0 <= st.cycles < _INT_LIMIT):
                continue
            codecs = st.codecs
            if codecs is None:
                tg = targets[st.is_orig]
                if tg is not None and tg[0].rtpmap:
                    codecs = tg[0].rtpmap  # what _account will copy at the stream's next packet
            if not self._tables(codecs)[2]:
                continue
            out.append(st)
        return out

    def _fast_run(self, bt: _Batch, a: int, b: int, streams: list[RtpStream]) -> None:
        """Datagrams a..b-1, all RTP packets of the fast ``streams``, by the kernels."""
        seg = bt.sidx[a:b]
        targets = bt.targets
        present = np.flatnonzero(np.bincount(seg, minlength=len(streams))).tolist()
        # What CallTracker.rtp_packet does with each stream's packets (streams without a
        # binding: nothing): tinfo[s] = (target, audio key or None when it keeps no audio,
        # its existing _Audio or None, G.711 kind per payload type under the binding's
        # rtpmap). Runs whose audio could reach the call's limits go packet by packet.
        tinfo: dict[int, tuple] = {}
        if self.tracker is not None:
            tr = self.tracker
            new: dict[int, int] = {}
            calls: dict[int, Any] = {}
            for s in present:
                st = streams[s]
                tg = targets[st.is_orig]
                if tg is None:
                    continue
                bnd, call, sender, src, dst = tg
                if not tr.write_wav or call.audio_truncated:
                    tinfo[s] = (tg, None, None, None)
                    continue
                akey = (sender, st.ssrc, src, dst)
                audio = call.audio.get(akey)
                if audio is None and len(call.audio) >= 32:
                    tinfo[s] = (tg, None, None, None)  # no room for this stream's audio
                    continue
                if audio is None:
                    new[id(call)] = new.get(id(call), 0) + 1
                calls[id(call)] = call
                tinfo[s] = (tg, akey, audio, self._tables(bnd.rtpmap)[0])
            if calls:
                total = int(bt.lens[a:b].sum())
                for cid, call in calls.items():
                    if len(call.audio) + new.get(cid, 0) > 32 or call.audio_bytes + total > _calls().MAX_CALL_AUDIO_BYTES:
                        self._slow(bt, a, b)
                        return
        created = []
        for s in present:
            st = streams[s]
            idx = np.flatnonzero(seg == s) + a
            ti = tinfo.get(s)
            if ti is not None:
                bnd = ti[0][0]
                if st.call_id is None:
                    st.call_id = bnd.call_id
                if st.codecs is None and bnd.rtpmap:
                    st.codecs = dict(bnd.rtpmap)
                if st.bound_by == "heuristic" and st.packets == 0:
                    st.bound_by = "sdp"
            r = self._account_run(st, bt, idx, ti)
            if r is not None:
                created.append(r)
        # New tracker audio streams, in the order of their first packet.
        created.sort(key=lambda r: r[0])
        for _, call, akey, audio in created:
            call.audio[akey] = audio

    def _account_run(self, st: RtpStream, bt: _Batch, idx: np.ndarray, ti: tuple | None) -> tuple | None:
        """Account packets ``idx`` to ``st`` (and to the call tracker as ``ti`` says, see
        _fast_run); returns a new tracker audio stream to register, with its first packet."""
        H, times = bt.H, bt.times
        kind_tab, rate_tab, _ = self._tables(st.codecs)
        S = np.zeros(_S_SIZE, dtype=np.int64)
        F = np.zeros(5, dtype=np.float64)
        S[_S_BASE] = st.base_seq
        S[_S_MAX] = st.max_seq
        S[_S_CYCLES] = st.cycles
        S[_S_BAD] = -1 if st.bad_seq is None else st.bad_seq
        S[_S_LAST_TS] = st.last_rtp_ts
        S[_S_TS_EXT] = st.ts_ext
        S[_S_JRATE] = st.jitter_rate or 0
        S[_S_PREV_OK] = st.prev_transit is not None
        S[_S_TRUNC] = st.audio_truncated
        S[_S_ABYTES] = st.audio_bytes
        S[_S_KEEP] = bool(self.write_wav)
        F[_F_FIRST_TS] = st.first_ts
        F[_F_PREV_TRANSIT] = st.prev_transit if st.prev_transit is not None else 0.0
        F[_F_JITTER] = st.jitter
        F[_F_MAX_JITTER] = st.max_jitter_ms
        tkind_tab = _NO_KIND
        audio = None
        if ti is not None and ti[1] is not None:
            tkind_tab = ti[3]
            audio = ti[2]
            if audio is not None:
                S[_S_T_EXISTS] = 1
                S[_S_T_MAX] = audio.max_seq
                S[_S_T_CYCLES] = audio.cycles
                S[_S_T_LAST_TS] = audio.last_ts
                S[_S_T_TS_EXT] = audio.ts_ext
        pt_cnt = np.zeros(128, dtype=np.int64)
        pt_first = np.full(128, -1, dtype=np.int64)
        out, blob = _stream_run(bt.data, H, times, idx, kind_tab, rate_tab, tkind_tab, S, F, pt_cnt, pt_first, MAX_AUDIO_BYTES)
        m = len(idx)
        # -- RtpStream state --
        st.packets += m
        st.payload_bytes += int(S[_S_PAYBYTES])
        pts = np.flatnonzero(pt_cnt).tolist()
        if len(pts) > 1:
            pts.sort(key=lambda p: int(pt_first[p]))
        for pt in pts:
            if pt not in st.pt_counts:
                st.pt_order.append(pt)
            st.pt_counts[pt] += int(pt_cnt[pt])
        st.last_ts = float(times[idx[-1]])
        st.base_seq = int(S[_S_BASE])
        st.max_seq = int(S[_S_MAX])
        st.cycles = int(S[_S_CYCLES])
        st.bad_seq = None if S[_S_BAD] < 0 else int(S[_S_BAD])
        st.last_rtp_ts = int(S[_S_LAST_TS])
        st.ts_ext = int(S[_S_TS_EXT])
        st.jitter_rate = int(S[_S_JRATE]) or None
        st.prev_transit = float(F[_F_PREV_TRANSIT]) if S[_S_PREV_OK] else None
        st.jitter = float(F[_F_JITTER])
        st.max_jitter_ms = float(F[_F_MAX_JITTER])
        st.audio_truncated = bool(S[_S_TRUNC])
        st.audio_bytes = int(S[_S_ABYTES])
        # -- G.711: PCM hash, kept audio --
        g = int(S[_S_G711])
        kept = int(S[_S_KEPT])
        t_count = int(S[_S_T_COUNT])
        gsel = None  # positions of the G.711 packets in the run (None: all)
        glen = None
        if g:
            st.g711_packets += g
            if g == m:
                gk, gend, glen = out[_O_KIND], out[_O_END], out[_O_LEN]
            else:
                gsel = np.flatnonzero(out[_O_KIND])
                gk, gend, glen = out[_O_KIND][gsel], out[_O_END][gsel], out[_O_LEN][gsel]
            if st.g711_codec is None:
                st.g711_codec = _G711_KINDS[int(gk[0])]
            _pcm_feed(st, blob, gk, gend)
        kept_cols = None  # the kept packets' AudioPackets columns
        ksel = None
        if kept:
            assert glen is not None
            if kept == g:
                ksel, kblob, klen = gsel, blob, glen
            else:
                kg = out[_O_KEEP] if gsel is None else out[_O_KEEP][gsel]  # kept among the G.711 packets
                kpos = np.flatnonzero(kg)
                ksel = kpos if gsel is None else gsel[kpos]
                kblob, klen = _select_payloads(blob, glen, kpos), glen[kpos]
            kept_cols = (_row(out, ksel, _O_EXT), _row(out, ksel, _O_TS_EXT), klen, kblob, _row(out, ksel, _O_KIND))
            st.audio.add_run(*kept_cols)
        # -- call tracker --
        if ti is None:
            return None
        tg = ti[0]
        call = tg[1]
        tmax = float(F[_F_TMAX])
        if tmax > call.last_activity:
            call.last_activity = tmax
        if not t_count:
            return None
        tsel = None if t_count == m else np.flatnonzero(out[_O_TKIND])
        if kept_cols is not None and t_count == kept and _same(ksel, tsel) and _rows_equal(out, tsel):
            tracker_cols = kept_cols  # the same (seq, ts, payload, codec) values: share the columns
        else:
            if glen is not None and t_count == g and _same(gsel, tsel):
                tblob, tlen = blob, glen
            else:  # G.711 payloads come from blob, the others (for the tracker's codecs) from the batch
                gends = np.cumsum(out[_O_KIND] > 0)
                goffs = np.cumsum(glen) if glen is not None else None
                pieces = []
                for k in (range(m) if tsel is None else tsel.tolist()):
                    if out[_O_KIND, k]:
                        assert goffs is not None
                        e = int(goffs[int(gends[k]) - 1])
                        pieces.append(blob[e - int(out[_O_LEN, k]) : e].tobytes())
                    else:
                        i = int(idx[k])
                        o = int(H[_H_OFF, i])
                        pieces.append(bytes(bt.mv[o : o + int(H[_H_LEN, i])]))
                tlen = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))
                tblob = np.frombuffer(bytearray(b"".join(pieces)), dtype=np.uint8)
            tracker_cols = (_row(out, tsel, _O_TSEQ), _row(out, tsel, _O_TTS), tlen, tblob, _row(out, tsel, _O_TKIND))
        call.audio_bytes += int(S[_S_T_BYTES])
        if audio is None:
            first = int(S[_S_T_FIRST])
            audio = _calls()._Audio(tg[2], float(times[first]))
            created = (first, call, ti[1], audio)
        else:
            created = None
        audio.max_seq = int(S[_S_T_MAX])
        audio.cycles = int(S[_S_T_CYCLES])
        audio.last_ts = int(S[_S_T_LAST_TS])
        audio.ts_ext = int(S[_S_T_TS_EXT])
        audio.packets.add_run(*tracker_cols)
        return created

    # -- internals --
    def _weird(self, name: str, detail: str) -> None:
        self._weird_count += 1
        if self._weird_count <= MAX_WEIRDS:
            self.weirds.append((name, detail))

    def _binding(self, is_orig: bool) -> Any:
        if self.tracker is None:
            return None
        c = self.conn
        dst = (c.resp_h, c.resp_p) if is_orig else (c.orig_h, c.orig_p)
        src = (c.orig_h, c.orig_p) if is_orig else (c.resp_h, c.resp_p)
        b = self.tracker.binding(*dst)
        return b if b is not None else self.tracker.binding(*src)

    def _datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        if len(data) < 4 or data[0] >> 6 != 2:
            self.non_rtp += 1
            if self.non_rtp == 1:
                self._weird("rtp_not_version_2", f"{len(data)} bytes, first byte {data[:1].hex()}")
            self._maybe_give_up()
            return
        rt = rtcp_packets(data)
        if rt is not None:
            self.rtcp_packets += 1
            self.rtcp[(is_orig, rt[0][1])] += 1
            self._rtcp_first.setdefault((is_orig, rt[0][1]), ts)
            return
        pkt = parse_rtp(data)
        if pkt is None:
            self.non_rtp += 1
            self._weird("rtp_malformed", f"{len(data)} bytes")
            self._maybe_give_up()
            return
        key = (is_orig, pkt.ssrc)
        st = self.streams.get(key)
        if st is not None:
            self._account(st, pkt, ts)
            return
        binding = self._binding(is_orig)
        if binding is not None:
            st = self._new_stream(key, "sdp")
            if st is not None:
                self._account(st, pkt, ts)
            return
        # heuristic
        cand = self._candidates.setdefault(key, [])
        cand.append((pkt, ts))
        if len(self._candidates) > MAX_STREAMS:
            self._candidates.pop(next(iter(self._candidates)))
        if self._heuristic_ok(cand):
            st = self._new_stream(key, "heuristic")
            pending = self._candidates.pop(key, [])
            if st is not None:
                for p, t in pending:
                    self._account(st, p, t)
            return
        if len(cand) > HEURISTIC_KEEP:
            del cand[0]
        self._unaccepted += 1
        self._maybe_give_up()

    @staticmethod
    def _heuristic_ok(cand: list[tuple[RtpPacket, float]]) -> bool:
        if any(72 <= p.payload_type <= 76 for p, _ in cand):
            return False
        forward = 0
        for (a, _), (b, _) in zip(cand, cand[1:]):
            d = _seq_delta(a.seq, b.seq)
            if 1 <= d <= 3:
                forward += 1
            elif d != 0:
                # Out of line: only what follows counts.
                forward = 0
        # Require the last steps to be in line.
        return forward >= 2

    def _maybe_give_up(self) -> None:
        if not self.streams and (self._unaccepted + self.non_rtp) >= HEURISTIC_GIVE_UP and self.rtcp_packets == 0:
            self.done = True
            self._weird("rtp_heuristic_failed", f"{self._unaccepted + self.non_rtp} packets without an RTP stream")

    def _new_stream(self, key: tuple[bool, int], how: str) -> RtpStream | None:
        if len(self.streams) >= MAX_STREAMS:
            self._weird("rtp_too_many_streams", f"ssrc {key[1]:#010x}")
            return None
        st = self.streams[key] = RtpStream(key[1], key[0])
        st.bound_by = how
        return st

    def _account(self, st: RtpStream, pkt: RtpPacket, ts: float) -> None:
        if self.tracker is not None:
            b = self.tracker.rtp_packet(self.conn, st.is_orig, pkt, ts)
            if b is not None:
                if st.call_id is None:
                    st.call_id = b.call_id
                if st.codecs is None and b.rtpmap:
                    st.codecs = dict(b.rtpmap)
                if st.bound_by == "heuristic" and st.packets == 0:
                    st.bound_by = "sdp"
        st.add(pkt, ts, keep_audio=self.write_wav)

    def _finish(self) -> None:
        for (is_orig, ssrc), st in self.streams.items():
            self.records.append(("rtp", st.record(self.rtcp.get((is_orig, ssrc), 0))))
            if st.audio_truncated:
                self._weird("rtp_audio_truncated", f"ssrc {ssrc:#010x}: WAV limited to {MAX_AUDIO_BYTES} bytes")
            if self.write_wav and st.audio:
                pcm = st.pcm()
                owner = st.call_id or self.conn.uid or f"{self.conn.orig_h}_{self.conn.orig_p}"
                self.files.append(
                    FileObject(
                        source="RTP",
                        data=g711.wav_bytes(pcm),
                        ts=st.first_ts or 0.0,
                        is_orig=is_orig,
                        filename=f"{safe_name(owner)}-{ssrc:08x}.wav",
                        mime_type="audio/wav",
                        derived=True,
                        meta={"ssrc": ssrc, "codec": st.g711_codec, "call_id": st.call_id, "samples": int(len(pcm))},
                    )
                )
        # SSRCs seen only in RTCP (e.g. a dedicated RTCP port): recognised and counted.
        for (is_orig, ssrc), n in self.rtcp.items():
            if (is_orig, ssrc) in self.streams:
                continue
            st = RtpStream(ssrc, is_orig)
            st.bound_by = "rtcp"
            st.first_ts = st.last_ts = self._rtcp_first.get((is_orig, ssrc))
            b = self._binding(is_orig)
            st.call_id = b.call_id if b is not None else None
            self.records.append(("rtp", st.record(n)))


ANALYZERS = {"rtp": RtpAnalyzer, "rtcp": RtpAnalyzer}

__all__ = [
    "ANALYZERS",
    "RECORD_SCHEMAS",
    "RTP_SCHEMA",
    "RtpAnalyzer",
    "RtpPacket",
    "RtpStream",
    "is_rtcp",
    "parse_rtp",
    "rtcp_packets",
    "safe_name",
    "stream_pcm",
]
