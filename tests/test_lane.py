"""The lane (``lawtap.streams.lane``): a second process must not change a single record.

Each comparison runs the real pipeline twice over the same input, once with every analyzer in
one process (``LAWTAP_LANE=0``) and once with the flows shared with the lane's process
(``LAWTAP_LANE=1``: UDP but DNS, SIP and mail there, the rest here), and compares every record table as a
multiset of rows (the lane's rows interleave with the main process's, so only their order may
differ; file ids are counted per process).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import corpus_root, needs_corpus
from hypothesis import given, settings
from hypothesis import strategies as st

from lawtap.errors import LawtapError
from lawtap.pipeline import run_analysis
from lawtap.sources import open_capture
from lawtap.streams.lane import ROW_BYTES, SHARE_COLUMNS, Share, _Grants


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
    gzip file; and in batches small enough that flows, the TCP flows DPI hands over while
    they wait for it, and the conn records the main process holds for the lane, span many)."""
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


def _share(k: int, n: int) -> Share:
    """A share of ``n`` rows whose columns and payloads all say ``k``."""
    from lawtap.decode import kernel as dk

    D = np.full((n, SHARE_COLUMNS), k, dtype=np.int64)
    D[:, dk.C_PAY_LEN] = 3
    D[:, dk.C_PAY_OFF] = np.arange(n) * 3
    return Share(D, np.full((n, 4), k, np.uint64), np.full(n, k, np.int64), np.full(n, k, np.int64),
                 np.full(n, k % 2, np.int8), np.full(n, 1, np.int8), np.full(3 * n, k, np.uint8), [], [k], 10 * k)


def _send_share(conn, raw, k: int, share: Share) -> None:
    """What RemoteLane.advance sends."""
    conn.send(("go", k, len(share.PF), len(share.data), share.handovers, share.ended, share.last_ts))
    for a in share.arrays():
        raw.sendall(memoryview(a).cast("B"))


def test_grants_never_wait_on_the_lane(tmp_path: Path) -> None:
    """The main process sends each share whole (its rows and payloads) while the lane sends
    whole batches of records the other way: if the lane took shares only when it wanted the
    next one, both could block in ``send`` with the socket full. A thread takes them as they
    come; shares sent while the lane is busy still complete, each intact."""
    import socket
    import threading
    from multiprocessing.connection import Connection

    ours, theirs = socket.socketpair()
    main_end, lane_end = Connection(os.dup(ours.fileno())), Connection(os.dup(theirs.fileno()))
    grants = _Grants(lane_end, theirs)  # the lane is busy: nobody calls wait_for yet
    sent = threading.Event()

    def send_all() -> None:
        for k in range(1, 5):  # ~26 MB, far beyond the socket's buffer
            _send_share(main_end, ours, k, _share(k, 50_000))
        main_end.send(("finish", 4, [("handover",)], [99]))
        sent.set()

    threading.Thread(target=send_all, daemon=True).start()
    assert sent.wait(60), "the main process's shares waited on the lane"
    for k in range(1, 5):  # (4 shares: fewer than the buffers they are received into)
        share = grants.wait_for(k)
        assert share.ended == [k] and share.last_ts == 10 * k and (share.PF == k).all() and (share.PD == k % 2).all()
        assert (share.D == _share(k, 50_000).D).all() and (share.A == k).all() and (share.data == k).all()
    assert grants.wait_for(5) is None and grants.final_count == 4
    assert grants.wait_final() == ([("handover",)], [99])
    for end in (main_end, lane_end, ours, theirs):
        end.close()


