"""Python side of the flow table: owns the arrays, drains ended flows into conn/tunnel records.

The kernel (:mod:`lawtap.flows.table`) does the per-packet work; this class does the per-flow
work: naming (uid, address strings), Zeek's ``conn_state``, DPI on the payload samples, and
building Arrow record batches.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Sequence
from socket import AF_INET6, inet_ntoa, inet_ntop

import numpy as np
import pyarrow as pa

from lawtap.decode import kernel as dk
from lawtap.flows import table as ft
from lawtap.records import CONN, TUNNEL

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_RSTOS0 = re.compile(r"\^?S[^HAFGIQ]*R.*")
_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp", 132: "sctp"}


_PROTO_LIST = [_PROTO_NAMES.get(p, "unknown_transport") for p in range(256)]  # by IP protocol number
_TUNNEL_SERVICE = {dk.TUN_GTPV1: "gtp-u", dk.TUN_VXLAN: "vxlan", dk.TUN_GRE: "gre", dk.TUN_IP: "ipip"}

ENDED_CAPACITY = 1 << 15
SAMPLE_CAPACITY = 1 << 16
ARENA_BYTES = 16 << 20

Classifier = Callable[[str, int, int, list[bytes], list[bytes]], str]


_B62 = np.frombuffer(_BASE62.encode(), dtype=np.uint8).copy()  # writable: a kernel argument
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_B62_PAIR_BYTES = np.stack([np.tile(_B62, 62), np.repeat(_B62, 62)], axis=1)  # row r: digits r%62, r//62


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a fast, well-spread 64-bit hash (vectorized)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


UID_KERNEL_MIN = 512  # below this, numpy (no kernel to load for a handful of uids)


def make_uids(salt: bytes, fids: np.ndarray, prefix: str = "C") -> pa.Array:
    """Zeek-style uids (``C`` + 17 base62 chars), deterministic for the same input and flow.

    Two salted 64-bit hashes of the flow number give 10 + 7 base62 digits; everything is
    vectorized because a large capture ends hundreds of thousands of flows.
    """
    k1 = np.uint64(int.from_bytes(salt[:8], "little"))
    k2 = np.uint64(int.from_bytes(salt[8:16], "little"))
    if len(fids) >= UID_KERNEL_MIN:  # many flows (a batch's conn records): the same in a kernel
        chars = np.empty((len(fids), 18), dtype=np.uint8)
        ft.uid_chars(np.ascontiguousarray(fids, dtype=np.int64), k1, k2, np.uint8(ord(prefix)), _B62, chars)
        return fixed_width_strings(chars)
    f = np.asarray(fids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        h1 = _mix64(f ^ k1)
        h2 = _mix64(h1 ^ k2 ^ (f * np.uint64(0x9E3779B97F4A7C15)))
    n = f.shape[0]
    chars = np.empty((n, 18), dtype=np.uint8)
    chars[:, 0] = ord(prefix)
    # Two base62 digits per step (least significant first), from a 62*62-entry table.
    pair = np.uint64(62 * 62)
    v = h1 % np.uint64(62**10)
    for k in range(5):
        chars[:, 1 + 2 * k : 3 + 2 * k] = _B62_PAIR_BYTES[(v % pair).astype(np.intp)]
        v //= pair
    v = h2 % np.uint64(62**7)
    for k in range(3):
        chars[:, 11 + 2 * k : 13 + 2 * k] = _B62_PAIR_BYTES[(v % pair).astype(np.intp)]
        v //= pair
    chars[:, 17] = _B62[v.astype(np.intp)]
    return fixed_width_strings(chars)


_MASK = (1 << 64) - 1


def _mix64_int(x: int) -> int:
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def make_uid(salt: bytes, fid: int, prefix: str = "C") -> str:
    """One uid, same as :func:`make_uids` but in plain ints (numpy costs more for one value)."""
    return _uid_from_keys(int.from_bytes(salt[:8], "little"), int.from_bytes(salt[8:16], "little"), fid, prefix)


# Base62 digit pairs, least significant first: one divmod by 62**2 yields two uid characters.
_B62_PAIRS = [_BASE62[r % 62] + _BASE62[r // 62] for r in range(62 * 62)]


def _uid_from_keys(k1: int, k2: int, fid: int, prefix: str = "C") -> str:
    f = fid & _MASK
    h1 = _mix64_int(f ^ k1)
    h2 = _mix64_int(h1 ^ k2 ^ ((f * 0x9E3779B97F4A7C15) & _MASK))
    pairs = _B62_PAIRS
    v = h1 % 62**10
    out = [prefix]
    for _ in range(5):
        v, r = divmod(v, 3844)
        out.append(pairs[r])
    v = h2 % 62**7
    for _ in range(3):
        v, r = divmod(v, 3844)
        out.append(pairs[r])
    out.append(_BASE62[v])
    return "".join(out)


def string_array(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """An Arrow string array straight from UTF-8 bytes and int32 offsets (no per-row work)."""
    return pa.StringArray.from_buffers(offsets.shape[0] - 1, pa.py_buffer(offsets), pa.py_buffer(data))


def fixed_width_strings(chars: np.ndarray) -> pa.Array:
    """Rows of a 2-D uint8 array as strings, each ending at its first NUL (or the row's end)."""
    n, width = chars.shape
    if n == 0:
        return pa.array([], type=pa.string())
    keep = chars != 0
    if keep.all():
        return string_array(np.ascontiguousarray(chars).ravel(), np.arange(0, (n + 1) * width, width, dtype=np.int32))
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(keep.sum(axis=1), out=offsets[1:])
    return string_array(chars[keep], offsets)


def strings_by_code(names: Sequence[str], codes: np.ndarray) -> pa.Array:
    """``names[code]`` for each row as a string column, null where ``code`` < 0.

    Why not ``take`` on a names array: the conn columns (proto, service, conn_state, history)
    are built this way for every batch, and Arrow's Python compute module costs about 0.16 s
    to import; here a kernel copies each row's name from the names laid end to end.
    """
    from lawtap.streams.gather import gather_payloads

    n = codes.shape[0]
    encoded = [name.encode() for name in names] or [b""]
    lengths = np.array([len(e) for e in encoded], dtype=np.int64)
    starts = np.zeros(len(encoded), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    blob = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8).copy()  # (writable: the kernel's)
    valid = codes >= 0
    safe = np.where(valid, codes, 0)
    row_len = np.where(valid, lengths[safe], 0)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(row_len, out=offsets[1:])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    gather_payloads(blob, np.ascontiguousarray(starts[safe]), np.ascontiguousarray(row_len, dtype=np.int64), data)
    if valid.all():
        return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data), bitmap, n - int(valid.sum()))


