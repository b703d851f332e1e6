"""Case directory round trip: CaseWriter -> query / summary / export, built by hand.

The fixture writes two small captures with struct (one classic µs pcap with Ethernet frames,
one gzip-compressed ns pcap with raw-IP packets), then the conn/tunnel/weird/packets records a
pipeline would produce for them. Exports are read back with an independent reader here (and
with tshark when installed) and compared byte for byte with the packets that went in.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
import signal
import socket
import struct
import subprocess
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console

from lawtap.case import connect, run_query
from lawtap.errors import LawtapError
from lawtap.export import export_flows
from lawtap.progress import Progress
from lawtap.records import SCHEMAS
from lawtap.sinks import CaseWriter, RecordSchemaError, json_lines, open_case, read_case_meta
from lawtap.summary import summarize

TSHARK = shutil.which("tshark")
BASE_NS = 1_700_000_000_000_000_000
TS_TYPE = pa.timestamp("us", tz="UTC")

# --------------------------------------------------------------------------------------------
# Building packets and captures


def _ipv4(src: str, dst: str, proto: int, l4: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    return header + l4


def _tcp(sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 65535, 0, 0) + payload


def _udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _eth(payload: bytes, ethertype: int = 0x0800) -> bytes:
    macs = bytes.fromhex("001122334455" "66778899aabb")
    return macs + struct.pack("!H", ethertype) + payload


def _vxlan(inner_src: str, inner_dst: str, inner_l4: bytes) -> bytes:
    """10.0.0.5:50000 -> 10.0.0.6:4789 VXLAN carrying an Ethernet/IPv4 frame."""
    inner = _eth(_ipv4(inner_src, inner_dst, 6, inner_l4))
    vxlan = struct.pack("!II", 0x08000000, 42 << 8) + inner
    return _eth(_ipv4("10.0.0.5", "10.0.0.6", 17, _udp(50000, 4789, vxlan)))


@dataclass(frozen=True)
class Pkt:
    frame: int
    ts_ns: int
    data: bytes  # captured bytes
    wirelen: int
    fid: int = -1
    outer_fid: int = -1


def _write_pcap(packets: list[Pkt], linktype: int, nanosecond: bool) -> tuple[bytes, list[int]]:
    """A classic pcap and each packet's data offset in it (what the index stores)."""
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    out = bytearray(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, linktype))
    offsets = []
    for p in packets:
        sec, frac = divmod(p.ts_ns, 10**9)
        frac = frac if nanosecond else frac // 1000
        out += struct.pack("<IIII", sec, frac, len(p.data), p.wirelen)
        offsets.append(len(out))
        out += p.data
    return bytes(out), offsets


def _us(n: int) -> int:
    return BASE_NS + n * 1000


A_DATA = _eth(_ipv4("10.0.0.1", "10.0.0.2", 6, _tcp(40000, 80, 0x18, b"G" * 200)))
SRC_A = [  # Ethernet, µs timestamps
    Pkt(1, _us(1), _eth(_ipv4("10.0.0.1", "10.0.0.2", 6, _tcp(40000, 80, 2))), 54, fid=1),
    Pkt(2, _us(100), _eth(_ipv4("10.0.0.2", "10.0.0.1", 6, _tcp(80, 40000, 0x12))), 54, fid=1),
    Pkt(3, _us(200), _eth(_ipv4("10.0.0.1", "10.0.0.53", 17, _udp(53000, 53, b"q" * 30))), 72,
        fid=2),
    Pkt(4, _us(300), A_DATA[:96], len(A_DATA), fid=1),  # snapped: caplen < wirelen
    Pkt(5, _us(400), _eth(_ipv4("10.0.0.53", "10.0.0.1", 17, _udp(53, 53000, b"r" * 80))), 122,
        fid=2),
    Pkt(6, _us(500), _vxlan("192.168.1.1", "192.168.1.2", _tcp(1111, 2222, 2)), 104,
        fid=4, outer_fid=3),
    Pkt(7, _us(600), _eth(b"\x00" * 28, ethertype=0x0806), 42),  # ARP: in no flow, not indexed
    Pkt(8, _us(700), _vxlan("192.168.1.2", "192.168.1.1", _tcp(2222, 1111, 0x12)), 104,
        fid=4, outer_fid=3),
]
SRC_B = [  # raw IPv4, ns timestamps with sub-µs digits
    Pkt(9, BASE_NS + 1_000_000_001, _ipv4("172.16.0.1", "172.16.0.2", 6, _tcp(5555, 443, 2)), 40,
        fid=5),
    Pkt(10, BASE_NS + 1_000_000_500, _ipv4("172.16.0.2", "172.16.0.1", 6, _tcp(443, 5555, 0x12)),
        40, fid=5),
]
for _p in SRC_A + SRC_B:
    assert _p.wirelen >= len(_p.data)