@given(st.lists(st.tuples(st.integers(0, 40), st.booleans()), max_size=30), st.data())
@settings(max_examples=60, deadline=None)
def test_a_share_carries_its_rows_and_their_payloads(packets: list[tuple[int, bool]], data) -> None:
    """Share.cut takes the rows of a batch with their payloads gathered back to back, and
    Share.view reads them back from the bytes sent: the same columns, each payload the same
    bytes as in the batch."""
    from lawtap.decode import kernel as dk

    n = len(packets)
    lens = np.array([ln for ln, _ in packets], dtype=np.int64)
    buffer = np.frombuffer(bytes(range(256)) * 8, dtype=np.uint8)
    offs = np.array([data.draw(st.integers(0, len(buffer) - 41)) for _ in packets], dtype=np.int64)
    A, D = dk.new_columns(n)
    D[:, dk.C_PAY_OFF], D[:, dk.C_PAY_LEN] = offs, lens
    D[:, dk.C_SEQ] = np.arange(n) * 7
    D[:, dk.C_L3_OFF] = 5  # (a column the lane does not get)
    A[:] = np.arange(n * 8, dtype=np.uint64).reshape(n, 8)
    ts, PF, PD = np.arange(n, dtype=np.int64) * 1000, np.arange(n, dtype=np.int64) + 3, np.ones(n, np.int8)
    PS = (np.arange(n) % 3).astype(np.int8)
    rows = np.array([i for i, (_, take) in enumerate(packets) if take], dtype=np.int64)
    share = Share.cut(rows, buffer, A, D, ts, PF, PD, PS, [], [1], 5)
    wire = b"".join(a.tobytes() for a in share.arrays())
    assert len(wire) == len(rows) * ROW_BYTES + len(share.data)
    got = Share.view(np.frombuffer(wire, dtype=np.uint8), len(rows), len(share.data), [], [1], 5)
    assert got.D.shape == (len(rows), SHARE_COLUMNS)
    assert (got.PF == PF[rows]).all() and (got.PS == PS[rows]).all() and (got.ts == ts[rows]).all() and (got.A == A[rows, :4]).all()
    assert (got.D[:, dk.C_SEQ] == D[rows, dk.C_SEQ]).all()
    for j, i in enumerate(rows.tolist()):
        start, length = int(got.D[j, dk.C_PAY_OFF]), int(got.D[j, dk.C_PAY_LEN])
        assert got.data[start : start + length].tobytes() == buffer[offs[i] : offs[i] + lens[i]].tobytes()


def test_lane_worker_failure_is_one_clear_error(tmp_path: Path) -> None:
    """A worker that cannot start its analyzers fails the run with a LawtapError (one line in
    the CLI), not a hang or a traceback."""
    from lawtap.streams.lane import RemoteLane

    lane = RemoteLane(None, None, True)  # no salt: the lane's Analyzer cannot start
    with pytest.raises(LawtapError, match="lane.s analysis process failed"):
        lane.finish()
    lane.close()


def test_small_inputs_stay_in_one_process(monkeypatch) -> None:
    from lawtap.streams.lane import LANE_MIN_BYTES, lane_wanted

    monkeypatch.delenv("LAWTAP_LANE", raising=False)
    assert not lane_wanted(LANE_MIN_BYTES - 1)
    assert lane_wanted(10 * LANE_MIN_BYTES) == ((os.cpu_count() or 1) > 1)
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


def test_the_lanes_weirds_count_as_the_runs() -> None:
    """The lane's weirds are written with the main process's and counted as anomalies of the run."""
    import pyarrow as pa

    from lawtap.pipeline import Analyzer
    from lawtap.records import SCHEMAS

    class Lane:  # what Analyzer needs of a RemoteLane here
        def advance(self, share) -> None: ...

    an = Analyzer(b"\1" * 32, [], analyzers=True)
    an.use_lane(Lane())
    weird = pa.RecordBatch.from_pylist([{"name": "w1", "uid": "C1"}, {"name": "w1"}, {"name": "w3"}],
                                       schema=SCHEMAS["weird"])
    out = dict(an._lane_records([("weird", weird)]))
    assert out["weird"].num_rows == 3
    assert dict(an.stats.weirds) == {"w1": 2, "w3": 1}


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

        def advance(self, share) -> None: ...

    lane = Lane()
    an = Analyzer(b"\1" * 32, [], analyzers=True)
    an.use_lane(lane)
    an.dispatcher.lane_owned[[3, 4]] = [2, 1]  # 3: a DNS flow the main process kept; 4: TCP handed over
    rows = [{"uid": "C1", "fid": 1, "ip_proto": 6, "service": "http"},  # the main process's
            {"uid": "C2", "fid": 2, "ip_proto": 17},  # UDP: the lane's
            {"uid": "C3", "fid": 3, "ip_proto": 17, "service": "dns"},
            {"uid": "C4", "fid": 4, "ip_proto": 6, "service": "smtp"}]
    lane.granted = 4  # (this batch's share, the 5th, is sent after its conn rows)
    # The engine builds the rows of the flows that are not this process's apart.
    ours = an.engine.owned_rows(np.array([r["fid"] for r in rows]), np.array([r["ip_proto"] for r in rows]))
    assert ours.tolist() == [True, False, True, False]
    an.engine.held_conn_batches = [pa.RecordBatch.from_pylist([r for r, o in zip(rows, ours) if not o],
                                                              schema=SCHEMAS["conn"])]
    an._hold_lane_conn()
    assert an.engine.held_conn_batches == []
    assert list(an._lane_conn(lane)) == []  # the lane has not answered batch 5 yet
    lane.answered, lane.services = 5, {2: "sip", 99: "rtp"}
    (kind, held), = an._lane_conn(lane)
    assert kind == "conn" and held.column("uid").to_pylist() == ["C2", "C4"]
    assert held.column("service").to_pylist() == ["sip", "smtp"] and lane.services == {99: "rtp"}
    assert an.stats.flows == 2 and list(an._lane_conn(lane, final=True)) == []


