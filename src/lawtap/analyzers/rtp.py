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
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from lawtap.analyzers import g711
from lawtap.analyzers.base import COMMON_FIELDS, ConnInfo, FileObject, StreamAnalyzer
from lawtap.analyzers.sdp import clock_rate as _clock_rate
from lawtap.analyzers.sdp import codec_name as _codec_name

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
        self.audio: list[tuple[int, int, bytes, str]] = []  # (ext seq, ext ts, payload, codec)
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
                    self.audio.append((ext_seq, self.ts_ext, pkt.payload, codec))
                    self.audio_bytes += len(pkt.payload)

    def _flush_pcm(self) -> None:
        if self._pcm_pending and self._pcm_codec is not None:
            self.pcm_hash.update(g711.pcm_bytes(g711.decode(bytes(self._pcm_pending), self._pcm_codec)))
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


def stream_pcm(packets: list[tuple[int, int, bytes, str]], rate: int = g711.SAMPLE_RATE) -> np.ndarray:
    """Decode G.711 packets (ext seq, ext RTP ts, payload, codec) into one int16 track.

    Sequence order, duplicates dropped; each packet is placed at its RTP timestamp relative to
    the first one, the holes (loss, silence suppression) filled with silence up to
    :data:`MAX_FILL_SECONDS` each (and, in all, the audio's length or
    :data:`MAX_TOTAL_FILL_SECONDS`); overlapping or backwards timestamps just append.
    """
    if not packets:
        return np.zeros(0, dtype=np.int16)
    seen: set[int] = set()
    ordered = []
    for p in sorted(packets, key=lambda p: p[0]):
        if p[0] in seen:
            continue
        seen.add(p[0])
        ordered.append(p)
    base = ordered[0][1]
    parts: list[np.ndarray] = []
    cur = 0
    max_fill = int(MAX_FILL_SECONDS * rate)
    # All the silence inserted stays below the audio's own length or 10 minutes (bogus
    # timestamps must not make a huge file).
    fill_budget = max(sum(len(p[2]) for p in ordered), int(MAX_TOTAL_FILL_SECONDS * rate))
    for _, ext_ts, payload, codec in ordered:
        off = ext_ts - base
        if off > cur and off - cur <= min(max_fill, fill_budget):
            parts.append(np.zeros(off - cur, dtype=np.int16))
            fill_budget -= off - cur
            cur = off
        s = g711.decode(payload, codec)
        parts.append(s)
        cur += len(s)
    return np.concatenate(parts)


_SAFE = re.compile(r"[^A-Za-z0-9@._+\-]+")


def safe_name(s: str, limit: int = 96) -> str:
    """A file-name-safe rendering of a Call-ID or uid."""
    out = _SAFE.sub("_", s).strip("._") or "call"
    return out[:limit]


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
