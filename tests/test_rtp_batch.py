"""RtpAnalyzer.datagram_batch gives exactly what datagram() gives packet by packet.

The same datagrams go (a) one by one through ``datagram()`` and (b) in chunks through
``datagram_batch()`` into two fresh analyzers (with and without a :class:`CallTracker`); the
analyzers' stream state, their records, WAV files and weirds, and the tracker's state and
output must be identical. Sources: every capture of the corpus' ``voip`` category, a synthetic
call with loss, reordering, duplicates, SSRC and payload type changes, marker bits, RTCP, junk,
padding/extension/CSRC headers and sequence resyncs, and random input (hypothesis).
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import corpus_root
from test_voip import rtp_packet as rtp  # the RTP packet builder of the per-packet tests
from lawtap.analyzers import calls as calls_mod
from lawtap.analyzers import g711
from lawtap.analyzers import rtp as rtp_mod
from lawtap.analyzers.base import ConnInfo
from lawtap.analyzers.calls import CallTracker
from lawtap.analyzers.rtp import RtpAnalyzer
from lawtap.analyzers.sip import SipAnalyzer

T0 = 1_700_000_000.0
_SIP_START = re.compile(rb"(SIP/2\.0 \d{3}|[A-Z]{3,16} \S[^\r\n]* SIP/2\.0\r?\n)")


# ---- replay: the same datagrams, per packet or in chunks ----


class Flow:
    """One connection's events: ("datagram", is_orig, bytes, ts) (UDP) or TCP data/gap."""

    def __init__(self, info: ConnInfo, events: list[tuple], sip: bool) -> None:
        self.info = info
        self.events = events
        self.sip = sip


def _pack(dgrams: list[tuple[bool, bytes, float]]) -> tuple[np.ndarray, ...]:
    """A batch buffer with the payloads scattered (gaps between them, as in a capture batch)."""
    offs, parts, pos = [], [], 0
    for k, (_, p, _) in enumerate(dgrams):
        pad = b"\xee" * (k % 5)  # bytes of other packets between payloads
        parts.append(pad)
        pos += len(pad)
        offs.append(pos)
        parts.append(p)
        pos += len(p)
    parts.append(b"\xee" * 3)
    data = np.frombuffer(b"".join(parts), dtype=np.uint8).copy()
    return (
        data,
        np.array(offs, dtype=np.int64),
        np.array([len(p) for _, p, _ in dgrams], dtype=np.int64),
        np.array([o for o, _, _ in dgrams], dtype=np.bool_),
        np.array([t for _, _, t in dgrams], dtype=np.float64),
    )


def replay(flows: list[Flow], mode: str, chunk: int, batch: int, tracker: bool, write_wav: bool = True) -> dict:
    """Feed every flow's events, ``batch`` events of the capture at a time (time order).

    Within a batch, signalling first (the dispatcher hands a batch's flows over in the order
    of their first packet, and signalling precedes its media), then each media flow's
    datagrams: ``mode`` "packet" one by one through datagram(), "batch" through
    datagram_batch() in chunks of ``chunk``. Returns the analyzers' and tracker's state before
    ``finish`` and everything they output.
    """
    tr = CallTracker(write_wav=write_wav) if tracker else None
    analyzers: dict[int, object] = {}
    for i, f in enumerate(flows):
        if f.sip:
            if tr is not None:
                analyzers[i] = SipAnalyzer(f.info, tracker=tr)
        elif f.info.proto == "udp":
            analyzers[i] = RtpAnalyzer(f.info, tracker=tr, write_wav=write_wav)
    events = sorted(
        ((e[3], i, k, e) for i, f in enumerate(flows) if i in analyzers for k, e in enumerate(f.events)),
        key=lambda x: x[:3],
    )
    for b0 in range(0, len(events), batch):
        part = events[b0 : b0 + batch]
        media: dict[int, list] = {}
        for ts, i, _, e in part:
            an = analyzers[i]
            if isinstance(an, SipAnalyzer):
                if e[0] == "datagram":
                    an.datagram(e[1], e[2], e[3])
                elif e[0] == "data":
                    an.feed(e[1], e[2], e[3])
                else:
                    an.gap(e[1], e[2], e[3])
            elif e[0] == "datagram":
                media.setdefault(i, []).append((e[1], e[2], e[3]))
        for i, dgrams in media.items():
            an = analyzers[i]
            if mode == "packet":
                for o, p, t in dgrams:
                    if an.done:
                        break
                    an.datagram(o, p, t)
            else:
                for c0 in range(0, len(dgrams), chunk):
                    an.datagram_batch(*_pack(dgrams[c0 : c0 + chunk]))
        if tr is not None and part:
            tr.tick(part[-1][0])
    state = {i: analyzer_state(an) for i, an in analyzers.items() if isinstance(an, RtpAnalyzer)}
    tstate = tracker_state(tr) if tr is not None else None
    end = events[-1][0] if events else T0
    out = {}
    for i, an in analyzers.items():
        an.finish(end)
        recs, files, weirds = an.drain()
        out[i] = (recs, [_file(f) for f in files], weirds)
    if tr is not None:
        tr.finish(end)
        recs, files, weirds = tr.drain()
        out["tracker"] = (recs, [(_file(f), c) for f, c in files], weirds)
    return {"state": state, "tracker_state": tstate, "out": out}


