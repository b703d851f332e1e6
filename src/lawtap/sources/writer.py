"""Write packets back out: classic pcap (one link type) or pcapng (mixed link types).

Exports (evidence extracts, filtered sub-captures) must be byte-exact and readable by every
tool, so the writers emit the plainest form of each format: little-endian, no options beyond
the timestamp resolution and the writing application. ``write_batch`` serialises many packets
in one numba call and one ``write()``, so exporting millions of packets costs no per-packet
Python.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
from lawtap.jit import njit

from lawtap import __version__
from lawtap.errors import LawtapError
from lawtap.sources.batch import PacketBatch

# Serialise at most this many bytes per write() so a huge selection never doubles RSS.
_CHUNK_BYTES = 16 << 20
DEFAULT_SNAPLEN = 262144


def _open_out(path: str | os.PathLike[str] | BinaryIO) -> tuple[BinaryIO, bool]:
    if hasattr(path, "write"):
        return path, False  # type: ignore[return-value]
    try:
        return open(Path(path), "wb"), True  # type: ignore[arg-type]
    except OSError as e:
        raise LawtapError(f"cannot write {path}: {e.strerror or e}") from None


@njit(cache=True)
def _put_u32(out, p, v):
    out[p] = v & 0xFF
    out[p + 1] = (v >> 8) & 0xFF
    out[p + 2] = (v >> 16) & 0xFF
    out[p + 3] = (v >> 24) & 0xFF


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
def _pcap_records(data, offset, caplen, wirelen, ts, idx, frac_div, out):
    """Serialise packets ``idx`` as pcap records (LE) into ``out``; returns bytes used."""
    p = 0
    for k in range(idx.shape[0]):
        i = idx[k]
        t = ts[i]
        sec = t // 1000000000
        frac = (t - sec * 1000000000) // frac_div
        cl = caplen[i]
        _put_u32(out, p, sec)
        _put_u32(out, p + 4, frac)
        _put_u32(out, p + 8, cl)
        _put_u32(out, p + 12, wirelen[i])
        _copy(out, p + 16, data, offset[i], cl)
        p += 16 + cl
    return p


@njit(cache=True)
def _pcapng_epbs(data, offset, caplen, wirelen, ts, idx, iface, out):
    """Serialise packets ``idx`` as EPBs (LE, ns units) into ``out``; returns bytes used."""
    p = 0
    for k in range(idx.shape[0]):
        i = idx[k]
        cl = caplen[i]
        blen = 32 + ((cl + 3) & ~3)
        t = ts[i]
        _put_u32(out, p, 6)
        _put_u32(out, p + 4, blen)
        _put_u32(out, p + 8, iface[k])
        _put_u32(out, p + 12, (t >> 32) & 0xFFFFFFFF)
        _put_u32(out, p + 16, t & 0xFFFFFFFF)
        _put_u32(out, p + 20, cl)
        _put_u32(out, p + 24, wirelen[i])
        _copy(out, p + 28, data, offset[i], cl)
        for j in range(p + 28 + cl, p + blen - 4):
            out[j] = 0
        _put_u32(out, p + blen - 4, blen)
        p += blen
    return p


def _chunks(batch: PacketBatch, idx: np.ndarray, per_packet: int) -> list[np.ndarray]:
    """Split ``idx`` so each piece serialises to about ``_CHUNK_BYTES``."""
    if idx.shape[0] == 0:
        return []
    sizes = batch.caplen[idx].astype(np.int64) + per_packet
    ends = np.cumsum(sizes)
    cuts = np.searchsorted(ends, np.arange(_CHUNK_BYTES, int(ends[-1]), _CHUNK_BYTES), "right")
    return [c for c in np.split(idx, cuts) if c.shape[0]]


def _indices(batch: PacketBatch, indices: np.ndarray | None) -> np.ndarray:
    if indices is None:
        return np.arange(len(batch), dtype=np.int64)
    idx = np.asarray(indices)
    if idx.dtype == np.bool_:
        return np.flatnonzero(idx).astype(np.int64)
    return idx.astype(np.int64, copy=False)


class _Writer:
    def __init__(self, path: str | os.PathLike[str] | BinaryIO) -> None:
        self._f, self._owned = _open_out(path)
        self.packets = 0
        self._scratch = np.empty(0, np.uint8)

    def _buffer(self, size: int) -> np.ndarray:
        """A reused serialisation buffer: fresh pages per chunk would cost more than the copy."""
        if self._scratch.shape[0] < size:
            self._scratch = np.empty(max(size, _CHUNK_BYTES + (1 << 20)), np.uint8)
        return self._scratch

    def close(self) -> None:
        if self._owned:
            self._f.close()
        else:
            self._f.flush()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class PcapWriter(_Writer):
    """Classic pcap writer (little-endian, µs or ns magic) for a single link type."""

    def __init__(
        self,
        path: str | os.PathLike[str] | BinaryIO,
        linktype: int,
        nanosecond: bool = False,
        snaplen: int = DEFAULT_SNAPLEN,
    ) -> None:
        super().__init__(path)
        self.linktype = linktype
        self.nanosecond = nanosecond
        self._frac_div = 1 if nanosecond else 1000
        magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
        self._f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def __enter__(self) -> PcapWriter:
        return self

    def write(self, ts_ns: int, data: bytes, wirelen: int | None = None) -> None:
        """Write one packet (``wirelen`` defaults to ``len(data)``)."""
        sec, rem = divmod(int(ts_ns), 1_000_000_000)
        wl = len(data) if wirelen is None else wirelen
        self._f.write(struct.pack("<IIII", sec, rem // self._frac_div, len(data), wl))
        self._f.write(data)
        self.packets += 1

    def write_batch(self, batch: PacketBatch, indices: np.ndarray | None = None) -> None:
        """Write packets ``indices`` (ints or a bool mask; default all) of ``batch``.

        Raises LawtapError if one has another link type: a pcap file has only one, and writing
        it anyway would make the packet undecodable (use :class:`PcapngWriter`).
        """
        idx = _indices(batch, indices)
        if idx.shape[0] and np.any(batch.linktype[idx] != self.linktype):
            other = sorted(set(np.unique(batch.linktype[idx]).tolist()) - {self.linktype})
            raise LawtapError(
                f"pcap export for link type {self.linktype} cannot hold link type(s) {other};"
                " use pcapng"
            )
        for part in _chunks(batch, idx, 16):
            size = int(batch.caplen[part].astype(np.int64).sum()) + 16 * part.shape[0]
            out = self._buffer(size)
            used = _pcap_records(
                batch.data, batch.offset, batch.caplen, batch.wirelen, batch.ts, part,
                self._frac_div, out,
            )  # fmt: skip
            self._f.write(memoryview(out)[:used])
            self.packets += part.shape[0]


def _option(code: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("<HH", code, len(value)) + value + b"\0" * pad


def _block(btype: int, body: bytes) -> bytes:
    blen = 12 + len(body)
    return struct.pack("<II", btype, blen) + body + struct.pack("<I", blen)


class PcapngWriter(_Writer):
    """pcapng writer: one section, one interface (if_tsresol=9, ns) per distinct link type.

    Interfaces are declared lazily, just before the first packet that needs them, which pcapng
    allows; so any mix of link types (e.g. merged Ethernet and Linux-SLL captures) fits.
    """

    def __init__(self, path: str | os.PathLike[str] | BinaryIO, snaplen: int = 0) -> None:
        super().__init__(path)
        self.snaplen = snaplen
        self._iface: dict[int, int] = {}
        appl = _option(4, f"lawtap {__version__}".encode()) + _option(0, b"")
        body = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + appl
        self._f.write(_block(0x0A0D0D0A, body))

    def __enter__(self) -> PcapngWriter:
        return self

    def interface_for(self, linktype: int) -> int:
        """Interface id for ``linktype``, writing its IDB on first use."""
        iface = self._iface.get(linktype)
        if iface is None:
            iface = len(self._iface)
            opts = _option(9, bytes([9])) + _option(0, b"")
            self._f.write(_block(1, struct.pack("<HHI", linktype, 0, self.snaplen) + opts))
            self._iface[linktype] = iface
        return iface

    def write(self, ts_ns: int, data: bytes, wirelen: int | None = None, linktype: int = 1) -> None:
        """Write one packet as an Enhanced Packet Block."""
        iface = self.interface_for(linktype)
        t = int(ts_ns) & 0xFFFFFFFFFFFFFFFF
        wl = len(data) if wirelen is None else wirelen
        pad = b"\0" * ((-len(data)) % 4)
        body = struct.pack("<IIIII", iface, t >> 32, t & 0xFFFFFFFF, len(data), wl) + data + pad
        self._f.write(_block(6, body))
        self.packets += 1

    def write_batch(self, batch: PacketBatch, indices: np.ndarray | None = None) -> None:
        """Write packets ``indices`` (ints or a bool mask; default all) of ``batch``."""
        idx = _indices(batch, indices)
        if idx.shape[0] == 0:
            return
        lts = batch.linktype[idx]
        lut = {int(lt): self.interface_for(int(lt)) for lt in np.unique(lts)}
        keys = np.array(sorted(lut), dtype=np.int64)
        ids = np.array([lut[k] for k in keys.tolist()], dtype=np.int64)
        iface_all = ids[np.searchsorted(keys, lts)]
        start = 0
        for part in _chunks(batch, idx, 35):
            iface = iface_all[start : start + part.shape[0]]
            start += part.shape[0]
            size = int(((batch.caplen[part].astype(np.int64) + 3) & ~3).sum()) + 32 * part.shape[0]
            out = self._buffer(size)
            used = _pcapng_epbs(
                batch.data, batch.offset, batch.caplen, batch.wirelen, batch.ts, part, iface, out
            )
            self._f.write(memoryview(out)[:used])
            self.packets += part.shape[0]
