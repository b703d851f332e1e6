"""A second process that analyzes a share of the flows: the UDP flows but DNS (SIP, RTP, DHCP,
RADIUS, GTP, QUIC, TFTP ...), and the TCP flows DPI names SIP, SMTP, POP3 or IMAP.

Why: with every analyzer on, the run is bound by one core of Python. These flows need nothing
from the others (SIP and the RTP its SDP announces stay together, since SIP over TCP goes too),
and on a typical mix they are about half the work (RTP is most of the packets, mail the
heaviest parsing); DNS, light since it has a kernel, stays with the main process to balance the
two (splitting it between the two costs more than it saves: its per-batch work is vectorized;
``lawtap.streams.dispatch.LANE_TCP_SERVICES``).

How: the lane's process reads the same capture files itself and runs the same decoder and
:class:`~lawtap.pipeline.Analyzer` (``role="lane"``), so it sees the same packets; the flow
table runs in the main process only, which sends each batch's answer (per packet: flow id,
direction, kernel service; and the flows that ended, about 10 bytes a packet), so both
dispatchers see the same flows under the same ids and uids. Each analyzes its own share
(:meth:`~lawtap.streams.dispatch.StreamDispatcher._split_lane`, the same choice from the same
packets on both sides). The main process grants each batch it analyzes with that answer (so
the lane never runs ahead of it, nor falls more than ``RemoteLane.MAX_LAG`` batches behind,
and an interrupted run stops both at the same batch); the lane
answers each batch with its records, as Arrow IPC, and the services it found for the flows
that ended, which the main process picks up between its own batches. The main process writes
every conn record, holding those of the lane's flows until the lane has named their service.
Reading a file twice costs little: the second read comes from the page cache, and decoding
runs on a reader thread.

The one thing the lane cannot know is a data channel announced in the main process (FTP, IRC
DCC) that claims one of its flows: the main process analyzes those itself and drops what the
lane made of them. Records of one type interleave between the two processes batch by batch;
within each process they keep their order. The lane's file ids are counted under a salt of its
own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pyarrow as pa

from lawtap.errors import LawtapError
from lawtap.signals import sigint_deferred

# Inputs smaller than this are analyzed in one process: a worker costs ~0.5 s of start-up.
LANE_MIN_BYTES = 64 << 20


def lane_wanted(total_bytes: int, compressed: bool = False) -> bool:
    """Whether a run over ``total_bytes`` of capture files should use a lane (``LAWTAP_LANE=0|1``
    forces the choice; tests compare both). Not for compressed files: the lane would decompress
    them all over again, which costs about what it saves."""
    forced = os.environ.get("LAWTAP_LANE")
    if forced is not None:
        return forced == "1"
    return total_bytes >= LANE_MIN_BYTES and not compressed and (os.cpu_count() or 1) > 1


def _pack(batches: list[tuple[str, pa.RecordBatch]]) -> list[tuple[str, bytes]]:
    out = []
    for type_name, rb in batches:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, rb.schema) as writer:
            writer.write_batch(rb)
        out.append((type_name, sink.getvalue().to_pybytes()))
    return out


def _unpack(packed: list[tuple[str, bytes]]) -> list[tuple[str, pa.RecordBatch]]:
    return [(type_name, pa.ipc.open_stream(blob).read_next_batch()) for type_name, blob in packed]


class RemoteLane:
    """The main process's end of the lane: ``advance`` per batch, ``poll`` for records, then
    ``finish`` once."""

    MAX_LAG = 4  # batches granted but not yet answered

    def __init__(self, salt: bytes, paths: list[str], artifact_root: Path | None, dpi: bool) -> None:
        # A fresh interpreter (``python -m lawtap.streams.lane FD``), not fork (this process
        # runs threads) nor multiprocessing's spawn (which re-runs the caller's __main__),
        # talking over a socket pair with multiprocessing's message framing.
        ours, theirs = socket.socketpair()
        with theirs:
            self._proc = subprocess.Popen([sys.executable, "-m", "lawtap.streams.lane", str(theirs.fileno())],
                                          pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                          start_new_session=True)  # Ctrl-C reaches the main process only
        self._conn = Connection(ours.detach())
        self._broken: BaseException | None = None
        self._finishing = False  # "finish" sent
        self.granted = 0  # batches granted
        self.answered = 0  # batches the lane has answered
        self.services: dict[int, str] = {}  # fid -> service, of the lane's flows that ended
        self._inbox: list[tuple[str, pa.RecordBatch]] = []  # records received, not yet taken
        self._send((salt, [str(p) for p in paths], str(artifact_root) if artifact_root is not None else None, dpi))

    def _send(self, message: tuple) -> None:
        if self._broken is not None:
            return
        try:
            with sigint_deferred():  # a message is sent whole, or not at all
                self._conn.send(message)
        except (OSError, EOFError) as e:  # the worker died: reported by poll or finish
            self._broken = e

    def advance(self, PF: np.ndarray, PD: np.ndarray, PS: np.ndarray, ended: list[int]) -> None:
        """The main process analyzes its next (non-empty) batch: the lane may do the same, with
        the flow table's answer for it (see :meth:`lawtap.pipeline.Analyzer.process`).

        At most ``MAX_LAG`` batches ahead of the lane's answers: a lane slower than this
        process (a mail-heavy capture) would otherwise pile up grants in its memory, and this
        process the conn rows it holds for the lane; here it waits for the lane instead.
        """
        if self._broken is None:
            try:
                while self.granted - self.answered >= self.MAX_LAG:
                    self._await_message()
                    self._receive()
            except (OSError, EOFError) as e:
                raise self._failed(f"{e} (exit code {self._wait()})") from None
        self.granted += 1
        self._send(("go", self.granted, PF, PD, PS, ended))

    def _await_message(self) -> None:
        """Block until the lane has sent something; EOFError if its process ended instead."""
        while not self._conn.poll(1.0):  # a live worker may need a while; a dead one won't answer
            if self._proc.poll() is not None and not self._conn.poll(0):
                raise EOFError("the process ended without an answer")

    def _failed(self, why: object) -> LawtapError:
        return LawtapError(f"the lane's analysis process failed: {why}")

    def _receive(self) -> str:
        """Take one message: its records join :attr:`_inbox` (inside the deferred-SIGINT block,
        so a Ctrl-C arriving meanwhile cannot lose them); returns its kind."""
        with sigint_deferred():
            message = self._conn.recv()
            if message[0] == "batch":  # ("batch", number, records, services)
                self._inbox += _unpack(message[2])
                self.services.update(message[3])
                self.answered = message[1]
        if message[0] == "error":
            raise self._failed(message[1])
        return message[0]

    def _take_inbox(self) -> list[tuple[str, pa.RecordBatch]]:
        out, self._inbox = self._inbox, []
        return out

    def poll(self) -> list[tuple[str, pa.RecordBatch]]:
        """The records the lane has sent so far (without waiting)."""
        try:
            while self._conn.poll(0):
                self._receive()
        except (OSError, EOFError) as e:
            raise self._failed(f"{e} (exit code {self._wait()})") from None
        return self._take_inbox()

    def announce_finish(self, ended: list[int]) -> None:
        """Tell the lane the run ends after the batches granted (``ended``: the flows the table
        ended last), so that it finishes while this process does the same."""
        if not self._finishing:
            self._finishing = True
            self._send(("finish", self.granted, ended))

    def finish(self, ended: list[int]) -> list[tuple[str, pa.RecordBatch]]:
        """End the lane (if :meth:`announce_finish` has not yet), wait for it and return its
        last records."""
        self.announce_finish(ended)
        try:
            if self._broken is not None:
                raise self._broken
            while True:
                self._await_message()
                if self._receive() == "done":
                    break
        except (OSError, EOFError) as e:
            raise self._failed(f"{e} (exit code {self._wait()})") from None
        finally:
            self._conn.close()
        self._wait()
        return self._take_inbox()

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
    """The lane's process: an Analyzer in the lane's role over the same captures."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when the run ends
    conn = Connection(fd)
    try:
        from lawtap.nopandas import keep_pandas_out

        keep_pandas_out()
        salt, paths, artifact_root, dpi = conn.recv()
        _serve(conn, salt, paths, Path(artifact_root) if artifact_root is not None else None, dpi)
    except BaseException:  # noqa: BLE001 - reported to the main process as one line
        try:
            conn.send(("error", traceback.format_exc(limit=3).strip().splitlines()[-1]))
        except (OSError, EOFError):
            pass
    finally:
        conn.close()