def _file(f) -> tuple:
    return (f.source, f.data, f.ts, f.is_orig, f.filename, f.mime_type, f.meta, f.missing_bytes)


def analyzer_state(an: RtpAnalyzer) -> dict:
    streams = {}
    for key, s in an.streams.items():
        v = dict(vars(s))
        v["pcm_hash"] = s.pcm_hash.copy().hexdigest()
        v["_pcm_pending"] = bytes(s._pcm_pending)
        v["pt_counts"] = list(s.pt_counts.items())  # insertion order too (ties in most_common)
        v["audio"] = list(s.audio)
        streams[key] = v
    return {
        "keys": list(an.streams),
        "streams": streams,
        "rtcp": list(an.rtcp.items()),
        "rtcp_packets": an.rtcp_packets,
        "rtcp_first": dict(an._rtcp_first),
        "non_rtp": an.non_rtp,
        "candidates": {k: [(vars_pkt(p), t) for p, t in v] for k, v in an._candidates.items()},
        "unaccepted": an._unaccepted,
        "weird_count": an._weird_count,
        "weirds": list(an.weirds),
        "done": an.done,
    }


def vars_pkt(p) -> tuple:
    return (p.version, p.padding, p.extension, p.csrc_count, p.marker, p.payload_type, p.seq, p.timestamp, p.ssrc, p.payload)


def tracker_state(tr: CallTracker) -> dict:
    calls = {}
    for cid, c in tr.calls.items():
        calls[cid] = (
            c.last_activity,
            c.audio_bytes,
            c.audio_truncated,
            [(k, a.sender, a.first_arrival, list(a.packets), a.max_seq, a.cycles, a.last_ts, a.ts_ext) for k, a in c.audio.items()],
        )
    return {"calls": calls, "weirds": list(tr.weirds), "records": list(tr.records)}


def assert_same(a: dict, b: dict) -> None:
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        sa, sb = a["state"][i], b["state"][i]
        assert sa["keys"] == sb["keys"]
        for key in sa["streams"]:
            va, vb = sa["streams"][key], sb["streams"][key]
            for field in va:
                assert va[field] == vb[field], (i, key, field)
        assert sa == sb, i
    assert a["tracker_state"] == b["tracker_state"]
    assert a["out"].keys() == b["out"].keys()
    for i in a["out"]:
        ra, fa, wa = a["out"][i]
        rb, fb, wb = b["out"][i]
        assert ra == rb, i
        assert wa == wb, i
        assert len(fa) == len(fb), i
        for x, y in zip(fa, fb):
            assert x == y, i


# ---- corpus ----


def _voip_captures() -> list[Path]:
    root = corpus_root()
    if root is None:
        return []
    caps = []
    for d in sorted(p for p in (root / "voip").glob("*") if p.is_dir()):
        caps += [f for f in sorted(d.iterdir()) if f.is_file() and f.suffix in (".pcap", ".pcapng", ".cap")]
    return caps


_CORPUS_FLOWS: dict[str, list[Flow]] = {}


def corpus_flows(path: Path) -> list[Flow]:
    key = str(path)
    if key not in _CORPUS_FLOWS:
        from streamkit import connections

        flows = []
        for i, c in enumerate(connections(path)):
            info = ConnInfo(f"C{i}", c.orig_h, c.orig_p, c.resp_h, c.resp_p, c.proto)
            first = [e[2] for e in c.events if e[0] in ("data", "datagram") and e[2]][:3]
            flows.append(Flow(info, c.events, any(_SIP_START.match(p) for p in first)))
        _CORPUS_FLOWS[key] = flows
    return _CORPUS_FLOWS[key]


