"""A second process for the flows the flow kernel names itself (DNS, mDNS).

Why: with every analyzer on, the run is bound by one core of Python, and DNS is a large share of
it on a typical mix (one small transaction per flow, each parsed, paired and turned into a
record). DNS flows need nothing from other flows, and the flow kernel names them before any
Python sees them, so they can be analyzed elsewhere without changing a single record.

How: the worker process reads the same capture files itself and runs the same decoder and flow
table, so it sees the same packets with the same flow ids, and analyzes only the lane's flows:
those whose first payload (or TCP flag) packet carries a lane service code. The main process
skips exactly those (:meth:`StreamDispatcher._split_lane`). Nothing but small messages crosses
between the two: the main process grants each batch it has analyzed (so the worker never runs
ahead of it, and an interrupted run stops both at the same packet), and the worker sends its
Arrow tables once, at the end (it never writes to the pipe before, so neither side can block
on the other). Reading a file twice costs little: the second read comes from the page cache.

A flow with a lane code that an announced data channel claims (FTP, IRC DCC, TFTP) stays in the
main process, which the worker cannot know in time: the main process names those flows at the
end and the worker drops their records. Its records come out in the same order as in one
process (flows end in the same order); its weird records reach the case at the end of the run.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pyarrow as pa

from lawtap.decode import kernel as dk
from lawtap.errors import LawtapError
from lawtap.signals import sigint_deferred

# Inputs smaller than this are analyzed in one process: a worker costs ~0.5 s of start-up.
LANE_MIN_BYTES = 64 << 20


def lane_wanted(total_bytes: int) -> bool:
    """Whether a run over ``total_bytes`` of captures should use a lane (``LAWTAP_LANE=0|1``
    forces the choice; tests compare both)."""
    forced = os.environ.get("LAWTAP_LANE")
    if forced is not None:
        return forced == "1"
    return total_bytes >= LANE_MIN_BYTES and (os.cpu_count() or 1) > 1


class RemoteLane:
    """The main process's end of the lane: ``advance`` per batch, then ``finish`` once."""

    def __init__(self, salt: bytes, services: dict[str, Any], paths: list[str]) -> None:
        # A fresh interpreter (``python -m lawtap.streams.lane FD``), not fork (this process
        # runs threads) nor multiprocessing's spawn (which re-runs the caller's __main__),
        # talking over a socket pair with multiprocessing's message framing.
        ours, theirs = socket.socketpair()
        with theirs:
            self._proc = subprocess.Popen([sys.executable, "-m", "lawtap.streams.lane", str(theirs.fileno())],
                                          pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                          start_new_session=True)  # Ctrl-C reaches the main process only
        self._conn = Connection(ours.detach())
        self.services = frozenset(services)
        self._broken: BaseException | None = None
        self._granted = 0
        self._send((salt, {name: f"{cls.__module__}:{cls.__qualname__}" for name, cls in services.items()},
                    [str(p) for p in paths]))

    def _send(self, message: tuple) -> None:
        if self._broken is not None:
            return
        try:
            with sigint_deferred():  # a message is sent whole, or not at all
                self._conn.send(message)
        except (OSError, EOFError) as e:  # the worker died: reported at finish
            self._broken = e

    def advance(self) -> None:
        """The main process analyzes its next (non-empty) batch: the worker may do the same."""
        self._granted += 1
        self._send(("go", self._granted))

    def finish(self, kept: list[int]) -> tuple[list[tuple[str, pa.Table]], list[tuple[int, str, str, float]]]:
        """End every flow after the batches granted, wait for the worker, return its record
        tables and weirds. ``kept``: flows with a lane code the main process analyzed itself."""
        self._send(("finish", self._granted, kept))
        try:
            if self._broken is not None:
                raise self._broken
            while not self._conn.poll(1.0):  # a live worker may need a while; a dead one won't answer
                if self._proc.poll() is not None:
                    raise EOFError("the process ended without an answer")
            with sigint_deferred():
                reply = self._conn.recv()
        except (OSError, EOFError) as e:
            raise LawtapError(f"the DNS analysis process failed (exit code {self._wait()}): {e}") from None
        finally:
            self._conn.close()
        self._wait()
        if reply[0] == "error":
            raise LawtapError(f"the DNS analysis process failed: {reply[1]}")
        _, blobs, weirds = reply
        tables = [(name, pa.ipc.open_stream(blob).read_all()) for name, blob in blobs]
        return tables, weirds

    def _wait(self) -> int | None:
        try:
            return self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.wait()

    def close(self) -> None:
        """Stop the worker if it is still running (after an error in the main process)."""
        if self._proc.poll() is None:
            self._conn.close()
            self._proc.terminate()
            self._wait()


def _worker_main(fd: int) -> None:
    """The worker process: a StreamDispatcher with only the lane's analyzers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when the run ends
    conn = Connection(fd)
    try:
        from lawtap.cli import _NoPandas

        sys.meta_path.insert(0, _NoPandas())
        salt, services, paths = conn.recv()
        _serve(conn, salt, services, paths)
    except BaseException:  # noqa: BLE001 - reported to the main process as one line
        try:
            conn.send(("error", traceback.format_exc(limit=3).strip().splitlines()[-1]))
        except (OSError, EOFError):
            pass
    finally:
        conn.close()


class _Grants:
    """The worker's view of the main process's progress: how many batches it may analyze."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self.granted = 0
        self.final: int | None = None  # set by "finish": the batches the run analyzed
        self.kept: list[int] = []

    def wait_for(self, k: int) -> bool:
        """Block until batch ``k`` (1-based) is granted; False if the run ends before it."""
        while self.granted < k:
            if self.final is not None:
                return False
            message = self._conn.recv()
            if message[0] == "go":
                self.granted = message[1]
            else:  # ("finish", batches analyzed, kept flows)
                _, self.final, self.kept = message
                self.granted = max(self.granted, self.final)
                if k > self.final:
                    return False
        return True

    def wait_final(self) -> None:
        while self.final is None:
            self.wait_for(self.granted + 1)


