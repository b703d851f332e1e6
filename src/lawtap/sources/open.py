"""Open a capture file whatever its format, and stream it as :class:`PacketBatch` es.

This is the only I/O in the file-reading path: :func:`open_capture` sniffs the magic (never the
extension), validates the global header so that unreadable files fail *before* any work starts,
and :meth:`CaptureSource.batches` runs the read loop. The format logic itself is in the sans-IO
indexers of :mod:`lawtap.sources.pcap` and :mod:`lawtap.sources.pcapng`.

Memory: a window of ``max_bytes`` per batch (never an mmap of the whole file, never the whole
decompressed stream), so peak RSS stays flat on multi-GB captures. Plain files are read through
memory-mapped windows (no copy out of the page cache); compressed files, pipes and anything
that cannot be mapped go through one reusable read buffer.
"""

from __future__ import annotations

import gzip
import io
import mmap
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

import numpy as np

from lawtap.errors import CaptureError
from lawtap.sources.batch import PacketBatch, ReaderWeird
from lawtap.sources.pcap import (
    MAGIC_MODIFIED,
    MAGIC_NSEC,
    MAGIC_USEC,
    PCAP_HEADER_LEN,
    Columns,
    HeaderError,
    IndexResult,
    PcapHeader,
    PcapIndexer,
    Status,
    parse_pcap_header,
)
from lawtap.sources.pcapng import (
    BT_SHB,
    MAX_BLOCK,
    PcapngIndexer,
    Section,
    parse_shb,
    parse_shb_prefix,
)

GZIP_MAGIC = b"\x1f\x8b"
DEFAULT_MAX_BYTES = 32 << 20
# Read granularity: small enough that what was just read is still in cache when indexed.
READ_CHUNK = 2 << 20
# Below this much free space at the buffer's end, yield and compact rather than read a sliver.
MIN_ROOM = 64 << 10
_PCAP_MAGICS = {
    m.to_bytes(4, order)
    for m in (MAGIC_USEC, MAGIC_NSEC, MAGIC_MODIFIED)
    for order in ("little", "big")
}
_PCAPNG_MAGIC = BT_SHB.to_bytes(4, "little")  # palindromic: same in both byte orders
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)

Format = Literal["pcap", "pcapng"]


def detect_format(head: bytes) -> Format | None:
    """'pcap' or 'pcapng' from the first 4 bytes of the (decompressed) stream, else None."""
    if head[:4] in _PCAP_MAGICS:
        return "pcap"
    if head[:4] == _PCAPNG_MAGIC:
        return "pcapng"
    return None


class _Indexer(Protocol):
    start: int

    def index(
        self, buf: np.ndarray, pos: int, fill: int, eof: bool, base: int, cols: Columns, n0: int
    ) -> IndexResult: ...