CAPTURES = _voip_captures()


@pytest.mark.skipif(corpus_root() is None, reason="shared corpus not present")
@pytest.mark.parametrize("path", CAPTURES, ids=[p.parent.name for p in CAPTURES])
@pytest.mark.parametrize("tracker", [False, True], ids=["heuristic", "tracker"])
def test_corpus_batches_match_packets(path, tracker, monkeypatch):
    flows = corpus_flows(path)
    n = sum(len(f.events) for f in flows)
    ref = replay(flows, "packet", 1, 5000, tracker)
    for chunk, batch in ((1, 5000), (7, 5000), (64, 5000), (n + 1, 5000), (n + 1, n + 1)):
        assert_same(ref, replay(flows, "batch", chunk, batch, tracker))
    # the whole capture as one batch, compared with the same batching packet by packet
    ref_all = replay(flows, "packet", 1, n + 1, tracker)
    assert_same(ref_all, replay(flows, "batch", n + 1, n + 1, tracker))
    # the batch path even for the smallest chunks
    monkeypatch.setattr(rtp_mod, "BATCH_MIN", 1)
    monkeypatch.setattr(rtp_mod, "RUN_MIN", 1)
    for chunk in (1, 3, 50):
        assert_same(ref, replay(flows, "batch", chunk, 5000, tracker))


# ---- synthetic call ----


def sender_report(ssrc: int) -> bytes:
    return struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 1, 2, 3, 4, 5)


def _sip(start: str, cseq: str, to_tag: str = "", body: bytes = b"") -> bytes:
    hdr = [
        start,
        "Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1",
        'From: "Alice" <sip:alice@a.example>;tag=aaa',
        f"To: <sip:bob@b.example>{';tag=' + to_tag if to_tag else ''}",
        "Call-ID: batch-call@a.example",
        f"CSeq: {cseq}",
    ]
    if body:
        hdr.append("Content-Type: application/sdp")
    hdr.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(hdr) + "\r\n\r\n").encode() + body


def _sdp(ip: str, port: int, rtpmap: str) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=call\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 8 96 101 13\r\n{rtpmap}a=sendrecv\r\n"
    ).encode()


CALLER = ("10.0.0.1", 40000)
CALLEE = ("10.0.0.2", 50000)
MAP_A = "a=rtpmap:0 PCMU/8000\r\na=rtpmap:96 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
MAP_B = "a=rtpmap:0 PCMU/8000\r\na=rtpmap:96 pcmu/8000\r\na=rtpmap:101 TELEPHONE-EVENT/8000\r\n"


def _tone(n: int, k: int) -> np.ndarray:
    return (8000 * np.sin(np.arange(n) * (0.05 + 0.01 * (k % 7)))).astype(np.int16)