class _Decoder:
    """The decode stage :func:`~lawtap.pipeline.read_ahead` runs in its reader thread."""

    def __init__(self) -> None:
        from lawtap.decode.defrag import Defragmenter

        self.defrag = Defragmenter()

    def decode(self, batch):
        from lawtap.pipeline import decode

        return decode(batch, self.defrag) if len(batch) else None


def lane_rows(owner: np.ndarray, codes: np.ndarray, A: np.ndarray, D: np.ndarray, PF: np.ndarray,
              PS: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which flows of a batch belong to the lane, decided as the main process's dispatcher does:
    a flow's first packet that reaches the dispatcher (TCP/UDP with payload, or TCP with
    SYN/FIN/RST) carries a lane code. ``owner`` (by flow id: 0 unseen, 1 lane, 2 not) is updated;
    returns it (grown if needed) and ``PF`` with -1 for every packet not of a lane flow."""
    proto = D[:, dk.C_PROTO]
    tcp = proto == 6
    wanted = (PF >= 0) & (tcp | (proto == 17)) & ((D[:, dk.C_PAY_LEN] > 0) | (tcp & ((D[:, dk.C_FLAGS] & 0x07) != 0)))
    idx = np.flatnonzero(wanted)
    top = int(PF.max(initial=-1))
    if top >= owner.shape[0]:
        grown = np.zeros(max(top + 1, owner.shape[0] * 2), dtype=np.int8)
        grown[: owner.shape[0]] = owner
        owner = grown
    fids = PF[idx]
    uniq, first = np.unique(fids, return_index=True)
    new = owner[uniq] == 0
    owner[uniq[new]] = np.where(np.isin(PS[idx[first[new]]], codes), 1, 2)
    mine = np.zeros(PF.shape[0], dtype=np.bool_)
    mine[idx[owner[fids] == 1]] = True
    return owner, np.where(mine, PF, -1)


def _serve(conn, salt: bytes, services: dict[str, str], paths: list[str]) -> None:
    import importlib

    from lawtap.flows.engine import FlowEngine, make_uid, make_uids
    from lawtap.flows.table import SERVICE_NAMES
    from lawtap.pipeline import _record_table, read_ahead
    from lawtap.records import SCHEMAS
    from lawtap.sources import open_capture
    from lawtap.streams.dispatch import StreamDispatcher

    registry = {}
    for name, path in services.items():
        module, qualname = path.split(":")
        registry[name] = getattr(importlib.import_module(module), qualname)
    codes = np.array([code for code, name in SERVICE_NAMES.items() if name in registry], dtype=np.int64)
    engine = FlowEngine(salt, keep_records=False)
    engine.share_services({})  # no payload samples: this process names no flow by DPI
    dispatcher = StreamDispatcher(registry, None, lambda fid: make_uid(salt, fid),
                                  uids_of=lambda fids: make_uids(salt, fids).to_pylist())
    tables: dict[str, list[tuple[pa.Table, np.ndarray]]] = {}
    weirds: list[tuple[int, str, str, float]] = []
    grants = _Grants(conn)
    owner = np.zeros(1 << 16, dtype=np.int8)
    last_ts = 0

    def take(default_ts: float) -> None:
        records, _files, new_weirds = dispatcher.take()
        for type_name, items in records.items():
            fids = np.array([fid for fid, _, _ in items], dtype=np.int64)
            tables.setdefault(type_name, []).append((_record_table(SCHEMAS[type_name], items, default_ts), fids))
        weirds.extend((fid, name, detail, t or default_ts) for fid, name, detail, t in new_weirds)

    def end(fids: list[int]) -> None:
        if fids:
            ended = np.array(fids, dtype=np.int64)
            dispatcher.end(ended[owner[ended] == 1].tolist(), last_ts / 1e9)
        take(last_ts / 1e9)

    sources = [open_capture(p, file_id=i) for i, p in enumerate(paths)]
    k = 0
    for batch, decoded in read_ahead(sources, _Decoder()):
        if decoded is None:
            continue
        k += 1
        if not grants.wait_for(k):
            break
        data, A, D = decoded
        PF, _, PD, PS = engine.run(data, A, D, batch.ts)
        last_ts = max(last_ts, int(batch.ts[-1]))
        owner, lane_PF = lane_rows(owner, codes, A, D, PF, PS)
        dispatcher.batch(data, A, D, batch.ts, lane_PF, PD, PS)
        ended, engine.ended_fids = engine.ended_fids, []
        end(ended)
    grants.wait_final()
    engine.finish()
    ended, engine.ended_fids = engine.ended_fids, []
    end(ended)
    dispatcher.end_all(last_ts / 1e9)
    take(last_ts / 1e9)
    kept = np.array(grants.kept, dtype=np.int64)
    blobs = []
    for type_name, parts in tables.items():
        table = pa.concat_tables([t.filter(pa.array(~np.isin(f, kept))) if len(kept) else t for t, f in parts])
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        blobs.append((type_name, sink.getvalue()))
    if len(kept):
        dropped = set(kept.tolist())
        weirds = [w for w in weirds if w[0] not in dropped]
    conn.send(("done", blobs, weirds))


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]))
