"""Calls: SIP dialogs across transactions and connections, tied to their RTP media.

Signalling and media are different flows (often different hosts), so one :class:`CallTracker`
per run sees both: every :class:`lawtap.analyzers.sip.SipAnalyzer` hands it each message
(``sip_message(msg, ts, conn)``) and every :class:`lawtap.analyzers.rtp.RtpAnalyzer` each
accepted packet (``rtp_packet(conn, is_orig, pkt, ts)``). Wiring, for the pipeline::

    tracker = CallTracker()
    registry["sip"] = functools.partial(SipAnalyzer, tracker=tracker)
    registry["rtp"] = functools.partial(RtpAnalyzer, tracker=tracker)
    # a UDP flow whose endpoint the signalling announced is RTP:
    tracker.expected_media(ip, port)  # -> Call-ID or None
    # per batch: tracker.tick(ts); at the end: tracker.finish(ts); then tracker.drain()

A call is one Call-ID that carries an INVITE (or a response to one: captures that start
mid-call). SDP bodies (offer and answer, re-INVITEs, 183 early media) bind each announced media
address (ip, port) — and its RTCP port (a=rtcp or port + 1) — to the call and to the party who
will *receive* there, so RTP sent to the caller's address is the callee speaking. Which party
sent an SDP is decided by the From tag (From URI when tags are missing) of the initial INVITE.

A call ends with BYE, CANCEL, a final failure to its (last) INVITE, or ``idle_timeout`` seconds
without signalling or media; it is written ``linger`` seconds (default 64*T1 = 32 s, the life of
a SIP transaction) after its end, so late responses, retransmissions and trailing RTP still
count, or at :meth:`finish`. A call whose INVITE was challenged (401/407) waits for the retry
with credentials (same Call-ID, higher CSeq) until ``idle_timeout``:

* a ``call`` record (``call_id, from, to, user_agents, start, answered, end, duration, state,
  media, final_status``); ``state`` is answered (2xx to INVITE, or a BYE: the 200 OK may be
  missing from the capture), cancelled (CANCEL before an answer, or 487), rejected (4xx except 408/487, 6xx), failed (3xx, 408, 5xx), ringing (180/183
  and nothing final) or unknown; ``duration`` is end - answered for answered calls, else
  end - start;
* for calls with G.711 media, a stereo 8 kHz WAV ``<call_id>.wav`` (caller left, callee right):
  each RTP stream rendered by RTP timestamp (see :func:`lawtap.analyzers.rtp.stream_pcm`) and
  placed at its first packet's arrival relative to the call's first media packet.

Events come out of :meth:`drain` with the :class:`ConnInfo` they belong to (the SIP connection
that carried the call's first message): ``records`` as ``(type, fields, conn)``, ``files`` as
``(FileObject, conn)``, ``weirds`` as ``(name, detail, conn)``.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from lawtap.analyzers import g711
from lawtap.analyzers.base import COMMON_FIELDS, ConnInfo, FileObject
from lawtap.analyzers.rtp import AudioPackets, safe_name, stream_pcm
from lawtap.analyzers.sdp import codec_name, parse_sdp
from lawtap.analyzers.sip import SipMessage, addr_uri, header_tag, sdp_body, strip_tag

TS = pa.timestamp("us", tz="UTC")

CALL_SCHEMA = pa.schema(
    [
        *COMMON_FIELDS,
        pa.field("call_id", pa.string()),
        pa.field("from", pa.string()),
        pa.field("to", pa.string()),
        pa.field("user_agents", pa.list_(pa.string())),
        pa.field("start", TS),
        pa.field("answered", TS),
        pa.field("end", TS),
        pa.field("duration", pa.float64()),  # seconds
        pa.field("state", pa.string()),
        pa.field("media", pa.list_(pa.string())),  # "ip:port/codec" announced by SDP
        pa.field("final_status", pa.uint16()),  # final status of the (last) INVITE
    ]
)

RECORD_SCHEMAS = {"call": CALL_SCHEMA}

CALLER, CALLEE = "caller", "callee"
MAX_CALLS = 10_000  # open calls; the oldest is written when more arrive
MAX_BINDINGS_PER_CALL = 64
MAX_CALL_AUDIO_BYTES = 64 << 20  # G.711 bytes kept per call for its stereo WAV
MAX_OFFSET_SECONDS = 4 * 3600.0  # a stream starting later than this after the first is not mixed


def _when(ts: float | None) -> _dt.datetime | None:
    if ts is None:
        return None
    try:
        return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass
class MediaBinding:
    """An (ip, port) announced by SDP: whose call, and which party receives there."""

    call_id: str
    receiver: str  # CALLER | CALLEE
    ip: str
    port: int
    media: str = "audio"
    rtpmap: dict[int, tuple[str, int, int | None]] = field(default_factory=dict)
    codec: str | None = None
    rtcp: bool = False

    @property
    def sender(self) -> str:
        """The party whose media arrives at this address."""
        return CALLEE if self.receiver == CALLER else CALLER


@dataclass
class _Audio:
    sender: str
    first_arrival: float
    packets: AudioPackets = field(default_factory=AudioPackets)
    # sequence/timestamp unwrapping
    max_seq: int = -1
    cycles: int = 0
    last_ts: int | None = None
    ts_ext: int = 0


@dataclass
class Call:
    call_id: str
    conn: ConnInfo
    start: float
    from_: str | None = None
    to: str | None = None
    caller_uri: str | None = None
    caller_tag: str | None = None
    user_agents: list[str] = field(default_factory=list)
    answered: float | None = None
    end: float | None = None
    final_status: int | None = None
    cancelled: bool = False
    ringing: bool = False
    bye: bool = False
    last_invite_cseq: int | None = None
    last_activity: float = 0.0
    media: list[str] = field(default_factory=list)
    bindings: list[tuple[str, int]] = field(default_factory=list)
    audio: dict[tuple, _Audio] = field(default_factory=dict)
    audio_bytes: int = 0
    audio_truncated: bool = False

    @property
    def challenged(self) -> bool:
        """The last INVITE was answered 401/407: a retry with credentials may follow."""
        return self.answered is None and self.final_status in (401, 407)

    @property
    def state(self) -> str:
        fs = self.final_status
        if self.answered is not None or (self.bye and (fs is None or fs < 300)):
            # A BYE means the dialog was established even if its 200 OK was not captured.
            return "answered"
        if self.cancelled or fs == 487:
            return "cancelled"
        if fs is not None:
            if fs == 408 or 500 <= fs < 600 or 300 <= fs < 400:
                return "failed"
            return "rejected"
        if self.ringing:
            return "ringing"
        return "unknown"

    def record(self) -> dict[str, Any]:
        end = self.end
        if end is not None and self.answered is not None:
            duration: float | None = max(0.0, end - self.answered)
        elif end is not None:
            duration = max(0.0, end - self.start)
        else:
            duration = None
        return {
            "ts": self.start,
            "call_id": self.call_id,
            "from": self.from_,
            "to": self.to,
            "user_agents": list(self.user_agents),
            "start": _when(self.start),
            "answered": _when(self.answered),
            "end": _when(end),
            "duration": duration,
            "state": self.state,
            "media": list(self.media),
            "final_status": self.final_status,
        }


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


class CallTracker:
    """Cross-connection SIP dialog and media state of one run (sans-IO, never raises on input)."""

    def __init__(self, *, write_wav: bool = True, linger: float = 32.0, idle_timeout: float = 600.0) -> None:
        self.write_wav = write_wav
        self.linger = linger
        self.idle_timeout = idle_timeout
        self.calls: dict[str, Call] = {}
        self.bindings: dict[tuple[str, int], MediaBinding] = {}
        self.records: list[tuple[str, dict[str, Any], ConnInfo]] = []
        self.files: list[tuple[FileObject, ConnInfo]] = []
        self.weirds: list[tuple[str, str, ConnInfo | None]] = []
        self._last_tick: float | None = None

    # ---- queries ----
    def expected_media(self, ip: str, port: int) -> str | None:
        """Call-ID of the call whose SDP announced (ip, port) (or its RTCP port), else None."""
        b = self.bindings.get((ip, port))
        return b.call_id if b is not None else None

    def binding(self, ip: str, port: int) -> MediaBinding | None:
        return self.bindings.get((ip, port))

    # ---- events ----
    def sip_message(self, msg: SipMessage, ts: float, conn: ConnInfo) -> None:
        try:
            self._sip(msg, ts, conn)
        except Exception as e:  # never raise on input
            self.weirds.append(("call_tracker_error", repr(e)[:200], conn))
        self.tick(ts)

    def rtp_packet(self, conn: ConnInfo, is_orig: bool, pkt: Any, ts: float) -> MediaBinding | None:
        """An accepted RTP packet of ``conn``: the binding it falls under (its call), or None."""
        try:
            return self._rtp(conn, is_orig, pkt, ts)
        except Exception as e:
            self.weirds.append(("call_tracker_error", repr(e)[:200], conn))
            return None

    def tick(self, now: float) -> None:
        """Write calls that ended ``linger`` seconds ago or idled ``idle_timeout`` seconds."""
        if self._last_tick is not None and now - self._last_tick < 1.0:
            return
        self._last_tick = now
        for cid in [c for c, call in self.calls.items() if self._expired(call, now)]:
            self._finalize(cid, now)

    def finish(self, ts: float) -> None:
        for cid in list(self.calls):
            self._finalize(cid, ts)

    def drain(self) -> tuple[list[tuple[str, dict[str, Any], ConnInfo]], list[tuple[FileObject, ConnInfo]], list[tuple[str, str, ConnInfo | None]]]:
        out = (self.records, self.files, self.weirds)
        self.records, self.files, self.weirds = [], [], []
        return out

    # ---- internals ----
    def _expired(self, call: Call, now: float) -> bool:
        if call.end is not None and now - call.end > self.linger and not call.challenged:
            return True
        return now - call.last_activity > self.idle_timeout

    def _sip(self, msg: SipMessage, ts: float, conn: ConnInfo) -> None:
        cid = msg.call_id
        if not cid:
            return
        tm = (msg.transaction_method or "").upper()
        call = self.calls.get(cid)
        if call is None:
            if tm != "INVITE":
                return  # REGISTER, OPTIONS, MESSAGE, SUBSCRIBE... are not calls
            if len(self.calls) >= MAX_CALLS:
                self._finalize(next(iter(self.calls)), ts)
            frm = msg.get("from")
            call = Call(call_id=cid, conn=conn, start=ts, from_=strip_tag(frm), to=strip_tag(msg.get("to")),
                        caller_uri=addr_uri(frm), caller_tag=header_tag(frm), last_activity=ts)
            self.calls[cid] = call
        call.last_activity = max(call.last_activity, ts)
        for ua in (msg.get("user-agent"), msg.get("server")):
            if ua and ua not in call.user_agents and len(call.user_agents) < 16:
                call.user_agents.append(ua)
        if msg.is_request:
            m = (msg.method or "").upper()
            if m == "INVITE" and call.answered is None:
                n = msg.cseq_number
                if call.last_invite_cseq is None or (n is not None and n > call.last_invite_cseq):
                    # A new attempt (e.g. with credentials after 401/407): the failure is not final.
                    if call.last_invite_cseq is not None:
                        call.final_status = None
                        call.end = None
                    call.last_invite_cseq = n
            elif m == "CANCEL" and call.answered is None:
                call.cancelled = True
                if call.end is None:
                    call.end = ts
            elif m == "BYE":
                call.bye = True
                if call.end is None:
                    call.end = ts
        else:
            code = msg.status_code or 0
            if tm == "BYE":
                call.bye = True  # the BYE itself may be missing from the capture
                if call.end is None:
                    call.end = ts
            elif tm == "INVITE":
                if 180 <= code < 200:
                    call.ringing = True
                elif 200 <= code < 300:
                    if call.answered is None:
                        call.answered = ts
                        call.final_status = code
                        if call.cancelled and call.end is not None and call.end <= ts:
                            call.end = None  # CANCEL lost the race: the call goes on
                            call.cancelled = False
                elif code >= 300 and call.answered is None:
                    call.final_status = code
                    if call.end is None:
                        call.end = ts
        body = sdp_body(msg)
        if body:
            self._sdp(call, msg, body)

    def _sender_is_caller(self, call: Call, msg: SipMessage) -> bool:
        frm = msg.get("from")
        tag = header_tag(frm)
        if call.caller_tag and tag:
            from_is_caller = tag == call.caller_tag
        else:
            from_is_caller = addr_uri(frm) == call.caller_uri
        # A request is sent by its From party; a response by the other one.
        return from_is_caller if msg.is_request else not from_is_caller

    def _sdp(self, call: Call, msg: SipMessage, body: bytes) -> None:
        sdp = parse_sdp(body)
        if sdp is None:
            return
        receiver = CALLER if self._sender_is_caller(call, msg) else CALLEE
        for ip, port, m in sdp.endpoints():
            if len(call.bindings) >= MAX_BINDINGS_PER_CALL:
                self.weirds.append(("call_too_many_media", f"{call.call_id}: more than {MAX_BINDINGS_PER_CALL} media bindings", call.conn))
                return
            codec = m.main_codec
            label = f"{_endpoint(ip, port)}/{codec or m.media}"
            if label not in call.media:
                call.media.append(label)
            rtpmap = dict(m.rtpmap)
            self._bind(call, MediaBinding(call.call_id, receiver, ip, port, m.media, rtpmap, codec))
            rtcp_port = m.rtcp_port or (port + 1 if port < 65535 else None)
            if rtcp_port:
                self._bind(call, MediaBinding(call.call_id, receiver, ip, rtcp_port, m.media, rtpmap, codec, rtcp=True))

    def _bind(self, call: Call, b: MediaBinding) -> None:
        key = (b.ip, b.port)
        old = self.bindings.get(key)
        if old is not None and not old.rtcp and b.rtcp:
            return  # never let an RTCP guess (port + 1) hide an announced RTP port
        self.bindings[key] = b
        if key not in call.bindings:
            call.bindings.append(key)

    def media_target(self, conn: ConnInfo, is_orig: bool) -> tuple[MediaBinding, Any, str, tuple, tuple] | None:
        """The call a media packet of ``conn`` (this direction) belongs to:
        ``(binding, call, sender, src, dst)``, or None when no SDP announced either end."""
        src = (conn.orig_h, conn.orig_p) if is_orig else (conn.resp_h, conn.resp_p)
        dst = (conn.resp_h, conn.resp_p) if is_orig else (conn.orig_h, conn.orig_p)
        b = self.bindings.get(dst)
        if b is not None:
            sender = b.sender
        else:
            b = self.bindings.get(src)
            if b is None:
                return None
            sender = b.receiver  # symmetric RTP: a party sends from where it receives
        call = self.calls.get(b.call_id)
        if call is None:
            return None
        return b, call, sender, src, dst

    def _rtp(self, conn: ConnInfo, is_orig: bool, pkt: Any, ts: float) -> MediaBinding | None:
        target = self.media_target(conn, is_orig)
        if target is None:
            return None
        b, call, sender, src, dst = target
        call.last_activity = max(call.last_activity, ts)
        if not self.write_wav or call.audio_truncated:
            return b
        codec = codec_name(pkt.payload_type, b.rtpmap)
        if not g711.is_g711(codec):
            return b
        assert codec is not None
        key = (sender, pkt.ssrc, src, dst)
        a = call.audio.get(key)
        if a is None:
            if len(call.audio) >= 32:
                return b
            a = call.audio[key] = _Audio(sender, ts)
            a.max_seq = pkt.seq
            a.last_ts = pkt.timestamp
            ext_seq = pkt.seq
        else:
            ext_seq = self._ext_seq(a, pkt.seq)
            d = (pkt.timestamp - a.last_ts) & 0xFFFFFFFF
            if d >= 0x80000000:
                d -= 0x100000000
            a.ts_ext += d
            a.last_ts = pkt.timestamp
        if call.audio_bytes + len(pkt.payload) > MAX_CALL_AUDIO_BYTES:
            call.audio_truncated = True
            self.weirds.append(("call_audio_truncated", f"{call.call_id}: stereo WAV limited to {MAX_CALL_AUDIO_BYTES} bytes", call.conn))
            return b
        a.packets.append(ext_seq, a.ts_ext, bytes(pkt.payload), codec.upper())
        call.audio_bytes += len(pkt.payload)
        return b

    @staticmethod
    def _ext_seq(a: _Audio, seq: int) -> int:
        udelta = (seq - a.max_seq) & 0xFFFF
        if udelta < 0x8000:
            if seq < a.max_seq:
                a.cycles += 0x10000
            a.max_seq = seq
            return a.cycles + seq
        ext = a.cycles + seq
        if seq > a.max_seq:
            ext -= 0x10000
        return ext

    def _finalize(self, cid: str, now: float) -> None:
        call = self.calls.pop(cid, None)
        if call is None:
            return
        if call.end is None:
            call.end = call.last_activity if call.last_activity else now
        for key in call.bindings:
            b = self.bindings.get(key)
            if b is not None and b.call_id == cid:
                del self.bindings[key]
        self.records.append(("call", call.record(), call.conn))
        if self.write_wav and call.audio:
            try:
                wav = self._stereo(call)
            except Exception as e:  # a rendering bug must not lose the call record
                self.weirds.append(("call_audio_error", repr(e)[:200], call.conn))
                wav = None
            if wav is not None:
                self.files.append((wav, call.conn))

    def _stereo(self, call: Call) -> FileObject | None:
        streams = [a for a in call.audio.values() if a.packets]
        if not streams:
            return None
        t0 = min(a.first_arrival for a in streams)
        tracks: dict[str, list[tuple[int, np.ndarray]]] = {CALLER: [], CALLEE: []}
        for a in sorted(streams, key=lambda a: a.first_arrival):
            off_s = a.first_arrival - t0
            if not 0 <= off_s <= MAX_OFFSET_SECONDS:
                continue
            tracks[a.sender].append((int(round(off_s * g711.SAMPLE_RATE)), stream_pcm(a.packets)))
        left = _mix(tracks[CALLER])
        right = _mix(tracks[CALLEE])
        data = g711.wav_bytes(g711.stereo(left, right), channels=2)
        return FileObject(
            source="RTP",
            data=data,
            ts=t0,
            is_orig=True,
            filename=f"{safe_name(call.call_id)}.wav",
            mime_type="audio/wav",
            derived=True,
            meta={"call_id": call.call_id, "channels": 2, "left": CALLER, "right": CALLEE,
                  "streams": len(streams), "samples": int(max(len(left), len(right)))},
        )


def _mix(parts: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """Lay tracks at their sample offsets (later streams overwrite overlaps)."""
    if not parts:
        return np.zeros(0, dtype=np.int16)
    n = max(off + len(p) for off, p in parts)
    out = np.zeros(n, dtype=np.int16)
    for off, p in parts:
        out[off : off + len(p)] = p
    return out


__all__ = ["CALLEE", "CALLER", "CALL_SCHEMA", "Call", "CallTracker", "MediaBinding", "RECORD_SCHEMAS"]