def synthetic_flows(seed: int = 1) -> list[Flow]:
    rng = np.random.default_rng(seed)
    sip_info = ConnInfo("CSIP", "10.0.0.1", 5060, "10.0.0.2", 5060, "udp")
    media = ConnInfo("CMEDIA", *CALLER, *CALLEE, "udp")
    sip = [
        ("datagram", True, _sip("INVITE sip:bob@b.example SIP/2.0", "1 INVITE", body=_sdp(*CALLER, MAP_A)), T0 + 1.0),
        ("datagram", False, _sip("SIP/2.0 180 Ringing", "1 INVITE", "bbb"), T0 + 1.5),
        ("datagram", False, _sip("SIP/2.0 200 OK", "1 INVITE", "bbb", _sdp(*CALLEE, MAP_B)), T0 + 4.0),
        ("datagram", True, _sip("BYE sip:bob@b.example SIP/2.0", "2 BYE", "bbb"), T0 + 30.0),
        ("datagram", False, _sip("SIP/2.0 200 OK", "2 BYE", "bbb"), T0 + 30.01),
    ]
    ev: list[tuple] = []

    def emit(is_orig: bool, data: bytes, t: float) -> None:
        ev.append(("datagram", is_orig, data, t))

    # caller -> callee: starts before any signalling (heuristic), PCMU, then PCMA via pt 96
    # (dynamic: G.711 only through the rtpmap), DTMF with marker bits, CN, loss,
    # duplicates, reordering, a sequence wrap, a restart (two sequential packets after a
    # big jump), a timestamp jump, padding/extension/CSRC headers, RTCP and junk.
    seq, ts, t = 65000, 4_294_960_000, T0 + 0.5
    ssrc = 0x1111
    k = 0
    order = []
    while t < T0 + 29.0:
        k += 1
        pt = 0 if k < 400 else (96 if k < 900 else 8)
        payload = g711.encode(_tone(160, k), "PCMA" if pt in (8, 96) else "PCMU")
        kind = rng.random()
        marker = k % 97 == 0
        if k % 150 == 0:  # a DTMF event, then silence suppression (timestamp jump)
            for j in range(3):
                order.append((True, rtp(seq, ts, ssrc, b"\x05\x0a\x00\xa0", pt=101, marker=j == 0), t))
                seq += 1
                t += 0.02
            ts += 8000
            order.append((True, rtp(seq, ts, ssrc, b"\x40", pt=13), t))
            seq += 1
            t += 0.02
            if k == 150:  # new payload types in one run, neither in ascending nor descending order
                order.append((True, rtp(seq, ts, ssrc, b"\x11" * 20, pt=18), t))
                seq += 1
                t += 0.02
        if 1000 <= k < 1020:  # another clock rate (DVI4/16000): the jitter restarts its reference
            order.append((True, rtp(seq, ts * 2, ssrc, b"\x22" * 160, pt=6), t + 0.01))
        if k == 700:  # the source restarts its sequence numbers
            seq = (seq + 20000) & 0xFFFF
        if k == 1100:  # a new SSRC (the phone re-INVITEd, say)
            ssrc = 0x2222
        if kind < 0.03:
            pass  # lost
        elif kind < 0.06:
            order.append((True, rtp(seq, ts, ssrc, payload, pt=pt, marker=marker), t))
            order.append((True, rtp(seq, ts, ssrc, payload, pt=pt, marker=marker), t + 0.001))  # duplicate
        elif kind < 0.09 and order:
            # swapped with the previous packet
            prev = order.pop()
            order.append((True, rtp(seq, ts, ssrc, payload, pt=pt, marker=marker), prev[2]))
            order.append((prev[0], prev[1], t))
        elif kind < 0.10:
            order.append((True, rtp(seq, ts, ssrc, payload, pt=pt, csrc=2, ext=b"abcd", pad=4), t))
        elif kind < 0.11:
            order.append((True, rtp(seq, ts, ssrc, payload, pt=pt + 64 if pt < 64 else pt, marker=True), t))
        else:
            order.append((True, rtp(seq, ts, ssrc, payload, pt=pt, marker=marker), t + float(rng.normal(0, 0.002))))
        if k % 250 == 0:
            order.append((True, sender_report(ssrc), t + 0.005))
        if k % 333 == 0:
            order.append((True, b"\x00\x01junk", t + 0.006))
            order.append((True, rtp(seq, ts, ssrc, b"")[:11], t + 0.007))  # truncated
        seq = (seq + 1) & 0xFFFF
        ts = (ts + 160) & 0xFFFFFFFF
        t += 0.02
    for o, d, tt in order:
        emit(o, d, tt)
    # a third caller SSRC: comfort noise first, then PCMU and PCMA alternating
    for k in range(60):
        pt = 13 if k < 10 else (0, 8)[k % 2]
        payload = b"\x40" if pt == 13 else g711.encode(_tone(160, k), "PCMU" if pt == 0 else "PCMA")
        emit(True, rtp(3000 + k, 77 + 160 * k, 0x6666, payload, pt=pt), T0 + 10.005 + 0.02 * k)
    # callee -> caller: starts before the INVITE too (both directions' tracker audio then
    # begins in the same run), pt 96 is PCMU in its map
    seq, ts, t = 10, 1234, T0 + 0.6
    for k in range(1200):
        pt = 0 if k % 3 else 96
        payload = g711.encode(_tone(160, k + 3), "PCMU")
        if k % 41 == 5:
            continue
        emit(False, rtp(seq + k, ts + 160 * k, 0x3333, payload, pt=pt, marker=k % 200 == 0), t + 0.02 * k + 0.0003 * (k % 5))
        if k == 600:
            emit(False, rtp(seq + k, ts + 160 * k, 0x4444, payload[:80], pt=0), t + 0.02 * k + 0.001)  # a stray SSRC
    ev.sort(key=lambda e: e[3])
    return [Flow(sip_info, sip, True), Flow(media, ev, False)]