ALL = {p.frame: p for p in SRC_A + SRC_B}

# uid, orig_h, orig_p, resp_h, resp_p, proto, service, state, orig/resp ip bytes, fid, parents
CONN = [
    ("CA", "10.0.0.1", 40000, "10.0.0.2", 80, "tcp", "http", "SF", 300, 100, 1, None),
    ("CB", "10.0.0.1", 53000, "10.0.0.53", 53, "udp", "dns", "SF", 60, 120, 2, None),
    ("CT", "10.0.0.5", 50000, "10.0.0.6", 4789, "udp", None, "S0", 100, 100, 3, None),
    ("CI", "192.168.1.1", 1111, "192.168.1.2", 2222, "tcp", None, "S1", 50, 50, 4, ["CT"]),
    ("CC", "172.16.0.1", 5555, "172.16.0.2", 443, "tcp", "ssl", "SF", 1000, 5000, 5, None),
]
FIRST_PKT = {1: 1, 2: 3, 3: 6, 4: 6, 5: 9}  # fid -> frame of its first packet (for conn ts)


def _conn_columns() -> dict[str, object]:
    cols = list(zip(*CONN))
    ts_ns = [ALL[FIRST_PKT[fid]].ts_ns for fid in cols[10]]
    return {
        "ts": pa.array([t // 1000 for t in ts_ns], TS_TYPE),
        "uid": list(cols[0]), "id.orig_h": list(cols[1]), "id.orig_p": list(cols[2]),
        "id.resp_h": list(cols[3]), "id.resp_p": list(cols[4]), "proto": list(cols[5]),
        "service": list(cols[6]), "conn_state": list(cols[7]), "duration": [0.5] * len(CONN),
        "orig_ip_bytes": list(cols[8]), "resp_ip_bytes": list(cols[9]), "fid": list(cols[10]),
        "tunnel_parents": pa.array(list(cols[11]), pa.list_(pa.string())),
    }


def _packets_columns(offsets: dict[int, tuple[int, int]]) -> dict[str, object]:
    indexed = [p for p in SRC_A + SRC_B if p.fid != -1]
    return {
        "frame": [p.frame for p in indexed],
        "ts_ns": [p.ts_ns for p in indexed],
        "fid": [p.fid for p in indexed],
        "outer_fid": [p.outer_fid for p in indexed],
        "file_id": pa.array([offsets[p.frame][0] for p in indexed], pa.int16()),
        "file_offset": [offsets[p.frame][1] for p in indexed],
        "caplen": pa.array([len(p.data) for p in indexed], pa.int32()),
        "wirelen": pa.array([p.wirelen for p in indexed], pa.int32()),
        "linktype": pa.array([1 if p.frame <= 8 else 101 for p in indexed], pa.int32()),
    }


def build_case(root: Path, *, json_logs: bool = True) -> Path:
    """Two sources and the records of five conns, one VXLAN tunnel and three weirds."""
    root.mkdir(parents=True, exist_ok=True)
    pcap_a, offs_a = _write_pcap(SRC_A, linktype=1, nanosecond=False)
    pcap_b, offs_b = _write_pcap(SRC_B, linktype=101, nanosecond=True)
    (root / "a.pcap").write_bytes(pcap_a)
    (root / "b.pcap.gz").write_bytes(gzip.compress(pcap_b))
    offsets = {p.frame: (0, o) for p, o in zip(SRC_A, offs_a)}
    offsets |= {p.frame: (1, o) for p, o in zip(SRC_B, offs_b)}

    case_dir = root / "case"
    writer = CaseWriter(case_dir, json_logs=json_logs, command=["lawtap", "analyze", "test"])
    try:
        assert writer.add_source(root / "a.pcap", "pcap") == 0
        assert writer.add_source(root / "b.pcap.gz", "pcap", compressed=True) == 1
        conn = _conn_columns()
        writer.write("conn", {k: v[:2] for k, v in conn.items()})  # two batches
        writer.write("conn", {k: v[2:] for k, v in conn.items()})
        writer.write("tunnel", {
            "ts": pa.array([_us(500) // 1000], TS_TYPE), "uid": ["CT"],
            "id.orig_h": ["10.0.0.5"], "id.orig_p": [50000], "id.resp_h": ["10.0.0.6"],
            "id.resp_p": [4789], "tunnel_type": ["Tunnel::VXLAN"], "action": ["Tunnel::DISCOVER"],
            "packets": [2], "fid": [3],
        })
        writer.write("weird", {
            "ts": pa.array([_us(1) // 1000, _us(2) // 1000, None], TS_TYPE),
            "name": ["bad_TCP_checksum", "bad_TCP_checksum", "truncated_header"],
            "detail": ['quote " and \\ backslash', None, "line\nbreak"],
            "source": ["decode", "decode", "reader"], "frame": [1, 2, None],
        })
        writer.write("packets", _packets_columns(offsets))
    finally:
        total = sum(p.wirelen for p in ALL.values())
        writer.close({"packets": len(ALL), "bytes": total}, interrupted=False)
    return case_dir


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_case(tmp_path_factory.mktemp("lawtap"))


# --------------------------------------------------------------------------------------------
# An independent capture reader for checking exports


@dataclass(frozen=True)
class ReadBack:
    kind: str  # "pcap-us", "pcap-ns", "pcapng"
    linktypes: list[int]  # per packet
    ts_ns: list[int]
    data: list[bytes]
    wirelen: list[int]


def read_capture(path: Path) -> ReadBack:
    raw = path.read_bytes()
    magic = struct.unpack_from("<I", raw)[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        return _read_pcap(raw, nanosecond=magic == 0xA1B23C4D)
    assert magic == 0x0A0D0D0A, hex(magic)
    return _read_pcapng(raw)


def _read_pcap(raw: bytes, nanosecond: bool) -> ReadBack:
    linktype = struct.unpack_from("<I", raw, 20)[0]
    pos, ts, data, wire = 24, [], [], []
    while pos < len(raw):
        sec, frac, incl, orig = struct.unpack_from("<IIII", raw, pos)
        ts.append(sec * 10**9 + frac * (1 if nanosecond else 1000))
        data.append(raw[pos + 16 : pos + 16 + incl])
        wire.append(orig)
        pos += 16 + incl
    return ReadBack("pcap-ns" if nanosecond else "pcap-us", [linktype] * len(ts), ts, data, wire)


def _read_pcapng(raw: bytes) -> ReadBack:
    pos, interfaces = 0, []  # (linktype, ticks per second)
    links, ts, data, wire = [], [], [], []
    while pos < len(raw):
        btype, blen = struct.unpack_from("<II", raw, pos)
        assert struct.unpack_from("<I", raw, pos + blen - 4)[0] == blen
        body = raw[pos + 8 : pos + blen - 4]
        if btype == 1:
            linktype = struct.unpack_from("<H", body)[0]
            per_second, opt = 10**6, 8
            while opt < len(body):
                code, olen = struct.unpack_from("<HH", body, opt)
                if code == 9:
                    per_second = 10 ** body[opt + 4]
                if code == 0:
                    break
                opt += 4 + olen + (4 - olen % 4) % 4
            interfaces.append((linktype, per_second))
        elif btype == 6:
            iface, hi, lo, cap, orig = struct.unpack_from("<IIIII", body)
            linktype, per_second = interfaces[iface]
            links.append(linktype)
            ts.append(((hi << 32) | lo) * (10**9 // per_second))
            data.append(body[20 : 20 + cap])
            wire.append(orig)
        pos += blen
    return ReadBack("pcapng", links, ts, data, wire)


def assert_exported(path: Path, frames: list[int], count: int) -> ReadBack:
    """The export holds exactly ``frames``, in order, with identical bytes/time/lengths."""
    back = read_capture(path)
    assert count == len(frames)
    assert back.data == [ALL[f].data for f in frames]
    assert back.ts_ns == [ALL[f].ts_ns for f in frames]
    assert back.wirelen == [ALL[f].wirelen for f in frames]
    if TSHARK:
        _check_with_tshark(path, frames)
    return back


def _check_with_tshark(path: Path, frames: list[int]) -> None:
    result = subprocess.run(
        [TSHARK, "-n", "-r", str(path), "-T", "fields",
         "-e", "frame.len", "-e", "frame.cap_len", "-e", "frame.time_epoch"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    rows = [line.split("\t") for line in result.stdout.splitlines() if line.strip()]
    assert [int(r[0]) for r in rows] == [ALL[f].wirelen for f in frames]
    assert [int(r[1]) for r in rows] == [len(ALL[f].data) for f in frames]
    assert [int(Decimal(r[2]) * 10**9) for r in rows] == [ALL[f].ts_ns for f in frames]


# --------------------------------------------------------------------------------------------
# The case directory itself


def test_case_layout_and_meta(case_dir: Path) -> None:
    meta = read_case_meta(case_dir)
    assert meta["lawtap_version"]
    assert meta["created"].endswith("+00:00")
    assert meta["command"] == ["lawtap", "analyze", "test"]
    assert meta["complete"] is True and meta["interrupted"] is False
    assert meta["stats"] == {"packets": 10, "bytes": sum(p.wirelen for p in ALL.values())}
    assert [s["file_id"] for s in meta["sources"]] == [0, 1]
    assert meta["sources"][1]["compressed"] is True
    assert all(Path(s["path"]).is_absolute() for s in meta["sources"])
    assert meta["sources"][0]["size"] == (case_dir.parent / "a.pcap").stat().st_size
    for type_name, schema in SCHEMAS.items():
        table = pq.read_table(case_dir / f"{type_name}.parquet")
        assert table.schema.equals(schema), type_name
    assert pq.read_table(case_dir / "conn.parquet").num_rows == len(CONN)
    assert not list(case_dir.glob("*.partial"))
    assert open_case(case_dir).complete


def test_json_logs_are_zeek_style(case_dir: Path) -> None:
    lines = (case_dir / "conn.log").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["uid"] for r in rows] == [c[0] for c in CONN]
    first = rows[0]
    assert list(first)[:6] == ["ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"]
    assert first["id.orig_h"] == "10.0.0.1" and first["id.resp_p"] == 80
    assert isinstance(first["ts"], float) and first["ts"] == pytest.approx(_us(1) / 1e9, abs=1e-6)
    assert '"ts":1700000000.000001,' in lines[0]  # µs digits, no exponent
    assert "service" not in rows[2] and "tunnel_parents" not in rows[0]  # nulls omitted
    assert rows[3]["tunnel_parents"] == ["CT"]
    weird = [json.loads(line) for line in (case_dir / "weird.log").read_text().splitlines()]
    assert weird[0]["detail"] == 'quote " and \\ backslash'
    assert weird[2]["detail"] == "line\nbreak" and "ts" not in weird[2]
    packets = [json.loads(line) for line in (case_dir / "packets.log").read_text().splitlines()]
    assert [p["frame"] for p in packets] == [f for f, p in ALL.items() if p.fid != -1]


def test_json_lines_escaping_and_types() -> None:
    table = pa.table({
        "s": ["a\u2028b", "\x00\x1f\t", "ü😀", None],
        "f": [1.5, float("nan"), None, 1e-7],
        "t": pa.array([-1, 0, 1_500_000_123, None], pa.timestamp("ns")),
        "l": pa.array([["x", None], [], None, ['"']], pa.list_(pa.string())),
        "b": [True, False, None, True],
    })
    rows = [json.loads(line) for line in json_lines(table)]
    assert rows[0] == {"s": "a\u2028b", "f": 1.5, "t": -1e-9, "l": ["x", None], "b": True}
    assert rows[1] == {"s": "\x00\x1f\t", "t": 0.0, "l": [], "b": False}  # NaN omitted
    assert rows[2] == {"s": "ü😀", "t": 1.500000123}
    assert rows[3] == {"f": 1e-7, "l": ['"'], "b": True}


def test_empty_types_get_empty_parquet(tmp_path: Path) -> None:
    writer = CaseWriter(tmp_path / "c", json_logs=True)
    writer.write("conn", _conn_columns())
    writer.close({}, interrupted=False)
    for type_name in ("tunnel", "weird", "packets"):
        table = pq.read_table(tmp_path / "c" / f"{type_name}.parquet")
        assert table.num_rows == 0 and table.schema.equals(SCHEMAS[type_name])
        assert not (tmp_path / "c" / f"{type_name}.log").exists()
    con = connect(tmp_path / "c")
    try:
        assert con.execute("SELECT count(*) FROM weird").fetchone() == (0,)
        (tmp_path / "c" / "weird.parquet").unlink()  # an older case without this type
    finally:
        con.close()
    con = connect(tmp_path / "c")
    try:
        assert con.execute("SELECT count(*), count(name) FROM weird").fetchone() == (0, 0)
    finally:
        con.close()


def test_close_is_idempotent_and_refuses_existing_case(tmp_path: Path) -> None:
    writer = CaseWriter(tmp_path / "c")
    writer.close({"a": 1})
    writer.close({"a": 2})
    assert read_case_meta(tmp_path / "c")["stats"] == {"a": 1}
    with pytest.raises(RuntimeError):
        writer.write("conn", _conn_columns())
    with pytest.raises(LawtapError, match="already holds"):
        CaseWriter(tmp_path / "c")
    CaseWriter(tmp_path / "c", overwrite=True).close()


def test_interrupt_during_write_leaves_readable_parquet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT arriving while a row group is handed to the writer thread is held until the
    group is handed over, then raised; close() in finally still writes every accepted row
    exactly once, in order, in Parquet and JSON alike."""
    original = CaseWriter._submit
    calls = []

    def submit_then_sigint(self: CaseWriter, *args: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGINT)  # lands while the second row group is handed over
        original(self, *args)

    monkeypatch.setattr(CaseWriter, "_submit", submit_then_sigint)
    conn = _conn_columns()
    writer = CaseWriter(tmp_path / "c", json_logs=True, row_group_rows=2)
    with pytest.raises(KeyboardInterrupt):
        try:
            writer.write("conn", {k: v[:2] for k, v in conn.items()})
            writer.write("conn", {k: v[2:4] for k, v in conn.items()})
            writer.write("conn", {k: v[4:] for k, v in conn.items()})  # never reached
        finally:
            writer.close({"note": "stopped"}, interrupted=True)
    table = pq.read_table(tmp_path / "c" / "conn.parquet")
    assert table.column("uid").to_pylist() == ["CA", "CB", "CT", "CI"]
    assert pq.ParquetFile(tmp_path / "c" / "conn.parquet").metadata.num_row_groups == 2
    log = (tmp_path / "c" / "conn.log").read_text().splitlines()
    assert [json.loads(line)["uid"] for line in log] == ["CA", "CB", "CT", "CI"]
    meta = read_case_meta(tmp_path / "c")
    assert meta["interrupted"] is True and meta["complete"] is False
    assert pq.read_table(tmp_path / "c" / "weird.parquet").num_rows == 0


def test_failed_background_write_surfaces_and_close_still_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error in the writer thread reaches the caller (at a later write or at close)."""
    original = pq.ParquetWriter.write_table
    calls = []

    def fail_second(self: pq.ParquetWriter, *args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        original(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", fail_second)
    conn = _conn_columns()
    writer = CaseWriter(tmp_path / "c", row_group_rows=2)
    with pytest.raises(OSError, match="disk full"):
        try:
            for k in range(0, len(CONN), 2):
                writer.write("conn", {c: v[k : k + 2] for c, v in conn.items()})
        finally:
            writer.close({})
    assert read_case_meta(tmp_path / "c")["complete"] is False


def test_interrupt_between_writes_flushes_buffered_rows(tmp_path: Path) -> None:
    conn = _conn_columns()
    with pytest.raises(KeyboardInterrupt):
        with CaseWriter(tmp_path / "c") as writer:
            writer.write("conn", conn)  # buffered (below row_group_rows)
            writer.stats["packets"] = 7
            raise KeyboardInterrupt
    assert pq.read_table(tmp_path / "c" / "conn.parquet").num_rows == len(CONN)
    meta = read_case_meta(tmp_path / "c")
    assert (meta["interrupted"], meta["complete"], meta["stats"]) == (True, False, {"packets": 7})


def test_interrupt_while_formatting_keeps_rows_for_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lawtap.sinks as sinks

    original = sinks.format_json_lines
    calls = []

    def interrupted_once(table: pa.Table) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # before anything of this row group reached a file
        return original(table)

    monkeypatch.setattr(sinks, "format_json_lines", interrupted_once)
    writer = CaseWriter(tmp_path / "c", json_logs=True, row_group_rows=len(CONN))
    with pytest.raises(KeyboardInterrupt):
        try:
            writer.write("conn", _conn_columns())
        finally:
            writer.close({}, interrupted=True)
    assert pq.read_table(tmp_path / "c" / "conn.parquet").num_rows == len(CONN)
    assert len((tmp_path / "c" / "conn.log").read_text().splitlines()) == len(CONN)


def test_schema_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    writer = CaseWriter(tmp_path / "c")
    conn = _conn_columns()
    with pytest.raises(RecordSchemaError, match="missing required column 'uid'"):
        writer.write("conn", {k: v for k, v in conn.items() if k != "uid"})
    with pytest.raises(RecordSchemaError, match="unknown column"):
        writer.write("conn", {**conn, "bogus": [1] * len(CONN)})
    with pytest.raises(RecordSchemaError, match=r"conn\.id\.orig_p"):
        writer.write("conn", {**conn, "id.orig_p": [70000] * len(CONN)})  # overflows uint16
    with pytest.raises(RecordSchemaError, match="null"):
        writer.write("conn", {**conn, "uid": [None] * len(CONN)})
    with pytest.raises(RecordSchemaError, match="timestamps"):
        writer.write("conn", {**conn, "ts": [1] * len(CONN)})
    with pytest.raises(RecordSchemaError, match="unknown record type"):
        writer.write("nope", conn)
    writer.close()
    assert pq.read_table(tmp_path / "c" / "conn.parquet").num_rows == 0


# --------------------------------------------------------------------------------------------
# lawtap query

QUERY = 'SELECT uid, "id.orig_h", "id.resp_p", service FROM conn ORDER BY uid'
EXPECTED = sorted((c[0], c[1], c[4], c[6]) for c in CONN)


def test_query_table(case_dir: Path) -> None:
    out = io.StringIO()
    run_query(case_dir, QUERY, "table", out=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["uid", "id.orig_h", "id.resp_p", "service"]
    rows = [line.split() for line in lines[1:]]
    assert rows == [[u, h, str(p), s or "-"] for u, h, p, s in EXPECTED]


def test_query_csv(case_dir: Path) -> None:
    out = io.StringIO()
    run_query(case_dir, QUERY, "csv", out=out)
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["uid", "id.orig_h", "id.resp_p", "service"]
    assert rows[1:] == [[u, h, str(p), s or ""] for u, h, p, s in EXPECTED]


def test_query_json(case_dir: Path) -> None:
    out = io.StringIO()
    run_query(case_dir, QUERY, "json", out=out)
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    expected = [{"uid": u, "id.orig_h": h, "id.resp_p": p, "service": s} for u, h, p, s in EXPECTED]
    assert rows == expected


def test_query_joins_conn_to_packets(case_dir: Path) -> None:
    out = io.StringIO()
    run_query(case_dir, "SELECT c.uid, count(*) AS n FROM conn c JOIN packets p USING (fid) "
              "GROUP BY 1 ORDER BY 1", "json", out=out)
    counts = {r["uid"]: r["n"] for r in map(json.loads, out.getvalue().splitlines())}
    assert counts == {"CA": 3, "CB": 2, "CI": 2, "CC": 2}


def test_bad_sql_is_one_line_error(case_dir: Path) -> None:
    with pytest.raises(LawtapError) as info:
        run_query(case_dir, "SELEC * FROM conn", "table", out=io.StringIO())
    assert "syntax error" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(LawtapError, match="nope"):
        run_query(case_dir, "SELECT nope FROM conn", "csv", out=io.StringIO())


def test_not_a_case_is_named(tmp_path: Path) -> None:
    with pytest.raises(LawtapError, match=str(tmp_path)):
        run_query(tmp_path, "SELECT 1", "table", out=io.StringIO())
    with pytest.raises(LawtapError, match="missing-dir"):
        connect(tmp_path / "missing-dir")


# --------------------------------------------------------------------------------------------
# lawtap summary


def test_summary_numbers(case_dir: Path) -> None:
    console = Console(file=io.StringIO(), width=120)
    s = summarize(case_dir, console)
    ov = s["overview"]
    assert ov["packets"] == 10 and ov["indexed_packets"] == 9
    assert ov["bytes"] == sum(p.wirelen for p in ALL.values())
    assert ov["indexed_bytes"] == sum(p.wirelen for p in ALL.values() if p.fid != -1)
    assert (ov["first_ts_ns"], ov["last_ts_ns"]) == (_us(1), BASE_NS + 1_000_000_500)
    assert (ov["connections"], ov["tunnels"], ov["weirds"]) == (5, 1, 3)
    assert len(ov["sources"]) == 2
    assert [(t["host"], t["bytes"]) for t in s["top_talkers"]] == [
        ("172.16.0.1", 6000), ("172.16.0.2", 6000), ("10.0.0.1", 580), ("10.0.0.2", 400),
        ("10.0.0.5", 200), ("10.0.0.6", 200), ("10.0.0.53", 180),
        ("192.168.1.1", 100), ("192.168.1.2", 100),
    ]
    assert [(r["service"], r["conns"], r["bytes"]) for r in s["services"]] == [
        ("(unknown)", 2, 300), ("ssl", 1, 6000), ("http", 1, 400), ("dns", 1, 180),
    ]
    states = [(r["conn_state"], r["conns"]) for r in s["conn_states"]]
    assert states == [("SF", 3), ("S0", 1), ("S1", 1)]
    assert s["tunnels"] == {"Tunnel::VXLAN": 1}
    assert s["weirds"] == {"bad_TCP_checksum": 2, "truncated_header": 1}
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert "top talkers" in printed and "172.16.0.1" in printed and "bad_TCP_checksum" in printed


# --------------------------------------------------------------------------------------------
# lawtap export


def test_export_by_uid(case_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ca.pcap"
    count = export_flows(case_dir, ["CB", "CA"], None, out)
    back = assert_exported(out, [1, 2, 3, 4, 5], count)
    assert back.kind == "pcap-us" and set(back.linktypes) == {1}


def test_export_by_where(case_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dns.pcap"
    count = export_flows(case_dir, None, '"id.resp_p" = 53', out)
    assert_exported(out, [3, 5], count)


def test_export_tunnel_outer_conn_includes_inner_packets(case_dir: Path, tmp_path: Path) -> None:
    for uid in ("CT", "CI"):
        out = tmp_path / f"{uid}.pcap"
        assert_exported(out, [6, 8], export_flows(case_dir, [uid], None, out))


def test_export_gzip_source_with_ns_timestamps(case_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cc.pcap"
    back = assert_exported(out, [9, 10], export_flows(case_dir, ["CC"], None, out))
    assert back.kind == "pcap-ns" and set(back.linktypes) == {101}


def test_export_mixed_linktypes_writes_pcapng(case_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "tcp.pcapng"
    count = export_flows(case_dir, None, "proto = 'tcp'", out)
    back = assert_exported(out, [1, 2, 4, 6, 8, 9, 10], count)
    assert back.kind == "pcapng"
    assert back.linktypes == [1, 1, 1, 1, 1, 101, 101]


def test_export_uid_and_where_must_both_match(case_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "both.pcap"
    assert_exported(out, [3, 5], export_flows(case_dir, ["CA", "CB"], "proto = 'udp'", out))


def test_export_errors(case_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.pcap"
    with pytest.raises(LawtapError, match="unknown uids: Cnope, Cmissing"):
        export_flows(case_dir, ["CA", "Cnope", "Cmissing"], None, out)
    with pytest.raises(LawtapError, match="no connections match"):
        export_flows(case_dir, None, "proto = 'icmp'", out)
    with pytest.raises(LawtapError, match="Binder Error"):
        export_flows(case_dir, None, "no_such_column = 1", out)
    with pytest.raises(LawtapError, match="nothing to export"):
        export_flows(case_dir, None, None, out)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_export_missing_source_is_named(tmp_path: Path) -> None:
    case = build_case(tmp_path / "moved", json_logs=False)
    (tmp_path / "moved" / "b.pcap.gz").unlink()
    out = tmp_path / "cc.pcap"
    with pytest.raises(LawtapError, match="b.pcap.gz"):
        export_flows(case, ["CC"], None, out)
    assert not out.exists()
    assert_exported(out, [1, 2, 4], export_flows(case, ["CA"], None, out))  # other source fine


# --------------------------------------------------------------------------------------------
# progress


def test_progress_disabled_without_tty_and_renders_when_forced() -> None:
    with Progress(1000) as quiet:  # pytest captures stderr: not a TTY
        quiet.update(10, 1)
    assert not quiet.enabled and quiet.packets == 1
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=160)
    with Progress(1000, enabled=True, console=console) as shown:
        shown.update(500, 1234)
        shown.update(1000, 2468)
    text = buffer.getvalue()
    assert "2,468 pkts" in text and "1,000/1,000" in text


def test_parallel_digests_equal_hashlib() -> None:
    """Big objects are hashed on worker threads: same digests, same order as one by one."""
    import hashlib

    import numpy as np

    from lawtap.artifacts import PARALLEL_BYTES, digests

    rng = np.random.default_rng(5)
    objects = [rng.integers(0, 256, n, dtype=np.uint8).tobytes()
               for n in (0, 10, PARALLEL_BYTES, 3 * PARALLEL_BYTES + 7, 5, 2 * PARALLEL_BYTES)]
    expected = [(hashlib.md5(d).hexdigest(), hashlib.sha1(d).hexdigest(), hashlib.sha256(d).hexdigest()) for d in objects]
    assert digests(objects) == expected
    assert digests(objects[:2]) == expected[:2]
    # The same, started now and collected later (the pipeline goes on meanwhile).
    from lawtap.artifacts import PendingDigests

    pending = PendingDigests(objects)
    assert pending.result() == expected and pending.done()
    assert PendingDigests([]).result() == [] and PendingDigests(objects[:2]).done()
    # A SHA-256 the analyzer computed already (HTTP bodies, for their http record) is taken as
    # it is, small or big object, not computed again.
    known = [None, "k1", None, "k3", None, None]
    got = PendingDigests(objects, known).result()
    assert [g[2] for g in got] == [k or e[2] for k, e in zip(known, expected)]
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    # Objects lawtap made itself (WAVs from RTP) get their SHA-256 only, small or big.
    derived = [False, True, False, True, False, True]
    got = PendingDigests(objects, None, derived).result()
    assert [g[2] for g in got] == [e[2] for e in expected]
    assert [g[:2] for g in got] == [(None, None) if d else e[:2] for d, e in zip(derived, expected)]


def test_artifact_store_writes_in_background_once_per_object(tmp_path: Path, monkeypatch) -> None:
    """``put`` answers the path at once; after ``close`` each distinct object is on disk once,
    byte for byte, and the pending-bytes bound keeps the writer from falling far behind."""
    import hashlib

    from lawtap.artifacts import ArtifactStore

    monkeypatch.setattr(ArtifactStore, "MAX_PENDING_BYTES", 1000)
    store = ArtifactStore(tmp_path)
    objects = [bytes([i]) * (300 + i) for i in range(12)] * 2  # every object twice
    paths = []
    for data in objects:
        sha = hashlib.sha256(data).hexdigest()
        paths.append(store.put(sha, data))
        assert store._pending_bytes <= 1000 + len(data)
    store.close()
    for data, rel in zip(objects, paths):
        sha = hashlib.sha256(data).hexdigest()
        assert rel == f"artifacts/{sha[:2]}/{sha}"
        assert (tmp_path / rel).read_bytes() == data
    assert store.stored == 12 and store.stored_bytes == sum(len(d) for d in objects[:12])
    assert not list(tmp_path.rglob("*.tmp"))
    assert ArtifactStore(None).put("ab" * 32, b"x") is None


def test_artifact_write_failure_surfaces_at_close(tmp_path: Path) -> None:
    from lawtap.artifacts import ArtifactStore

    (tmp_path / "artifacts").write_bytes(b"a file where the directory should be")
    store = ArtifactStore(tmp_path)
    store.put("cd" * 32, b"payload")
    with pytest.raises(OSError):
        store.close()


@pytest.mark.parametrize("lane", ["0", "1"])
def test_an_artifact_that_cannot_be_written_leaves_the_case_incomplete(lane: str, tmp_path: Path, monkeypatch) -> None:
    """The run fails, and case.json says the case is not complete, when a recovered object
    cannot be stored (checked when the run waits for its artifacts, after the last records)."""
    from lawtap.artifacts import ArtifactStore
    from lawtap.generate import generate_capture
    from lawtap.pipeline import run_analysis
    from lawtap.sources import open_capture

    cap = tmp_path / "mix.pcap"
    generate_capture(cap, 3, 200)
    original = ArtifactStore.close

    def failing_close(self) -> None:
        original(self)
        raise OSError("disk full")

    monkeypatch.setattr(ArtifactStore, "close", failing_close)  # (the main process's store)
    monkeypatch.setenv("LAWTAP_LANE", lane)
    with pytest.raises(OSError, match="disk full"):
        run_analysis([open_capture(cap)], tmp_path / "case", progress=False)
    assert read_case_meta(tmp_path / "case")["complete"] is False


def test_background_threads_run_at_a_lower_priority() -> None:
    """Hashing, artifact and Parquet threads yield the cores to the main thread (Linux)."""
    import os
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from lawtap.threads import BACKGROUND_NICENESS, lower_priority

    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread priorities are a Linux feature")
    import threading

    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = niceness()
    with ThreadPoolExecutor(max_workers=1, initializer=lower_priority) as pool:
        assert pool.submit(niceness).result() == min(before + BACKGROUND_NICENESS, 19)
    assert niceness() == before  # the calling thread keeps its own


def test_an_analysis_run_does_not_import_pyarrow_compute(tmp_path: Path) -> None:
    """Timestamps are views, not casts, and the lane's conn rows are split before their batch is
    built: importing pyarrow.compute cost each process of a run about 0.16 s (it wraps every
    Arrow function, parsing its docs). Only --json's formatting needs it."""
    import os
    import subprocess
    import sys

    from lawtap.generate import generate_capture

    cap = tmp_path / "mix.pcap"
    generate_capture(cap, 3, 200)
    code = ("import sys\nfrom lawtap.nopandas import keep_pandas_out\nkeep_pandas_out()  # (as the CLI does)\n"
            "from lawtap.pipeline import run_analysis\nfrom lawtap.sources import open_capture\n"
            f"run_analysis([open_capture({str(cap)!r})], {str(tmp_path / 'case')!r}, progress=False)\n"
            "print('pyarrow.compute' in sys.modules)")
    env = {**os.environ, "LAWTAP_LANE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip().splitlines()[-1] == "False"
