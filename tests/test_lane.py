"""The lane (``lawtap.streams.lane``): a second process must not change a single record.

Each comparison runs the real pipeline twice over the same input, once with every analyzer in
one process (``LAWTAP_LANE=0``) and once with the flows shared with the lane's process
(``LAWTAP_LANE=1``: UDP but DNS, SIP and mail there, the rest here), and compares every record table as a
multiset of rows (the lane's rows interleave with the main process's, so only their order may
differ; file ids are counted per process).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
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
        # File ids are counted per process (the lane's under a salt of its own); no other
        # record refers to them.
        rows = pq.read_table(f).to_pylist()
        tables[f.stem] = Counter(repr(sorted((k, v) for k, v in r.items() if k != "fuid")) for r in rows)
    return tables


def _compare(paths: list[Path], tmp_path: Path, monkeypatch) -> dict[str, Counter]:
    alone = _case(paths, tmp_path / "one-process", "0", monkeypatch)
    lane = _case(paths, tmp_path / "lane", "1", monkeypatch)
    assert alone.keys() == lane.keys()
    for name in alone:
        assert alone[name] == lane[name], name
    return lane


@pytest.mark.parametrize(("compressed", "batch_bytes"), [(False, None), (True, None), (False, 96 << 10)],
                         ids=["pcap", "gzip", "small-batches"])
def test_generated_mix_is_the_same_with_the_lane(compressed: bool, batch_bytes: int | None, tmp_path: Path,
                                                 monkeypatch) -> None:
    """DNS among HTTP, mail, SIP/RTP, FTP and the rest of the generator's traffic (also from a
    gzip file, which the lane decompresses on its own when forced; and in batches small enough
    that flows, and the conn records the main process holds for the lane, span many)."""
    import gzip
    import shutil

    from lawtap.generate import generate_capture

    if batch_bytes:
        monkeypatch.setenv("LAWTAP_BATCH_BYTES", str(batch_bytes))

    cap = tmp_path / "mix.pcap"
    manifest = generate_capture(cap, 11, 600)
    if compressed:
        with open(cap, "rb") as raw, gzip.open(tmp_path / "mix.pcap.gz", "wb") as packed:
            shutil.copyfileobj(raw, packed)
        cap.unlink()
        cap = tmp_path / "mix.pcap.gz"
    assert manifest["protocols"].get("dns", 0) > 0
    tables = _compare([cap], tmp_path, monkeypatch)
    assert sum(tables["dns"].values()) > 50


@needs_corpus
@pytest.mark.parametrize("family", ["dns", "voip", "files", "attribution", "mobile", "chat", "misc", "email", "http",
                                    "tls"])
def test_corpus_is_the_same_with_the_lane(family: str, tmp_path: Path, monkeypatch) -> None:
    """Each corpus family's captures in one run: DNS over UDP and TCP, mDNS; SIP over UDP and
    TCP with the RTP its SDP announces (calls, WAVs); FTP and TFTP data channels; DHCP and
    RADIUS (identities); GTP; IRC DCC, XMPP; QUIC and the rest; SMTP/POP3/IMAP with STARTTLS
    (the lane's), HTTP and TLS (the main process's)."""
    paths = sorted(p for p in (corpus_root() / family).glob("*/*") if p.suffix in (".pcap", ".pcapng", ".cap"))
    assert paths
    tables = _compare(paths, tmp_path, monkeypatch)
    assert sum(tables["conn"].values()) > 0
    if family == "dns":
        assert sum(tables["dns"].values()) > 100
    if family == "voip":
        assert sum(tables["call"].values()) > 0 and sum(tables["rtp"].values()) > 0


def test_grants_never_wait_on_the_lane(tmp_path: Path) -> None:
    """The main process sends each grant whole (with the flow table's answer, ~10 bytes a
    packet) while the lane sends whole batches of records the other way: if the lane took
    grants only when it wanted the next batch, both could block in ``send`` with the socket
    full. A thread takes them as they come; grants sent while the lane is busy still complete."""
    import socket
    import threading
    from multiprocessing.connection import Connection

    from lawtap.streams.lane import _Grants

    ours, theirs = socket.socketpair()
    main_end, lane_end = Connection(ours.detach()), Connection(theirs.detach())
    grants = _Grants(lane_end)  # the lane is busy: nobody calls wait_for yet
    columns = [np.arange(200_000, dtype=np.int64), np.ones(200_000, np.int8), np.zeros(200_000, np.int8)]
    sent = threading.Event()

    def send_all() -> None:
        for k in range(1, 6):  # ~9 MB, far beyond the socket's buffer
            main_end.send(("go", k, *columns, [k]))
        main_end.send(("finish", 5, [99]))
        sent.set()

    threading.Thread(target=send_all, daemon=True).start()
    assert sent.wait(60), "the main process's grants waited on the lane"
    for k in range(1, 6):
        PF, PD, PS, ended = grants.wait_for(k)
        assert (PF == columns[0]).all() and ended == [k]
    assert grants.wait_for(6) is None and grants.final == 5 and grants.final_ended == [99]
    main_end.close()
    lane_end.close()


def test_lane_worker_failure_is_one_clear_error(tmp_path: Path) -> None:
    """A worker that cannot start its analyzers fails the run with a LawtapError (one line in
    the CLI), not a hang or a traceback."""
    from lawtap.streams.lane import RemoteLane

    class NotImportable:  # defined in a test: the worker process cannot import it
        pass

    lane = RemoteLane(b"\0" * 32, ["/nonexistent/capture.pcap"], None, True)
    with pytest.raises(LawtapError, match="lane.s analysis process failed"):
        lane.finish([])
    lane.close()


def test_small_inputs_stay_in_one_process(monkeypatch) -> None:
    from lawtap.streams.lane import LANE_MIN_BYTES, lane_wanted

    monkeypatch.delenv("LAWTAP_LANE", raising=False)
    assert not lane_wanted(LANE_MIN_BYTES - 1)
    assert not lane_wanted(10 * LANE_MIN_BYTES, compressed=True)
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

    def dying_advance(self, *flows):  # the worker goes away in the middle of the run
        self._proc.kill()
        self._proc.wait()
        real_advance(self, *flows)

    monkeypatch.setattr(lane_module.RemoteLane, "advance", dying_advance)
    monkeypatch.setenv("LAWTAP_LANE", "1")
    with pytest.raises(LawtapError, match="lane.s analysis process failed"):
        run_analysis([open_capture(cap)], tmp_path / "case", progress=False)
    meta = json.loads((tmp_path / "case" / "case.json").read_text())
    assert meta["complete"] is False
    assert pq.read_table(tmp_path / "case" / "conn.parquet").num_rows > 0


def test_a_run_that_cannot_open_its_case_stops_the_lane(tmp_path: Path, monkeypatch) -> None:
    """The lane's process starts before the case is opened (its start-up overlaps the main
    process's); when the case cannot be opened, it is stopped, not left behind."""
    from lawtap.generate import generate_capture
    from lawtap.streams import lane as lane_module

    cap = tmp_path / "mix.pcap"
    generate_capture(cap, 3, 100)
    case = tmp_path / "case"
    run_analysis([open_capture(cap)], case, progress=False)  # a case is there now
    closed = []
    real_close = lane_module.RemoteLane.close

    def close(self):
        closed.append(self._proc)
        real_close(self)

    monkeypatch.setattr(lane_module.RemoteLane, "close", close)
    monkeypatch.setenv("LAWTAP_LANE", "1")
    with pytest.raises(LawtapError):
        run_analysis([open_capture(cap)], case, progress=False)  # no overwrite
    assert len(closed) == 1 and closed[0].poll() is not None


