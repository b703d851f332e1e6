"""Classic libpcap files: global-header parsing and the numba record-walking kernel.

This module is sans-IO: it never opens a file. :class:`PcapIndexer` is handed a byte buffer that
the driver in :mod:`lawtap.sources.open` refills, and answers "here are the packets I found, I
stopped at ``pos`` and need ``need`` more bytes from there". That split keeps the hot loop (one
numba call per buffer) independent of where the bytes come from (plain file, gzip stream, test
``bytes``).

It also holds the plumbing shared with :mod:`lawtap.sources.pcapng`: the reusable output
:class:`Columns`, :class:`IndexResult` and the :class:`HeaderError` the parsers raise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from lawtap.jit import njit

from lawtap.sources.batch import PacketBatch, ReaderWeird

# Largest packet we accept (Wireshark's WTAP_MAX_PACKET_SIZE_STANDARD). A record header claiming
# more is damage, not a packet: trusting it would make us swallow the rest of the file.
MAX_CAPLEN = 262144
INT32_MAX = 2**31 - 1

PCAP_HEADER_LEN = 24
MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
MAGIC_MODIFIED = 0xA1B2CD34  # Kuznetzov's patched libpcap: 24-byte record headers, µs
# Resync accepts a candidate record only if its time is within this many seconds of the last
# good one: with the "next header is plausible too" check this makes false hits vanishingly rare.
RESYNC_MAX_GAP_S = 30 * 86400


class HeaderError(ValueError):
    """A header cannot be parsed; ``offset`` is where. :mod:`open` turns it into CaptureError."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


class Status(Enum):
    """Why :meth:`index` returned: the driver reads more, calls again at once, or stops."""

    MORE = "more"  # need ``need`` bytes from ``pos`` (never returned at EOF)
    FULL = "full"  # the output columns are full; call again without reading
    DONE = "done"  # nothing more to read from this capture


@dataclass
class IndexResult:
    n: int
    pos: int
    status: Status
    need: int = 0
    weirds: list[ReaderWeird] = field(default_factory=list)


