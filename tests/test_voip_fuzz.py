"""VoIP analyzers never raise: random, truncated and bit-flipped SIP, SDP, RTP and RTCP input.

Each property also checks that whatever comes out still fits the record schemas.
"""

from __future__ import annotations

import struct

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawtap.analyzers import g711
from lawtap.analyzers.base import ConnInfo
from lawtap.analyzers.calls import CALL_SCHEMA, CallTracker
from lawtap.analyzers.rtp import RTP_SCHEMA, RtpAnalyzer, parse_rtp, rtcp_packets, stream_pcm
from lawtap.analyzers.sdp import parse_sdp
from lawtap.analyzers.sip import CHAT_SCHEMA, SIP_SCHEMA, SipAnalyzer, SipStreamFramer, parse_datagram

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = 1_600_000_000.0
UDP = ConnInfo("CU", "10.0.0.1", 5060, "10.0.0.2", 5060, "udp")
TCP = ConnInfo("CT", "10.0.0.1", 40000, "10.0.0.2", 5060, "tcp")
MEDIA = ConnInfo("CM", "10.0.0.1", 4000, "10.0.0.2", 5000, "udp")
SCHEMAS = {"sip": SIP_SCHEMA, "chat": CHAT_SCHEMA, "rtp": RTP_SCHEMA, "call": CALL_SCHEMA}

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp:4001\r\n"
)
SDP_B = SDP.replace(b"10.0.0.1", b"10.0.0.2").replace(b"4000", b"5000").replace(b"4001", b"5001")
HDR = (
    "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nFrom: \"A\" <sip:a@x>;tag=1\r\nTo: <sip:b@y>{to}\r\n"
    "Call-ID: fuzz@x\r\nCSeq: {cseq}\r\nUser-Agent: ua\r\n"
)
SEEDS = [
    ("INVITE sip:b@y SIP/2.0\r\n" + HDR.format(to="", cseq="1 INVITE") + "Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(SDP)).encode() + SDP,
    ("SIP/2.0 180 Ringing\r\n" + HDR.format(to=";tag=2", cseq="1 INVITE") + "Content-Length: 0\r\n\r\n").encode(),
    ("SIP/2.0 200 OK\r\n" + HDR.format(to=";tag=2", cseq="1 INVITE") + "c: application/sdp\r\nl: %d\r\n\r\n" % len(SDP_B)).encode() + SDP_B,
    ("ACK sip:b@y SIP/2.0\r\n" + HDR.format(to=";tag=2", cseq="1 ACK") + "Content-Length: 0\r\n\r\n").encode(),
    ("MESSAGE sip:b@y SIP/2.0\r\n" + HDR.format(to="", cseq="2 MESSAGE") + "Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello").encode(),
    ("BYE sip:a@x SIP/2.0\r\n" + HDR.format(to=";tag=2", cseq="3 BYE") + "Content-Length: 0\r\n\r\n").encode(),
    ("SIP/2.0 487 Request Terminated\r\n" + HDR.format(to=";tag=2", cseq="1 INVITE") + "Content-Length: 0\r\n\r\n").encode(),
    ("CANCEL sip:b@y SIP/2.0\r\n" + HDR.format(to="", cseq="1 CANCEL") + "Content-Length: 0\r\n\r\n").encode(),
]


def _rtp(seq: int, ts: int, ssrc: int, pt: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


RTP_SEEDS = [_rtp(i, 160 * i, 0xABC, 0 if i % 5 else 8, bytes(range(160))) for i in range(6)] + [
    _rtp(9, 1440, 0xABC, 101, b"\x01\x80\x00\xa0"),
    struct.pack("!BBHIIIIII", 0x80, 200, 6, 0xABC, 1, 2, 3, 4, 5),
    struct.pack("!BBHI", 0x81, 201, 7, 0xABC) + b"\x00" * 24,
    struct.pack("!BBHII", 0xB3, 0x80, 1, 2, 3) + b"\x00" * 12 + b"\xbe\xde\x00\x01abcd" + b"pay" + b"\x00\x03",
]


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed truncated, bit-flipped, spliced or byte-replaced (or plain random bytes)."""
    kind = draw(st.sampled_from(["random", "truncate", "flip", "splice", "replace", "seed"]))
    if kind == "random":
        return draw(st.binary(max_size=600))
    data = bytearray(draw(st.sampled_from(seeds)))
    if kind == "truncate" and data:
        return bytes(data[: draw(st.integers(0, len(data)))])
    if kind == "flip" and data:
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "splice":
        other = draw(st.sampled_from(seeds))
        return bytes(data[: draw(st.integers(0, len(data)))] + other[draw(st.integers(0, len(other))) :])
    if kind == "replace" and data:
        i = draw(st.integers(0, len(data) - 1))
        n = draw(st.integers(0, 40))
        return bytes(data[:i] + draw(st.binary(max_size=40)) + data[i + n :])
    return bytes(data)


def _fits(records) -> None:
    by: dict[str, list] = {}
    for rec in records:
        t, r = rec[0], rec[1]
        row = dict(r, uid="C", **{"id.orig_h": "a", "id.orig_p": 1, "id.resp_h": "b", "id.resp_p": 2})
        row["ts"] = None
        by.setdefault(t, []).append(row)
    for t, rows in by.items():
        pa.Table.from_pylist(rows, schema=SCHEMAS[t])


@FAST
@given(st.lists(st.tuples(st.booleans(), mutated(SEEDS)), max_size=12))
def test_sip_datagrams_never_raise(items):
    tr = CallTracker()
    an = SipAnalyzer(UDP, tracker=tr)
    for k, (is_orig, data) in enumerate(items):
        an.datagram(is_orig, data, T0 + k)
    an.finish(T0 + 100)
    records, files, weirds = an.drain()
    assert files == [] and all(isinstance(w, tuple) and len(w) == 2 for w in weirds)
    _fits(records)
    tr.finish(T0 + 100)
    recs, _, _ = tr.drain()
    _fits(recs)


@FAST
@given(st.lists(mutated(SEEDS), max_size=8), st.lists(st.integers(1, 300), min_size=1, max_size=10), st.data())
def test_sip_stream_never_raises(msgs, cuts, data):
    an = SipAnalyzer(TCP)
    stream = b"".join(msgs)
    pos, k = 0, 0
    while pos < len(stream):
        n = cuts[k % len(cuts)]
        k += 1
        if data.draw(st.integers(0, 9)) == 0:
            an.gap(True, n, T0)
        else:
            an.feed(bool(k % 2), stream[pos : pos + n], T0 + k)
        pos += n
    an.finish(T0 + 50)
    _fits(an.drain()[0])


@FAST
@given(st.binary(max_size=3000))
def test_sip_framer_random_bytes(blob):
    fr = SipStreamFramer()
    for i in range(0, len(blob), 257):
        for ev in fr.feed(blob[i : i + 257]):
            assert ev[0] in ("msg", "weird")
    fr.flush()
    parse_datagram(blob)


@FAST
@given(mutated([SDP, SDP_B, b"v=0\nc=IN IP6 ::1\nm=video 0/2 RTP/AVP 96\na=rtpmap:96 H264/90000\na=fmtp:96 x\n"]))
def test_sdp_never_raises(body):
    s = parse_sdp(body)
    if s is not None:
        for ip, port, m in s.endpoints():
            assert 0 < port < 65536 and isinstance(ip, str)
            for pt in m.payload_types:
                m.codec(pt)
                m.clock_rate(pt)
    parse_sdp(body.decode("latin-1"))


@FAST
@given(st.lists(st.tuples(st.booleans(), mutated(RTP_SEEDS)), max_size=40), st.booleans())
def test_rtp_never_raises(items, bound):
    tr = CallTracker()
    if bound:
        sip = SipAnalyzer(UDP, tracker=tr)
        sip.datagram(True, SEEDS[0], T0)
        sip.datagram(False, SEEDS[2], T0 + 0.1)
    an = RtpAnalyzer(MEDIA, tracker=tr)
    for k, (is_orig, data) in enumerate(items):
        an.datagram(is_orig, data, T0 + 1 + 0.02 * k)
        parse_rtp(data)
        rtcp_packets(data)
    an.finish(T0 + 10)
    records, files, _ = an.drain()
    _fits(records)
    for f in files:
        ch, rate, _ = g711.read_wav(f.data)
        assert (ch, rate) == (1, 8000)
    tr.finish(T0 + 10)
    recs, files, _ = tr.drain()
    _fits(recs)
    for f, _conn in files:
        assert g711.read_wav(f.data)[0] == 2


@FAST
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("sip"), st.booleans(), mutated(SEEDS)),
            st.tuples(st.just("rtp"), st.booleans(), mutated(RTP_SEEDS)),
        ),
        max_size=30,
    ),
    st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=5),
)
def test_call_tracker_never_raises(events, ticks):
    tr = CallTracker(linger=1.0, idle_timeout=5.0)
    sip = SipAnalyzer(UDP, tracker=tr)
    media = RtpAnalyzer(MEDIA, tracker=tr)
    for k, (kind, is_orig, data) in enumerate(events):
        t = T0 + k * ticks[k % len(ticks)] / 10
        if kind == "sip":
            sip.datagram(is_orig, data, t)
        else:
            media.datagram(is_orig, data, t)
        tr.tick(t)
    sip.finish(T0 + 1000)
    media.finish(T0 + 1000)
    tr.finish(T0 + 1000)
    recs, files, weirds = tr.drain()
    assert all(r[0] == "call" for r in recs)
    _fits(recs)
    assert not [w for w in weirds if w[0] in ("call_tracker_error", "call_audio_error")]
    assert not [w for w in media.weirds if w[0] == "rtp_analyzer_error"]
    assert not [w for w in sip.weirds if w[0] in ("sip_parse_error", "sip_call_tracker_error")]


@FAST
@given(st.binary(max_size=2000), st.sampled_from(["PCMU", "PCMA", "pcmu", "pcma"]))
def test_g711_decode_any_bytes(data, codec):
    s = g711.decode(data, codec)
    assert s.dtype == np.int16 and len(s) == len(data)
    assert g711.read_wav(g711.wav_bytes(s))[2].tolist() == s.tolist()


@FAST
@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(-(1 << 31), 1 << 33), st.binary(max_size=200)), max_size=30))
def test_stream_pcm_bounded(packets):
    pcm = stream_pcm([(s, t, p, "PCMA") for s, t, p in packets])
    assert pcm.dtype == np.int16
    # The audio plus at most max(its own length, 10 minutes) of inserted silence.
    audio = sum(len(p) for *_, p in packets)
    assert len(pcm) <= audio + max(audio, 600 * 8000)
