"""Live capture through libpcap (ctypes), yielding the same PacketBatches as the file readers.

Strictly passive: the handle is opened non-promiscuous by default, a BPF filter is compiled in
the kernel so that only the warranted traffic ever reaches us, and nothing is ever sent. We use
non-blocking ``pcap_next_ex`` behind ``select`` with a short timeout, so ``stop()``, a
``duration`` or Ctrl-C end the capture within ~50 ms and the last partial batch is still
delivered. Drops reported by the kernel become a ``live_dropped_packets`` weird: an
interception record must say when it is incomplete.

Per-packet work here is one ctypes call and one memmove; fine for a live link, and the only
place in the sources layer where Python touches each packet.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lawtap.errors import LawtapError
from lawtap.sources.batch import PacketBatch, ReaderWeird
from lawtap.sources.open import DEFAULT_MAX_BYTES
from lawtap.sources.writer import PcapWriter

FLUSH_INTERVAL_S = 0.2
FLUSH_PACKETS = 4096
POLL_S = 0.05
KERNEL_BUFFER = 16 << 20
ERRBUF_SIZE = 256

PCAP_ERROR_NO_SUCH_DEVICE = -5
PCAP_ERROR_PERM_DENIED = -8
PCAP_ERROR_IFACE_NOT_UP = -9
PCAP_ERROR_PROMISC_PERM_DENIED = -11
PCAP_TSTAMP_PRECISION_NANO = 1
# DLT values that differ from the LINKTYPE values written to files (pcap-common.c).
_DLT_TO_LINKTYPE = {12: 101, 14: 101}


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _PktHdr(ctypes.Structure):
    _fields_ = [("ts", _Timeval), ("caplen", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class _BpfProgram(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


class _PcapStat(ctypes.Structure):
    _fields_ = [
        ("ps_recv", ctypes.c_uint),
        ("ps_drop", ctypes.c_uint),
        ("ps_ifdrop", ctypes.c_uint),
    ]


_LIB: ctypes.CDLL | None = None


def load_libpcap() -> ctypes.CDLL:
    """Load libpcap once and declare the prototypes we use; LawtapError if it is missing."""
    global _LIB
    if _LIB is not None:
        return _LIB
    names = ["libpcap.so.0.8", "libpcap.so.1", "libpcap.so", ctypes.util.find_library("pcap")]
    lib = None
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        raise LawtapError("live capture needs libpcap (e.g. apt-get install libpcap0.8)")
    vp, i, cp = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    protos = {
        "pcap_create": (vp, [cp, cp]),
        "pcap_set_snaplen": (i, [vp, i]),
        "pcap_set_promisc": (i, [vp, i]),
        "pcap_set_timeout": (i, [vp, i]),
        "pcap_set_immediate_mode": (i, [vp, i]),
        "pcap_set_buffer_size": (i, [vp, i]),
        "pcap_set_tstamp_precision": (i, [vp, i]),
        "pcap_get_tstamp_precision": (i, [vp]),
        "pcap_activate": (i, [vp]),
        "pcap_geterr": (cp, [vp]),
        "pcap_statustostr": (cp, [i]),
        "pcap_compile": (i, [vp, ctypes.POINTER(_BpfProgram), cp, i, ctypes.c_uint32]),
        "pcap_setfilter": (i, [vp, ctypes.POINTER(_BpfProgram)]),
        "pcap_freecode": (None, [ctypes.POINTER(_BpfProgram)]),
        "pcap_setnonblock": (i, [vp, i, cp]),
        "pcap_get_selectable_fd": (i, [vp]),
        "pcap_next_ex": (
            i,
            [vp, ctypes.POINTER(ctypes.POINTER(_PktHdr)), ctypes.POINTER(ctypes.c_void_p)],
        ),
        "pcap_datalink": (i, [vp]),
        "pcap_stats": (i, [vp, ctypes.POINTER(_PcapStat)]),
        "pcap_close": (None, [vp]),
    }
    for fname, (res, args) in protos.items():
        fn = getattr(lib, fname)
        fn.restype, fn.argtypes = res, args
    _LIB = lib
    return lib


class _Handle:
    """An activated, filtered, non-blocking pcap_t; errors are one-line LawtapErrors."""

    def __init__(self, interface: str, bpf_filter: str | None, snaplen: int, promisc: bool):
        lib = self.lib = load_libpcap()
        err = ctypes.create_string_buffer(ERRBUF_SIZE)
        p = lib.pcap_create(interface.encode(), err)
        if not p:
            raise LawtapError(
                f"live capture on {interface!r}: {err.value.decode(errors='replace')}"
            )
        self.p = p
        try:
            lib.pcap_set_snaplen(p, snaplen)
            lib.pcap_set_promisc(p, int(promisc))
            lib.pcap_set_timeout(p, int(POLL_S * 1000))
            lib.pcap_set_immediate_mode(p, 1)
            lib.pcap_set_buffer_size(p, KERNEL_BUFFER)
            lib.pcap_set_tstamp_precision(p, PCAP_TSTAMP_PRECISION_NANO)
            rc = lib.pcap_activate(p)
            if rc < 0:
                raise LawtapError(self._activate_error(interface, rc))
            self.nano = lib.pcap_get_tstamp_precision(p) == PCAP_TSTAMP_PRECISION_NANO
            dlt = lib.pcap_datalink(p)
            self.linktype = _DLT_TO_LINKTYPE.get(dlt, dlt)
            if bpf_filter:
                self._set_filter(interface, bpf_filter)
            if lib.pcap_setnonblock(p, 1, err) < 0:
                raise LawtapError(f"live capture on {interface!r}: {err.value.decode()}")
            self.fd = lib.pcap_get_selectable_fd(p)
        except BaseException:
            self.close()
            raise

    def _activate_error(self, interface: str, rc: int) -> str:
        detail = (self.lib.pcap_geterr(self.p) or b"").decode(errors="replace")
        if rc == PCAP_ERROR_NO_SUCH_DEVICE:
            return f"live capture: no such interface {interface!r}"
        if rc in (PCAP_ERROR_PERM_DENIED, PCAP_ERROR_PROMISC_PERM_DENIED):
            return (
                f"live capture on {interface!r}: permission denied "
                "(run as root or grant CAP_NET_RAW and CAP_NET_ADMIN)"
            )
        if rc == PCAP_ERROR_IFACE_NOT_UP:
            return f"live capture: interface {interface!r} is down"
        status = (self.lib.pcap_statustostr(rc) or b"").decode()
        return f"live capture on {interface!r}: {detail or status}".replace("\n", " ")

    def _set_filter(self, interface: str, bpf_filter: str) -> None:
        prog = _BpfProgram()
        if self.lib.pcap_compile(self.p, ctypes.byref(prog), bpf_filter.encode(), 1, 0) < 0:
            msg = (self.lib.pcap_geterr(self.p) or b"").decode(errors="replace")
            raise LawtapError(f"bad capture filter {bpf_filter!r}: {msg}")
        try:
            if self.lib.pcap_setfilter(self.p, ctypes.byref(prog)) < 0:
                msg = (self.lib.pcap_geterr(self.p) or b"").decode(errors="replace")
                raise LawtapError(f"cannot apply capture filter on {interface!r}: {msg}")
        finally:
            self.lib.pcap_freecode(ctypes.byref(prog))

    def dropped(self) -> int:
        st = _PcapStat()
        if self.lib.pcap_stats(self.p, ctypes.byref(st)) < 0:
            return 0
        return int(st.ps_drop) + int(st.ps_ifdrop)

    def close(self) -> None:
        if self.p:
            self.lib.pcap_close(self.p)
            self.p = None


class LiveSource:
    """Capture from ``interface`` (BPF-filtered) as a stream of PacketBatches.

    Stops on :meth:`stop` (from any thread), after ``max_packets`` packets or ``duration``
    seconds, or on KeyboardInterrupt (then ``interrupted`` is True); the packets already
    captured are always delivered. ``ready`` is set once the capture is active. Each batch is a
    fresh buffer the consumer may keep. With ``save_to`` every packet is also written to that
    pcap file (ns timestamps) and ``file_offset`` points into it (else ``file_offset`` is -1).
    """

    format = "live"
    compressed = False

    def __init__(
        self,
        interface: str,
        bpf_filter: str | None = None,
        snaplen: int = 65535,
        *,
        promisc: bool = False,
        max_packets: int | None = None,
        duration: float | None = None,
        file_id: int = 0,
        save_to: str | os.PathLike[str] | None = None,
    ) -> None:
        self.interface = interface
        self.bpf_filter = bpf_filter
        self.snaplen = snaplen
        self.promisc = promisc
        self.max_packets = max_packets
        self.duration = duration
        self.file_id = file_id
        self.save_to = Path(save_to) if save_to is not None else None
        self.path = self.save_to
        self.linktypes: set[int] = set()
        self.packets = 0
        self.bytes_read = 0
        self.size = 0
        self.interrupted = False
        self.ready = threading.Event()
        self._stop = threading.Event()

    def __repr__(self) -> str:
        return f"LiveSource({self.interface!r}, filter={self.bpf_filter!r})"

    def stop(self) -> None:
        """Ask the capture to end; the current batch is flushed. Safe from any thread."""
        self._stop.set()

    def _done(self, deadline: float | None) -> bool:
        if self._stop.is_set():
            return True
        if self.max_packets is not None and self.packets >= self.max_packets:
            return True
        return deadline is not None and time.monotonic() >= deadline

    def batches(self, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[PacketBatch]:
        """Yield a batch every ~0.2 s (or 4096 packets, or ``max_bytes``) while capturing."""
        self._stop.clear()
        self.packets = self.bytes_read = self.size = 0
        self.interrupted = False
        handle = _Handle(self.interface, self.bpf_filter, self.snaplen, self.promisc)
        self.linktypes.add(handle.linktype)
        writer = None
        try:
            if self.save_to is not None:
                writer = PcapWriter(self.save_to, handle.linktype, nanosecond=True)
            yield from self._capture(handle, writer, max(max_bytes, 2 * self.snaplen))
        finally:
            handle.close()
            if writer is not None:
                writer.close()

    def _capture(
        self, h: _Handle, writer: PcapWriter | None, max_bytes: int
    ) -> Iterator[PacketBatch]:
        lib, p = h.lib, h.p
        hdr_p = ctypes.POINTER(_PktHdr)()
        data_p = ctypes.c_void_p()
        frac_mul = 1 if h.nano else 1000
        deadline = None if self.duration is None else time.monotonic() + self.duration
        batch = _LiveBatch(max_bytes, h.linktype, self.file_id)
        last_flush = time.monotonic()
        weirds: list[ReaderWeird] = []
        self.ready.set()
        try:
            while not self._done(deadline):
                select.select([h.fd], [], [], POLL_S)
                while not self._done(deadline) and batch.has_room(self.snaplen):
                    rc = lib.pcap_next_ex(p, ctypes.byref(hdr_p), ctypes.byref(data_p))
                    if rc == 0:
                        break
                    if rc < 0:
                        msg = (lib.pcap_geterr(p) or b"").decode(errors="replace")
                        weirds.append(ReaderWeird("live_capture_error", -1, msg or f"rc {rc}"))
                        self._stop.set()
                        break
                    hd = hdr_p.contents
                    ts = hd.ts.tv_sec * 1_000_000_000 + hd.ts.tv_usec * frac_mul
                    batch.add(ts, data_p.value, hd.caplen, hd.len)
                    self.packets += 1
                    self.bytes_read += hd.caplen
                now = time.monotonic()
                if batch.n and (
                    now - last_flush >= FLUSH_INTERVAL_S
                    or batch.n >= FLUSH_PACKETS
                    or not batch.has_room(self.snaplen)
                ):
                    yield self._emit(batch, writer, weirds)
                    batch, weirds, last_flush = (
                        _LiveBatch(max_bytes, h.linktype, self.file_id),
                        [],
                        now,
                    )
        except KeyboardInterrupt:
            self.interrupted = True
        dropped = h.dropped()
        if dropped:
            weirds.append(
                ReaderWeird(
                    "live_dropped_packets", -1, f"kernel/interface dropped {dropped} packets"
                )
            )
        if batch.n or weirds:
            yield self._emit(batch, writer, weirds)

    def _emit(
        self, batch: _LiveBatch, writer: PcapWriter | None, weirds: list[ReaderWeird]
    ) -> PacketBatch:
        out = batch.finish(weirds)
        if writer is not None:
            # offsets in the saved file: each record is a 16-byte header then the packet
            sizes = out.caplen.astype(np.int64) + 16
            start = self.size if self.size else 24
            out.file_offset[:] = start + np.cumsum(sizes) - out.caplen
            writer.write_batch(out)
            self.size = start + int(sizes.sum())
        return out


class _LiveBatch:
    """Packets of one live batch, copied into a fresh buffer as they arrive."""

    def __init__(self, max_bytes: int, linktype: int, file_id: int) -> None:
        self.data = np.empty(max_bytes, np.uint8)
        self.addr = self.data.ctypes.data
        self.used = 0
        self.n = 0
        self.linktype = linktype
        self.file_id = file_id
        self.offsets: list[int] = []
        self.caplens: list[int] = []
        self.wirelens: list[int] = []
        self.ts: list[int] = []

    def has_room(self, snaplen: int) -> bool:
        return self.used + snaplen <= self.data.shape[0]

    def add(self, ts: int, src: int | None, caplen: int, wirelen: int) -> None:
        caplen = min(caplen, self.data.shape[0] - self.used)
        if caplen and src:
            ctypes.memmove(self.addr + self.used, src, caplen)
        self.offsets.append(self.used)
        self.caplens.append(caplen)
        self.wirelens.append(min(wirelen, 2**31 - 1))
        self.ts.append(ts)
        self.used += caplen
        self.n += 1

    def finish(self, weirds: list[ReaderWeird]) -> PacketBatch:
        n = self.n
        return PacketBatch(
            data=self.data[: self.used],
            offset=np.array(self.offsets, np.int64),
            caplen=np.array(self.caplens, np.int32),
            wirelen=np.array(self.wirelens, np.int32),
            ts=np.array(self.ts, np.int64),
            linktype=np.full(n, self.linktype, np.int32),
            file_id=np.full(n, self.file_id, np.int16),
            file_offset=np.full(n, -1, np.int64),
            weirds=weirds,
        )