def test_the_main_process_waits_for_a_lane_that_falls_behind() -> None:
    """Grants go at most ``MAX_LAG`` batches ahead of the lane's answers, so a slow lane
    neither piles grants up in its memory nor the main process held conn rows in its own."""
    import queue
    import socket
    import threading
    import time
    from multiprocessing.connection import Connection

    from lawtap.streams.lane import RemoteLane, _pack

    ours, theirs = socket.socketpair()
    lane_end = Connection(theirs.detach())
    lane = object.__new__(RemoteLane)  # its end, without a worker process
    lane._raw = ours
    lane._conn = Connection(os.dup(ours.fileno()))
    lane._proc = type("Alive", (), {"poll": staticmethod(lambda: None)})()
    lane._broken, lane._finishing, lane._inbox = None, False, []
    lane.granted = lane.answered = 0
    lane.services = {}
    lane._outbox = queue.SimpleQueue()
    lane._sender = threading.Thread(target=lane._pump, daemon=True)
    lane._sender.start()
    progress = []

    def main_process() -> None:
        for _ in range(2 * RemoteLane.MAX_LAG):
            lane.advance(lambda: _share(1, 0))
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
    lane._close_sockets()
    lane_end.close()


def test_a_batch_cut_short_by_ctrl_c_still_reaches_the_lane(tmp_path: Path) -> None:
    """Ctrl-C may land while this process is still writing a batch's records: the lane gets the
    batch's share all the same (the rows of its flows were set aside first), so the lane
    analyzes every batch the main process began and none of its flows loses packets."""
    from lawtap.generate import generate_capture
    from lawtap.pipeline import Analyzer
    from lawtap.streams.dispatch import IN_LANE

    cap = tmp_path / "mix.pcap"
    generate_capture(cap, 3, 300)

    class Lane:  # what Analyzer needs of a RemoteLane here
        granted = answered = 0
        services: dict[int, str] = {}

        def __init__(self) -> None:
            self.shares: list[Share] = []

        def advance(self, make_share) -> None:
            self.shares.append(make_share())
            self.granted += 1

        def poll(self) -> list:
            return []

    lane = Lane()
    an = Analyzer(b"\1" * 32, [str(cap)], analyzers=True)
    an.use_lane(lane)
    batch = next(open_capture(cap).batches())
    records = an.process(batch)
    next(records)  # the batch's first record is out when Ctrl-C lands
    with pytest.raises(KeyboardInterrupt):
        records.throw(KeyboardInterrupt)
    assert len(lane.shares) == 1 and len(lane.shares[0].PF) > 0
    assert set(np.unique(lane.shares[0].PF).tolist()) <= set(np.flatnonzero(an.dispatcher.state == IN_LANE).tolist())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=300))
def test_flow_groups_matches_the_sorting_reference(fids):
    """The dispatcher's grouping kernel against what np.unique and stable argsorts gave:
    each flow's packets together in capture order, flows by their first packet."""
    from lawtap.streams.gather import flow_groups

    f = np.array(fids, dtype=np.int64)
    slot = np.full(64, -1, dtype=np.int64)
    order = np.empty(len(f), dtype=np.int64)
    firsts = np.empty(len(f), dtype=np.int64)
    g = flow_groups(f, slot, order, firsts)
    uniq, first, inverse = np.unique(f, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    assert g == len(uniq)
    assert order.tolist() == np.argsort(rank[inverse], kind="stable").tolist()
    assert firsts[:g].tolist() == np.sort(first).tolist()  # first positions, in order of appearance
    assert (slot == -1).all()  # the scratch is left as found
