"""A second process for the flows the flow kernel names itself (DNS, mDNS).

Why: with every analyzer on, the run is bound by one core of Python, and DNS alone is about
half of it on a typical mix (one small transaction per flow, each parsed, paired and turned into
a record). DNS flows need nothing from other flows, and the flow kernel names them before any
Python sees them, so they can be analyzed elsewhere without changing a single record.

How: the main process's :class:`~lawtap.streams.dispatch.StreamDispatcher` hands this lane the
packets of those flows, batch by batch (their rows of the decoded arrays, payloads gathered into
one buffer), and the flows' end; the worker process runs an ordinary ``StreamDispatcher`` with
only those analyzers over exactly the same inputs, so its records are the in-process records.
It builds Arrow tables as flows end and sends everything back once, at :meth:`RemoteLane.finish`
(the worker never writes to the pipe before then, so neither side can block on the other).
The lane's record types come out in the same order as in one process (flows end in the same
order); its weird records reach the case at the end of the run, after the main process's.
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
    """The main process's end of the lane: ``batch``, ``end``, then ``finish`` once."""

    def __init__(self, salt: bytes, services: dict[str, Any]) -> None:
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
        self._send((salt, {name: f"{cls.__module__}:{cls.__qualname__}" for name, cls in services.items()}))

    def _send(self, message: tuple) -> None:
        if self._broken is not None:
            return
        try:
            with sigint_deferred():  # a message is sent whole, or not at all
                self._conn.send(message)
        except (OSError, EOFError) as e:  # the worker died: reported at finish
            self._broken = e

    def batch(self, data: np.ndarray, A: np.ndarray, D: np.ndarray, ts: np.ndarray, PF: np.ndarray, PD: np.ndarray,
              PS: np.ndarray, rows: np.ndarray) -> None:
        """Hand over the packets ``rows`` of a decoded batch (their payloads copied out)."""
        from lawtap.streams.dispatch import gather_payloads

        D_rows = D[rows]
        offs = D_rows[:, dk.C_PAY_OFF].copy()
        lens = np.maximum(D_rows[:, dk.C_PAY_LEN], 0)
        starts = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(lens, out=starts[1:])
        buf = np.empty(int(starts[-1]), dtype=np.uint8)
        if len(buf):
            gather_payloads(data, offs, lens, buf)
        D_rows[:, dk.C_PAY_OFF] = starts[:-1]
        self._send(("batch", buf, A[rows], D_rows, ts[rows], PF[rows], PD[rows], PS[rows]))

    def end(self, fids: list[int], ts: float) -> None:
        """Flows ended (the lane ignores those it never saw); also marks when records are taken."""
        self._send(("end", fids, ts))

    def finish(self, ts: float) -> tuple[list[tuple[str, pa.Table]], list[tuple[int, str, str, float]]]:
        """End every flow, wait for the worker, return its record tables and weirds."""
        self._send(("finish", ts))
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
        salt, services = conn.recv()
        _serve(conn, salt, services)
    except BaseException:  # noqa: BLE001 - reported to the main process as one line
        try:
            conn.send(("error", traceback.format_exc(limit=3).strip().splitlines()[-1]))
        except (OSError, EOFError):
            pass
    finally:
        conn.close()


def _serve(conn, salt: bytes, services: dict[str, str]) -> None:
    import importlib

    from lawtap.flows.engine import make_uid, make_uids
    from lawtap.pipeline import _record_table
    from lawtap.records import SCHEMAS
    from lawtap.streams.dispatch import StreamDispatcher

    registry = {}
    for name, path in services.items():
        module, qualname = path.split(":")
        registry[name] = getattr(importlib.import_module(module), qualname)
    dispatcher = StreamDispatcher(registry, None, lambda fid: make_uid(salt, fid),
                                  uids_of=lambda fids: make_uids(salt, fids).to_pylist())
    tables: dict[str, list[pa.Table]] = {}
    weirds: list[tuple[int, str, str, float]] = []

    def take(default_ts: float) -> None:
        records, _files, new_weirds = dispatcher.take()
        for type_name, items in records.items():
            tables.setdefault(type_name, []).append(_record_table(SCHEMAS[type_name], items, default_ts))
        weirds.extend((fid, name, detail, t or default_ts) for fid, name, detail, t in new_weirds)

    while True:
        message = conn.recv()
        kind = message[0]
        if kind == "batch":
            dispatcher.batch(*message[1:])
        elif kind == "end":
            dispatcher.end(message[1], message[2])
            take(message[2])
        else:  # finish
            dispatcher.end_all(message[1])
            take(message[1])
            break
    blobs = []
    for type_name, parts in tables.items():
        table = pa.concat_tables(parts)
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        blobs.append((type_name, sink.getvalue()))
    conn.send(("done", blobs, weirds))


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]))