@pytest.mark.parametrize("tracker", [False, True], ids=["heuristic", "tracker"])
@pytest.mark.parametrize("limits", [False, True], ids=["default-limits", "small-limits"])
@pytest.mark.parametrize("write_wav", [True, False], ids=["wav", "no-wav"])
def test_synthetic_batches_match_packets(tracker, limits, write_wav, monkeypatch):
    if limits:
        # Flushes of the PCM hash, audio truncation of the stream and of the call, mid-run.
        # (multiples of the 160-byte payloads: limits reached exactly, too)
        monkeypatch.setattr(rtp_mod, "PCM_CHUNK", 960)
        monkeypatch.setattr(rtp_mod, "MAX_AUDIO_BYTES", 144_000)
        monkeypatch.setattr(calls_mod, "MAX_CALL_AUDIO_BYTES", 200_000)
    flows = synthetic_flows()
    n = sum(len(f.events) for f in flows)
    # batches of 20 events: streams start before the signalling binds them
    for batch in (20, 700, n + 1):
        ref = replay(flows, "packet", 1, batch, tracker, write_wav)
        for chunk in sorted({min(c, batch) for c in (1, 5, 6, 33, 500, n + 1)}):
            assert_same(ref, replay(flows, "batch", chunk, batch, tracker, write_wav))
    monkeypatch.setattr(rtp_mod, "BATCH_MIN", 1)
    monkeypatch.setattr(rtp_mod, "RUN_MIN", 1)
    ref = replay(flows, "packet", 1, 700, tracker, write_wav)
    for chunk in (1, 2, 9):
        assert_same(ref, replay(flows, "batch", chunk, 700, tracker, write_wav))


def test_synthetic_exercises_the_batch_path(monkeypatch):
    """Most packets of the synthetic call go through the kernels, not datagram()."""
    flows = synthetic_flows()
    calls = {"n": 0}
    real = RtpAnalyzer.datagram

    def counting(self, *a):
        calls["n"] += 1
        return real(self, *a)

    monkeypatch.setattr(RtpAnalyzer, "datagram", counting)
    out = replay(flows, "batch", 10_000, 10_000, True)
    media = len(flows[1].events)
    assert calls["n"] < media // 10
    recs = [r for t, r in out["out"][1][0] if t == "rtp"]
    assert {r["ssrc"] for r in recs} >= {0x1111, 0x2222, 0x3333}
    assert all(r["call_id"] == "batch-call@a.example" for r in recs if r["ssrc"] in (0x1111, 0x2222, 0x3333))
    assert out["out"]["tracker"][1]  # the call's stereo WAV


def test_batch_inputs_outside_the_buffer_fall_back():
    """Offsets past the buffer: sliced as the base class does (clipped), never an error."""
    info = ConnInfo("CX", *CALLER, *CALLEE, "udp")
    pk = [rtp(i, 160 * i, 7, b"\xff" * 160) for i in range(20)]
    data, offs, lens, orig, times = _pack([(True, p, T0 + 0.02 * i) for i, p in enumerate(pk)])
    lens = lens.copy()
    lens[-1] += 100  # runs past the end
    a, b = RtpAnalyzer(info), RtpAnalyzer(info)
    a.datagram_batch(data, offs, lens, orig, times)
    mv = memoryview(data)
    for o, n, d, t in zip(offs.tolist(), lens.tolist(), orig.tolist(), times.tolist()):
        b.datagram(d, bytes(mv[o : o + n]), t)
    a.finish(T0 + 1)
    b.finish(T0 + 1)
    assert a.drain()[0] == b.drain()[0]


# ---- random input ----

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def datagrams(draw):
    """Mostly RTP-shaped datagrams of a few SSRCs (so streams form and the kernels run),
    mixed with RTCP, truncated and random ones."""
    n = draw(st.integers(0, 80))
    ssrcs = draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3))
    seq = draw(st.integers(0, 0xFFFF))
    ts = draw(st.integers(0, 2**32 - 1))
    out = []
    t = T0
    for k in range(n):
        kind = draw(st.integers(0, 9))
        orig = draw(st.booleans())
        t += draw(st.floats(0, 0.1, allow_nan=False))
        step = draw(st.sampled_from([1, 1, 1, 1, 2, 0, -1, 3000, -5]))
        seq = (seq + step) & 0xFFFF
        ts = (ts + 160 * step + draw(st.sampled_from([0, 0, 0, 8000, -160]))) & 0xFFFFFFFF
        if kind <= 5:
            pt = draw(st.sampled_from([0, 8, 0, 101, 13, 96, 18, 72, 127]))
            p = rtp(seq, ts, draw(st.sampled_from(ssrcs)), draw(st.binary(max_size=200)), pt=pt, marker=draw(st.booleans()),
                    csrc=draw(st.sampled_from([0, 0, 0, 1, 15])), ext=draw(st.sampled_from([None, None, b"", b"wxyz"])),
                    pad=draw(st.sampled_from([0, 0, 0, 1, 4, 255])))
            if draw(st.integers(0, 5)) == 0:
                p = p[: draw(st.integers(0, len(p)))]  # truncated
        elif kind == 6:
            p = sender_report(draw(st.sampled_from(ssrcs)))
        else:
            p = draw(st.binary(max_size=64))
        out.append((orig, p, t))
    return out


