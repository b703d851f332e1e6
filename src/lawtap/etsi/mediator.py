"""The mediator's delivery side: per agency, HI2 (IRI) and HI3 (CC) over TCP, exactly once.

Each handover interface of an agency is a :class:`Handover`: a :class:`DurableQueue`, the
sequence counters of its streams, and one sender thread holding a TCP (optionally TLS)
connection to the LEMF. The pieces and why:

* **Sequence numbers** are assigned when a PDU is *enqueued*, per (LIID, CIN) of the interface
  (so IRI and CC of one communication count separately, as OpenLI does), and they live in the
  queue itself: on restart the counters are rebuilt from the checkpoint plus the PDUs still on
  disk. A PDU that never reached the disk was never sent either, so its number is reused by the
  next PDU and the LEMF sees no gap.
* **Durable before sent**: the sender flushes the queue (fsync by default) before reading from
  it, so nothing that left the process can be renumbered after a crash.
* **Acknowledgement**: TCP alone cannot tell what the LEMF kept when it died. The sender sends a
  TRI ``pDUAcknowledgementRequest`` (TS 102 232-1 clause 6.3.6, *verify the exact semantics
  against the spec text*) after each burst; the LEMF answers ``pDUAcknowledgementResponse``
  with the same sequence number once everything before it is stored. Only then is the queue
  committed. After a reconnect the sender resends from the commit point; the LEMF drops what it
  already holds by (LIID, CIN, sequence number). For a LEMF that does not answer, set
  ``require_ack=False`` (commit on send: a LEMF crash can then lose what was in flight).
* **Keep-alive** (clause 6.3.4): a TRI keep-alive after ``keepalive_interval`` seconds without
  traffic; no keep-aliveResponse within ``keepalive_wait`` closes the connection.
* **Reconnection** (clause 6.3.2): reconnect at once, then back off exponentially (with
  jitter) up to ``retry_max`` seconds while the LEMF stays unreachable.
"""

from __future__ import annotations

import json
import logging
import random
import select
import socket
import ssl
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lawtap.errors import LawtapError
from lawtap.etsi.pdu import (
    DEFAULT_PARAMS,
    F_KIND,
    F_LIID_LEN,
    F_LIID_OFF,
    F_CIN,
    F_SEQ,
    F_STATUS,
    F_SUB,
    KIND_TRI,
    SCAN_DESYNC,
    SEQ_MODULUS,
    STATUS_BAD,
    STATUS_OK,
    TRI_ACK_REQUEST,
    TRI_ACK_RESPONSE,
    TRI_KEEPALIVE,
    TRI_KEEPALIVE_RESPONSE,
    HeaderParams,
    IpccTemplate,
    as_u8,
    peek,
    ps_pdu_ipcc,
    ps_pdu_tri,
    scan,
)
from lawtap.etsi.queue import DurableQueue

log = logging.getLogger("lawtap.etsi.mediator")

HI2, HI3 = "hi2", "hi3"


class MediatorError(LawtapError):
    """Configuration or state problems of the mediator."""


class _SessionEnded(Exception):
    """The connection must be closed and reopened (reason in the message)."""


