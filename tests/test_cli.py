"""The command line as a user meets it: help, errors as one line, analyze -> query -> export."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import corpus_root

LAWTAP = [sys.executable, "-m", "lawtap.cli"]


def run(*args: str, check: bool = False, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([*LAWTAP, *args], capture_output=True, text=True, timeout=600, **kw)
    if check:
        assert res.returncode == 0, res.stderr
    return res


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("lawtap: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("cmd", [[], ["analyze"], ["query"], ["summary"], ["export"], ["generate"]])
def test_help(cmd: list[str]) -> None:
    res = run(*cmd, "--help", check=True)
    assert "Usage:" in res.stdout


def test_bad_inputs_give_one_line_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    assert_one_line_error(run("analyze", str(empty), "-o", str(tmp_path / "c1")), "empty.pcap")
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(os.urandom(300))
    assert_one_line_error(run("analyze", str(junk), "-o", str(tmp_path / "c2")), "junk.pcap", "offset")
    short = tmp_path / "short.pcap"
    short.write_bytes(struct.pack("<IHH", 0xA1B2C3D4, 2, 4))
    assert_one_line_error(run("analyze", str(short), "-o", str(tmp_path / "c3")), "short.pcap")
    assert_one_line_error(run("analyze", str(tmp_path / "missing.pcap"), "-o", str(tmp_path / "c4")), "missing.pcap")
    assert_one_line_error(run("query", str(tmp_path), "SELECT 1"))
    assert_one_line_error(run("summary", str(tmp_path / "nowhere")))


def test_truncated_capture_is_analyzed_with_a_weird(tmp_path: Path) -> None:
    from lawtap import craft

    s = craft.TcpSession("10.0.0.1", "10.0.0.2", 1234, 80)
    s.handshake().client_send(b"GET / HTTP/1.0\r\n\r\n").close()
    path = tmp_path / "cut.pcap"
    craft.write_pcap(path, s.frames)
    path.write_bytes(path.read_bytes()[:-10])
    case = tmp_path / "case"
    run("analyze", str(path), "-o", str(case), check=True)
    weird = pq.read_table(case / "weird.parquet").to_pylist()
    assert any(w["name"] == "truncated_record" for w in weird)
    assert pq.read_table(case / "conn.parquet").num_rows == 1


def test_empty_capture(tmp_path: Path) -> None:
    path = tmp_path / "none.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    case = tmp_path / "case"
    run("analyze", str(path), "-o", str(case), check=True)
    assert pq.read_table(case / "conn.parquet").num_rows == 0
    meta = json.loads((case / "case.json").read_text())
    assert meta["complete"] is True


CAPTURE = "http/zeek__get/get.pcap"


@pytest.mark.skipif(corpus_root() is None, reason="shared corpus not present")
def test_analyze_query_export_roundtrip(tmp_path: Path) -> None:
    capture = corpus_root() / CAPTURE
    case = tmp_path / "case"
    res = run("analyze", str(capture), "-o", str(case), "--json", check=True)
    assert "Traceback" not in res.stderr
    assert "\x1b[" not in res.stderr  # no progress bar when stderr is not a terminal
    conn = pq.read_table(case / "conn.parquet").to_pylist()
    assert len(conn) == 1 and conn[0]["service"] == "http" and conn[0]["conn_state"] == "SF"
    log = [json.loads(l) for l in (case / "conn.log").read_text().splitlines()]
    assert log[0]["id.orig_h"] == conn[0]["id.orig_h"] and log[0]["uid"] == conn[0]["uid"]
    q = run("query", str(case), "SELECT uid, service FROM conn", "--format", "csv", check=True)
    assert conn[0]["uid"] in q.stdout
    out = tmp_path / "out.pcap"
    run("export", str(case), "--uid", conn[0]["uid"], "-w", str(out), check=True)
    from lawtap.sources import open_capture

    def frames(p: Path) -> list[tuple[int, bytes]]:
        return [(int(b.ts[i]), b.packet(i)) for b in open_capture(p).batches() for i in range(len(b))]

    assert frames(out) == frames(capture)  # the capture holds exactly this one connection
    if shutil.which("tshark"):
        def tshark(p: Path) -> str:
            return subprocess.run(["tshark", "-n", "-r", str(p), "-T", "fields", "-e", "frame.len", "-e", "frame.time_epoch", "-e", "tcp.seq_raw"],
                                  capture_output=True, text=True, check=True).stdout
        assert tshark(out) == tshark(capture)
    assert_one_line_error(run("export", str(case), "--uid", "Cnosuchuid", "-w", str(tmp_path / "x.pcap")), "Cnosuchuid")


@pytest.mark.parametrize("lane", ["0", "1"], ids=["one-process", "lane"])
def test_ctrl_c_leaves_a_complete_case(tmp_path: Path, lane: str) -> None:
    """Also with the lane's second process, which must neither hang nor lose its records."""
    from lawtap.generate import generate_capture

    cap = tmp_path / "big.pcap"
    generate_capture(cap, 5, 4000)
    copies = [cap]
    for k in range(5):  # several files so the run lasts long enough to be interrupted
        c = tmp_path / f"big{k}.pcap"
        shutil.copy(cap, c)
        copies.append(c)
    case = tmp_path / "case"
    env = {**os.environ, "LAWTAP_LANE": lane}
    proc = subprocess.Popen([*LAWTAP, "analyze", *map(str, copies), "-o", str(case)], stderr=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not (case / "case.json").exists():
        time.sleep(0.05)
    time.sleep(2.0)  # (the whole run takes about 5 s here)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert "Traceback" not in err, err
    meta = json.loads((case / "case.json").read_text())
    assert proc.returncode in (0, 130)
    if proc.returncode == 130:
        assert meta["interrupted"] is True
    for name in ("conn", "packets", "weird", "tunnel", "dns", "rtp"):
        pq.read_table(case / f"{name}.parquet")  # complete, readable files
    if lane == "1" and meta["records"]["conn"] > 0:
        # The run got to its first batch (before that there is nothing to lose), and the lane
        # analyzed every batch the main process began: the capture has RTP (the lane's) throughout.
        assert meta["records"]["rtp"] > 0


def test_analyze_tunes_the_garbage_collector_for_the_run(tmp_path: Path, monkeypatch) -> None:
    """``lawtap analyze`` freezes the start-up objects and collects less often (see
    ``tune_gc_for_a_run``); a library call to run_analysis leaves the host's settings alone."""
    import gc

    from click.testing import CliRunner

    from lawtap.cli import main
    from lawtap.pipeline import run_analysis
    from lawtap.sources import open_capture

    path = tmp_path / "none.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    before = gc.get_threshold()
    try:
        run_analysis([open_capture(path)], tmp_path / "library", progress=False)
        assert gc.get_threshold() == before
        result = CliRunner().invoke(main, ["analyze", str(path), "-o", str(tmp_path / "cli")])
        assert result.exit_code == 0, result.output
        assert gc.get_threshold() == (10_000, 20, 20) and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