def test_the_lanes_records_of_flows_kept_here_are_dropped_and_its_weirds_counted() -> None:
    """A data channel announced in the main process may claim a flow the lane also analyzed
    (it could not know): the main process drops the lane's rows for it. The lane's weirds
    count as anomalies of the run."""
    import pyarrow as pa

    from lawtap.pipeline import Analyzer
    from lawtap.records import SCHEMAS

    class Lane:  # what Analyzer needs of a RemoteLane here
        def advance(self, *flows) -> None: ...

    an = Analyzer(b"\1" * 32, [], analyzers=True)
    an.use_lane(Lane())
    an.dispatcher.kept_from_lane = [7]
    kept_uid, other_uid = an.engine.uids(np.array([7, 8]))
    sip = pa.RecordBatch.from_pylist([{"uid": kept_uid}, {"uid": other_uid}], schema=SCHEMAS["sip"])
    weird = pa.RecordBatch.from_pylist([{"name": "w1", "uid": other_uid}, {"name": "w2", "uid": kept_uid},
                                        {"name": "w3"}], schema=SCHEMAS["weird"])
    out = dict(an._lane_records([("sip", sip), ("weird", weird)]))
    assert out["sip"].column("uid").to_pylist() == [other_uid]
    assert out["weird"].column("name").to_pylist() == ["w1", "w3"]  # rows without a uid stay
    assert dict(an.stats.weirds) == {"w1": 1, "w3": 1}


