"""TCP reassembly: unit cases for every path of the reassembler, then real captures.

The corpus tests feed raw packets (memoryview slices of the reader's reused batch buffer, the
way the pipeline does) through :class:`TcpStream` and check the reassembled bytes against an
independent offline reconstruction, the sequence-space accounting, and tshark's HTTP objects.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from conftest import capture_id, corpus_captures, corpus_root, needs_corpus
from lawtap.streams.reassembly import ACK, FIN, PSH, RST, SYN, Data, DirectionReassembler, Gap, TcpStream, Weird

M32 = 1 << 32


def run(r: DirectionReassembler, segs, ts: float = 1.0) -> list:
    """Feed (seq, payload[, flags]) tuples; return every event."""
    out = []
    for s in segs:
        seq, pay = s[0], s[1]
        flags = s[2] if len(s) > 2 else ACK
        out += r.segment(seq % M32, pay, flags, ts)
    return out


def stream(events) -> bytes:
    return b"".join(bytes(e.data) for e in events if isinstance(e, Data))


def kinds(events) -> list:
    """Compact view: bytes for Data, int for Gap, name for Weird."""
    out = []
    for e in events:
        if isinstance(e, Data):
            out.append(bytes(e.data))
        elif isinstance(e, Gap):
            out.append(e.length)
        else:
            out.append(e.name)
    return out


def check_accounting(r: DirectionReassembler, events) -> None:
    d = sum(len(e.data) for e in events if isinstance(e, Data))
    g = sum(e.length for e in events if isinstance(e, Gap))
    assert r.delivered_bytes == d and r.missed_bytes == g
    assert r.position == d + g


# ---- basic paths --------------------------------------------------------------------------


def test_in_order_with_syn_and_fin():
    r = DirectionReassembler()
    ev = run(r, [(1000, b"", SYN), (1001, b"hello "), (1007, b"world", ACK | PSH | FIN)])
    assert kinds(ev) == [b"hello ", b"world"]
    assert r.isn == 1000 and r.finished and r.fin_offset == 11
    assert r.delivered_bytes == 11 and r.missed_bytes == 0 and r.buffered_bytes == 0
    assert run(r, [(1012, b"", ACK)]) == []  # pure ACK after the FIN
    assert r.flush(2.0) == []


def test_syn_with_data_starts_after_isn():
    r = DirectionReassembler()
    ev = run(r, [(500, b"tfo", SYN), (504, b"-more")])
    assert stream(ev) == b"tfo-more"


def test_syn_retransmission_and_seq_jump():
    r = DirectionReassembler()
    run(r, [(500, b"", SYN), (501, b"abc")])
    assert run(r, [(500, b"", SYN)]) == []
    ev = run(r, [(9000, b"", SYN)])
    assert kinds(ev) == ["SYN_seq_jump"]
    assert stream(run(r, [(504, b"def")])) == b"def"


def test_mid_stream_pickup():
    r = DirectionReassembler()
    ev = run(r, [(77777, b"middle "), (77784, b"of it")])
    assert stream(ev) == b"middle of it" and r.isn is None and r.missed_bytes == 0
    # Bytes from before the pickup point are dropped, never delivered.
    assert run(r, [(77770, b"before!")]) == []
    assert r.next_seq == 77789


def test_mid_stream_pickup_by_pure_ack():
    r = DirectionReassembler()
    assert run(r, [(4000, b"", ACK)]) == []
    assert stream(run(r, [(4000, b"data")])) == b"data"


def test_out_of_order_buffered_until_hole_fills():
    r = DirectionReassembler()
    run(r, [(0, b"", SYN)])
    assert run(r, [(6, b"world")]) == []
    assert run(r, [(12, b"!!")]) == []
    assert r.buffered_bytes == 7 and r.delivered_bytes == 0
    ev = run(r, [(1, b"hello")])
    assert stream(ev) == b"helloworld"
    assert r.buffered_bytes == 2  # "!!" still waits for byte 11
    ev = run(r, [(11, b" ")])
    assert kinds(ev) == [b" ", b"!!"]
    assert r.buffered_bytes == 0 and r.delivered_bytes == 13 and r.missed_bytes == 0


def test_buffered_runs_are_joined():
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (4, b"c"), (3, b"b"), (5, b"d")])
    ev = run(r, [(1, b"_a")])
    assert kinds(ev) == [b"_a", b"bcd"]


def test_retransmissions_dropped():
    r = DirectionReassembler()
    ev = run(r, [(0, b"", SYN), (1, b"abc"), (1, b"abc"), (4, b"def"), (1, b"abc"), (4, b"def")])
    assert stream(ev) == b"abcdef"
    assert r.retransmitted_bytes == 9
    # A keep-alive (one byte before the delivery point) is a retransmission too.
    assert run(r, [(6, b"\x00")]) == []


def test_partial_retransmission_delivers_new_tail():
    r = DirectionReassembler()
    ev = run(r, [(0, b"", SYN), (1, b"abc"), (2, b"bcdef")])
    assert kinds(ev) == [b"abc", b"def"]
    assert r.retransmitted_bytes == 2


def test_buffered_duplicate_dropped():
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (5, b"efg"), (5, b"efg")])
    assert r.buffered_bytes == 3 and r.retransmitted_bytes == 3
    assert stream(run(r, [(1, b"abcd")])) == b"abcdefg"


def test_overlap_first_copy_wins_and_weird():
    r = DirectionReassembler()
    run(r, [(0, b"", SYN)])
    assert run(r, [(11, b"XXXXX")]) == []  # stream offsets 10..15, buffered first
    ev = run(r, [(6, b"fghijKLMNOpqrst")], ts=2.0)  # offsets 5..20 overlap it and differ
    assert kinds(ev) == ["tcp_inconsistent_overlap"]
    assert isinstance(ev[0], Weird) and ev[0].ts == 2.0 and "offset 5" in ev[0].detail
    assert r.inconsistent_overlaps == 1
    ev = run(r, [(1, b"abcde")])
    assert stream(ev) == b"abcdefghijXXXXXpqrst"


def test_consistent_overlap_is_no_weird():
    r = DirectionReassembler()
    data = bytes(range(40))
    run(r, [(0, b"", SYN), (11, data[10:20]), (31, data[30:35])])
    ev = run(r, [(6, data[5:33]), (1, data[0:8])])
    assert stream(ev) == data[:35]
    assert not [e for e in ev if isinstance(e, Weird)]


def test_overlap_with_hole_filling_segment():
    """The segment that fills the hole also overlaps the buffered data (which wins)."""
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (4, b"DEF"), (9, b"IJ")])
    ev = run(r, [(1, b"abcdefghij")])
    assert kinds(ev) == [b"abc", "tcp_inconsistent_overlap", b"DEFghIJ"]


def test_gap_by_memory_limit():
    r = DirectionReassembler(max_buffer=100)
    run(r, [(0, b"", SYN), (1, b"start")])
    evs = []
    for k in range(11):  # a 10-byte hole at offset 5, then 10-byte segments
        assert r.buffered_bytes <= 100
        evs += run(r, [(16 + 10 * k, bytes([65 + k]) * 10)])
        assert r.buffered_bytes <= 100
    # The 11th segment took the buffer over 100 bytes: the hole became a gap.
    assert kinds(evs) == [10, b"".join(bytes([65 + k]) * 10 for k in range(11))]
    assert r.missed_bytes == 10 and r.buffered_bytes == 0
    assert stream(run(r, [(6, b"late!!!!!!")])) == b""  # the hole's data arrives too late
    check_accounting(r, evs + [Data(b"start", 0)])


def test_gap_by_block_count_limit():
    r = DirectionReassembler(max_blocks=8)
    run(r, [(0, b"", SYN)])
    evs = []
    for k in range(10):  # one byte every other byte: each is its own block
        evs += run(r, [(2 + 2 * k, b"x")])
        assert len(r._starts) <= 8
    assert kinds(evs)[:4] == [1, b"x", 1, b"x"]
    check_accounting(r, evs)


def test_gap_by_ack_beyond_hole():
    r = DirectionReassembler()
    run(r, [(100, b"", SYN), (101, b"GET "), (110, b"HTTP/1.1")])
    assert r.ack(105, 2.0) == []  # acks what was delivered: nothing to do
    ev = r.ack(112, 3.0)  # the peer had bytes 4..8 we never saw
    assert kinds(ev) == [5, b"HTTP/1.1"]
    assert ev[0].ts == 3.0 and r.missed_bytes == 5
    # Acked beyond everything seen, nothing buffered: remembered, not declared yet.
    assert r.ack(130, 4.0) == []
    assert r.position == 17
    assert r.ack(120, 5.0) == [] and r.ack(100, 5.0) == []  # old acks
    # Data beyond the acked hole: the hole was lost (gap), the data follows.
    assert kinds(run(r, [(125, b"late")])) == [7, b"late"]
    # The rest of what the peer acknowledged is a gap at flush.
    assert kinds(r.flush(6.0)) == [1]
    assert r.position == 29
    assert r.missed_bytes == 13


def test_ack_exactly_up_to_buffered_data():
    """ACK == start of the buffered block: the whole hole was received by the peer."""
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"ab"), (6, b"fg")])
    assert kinds(r.ack(6, 1.0)) == [3, b"fg"]
    # Same when the data arrives after the ACK.
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"ab")])
    assert r.ack(6, 1.0) == []
    assert kinds(run(r, [(6, b"fg")])) == [3, b"fg"]


def test_ack_seen_before_its_data_is_not_a_gap():
    """Captures often show the ACK a moment before the segment it acknowledges."""
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"abc")])
    assert r.ack(7, 1.0) == []
    assert stream(run(r, [(4, b"def")])) == b"def"
    assert r.flush(2.0) == [] and r.missed_bytes == 0


def test_ack_of_fin_seen_before_the_fin():
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"abc")])
    assert r.ack(5, 1.0) == []  # acks data + FIN; the FIN itself comes next
    run(r, [(4, b"", ACK | FIN)])
    assert r.finished and r.flush(2.0) == [] and r.missed_bytes == 0


def test_ack_stops_at_a_later_hole():
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"a"), (3, b"c"), (6, b"f")])
    ev = r.ack(4, 1.0)  # covers hole at offset 1, not the one at 3..4
    assert kinds(ev) == [1, b"c"]
    assert r.ack(5, 1.0) == []  # covers the hole at 3..4 only up to 4: nothing after it yet
    assert kinds(run(r, [(5, b"e")])) == [1, b"ef"]  # byte 3 was acked and never seen


def test_ack_does_not_count_the_fin():
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"abc", ACK | FIN)])
    assert r.ack(5, 1.0) == []  # ack of FIN (offset 3 + 1)
    r2 = DirectionReassembler()
    run(r2, [(0, b"", SYN), (1, b"abc"), (7, b"g", ACK | FIN)])
    assert kinds(r2.ack(9, 1.0)) == [3, b"g"]
    assert r2.finished


def test_ack_before_start_ignored():
    r = DirectionReassembler()
    assert r.ack(12345, 1.0) == []
    assert not r.started


def test_rst_flushes_beyond_hole():
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"ab"), (5, b"ef"), (9, b"ij")])
    ev = run(r, [(11, b"", RST)], ts=7.0)
    assert kinds(ev) == [2, b"ef", 2, b"ij"]
    assert all(e.ts == 7.0 for e in ev)
    assert r.reset and r.finished and r.buffered_bytes == 0
    check_accounting(r, ev + [Data(b"ab", 0)])


def test_rst_before_start_and_rst_with_data():
    r = DirectionReassembler()
    assert run(r, [(5, b"", RST)]) == []
    assert not r.started
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"ok")])
    assert kinds(run(r, [(3, b"diag", RST | ACK)])) == ["RST_with_data"]
    assert r.delivered_bytes == 2


def test_fin_with_hole_waits_for_retransmission():
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"abc")])
    assert run(r, [(7, b"ghi", ACK | FIN)]) == []
    assert not r.finished and r.fin_offset == 9
    assert stream(run(r, [(4, b"def")])) == b"defghi"  # late retransmission still delivered
    assert r.finished and r.missed_bytes == 0


def test_fin_then_flush_reports_hole():
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"abc"), (7, b"ghi", ACK | FIN)])
    ev = r.flush(9.0)
    assert kinds(ev) == [3, b"ghi"]
    assert r.finished


def test_flush_gap_up_to_unseen_fin_data():
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"abc"), (10, b"", ACK | FIN)])  # bytes 3..9 never seen
    assert kinds(r.flush(1.0)) == [6]
    assert r.position == 9


def test_flush_empty_and_unstarted():
    assert DirectionReassembler().flush(0.0) == []
    r = DirectionReassembler()
    run(r, [(0, b"", SYN), (1, b"abc")])
    assert r.flush(0.0) == []


def test_wraparound_at_2_32():
    isn = M32 - 6
    r = DirectionReassembler()
    evs = run(r, [(isn, b"", SYN), (isn + 1, b"01234"), (isn + 11, b"ABCDE"), (isn + 6, b"56789"), (isn + 16, b"xyz")])
    assert stream(evs) == b"0123456789ABCDExyz"
    assert r.next_seq == (isn + 19) % M32 and r.position == 18
    assert kinds(r.ack((isn - 100) % M32, 1.0)) == []  # an old ack from before the wrap
    assert kinds(r.ack((isn + 25) % M32, 1.0)) == []
    assert kinds(r.flush(1.0)) == [6]


def test_wraparound_mid_stream_and_out_of_order():
    r = DirectionReassembler()
    s = M32 - 3
    evs = run(r, [(s, b"abc"), (s + 6, b"ghi"), (s + 3, b"def")])
    assert stream(evs) == b"abcdefghi"


def test_stream_longer_than_4gib():
    """Offsets keep growing past 2**32 while the 32-bit sequence number wraps (no copies)."""
    chunk = memoryview(bytes(65536))
    r = DirectionReassembler()
    seq = 123456789
    r.segment(seq, b"", SYN, 0.0)
    seq += 1
    n = (M32 // 65536) + 3
    for _ in range(n):
        ev = r.segment(seq % M32, chunk, ACK, 0.0)
        assert ev[0].data is chunk
        seq += 65536
    assert r.position == n * 65536 > M32
    # Out of order after the wrap still lands at the right offset.
    assert run(r, [(seq + 10, b"later")]) == []
    assert kinds(run(r, [(seq, b"0123456789")])) == [b"0123456789", b"later"]


def test_in_order_delivery_is_zero_copy_and_buffered_is_copied():
    buf = bytearray(b"hello world!")
    view = memoryview(buf)
    r = DirectionReassembler()
    r.segment(0, b"", SYN, 0.0)
    assert r.segment(7, view[6:12], ACK, 0.0) == []  # out of order: must be copied
    buf[6:12] = b"XXXXXX"  # the caller reuses its buffer for the next batch
    ev = r.segment(1, view[0:6], ACK, 0.0)
    assert ev[0].data.obj is buf  # in order: delivered as the caller's view
    assert bytes(ev[0].data) == b"hello " and bytes(ev[1].data) == b"world!"


def test_numpy_payload():
    arr = np.frombuffer(b"xxabcdefxx", dtype=np.uint8)
    view = memoryview(arr)
    r = DirectionReassembler()
    r.segment(10, b"", SYN, 0.0)
    ev = run(r, [(14, view[5:8]), (11, view[2:5]), (13, view[4:6])])
    assert stream(ev) == b"abcdef"


# ---- TcpStream ------------------------------------------------------------------------------


def test_tcp_stream_routes_acks_before_own_data():
    s = TcpStream(("10.0.0.1", 1000, "10.0.0.2", 80))
    assert s.packet(True, 100, 0, SYN, b"", 1.0) == []
    assert s.packet(False, 500, 101, SYN | ACK, b"", 1.1) == []
    assert s.packet(True, 101, 501, ACK, b"", 1.2) == []
    out = s.packet(True, 101, 501, ACK | PSH, b"GET ", 1.3)
    assert [(o, kinds([e])[0]) for o, e in out] == [(True, b"GET ")]
    s.packet(True, 110, 501, ACK | PSH, b"\r\n\r\n", 1.4)  # "/ HTTP" (offsets 4..8) lost
    # The server's response acks the whole request: the client's gap and tail come out first.
    out = s.packet(False, 501, 114, ACK | PSH, b"HTTP/1.1 200 OK\r\n", 1.5)
    assert [(o, kinds([e])[0]) for o, e in out] == [(True, 5), (True, b"\r\n\r\n"), (False, b"HTTP/1.1 200 OK\r\n")]
    assert s.orig.missed_bytes == 5
    s.packet(True, 114, 518, ACK | FIN, b"", 1.6)
    s.packet(False, 518, 115, ACK | FIN, b"", 1.7)
    assert s.finished
    assert s.flush(2.0) == []


def test_tcp_stream_rst_flushes_both_directions():
    s = TcpStream("k")
    s.packet(True, 0, 0, SYN, b"", 0.0)
    s.packet(False, 1000, 1, SYN | ACK, b"", 0.0)
    s.packet(True, 1, 1001, ACK, b"a", 0.0)
    s.packet(True, 3, 1001, ACK, b"c", 0.0)  # client hole at offset 1
    s.packet(False, 1001, 2, ACK, b"x", 0.0)
    s.packet(False, 1003, 2, ACK, b"z", 0.0)  # server hole at offset 1
    out = s.packet(False, 1004, 0, RST, b"", 5.0)
    assert [(o, kinds([e])[0]) for o, e in out] == [(False, 1), (False, b"z"), (True, 1), (True, b"c")]
    assert s.finished


def test_tcp_stream_flush():
    s = TcpStream("k")
    s.packet(True, 0, 0, SYN, b"", 0.0)
    s.packet(True, 5, 0, ACK, b"late", 0.0)
    s.packet(False, 90, 0, ACK, b"resp", 0.0)  # mid-stream responder, no ack flag use
    out = s.flush(3.0)
    assert [(o, kinds([e])[0]) for o, e in out] == [(True, 4), (True, b"late")]


# ---- real captures --------------------------------------------------------------------------

ROOT = corpus_root()


def _cap(rel: str) -> Path:
    if ROOT is None:
        pytest.skip("shared corpus not present")
    p = ROOT / rel
    if not p.exists():
        pytest.skip(f"{rel} not in the corpus")
    return p


def _addr(hi: int, lo: int) -> str:
    import ipaddress

    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def tcp_packets(path: Path):
    """Every decoded TCP packet: (src, dst, seq, ack, flags, payload view, ts).

    ``payload`` is a memoryview into the reader's batch buffer, which the reader reuses for the
    next batch -- exactly what the pipeline hands the reassembler.
    """
    from lawtap.decode import kernel as dk
    from lawtap.sources import open_capture

    for batch in open_capture(path).batches():
        A, D = dk.new_columns(len(batch))
        dk.decode_batch(batch.data, batch.offset, batch.caplen, batch.linktype, A, D)
        buf = memoryview(batch.data)
        sel = np.nonzero((D[:, dk.C_STATUS] == dk.ST_FLOW) & (D[:, dk.C_PROTO] == 6))[0]
        for i in sel.tolist():
            row = D[i].tolist()
            src = (_addr(int(A[i, 0]), int(A[i, 1])), row[dk.C_SPORT])
            dst = (_addr(int(A[i, 2]), int(A[i, 3])), row[dk.C_DPORT])
            off, ln = row[dk.C_PAY_OFF], row[dk.C_PAY_LEN]
            yield src, dst, row[dk.C_SEQ], row[dk.C_ACK], row[dk.C_FLAGS], buf[off : off + ln], int(batch.ts[i]) / 1e9


class _Side:
    """What one direction of a connection produced, and what the raw packets say it should."""

    def __init__(self) -> None:
        self.pieces: list = []  # ("d", bytes) / ("g", n) in stream order
        self.weirds: list = []
        self.raw: list = []  # (seq, flags, payload bytes, ack_of_this_side) in capture order
        self.acks: list = []  # acks the peer sent for this direction
        self.buffered_seen = 0  # max buffered_bytes observed

    def add(self, e) -> None:
        if isinstance(e, Data):
            self.pieces.append(("d", bytes(e.data)))  # copy now: the view dies with the batch
        elif isinstance(e, Gap):
            self.pieces.append(("g", e.length))
        else:
            self.weirds.append(e)

    def delivered(self) -> bytes:
        return b"".join(p[1] for p in self.pieces if p[0] == "d")


def reassemble_capture(path: Path) -> dict:
    """Feed every TCP connection of a capture through TcpStream; return {conn: (stream, {is_orig: _Side})}."""
    import streamkit

    conns = {}
    for c in streamkit.connections(path):  # only to pick the TCP connections and their orig side
        if c.proto == "tcp":
            key = ((c.orig_h, c.orig_p), (c.resp_h, c.resp_p))
            conns[key] = (TcpStream(key), {True: _Side(), False: _Side()})
    for src, dst, seq, ack, flags, pay, ts in tcp_packets(path):
        is_orig = True
        ent = conns.get((src, dst))
        if ent is None:
            ent, is_orig = conns.get((dst, src)), False
            if ent is None:
                continue
        st, sides = ent
        sides[is_orig].raw.append((seq, flags, bytes(pay)))
        if flags & ACK and not flags & RST:
            sides[not is_orig].acks.append(ack)
        for o, e in st.packet(is_orig, seq, ack, flags, pay, ts):
            sides[o].add(e)
        d = st.orig if is_orig else st.resp
        sides[is_orig].buffered_seen = max(sides[is_orig].buffered_seen, d.buffered_bytes)
    for st, sides in conns.values():
        for o, e in st.flush(0.0):
            sides[o].add(e)
    return conns


def offline_reference(side: _Side) -> tuple[int, bytearray, bytearray]:
    """Independent reconstruction: every byte at its sequence offset, first copy wins.

    Returns (stream size, bytes, filled mask); size = furthest of data end, FIN, and the peer's
    acks (capped at the FIN), i.e. the sequence space the direction covered.
    """
    syn = [s for s, f, _ in side.raw if f & SYN]
    if syn:
        base = (syn[0] + 1) % M32
    else:
        firsts = [s for s, f, _ in side.raw if not f & RST]
        if not firsts:
            return 0, bytearray(), bytearray()
        base = firsts[0]

    def rel(seq: int) -> int | None:
        r = (seq - base) % M32
        return r if r < (1 << 31) else None

    segs = []
    end = 0
    fin = None
    for seq, flags, pay in side.raw:
        if flags & RST:
            continue
        r = rel((seq + 1) % M32 if flags & SYN else seq)
        if r is None:
            continue
        if pay:
            segs.append((r, pay))
            end = max(end, r + len(pay))
        if flags & FIN and fin is None:
            fin = r + len(pay)
    if fin is not None:
        end = max(end, fin)
    for a in side.acks:
        r = rel(a)
        if r is not None:
            end = max(end, min(r, fin) if fin is not None else r)
    data, mask = bytearray(end), bytearray(end)
    for r, pay in segs:
        for k in range(len(pay)):  # small captures: a plain loop is fine
            if not mask[r + k]:
                mask[r + k] = 1
                data[r + k] = pay[k]
    return end, data, mask


def _check_against_reference(conns: dict) -> tuple[int, int]:
    """Every direction: delivered + missed == sequence space; each delivered byte is the first
    copy seen at its offset; each gap covers only bytes never seen (or seen after being acked)."""
    checked = 0
    with_buffering = 0
    for key, (st, sides) in conns.items():
        for is_orig, side in sides.items():
            d = st.orig if is_orig else st.resp
            size, ref, mask = offline_reference(side)
            assert d.delivered_bytes + d.missed_bytes == size, (key, is_orig)
            assert d.buffered_bytes == 0
            pos = 0
            for kind, v in side.pieces:
                if kind == "d":
                    assert all(mask[pos : pos + len(v)]), (key, is_orig, pos)
                    assert v == bytes(ref[pos : pos + len(v)]), (key, is_orig, pos)
                    pos += len(v)
                else:
                    pos += v
            assert pos == size
            if d.missed_bytes == 0:
                assert side.delivered() == bytes(ref)
            checked += 1
            with_buffering += side.buffered_seen > 0
    return checked, with_buffering


def _http_bodies(resp: bytes):
    """Content-Length-delimited HTTP/1.x response bodies: (headers dict, body)."""
    pos = 0
    while True:
        i = resp.find(b"HTTP/1.", pos)
        if i < 0:
            return
        j = resp.find(b"\r\n\r\n", i)
        if j < 0:
            return
        head = resp[i:j].decode("latin-1").split("\r\n")
        hdrs = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        pos = j + 4
        if "content-length" in hdrs and "chunked" not in hdrs.get("transfer-encoding", "").lower():
            n = int(hdrs["content-length"])
            yield hdrs, resp[pos : pos + n]
            pos += n


def _oracle_sha256(capdir: Path) -> set[str]:
    tsv = capdir / "oracle" / "tshark" / "objects_http.tsv"
    if not tsv.exists():
        pytest.skip("no tshark HTTP objects oracle")
    with tsv.open(newline="") as f:
        return {row["sha256"] for row in csv.DictReader(f, delimiter="\t")}


@needs_corpus
def test_corpus_http_get_body_matches_tshark_object():
    path = _cap("http/zeek__get/get.pcap")
    oracle = _oracle_sha256(path.parent)
    conns = reassemble_capture(path)
    _check_against_reference(conns)
    found = set()
    for st, sides in conns.values():
        for hdrs, body in _http_bodies(sides[False].delivered()):
            if "gzip" not in hdrs.get("content-encoding", ""):
                found.add(hashlib.sha256(body).hexdigest())
    assert "4e7c7ef0984119447e743e3ec77e1de52713e345cde03fe7df753a35849bed18" in oracle
    assert oracle <= found


# Captures whose TCP streams have retransmissions, out-of-order segments, capture loss (gaps by
# ACK), ACKs captured before their segments, or a FIN acked before it shows up.
ACCOUNTING_CAPTURES = [
    "email/markofu__evidence02/evidence02.pcap",
    "http/markofu__evidence03/evidence03.pcap",
    "email/zeek__smtp/smtp.pcap",
    "http/arkime__http-post-upload/http-post-upload.pcap",
    "dns/markofu__dns/dns.cap",
    "tls/ndpi__google_ssl/google_ssl.pcap",
    "chat/ndpi__jabber/jabber.pcap",
    "chat/markofu__puzzle1/puzzle1.pcap",
    "misc/ndpi__bittorrent/bittorrent.pcap",
]


def _find(rel: str) -> Path:
    """The capture file of a corpus folder (the file name is only a hint)."""
    if ROOT is None:
        pytest.skip("shared corpus not present")
    folder = ROOT / Path(rel).parent
    caps = sorted(p for p in folder.glob("*") if p.is_file() and p.suffix in (".pcap", ".pcapng", ".cap", ".trace"))
    if not caps:
        pytest.skip(f"{folder.name} not in the corpus")
    return caps[0]


@lru_cache(maxsize=None)
def _reassembled(rel: str) -> dict:
    return reassemble_capture(_find(rel))


@needs_corpus
@pytest.mark.parametrize("rel", ACCOUNTING_CAPTURES, ids=lambda r: str(Path(r).parent))
def test_corpus_sequence_space_accounting(rel):
    """Per direction: delivered + missed == sequence space, and the bytes match an offline
    first-copy-wins reconstruction (so out-of-order and retransmitted data land right)."""
    conns = _reassembled(rel)
    checked, _ = _check_against_reference(conns)
    assert checked >= 1
    for st, sides in conns.values():
        assert not sides[True].weirds and not sides[False].weirds


@needs_corpus
def test_corpus_accounting_exercised_every_path():
    """The captures above really exercise buffering, retransmission and gaps."""
    buffering = retransmits = gaps = 0
    for rel in ACCOUNTING_CAPTURES:
        conns = _reassembled(rel)
        dirs = [(st.orig, sides[True]) for st, sides in conns.values()]
        dirs += [(st.resp, sides[False]) for st, sides in conns.values()]
        buffering += sum(side.buffered_seen > 0 for _, side in dirs)
        retransmits += any(d.retransmitted_bytes for d, _ in dirs)
        gaps += any(d.missed_bytes for d, _ in dirs)
    assert buffering >= 3  # directions that buffered out-of-order data
    assert retransmits >= 3  # captures with retransmitted bytes
    assert gaps >= 2  # captures with gaps


@needs_corpus
def test_corpus_evidence03_http_objects():
    """Every HTTP object tshark exported from evidence03 is among the reassembled response bodies
    (gzip ones decompressed). The one extra body is the JPEG whose segments arrived out of order,
    which tshark (out-of-order reassembly off by default) does not export."""
    path = _cap("http/markofu__evidence03/evidence03.pcap")
    oracle = _oracle_sha256(path.parent)
    conns = reassemble_capture(path)
    found: dict[str, bytes] = {}
    for st, sides in conns.values():
        for hdrs, body in _http_bodies(sides[False].delivered()):
            if not body or len(body) < int(hdrs["content-length"]):
                continue
            enc = hdrs.get("content-encoding", "").lower()
            if enc == "gzip":
                body = gzip.decompress(body)
            elif enc == "deflate":
                body = zlib.decompress(body)
            elif enc:
                continue
            found[hashlib.sha256(body).hexdigest()] = body
    assert len(oracle) >= 50
    assert oracle <= set(found)
    extra = [b for h, b in found.items() if h not in oracle]
    assert len(extra) <= 1
    for b in extra:
        assert len(b) == 16203 and b[:2] == b"\xff\xd8" and b[-2:] == b"\xff\xd9"


@pytest.mark.slow
@needs_corpus
@pytest.mark.parametrize("path", corpus_captures(), ids=capture_id)
def test_corpus_every_capture_reassembles_exactly(path):
    """Every TCP direction of every corpus capture matches the offline reconstruction."""
    _check_against_reference(reassemble_capture(path))
