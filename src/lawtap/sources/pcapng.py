"""pcapng: section/interface parsing in Python, packet-block walking in a numba kernel.

Sans-IO like :mod:`lawtap.sources.pcap`. The kernel handles everything that occurs once per
packet (Enhanced, Simple and obsolete Packet Blocks) and skips blocks we do not use (statistics,
name resolution, decryption secrets, custom, unknown). It hands control back to Python only for
rare blocks that change state: a Section Header Block (new byte order, interfaces reset) or an
Interface Description Block (link type, timestamp resolution/offset). Damage stops the kernel
too; Python names it and asks the kernel to resync on the next plausible block.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from lawtap.jit import njit

from lawtap.sources.batch import ReaderWeird
from lawtap.sources.pcap import (
    INT32_MAX,
    MAX_CAPLEN,
    Columns,
    HeaderError,
    IndexResult,
    Status,
    _Pending,
)

BT_SHB = 0x0A0D0D0A
BT_IDB = 1
BT_PB = 2  # obsolete Packet Block
BT_SPB = 3
BT_NRB = 4
BT_ISB = 5
BT_EPB = 6
BT_DSB = 10
BOM = 0x1A2B3C4D
# Blocks longer than this are treated as a corrupt length rather than buffered.
MAX_BLOCK = 64 << 20
# While resyncing, only short blocks are believed (a real packet block is <= MAX_CAPLEN + ~100).
RESYNC_MAX_BLOCK = 1 << 20
SHB_MIN_LEN = 28
IDB_MIN_LEN = 20

# Interface table columns (one int64 row per IDB of the current section).
IF_LINKTYPE, IF_MODE, IF_MUL, IF_PRESHIFT, IF_SHIFT, IF_OFFSET_NS, IF_SNAPLEN = range(7)
IF_COLS = 7
TS_DEC_MUL, TS_DEC_DIV, TS_BIN = 0, 1, 2


@dataclass(frozen=True)
class Section:
    big_endian: bool
    version: tuple[int, int]
    block_len: int


@dataclass(frozen=True)
class Interface:
    linktype: int
    snaplen: int
    tsresol: int  # the raw if_tsresol byte (6 = microseconds by default)
    ts_offset_s: int  # if_tsoffset

    def row(self) -> list[int]:
        """The int64 row the kernel converts timestamps with (see :func:`ts_conversion`)."""
        mode, mul, pre, shift = ts_conversion(self.tsresol)
        return [self.linktype, mode, mul, pre, shift, self.ts_offset_s * 10**9, self.snaplen]


def ts_conversion(tsresol: int) -> tuple[int, int, int, int]:
    """(mode, multiplier/divisor, pre-shift, shift) turning timestamp units into ns exactly.

    Decimal 10^-k: multiply by 10^(9-k) or divide by 10^(k-9). Binary 2^-k: split into whole
    seconds and a fraction so the int64 arithmetic never overflows (``u >> s`` seconds plus
    ``(u & (2^s-1)) * 1e9 >> s``); beyond 2^-30 the low bits are below a nanosecond and are
    shifted away first.
    """
    if tsresol & 0x80:
        k = tsresol & 0x7F
        return TS_BIN, 1, max(0, k - 30), min(k, 30)
    k = tsresol
    if k <= 9:
        return TS_DEC_MUL, 10 ** (9 - k), 0, 0
    return TS_DEC_DIV, 10 ** min(k - 9, 18), 0, 0


def parse_shb_prefix(head: bytes) -> tuple[bool, int]:
    """(big_endian, block_len) from the first 12 bytes of a Section Header Block."""
    if len(head) < 12:
        raise HeaderError(len(head), f"truncated pcapng section header ({len(head)} bytes)")
    if struct.unpack_from("<I", head)[0] != BT_SHB:
        raise HeaderError(0, "not a pcapng section header block")
    bom = struct.unpack_from("<I", head, 8)[0]
    if bom == BOM:
        big = False
    elif bom == 0x4D3C2B1A:
        big = True
    else:
        raise HeaderError(8, f"bad pcapng byte-order magic 0x{bom:08x}")
    blen = struct.unpack_from(">I" if big else "<I", head, 4)[0]
    if blen < SHB_MIN_LEN or blen % 4 or blen > MAX_BLOCK:
        raise HeaderError(4, f"bad pcapng section header length {blen}")
    return big, blen


def parse_shb(block: bytes) -> Section:
    """Validate a complete Section Header Block (``block`` is exactly its bytes)."""
    big, blen = parse_shb_prefix(block)
    if len(block) < blen:
        raise HeaderError(
            len(block), f"truncated pcapng section header block ({len(block)} of {blen} bytes)"
        )
    e = ">" if big else "<"
    if struct.unpack_from(e + "I", block, blen - 4)[0] != blen:
        raise HeaderError(blen - 4, "pcapng section header block length mismatch")
    major, minor = struct.unpack_from(e + "HH", block, 12)
    if major != 1:
        raise HeaderError(12, f"unsupported pcapng version {major}.{minor}")
    return Section(big, (major, minor), blen)


def parse_idb(block: bytes, big: bool) -> tuple[Interface, list[str]]:
    """Parse an Interface Description Block; returns the interface and any option problems.

    A malformed option never drops the interface: packets would then point at the wrong one.
    """
    e = ">" if big else "<"
    blen = len(block)
    problems: list[str] = []
    if blen < IDB_MIN_LEN:
        return Interface(0, 0, 6, 0), [f"interface block too short ({blen} bytes)"]
    linktype, _res, snaplen = struct.unpack_from(e + "HHI", block, 8)
    tsresol, ts_offset = 6, 0
    p, end = 16, blen - 4
    while p + 4 <= end:
        code, olen = struct.unpack_from(e + "HH", block, p)
        if code == 0:
            break
        if p + 4 + olen > end:
            problems.append(f"option {code} overruns the interface block")
            break
        value = block[p + 4 : p + 4 + olen]
        if code == 9:
            if olen >= 1:
                tsresol = value[0]
            else:
                problems.append("empty if_tsresol option")
        elif code == 14:
            if olen == 8:
                ts_offset = struct.unpack_from(e + "q", value)[0]
            else:
                problems.append(f"if_tsoffset option of {olen} bytes")
        p += 4 + ((olen + 3) & ~3)
    return Interface(linktype, snaplen, tsresol, ts_offset), problems


# ---------------------------------------------------------------------------------------------
# numba kernel (byte readers duplicated from pcap.py: numba's cache tracks only this file).

S_POS, S_N, S_STATUS, S_AUX, S_AUX2, S_AUX3, S_LAST_TS, S_RESYNC, S_NEED = range(9)
(
    ST_MORE, ST_FULL, ST_DONE, ST_SHB, ST_IDB, ST_BAD, ST_SKIP, ST_RESYNCED, ST_RESYNC_FAILED
) = range(9)  # fmt: skip
# damage kinds (S_AUX2)
K_BAD_LEN, K_MISMATCH, K_TRUNC, K_UNKNOWN_IF, K_CAPLEN_OVER, K_CAPLEN_BIG, K_SHORT = range(1, 8)


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
def _u16(b, p, big):
    if big:
        return (np.int64(b[p]) << 8) | np.int64(b[p + 1])
    return np.int64(b[p]) | (np.int64(b[p + 1]) << 8)


@njit(cache=True, _nrt=False)
def _to_ns(ifs, i, units):
    mode = ifs[i, IF_MODE]
    if mode == TS_DEC_MUL:
        t = units * ifs[i, IF_MUL]
    elif mode == TS_DEC_DIV:
        t = units // ifs[i, IF_MUL]
    else:
        u = units >> ifs[i, IF_PRESHIFT]
        s = ifs[i, IF_SHIFT]
        t = (u >> s) * 1000000000 + (((u & ((np.int64(1) << s) - 1)) * 1000000000) >> s)
    return t + ifs[i, IF_OFFSET_NS]


@njit(cache=True, _nrt=False)
def _resync(b, fill, eof, big, n_if, st):
    """Find the next block whose type is known, length sane and trailing length equal."""
    p = st[S_POS]
    while True:
        if p + 12 > fill:
            if eof:
                st[S_POS] = fill
                st[S_STATUS] = ST_RESYNC_FAILED
            else:
                st[S_POS] = p
                st[S_NEED] = 12
                st[S_STATUS] = ST_MORE
            return
        bt = _u32(b, p, big)
        bbig = big
        candidate = False
        if bt == BT_SHB:
            bom = _u32(b, p + 8, False)
            if bom == BOM:
                candidate, bbig = True, False
            elif bom == 0x4D3C2B1A:
                candidate, bbig = True, True
        elif (1 <= bt <= 6) or bt == BT_DSB:
            candidate = True
        if candidate:
            bl = _u32(b, p + 4, bbig)
            if bl >= 12 and (bl & 3) == 0 and bl <= RESYNC_MAX_BLOCK:
                if p + bl > fill:
                    if not eof:
                        st[S_POS] = p
                        st[S_NEED] = bl
                        st[S_STATUS] = ST_MORE
                        return
                elif _u32(b, p + bl - 4, bbig) == bl:
                    ok = True
                    if bt == BT_EPB:
                        ok = bl >= 32 and _u32(b, p + 8, big) < n_if
                        ok = ok and _u32(b, p + 20, big) <= bl - 32
                    if ok:
                        st[S_POS] = p
                        st[S_RESYNC] = 0
                        st[S_STATUS] = ST_RESYNCED
                        return
        p += 1


@njit(cache=True, nogil=True)
def index_pcapng(b, fill, eof, base, big, ifs, n_if, st, off, cap, wire, ts, lt, fo, nmax):
    """Walk blocks in ``b[st[S_POS]:fill]``; packets go to the columns, the rest is skipped.

    Returns (via ``st[S_STATUS]``) on: need more bytes, columns full, clean EOF, a SHB or IDB
    for Python to parse, damage needing a resync (BAD) or a single bad block already skipped
    (SKIP). ``st[S_AUX]`` is the block's buffer offset, ``S_AUX2`` the damage kind, ``S_AUX3`` a
    value for the message.
    """
    if st[S_RESYNC] != 0:
        _resync(b, fill, eof, big, n_if, st)
        return
    pos = st[S_POS]
    n = st[S_N]
    last_ts = st[S_LAST_TS]
    status = ST_DONE
    while True:
        if n >= nmax:
            status = ST_FULL
            break
        if pos + 8 > fill:
            if not eof:
                st[S_NEED] = 8
                status = ST_MORE
            elif pos == fill:
                status = ST_DONE
            else:
                st[S_AUX], st[S_AUX2], st[S_AUX3] = pos, K_TRUNC, 8
                status = ST_BAD
            break
        bt = _u32(b, pos, big)
        if bt == BT_SHB:
            status = ST_SHB
            break
        bl = _u32(b, pos + 4, big)
        if bl < 12 or (bl & 3) != 0 or bl > MAX_BLOCK:
            st[S_AUX], st[S_AUX2], st[S_AUX3] = pos, K_BAD_LEN, bl
            status = ST_BAD
            break
        if pos + bl > fill:
            if not eof:
                st[S_NEED] = bl
                status = ST_MORE
            else:
                st[S_AUX], st[S_AUX2], st[S_AUX3] = pos, K_TRUNC, bl
                status = ST_BAD
            break
        if _u32(b, pos + bl - 4, big) != bl:
            st[S_AUX], st[S_AUX2], st[S_AUX3] = pos, K_MISMATCH, _u32(b, pos + bl - 4, big)
            status = ST_BAD
            break
        if bt == BT_IDB:
            status = ST_IDB
            break
        kind = 0
        value = 0
        if bt == BT_EPB or bt == BT_PB:  # noqa: SIM109 (plain compares for numba)
            if bl < 32:
                kind, value = K_SHORT, bl
            else:
                iface = _u32(b, pos + 8, big) if bt == BT_EPB else _u16(b, pos + 8, big)
                cl = _u32(b, pos + 20, big)
                if iface >= n_if:
                    kind, value = K_UNKNOWN_IF, iface
                elif cl > bl - 32:
                    kind, value = K_CAPLEN_OVER, cl
                elif cl > MAX_CAPLEN:
                    kind, value = K_CAPLEN_BIG, cl
                else:
                    units = (_u32(b, pos + 12, big) << 32) | _u32(b, pos + 16, big)
                    last_ts = _to_ns(ifs, iface, units)
                    wl = _u32(b, pos + 24, big)
                    off[n] = pos + 28
                    cap[n] = cl
                    wire[n] = wl if wl <= INT32_MAX else INT32_MAX
                    ts[n] = last_ts
                    lt[n] = ifs[iface, IF_LINKTYPE]
                    fo[n] = base + pos + 28
                    n += 1
        elif bt == BT_SPB:
            if bl < 16:
                kind, value = K_SHORT, bl
            elif n_if == 0:
                kind, value = K_UNKNOWN_IF, 0
            else:
                # No timestamp in an SPB: reuse the previous packet's so time order holds.
                wl = _u32(b, pos + 8, big)
                cl = min(wl, bl - 16)
                snap = ifs[0, IF_SNAPLEN]
                if snap > 0 and cl > snap:
                    cl = snap
                if cl > MAX_CAPLEN:
                    kind, value = K_CAPLEN_BIG, cl
                else:
                    off[n] = pos + 12
                    cap[n] = cl
                    wire[n] = wl if wl <= INT32_MAX else INT32_MAX
                    ts[n] = last_ts
                    lt[n] = ifs[0, IF_LINKTYPE]
                    fo[n] = base + pos + 12
                    n += 1
        if kind != 0:
            st[S_AUX], st[S_AUX2], st[S_AUX3] = pos, kind, value
            pos += bl
            status = ST_SKIP
            break
        pos += bl
    st[S_POS] = pos
    st[S_N] = n
    st[S_LAST_TS] = last_ts
    st[S_STATUS] = status


_SKIP_MESSAGES = {
    K_UNKNOWN_IF: ("pcapng_unknown_interface", "packet block names interface {v}, not declared"),
    K_CAPLEN_OVER: ("pcapng_bad_packet_length", "captured length {v} exceeds its block"),
    K_CAPLEN_BIG: ("pcapng_caplen_too_large", f"captured length {{v}} > {MAX_CAPLEN}"),
    K_SHORT: ("pcapng_bad_block_length", "packet block too short ({v} bytes)"),
}


class PcapngIndexer:
    """Sans-IO state machine over a pcapng byte stream (first SHB already validated)."""

    def __init__(self, linktypes: set[int]) -> None:
        self.start = 0
        self.linktypes = linktypes
        self.big = False
        self.sections = 0
        self.interfaces: list[Interface] = []  # of the current section
        self._ifs = np.zeros((8, IF_COLS), np.int64)
        self._st = np.zeros(9, np.int64)
        self._pending: _Pending | None = None

    # -- Python-side handling of rare blocks -------------------------------------------------

    def _add_interface(self, iface: Interface) -> None:
        n = len(self.interfaces)
        if n == self._ifs.shape[0]:
            self._ifs = np.concatenate([self._ifs, np.zeros_like(self._ifs)])
        self._ifs[n] = iface.row()
        self.interfaces.append(iface)
        self.linktypes.add(iface.linktype)

    def _start_resync(self, at_buf: int, base: int, found: str, lost: str, detail: str) -> None:
        self._pending = _Pending(base + at_buf, found, lost, detail)
        self._st[S_POS] = at_buf + 1
        self._st[S_RESYNC] = 1

    def _section(
        self, buf: np.ndarray, pos: int, fill: int, eof: bool, base: int
    ) -> tuple[Status | None, int]:
        """Parse the SHB at ``pos``: (MORE, need) if it is not all in ``buf``, else (None, 0).

        A bad later SHB is damage, not an error: we resync to the next plausible block.
        """
        avail = fill - pos
        if avail < 12:
            if not eof:
                return Status.MORE, 12
            detail = f"section header cut short: file ends after {avail} bytes"
            self._start_resync(pos, base, "pcapng_bad_section_header", "truncated_record", detail)
            return None, 0
        try:
            big, blen = parse_shb_prefix(bytes(buf[pos : pos + 12]))
        except HeaderError as e:
            self._start_resync(
                pos, base, "pcapng_bad_section_header", "pcapng_bad_section_header", e.message
            )
            return None, 0
        if avail < blen:
            if not eof:
                return Status.MORE, blen
            detail = f"section header needs {blen} bytes but the file ends after {avail}"
            self._start_resync(pos, base, "pcapng_bad_section_header", "truncated_record", detail)
            return None, 0
        try:
            parse_shb(bytes(buf[pos : pos + blen]))
        except HeaderError as e:
            self._start_resync(
                pos, base, "pcapng_bad_section_header", "pcapng_bad_section_header", e.message
            )
            return None, 0
        self.big = big
        self.sections += 1
        self.interfaces = []
        self._st[S_POS] = pos + blen
        return None, 0

    def _interface(self, buf: np.ndarray, pos: int, base: int) -> list[ReaderWeird]:
        blen = int.from_bytes(bytes(buf[pos + 4 : pos + 8]), "big" if self.big else "little")
        iface, problems = parse_idb(bytes(buf[pos : pos + blen]), self.big)
        self._add_interface(iface)
        self._st[S_POS] = pos + blen
        return [ReaderWeird("pcapng_bad_interface_block", base + pos, p) for p in problems]

    # -- driver entry point -------------------------------------------------------------------

    def index(
        self, buf: np.ndarray, pos: int, fill: int, eof: bool, base: int, cols: Columns, n0: int
    ) -> IndexResult:
        """Index packets in ``buf[pos:fill]`` into ``cols[n0:]`` (``base``: offset of buf[0]).

        ``IndexResult.n`` is the total rows now in ``cols`` (including the first ``n0``).
        """
        st = self._st
        st[S_POS] = pos
        st[S_N] = n0
        weirds: list[ReaderWeird] = []
        while True:
            index_pcapng(
                buf, fill, eof, base, self.big, self._ifs, len(self.interfaces), st,
                cols.offset, cols.caplen, cols.wirelen, cols.ts, cols.linktype,
                cols.file_offset, cols.capacity,
            )  # fmt: skip
            status, n, pos = int(st[S_STATUS]), int(st[S_N]), int(st[S_POS])
            if status == ST_MORE:
                return IndexResult(n, pos, Status.MORE, int(st[S_NEED]), weirds)
            if status == ST_FULL:
                return IndexResult(n, pos, Status.FULL, 0, weirds)
            if status == ST_DONE:
                return IndexResult(n, pos, Status.DONE, 0, weirds)
            if status == ST_SHB:
                more, need = self._section(buf, pos, fill, eof, base)
                if more is not None:
                    return IndexResult(n, pos, more, need, weirds)
            elif status == ST_IDB:
                weirds.extend(self._interface(buf, pos, base))
            elif status == ST_SKIP:
                name, msg = _SKIP_MESSAGES[int(st[S_AUX2])]
                at = base + int(st[S_AUX])
                weirds.append(ReaderWeird(name, at, msg.format(v=int(st[S_AUX3]))))
            elif status == ST_BAD:
                kind, value, at = int(st[S_AUX2]), int(st[S_AUX3]), int(st[S_AUX])
                if kind == K_BAD_LEN:
                    lost, detail = "pcapng_bad_block_length", f"block length {value}"
                elif kind == K_MISMATCH:
                    lost = "pcapng_bad_block_length"
                    detail = f"trailing block length {value} differs from the leading one"
                else:
                    lost = "truncated_record"
                    detail = f"block needs {value} bytes but the file ends after {fill - at}"
                self._start_resync(at, base, "pcapng_bad_block_length", lost, detail)
            elif status == ST_RESYNCED:
                assert self._pending is not None
                weirds.append(self._pending.resolve(base + pos))
                self._pending = None
            else:  # ST_RESYNC_FAILED
                assert self._pending is not None
                weirds.append(self._pending.resolve(None))
                self._pending = None
                return IndexResult(n, pos, Status.DONE, 0, weirds)