class _Grants:
    """The lane's view of the main process's progress: the batches it may analyze, each with
    the flow table's answer for it.

    A thread takes the main process's messages as they come, so its sends never wait on the
    lane: both processes send whole batches (grants one way, records the other), and if each
    waited for the other to read, with both socket buffers full, neither would.
    """

    def __init__(self, conn) -> None:
        self._conn = conn
        self._cond = threading.Condition()
        self._flows: dict[int, tuple] = {}  # batch number -> (PF, PD, PS, ended)
        self.final: int | None = None  # set by "finish": the batches the run analyzed
        self.final_ended: list[int] = []
        self._lost: BaseException | None = None  # the main process went away
        threading.Thread(target=self._listen, name="lawtap-grants", daemon=True).start()

    def _listen(self) -> None:
        try:
            while self.final is None:
                message = self._conn.recv()
                with self._cond:
                    if message[0] == "go":
                        self._flows[message[1]] = message[2:]
                    else:  # ("finish", batches analyzed, flows ended last)
                        self.final_ended = message[2]
                        self.final = message[1]
                    self._cond.notify_all()
        except (OSError, EOFError) as e:
            with self._cond:
                self._lost = e
                self._cond.notify_all()

    def wait_for(self, k: int) -> tuple | None:
        """Block until batch ``k`` (1-based) is granted and return its flow columns; None if
        the run ends before it."""
        with self._cond:
            while k not in self._flows:
                if self.final is not None:
                    return None
                if self._lost is not None:
                    raise self._lost
                self._cond.wait()
            return self._flows.pop(k)

    def wait_final(self) -> None:
        with self._cond:
            while self.final is None:
                if self._lost is not None:
                    raise self._lost
                self._cond.wait()


