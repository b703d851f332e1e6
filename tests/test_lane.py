"""The DNS lane (``lawtap.streams.lane``): a second process must not change a single record.

Each comparison runs the real pipeline twice over the same input, once with every analyzer in
one process (``LAWTAP_LANE=0``) and once with the kernel-named flows (DNS, mDNS) analyzed by the
lane's worker process (``LAWTAP_LANE=1``), and compares every record table as a multiset of rows
(the lane's rows arrive at the end, so only their order may differ).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import corpus_root, needs_corpus

from lawtap.errors import LawtapError
from lawtap.pipeline import run_analysis
from lawtap.sources import open_capture


def _case(paths: list[Path], out: Path, lane: str, monkeypatch) -> dict[str, Counter]:
    monkeypatch.setenv("LAWTAP_LANE", lane)
    run_analysis([open_capture(p, file_id=i) for i, p in enumerate(paths)], out, progress=False)
    tables = {}
    for f in sorted(out.glob("*.parquet")):
        rows = pq.read_table(f).to_pylist()
        tables[f.stem] = Counter(repr(sorted(r.items())) for r in rows)
    return tables


def _compare(paths: list[Path], tmp_path: Path, monkeypatch) -> dict[str, Counter]:
    alone = _case(paths, tmp_path / "one-process", "0", monkeypatch)
    lane = _case(paths, tmp_path / "lane", "1", monkeypatch)
    assert alone.keys() == lane.keys()
    for name in alone:
        assert alone[name] == lane[name], name
    return lane


def test_generated_mix_is_the_same_with_the_lane(tmp_path: Path, monkeypatch) -> None:
    """DNS among HTTP, mail, SIP/RTP, FTP and the rest of the generator's traffic."""
    from lawtap.generate import generate_capture

    cap = tmp_path / "mix.pcap"
    manifest = generate_capture(cap, 11, 600)
    assert manifest["protocols"].get("dns", 0) > 0
    tables = _compare([cap], tmp_path, monkeypatch)
    assert sum(tables["dns"].values()) > 50


@needs_corpus
def test_corpus_dns_is_the_same_with_the_lane(tmp_path: Path, monkeypatch) -> None:
    """DNS over UDP and TCP, EDNS, mDNS, a DNS tunnel: the corpus captures of the dns family."""
    paths = sorted(p for p in (corpus_root() / "dns").glob("*/*") if p.suffix in (".pcap", ".pcapng", ".cap"))
    assert paths
    tables = _compare(paths, tmp_path, monkeypatch)
    assert sum(tables["dns"].values()) > 100


def test_lane_worker_failure_is_one_clear_error(tmp_path: Path) -> None:
    """A worker that cannot start its analyzers fails the run with a LawtapError (one line in
    the CLI), not a hang or a traceback."""
    from lawtap.streams.lane import RemoteLane

    class NotImportable:  # defined in a test: the worker process cannot import it
        pass

    lane = RemoteLane(b"\0" * 32, {"dns": NotImportable}, [])
    with pytest.raises(LawtapError, match="DNS analysis process failed"):
        lane.finish([])
    lane.close()


def test_small_inputs_stay_in_one_process(monkeypatch) -> None:
    from lawtap.streams.lane import LANE_MIN_BYTES, lane_wanted

    monkeypatch.delenv("LAWTAP_LANE", raising=False)
    assert not lane_wanted(LANE_MIN_BYTES - 1)
    monkeypatch.setenv("LAWTAP_LANE", "0")
    assert not lane_wanted(10 * LANE_MIN_BYTES)
    monkeypatch.setenv("LAWTAP_LANE", "1")
    assert lane_wanted(0)


def test_a_failed_lane_fails_the_run_and_marks_the_case_incomplete(tmp_path: Path, monkeypatch) -> None:
    """If the worker dies, the run ends with a LawtapError; the case's files are closed and
    readable, and case.json says it is not complete (its DNS records are missing)."""
    import json

    from lawtap.generate import generate_capture
    from lawtap.streams import lane as lane_module

    cap = tmp_path / "mix.pcap"
    generate_capture(cap, 3, 200)
    real_advance = lane_module.RemoteLane.advance

    def dying_advance(self):  # the worker goes away in the middle of the run
        self._proc.kill()
        self._proc.wait()
        real_advance(self)

    monkeypatch.setattr(lane_module.RemoteLane, "advance", dying_advance)
    monkeypatch.setenv("LAWTAP_LANE", "1")
    with pytest.raises(LawtapError, match="DNS analysis process failed"):
        run_analysis([open_capture(cap)], tmp_path / "case", progress=False)
    meta = json.loads((tmp_path / "case" / "case.json").read_text())
    assert meta["complete"] is False
    assert pq.read_table(tmp_path / "case" / "conn.parquet").num_rows > 0