def _read_upto(stream: BinaryIO, n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads (gzip returns member by member)."""
    parts: list[bytes] = []
    got = 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class CaptureSource:
    """A pcap/pcapng file, possibly gzip-compressed, read as a stream of PacketBatches.

    Attributes: ``path``, ``file_id``, ``format`` ('pcap' | 'pcapng'), ``compressed``,
    ``size`` (bytes on disk), ``bytes_read`` (on-disk bytes consumed so far, for progress bars),
    ``linktypes`` (link types seen so far; for pcapng this grows as interfaces are met).
    Build one with :func:`open_capture`.
    """

    def __init__(
        self,
        path: Path,
        file_id: int,
        fmt: Format,
        compressed: bool,
        size: int,
        pcap_header: PcapHeader | None = None,
        section: Section | None = None,
    ) -> None:
        self.path = path
        self.file_id = file_id
        self.format: Format = fmt
        self.compressed = compressed
        self.size = size
        self.pcap_header = pcap_header
        self.first_section = section
        self.bytes_read = 0
        # Read plain files through mmap windows (see ``_drive_mapped``); False forces read().
        self.mapped = not compressed and os.environ.get("LAWTAP_MMAP", "1") != "0"
        self.linktypes: set[int] = set()
        if pcap_header is not None:
            self.linktypes.add(pcap_header.linktype)

    def __repr__(self) -> str:
        gz = "+gzip" if self.compressed else ""
        return f"CaptureSource({str(self.path)!r}, {self.format}{gz}, file_id={self.file_id})"

    # -- streams --------------------------------------------------------------------------

    def _open_stream(self) -> tuple[BinaryIO, BinaryIO]:
        """(raw file, stream to read): the raw file's position gives compressed progress."""
        try:
            raw: BinaryIO = open(self.path, "rb", buffering=0)  # noqa: SIM115
        except OSError as e:
            raise CaptureError(str(self.path), 0, f"cannot open: {e.strerror or e}") from None
        if not self.compressed:
            return raw, raw
        return raw, gzip.GzipFile(fileobj=io.BufferedReader(raw, 1 << 20), mode="rb")  # type: ignore[return-value]

    def _indexer(self) -> _Indexer:
        if self.format == "pcap":
            assert self.pcap_header is not None
            return PcapIndexer(self.pcap_header, self.linktypes)
        return PcapngIndexer(self.linktypes)

    # -- the read loop ----------------------------------------------------------------------

    def batches(self, max_bytes: int = DEFAULT_MAX_BYTES, buffers: int = 1) -> Iterator[PacketBatch]:
        """Yield the capture's packets in file order, about ``max_bytes`` of buffer per batch.

        A batch's ``data`` is a view of a reusable read buffer: finish with a batch (or copy what
        you keep) before asking for the ``buffers``-th next one (with the default, before asking
        for the next); the columns are fresh arrays and can be kept. A reader running ahead of
        its consumer (a prefetch thread ``q`` batches ahead) needs ``buffers = q + 2``.
        A batch may have no packets but carry ``weirds`` (damage found after the last packet).
        Each call starts again from the beginning of the file.
        """
        raw, stream = self._open_stream()
        with raw, stream:
            max_bytes = max(int(max_bytes), 64)
            if self.mapped and raw is stream:
                size = _mappable_size(raw)
                if size is not None:
                    yield from self._drive_mapped(raw, size, max_bytes)
                    return
            yield from self._drive(raw, stream, max_bytes, max(int(buffers), 1))

    def _drive_mapped(self, raw: BinaryIO, size: int, max_bytes: int) -> Iterator[PacketBatch]:
        """The read loop over read-only-in-practice, copy-on-write mmap windows of the file.

        Why: ``readinto`` copies every byte out of the page cache (a quarter of a second per
        GB here); a mapped window is indexed in place. Each batch's ``data`` is a view of its
        own window, which stays mapped as long as something references it, so batches may be
        kept (no rotation rule). A window ends where the record that does not fit starts; the
        next window begins at that record (rounded down to the mapping granularity). The
        mapping is private and writable only so that the ahead-of-time kernels, which take
        writable arrays, accept it; nothing writes to it. Caveat of all mmap readers: a file
        truncated by another process *while* it is read can end the process with SIGBUS;
        ``LAWTAP_MMAP=0`` reads with ``read()`` instead.
        """
        gran = mmap.ALLOCATIONGRANULARITY
        cols = Columns(min(max(max_bytes // 128, 16), 1 << 18))
        indexer = self._indexer()
        fid = self.file_id
        next_record = indexer.start  # file offset of the next unindexed record
        if next_record >= size:
            self.bytes_read = size
            return  # a header and no packets
        n = 0
        weirds: list[ReaderWeird] = []
        need = 0
        while True:
            base = next_record - next_record % gran
            length = min(next_record - base + max(max_bytes, need), size - base)
            try:
                window = mmap.mmap(raw.fileno(), length, access=mmap.ACCESS_COPY, offset=base)
            except (OSError, ValueError) as e:
                if next_record == indexer.start:  # not mappable after all (some file systems)
                    yield from self._drive(raw, raw, max_bytes)
                    return
                weirds.append(ReaderWeird("read_error", next_record, f"mmap failed: {e}"))
                yield cols.batch(np.empty(0, np.uint8), n, fid, weirds)
                return
            buf = np.frombuffer(window, np.uint8)
            eof = base + length >= size
            pos = next_record - base
            while True:
                res = _index_step(indexer, buf, pos, length, eof, base, cols, n, weirds)
                n, pos = res.n, res.pos
                self.bytes_read = base + pos
                if res.status is Status.DONE:
                    if n or weirds:
                        yield cols.batch(buf[:pos], n, fid, weirds)
                    return
                if res.status is Status.FULL:
                    yield cols.batch(buf[:pos], n, fid, weirds)
                    n, weirds = 0, []
                    continue
                break  # MORE: the record at ``pos`` continues past the window
            if n or weirds:
                yield cols.batch(buf[:pos], n, fid, weirds)
                n, weirds = 0, []
            next_record, need = base + pos, res.need
            del buf, window  # unmapped once the batches that view it are gone

    def _drive(self, raw: BinaryIO, stream: BinaryIO, max_bytes: int, buffers: int = 1) -> Iterator[PacketBatch]:
        """Read ``READ_CHUNK`` at a time into the batch buffer, indexing each piece at once.

        Indexing right after each read finds the record headers still in CPU cache, which
        halves the time on large files compared with filling all ``max_bytes`` first. A batch
        is yielded when the buffer has no room left (then the partial record at its end is
        moved to the front), when the columns are full, or at the end.
        """
        cap = max_bytes if self.compressed else min(max_bytes, max(self.size, 64))
        buf = np.empty(cap, np.uint8)
        ring: list[np.ndarray | None] = [buf] + [None] * (buffers - 1)  # buffers taken in turn
        turn = 0
        cols = Columns(min(max(max_bytes // 128, 16), 1 << 18))
        indexer = self._indexer()
        fid = self.file_id
        fill, eof, weird = self._read(raw, stream, buf, 0, 0)
        weirds: list[ReaderWeird] = [weird] if weird else []
        pos = min(indexer.start, fill)  # the header was validated by open_capture
        base = n = 0
        if eof and pos >= fill and not weirds:
            return  # a header and no packets: nothing to index (and no kernel to load)
        while True:
            res = _index_step(indexer, buf, pos, fill, eof, base, cols, n, weirds)
            n, pos = res.n, res.pos
            if res.status is Status.DONE:
                if n or weirds:
                    yield cols.batch(buf[:pos], n, fid, weirds)
                return
            if res.status is Status.FULL:
                yield cols.batch(buf[:pos], n, fid, weirds)
                n, weirds = 0, []
                continue
            # MORE: the record at ``pos`` needs ``res.need`` bytes; make room, then read.
            size = buf.shape[0]
            if pos + res.need > size or size - fill < min(MIN_ROOM, size // 4):
                if n or weirds:
                    yield cols.batch(buf[:pos], n, fid, weirds)
                    n, weirds = 0, []
                # The partial record at the end moves to the front of the next buffer in turn
                # (the same one unless a consumer runs behind: see ``batches``).
                turn = (turn + 1) % buffers
                nxt = ring[turn]
                if res.need > size or nxt is None or nxt.shape[0] < size:
                    nxt = ring[turn] = np.empty(max(res.need, 2 * size) if res.need > size else size, np.uint8)
                if nxt is buf:
                    buf[: fill - pos] = buf[pos:fill]
                else:
                    nxt[: fill - pos] = buf[pos:fill]
                    buf = nxt
                base += pos
                fill -= pos
                pos = 0
            fill, eof, weird = self._read(raw, stream, buf, fill, base)
            if weird is not None:
                weirds.append(weird)

    def _read(
        self, raw: BinaryIO, stream: BinaryIO, buf: np.ndarray, fill: int, base: int
    ) -> tuple[int, bool, ReaderWeird | None]:
        """Append up to ``READ_CHUNK`` bytes at ``buf[fill:]``; stream damage becomes a weird."""
        view = memoryview(buf)
        stop = min(buf.shape[0], fill + READ_CHUNK)
        eof = False
        weird = None
        try:
            while fill < stop:
                if self.compressed:
                    # read1, not readinto: on a damaged stream readinto raises after writing an
                    # unknown number of bytes, read1 returns all it decoded before raising.
                    chunk = stream.read1(stop - fill)  # type: ignore[attr-defined]
                    got = len(chunk)
                    view[fill : fill + got] = chunk
                else:
                    got = stream.readinto(view[fill:stop])
                if not got:
                    eof = True
                    break
                fill += got
        except _GZIP_ERRORS as e:
            eof = True
            name = "gzip_truncated" if isinstance(e, EOFError) else "gzip_corrupt"
            weird = ReaderWeird(name, base + fill, f"compressed stream: {e}")
        except OSError as e:
            eof = True
            weird = ReaderWeird("read_error", base + fill, f"read failed: {e}")
        self.bytes_read = raw.tell() if self.compressed else base + fill
        return fill, eof, weird

    def read_at(self, file_offset: int, length: int) -> bytes:
        """Bytes at a (decompressed) file offset, e.g. a packet via ``batch.file_offset``.

        Compressed files are decompressed up to the offset, so this is slow for them.
        """
        raw, stream = self._open_stream()
        with raw, stream:
            if self.compressed:
                remaining = file_offset
                while remaining > 0:
                    chunk = stream.read(min(remaining, 1 << 20))
                    if not chunk:
                        return b""
                    remaining -= len(chunk)
            else:
                stream.seek(file_offset)
            return _read_upto(stream, length)


def _index_step(indexer: _Indexer, buf: np.ndarray, pos: int, fill: int, eof: bool, base: int, cols: Columns,
                n: int, weirds: list[ReaderWeird]) -> IndexResult:
    """One indexer call of a read loop; its weirds join ``weirds``.

    Indexers report damage at EOF themselves and never ask for bytes they have; if one ever
    did, the loop stops loudly (a ``reader_stalled`` weird, status DONE) rather than loop or end
    silently.
    """
    res = indexer.index(buf, pos, fill, eof, base, cols, n)
    weirds.extend(res.weirds)
    if res.status is Status.MORE and (eof or res.need <= fill - res.pos):
        at = base + res.pos
        weirds.append(ReaderWeird("reader_stalled", at, f"reader stopped at {at}"))
        res.status = Status.DONE
    return res


def _mappable_size(raw: BinaryIO) -> int | None:
    """The size of a regular, non-empty file that can be memory-mapped, else None."""
    try:
        st = os.fstat(raw.fileno())
    except (OSError, AttributeError, io.UnsupportedOperation):
        return None
    import stat

    return st.st_size if stat.S_ISREG(st.st_mode) and st.st_size > 0 else None


def _probe(stream: BinaryIO, compressed: bool) -> tuple[Format, PcapHeader | None, Section | None]:
    """Identify and validate the global header / first SHB, or raise HeaderError."""
    head = _read_upto(stream, PCAP_HEADER_LEN)
    inside = " inside gzip" if compressed else ""
    if not head:
        raise HeaderError(0, "empty capture" + inside if compressed else "empty file")
    fmt = detect_format(head)
    if fmt is None:
        if len(head) < 4:
            raise HeaderError(0, f"not a capture{inside}: only {len(head)} bytes")
        raise HeaderError(0, f"not a pcap or pcapng capture{inside} (magic 0x{head[:4].hex()})")
    if fmt == "pcap":
        return fmt, parse_pcap_header(head), None
    _, blen = parse_shb_prefix(head[:12])
    block = head + _read_upto(stream, min(blen, MAX_BLOCK) - len(head))
    return fmt, None, parse_shb(block)


def open_capture(path: str | os.PathLike[str], file_id: int = 0) -> CaptureSource:
    """Open and validate a capture; raises CaptureError (path + offset) if it is unreadable.

    Formats are told apart by magic: classic pcap (µs/ns, either byte order, "modified"
    pcap), pcapng, and gzip-compressed versions of both.
    """
    p = Path(path)
    try:
        if p.is_dir():
            raise CaptureError(str(p), 0, "is a directory (expand it with expand_inputs)")
        size = p.stat().st_size
        raw = open(p, "rb")  # noqa: SIM115
    except OSError as e:
        raise CaptureError(str(p), 0, f"cannot open: {e.strerror or e}") from None
    with raw:
        compressed = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        stream: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw  # type: ignore[assignment]
        try:
            fmt, header, section = _probe(stream, compressed)
        except HeaderError as e:
            raise CaptureError(str(p), e.offset, e.message) from None
        except _GZIP_ERRORS as e:
            raise CaptureError(str(p), 0, f"unreadable gzip stream: {e}") from None
        except OSError as e:
            raise CaptureError(str(p), 0, f"read failed: {e.strerror or e}") from None
    return CaptureSource(p, file_id, fmt, compressed, size, header, section)


def is_capture_file(path: Path) -> bool:
    """True if ``path`` starts like a pcap/pcapng file (also inside gzip)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head[:2] == GZIP_MAGIC:
                f.seek(0)
                with gzip.GzipFile(fileobj=f, mode="rb") as g:
                    head = _read_upto(g, 4)
    except (OSError, *_GZIP_ERRORS):
        return False
    return detect_format(head) is not None


def expand_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given; directories become their capture files (by magic), sorted by name.

    Directories are not recursed into. Raises CaptureError for a path that does not exist or
    a directory without any capture in it, so a typo never yields an empty, silent run.
    """
    out: list[Path] = []
    for raw_path in paths:
        p = Path(raw_path)
        if p.is_dir():
            found = sorted(
                (
                    c
                    for c in p.iterdir()
                    if c.is_file() and not c.name.startswith(".") and is_capture_file(c)
                ),
                key=lambda c: c.name,
            )
            if not found:
                raise CaptureError(str(p), 0, "directory holds no pcap/pcapng capture files")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise CaptureError(str(p), 0, "no such file or directory")
    return out