def address_strings(hi: np.ndarray, lo: np.ndarray) -> pa.Array:
    """Key halves as an Arrow string column of addresses, formatted in a kernel with the rules
    of :func:`address_text` (a conn batch formats hundreds of thousands of them)."""
    n = hi.shape[0]
    if n == 0:
        return pa.array([], type=pa.string())
    offsets = np.empty(n + 1, dtype=np.int32)
    out = np.empty(39 * n, dtype=np.uint8)
    used = ft.address_chars(np.ascontiguousarray(hi, dtype=np.uint64), np.ascontiguousarray(lo, dtype=np.uint64), offsets, out)
    return string_array(out[:used], offsets)


def address_text(hi: int, lo: int) -> str:
    """One address from its key halves (IPv4 is stored IPv4-mapped), as :mod:`ipaddress` prints it.

    ``inet_ntoa``/``inet_ntop`` are several times faster than :mod:`ipaddress` and print the
    same RFC 5952 text, except for addresses with 96 leading zero bits (``::a.b.c.d``), which
    go through :mod:`ipaddress`.
    """
    if hi == 0:
        top = lo >> 32
        if top == 0xFFFF:
            return inet_ntoa((lo & 0xFFFFFFFF).to_bytes(4, "big"))
        if top == 0:
            return str(ipaddress.IPv6Address(lo))
    return inet_ntop(AF_INET6, ((hi << 64) | lo).to_bytes(16, "big"))


