"""Property tests for the TCP reassembler.

* Without holes, any segmentation of a byte string -- overlapping, duplicated, in any order,
  across the 2**32 wrap -- reassembles to the original, with no gap and no weird.
* With arbitrary loss, ACKs, FIN/RST, flushes and tiny memory bounds, every delivered byte is
  the right byte at the right offset, the accounting adds up, and the buffer stays bounded --
  while the caller overwrites its payload buffer after every call (as the batch reader does).
* Random garbage (sequence numbers, flags, payload types) never raises.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawtap.streams.reassembly import ACK, FIN, RST, SYN, Data, DirectionReassembler, Gap, TcpStream, Weird

M32 = 1 << 32

isns = st.one_of(
    st.integers(0, M32 - 1),
    st.integers(M32 - 3000, M32 - 1),  # payload crosses the wrap
)


def _invariants(r: DirectionReassembler) -> None:
    starts, bufs = r._starts, r._bufs
    assert len(starts) == len(bufs) <= r.max_blocks
    assert r.buffered_bytes == sum(len(b) for b in bufs) <= r.max_buffer
    prev = r.position
    for i, (s, b) in enumerate(zip(starts, bufs)):
        assert s > prev if i == 0 else s >= prev  # sorted, disjoint, all beyond the position
        assert isinstance(b, bytes) and len(b) > 0  # buffered data is always an owned copy
        prev = s + len(b)
    assert r.position == r.delivered_bytes + r.missed_bytes


@st.composite
def covering_segments(draw):
    """A byte string and subranges of it that cover every byte (overlapping, duplicated,
    shuffled); the one starting at 0 is returned first-in-list only by chance."""
    data = draw(st.binary(min_size=1, max_size=3000))
    n = len(data)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=25))) - {n})
    bounds = [0, *cuts, n]
    segs = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
    extra = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 400)), max_size=10))
    segs += [(a, min(n, a + k)) for a, k in extra]  # overlaps and duplicates
    segs += draw(st.lists(st.sampled_from(segs), max_size=5))
    order = draw(st.permutations(segs))
    return data, list(order)


def _collect(events, out: list) -> None:
    for e in events:
        if isinstance(e, Data):
            out.append(("d", bytes(e.data)))
        elif isinstance(e, Gap):
            out.append(("g", e.length))
        else:
            out.append(("w", e.name))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(covering_segments(), isns, st.booleans(), st.booleans())
def test_any_permutation_reassembles_to_original(case, isn, fin_last, with_acks):
    data, segs = case
    r = DirectionReassembler()
    out: list = []
    _collect(r.segment(isn, b"", SYN, 0.0), out)
    covered = bytearray(len(data))
    for k, (a, b) in enumerate(segs):
        buf = bytearray(data[a:b])
        flags = ACK | (FIN if fin_last and k == len(segs) - 1 and b == len(data) else 0)
        _collect(r.segment((isn + 1 + a) % M32, memoryview(buf), flags, float(k)), out)
        buf[:] = b"\xee" * len(buf)  # the caller reuses its buffer
        _invariants(r)
        if with_acks:  # the receiver acks the contiguous prefix it has
            covered[a:b] = b"\x01" * (b - a)
            prefix = covered.find(0)
            prefix = len(data) if prefix < 0 else prefix
            _collect(r.ack((isn + 1 + prefix) % M32, float(k)), out)
    _collect(r.flush(99.0), out)
    assert [k for k, _ in out if k != "d"] == []
    assert b"".join(v for _, v in out) == data
    assert r.delivered_bytes == len(data) and r.missed_bytes == 0 and r.buffered_bytes == 0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(covering_segments(), isns)
def test_mid_stream_pickup_reassembles(case, seq0):
    data, segs = case
    first = [s for s in segs if s[0] == 0][0]
    segs = [first] + [s for s in segs if s is not first]
    r = DirectionReassembler()
    out: list = []
    for a, b in segs:
        _collect(r.segment((seq0 + a) % M32, data[a:b], ACK, 0.0), out)
    _collect(r.flush(1.0), out)
    assert [k for k, _ in out if k != "d"] == []
    assert b"".join(v for _, v in out) == data


# ---- arbitrary loss, acks, control flags ----------------------------------------------------

ops = st.lists(
    st.one_of(
        # (kind, offset into the underlying stream, length, flags)
        st.tuples(st.just("seg"), st.integers(-50, 5000), st.integers(0, 700), st.sampled_from([ACK, ACK, ACK, FIN | ACK, RST, SYN, 0])),
        st.tuples(st.just("ack"), st.integers(-100, 6000), st.just(0), st.just(0)),
        st.tuples(st.just("flush"), st.just(0), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, 2**32),
    isns,
    st.booleans(),
    ops,
    st.integers(1, 4000),
    st.integers(1, 20),
)
def test_delivered_bytes_are_right_under_loss_and_limits(seed, isn, syn, script, max_buffer, max_blocks):
    """Whatever is lost, acked, reset or flushed, each Data holds the stream's bytes at its
    offset, events are contiguous, and the buffer never exceeds its bounds."""
    stream = random.Random(seed).randbytes(6000)
    r = DirectionReassembler(max_buffer=max_buffer, max_blocks=max_blocks)
    base = None  # stream offset (into `stream`) of the reassembler's position 0
    if syn:
        r.segment(isn % M32, b"", SYN, 0.0)
        base = 0
    pos = 0
    t = 0.0
    for kind, off, n, flags in script:
        t += 1.0
        if kind == "seg":
            if flags & SYN:
                continue  # a SYN mid-way would only be a SYN_seq_jump weird; covered elsewhere
            lo = max(0, off)
            chunk = bytearray(stream[lo : lo + n])
            if base is None and not flags & RST:
                base = lo
            ev = r.segment((isn + 1 + lo) % M32, memoryview(chunk), flags, t)
        elif kind == "ack":
            ev = r.ack((isn + 1 + off) % M32, t)
        else:
            ev = r.flush(t)
        for e in ev:
            assert e.ts == t
            if isinstance(e, Data):
                b = bytes(e.data)
                assert len(b) > 0
                assert b == stream[base + pos : base + pos + len(b)]
                pos += len(b)
            elif isinstance(e, Gap):
                assert e.length > 0
                pos += e.length
            else:
                assert isinstance(e, Weird) and e.name in ("RST_with_data", "tcp_inconsistent_overlap")
                assert e.name != "tcp_inconsistent_overlap"  # every copy is consistent here
        if kind == "seg":
            chunk[:] = b"\x00" * len(chunk)  # buffer reuse must not corrupt buffered data
        _invariants(r)
        assert r.position == pos


# ---- garbage never raises -------------------------------------------------------------------

payloads = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(memoryview),
    st.binary(max_size=300).map(bytearray),
)
garbage = st.lists(
    st.tuples(st.booleans(), st.integers(0, M32 - 1), st.integers(0, M32 - 1), st.integers(0, 255), payloads),
    max_size=80,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(garbage, st.integers(1, 2000), st.integers(1, 16))
def test_random_packets_never_raise(packets, max_buffer, max_blocks):
    s = TcpStream(("a", 1, "b", 2), max_buffer=max_buffer, max_blocks=max_blocks)
    for k, (is_orig, seq, ack, flags, pay) in enumerate(packets):
        for o, e in s.packet(is_orig, seq, ack, flags, pay, float(k)):
            assert isinstance(o, bool) and isinstance(e, (Data, Gap, Weird))
        _invariants(s.orig)
        _invariants(s.resp)
    s.flush(1e9)
    assert s.orig.buffered_bytes == 0 and s.resp.buffered_bytes == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(isns, st.lists(st.tuples(st.integers(-200, 3000), st.binary(max_size=200), st.integers(0, 255)), max_size=50))
def test_near_sequence_garbage_never_raises(isn, segs):
    """Sequence numbers near the stream (the interesting region), random flags and payloads."""
    r = DirectionReassembler(max_buffer=1000, max_blocks=8)
    for k, (off, pay, flags) in enumerate(segs):
        r.segment((isn + off) % M32, pay, flags, float(k))
        r.ack((isn + off + len(pay)) % M32, float(k))
        _invariants(r)
    r.flush(0.0)
    _invariants(r)
    assert r.buffered_bytes == 0
