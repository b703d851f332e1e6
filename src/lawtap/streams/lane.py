"""A second process that analyzes a share of the flows: the UDP flows but DNS (SIP, RTP, DHCP,
RADIUS, GTP, QUIC, TFTP ...), and the TCP flows DPI names SIP, SMTP, POP3 or IMAP.

Why: with every analyzer on, the run is bound by one core of Python. These flows need nothing
from the others (SIP and the RTP its SDP announces stay together, since SIP over TCP goes too),
and on a typical mix they are about half the work (RTP is most of the packets, mail the
heaviest parsing); DNS, light since it has a kernel, stays with the main process to balance the
two (splitting it between the two costs more than it saves: its per-batch work is vectorized;
``lawtap.streams.dispatch.LANE_TCP_SERVICES``).

How: the main process reads, decodes and runs the flow table; its dispatcher decides which
flows are the lane's (UDP flows the flow kernel did not name, from their first packet; TCP
flows once DPI names one of the lane's services, handed over with the packets kept while DPI
decided). After analyzing each batch it sends the lane a :class:`Share`: those flows' rows
(the decoder's columns the lane's dispatcher reads, flow id and direction, about 100 bytes a
packet) with their payloads back to back, the hand-overs, and the flows the table ended. The
lane runs the same :class:`~lawtap.pipeline.Analyzer` (``role="lane"``) on it, without reading
or decoding anything itself, so both see the same flows under the same ids and uids. Shares go
at most ``RemoteLane.MAX_LAG`` batches ahead of the lane's answers, and an interrupted run
stops both at the same batch. The lane answers each share with its records, as Arrow IPC, and
the services it found for the flows that ended, which the main process picks up between its
own batches. The main process writes every conn record, holding those of the lane's flows
until the lane has named their service.

Records of one type interleave between the two processes batch by batch; within each process
they keep their order. The lane's file ids are counted under a salt of its own.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pyarrow as pa

from lawtap.decode import kernel as dk
from lawtap.errors import LawtapError
from lawtap.signals import sigint_deferred
from lawtap.streams.gather import gather_payloads

# Inputs smaller than this are analyzed in one process: a worker costs ~0.5 s of start-up.
LANE_MIN_BYTES = 64 << 20


def lane_wanted(total_bytes: int) -> bool:
    """Whether a run over ``total_bytes`` of capture files should use a lane (``LAWTAP_LANE=0|1``
    forces the choice; tests compare both)."""
    forced = os.environ.get("LAWTAP_LANE")
    if forced is not None:
        return forced == "1"
    return total_bytes >= LANE_MIN_BYTES and (os.cpu_count() or 1) > 1


# The decoder's columns the lane's dispatcher reads (protocol, ports, flags, sequence numbers,
# payload offset and length): the first ones, up to the payload length.
SHARE_COLUMNS = dk.C_PAY_LEN + 1
# Bytes of a share's row: D's columns, four address words (A), timestamp, flow id, direction,
# kernel service.
ROW_BYTES = 8 * SHARE_COLUMNS + 8 * 4 + 8 + 8 + 1 + 1


@dataclass
class Share:
    """The lane's part of one batch: its flows' rows, in capture order, with the columns its
    dispatcher reads (``D``'s payload offsets point into ``data``, the payloads back to back),
    the TCP flows handed over meanwhile (``(fid, conn, service, kept packets)``), the flows the
    table ended, and the batch's last timestamp (the call tracker's clock)."""

    D: np.ndarray  # (n, SHARE_COLUMNS) int64
    A: np.ndarray  # (n, 4) uint64
    ts: np.ndarray  # (n,) int64, ns
    PF: np.ndarray  # (n,) int64
    PD: np.ndarray  # (n,) int8
    PS: np.ndarray  # (n,) int8
    data: np.ndarray  # uint8
    handovers: list
    ended: list[int]
    last_ts: int

    def arrays(self) -> tuple[np.ndarray, ...]:
        """In their order on the wire: the 8-byte ones first, so that each stays aligned."""
        return self.D, self.A, self.ts, self.PF, self.PD, self.PS, self.data

    @classmethod
    def cut(cls, rows: np.ndarray, data: np.ndarray, A: np.ndarray, D: np.ndarray, ts: np.ndarray,
            PF: np.ndarray, PD: np.ndarray, PS: np.ndarray, handovers: list, ended: list[int], last_ts: int) -> Share:
        """The share of a decoded batch made of ``rows`` (sorted), with their payloads gathered."""
        lens = D[rows, dk.C_PAY_LEN]
        payloads = np.empty(int(lens.sum()), dtype=np.uint8)
        gather_payloads(data, D[rows, dk.C_PAY_OFF], lens, payloads)  # (contiguous columns: the AOT kernel's)
        part = D[rows, :SHARE_COLUMNS]
        part[:, dk.C_PAY_OFF] = 0
        np.cumsum(lens[:-1], out=part[1:, dk.C_PAY_OFF])
        return cls(part, np.ascontiguousarray(A[rows, :4]), ts[rows], PF[rows], PD[rows], PS[rows], payloads,
                   handovers, ended, last_ts)

    @classmethod
    def view(cls, buf: np.ndarray, n: int, m: int, handovers: list, ended: list[int], last_ts: int) -> Share:
        """A share received into ``buf`` (``n`` rows, ``m`` payload bytes), as views of it."""
        o = 0

        def take(nbytes: int, dtype, shape: tuple) -> np.ndarray:
            nonlocal o
            out = buf[o : o + nbytes].view(dtype).reshape(shape)
            o += nbytes
            return out

        D = take(8 * SHARE_COLUMNS * n, np.int64, (n, SHARE_COLUMNS))
        A = take(32 * n, np.uint64, (n, 4))
        ts = take(8 * n, np.int64, (n,))
        PF = take(8 * n, np.int64, (n,))
        PD = take(n, np.int8, (n,))
        PS = take(n, np.int8, (n,))
        return cls(D, A, ts, PF, PD, PS, take(m, np.uint8, (m,)), handovers, ended, last_ts)


def _recv_exactly(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from the socket, in one call that waits for all of it if it can: the
    receiving thread then needs the GIL once, not once per socket buffer's worth (while the
    lane's analysis holds the GIL, the sender would wait on every one of those)."""
    got = 0
    while got < len(view):
        k = sock.recv_into(view[got:], 0, socket.MSG_WAITALL)
        if k == 0:
            raise EOFError("the other process went away")
        got += k


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