def conn_state(proto: int, os_: int, rs: int, orig_size: int, resp_size: int, history: str) -> str:
    """Zeek's ``conn_state`` (base/protocols/conn/main.zeek), from the endpoints' final states."""
    if proto == 6:
        o_inactive = os_ in (ft.TCP_INACTIVE, ft.TCP_PARTIAL)
        r_inactive = rs in (ft.TCP_INACTIVE, ft.TCP_PARTIAL)
        if rs == ft.TCP_RESET:
            if os_ in (ft.TCP_SYN_SENT, ft.TCP_SYN_ACK_SENT) or (os_ == ft.TCP_RESET and orig_size == 0 and resp_size == 0):
                return "REJ"
            return "RSTRH" if o_inactive else "RSTR"
        if os_ == ft.TCP_RESET:
            if r_inactive:
                return "RSTOS0" if _RSTOS0.fullmatch(history) else "OTH"
            return "RSTO"
        if rs == ft.TCP_CLOSED and os_ == ft.TCP_CLOSED:
            return "SF"
        if os_ == ft.TCP_CLOSED:
            return "SH" if r_inactive else "S2"
        if rs == ft.TCP_CLOSED:
            return "SHR" if o_inactive else "S3"
        if os_ == ft.TCP_SYN_SENT and rs == ft.TCP_INACTIVE:
            return "S0"
        if os_ == ft.TCP_ESTABLISHED and rs == ft.TCP_ESTABLISHED:
            return "S1"
        return "OTH"
    if proto == 17:
        if os_:
            return "SF" if rs else "S0"
        return "SHR" if rs else "OTH"
    return "OTH"


def conn_states(proto: np.ndarray, os_: np.ndarray, rs: np.ndarray, osize: np.ndarray, rsize: np.ndarray, hist: np.ndarray) -> pa.Array:
    """Vectorized :func:`conn_state`: numpy picks the state; only RSTOS0 candidates need the regex
    (``hist``: the NUL-padded history letters, one row per flow)."""
    T = ft
    tcp = proto == 6
    udp = proto == 17
    o_in = (os_ == T.TCP_INACTIVE) | (os_ == T.TCP_PARTIAL)
    r_in = (rs == T.TCP_INACTIVE) | (rs == T.TCP_PARTIAL)
    rej = (os_ == T.TCP_SYN_SENT) | (os_ == T.TCP_SYN_ACK_SENT) | ((os_ == T.TCP_RESET) & (osize == 0) & (rsize == 0))
    r_rst = rs == T.TCP_RESET
    o_rst = (os_ == T.TCP_RESET) & ~r_rst
    rest = ~r_rst & ~o_rst
    both_closed = rest & (rs == T.TCP_CLOSED) & (os_ == T.TCP_CLOSED)
    o_closed = rest & ~both_closed & (os_ == T.TCP_CLOSED)
    r_closed = rest & ~both_closed & ~o_closed & (rs == T.TCP_CLOSED)
    other = rest & ~both_closed & ~o_closed & ~r_closed
    names = ["OTH", "REJ", "RSTRH", "RSTR", "RSTOS0", "RSTO", "SF", "SH", "S2", "SHR", "S3", "S0", "S1"]
    code = np.zeros(proto.shape[0], dtype=np.int64)
    code = np.where(tcp & r_rst, np.where(rej, 1, np.where(o_in, 2, 3)), code)
    code = np.where(tcp & o_rst, np.where(r_in, 4, 5), code)  # 4 is checked against the regex below
    code = np.where(tcp & both_closed, 6, code)
    code = np.where(tcp & o_closed, np.where(r_in, 7, 8), code)
    code = np.where(tcp & r_closed, np.where(o_in, 9, 10), code)
    code = np.where(tcp & other & (os_ == T.TCP_SYN_SENT) & (rs == T.TCP_INACTIVE), 11, code)
    code = np.where(tcp & other & (os_ == T.TCP_ESTABLISHED) & (rs == T.TCP_ESTABLISHED), 12, code)
    code = np.where(udp, np.where(os_ != 0, np.where(rs != 0, 6, 11), np.where(rs != 0, 9, 0)), code)
    for i in np.nonzero(code == 4)[0].tolist():
        if not _RSTOS0.fullmatch(bytes(hist[i]).rstrip(b"\0").decode("ascii", "replace")):
            code[i] = 0
    return strings_by_code(names, code)