@dataclass(frozen=True)
class Endpoint:
    """A LEMF handover address."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``HOST:PORT`` (IPv6 as ``[addr]:port``)."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise MediatorError(f"not HOST:PORT: {text!r}")
        return cls(host.strip("[]") or "127.0.0.1", int(port))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class AgencyConfig:
    """One receiving agency: its HI2/HI3 endpoints and the handover behaviour towards it.

    Defaults follow OpenLI's (keep-alive every 300 s when idle, 30 s to answer). ``params`` fills
    the PSHeaders (operator and network element ids, country codes).
    """

    agency_id: str
    hi2: Endpoint
    hi3: Endpoint
    params: HeaderParams = DEFAULT_PARAMS
    tls: ssl.SSLContext | None = None
    tls_server_name: str | None = None
    keepalive_interval: float = 300.0  # 0 = never
    keepalive_wait: float = 30.0
    keepalive_liid: bytes = b"lawtap-mediator"
    require_ack: bool = True
    ack_interval: float = 0.25
    ack_bytes: int = 8 << 20
    ack_wait: float = 30.0
    retry_initial: float = 0.05
    retry_max: float = 30.0
    connect_timeout: float = 5.0
    send_timeout: float = 30.0
    chunk_bytes: int = 4 << 20
    linger: float = 0.002

    def __post_init__(self) -> None:
        if not self.agency_id or "/" in self.agency_id or self.agency_id.startswith("."):
            raise MediatorError(f"agency id {self.agency_id!r} cannot name a directory")


# ---------------------------------------------------------------------------------------------
# Sequence numbers
# ---------------------------------------------------------------------------------------------


class SequenceAllocator:
    """Next sequence number per (LIID, CIN) of one handover interface."""

    def __init__(self) -> None:
        self._next: dict[tuple[bytes, int], int] = {}

    def take(self, key: tuple[bytes, int], count: int = 1) -> int:
        """Reserve ``count`` consecutive numbers (mod 2^32); returns the first."""
        first = self._next.get(key, 0)
        self._next[key] = (first + count) % SEQ_MODULUS
        return first

    def peek(self, key: tuple[bytes, int]) -> int:
        """The number the next PDU of ``key`` will get."""
        return self._next.get(key, 0)

    def observe(self, key: tuple[bytes, int], seq: int) -> None:
        """A PDU with ``seq`` is on disk (recovery scans go in queue order: the last one wins)."""
        self._next[key] = (seq + 1) % SEQ_MODULUS

    def to_bytes(self) -> bytes:
        """Checkpoint form (JSON)."""
        out: dict[str, dict[str, int]] = {}
        for (liid, cin), nxt in self._next.items():
            out.setdefault(liid.hex(), {})[str(cin)] = nxt
        return json.dumps(out, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, blob: bytes | None) -> SequenceAllocator:
        """Inverse of :meth:`to_bytes` (empty allocator for None)."""
        alloc = cls()
        if blob:
            try:
                data = json.loads(blob)
                for liid, cins in data.items():
                    for cin, nxt in cins.items():
                        alloc._next[(bytes.fromhex(liid), int(cin))] = int(nxt) % SEQ_MODULUS
            except (ValueError, AttributeError, TypeError) as e:
                raise MediatorError(f"sequence checkpoint is damaged: {e}") from None
        return alloc


def _recover_sequences(queue: DurableQueue) -> SequenceAllocator:
    """Counters from the checkpoint, advanced by every PDU still on disk (oldest first)."""
    alloc = SequenceAllocator.from_bytes(queue.checkpoint())
    pos = queue.start
    while pos < queue.end:
        data, n, pos = queue.read(pos, 8 << 20)
        res = scan(data, max_pdus=max(n, 1))
        if len(res.info) != n:
            raise MediatorError(f"queue {queue.dir}: holds records that are not PS-PDUs")
        info = res.info
        for i in range(n):
            row = info[i]
            if row[F_STATUS] == STATUS_BAD:
                raise MediatorError(f"queue {queue.dir}: holds a malformed PS-PDU")
            lo, ll = int(row[F_LIID_OFF]), int(row[F_LIID_LEN])
            if lo < 0:  # schema-decoded fallback (SLOW rows)
                hdr = peek(data[int(row[0]):int(row[1])].tobytes())
                alloc.observe((hdr.liid, -1 if hdr.cin is None else hdr.cin), hdr.seq)
                continue
            alloc.observe((data[lo:lo + ll].tobytes(), int(row[F_CIN])), int(row[F_SEQ]))
    return alloc


# ---------------------------------------------------------------------------------------------
# One handover interface
# ---------------------------------------------------------------------------------------------


@dataclass
class HandoverStats:
    """Counters for operators and tests."""

    enqueued: int = 0
    sent_pdus: int = 0
    resent_bytes: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    keepalives_sent: int = 0
    keepalive_responses: int = 0
    acks_requested: int = 0
    acks_received: int = 0
    last_error: str = ""
    connected: bool = False
    history: list[str] = field(default_factory=list)

    def note(self, event: str) -> None:
        self.history.append(event)
        del self.history[:-50]


class Handover:
    """Queue, sequence counters and sender thread of one agency interface (HI2 or HI3)."""

    def __init__(self, agency: AgencyConfig, interface: str, directory: Path, *, fsync: bool = True,
                 segment_bytes: int = 64 << 20) -> None:
        self.agency = agency
        self.interface = interface
        self.endpoint = agency.hi2 if interface == HI2 else agency.hi3
        self.queue = DurableQueue(directory, fsync=fsync, segment_bytes=segment_bytes)
        self._lock = threading.Lock()
        self.sequences = _recover_sequences(self.queue)
        self.queue.set_checkpoint(self._checkpoint)
        self.stats = HandoverStats()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._woken = False
        self._thread: threading.Thread | None = None
        self._tri_seq = 0
        self._sock: socket.socket | None = None
        self._flush_bytes = 4 << 20
        self._pending_bytes = 0

    def _checkpoint(self) -> bytes:
        with self._lock:
            return self.sequences.to_bytes()

    # -- producer side -----------------------------------------------------------------------

    def submit(self, liid: bytes, cin: int, build: Callable[[int], bytes], *, sync: bool = False) -> int:
        """Give the next sequence number of (LIID, CIN) to ``build`` and enqueue its PDU."""
        key = (bytes(liid), int(cin))
        with self._lock:
            seq = self.sequences.peek(key)
            pdu = build(seq)  # may raise: then the number is not consumed
            self.sequences.take(key)
            self.queue.append(pdu)
            self.stats.enqueued += 1
            self._pending_bytes += len(pdu)
            big = self._pending_bytes >= self._flush_bytes
        if sync or big:
            self.flush()
        self.wake()
        return seq

    def submit_ipcc_batch(self, template: IpccTemplate, ts_ns: np.ndarray, data: np.ndarray,
                          offset: np.ndarray, length: np.ndarray, direction: np.ndarray | None = None,
                          *, sync: bool = False) -> int:
        """Encode and enqueue many IP CC PDUs of one (LIID, CIN) in one go; returns the first number."""
        n = int(np.asarray(offset).shape[0])
        if n == 0:
            return self.sequences.peek((template.liid, template.cin))
        key = (template.liid, template.cin)
        with self._lock:
            seq0 = self.sequences.peek(key)
            buf, _ends = template.encode_batch(seq0, ts_ns, data, offset, length, direction, length_prefix=True)
            self.sequences.take(key, n)
            self.queue.append_records(buf, n)
            self.stats.enqueued += n
            self._pending_bytes += buf.nbytes
            big = self._pending_bytes >= self._flush_bytes
        if sync or big:
            self.flush()
        self.wake()
        return seq0

    def flush(self) -> None:
        """Make enqueued PDUs durable now."""
        with self._lock:
            self._pending_bytes = 0
        self.queue.flush()

    def wake(self) -> None:
        """Tell the sender there is something to do (cheap when it already knows)."""
        if not self._woken:
            self._woken = True
            try:
                self._wake_w.send(b"\0")
            except (BlockingIOError, OSError):
                pass

    @property
    def backlog(self) -> int:
        """Bytes on disk not yet acknowledged by the LEMF (plus any unflushed PDUs)."""
        return self.queue.end - self.queue.committed + (1 if self.queue.pending else 0)

    # -- sender thread -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the sender thread."""
        if self._thread is None:
            name = f"lawtap-{self.agency.agency_id}-{self.interface}"
            self._thread = threading.Thread(target=self._run, name=name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending (the queue keeps whatever was not acknowledged)."""
        self._stop.set()
        self.wake()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # unblock a sendall stuck on a stalled LEMF
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.queue.close()
        self._wake_r.close()
        self._wake_w.close()

    def _run(self) -> None:
        cfg = self.agency
        delay = cfg.retry_initial
        while not self._stop.is_set():
            self.flush()
            try:
                sock = self._connect()
            except OSError as e:
                self.stats.connect_failures += 1
                self.stats.last_error = f"connect {self.endpoint}: {e}"
                self._sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, cfg.retry_max)
                continue
            self._sock = sock
            self.stats.connects += 1
            self.stats.connected = True
            self.stats.note(f"connected {self.endpoint}")
            started = time.monotonic()
            try:
                self._session(sock)
            except (_SessionEnded, OSError, ssl.SSLError) as e:
                self.stats.last_error = str(e) or type(e).__name__
                self.stats.note(f"disconnected: {self.stats.last_error}")
                log.info("%s %s: %s", cfg.agency_id, self.interface, self.stats.last_error)
            finally:
                self._sock = None
                self.stats.connected = False
                self.stats.disconnects += 1
                try:
                    sock.close()
                except OSError:
                    pass
            if self._stop.is_set():
                break
            if time.monotonic() - started > 5.0:
                delay = cfg.retry_initial  # a healthy session: reconnect at once
            else:
                self._sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, cfg.retry_max)

    def _sleep(self, seconds: float) -> None:
        """Wait, but keep producers' PDUs going to disk while the LEMF is away."""
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, 0.05))
            self.flush()

    def _connect(self) -> socket.socket:
        cfg = self.agency
        sock = socket.create_connection((self.endpoint.host, self.endpoint.port), timeout=cfg.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if cfg.tls is not None:
                sock = cfg.tls.wrap_socket(sock, server_hostname=cfg.tls_server_name or self.endpoint.host)
            sock.settimeout(cfg.send_timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    def _tri(self, sock: socket.socket, kind: int) -> int:
        seq = self._tri_seq
        self._tri_seq = (seq + 1) % SEQ_MODULUS
        sock.sendall(ps_pdu_tri(kind, self.agency.keepalive_liid, seq, time.time_ns(), self.agency.params))
        return seq

    def _session(self, sock: socket.socket) -> None:
        cfg = self.agency
        q = self.queue
        pos = q.committed
        resend_until = q.end
        acks: deque[tuple[int, int, float]] = deque()  # (tri seq, queue position, sent at)
        requested_pos = pos
        last_request = time.monotonic()
        last_tx = time.monotonic()
        keepalive: tuple[int, float] | None = None  # (tri seq, deadline)
        inbuf = bytearray()
        while not self._stop.is_set():
            now = time.monotonic()
            q.flush()
            with self._lock:
                self._pending_bytes = 0
            if pos < q.end:
                data, n, nxt = q.read(pos, cfg.chunk_bytes)
                sock.sendall(memoryview(data))
                if pos < resend_until:
                    self.stats.resent_bytes += min(nxt, resend_until) - pos
                pos = nxt
                self.stats.sent_pdus += n
                last_tx = time.monotonic()
                if not cfg.require_ack:
                    q.commit(pos)
                    requested_pos = pos
                elif pos - requested_pos >= cfg.ack_bytes or last_tx - last_request >= cfg.ack_interval:
                    acks.append((self._tri(sock, TRI_ACK_REQUEST), pos, last_tx))
                    self.stats.acks_requested += 1
                    requested_pos, last_request = pos, last_tx
                timeout = 0.0
            else:
                if cfg.require_ack and pos > requested_pos:
                    acks.append((self._tri(sock, TRI_ACK_REQUEST), pos, now))
                    self.stats.acks_requested += 1
                    requested_pos, last_request = pos, now
                    last_tx = now
                if cfg.keepalive_interval > 0 and keepalive is None and now - last_tx >= cfg.keepalive_interval:
                    keepalive = (self._tri(sock, TRI_KEEPALIVE), now + cfg.keepalive_wait)
                    self.stats.keepalives_sent += 1
                    last_tx = now
                deadlines = [0.5]
                if cfg.keepalive_interval > 0:
                    deadlines.append(max(0.0, last_tx + cfg.keepalive_interval - now))
                if keepalive is not None:
                    deadlines.append(max(0.0, keepalive[1] - now))
                timeout = min(deadlines)
            pending = getattr(sock, "pending", None)
            if pending is not None and pending():
                readable = [sock]
            else:
                readable, _, _ = select.select([sock, self._wake_r], [], [], timeout)
            if self._wake_r in readable:
                self._woken = False
                try:
                    while self._wake_r.recv(4096):
                        pass
                except (BlockingIOError, OSError):
                    pass
                if timeout > 0 and cfg.linger > 0:
                    # Woken from idle by a producer: let a few more PDUs arrive so that one
                    # flush, one send and one LEMF pass carry many (Nagle's idea, bounded).
                    time.sleep(cfg.linger)
            if sock in readable:
                # Non-blocking read: with TLS, "readable" may only mean a session ticket or half
                # a record, and a blocking recv would then wait for application data.
                sock.settimeout(0.0)
                try:
                    chunk = sock.recv(65536)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    chunk = None
                finally:
                    sock.settimeout(cfg.send_timeout)
                if chunk == b"":
                    raise _SessionEnded("LEMF closed the connection")
                if chunk:
                    inbuf += chunk
                    keepalive = self._responses(inbuf, acks, keepalive)
            now = time.monotonic()
            if keepalive is not None and now > keepalive[1]:
                raise _SessionEnded(f"no keep-aliveResponse within {cfg.keepalive_wait:g} s")
            if acks and now - acks[0][2] > cfg.ack_wait:
                raise _SessionEnded(f"no pDUAcknowledgementResponse within {cfg.ack_wait:g} s")

    def _responses(self, inbuf: bytearray, acks: deque[tuple[int, int, float]],
                   keepalive: tuple[int, float] | None) -> tuple[int, float] | None:
        """Handle whole PDUs from the LEMF; returns the keep-alive still outstanding."""
        res = scan(bytes(inbuf))
        if res.state == SCAN_DESYNC:
            raise _SessionEnded("LEMF sent bytes that are not PS-PDUs")
        del inbuf[:res.consumed]
        for row in res.info:
            if row[F_STATUS] != STATUS_OK or row[F_KIND] != KIND_TRI:
                self.stats.note("ignored a PDU from the LEMF that is not a TRI response")
                continue
            seq, sub = int(row[F_SEQ]), int(row[F_SUB])
            if sub == TRI_KEEPALIVE_RESPONSE and keepalive is not None and seq == keepalive[0]:
                keepalive = None
                self.stats.keepalive_responses += 1
            elif sub == TRI_ACK_RESPONSE:
                committed = None
                while acks and acks[0][0] != seq:
                    acks.popleft()  # an older request without its own answer is covered by this one
                if acks:
                    committed = acks.popleft()[1]
                if committed is not None:
                    self.queue.commit(committed)
                    self.stats.acks_received += 1
        return keepalive


# ---------------------------------------------------------------------------------------------
# The mediator
# ---------------------------------------------------------------------------------------------


class Mediator:
    """Encodes and delivers PS-PDUs to every configured agency.

    State lives in ``state_dir/<agency>/<hi2|hi3>/`` (durable queues). The collector calls the
    ``submit_*`` methods; sequence numbers are returned for its records and for audit.
    """

    def __init__(self, state_dir: str | Path, agencies: list[AgencyConfig], *, fsync: bool = True,
                 start: bool = True, segment_bytes: int = 64 << 20, template_cache: int = 4096) -> None:
        self.state_dir = Path(state_dir)
        self.agencies = {a.agency_id: a for a in agencies}
        if len(self.agencies) != len(agencies):
            raise MediatorError("agency ids must be unique")
        self._handovers: dict[tuple[str, str], Handover] = {}
        for a in agencies:
            for hi in (HI2, HI3):
                self._handovers[(a.agency_id, hi)] = Handover(
                    a, hi, self.state_dir / a.agency_id / hi, fsync=fsync, segment_bytes=segment_bytes)
        self._templates: OrderedDict[tuple[str, bytes, int, HeaderParams], IpccTemplate] = OrderedDict()
        self._template_cache = template_cache
        if start:
            self.start()

    def handover(self, agency_id: str, interface: str) -> Handover:
        """The HI2 or HI3 :class:`Handover` of an agency."""
        try:
            return self._handovers[(agency_id, interface)]
        except KeyError:
            raise MediatorError(f"no agency {agency_id!r} (or no interface {interface!r})") from None

    def start(self) -> None:
        """Start every sender thread."""
        for h in self._handovers.values():
            h.start()

    def stop(self) -> None:
        """Stop senders and close queues; unacknowledged PDUs stay on disk for the next start."""
        for h in self._handovers.values():
            h.stop()

    def __enter__(self) -> Mediator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- submitting --------------------------------------------------------------------------

    def _params(self, agency_id: str, params: HeaderParams | None) -> HeaderParams:
        if params is not None:
            return params
        try:
            return self.agencies[agency_id].params
        except KeyError:
            raise MediatorError(f"no agency {agency_id!r}") from None

    def submit(self, agency_id: str, interface: str, builder: Callable[..., bytes], liid: bytes | str,
               cin: int, ts_ns: int, *args: Any, params: HeaderParams | None = None, sync: bool = False,
               **kwargs: Any) -> int:
        """Enqueue ``builder(liid, cin, seq, ts_ns, *args, params=..., **kwargs)`` — any
        ``lawtap.etsi.pdu.ps_pdu_*`` builder — on HI2 or HI3; returns its sequence number."""
        p = self._params(agency_id, params)
        lb = liid.encode() if isinstance(liid, str) else bytes(liid)
        return self.handover(agency_id, interface).submit(
            lb, cin, lambda seq: builder(lb, cin, seq, ts_ns, *args, params=p, **kwargs), sync=sync)

    def submit_iri(self, agency_id: str, builder: Callable[..., bytes], liid: bytes | str, cin: int,
                   ts_ns: int, *args: Any, **kwargs: Any) -> int:
        """An IRI PDU on HI2 (see :meth:`submit`)."""
        return self.submit(agency_id, HI2, builder, liid, cin, ts_ns, *args, **kwargs)

    def submit_cc(self, agency_id: str, builder: Callable[..., bytes], liid: bytes | str, cin: int,
                  ts_ns: int, *args: Any, **kwargs: Any) -> int:
        """A CC PDU on HI3 (see :meth:`submit`)."""
        return self.submit(agency_id, HI3, builder, liid, cin, ts_ns, *args, **kwargs)

    def template(self, agency_id: str, liid: bytes | str, cin: int, params: HeaderParams | None = None) -> IpccTemplate:
        """The cached IP CC template of (agency, LIID, CIN)."""
        p = self._params(agency_id, params)
        lb = liid.encode() if isinstance(liid, str) else bytes(liid)
        key = (agency_id, lb, int(cin), p)
        t = self._templates.get(key)
        if t is None:
            t = IpccTemplate(lb, cin, p)
            self._templates[key] = t
            if len(self._templates) > self._template_cache:
                self._templates.popitem(last=False)
        else:
            self._templates.move_to_end(key)
        return t

    def submit_ipcc(self, agency_id: str, liid: bytes | str, cin: int, ts_ns: int, packet: bytes,
                    direction: int | None, *, params: HeaderParams | None = None, sync: bool = False) -> int:
        """One IP CC PDU on HI3 via the template path; returns its sequence number."""
        if self._params(agency_id, params).timestamp != "microseconds":  # no template: schema encoder
            return self.submit(agency_id, HI3, ps_pdu_ipcc, liid, cin, ts_ns, packet, direction,
                               params=params, sync=sync)
        t = self.template(agency_id, liid, cin, params)
        return self.handover(agency_id, HI3).submit(
            t.liid, t.cin, lambda seq: t.encode(seq, ts_ns, packet, direction), sync=sync)

    def submit_ipcc_batch(self, agency_id: str, liid: bytes | str, cin: int, ts_ns: np.ndarray,
                          data: np.ndarray, offset: np.ndarray, length: np.ndarray,
                          direction: np.ndarray | None = None, *, params: HeaderParams | None = None,
                          sync: bool = False) -> int:
        """Many IP CC PDUs of one (LIID, CIN) on HI3 in one numba call; returns the first number."""
        if self._params(agency_id, params).timestamp != "microseconds":
            buf = as_u8(data)
            dirs = [None] * len(offset) if direction is None else [None if d < 0 else int(d) for d in direction]
            seqs = [self.submit_ipcc(agency_id, liid, cin, int(t), buf[int(o):int(o) + int(n)].tobytes(), d,
                                     params=params, sync=sync)
                    for t, o, n, d in zip(ts_ns, offset, length, dirs)]
            return seqs[0] if seqs else self.handover(agency_id, HI3).sequences.peek(
                (liid.encode() if isinstance(liid, str) else bytes(liid), int(cin)))
        t = self.template(agency_id, liid, cin, params)
        return self.handover(agency_id, HI3).submit_ipcc_batch(
            t, ts_ns, as_u8(data), offset, length, direction, sync=sync)

    # -- state -------------------------------------------------------------------------------

    def flush(self) -> None:
        """Make everything submitted so far durable."""
        for h in self._handovers.values():
            h.flush()

    def delivered(self) -> bool:
        """True when every submitted PDU was acknowledged by its LEMF."""
        return all(h.queue.pending == 0 and h.queue.committed == h.queue.end for h in self._handovers.values())

    def wait_delivered(self, timeout: float) -> bool:
        """Wait until :meth:`delivered` (True) or ``timeout`` seconds pass (False)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.delivered():
                return True
            time.sleep(0.01)
        return self.delivered()

    def status(self) -> dict[str, dict[str, Any]]:
        """Per interface: counters, queue positions, connection state."""
        out: dict[str, dict[str, Any]] = {}
        for (agency, hi), h in self._handovers.items():
            s = h.stats
            out[f"{agency}/{hi}"] = {
                "endpoint": str(h.endpoint), "connected": s.connected, "enqueued": s.enqueued,
                "sent_pdus": s.sent_pdus, "resent_bytes": s.resent_bytes, "backlog_bytes": h.backlog,
                "connects": s.connects, "connect_failures": s.connect_failures,
                "keepalives_sent": s.keepalives_sent, "keepalive_responses": s.keepalive_responses,
                "acks_requested": s.acks_requested, "acks_received": s.acks_received,
                "last_error": s.last_error,
            }
        return out


def agency_for(agency_id: str, hi2: str, hi3: str | None = None, **options: Any) -> AgencyConfig:
    """Convenience: an :class:`AgencyConfig` from ``HOST:PORT`` strings (HI3 defaults to HI2's)."""
    a = AgencyConfig(agency_id, Endpoint.parse(hi2), Endpoint.parse(hi3 or hi2))
    return replace(a, **options) if options else a
