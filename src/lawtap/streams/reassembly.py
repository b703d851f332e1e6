"""TCP stream reassembly (sans-IO): segments in, in-order bytes with explicit gaps out.

One :class:`DirectionReassembler` per direction of a connection turns the segments that
direction sent into the events a :class:`~lawtap.analyzers.base.StreamAnalyzer` consumes:

* :class:`Data` ``(data, ts)`` -> ``analyzer.feed(is_orig, data, ts)``
* :class:`Gap` ``(length, ts)`` -> ``analyzer.gap(is_orig, length, ts)``
* :class:`Weird` ``(name, detail, ts)`` -> a ``weird`` record (e.g. ``tcp_inconsistent_overlap``)

Events come out in stream order: every ``Data``/``Gap`` continues exactly where the previous one
of the same direction stopped, so ``delivered_bytes + missed_bytes`` is always the stream
position. :class:`TcpStream` holds both directions of one connection and routes each packet's
ACK to the opposite direction.

Sequence numbers
    Positions are 64-bit offsets from the start of the stream (offset 0 = ``ISN + 1`` after a
    SYN, or the first sequence number seen when the capture picked the connection up
    mid-stream). A 32-bit sequence number is unwrapped to the offset nearest to the current
    delivery point (modular arithmetic, window of +/- 2**31), so streams longer than 4 GiB and
    ISNs near 2**32 wrap transparently. Bytes before the stream start are dropped.

What happens to a segment
    * in order and nothing buffered (the common case): its payload object is delivered as is;
    * already delivered (retransmission, keep-alive): dropped; a partial retransmission
      delivers only its new tail;
    * ahead of the delivery point (out of order): *copied* (``bytes()``) into the buffer until
      the hole before it fills;
    * overlapping buffered bytes: the first copy wins; if the overlapping bytes differ, a
      ``Weird("tcp_inconsistent_overlap", ...)`` is emitted. Bytes that were already delivered
      are not kept (delivery is zero-copy), so overlaps with them are not compared;
    * RST: its payload is not stream data (``Weird("RST_with_data")``); the direction is flushed
      (and :class:`TcpStream` flushes the other direction too);
    * a SYN whose sequence number differs from the ISN already seen: ``Weird("SYN_seq_jump")``.

When a hole is declared a gap
    * the peer ACKs bytes beyond it (Zeek's content-gap semantics: the receiver had them, so the
      capture lost them): ``Gap(hole)`` then the buffered bytes that follow. An acknowledged
      tail with nothing buffered after it is remembered rather than declared at once (captures
      often show the ACK of a FIN, or of data, a moment before the segment itself): it becomes
      a gap when data arrives beyond it, or at RST/flush (capped at the FIN);
    * out-of-order bytes exceed ``max_buffer`` (or the buffer holds more than ``max_blocks``
      separate pieces): the oldest hole becomes a gap and what follows it is delivered, until
      the buffer is back under its bounds, so memory never grows without limit;
    * RST or :meth:`DirectionReassembler.flush`: every remaining hole is a gap and everything
      buffered is delivered (plus a gap up to the FIN when the FIN was seen beyond the data).

    A FIN alone does not flush: a retransmission of a lost segment may still arrive after the
    FIN. The hole is resolved by that retransmission, by the peer's ACK, by RST, or by
    ``flush`` at connection end. Once everything up to the FIN is delivered,
    :attr:`DirectionReassembler.finished` is true.

Zero-copy contract (important)
    ``payload`` is normally a ``memoryview`` slice of the capture batch buffer, and that buffer
    is reused for the next batch. In-order payloads are delivered *without copying*: a
    ``Data.data`` may be that very memoryview (or a slice of it), valid only until the caller
    reads the next batch. Consumers that keep bytes beyond the call must copy them
    (``bytes(data)``); consumers that need ``bytes`` methods (``find``, ``split``) should call
    ``bytes(data)`` too. Everything the reassembler *buffers* (out-of-order data) is copied
    with ``bytes()`` when it is buffered, so reusing the batch buffer never corrupts it, and
    buffered data is delivered as ``bytes``.

Timestamps
    ``Data``/``Gap``/``Weird`` carry the timestamp of the packet (or ACK, or flush) that caused
    the delivery -- for buffered data, when the hole filled, not when the bytes were captured.

Performance
    The in-order path is one comparison, three counter updates and one :class:`Data` (about
    1 us per segment through ``DirectionReassembler.segment``, 1.4 us through
    ``TcpStream.packet`` on a machine where an empty 4-argument Python call costs 75 ns).
    Out-of-order segments go through a sorted list of disjoint buffered blocks (bisect).
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Union

__all__ = [
    "ACK",
    "FIN",
    "PSH",
    "RST",
    "SYN",
    "Data",
    "DirectionReassembler",
    "Event",
    "Gap",
    "TcpStream",
    "Weird",
]

FIN = 0x01
SYN = 0x02
RST = 0x04
PSH = 0x08
ACK = 0x10

_MASK = 0xFFFFFFFF
_MOD = 1 << 32
_HALF = 1 << 31
_CTRL = SYN | FIN | RST
_ACK_RST = ACK | RST


class Data:
    """``data`` continues the stream without a hole. May be a memoryview of the caller's
    buffer (valid until the caller's next batch; see the module docstring) or ``bytes``."""

    __slots__ = ("data", "ts")
    __match_args__ = ("data", "ts")

    def __init__(self, data, ts: float) -> None:
        self.data = data
        self.ts = ts

    def __eq__(self, other: object) -> bool:
        return type(other) is Data and bytes(self.data) == bytes(other.data) and self.ts == other.ts

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Data({bytes(self.data)[:40]!r}{'...' if len(self.data) > 40 else ''} len={len(self.data)}, ts={self.ts})"


class Gap:
    """``length`` bytes of the stream were never seen (capture loss)."""

    __slots__ = ("length", "ts")
    __match_args__ = ("length", "ts")

    def __init__(self, length: int, ts: float) -> None:
        self.length = length
        self.ts = ts

    def __eq__(self, other: object) -> bool:
        return type(other) is Gap and self.length == other.length and self.ts == other.ts

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Gap({self.length}, ts={self.ts})"


class Weird:
    """An anomaly, e.g. ``("tcp_inconsistent_overlap", detail)``; becomes a ``weird`` record."""

    __slots__ = ("name", "detail", "ts")
    __match_args__ = ("name", "detail", "ts")

    def __init__(self, name: str, detail: str, ts: float) -> None:
        self.name = name
        self.detail = detail
        self.ts = ts

    def __eq__(self, other: object) -> bool:
        return type(other) is Weird and (self.name, self.detail, self.ts) == (other.name, other.detail, other.ts)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Weird({self.name!r}, {self.detail!r}, ts={self.ts})"


Event = Union[Data, Gap, Weird]

_new = object.__new__


class DirectionReassembler:
    """Reassembles the bytes one endpoint sent. Sans-IO: every call returns the events it caused.

    Counters: ``delivered_bytes`` (sum of ``Data`` lengths), ``missed_bytes`` (sum of ``Gap``
    lengths), ``buffered_bytes`` (out-of-order bytes held now); also ``retransmitted_bytes``
    (payload bytes dropped as already delivered or already buffered) and
    ``inconsistent_overlaps`` (number of ``tcp_inconsistent_overlap`` weirds).
    """

    __slots__ = (
        "max_buffer",
        "max_blocks",
        "delivered_bytes",
        "missed_bytes",
        "buffered_bytes",
        "retransmitted_bytes",
        "inconsistent_overlaps",
        "isn",
        "_base32",
        "_next",
        "_next32",
        "_starts",
        "_bufs",
        "_fin",
        "_acked",
        "reset",
    )

    def __init__(self, max_buffer: int = 1 << 20, max_blocks: int = 4096) -> None:
        self.max_buffer = max_buffer
        self.max_blocks = max_blocks
        self.delivered_bytes = 0
        self.missed_bytes = 0
        self.buffered_bytes = 0
        self.retransmitted_bytes = 0
        self.inconsistent_overlaps = 0
        self.isn: int | None = None  # the SYN's sequence number, when a SYN was seen
        self._base32 = -1  # 32-bit sequence number of stream offset 0 (-1: not started)
        self._next = 0  # stream offset of the next byte to deliver (= delivered + missed)
        self._next32 = -1  # (_base32 + _next) mod 2**32; -1 before start (never equals a seq)
        self._starts: list[int] = []  # buffered blocks: sorted, non-overlapping, all > _next
        self._bufs: list[bytes] = []
        self._fin: int | None = None  # stream offset of the FIN
        self._acked = 0  # highest stream offset the peer acknowledged
        self.reset = False

    # ---- state -------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._base32 >= 0

    @property
    def position(self) -> int:
        """Stream offset of the next byte to deliver (``delivered_bytes + missed_bytes``)."""
        return self._next

    @property
    def next_seq(self) -> int | None:
        """32-bit sequence number of the next byte to deliver (None before the first segment)."""
        return self._next32 if self._base32 >= 0 else None

    @property
    def fin_offset(self) -> int | None:
        return self._fin

    @property
    def finished(self) -> bool:
        """RST seen, or FIN seen and every byte before it delivered or declared missing."""
        return self.reset or (self._fin is not None and self._next >= self._fin and not self._starts)

    def _offset(self, seq: int) -> int:
        """Unwrap a 32-bit sequence number to the stream offset nearest the delivery point."""
        d = (seq - self._next32) & _MASK
        if d >= _HALF:
            d -= _MOD
        return self._next + d

    # ---- input -------------------------------------------------------------------------------
    def segment(self, seq: int, payload, flags: int, ts: float) -> list[Event]:
        """One segment this direction sent (``payload`` may be empty)."""
        # Fast path: in order, nothing buffered, no SYN/FIN/RST. Delivered without a copy.
        if seq == self._next32 and not flags & _CTRL and not self._starts:
            n = len(payload)
            if not n:
                return []
            self._next += n
            self._next32 = (seq + n) & _MASK
            self.delivered_bytes += n
            ev = _new(Data)  # Data(payload, ts) without the __init__ call: ~25% of this path
            ev.data = payload
            ev.ts = ts
            return [ev]
        return self._segment(seq, payload, flags, ts)

    def _segment(self, seq: int, payload, flags: int, ts: float) -> list[Event]:
        out: list[Event] = []
        n = len(payload)
        if flags & SYN:
            if self._base32 < 0:
                self.isn = seq
                self._start((seq + 1) & _MASK)
            elif self.isn is not None and seq != self.isn:
                out.append(Weird("SYN_seq_jump", f"SYN seq {seq} != ISN {self.isn}", ts))
            seq = (seq + 1) & _MASK  # data of a SYN segment starts after the SYN
        elif self._base32 < 0:
            if flags & RST:
                return out  # a RST alone tells nothing about where the stream starts
            self._start(seq)
        if flags & RST:
            if n:
                out.append(Weird("RST_with_data", f"{n} bytes", ts))
            self.reset = True
            self._flush(ts, out)
            return out
        start = self._offset(seq)
        if n:
            self._insert(start, payload, n, ts, out)
        if flags & FIN and self._fin is None:
            fin = start + n
            if fin >= self._next:
                self._fin = fin
        return out

    def ack(self, ack_seq: int, ts: float) -> list[Event]:
        """The peer acknowledged every byte before ``ack_seq``. A hole it covers is a gap."""
        if self._base32 < 0:
            return []
        d = (ack_seq - self._next32) & _MASK
        if d == 0 or d >= _HALF:
            return []  # nothing beyond what was delivered
        target = self._next + d
        fin = self._fin
        if fin is not None and target > fin:
            target = fin  # the FIN takes one sequence number but carries no byte
            if target <= self._next:
                return []
        if target > self._acked:
            self._acked = target
        starts = self._starts
        if not starts or starts[0] > target:
            return []  # acked but unseen tail: a gap only if data shows up beyond it, or at flush
        out: list[Event] = []
        while starts and starts[0] <= target:
            self._skip_to(starts[0], ts, out)
        return out

    def flush(self, ts: float) -> list[Event]:
        """Connection end: declare remaining holes as gaps and deliver everything buffered."""
        out: list[Event] = []
        self._flush(ts, out)
        return out

    # ---- internals ---------------------------------------------------------------------------
    def _start(self, base32: int) -> None:
        self._base32 = base32
        self._next = 0
        self._next32 = base32

    def _flush(self, ts: float, out: list) -> None:
        if self._base32 < 0:
            return
        if self._starts:
            end = self._starts[-1] + len(self._bufs[-1])
            self._skip_to(end, ts, out)
        # Unseen tail: up to the FIN when one was seen, else up to what the peer acknowledged.
        tail = self._fin if self._fin is not None else self._acked
        if tail > self._next:
            self._skip_to(tail, ts, out)

    def _insert(self, start: int, payload, n: int, ts: float, out: list) -> None:
        nxt = self._next
        end = start + n
        if end <= nxt:
            self.retransmitted_bytes += n
            return
        starts = self._starts
        if start <= nxt:
            # Reaches the delivery point: the part before the first buffered block goes out
            # directly (no copy); the rest, if it reaches the buffer, is merged below.
            if start < nxt:
                self.retransmitted_bytes += nxt - start
                payload = memoryview(payload)[nxt - start :]
                start = nxt
            lim = starts[0] if starts else end
            if end <= lim:
                self._deliver_direct(payload, end - start, ts, out)
                if starts and starts[0] == self._next:
                    self._drain(ts, out)
                return
            k = lim - start
            mv = memoryview(payload)
            if k > 0:
                self._deliver_direct(mv[:k], k, ts, out)
            payload = mv[k:]
            start = lim
            if start >= end:
                return
        self._buffer(start, payload, ts, out)
        starts = self._starts
        if starts and starts[0] == self._next:
            self._drain(ts, out)
        if self._acked > self._next:
            while starts and starts[0] <= self._acked:  # data after an acked hole: the hole is lost
                self._skip_to(starts[0], ts, out)
        if self.buffered_bytes > self.max_buffer or len(self._starts) > self.max_blocks:
            self._shed(ts, out)

    def _deliver_direct(self, payload, n: int, ts: float, out: list) -> None:
        self._next += n
        self._next32 = (self._base32 + self._next) & _MASK
        self.delivered_bytes += n
        out.append(Data(payload, ts))

    def _buffer(self, start: int, payload, ts: float, out: list) -> None:
        """Store the parts of ``[start, start+len)`` no block covers (copied); compare the rest."""
        starts, bufs = self._starts, self._bufs
        mv = memoryview(payload)
        end = start + len(mv)
        i = bisect_right(starts, start) - 1
        pos = start
        new: list[tuple[int, bytes]] = []
        differ = 0
        dup = 0
        if i >= 0:
            bs = starts[i]
            buf = bufs[i]
            be = bs + len(buf)
            if be > pos:
                ov = min(be, end)
                dup += ov - pos
                if mv[pos - start : ov - start] != buf[pos - bs : ov - bs]:
                    differ += 1
                pos = ov
        i += 1
        nb = len(starts)
        while pos < end:
            if i < nb and starts[i] < end:
                bs = starts[i]
                if bs > pos:
                    new.append((pos, bytes(mv[pos - start : bs - start])))
                buf = bufs[i]
                ov = min(bs + len(buf), end)
                dup += ov - bs
                if mv[bs - start : ov - start] != buf[: ov - bs]:
                    differ += 1
                pos = ov
                i += 1
            else:
                new.append((pos, bytes(mv[pos - start : end - start])))
                pos = end
        if dup:
            self.retransmitted_bytes += dup
        if differ:
            self.inconsistent_overlaps += 1
            out.append(
                Weird(
                    "tcp_inconsistent_overlap",
                    f"segment at stream offset {start} len {end - start} differs from buffered data "
                    f"(seq {(self._base32 + start) & _MASK})",
                    ts,
                )
            )
        for s, b in new:
            j = bisect_right(starts, s)
            starts.insert(j, s)
            bufs.insert(j, b)
            self.buffered_bytes += len(b)

    def _drain(self, ts: float, out: list) -> None:
        """Deliver the buffered blocks contiguous with the delivery point, as one Data."""
        starts, bufs = self._starts, self._bufs
        pos = self._next
        k = 0
        nb = len(starts)
        while k < nb and starts[k] == pos:
            pos += len(bufs[k])
            k += 1
        if not k:
            return
        data = bufs[0] if k == 1 else b"".join(bufs[:k])
        del starts[:k]
        del bufs[:k]
        n = len(data)
        self.buffered_bytes -= n
        self.delivered_bytes += n
        self._next = pos
        self._next32 = (self._base32 + pos) & _MASK
        out.append(Data(data, ts))

    def _gap(self, n: int, ts: float, out: list) -> None:
        self._next += n
        self._next32 = (self._base32 + self._next) & _MASK
        self.missed_bytes += n
        out.append(Gap(n, ts))

    def _skip_to(self, target: int, ts: float, out: list) -> None:
        """Declare every hole before ``target`` a gap; deliver buffered data on the way (and the
        contiguous run that follows the last hole, even past ``target``)."""
        starts = self._starts
        while self._next < target:
            if starts:
                s0 = starts[0]
                hole_end = s0 if s0 < target else target
            else:
                hole_end = target
            if hole_end > self._next:
                self._gap(hole_end - self._next, ts, out)
            if starts and starts[0] == self._next:
                self._drain(ts, out)

    def _shed(self, ts: float, out: list) -> None:
        """Buffer over its bounds: give up on the oldest holes until it fits again."""
        while self._starts and (self.buffered_bytes > self.max_buffer or len(self._starts) > self.max_blocks):
            self._skip_to(self._starts[0], ts, out)


class TcpStream:
    """Both directions of one TCP connection.

    ``packet()`` routes the packet's ACK (when the ACK flag is set and RST is not) to the opposite
    direction first -- so the data the peer acknowledges comes out before this packet's own
    data -- then feeds the segment to the sender's direction. A RST flushes both directions.
    """

    __slots__ = ("key", "orig", "resp")

    def __init__(self, conn_key=None, max_buffer: int = 1 << 20, max_blocks: int = 4096) -> None:
        self.key = conn_key
        self.orig = DirectionReassembler(max_buffer, max_blocks)
        self.resp = DirectionReassembler(max_buffer, max_blocks)

    def packet(self, is_orig: bool, seq: int, ack: int, flags: int, payload, ts: float) -> list[tuple[bool, Event]]:
        """One packet: ``(is_orig, event)`` pairs, the peer's first (see the class docstring)."""
        if is_orig:
            d = self.orig
            o = self.resp
        else:
            d = self.resp
            o = self.orig
        out = None
        # The peer's ack() does nothing unless the ACK moves past its delivery point: test that
        # here, saving a call per packet in the steady state.
        if flags & _ACK_RST == ACK and 0 < ((ack - o._next32) & _MASK) < _HALF and o._base32 >= 0:
            ev = o.ack(ack, ts)
            if ev:
                peer = not is_orig
                out = [(peer, e) for e in ev]
        # DirectionReassembler.segment's in-order fast path, inlined (keep the two in sync).
        if seq == d._next32 and not flags & _CTRL and not d._starts:
            n = len(payload)
            if not n:
                return out or []
            d._next += n
            d._next32 = (seq + n) & _MASK
            d.delivered_bytes += n
            e = _new(Data)
            e.data = payload
            e.ts = ts
            if out is None:
                return [(is_orig, e)]
            out.append((is_orig, e))
            return out
        ev = d._segment(seq, payload, flags, ts)
        if out is None:
            out = [(is_orig, e) for e in ev]
        else:
            out.extend((is_orig, e) for e in ev)
        if flags & RST:
            peer = not is_orig
            out.extend((peer, e) for e in o.flush(ts))
        return out

    def flush(self, ts: float) -> list[tuple[bool, Event]]:
        """Connection end (timeout or end of input): flush both directions, originator first."""
        out = [(True, e) for e in self.orig.flush(ts)]
        out.extend((False, e) for e in self.resp.flush(ts))
        return out

    @property
    def finished(self) -> bool:
        """Both directions closed (FIN delivered) or the connection was reset."""
        return (self.orig.finished and self.resp.finished) or self.orig.reset or self.resp.reset