class FlowEngine:
    """Runs decoded batches through the flow table and yields finished conn/tunnel records."""

    def __init__(self, salt: bytes, classify: Classifier | None = None, capacity: int = 1 << 16,
                 keep_records: bool = True) -> None:
        self.salt = salt
        self._k1 = int.from_bytes(salt[:8], "little")
        self._k2 = int.from_bytes(salt[8:16], "little")
        self.classify = classify
        self.K = np.zeros((capacity, 5), dtype=np.uint64)
        self.F = np.zeros((capacity, ft.NF), dtype=np.int64)
        self.H = np.zeros((capacity, ft.HLEN), dtype=np.uint8)
        self.used = np.zeros(capacity, dtype=np.uint8)
        self.state = np.zeros(ft.NS, dtype=np.int64)
        self.server_ports = ft.likely_server_ports()
        self.EK = np.zeros((ENDED_CAPACITY, 5), dtype=np.uint64)
        self.EF = np.zeros((ENDED_CAPACITY, ft.NF), dtype=np.int64)
        self.EH = np.zeros((ENDED_CAPACITY, ft.HLEN), dtype=np.uint8)
        self.S = np.zeros((SAMPLE_CAPACITY, 4), dtype=np.int64)
        self.arena = np.zeros(ARENA_BYTES, dtype=np.uint8)
        self.samples: dict[int, tuple[list[bytes], list[bytes]]] = {}
        self.conn_batches: list[pa.RecordBatch] = []
        # With a lane (lawtap.streams.lane): which ended flows' conn rows are this process's,
        # from their flow ids and IP protocols; the others' rows are built apart, into
        # held_conn_batches (their service is the lane's to say). Split before the batch is
        # built, as filtering a built one would import pyarrow.compute (~0.16 s).
        self.owned_rows: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
        self.held_conn_batches: list[pa.RecordBatch] = []
        self._ended_raw: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.keep_records = keep_records  # False: only flow ids are reported (the collector)
        self.tunnel_batches: list[pa.RecordBatch] = []
        self.flows_ended = 0
        self.peak_flows = 0
        self.ended_fids: list[int] = []  # flows ended since the caller last took them
        # When a stream dispatcher runs, it classifies each flow once and shares the answer
        # here (fid -> service); the engine then keeps no payload samples of its own.
        self.known_services: dict[int, str] | None = None

    def share_services(self, services: dict[int, str]) -> None:
        self.known_services = services
        self.state[ft.S_NO_SAMPLES] = 1

    # ---- per batch ----
    def run(self, data: np.ndarray, A: np.ndarray, D: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Process one decoded batch; returns per-packet (fid, outer_fid, from_orig, kernel service) columns."""
        n = D.shape[0]
        PF = np.empty(n, dtype=np.int64)
        POF = np.empty(n, dtype=np.int64)
        PD = np.empty(n, dtype=np.int8)
        PS = np.empty(n, dtype=np.int8)
        i = 0
        while True:
            rc, i = ft.process(data, A, D, ts, i, n, self.K, self.F, self.H, self.used, self.state,
                               self.server_ports, self.EK, self.EF, self.EH, self.S, self.arena, PF, POF, PD, PS)
            self.peak_flows = max(self.peak_flows, int(self.state[ft.S_COUNT]))
            if rc == ft.RC_DONE:
                break
            if rc == ft.RC_GROW:
                self._grow()
            else:
                self._drain_samples()
                self._drain_ended()
        self._drain_samples()
        self._drain_ended()
        return PF, POF, PD, PS

    def finish(self) -> None:
        """End every live flow (end of input, or interruption)."""
        if self.state[ft.S_COUNT] == 0:
            return
        while not ft.flush_all(self.K, self.F, self.H, self.used, self.state, self.EK, self.EF, self.EH):
            self._drain_ended()
        self._drain_ended()

    def uid(self, fid: int) -> str:
        return _uid_from_keys(self._k1, self._k2, fid)

    def uids(self, fids: np.ndarray) -> list[str]:
        """:meth:`uid` of many flows at once (vectorized)."""
        return make_uids(self.salt, fids).to_pylist()

    # ---- internals ----
    def _grow(self) -> None:
        cap = self.K.shape[0] * 2
        K2 = np.zeros((cap, 5), dtype=np.uint64)
        F2 = np.zeros((cap, ft.NF), dtype=np.int64)
        H2 = np.zeros((cap, ft.HLEN), dtype=np.uint8)
        used2 = np.zeros(cap, dtype=np.uint8)
        ft.rehash(self.K, self.F, self.H, self.used, K2, F2, H2, used2)
        self.K, self.F, self.H, self.used = K2, F2, H2, used2

    def _drain_samples(self) -> None:
        n = int(self.state[ft.S_N_SAMPLES])
        if n == 0:
            return
        used = int(self.state[ft.S_ARENA_USED])
        blob = self.arena[:used].tobytes()
        samples = self.samples
        for fid, d, off, ln in self.S[:n].tolist():
            entry = samples.get(fid)
            if entry is None:
                entry = samples[fid] = ([], [])
            entry[d].append(blob[off : off + ln])
        self.state[ft.S_N_SAMPLES] = 0
        self.state[ft.S_ARENA_USED] = 0

    def _drain_ended(self) -> None:
        n = int(self.state[ft.S_N_ENDED])
        if n == 0:
            return
        self._drain_samples()  # samples of flows ending now must be in the dict first
        EK, EF, EH = self.EK[:n], self.EF[:n], self.EH[:n]
        self.state[ft.S_N_ENDED] = 0
        self.flows_ended += n
        self.ended_fids.extend(EF[:, ft.F_FID].tolist())
        # Records are built later, in take_records(): the stream dispatcher may still have to
        # classify these flows from packets of the batch being processed.
        if self.keep_records:
            self._ended_raw.append((EK.copy(), EF.copy(), EH.copy()))

    def take_records(self) -> tuple[list[pa.RecordBatch], list[pa.RecordBatch]]:
        for EK, EF, EH in self._ended_raw:
            self._build_records(EK, EF, EH)
        self._ended_raw = []
        conn, tun = self.conn_batches, self.tunnel_batches
        self.conn_batches, self.tunnel_batches = [], []
        return conn, tun

    def _build_records(self, EK: np.ndarray, EF: np.ndarray, EH: np.ndarray) -> None:
        conn_rows = np.nonzero(EF[:, ft.F_TUN_KIND] == 0)[0]
        tun_rows = np.nonzero(EF[:, ft.F_TUN_KIND] != 0)[0]
        # UDP tunnels (GTP-U, VXLAN) are connections too, as in Zeek; IP tunnels are not.
        udp_tun = tun_rows[EF[tun_rows, ft.F_PROTO] == 17]
        conn_rows = np.sort(np.concatenate([conn_rows, udp_tun]))
        if len(conn_rows) and self.owned_rows is not None:
            ours = self.owned_rows(EF[conn_rows, ft.F_FID], EF[conn_rows, ft.F_PROTO])
            if not ours.all():
                held = conn_rows[~ours]
                self.held_conn_batches.append(self._conn_batch(EK[held], EF[held], EH[held]))
                conn_rows = conn_rows[ours]
        if len(conn_rows):
            self.conn_batches.append(self._conn_batch(EK[conn_rows], EF[conn_rows], EH[conn_rows]))
        if len(tun_rows):
            self.tunnel_batches.append(self._tunnel_batch(EK[tun_rows], EF[tun_rows]))

    def _endpoints(self, EK: np.ndarray, EF: np.ndarray) -> tuple[pa.Array, np.ndarray, pa.Array, np.ndarray]:
        orig_is_a = EF[:, ft.F_ORIG_IS_A] == 1
        pa_ = (EK[:, 4] >> np.uint64(24)).astype(np.int64) & 0xFFFF
        pb_ = (EK[:, 4] >> np.uint64(8)).astype(np.int64) & 0xFFFF
        o_hi = np.where(orig_is_a, EK[:, 0], EK[:, 2])
        o_lo = np.where(orig_is_a, EK[:, 1], EK[:, 3])
        r_hi = np.where(orig_is_a, EK[:, 2], EK[:, 0])
        r_lo = np.where(orig_is_a, EK[:, 3], EK[:, 1])
        orig_h = address_strings(o_hi, o_lo)
        resp_h = address_strings(r_hi, r_lo)
        orig_p = np.where(orig_is_a, pa_, pb_)
        resp_p = np.where(orig_is_a, pb_, pa_)
        return orig_h, orig_p, resp_h, resp_p

    def _conn_batch(self, EK: np.ndarray, EF: np.ndarray, EH: np.ndarray) -> pa.RecordBatch:
        n = EK.shape[0]
        orig_h, orig_p, resp_h, resp_p = self._endpoints(EK, EF)
        proto = EF[:, ft.F_PROTO]
        # ICMP one-way types: Zeek logs (type, code) of the first packet as the ports.
        icmp_one_way = ((proto == 1) | (proto == 58)) & (orig_p == resp_p) & (EF[:, ft.F_ICMP_TYPE] >= 0)
        if icmp_one_way.any():
            orig_p = np.where(icmp_one_way, EF[:, ft.F_ICMP_TYPE] >> 8, orig_p)
            resp_p = np.where(icmp_one_way, EF[:, ft.F_ICMP_TYPE] & 0xFF, resp_p)
        tcp = proto == 6
        sizes = []
        for d in (0, 1):
            seq_size = np.maximum(EF[:, ft.F_HIGH + d], EF[:, ft.F_ACKED + d])
            seq_size = seq_size - (EF[:, ft.F_SYN_CNT + d] > 0) - (EF[:, ft.F_FIN_CNT + d] > 0)
            sizes.append(np.where(tcp, np.maximum(seq_size, 0), EF[:, ft.F_PAY_BYTES + d]))
        # History letters are NUL-padded rows (letters first, then NULs).
        histories = fixed_width_strings(EH)
        fids = EF[:, ft.F_FID]
        uids = make_uids(self.salt, fids)
        parents = EF[:, ft.F_PARENT]
        has_parent = parents >= 0
        if has_parent.any():
            parent_uids = make_uids(self.salt, np.where(has_parent, parents, 0)).to_pylist()
            tunnel_parents = pa.array([[u] if p else None for u, p in zip(parent_uids, has_parent.tolist())], type=pa.list_(pa.string()))
        else:
            tunnel_parents = pa.nulls(n, type=pa.list_(pa.string()))
        states = conn_states(proto, EF[:, ft.F_STATE], EF[:, ft.F_STATE + 1], sizes[0], sizes[1], EH)
        services = self._services(fids, proto, orig_p, resp_p, EF[:, ft.F_TUN_KIND], EF[:, ft.F_SVC])
        first = EF[:, ft.F_FIRST_TS]
        duration = (EF[:, ft.F_LAST_TS] - first) / 1e9
        vlan = EF[:, ft.F_VLAN]
        ivlan = EF[:, ft.F_INNER_VLAN]
        cols = {
            "ts": pa.array(first // 1000, type=CONN.field("ts").type),
            "uid": uids,
            "id.orig_h": orig_h,
            "id.orig_p": pa.array(orig_p, type=pa.uint16()),
            "id.resp_h": resp_h,
            "id.resp_p": pa.array(resp_p, type=pa.uint16()),
            "proto": strings_by_code(_PROTO_LIST, np.minimum(proto, 255)),
            "service": services,
            "duration": duration,
            "orig_bytes": sizes[0],
            "resp_bytes": sizes[1],
            "conn_state": states,
            "missed_bytes": EF[:, ft.F_MISSED],
            "history": histories,
            "orig_pkts": EF[:, ft.F_PKTS],
            "orig_ip_bytes": EF[:, ft.F_IP_BYTES],
            "resp_pkts": EF[:, ft.F_PKTS + 1],
            "resp_ip_bytes": EF[:, ft.F_IP_BYTES + 1],
            "tunnel_parents": tunnel_parents,
            "vlan": pa.array(vlan.astype(np.uint16), mask=vlan < 0),
            "inner_vlan": pa.array(ivlan.astype(np.uint16), mask=ivlan < 0),
            "ip_proto": pa.array(proto, type=pa.uint8()),
            "fid": EF[:, ft.F_FID],
        }
        return pa.RecordBatch.from_pydict(cols, schema=CONN)

    def _services(self, fids: np.ndarray, protos: np.ndarray, orig_p: np.ndarray, resp_p: np.ndarray, tun: np.ndarray,
                  kernel_svc: np.ndarray) -> pa.Array:
        """``conn.service`` per flow: tunnel type, the flow kernel's answer, the dispatcher's, or DPI
        on the kept samples. Python only visits flows the kernel did not name (vectorized
        because most flows of a large capture are DNS, which the kernel names): each flow gets
        a code into a small table of names, and Arrow ``take`` builds the column."""
        n = fids.shape[0]
        names: list[str] = []
        code_of: dict[str, int] = {}

        def code(name: str) -> int:
            c = code_of.get(name)
            if c is None:
                c = code_of[name] = len(names)
                names.append(name)
            return c

        codes = np.full(n, -1, dtype=np.int32)
        for kind, name in _TUNNEL_SERVICE.items():
            codes[tun == kind] = code(name)
        known = self.known_services
        by_kernel = (tun == 0) & (kernel_svc != 0)
        for svc, name in ft.SERVICE_NAMES.items():
            codes[by_kernel & (kernel_svc == svc)] = code(name)
        rest = np.flatnonzero((tun == 0) & (kernel_svc == 0))
        if known:  # the stream dispatcher classified the rest; it holds a kernel-named flow only
            # when the flow's name changed (a data channel announced elsewhere claimed it)
            k = np.flatnonzero(by_kernel)
            hit = k[np.isin(fids[k], np.fromiter(known, dtype=np.int64, count=len(known)))]
            for r, fid in zip(hit.tolist(), fids[hit].tolist()):
                svc = known.pop(fid)
                codes[r] = code(svc) if svc else -1
        pop = self.samples.pop
        if self.samples:  # samples of flows that need no DPI (rare: most never kept any)
            done = fids[(tun != 0) | by_kernel] if known is None else fids[tun != 0]
            for fid in self.samples.keys() & set(done.tolist()):
                pop(fid, None)
        classify = self.classify
        for r, fid, proto, op, rp in zip(rest.tolist(), fids[rest].tolist(), protos[rest].tolist(),
                                         orig_p[rest].tolist(), resp_p[rest].tolist()):
            entry = pop(fid, None)
            if known is not None:
                svc = known.pop(fid, None)
            elif entry is None or classify is None or proto not in (6, 17, 132):
                continue
            else:
                try:
                    svc = classify(_PROTO_NAMES[proto], op, rp, entry[0], entry[1])
                except Exception:  # a detector bug must not lose the flow; DPI is fuzzed separately
                    svc = ""
            if svc:
                codes[r] = code(svc)
        return strings_by_code(names, codes)

    def _tunnel_batch(self, EK: np.ndarray, EF: np.ndarray) -> pa.RecordBatch:
        orig_h, orig_p, resp_h, resp_p = self._endpoints(EK, EF)
        for fid in EF[:, ft.F_FID].tolist():
            self.samples.pop(fid, None)
        cols = {
            "ts": pa.array(EF[:, ft.F_FIRST_TS] // 1000, type=TUNNEL.field("ts").type),
            "uid": make_uids(self.salt, EF[:, ft.F_FID]),
            "id.orig_h": orig_h,
            "id.orig_p": pa.array(orig_p, type=pa.uint16()),
            "id.resp_h": resp_h,
            "id.resp_p": pa.array(resp_p, type=pa.uint16()),
            "tunnel_type": [dk.TUNNEL_NAMES.get(k, "Tunnel::UNKNOWN") for k in EF[:, ft.F_TUN_KIND].tolist()],
            "action": ["Tunnel::DISCOVER"] * EK.shape[0],
            "duration": (EF[:, ft.F_LAST_TS] - EF[:, ft.F_FIRST_TS]) / 1e9,
            "packets": EF[:, ft.F_PKTS] + EF[:, ft.F_PKTS + 1],
            "fid": EF[:, ft.F_FID],
        }
        return pa.RecordBatch.from_pydict(cols, schema=TUNNEL)
