"""Merge several sources into one time-ordered stream of PacketBatches.

Semantics are those of ``mergecap``: a k-way merge on each source's next packet, smallest
timestamp first, ties going to the source listed first. If every input is time-ordered the
output is a stable sort of all packets by time; if an input is not, its own order is kept.

Each source's batch buffer is reused by that source, so selected packets are copied into a
fresh contiguous buffer before the source is asked for its next batch. The merge decisions are
made by a numba kernel on the timestamp columns; Python only runs once per input batch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Protocol

import numpy as np
from lawtap.jit import njit

from lawtap.sources.batch import PacketBatch, ReaderWeird
from lawtap.sources.open import DEFAULT_MAX_BYTES, open_capture
from lawtap.sources.pcap import empty_batch

# Each source reads with its own buffer; give each at least this much even with many inputs.
MIN_SOURCE_BYTES = 1 << 20
R_EXHAUSTED, R_REFILL, R_FULL = 0, 1, 2


class BatchSource(Protocol):
    def batches(self, max_bytes: int = ...) -> Iterator[PacketBatch]: ...


@njit(cache=True)
def _merge_select(ts, caplen, heads, ends, more, max_out, byte_room, force, out_src, out_idx):
    """Pick packets in merge order from the segments ``[heads[j], ends[j])`` of ``ts``.

    Stops when a segment whose source ``more`` packets may follow runs dry (its next packet is
    unknown), after ``max_out`` picks, or before exceeding ``byte_room`` bytes (with ``force``
    the first packet is taken even if larger). ``heads`` advance in place.
    Returns (picked, bytes, reason).
    """
    k = heads.shape[0]
    m = 0
    used = 0
    while m < max_out:
        best = -1
        best_ts = np.int64(0)
        for j in range(k):
            h = heads[j]
            if h < ends[j] and (best < 0 or ts[h] < best_ts):
                best = j
                best_ts = ts[h]
        if best < 0:
            return m, used, R_EXHAUSTED
        i = heads[best]
        cl = np.int64(caplen[i])
        if (m > 0 or not force) and used + cl > byte_room:
            return m, used, R_FULL
        out_src[m] = best
        out_idx[m] = i
        used += cl
        m += 1
        heads[best] = i + 1
        if i + 1 == ends[best] and more[best]:
            return m, used, R_REFILL
    return m, used, R_FULL


@njit(cache=True)
def _copy(dst, d, src, s, c):
    """``dst[d:d+c] = src[s:s+c]`` 8 bytes at a time.

    numba's byte-slice assignment runs at ~1 GB/s (it cannot rule out aliasing, so it does not
    vectorise); unaligned 8-byte words are fine on the CPUs we target and run 2-3x faster.
    Kept per module on purpose: numba's cache only notices edits to the kernel's own file.
    """
    w = c >> 3
    if w:
        dw = dst[d : d + 8 * w].view(np.uint64)
        sw = src[s : s + 8 * w].view(np.uint64)
        for j in range(w):
            dw[j] = sw[j]
    for j in range(8 * w, c):
        dst[d + j] = src[s + j]


@njit(cache=True)
def _gather(dst, dst_off, src, src_off, caplen):
    for k in range(dst_off.shape[0]):
        _copy(dst, dst_off[k], src, src_off[k], caplen[k])


class _Cursor:
    """One input: its batch iterator, current batch and read position in it."""

    def __init__(self, source: BatchSource, max_bytes: int, label: str | None) -> None:
        self.it = source.batches(max_bytes)
        self.label = label
        self.batch: PacketBatch | None = None
        self.pos = 0
        self.done = False

    @property
    def remaining(self) -> int:
        return 0 if self.batch is None else len(self.batch) - self.pos

    def refill(self, weirds: list[ReaderWeird]) -> None:
        """Fetch batches until one has packets or the source ends (invalidates the old one)."""
        while not self.done and self.remaining == 0:
            try:
                b = next(self.it)
            except StopIteration:
                self.done, self.batch = True, None
                return
            for w in b.weirds:
                weirds.append(replace(w, detail=f"{self.label}: {w.detail}") if self.label else w)
            self.batch, self.pos = b, 0


class _Output:
    """A fresh output batch being filled; handed over whole, never reused."""

    def __init__(self, max_bytes: int, max_packets: int) -> None:
        self.data = np.empty(max_bytes, np.uint8)
        self.used = 0
        self.n = 0
        self.cap = max_packets
        self.offset = np.empty(max_packets, np.int64)
        self.caplen = np.empty(max_packets, np.int32)
        self.wirelen = np.empty(max_packets, np.int32)
        self.ts = np.empty(max_packets, np.int64)
        self.linktype = np.empty(max_packets, np.int32)
        self.file_id = np.empty(max_packets, np.int16)
        self.file_offset = np.empty(max_packets, np.int64)

    def append(self, cursors: list[_Cursor], src: np.ndarray, idx: np.ndarray) -> None:
        """Copy picks (cursor ``src[k]``, packet ``idx[k]`` of its batch) in order."""
        m = src.shape[0]
        rows = slice(self.n, self.n + m)
        groups = []
        for j, c in enumerate(cursors):
            sel = np.flatnonzero(src == j)
            if sel.shape[0]:
                assert c.batch is not None
                groups.append((c.batch, self.n + sel, idx[sel]))
        for b, dst, i in groups:
            self.caplen[dst] = b.caplen[i]
            self.wirelen[dst] = b.wirelen[i]
            self.ts[dst] = b.ts[i]
            self.linktype[dst] = b.linktype[i]
            self.file_id[dst] = b.file_id[i]
            self.file_offset[dst] = b.file_offset[i]
        sizes = self.caplen[rows].astype(np.int64)
        self.offset[rows] = self.used + np.cumsum(sizes) - sizes
        total = self.used + int(sizes.sum())
        if total > self.data.shape[0]:  # one packet larger than max_bytes
            grown = np.empty(total, np.uint8)
            grown[: self.used] = self.data[: self.used]
            self.data = grown
        for b, dst, i in groups:
            _gather(self.data, self.offset[dst], b.data, b.offset[i], b.caplen[i])
        self.n += m
        self.used = total

    def batch(self, weirds: list[ReaderWeird]) -> PacketBatch:
        n = self.n
        return PacketBatch(
            data=self.data[: self.used],
            offset=self.offset[:n],
            caplen=self.caplen[:n],
            wirelen=self.wirelen[:n],
            ts=self.ts[:n],
            linktype=self.linktype[:n],
            file_id=self.file_id[:n],
            file_offset=self.file_offset[:n],
            weirds=weirds,
        )


def _label(source: object) -> str | None:
    path = getattr(source, "path", None)
    return None if path is None else os.fspath(path)


def merge_batches(
    sources: Sequence[BatchSource | str | os.PathLike[str]],
    max_bytes: int = DEFAULT_MAX_BYTES,
    buffers: int = 1,
) -> Iterator[PacketBatch]:
    """Merge ``sources`` (CaptureSource/LiveSource objects or paths) by timestamp.

    Paths are opened with ``file_id`` = their index in ``sources``. With a single source its
    batches pass through untouched (no copy, same buffer-reuse rule as the source); otherwise
    every batch is a fresh buffer the consumer may keep. With several inputs, weird details are
    prefixed with the file they come from. ``buffers`` > 1 lets a consumer keep that many
    batches of a single capture file at once (see ``CaptureSource.batches``).
    """
    srcs: list[BatchSource] = [
        open_capture(s, file_id=i) if isinstance(s, (str, os.PathLike)) else s
        for i, s in enumerate(sources)
    ]
    if not srcs:
        return
    if len(srcs) == 1:
        if buffers > 1 and getattr(srcs[0], "format", "live") != "live":  # live sources buffer themselves
            yield from srcs[0].batches(max_bytes, buffers=buffers)
        else:
            yield from srcs[0].batches(max_bytes)
        return
    per_source = max(max_bytes // len(srcs), MIN_SOURCE_BYTES)
    cursors = [_Cursor(s, per_source, _label(s)) for s in srcs]
    max_packets = min(max(max_bytes // 128, 16), 1 << 18)
    out = _Output(max_bytes, max_packets)
    weirds: list[ReaderWeird] = []
    while True:
        for c in cursors:
            c.refill(weirds)
        active = [c for c in cursors if c.remaining > 0]
        if not active:
            break
        ts = np.concatenate([c.batch.ts[c.pos :] for c in active])  # type: ignore[union-attr]
        caplen = np.concatenate([c.batch.caplen[c.pos :] for c in active])  # type: ignore[union-attr]
        lens = np.array([c.remaining for c in active], np.int64)
        ends = np.cumsum(lens)
        starts = ends - lens
        heads = starts.copy()
        more = np.array([not c.done for c in active])
        pick_src = np.empty(out.cap - out.n, np.int64)
        pick_idx = np.empty(out.cap - out.n, np.int64)
        m, _used, reason = _merge_select(
            ts, caplen, heads, ends, more, out.cap - out.n, out.data.shape[0] - out.used,
            out.n == 0, pick_src, pick_idx,
        )  # fmt: skip
        src = pick_src[:m]
        # picks index the concatenation; turn them into indices of each cursor's batch
        pos = np.array([c.pos for c in active], np.int64)
        idx = pick_idx[:m] - starts[src] + pos[src]
        out.append(active, src, idx)
        for j, c in enumerate(active):
            c.pos += int(heads[j] - starts[j])
        if reason == R_FULL:
            yield out.batch(weirds)
            weirds = []
            out = _Output(max_bytes, max_packets)
    if out.n or weirds:
        yield out.batch(weirds) if out.n else empty_batch(weirds)