class Columns:
    """Reusable per-packet output arrays the kernels write into (one allocation per source).

    ``batch`` copies the first ``n`` rows out, so only ``data`` of a yielded batch aliases
    reusable memory; the columns are the consumer's to keep.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.offset = np.empty(capacity, np.int64)
        self.caplen = np.empty(capacity, np.int32)
        self.wirelen = np.empty(capacity, np.int32)
        self.ts = np.empty(capacity, np.int64)
        self.linktype = np.empty(capacity, np.int32)
        self.file_offset = np.empty(capacity, np.int64)

    def batch(
        self, data: np.ndarray, n: int, file_id: int, weirds: list[ReaderWeird]
    ) -> PacketBatch:
        return PacketBatch(
            data=data,
            offset=self.offset[:n].copy(),
            caplen=self.caplen[:n].copy(),
            wirelen=self.wirelen[:n].copy(),
            ts=self.ts[:n].copy(),
            linktype=self.linktype[:n].copy(),
            file_id=np.full(n, file_id, np.int16),
            file_offset=self.file_offset[:n].copy(),
            weirds=weirds,
        )


def empty_batch(weirds: list[ReaderWeird] | None = None) -> PacketBatch:
    """A batch with no packets (carries weirds found after the last packet)."""
    return Columns(0).batch(np.empty(0, np.uint8), 0, 0, weirds or [])


@dataclass(frozen=True)
class PcapHeader:
    big_endian: bool
    nanosecond: bool
    record_header_len: int  # 16, or 24 for the "modified" format
    version: tuple[int, int]
    snaplen: int
    linktype: int


def parse_pcap_header(head: bytes) -> PcapHeader:
    """Parse the 24-byte global header; raise HeaderError if it is not one or is cut short.

    ``thiszone`` and ``sigfigs`` are ignored, as libpcap and Wireshark do: writers leave them 0
    and timestamps are UTC.
    """
    if len(head) < 4:
        raise HeaderError(0, "not a pcap file (too short for a magic number)")
    magic_le = struct.unpack_from("<I", head)[0]
    magic_be = struct.unpack_from(">I", head)[0]
    known = (MAGIC_USEC, MAGIC_NSEC, MAGIC_MODIFIED)
    if magic_le in known:
        big, magic = False, magic_le
    elif magic_be in known:
        big, magic = True, magic_be
    else:
        raise HeaderError(0, f"not a pcap file (magic 0x{magic_be:08x})")
    if len(head) < PCAP_HEADER_LEN:
        raise HeaderError(
            len(head), f"truncated pcap global header ({len(head)} of {PCAP_HEADER_LEN} bytes)"
        )
    e = ">" if big else "<"
    vmaj, vmin, _zone, _sigfigs, snaplen, network = struct.unpack_from(e + "HHiIII", head, 4)
    return PcapHeader(
        big_endian=big,
        nanosecond=magic == MAGIC_NSEC,
        record_header_len=24 if magic == MAGIC_MODIFIED else 16,
        version=(vmaj, vmin),
        snaplen=snaplen,
        # The top bits carry FCS information (libpcap's LT_LINKTYPE mask).
        linktype=network & 0x03FFFFFF,
    )


# ---------------------------------------------------------------------------------------------
# numba kernel. Byte readers are duplicated in pcapng.py on purpose: numba's on-disk cache only
# notices edits to the file that defines a kernel, so helpers live next to their callers.

# state slots shared between Python and the kernel
S_POS, S_N, S_STATUS, S_AUX, S_AUX2, S_LAST_SEC, S_RESYNC, S_NEED = range(8)
ST_MORE, ST_FULL, ST_DONE, ST_BAD_CAPLEN, ST_TRUNCATED, ST_RESYNCED, ST_RESYNC_FAILED = range(7)


@njit(cache=True, _nrt=False)
def _u32(b, p, big):
    if big:
        return (
            (np.int64(b[p]) << 24)
            | (np.int64(b[p + 1]) << 16)
            | (np.int64(b[p + 2]) << 8)
            | np.int64(b[p + 3])
        )
    return (
        np.int64(b[p])
        | (np.int64(b[p + 1]) << 8)
        | (np.int64(b[p + 2]) << 16)
        | (np.int64(b[p + 3]) << 24)
    )


@njit(cache=True, _nrt=False)
def _plausible(b, p, big, frac_lim, last_sec):
    """Could a record header start at ``p``? Used only while resyncing after damage."""
    cl = _u32(b, p + 8, big)
    wl = _u32(b, p + 12, big)
    if wl == 0 or wl > MAX_CAPLEN or cl > wl:
        return False
    if _u32(b, p + 4, big) >= frac_lim:
        return False
    if last_sec >= 0:
        d = _u32(b, p, big) - last_sec
        if d > RESYNC_MAX_GAP_S or d < -RESYNC_MAX_GAP_S:
            return False
    return True


@njit(cache=True, _nrt=False)
def _resync(b, fill, eof, big, frac_lim, hdr, st):
    """Scan byte by byte for a plausible record followed by another plausible one (or EOF)."""
    p = st[S_POS]
    last_sec = st[S_LAST_SEC]
    while p + hdr <= fill:
        if _plausible(b, p, big, frac_lim, last_sec):
            nxt = p + hdr + _u32(b, p + 8, big)
            if nxt + hdr <= fill:
                if _plausible(b, nxt, big, frac_lim, last_sec):
                    st[S_POS] = p
                    st[S_RESYNC] = 0
                    st[S_STATUS] = ST_RESYNCED
                    return
            elif eof:
                if nxt == fill:
                    st[S_POS] = p
                    st[S_RESYNC] = 0
                    st[S_STATUS] = ST_RESYNCED
                    return
            else:
                st[S_POS] = p
                st[S_NEED] = nxt + hdr - p
                st[S_STATUS] = ST_MORE
                return
        p += 1
    if eof:
        st[S_POS] = fill
        st[S_STATUS] = ST_RESYNC_FAILED
    else:
        st[S_POS] = p
        st[S_NEED] = hdr
        st[S_STATUS] = ST_MORE


@njit(cache=True, nogil=True)
def index_pcap(
    b, fill, eof, base, big, frac_mul, hdr, linktype, st, off, cap, wire, ts, lt, fo, nmax
):
    """Walk record headers in ``b[st[S_POS]:fill]``, appending packets to the columns.

    Stops at the first record that is incomplete (MORE), damaged (BAD_CAPLEN / TRUNCATED at EOF),
    when ``nmax`` packets are stored (FULL) or at a clean EOF (DONE). All state lives in ``st``
    so the Python side can resume, resync or report without re-reading anything.
    """
    frac_lim = 1000000 if frac_mul == 1000 else 1000000000
    if st[S_RESYNC] != 0:
        _resync(b, fill, eof, big, frac_lim, hdr, st)
        return
    pos = st[S_POS]
    n = st[S_N]
    last_sec = st[S_LAST_SEC]
    status = ST_DONE
    while True:
        if n >= nmax:
            status = ST_FULL
            break
        if pos + hdr > fill:
            if not eof:
                st[S_NEED] = hdr
                status = ST_MORE
            elif pos == fill:
                status = ST_DONE
            else:
                st[S_AUX] = pos
                st[S_AUX2] = -1
                status = ST_TRUNCATED
            break
        cl = _u32(b, pos + 8, big)
        if cl > MAX_CAPLEN:
            st[S_AUX] = pos
            st[S_AUX2] = cl
            status = ST_BAD_CAPLEN
            break
        end = pos + hdr + cl
        if end > fill:
            if not eof:
                st[S_NEED] = hdr + cl
                status = ST_MORE
            else:
                st[S_AUX] = pos
                st[S_AUX2] = cl
                status = ST_TRUNCATED
            break
        sec = _u32(b, pos, big)
        wl = _u32(b, pos + 12, big)
        off[n] = pos + hdr
        cap[n] = cl
        wire[n] = wl if wl <= INT32_MAX else INT32_MAX
        ts[n] = sec * 1000000000 + _u32(b, pos + 4, big) * frac_mul
        lt[n] = linktype
        fo[n] = base + pos + hdr
        last_sec = sec
        n += 1
        pos = end
    st[S_POS] = pos
    st[S_N] = n
    st[S_LAST_SEC] = last_sec
    st[S_STATUS] = status


@dataclass
class _Pending:
    """Damage seen, resync in progress: the weird is named once we know how it ended."""

    offset: int
    found_name: str
    lost_name: str
    detail: str

    def resolve(self, found_at: int | None) -> ReaderWeird:
        if found_at is None:
            return ReaderWeird(self.lost_name, self.offset, self.detail + "; stopped reading")
        return ReaderWeird(
            self.found_name,
            self.offset,
            f"{self.detail}; skipped {found_at - self.offset} bytes to the next plausible "
            f"record at offset {found_at}",
        )


class PcapIndexer:
    """Sans-IO state machine over a classic pcap byte stream (header already validated)."""

    def __init__(self, header: PcapHeader, linktypes: set[int]) -> None:
        self.header = header
        self.start = PCAP_HEADER_LEN
        self._st = np.zeros(8, np.int64)
        self._st[S_LAST_SEC] = -1
        self._pending: _Pending | None = None
        linktypes.add(header.linktype)

    def index(
        self, buf: np.ndarray, pos: int, fill: int, eof: bool, base: int, cols: Columns, n0: int
    ) -> IndexResult:
        """Index packets in ``buf[pos:fill]`` into ``cols[n0:]`` (``base``: offset of buf[0]).

        ``IndexResult.n`` is the total rows now in ``cols`` (including the first ``n0``).
        """
        h = self.header
        st = self._st
        st[S_POS] = pos
        st[S_N] = n0
        weirds: list[ReaderWeird] = []
        while True:
            index_pcap(
                buf, fill, eof, base, h.big_endian, 1 if h.nanosecond else 1000,
                h.record_header_len, h.linktype, st, cols.offset, cols.caplen, cols.wirelen,
                cols.ts, cols.linktype, cols.file_offset, cols.capacity,
            )  # fmt: skip
            status, n, pos = int(st[S_STATUS]), int(st[S_N]), int(st[S_POS])
            if status == ST_MORE:
                return IndexResult(n, pos, Status.MORE, int(st[S_NEED]), weirds)
            if status == ST_FULL:
                return IndexResult(n, pos, Status.FULL, 0, weirds)
            if status == ST_DONE:
                return IndexResult(n, pos, Status.DONE, 0, weirds)
            if status in (ST_BAD_CAPLEN, ST_TRUNCATED):
                at = base + int(st[S_AUX])
                value = int(st[S_AUX2])
                if status == ST_BAD_CAPLEN:
                    self._pending = _Pending(
                        at, "pcap_bad_record_header", "pcap_bad_record_header",
                        f"record header claims caplen {value} (> {MAX_CAPLEN})",
                    )  # fmt: skip
                else:
                    left = base + fill - at
                    need = h.record_header_len + max(value, 0)
                    self._pending = _Pending(
                        at, "pcap_bad_record_header", "truncated_record",
                        f"record needs {need} bytes but the file ends after {left}",
                    )  # fmt: skip
                st[S_POS] = int(st[S_AUX]) + 1
                st[S_RESYNC] = 1
                continue
            assert self._pending is not None
            if status == ST_RESYNCED:
                weirds.append(self._pending.resolve(base + pos))
                self._pending = None
                continue
            weirds.append(self._pending.resolve(None))  # ST_RESYNC_FAILED
            self._pending = None
            return IndexResult(n, pos, Status.DONE, 0, weirds)