def _serve(conn, salt: bytes, paths: list[str], artifact_root: Path | None, dpi: bool) -> None:
    from lawtap.pipeline import Analyzer, read_ahead, tune_gc_for_a_run
    from lawtap.sources import open_capture

    classify = None
    if dpi:
        from lawtap.dpi import classify
    analyzer = Analyzer(salt, paths, classify=classify, artifact_root=artifact_root, role="lane")
    tune_gc_for_a_run()
    sources = [open_capture(p, file_id=i) for i, p in enumerate(paths)]
    grants = _Grants(conn)
    services = analyzer.dispatcher.services

    def answer(k: int, out: list, ended: list[int]) -> None:
        # The services of the flows that ended (for their conn records, which the main
        # process writes); DPI's answers for flows still going stay here.
        named = {fid: services.pop(fid) for fid in ended if fid in services}
        conn.send(("batch", k, _pack(out), named))

    try:
        k = 0
        for batch, decoded in read_ahead(sources, analyzer):
            if decoded is None:
                continue
            k += 1
            flows = grants.wait_for(k)
            if flows is None:
                break
            answer(k, list(analyzer.process(batch, decoded, flows)), flows[3])
        grants.wait_final()
        out = list(analyzer.finish(grants.final_ended))
        answer(k, out, list(services))  # every flow has ended now
    finally:
        analyzer.close()
    conn.send(("done",))


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]))