SEND_BUFFER_BYTES = 16 << 20


class RemoteLane:
    """The main process's end of the lane: ``advance`` per batch, ``poll`` for records, then
    ``announce_finish`` and ``finish`` once."""

    MAX_LAG = 4  # shares sent but not yet answered

    def __init__(self, salt: bytes, artifact_root: Path | None, dpi: bool) -> None:
        # A fresh interpreter (``python -m lawtap.streams.lane FD``), not fork (this process
        # runs threads) nor multiprocessing's spawn (which re-runs the caller's __main__),
        # talking over a socket pair: messages with multiprocessing's framing, and each share's
        # arrays as raw bytes after its message (no pickling, no copies but the socket's).
        ours, theirs = socket.socketpair()
        with theirs:
            self._proc = subprocess.Popen([sys.executable, "-m", "lawtap.streams.lane", str(theirs.fileno())],
                                          pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                          start_new_session=True)  # Ctrl-C reaches the main process only
        # Room for a whole share in the socket (as far as net.core.wmem_max allows): sending
        # then rarely waits for the lane's receiving thread, which needs the GIL to take it.
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        self._raw = ours
        self._conn = Connection(os.dup(ours.fileno()))
        self._broken: BaseException | None = None
        self._finishing = False  # "finish" sent
        self.granted = 0  # shares sent
        self.answered = 0  # shares the lane has answered
        self.services: dict[int, str] = {}  # fid -> service, of the lane's flows that ended
        self._inbox: list[tuple[str, pa.RecordBatch]] = []  # records received, not yet taken
        # Messages leave in order from a thread of their own, which also cuts the shares: the
        # main thread, which every batch waits for, only queues them.
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._pump, name="lawtap-lane-sender", daemon=True)
        self._sender.start()
        self._send((salt, str(artifact_root) if artifact_root is not None else None, dpi))

    def _send(self, message: tuple, make_share: Callable[[], Share] | None = None) -> None:
        """Queue a message (and the share ``make_share`` cuts, whose arrays follow it)."""
        self._outbox.put((message, make_share))

    def _pump(self) -> None:
        while (item := self._outbox.get()) is not None:
            message, make_share = item
            if self._broken is not None:
                continue
            try:
                arrays: tuple[np.ndarray, ...] = ()
                if make_share is not None:
                    share = make_share()
                    message += (len(share.PF), len(share.data), share.handovers, share.ended, share.last_ts)
                    arrays = share.arrays()
                self._conn.send(message)
                for a in arrays:
                    if a.nbytes:
                        self._raw.sendall(memoryview(a).cast("B"))
            except BaseException as e:  # noqa: BLE001 - reported by poll or finish
                self._broken = e  # (the worker died, or a share could not be cut)

    def advance(self, make_share: Callable[[], Share]) -> None:
        """Send the lane its share of the batch this process has just analyzed (cut by
        ``make_share`` on the sending thread).

        At most ``MAX_LAG`` shares ahead of the lane's answers: a lane slower than this
        process (a mail-heavy capture) would otherwise pile up shares in its memory, and this
        process the conn rows it holds for the lane; here it waits for the lane instead.
        """
        with sigint_deferred():  # (Ctrl-C must not cost the lane a batch this process analyzed)
            if self._broken is None:
                try:
                    while self.granted - self.answered >= self.MAX_LAG:
                        self._await_message()
                        self._receive()
                except (OSError, EOFError) as e:
                    raise self._failed(f"{e} (exit code {self._wait()})") from None
            self.granted += 1
            self._send(("go", self.granted), make_share)

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
            elif message[0] == "last":  # ("last", records, services): what it made at the end
                self._inbox += _unpack(message[1])
                self.services.update(message[2])
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

    def announce_finish(self, handovers: list, ended: list[int]) -> None:
        """Tell the lane the run ends after the shares sent (``handovers``: the TCP flows DPI
        handed over at the end; ``ended``: the flows the table ended last), so that it
        finishes while this process does the same."""
        if not self._finishing:
            self._finishing = True
            self._send(("finish", self.granted, handovers, ended))

    def finish(self) -> list[tuple[str, pa.RecordBatch]]:
        """End the lane (if :meth:`announce_finish` has not yet), wait for its last records and
        return them (its artifacts may still be being written: :meth:`wait_done`)."""
        self.announce_finish([], [])
        self._await("last")
        return self._take_inbox()

    def wait_done(self) -> None:
        """Wait until the lane has written its last artifact and ended (raises if it failed)."""
        try:
            self._await("done")
        finally:
            self._close_sockets()
        self._wait()

    def _await(self, kind: str) -> None:
        try:
            if self._broken is not None:
                raise self._broken
            while self._receive_kind() != kind:
                pass
        except (OSError, EOFError) as e:
            self._close_sockets()
            raise self._failed(f"{e} (exit code {self._wait()})") from None

    def _receive_kind(self) -> str:
        self._await_message()
        return self._receive()

    def _close_sockets(self) -> None:
        self._outbox.put(None)
        self._sender.join(timeout=10)
        if not self._conn.closed:
            self._conn.close()
        self._raw.close()

    def _wait(self) -> int | None:
        try:
            return self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return self._proc.wait()

    def close(self) -> None:
        """Stop the worker if it is still running (after an error in the main process)."""
        if self._proc.poll() is None:
            self._close_sockets()
            self._proc.terminate()
            self._wait()


