"""A durable, append-only, on-disk queue: one per agency and handover interface (HI2, HI3).

Why on disk: TS 102 232-1 clause 6.3.3 asks the mediation function to buffer while the LEMF is
unreachable and resend later, and lawtap promises more: every record delivered, in order,
exactly once, across LEMF outages *and* mediator restarts. So a PDU is on disk before it is
sent, and it is only forgotten once the LEMF acknowledged it.

Layout of a queue directory::

    seg-<base offset, 20 digits>.q   segments; the name is the logical offset of its first byte
    committed                        the acknowledged position (two checksummed slots, fsync'ed)
    checkpoint                       an opaque blob of the owner's (e.g. sequence counters), kept
                                     so that deleting acknowledged segments loses no state

A segment is a series of *blocks*, one per :meth:`DurableQueue.flush`::

    block  = magic "LTQ1" | payload length u32 | crc u32 | record count u32 | payload
    crc    = crc32 over (payload length, record count, payload)
    payload = record*;  record = length u32 | bytes          (all integers little-endian)

The checksum is per block (zlib's C CRC over megabytes is ~1 GB/s; per record it would cost a
Python call each). A torn block at the end of the last segment (crash mid-write) is cut off when
the queue is reopened; damage anywhere else is an error, never skipped silently.

Positions are logical byte offsets, always at block boundaries. ``committed`` only moves forward.
Readers and one writer may run in different threads; the queue is not for several processes.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lawtap.errors import LawtapError
from lawtap.jit import njit

MAGIC = b"LTQ1"
_BLOCK = struct.Struct("<4sIII")
BLOCK_HEADER = _BLOCK.size
_SLOT = struct.Struct("<QQI4x")  # generation, position, crc32 of the first 16 bytes
_SEG_PREFIX, _SEG_SUFFIX = "seg-", ".q"
DEFAULT_SEGMENT_BYTES = 64 << 20


class QueueError(LawtapError):
    """The queue directory is unusable (I/O error or damaged data outside the torn tail)."""


def _seg_name(base: int) -> str:
    return f"{_SEG_PREFIX}{base:020d}{_SEG_SUFFIX}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@njit(cache=True, nogil=True)
def _strip(payload, count, out):
    """Copy the records of a block payload back to back into ``out``; returns bytes written or -1."""
    p = 0
    o = 0
    end = payload.shape[0]
    for _ in range(count):
        if p + 4 > end:
            return -1
        n = (np.int64(payload[p]) | (np.int64(payload[p + 1]) << 8) | (np.int64(payload[p + 2]) << 16)
             | (np.int64(payload[p + 3]) << 24))
        p += 4
        if p + n > end:
            return -1
        w = n >> 3
        if w:
            dw = out[o : o + 8 * w].view(np.uint64)
            sw = payload[p : p + 8 * w].view(np.uint64)
            for j in range(w):
                dw[j] = sw[j]
        for j in range(8 * w, n):
            out[o + j] = payload[p + j]
        o += n
        p += n
    return o if p == end else -1


class DurableQueue:
    """Append records, flush them to disk, read them back from any acknowledged position.

    ``fsync`` (default on) makes a flushed block and every commit survive power loss; without
    it they survive a crash of the process only (the OS still holds them).
    """

    def __init__(self, directory: str | os.PathLike[str], *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.segment_bytes = int(segment_bytes)
        self.fsync = fsync
        self._lock = threading.RLock()
        # Pending pieces, each holding whole records: (bytes, record count).
        self._pending: list[tuple[bytes | memoryview, int]] = []
        self._pending_bytes = 0
        self._pending_count = 0
        # Recently flushed blocks, kept in memory so the sender does not read back from disk
        # what it has just written: position -> (pieces, payload length, next position).
        self._recent: dict[int, tuple[list[tuple[bytes | memoryview, int]], int, int]] = {}
        self._recent_order: list[int] = []
        self._recent_bytes = 0
        self.recent_limit = 64 << 20
        self._readers: dict[int, int] = {}  # segment base -> read fd
        self._checkpoint_fn: Callable[[], bytes] | None = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._bases = self._list_segments()
            if not self._bases:
                self._bases = [0]
                (self.dir / _seg_name(0)).touch()
            self._end = self._recover_tail()
            self._wfd = os.open(self.dir / _seg_name(self._bases[-1]), os.O_WRONLY | os.O_APPEND)
            self._committed, self._gen = self._read_committed()
        except OSError as e:
            raise QueueError(f"queue {self.dir}: {e.strerror or e}") from None
        self._committed = min(max(self._committed, self._bases[0]), self._end)

    # -- recovery ----------------------------------------------------------------------------

    def _list_segments(self) -> list[int]:
        bases = []
        for p in self.dir.iterdir():
            name = p.name
            if name.startswith(_SEG_PREFIX) and name.endswith(_SEG_SUFFIX):
                try:
                    bases.append(int(name[len(_SEG_PREFIX):-len(_SEG_SUFFIX)]))
                except ValueError:
                    continue
        return sorted(bases)

    def _recover_tail(self) -> int:
        """Validate the last segment block by block; cut a torn or damaged tail. Returns the end."""
        base = self._bases[-1]
        path = self.dir / _seg_name(base)
        size = path.stat().st_size
        good = 0
        with open(path, "rb") as f:
            while good + BLOCK_HEADER <= size:
                f.seek(good)
                magic, length, crc, count = _BLOCK.unpack(f.read(BLOCK_HEADER))
                if magic != MAGIC or good + BLOCK_HEADER + length > size:
                    break
                if _block_crc(length, count, f.read(length)) != crc:
                    break
                good += BLOCK_HEADER + length
        if good != size:
            with open(path, "r+b") as f:
                f.truncate(good)
                f.flush()
                os.fsync(f.fileno())
        return base + good

    def _read_committed(self) -> tuple[int, int]:
        path = self.dir / "committed"
        best = (self._bases[0], 0)
        if not path.exists():
            return best
        raw = path.read_bytes()
        for i in range(2):
            chunk = raw[i * _SLOT.size:(i + 1) * _SLOT.size]
            if len(chunk) < _SLOT.size:
                continue
            gen, pos, crc = _SLOT.unpack(chunk)
            if zlib.crc32(chunk[:16]) == crc and gen >= best[1] and gen > 0:
                best = (pos, gen)
        return best

    # -- state -------------------------------------------------------------------------------

    @property
    def end(self) -> int:
        """Position after the last flushed block."""
        return self._end

    @property
    def committed(self) -> int:
        """Everything before this position was acknowledged."""
        return self._committed

    @property
    def start(self) -> int:
        """First position still on disk."""
        return self._bases[0]

    @property
    def pending(self) -> int:
        """Records appended but not yet flushed."""
        return self._pending_count

    def set_checkpoint(self, fn: Callable[[], bytes]) -> None:
        """``fn()`` is saved (atomically) before acknowledged segments are deleted."""
        self._checkpoint_fn = fn

    def checkpoint(self) -> bytes | None:
        """The last saved checkpoint blob, if any."""
        path = self.dir / "checkpoint"
        return path.read_bytes() if path.exists() else None

    # -- writing -----------------------------------------------------------------------------

    def append(self, record: bytes) -> None:
        """Queue one record in memory; :meth:`flush` writes it."""
        with self._lock:
            self._pending.append((struct.pack("<I", len(record)) + record, 1))
            self._pending_bytes += 4 + len(record)
            self._pending_count += 1

    def append_records(self, framed: bytes | memoryview | np.ndarray, count: int) -> None:
        """Queue ``count`` records already framed as ``length u32 LE | bytes`` back to back
        (what :meth:`lawtap.etsi.pdu.IpccTemplate.encode_batch` writes with ``length_prefix``)."""
        data = memoryview(framed).cast("B") if not isinstance(framed, np.ndarray) else memoryview(framed)
        with self._lock:
            self._pending.append((data, int(count)))
            self._pending_bytes += data.nbytes
            self._pending_count += int(count)

    def flush(self) -> int:
        """Write pending records as one block (fsync'ed if configured); returns the new end."""
        with self._lock:
            if not self._pending_count:
                return self._end
            pieces = list(self._pending)
            count = self._pending_count
            length = self._pending_bytes
            crc = zlib.crc32(struct.pack("<II", length, count))
            for piece, _ in pieces:
                crc = zlib.crc32(piece, crc)
            header = _BLOCK.pack(MAGIC, length, crc, count)
            try:
                if self._end - self._bases[-1] >= self.segment_bytes:
                    self._roll()
                _writev_all(self._wfd, [header] + [piece for piece, _ in pieces])
                if self.fsync:
                    os.fsync(self._wfd)
            except OSError as e:
                # Cut the half-written block so the segment stays a clean series of blocks; the
                # records stay pending for the next attempt.
                try:
                    os.ftruncate(self._wfd, self._end - self._bases[-1])
                except OSError:
                    pass
                raise QueueError(f"queue {self.dir}: write failed: {e.strerror or e}") from None
            self._pending.clear()
            self._pending_bytes = self._pending_count = 0
            pos = self._end
            self._end += BLOCK_HEADER + length
            self._remember(pos, pieces, length)
            return self._end

    def _remember(self, pos: int, pieces: list[tuple[bytes | memoryview, int]], length: int) -> None:
        self._recent[pos] = (pieces, length, pos + BLOCK_HEADER + length)
        self._recent_order.append(pos)
        self._recent_bytes += length
        while self._recent_bytes > self.recent_limit and self._recent_order:
            old = self._recent_order.pop(0)
            self._recent_bytes -= self._recent.pop(old)[1]

    def _roll(self) -> None:
        os.close(self._wfd)
        self._bases.append(self._end)
        self._wfd = os.open(self.dir / _seg_name(self._end), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if self.fsync:
            _fsync_dir(self.dir)

    # -- reading -----------------------------------------------------------------------------

    def _segment_of(self, pos: int) -> int:
        bases = self._bases
        i = len(bases) - 1
        while i > 0 and bases[i] > pos:
            i -= 1
        return bases[i]

    def _fd(self, base: int) -> int:
        fd = self._readers.get(base)
        if fd is None:
            fd = os.open(self.dir / _seg_name(base), os.O_RDONLY)
            self._readers[base] = fd
        return fd

    def _blocks(self, pos: int, max_bytes: int) -> tuple[list[tuple[list[tuple[bytes | memoryview, int]], int]], int]:
        """Whole blocks from ``pos``: ``([(pieces, payload length), ...], next position)``."""
        out: list[tuple[list[tuple[bytes | memoryview, int]], int]] = []
        total = 0
        with self._lock:
            end = self._end
            if pos < self._bases[0] or pos > end:
                raise QueueError(f"queue {self.dir}: position {pos} outside {self._bases[0]}..{end}")
            try:
                while pos < end and (not out or total < max_bytes):
                    hit = self._recent.get(pos)
                    if hit is not None:
                        out.append((hit[0], hit[1]))
                        total += hit[1]
                        pos = hit[2]
                        continue
                    base = self._segment_of(pos)
                    nxt = [b for b in self._bases if b > base]
                    seg_end = nxt[0] if nxt else end
                    if pos >= seg_end:
                        pos = seg_end
                        continue
                    fd = self._fd(base)
                    head = os.pread(fd, BLOCK_HEADER, pos - base)
                    if len(head) < BLOCK_HEADER:
                        raise QueueError(f"queue {self.dir}: segment {base} ends inside a block at {pos}")
                    magic, length, crc, count = _BLOCK.unpack(head)
                    if magic != MAGIC:
                        raise QueueError(f"queue {self.dir}: no block at position {pos} (damaged segment)")
                    payload = os.pread(fd, length, pos - base + BLOCK_HEADER)
                    if len(payload) != length or _block_crc(length, count, payload) != crc:
                        raise QueueError(f"queue {self.dir}: block at position {pos} is damaged (checksum)")
                    out.append(([(payload, count)], length))
                    total += length
                    pos += BLOCK_HEADER + length
            except OSError as e:
                raise QueueError(f"queue {self.dir}: read failed: {e.strerror or e}") from None
        return out, pos

    def read(self, pos: int, max_bytes: int = 4 << 20) -> tuple[np.ndarray, int, int]:
        """Records from ``pos`` (whole blocks, at least one if any) without their length prefixes.

        Returns ``(bytes as uint8 array, record count, next position)``: for a queue of BER
        PDUs that is exactly what goes on the wire.
        """
        blocks, nxt = self._blocks(pos, max_bytes)
        out = np.empty(sum(length for _, length in blocks), np.uint8)
        o = 0
        n = 0
        for pieces, _ in blocks:
            for piece, count in pieces:
                got = _strip(np.frombuffer(piece, np.uint8), count, out[o:])
                if got < 0:
                    raise QueueError(f"queue {self.dir}: block records do not add up (damaged)")
                o += got
                n += count
        return out[:o], n, nxt

    def records(self, pos: int | None = None) -> Iterator[bytes]:
        """Every record from ``pos`` (default: the oldest on disk), for recovery scans and tests."""
        p = self._bases[0] if pos is None else pos
        while True:
            blocks, p2 = self._blocks(p, 4 << 20)
            if not blocks:
                return
            for pieces, _ in blocks:
                for piece, count in pieces:
                    mv = memoryview(piece).cast("B")
                    q = 0
                    for _ in range(count):
                        (n,) = struct.unpack_from("<I", mv, q)
                        yield bytes(mv[q + 4:q + 4 + n])
                        q += 4 + n
            p = p2

    # -- acknowledgement ---------------------------------------------------------------------

    def commit(self, pos: int) -> None:
        """Mark everything before ``pos`` acknowledged (fsync'ed) and drop segments wholly before it."""
        with self._lock:
            if pos <= self._committed:
                return
            if pos > self._end:
                raise QueueError(f"queue {self.dir}: cannot commit {pos} beyond the end {self._end}")
            self._gen += 1
            slot = struct.pack("<QQ", self._gen, pos)
            slot += struct.pack("<I4x", zlib.crc32(slot))
            try:
                fd = os.open(self.dir / "committed", os.O_WRONLY | os.O_CREAT, 0o600)
                try:
                    os.pwrite(fd, slot, (self._gen % 2) * _SLOT.size)
                    if self.fsync:
                        os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                raise QueueError(f"queue {self.dir}: cannot record the commit: {e.strerror or e}") from None
            self._committed = pos
            while self._recent_order and self._recent_order[0] < pos:
                self._recent_bytes -= self._recent.pop(self._recent_order.pop(0))[1]
            done = self._acknowledged_segments()
        if done:
            # The owner's checkpoint is taken outside our lock: the owner may hold its own lock
            # while appending, and taking them in the other order here could deadlock.
            blob = self._checkpoint_fn() if self._checkpoint_fn is not None else None
            with self._lock:
                self._drop([b for b in done if b in self._bases[:-1]], blob)

    def _acknowledged_segments(self) -> list[int]:
        return [b for i, b in enumerate(self._bases[:-1]) if self._bases[i + 1] <= self._committed]

    def _drop(self, done: list[int], blob: bytes | None) -> None:
        if not done:
            return
        if blob is not None:
            tmp = self.dir / "checkpoint.tmp"
            with open(tmp, "wb") as f:
                f.write(blob)
                f.flush()
                if self.fsync:
                    os.fsync(f.fileno())
            os.replace(tmp, self.dir / "checkpoint")
        for base in done:
            fd = self._readers.pop(base, None)
            if fd is not None:
                os.close(fd)
            (self.dir / _seg_name(base)).unlink(missing_ok=True)
            self._bases.remove(base)
        if self.fsync:
            _fsync_dir(self.dir)

    def close(self) -> None:
        """Flush pending records and release file descriptors."""
        with self._lock:
            try:
                self.flush()
            finally:
                for fd in self._readers.values():
                    os.close(fd)
                self._readers.clear()
                if self._wfd >= 0:
                    os.close(self._wfd)
                    self._wfd = -1


def _block_crc(length: int, count: int, payload: bytes) -> int:
    """The block checksum covers its header fields too, so a damaged count cannot pass."""
    return zlib.crc32(payload, zlib.crc32(struct.pack("<II", length, count)))


def _writev_all(fd: int, buffers: list[bytes | memoryview]) -> None:
    """``os.writev`` until everything is written (it may stop short, and takes at most IOV_MAX)."""
    views = [memoryview(b).cast("B") for b in buffers if len(memoryview(b).cast("B"))]
    while views:
        n = os.writev(fd, views[:512])
        while views and n >= views[0].nbytes:
            n -= views[0].nbytes
            views.pop(0)
        if n:
            views[0] = views[0][n:]