@FAST
@given(datagrams(), st.integers(1, 40), st.booleans(), st.sampled_from([None, 64, 160, 1000]), st.sampled_from([None, 160, 2000]))
def test_random_datagrams_batch_equals_packets(dgrams, chunk, small_min, pcm_chunk, max_audio):
    info = ConnInfo("CR", *CALLER, *CALLEE, "udp")
    a, b = RtpAnalyzer(info), RtpAnalyzer(info)
    old = (rtp_mod.BATCH_MIN, rtp_mod.RUN_MIN, rtp_mod.PCM_CHUNK, rtp_mod.MAX_AUDIO_BYTES)
    rtp_mod.BATCH_MIN = 1 if small_min else old[0]
    rtp_mod.RUN_MIN = 1 if small_min else old[1]
    rtp_mod.PCM_CHUNK = pcm_chunk or old[2]
    rtp_mod.MAX_AUDIO_BYTES = max_audio or old[3]
    try:
        for o, p, t in dgrams:
            a.datagram(o, p, t)
        for c0 in range(0, len(dgrams), chunk):
            b.datagram_batch(*_pack(dgrams[c0 : c0 + chunk]))
        state_a, state_b = analyzer_state(a), analyzer_state(b)
        a.finish(T0 + 100)
        b.finish(T0 + 100)
    finally:
        rtp_mod.BATCH_MIN, rtp_mod.RUN_MIN, rtp_mod.PCM_CHUNK, rtp_mod.MAX_AUDIO_BYTES = old
    assert state_a == state_b
    ra, fa, wa = a.drain()
    rb, fb, wb = b.drain()
    assert ra == rb and wa == wb
    assert [_file(f) for f in fa] == [_file(f) for f in fb]


@FAST
@given(
    st.binary(min_size=0, max_size=2000),
    st.lists(st.tuples(st.integers(-5, 2100), st.integers(-5, 300), st.booleans(),
                       st.floats(allow_nan=True, allow_infinity=True)), max_size=60),
    st.booleans(),
)
def test_random_arrays_never_raise(buf, rows, tracker):
    """Arbitrary buffers, offsets, lengths (even outside the buffer) and times."""
    data = np.frombuffer(buf, dtype=np.uint8).copy()
    offs = np.array([r[0] for r in rows], dtype=np.int64)
    lens = np.array([r[1] for r in rows], dtype=np.int64)
    orig = np.array([r[2] for r in rows], dtype=np.bool_)
    times = np.array([r[3] for r in rows], dtype=np.float64)
    tr = CallTracker() if tracker else None
    if tr is not None:
        sip = SipAnalyzer(ConnInfo("CS", "10.0.0.1", 5060, "10.0.0.2", 5060, "udp"), tracker=tr)
        sip.datagram(True, _sip("INVITE sip:bob@b.example SIP/2.0", "1 INVITE", body=_sdp(*CALLER, MAP_A)), T0)
    an = RtpAnalyzer(ConnInfo("CR", *CALLER, *CALLEE, "udp"), tracker=tr)
    old = (rtp_mod.BATCH_MIN, rtp_mod.RUN_MIN)
    rtp_mod.BATCH_MIN = rtp_mod.RUN_MIN = 1
    try:
        an.datagram_batch(data, offs, lens, orig, times)
        # valid slices of the same buffer, as RTP where it parses
        ok = (offs >= 0) & (lens >= 0) & (offs + lens <= len(data))
        an.datagram_batch(data, offs[ok], lens[ok], orig[ok], times[ok])
    finally:
        rtp_mod.BATCH_MIN, rtp_mod.RUN_MIN = old
    an.finish(T0 + 1)
    an.drain()
    if tr is not None:
        tr.finish(T0 + 1)
        tr.drain()
