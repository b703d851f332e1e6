"""``lawtap export``: cut the packets of chosen connections back out of the original captures.

Records say *what* happened; the packets are the evidence. The case's packet index
(``packets.parquet``) maps each flow id to the frames that belong to it and where each frame's
bytes sit in its source file, so an export is: pick conn rows (by uid or a SQL WHERE clause),
collect their fids, select index rows whose ``fid`` *or* ``outer_fid`` is one of them (so
exporting a tunnel's outer conn also yields the encapsulated packets), and copy each packet's
bytes verbatim with its original timestamp and lengths.

Output is classic pcap when every packet has the same link type (nanosecond variant only when
some timestamp has sub-microsecond digits), else pcapng with one interface per link type. The
writers are tiny struct code on purpose: export must not depend on the readers' internals.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import struct
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import duckdb
import numpy as np
import pyarrow as pa

from lawtap import __version__
from lawtap.case import connect, duckdb_message
from lawtap.errors import LawtapError
from lawtap.sinks import Case, open_case

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
DEFAULT_SNAPLEN = 262144
LINKTYPE_ETHERNET = 1

_GZIP_MAGIC = b"\x1f\x8b"
_BZ2_MAGIC = b"BZh"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


# --------------------------------------------------------------------------------------------
# Choosing flows and packets


def _unique(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _fids_for_uids(con: duckdb.DuckDBPyConnection, uids: Sequence[str]) -> set[int]:
    """Flow ids of the given uids (conn or tunnel records); unknown uids are an error."""
    wanted = _unique(uids)
    con.register("__lawtap_uids", pa.table({"uid": pa.array(wanted, pa.string())}))
    rows = con.execute(
        """SELECT w.uid, r.fid FROM __lawtap_uids w
           LEFT JOIN (SELECT uid, fid FROM conn UNION ALL SELECT uid, fid FROM tunnel) r
           USING (uid)"""
    ).fetchall()
    known = {uid for uid, fid in rows if fid is not None}
    missing = [uid for uid in wanted if uid not in known]
    if missing:
        raise LawtapError(f"unknown uid{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    return {int(fid) for _, fid in rows if fid is not None}


def _fids_for_where(con: duckdb.DuckDBPyConnection, where: str) -> set[int]:
    rows = con.execute(f"SELECT DISTINCT fid FROM conn WHERE ({where})").fetchall()
    return {int(fid) for (fid,) in rows if fid is not None}


def select_fids(
    con: duckdb.DuckDBPyConnection, uids: Sequence[str] | None, where: str | None
) -> set[int]:
    """Flows chosen by uid list and/or WHERE clause (both given: flows matching both)."""
    if not uids and not where:
        raise LawtapError("nothing to export: give connection uids or a --where clause")
    chosen: set[int] | None = None
    if uids:
        chosen = _fids_for_uids(con, uids)
    if where:
        matched = _fids_for_where(con, where)
        chosen = matched if chosen is None else chosen & matched
    assert chosen is not None
    chosen.discard(-1)  # "no flow" marker in the packet index, never a real flow
    if not chosen:
        if where:
            among = " among the given uids" if uids else ""
            raise LawtapError(f"no connections match --where {where!r}{among}")
        raise LawtapError("the given uids have no flow id in the packet index")
    return chosen


def select_packets(con: duckdb.DuckDBPyConnection, fids: set[int]) -> pa.Table:
    """Index rows of the chosen flows (inner or outer), one per frame, in frame order."""
    con.register("__lawtap_fids", pa.table({"fid": pa.array(sorted(fids), pa.int64())}))
    return con.sql(
        """SELECT frame, any_value(ts_ns) AS ts_ns, any_value(file_id) AS file_id,
                  any_value(file_offset) AS file_offset, any_value(caplen) AS caplen,
                  any_value(wirelen) AS wirelen, any_value(linktype) AS linktype
           FROM packets
           WHERE fid IN (SELECT fid FROM __lawtap_fids)
              OR outer_fid IN (SELECT fid FROM __lawtap_fids)
           GROUP BY frame ORDER BY frame"""
    ).to_arrow_table()


# --------------------------------------------------------------------------------------------
# Reading packets back from the sources


@dataclass(frozen=True)
class _Source:
    file_id: int
    path: Path
    format: str


def _sources_for(case: Case, file_ids: Sequence[int]) -> dict[int, _Source]:
    """The source of every file_id the selection needs, checked up front so an export fails
    before writing anything rather than half way."""
    listed = {int(s["file_id"]): s for s in case.sources}
    found: dict[int, _Source] = {}
    for file_id in file_ids:
        meta = listed.get(int(file_id))
        if meta is None:
            raise LawtapError(f"{case.path}: packet index refers to file_id {file_id}, "
                              "which case.json does not list")
        if meta.get("format") == "live":
            raise LawtapError(f"packets captured live on {meta.get('path')} were not saved to a "
                              "file, so they cannot be exported")
        path = Path(meta["path"])
        if not path.is_file():
            raise LawtapError(f"source capture {path} is missing (moved or deleted since analysis)")
        found[int(file_id)] = _Source(int(file_id), path, str(meta.get("format")))
    return found


def open_source(path: Path) -> BinaryIO:
    """Open a capture for reading at decompressed offsets (the index's ``file_offset``).

    Compression is sniffed from the magic bytes rather than trusted from case.json, so a file
    recompressed after analysis still works as long as its content is unchanged.
    """
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head.startswith(_GZIP_MAGIC):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if head.startswith(_BZ2_MAGIC):
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if head.startswith(_XZ_MAGIC):
        return lzma.open(path, "rb")  # type: ignore[return-value]
    if head.startswith(_ZSTD_MAGIC):
        raise LawtapError(f"{path}: cannot export from a zstd-compressed source; decompress it")
    return open(path, "rb")


class _PacketSource:
    """Random access to packet bytes across sources, one open handle per file.

    Frames of one file come in increasing offset order, so even gzip "seeks" only move
    forward (decompress and skip) and each source is read at most once.
    """

    def __init__(self, sources: dict[int, _Source], stack: ExitStack) -> None:
        self._sources = sources
        self._stack = stack
        self._handles: dict[int, BinaryIO] = {}

    def read(self, file_id: int, offset: int, length: int) -> bytes:
        fh = self._handles.get(file_id)
        if fh is None:
            try:
                fh = self._stack.enter_context(open_source(self._sources[file_id].path))
            except OSError as exc:
                raise LawtapError(f"{self._sources[file_id].path}: {exc.strerror or exc}") from None
            self._handles[file_id] = fh
        path = self._sources[file_id].path
        try:
            if fh.tell() != offset:
                fh.seek(offset)
            data = fh.read(length)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise LawtapError(f"{path}: cannot read packet at offset {offset}: {exc}") from None
        if len(data) != length:
            raise LawtapError(f"{path}: packet at offset {offset} is cut short "
                              f"({len(data)} of {length} bytes); the file changed since analysis?")
        return data


# --------------------------------------------------------------------------------------------
# Writing pcap / pcapng


class PacketWriter(Protocol):
    def write(self, linktype: int, ts_ns: int, data: bytes, wirelen: int) -> None: ...


class PcapWriter:
    """Classic libpcap file: one link type; µs timestamps, or ns with the 0xa1b23c4d magic."""

    def __init__(self, fh: BinaryIO, linktype: int, nanosecond: bool,
                 snaplen: int = DEFAULT_SNAPLEN) -> None:
        self._fh = fh
        self._linktype = linktype
        self._divisor = 1 if nanosecond else 1000
        self._per_second = 10**9 // self._divisor
        magic = PCAP_MAGIC_NS if nanosecond else PCAP_MAGIC_US
        fh.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))

    def write(self, linktype: int, ts_ns: int, data: bytes, wirelen: int) -> None:
        if linktype != self._linktype:
            raise ValueError(f"pcap holds one link type ({self._linktype}), got {linktype}")
        seconds, fraction = divmod(ts_ns // self._divisor, self._per_second)
        self._fh.write(struct.pack("<IIII", seconds, fraction, len(data), wirelen))
        self._fh.write(data)


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _pcapng_option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * _pad4(len(value))


def _pcapng_block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


class PcapngWriter:
    """pcapng with one Interface Description Block per link type, in first-seen order."""

    def __init__(self, fh: BinaryIO, linktypes: Sequence[int], nanosecond: bool,
                 snaplen: int = DEFAULT_SNAPLEN) -> None:
        self._fh = fh
        self._divisor = 1 if nanosecond else 1000
        self._interfaces = {lt: i for i, lt in enumerate(dict.fromkeys(linktypes))}
        app = _pcapng_option(4, f"lawtap {__version__}".encode())  # shb_userappl
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + app + _pcapng_option(0, b"")
        fh.write(_pcapng_block(0x0A0D0D0A, shb))
        tsresol = _pcapng_option(9, bytes([9 if nanosecond else 6]))  # if_tsresol
        for linktype in self._interfaces:
            idb = struct.pack("<HHI", linktype, 0, snaplen) + tsresol + _pcapng_option(0, b"")
            fh.write(_pcapng_block(0x00000001, idb))

    def write(self, linktype: int, ts_ns: int, data: bytes, wirelen: int) -> None:
        ticks = ts_ns // self._divisor
        header = struct.pack("<IIIII", self._interfaces[linktype], ticks >> 32,
                             ticks & 0xFFFFFFFF, len(data), wirelen)
        body = header + data + b"\x00" * _pad4(len(data))
        self._fh.write(_pcapng_block(0x00000006, body))


def _choose_writer(fh: BinaryIO, packets: pa.Table) -> PacketWriter:
    """pcap when one link type and 32-bit seconds suffice, else pcapng; ns only when needed."""
    ts = packets.column("ts_ns").to_numpy()
    linktypes = [int(v) for v in dict.fromkeys(packets.column("linktype").to_pylist())]
    if not linktypes:
        linktypes = [LINKTYPE_ETHERNET]
    if len(ts) and int(ts.min()) < 0:
        raise LawtapError("cannot export packets with timestamps before 1970")
    nanosecond = bool(len(ts)) and bool(np.any(ts % 1000))
    caplen_max = int(packets.column("caplen").to_numpy().max()) if len(ts) else 0
    snaplen = max(DEFAULT_SNAPLEN, caplen_max)
    if len(linktypes) == 1 and (not len(ts) or int(ts.max()) // 10**9 <= 0xFFFFFFFF):
        return PcapWriter(fh, linktypes[0], nanosecond, snaplen)
    return PcapngWriter(fh, linktypes, nanosecond, snaplen)


def _rows(packets: pa.Table) -> Iterator[tuple[int, int, int, int, int, int]]:
    cols = [packets.column(name).to_pylist()
            for name in ("linktype", "ts_ns", "file_id", "file_offset", "caplen", "wirelen")]
    return zip(*cols)  # type: ignore[return-value]


def write_packets(packets: pa.Table, sources: dict[int, _Source], out_path: Path) -> int:
    """Write the selected packets to ``out_path`` atomically (a failed export leaves nothing)."""
    partial = out_path.with_name(out_path.name + ".partial")
    count = 0
    try:
        with ExitStack() as stack:
            fh = stack.enter_context(open(partial, "wb"))
            reader = _PacketSource(sources, stack)
            writer = _choose_writer(fh, packets)
            for linktype, ts_ns, file_id, offset, caplen, wirelen in _rows(packets):
                writer.write(linktype, ts_ns, reader.read(file_id, offset, caplen), wirelen)
                count += 1
        os.replace(partial, out_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return count


# --------------------------------------------------------------------------------------------
# Entry point


def export_flows(
    case_dir: str | os.PathLike[str],
    uids: Sequence[str] | None,
    where: str | None,
    out_path: str | os.PathLike[str],
) -> int:
    """Write the packets of the chosen connections to ``out_path``; return how many.

    ``uids`` are conn (or tunnel) uids; ``where`` is a SQL condition over the ``conn`` view,
    e.g. ``"id.resp_p" = 53``. Given both, connections must match both.
    """
    case = open_case(case_dir)
    con = connect(case_dir)
    try:
        fids = select_fids(con, uids, where)
        packets = select_packets(con, fids)
    except duckdb.Error as exc:
        raise LawtapError(duckdb_message(exc)) from None
    finally:
        con.close()
    file_ids = sorted({int(v) for v in packets.column("file_id").to_pylist()})
    sources = _sources_for(case, file_ids)
    try:
        return write_packets(packets, sources, Path(out_path))
    except OSError as exc:
        raise LawtapError(f"{out_path}: {exc.strerror or exc}") from None


__all__ = [
    "PcapWriter",
    "PcapngWriter",
    "export_flows",
    "open_source",
    "select_fids",
    "select_packets",
    "write_packets",
]