def _worker_main(fd: int) -> None:
    """The lane's process: an Analyzer in the lane's role, fed by the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when the run ends
    conn = Connection(fd)
    raw = socket.socket(fileno=os.dup(fd))
    try:
        from lawtap.nopandas import keep_pandas_out

        keep_pandas_out()
        salt, artifact_root, dpi = conn.recv()
        _serve(conn, raw, salt, Path(artifact_root) if artifact_root is not None else None, dpi)
    except BaseException:  # noqa: BLE001 - reported to the main process as one line
        try:
            conn.send(("error", traceback.format_exc(limit=3).strip().splitlines()[-1]))
        except (OSError, EOFError):
            pass
    finally:
        conn.close()
        raw.close()


class _Grants:
    """The lane's view of the main process's progress: the shares it has sent.

    A thread takes the main process's messages as they come, so its sends never wait on the
    lane: both processes send whole batches (shares one way, records the other), and if each
    waited for the other to read, with both socket buffers full, neither would. Shares are
    received into ``MAX_LAG + 2`` buffers in turn: the main process sends share ``k`` only once
    the lane has answered share ``k - MAX_LAG``, so the buffer share ``k`` reuses is free.
    """

    def __init__(self, conn: Connection, raw: socket.socket) -> None:
        self._conn = conn
        self._raw = raw
        self._buffers = [np.empty(0, dtype=np.uint8)] * (RemoteLane.MAX_LAG + 2)
        self._cond = threading.Condition()
        self._shares: dict[int, Share] = {}  # share number -> share
        self.final: tuple[list, list[int]] | None = None  # set by "finish": (hand-overs, flows ended)
        self.final_count: int | None = None  # the shares the run sent
        self._lost: BaseException | None = None  # the main process went away
        threading.Thread(target=self._listen, name="lawtap-grants", daemon=True).start()

    def _receive_share(self, k: int, n: int, m: int, handovers: list, ended: list[int], last_ts: int) -> Share:
        size = n * ROW_BYTES + m
        slot = k % len(self._buffers)
        if self._buffers[slot].shape[0] < size:
            self._buffers[slot] = np.empty(size + size // 4, dtype=np.uint8)
        buf = self._buffers[slot]
        _recv_exactly(self._raw, memoryview(buf)[:size])
        return Share.view(buf, n, m, handovers, ended, last_ts)

    def _listen(self) -> None:
        try:
            while self.final is None:
                message = self._conn.recv()
                if message[0] == "go":  # ("go", k, rows, payload bytes, handovers, ended, last_ts)
                    share = self._receive_share(*message[1:])
                    with self._cond:
                        self._shares[message[1]] = share
                        self._cond.notify_all()
                else:  # ("finish", shares sent, handovers, ended)
                    with self._cond:
                        self.final = (message[2], message[3])
                        self.final_count = message[1]
                        self._cond.notify_all()
        except (OSError, EOFError) as e:
            with self._cond:
                self._lost = e
                self._cond.notify_all()

    def wait_for(self, k: int) -> Share | None:
        """Block until share ``k`` (1-based) is here and return it; None if the run ends before."""
        with self._cond:
            while k not in self._shares:
                if self.final is not None:
                    return None
                if self._lost is not None:
                    raise self._lost
                self._cond.wait()
            return self._shares.pop(k)

    def wait_final(self) -> tuple[list, list[int]]:
        """Block until the run ends; the TCP flows handed over at the end, the flows ended last."""
        with self._cond:
            while self.final is None:
                if self._lost is not None:
                    raise self._lost
                self._cond.wait()
            return self.final


def _serve(conn: Connection, raw: socket.socket, salt: bytes, artifact_root: Path | None, dpi: bool) -> None:
    from lawtap.pipeline import Analyzer, tune_gc_for_a_run

    classify = None
    if dpi:
        from lawtap.dpi import classify
    analyzer = Analyzer(salt, [], classify=classify, artifact_root=artifact_root, role="lane")
    tune_gc_for_a_run()
    grants = _Grants(conn, raw)
    services = analyzer.dispatcher.services

    def answer(k: int, out: list, ended: list[int]) -> None:
        # The services of the flows that ended (for their conn records, which the main
        # process writes); DPI's answers for flows still going stay here.
        named = {fid: services.pop(fid) for fid in ended if fid in services}
        conn.send(("batch", k, _pack(out), named))

    try:
        k = 0
        while (share := grants.wait_for(k + 1)) is not None:
            k += 1
            answer(k, list(analyzer.process_share(share)), share.ended)
        handovers, ended = grants.wait_final()
        out = list(analyzer.finish(ended, handovers))
        # Every flow has ended now. The records go before the last artifacts are written, so
        # the main process writes them meanwhile.
        conn.send(("last", _pack(out), dict(services)))
    finally:
        analyzer.close()
    conn.send(("done",))


if __name__ == "__main__":
    _worker_main(int(sys.argv[1]))