def test_conn_rows_of_the_lanes_flows_wait_for_its_services() -> None:
    """The main process writes every conn record; those of the lane's flows (UDP flows the
    flow kernel did not name, TCP flows handed over) wait until the lane has answered the batch
    they ended in, and take the service it found (the main process's own guess otherwise)."""
    import pyarrow as pa

    from lawtap.pipeline import Analyzer
    from lawtap.records import SCHEMAS

    class Lane:  # what Analyzer needs of a RemoteLane here
        granted = answered = 0
        services: dict[int, str] = {}

        def advance(self, *flows) -> None: ...

    lane = Lane()
    an = Analyzer(b"\1" * 32, [], analyzers=True)
    an.use_lane(lane)
    an.dispatcher.lane_owned[[3, 4]] = [2, 1]  # 3: a DNS flow the main process kept; 4: TCP handed over
    rows = [{"uid": "C1", "fid": 1, "ip_proto": 6, "service": "http"},  # the main process's
            {"uid": "C2", "fid": 2, "ip_proto": 17},  # UDP: the lane's
            {"uid": "C3", "fid": 3, "ip_proto": 17, "service": "dns"},
            {"uid": "C4", "fid": 4, "ip_proto": 6, "service": "smtp"}]
    lane.granted = 5
    written = an._hold_lane_conn(pa.RecordBatch.from_pylist(rows, schema=SCHEMAS["conn"]))
    assert written.column("uid").to_pylist() == ["C1", "C3"]
    assert list(an._lane_conn(lane)) == []  # the lane has not answered batch 5 yet
    lane.answered, lane.services = 5, {2: "sip", 99: "rtp"}
    (kind, held), = an._lane_conn(lane)
    assert kind == "conn" and held.column("uid").to_pylist() == ["C2", "C4"]
    assert held.column("service").to_pylist() == ["sip", "smtp"] and lane.services == {99: "rtp"}
    assert an.stats.flows == 2 and list(an._lane_conn(lane, final=True)) == []


def test_the_main_process_waits_for_a_lane_that_falls_behind() -> None:
    """Grants go at most ``MAX_LAG`` batches ahead of the lane's answers, so a slow lane
    neither piles grants up in its memory nor the main process held conn rows in its own."""
    import socket
    import threading
    import time
    from multiprocessing.connection import Connection

    from lawtap.streams.lane import RemoteLane, _pack

    ours, theirs = socket.socketpair()
    lane_end = Connection(theirs.detach())
    lane = object.__new__(RemoteLane)  # its end, without a worker process
    lane._conn = Connection(ours.detach())
    lane._proc = type("Alive", (), {"poll": staticmethod(lambda: None)})()
    lane._broken, lane._finishing, lane._inbox = None, False, []
    lane.granted = lane.answered = 0
    lane.services = {}
    columns = (np.zeros(3, np.int64), np.zeros(3, np.int8), np.zeros(3, np.int8), [])
    progress = []

    def main_process() -> None:
        for _ in range(2 * RemoteLane.MAX_LAG):
            lane.advance(*columns)
            progress.append(lane.granted)

    worker = threading.Thread(target=main_process, daemon=True)
    worker.start()
    time.sleep(0.5)
    assert progress[-1] == RemoteLane.MAX_LAG  # the lane answered nothing: the main process waits
    for k in range(1, RemoteLane.MAX_LAG + 1):
        assert lane_end.recv()[:2] == ("go", k)
        lane_end.send(("batch", k, _pack([]), {k: "sip"}))
    worker.join(10)
    assert not worker.is_alive() and progress[-1] == 2 * RemoteLane.MAX_LAG
    assert lane.answered == RemoteLane.MAX_LAG and lane.services == {k: "sip" for k in range(1, RemoteLane.MAX_LAG + 1)}
    lane._conn.close()
    lane_end.close()
