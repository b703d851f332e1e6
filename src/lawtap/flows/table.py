"""The flow table: bidirectional connections with Zeek's conn.log semantics, in one numba kernel.

Why a kernel: connection state (TCP endpoint states, history letters, sequence-space sizes) has
to be updated packet by packet, in order. Doing that in compiled code over a whole decoded
batch keeps Python out of the per-packet path; Python only sees a flow when it ends.

Layout (struct of arrays, one row per slot of an open-addressing hash table):

* ``K`` uint64 ``cap x 5``: canonical key ``(a_hi, a_lo, b_hi, b_lo, ports|proto)``; endpoint
  ``a`` is the smaller ``(address, port)`` so both directions hash to the same slot.
* ``F`` int64 ``cap x NF``: every numeric field, indexed by the ``F_*`` constants.
* ``H`` uint8 ``cap x HLEN``: the history string, Zeek's letters in order of appearance.

A flow that ends (timeout, TCP close, port reuse, end of input) is copied to the *ended*
buffers (same layout) and its slot freed with backward-shift deletion, so memory follows the
number of concurrent flows, never the capture's size.
"""

from __future__ import annotations

from lawtap.jit import njit
import numpy as np

from lawtap.decode import kernel as dk

HLEN = 32  # history letters kept per flow (Zeek's strings are short; extra letters are dropped)
SAMPLE_PACKETS = 6  # payload samples kept per direction for DPI
SAMPLE_BYTES = 1024

# ---- F columns ----------------------------------------------------------------------------
F_FID = 0
F_FIRST_TS = 1
F_LAST_TS = 2
F_ORIG_IS_A = 3
F_PROTO = 4
F_IPVER = 5
F_PKTS = 6  # +0 orig, +1 resp (same pattern for every per-direction pair below)
F_IP_BYTES = 8
F_PAY_BYTES = 10
F_STATE = 12  # TCP endpoint state (TCP_* below); for UDP/ICMP: 1 once the endpoint sent
F_LAST_RAW = 14  # last sequence number (raw 32-bit) seen from the endpoint, -1 before any
F_LAST_REL = 16  # that sequence number unwrapped, relative to the endpoint's first one
F_HIGH = 18  # highest relative sequence end (data + SYN + FIN) sent
F_ACKED = 20  # highest relative sequence acknowledged by the peer
F_SYN_CNT = 22
F_FIN_CNT = 24
F_SEEN = 26  # bit mask of once-only history letters already recorded
F_RETX = 28  # retransmission count (history 'T' logarithmic)
F_ZWIN = 30  # zero-window count (history 'W' logarithmic)
F_SEQ_S = 32  # last seq of a recorded S/s
F_SEQ_H = 34
F_SEQ_F = 36
F_SEQ_R = 38
F_SAMPLES = 40
F_HIST_LEN = 42
F_FLIPPED = 43
F_VLAN = 44
F_INNER_VLAN = 45
F_PARENT = 46  # fid of the tunnel carrying this flow, -1 if none
F_TUN_KIND = 47  # >0: this flow carries a tunnel (dk.TUN_*)
F_ICMP_TYPE = 48  # first ICMP type/code seen (for conn's ports when one-way)
F_MISSED = 49
F_END_REASON = 50  # END_* below
F_TEID = 51
F_GAPS = 52  # content gaps per direction (history 'G' logarithmic)
F_HOLE_START = 54  # one outstanding hole in each direction's sequence space
F_HOLE_END = 56
F_SVC = 58  # service decided in the kernel (SVC_*), 0 when DPI in Python must decide
NF = 59

# Services the kernel recognises itself. DNS is most of the flows in many captures, and its
# structure is cheap to check in compiled code; on its own ports the answer is the same one the
# Python DPI gives, at a fraction of the cost. Everything else is left to lawtap.dpi.
SVC_DNS = 1
SVC_MDNS = 2
SERVICE_NAMES = {SVC_DNS: "dns", SVC_MDNS: "mdns"}

END_TIMEOUT = 1
END_REUSE = 2
END_FLUSH = 3

# Zeek's TCP endpoint states.
TCP_INACTIVE = 0
TCP_SYN_SENT = 1
TCP_SYN_ACK_SENT = 2
TCP_PARTIAL = 3
TCP_ESTABLISHED = 4
TCP_CLOSED = 5
TCP_RESET = 6

# Inactivity timeouts (ns), Zeek's defaults.
TCP_TIMEOUT = 300 * 10**9
TCP_CLOSE_DELAY = 5 * 10**9
TCP_ATTEMPT_DELAY = 5 * 10**9
UDP_TIMEOUT = 60 * 10**9
ICMP_TIMEOUT = 60 * 10**9
SCAN_INTERVAL = 10 * 10**9

# Kernel return codes.
RC_DONE = 0
RC_GROW = 1
RC_ENDED_FULL = 2
RC_SAMPLES_FULL = 3

# ---- state vector -------------------------------------------------------------------------
S_COUNT = 0
S_NEXT_FID = 1
S_N_ENDED = 2
S_N_SAMPLES = 3
S_ARENA_USED = 4
S_LAST_SCAN = 5
S_NOW = 6
S_NO_SAMPLES = 7  # 1: DPI samples are not needed (the stream dispatcher classifies)
NS = 8

_FLAGS_FIN = 0x01
_FLAGS_SYN = 0x02
_FLAGS_RST = 0x04
_FLAGS_ACK = 0x10

# once-only history letter bits
_B_A = 1
_B_D = 2
_B_I = 4
_B_Q = 8

# ICMP request/reply pairs: map both types to (request, reply).
_ICMP4_PAIRS = ((8, 0), (13, 14), (15, 16), (17, 18), (10, 9))
_ICMP6_PAIRS = ((128, 129), (133, 134), (135, 136), (130, 131))


def likely_server_ports() -> np.ndarray:
    """Ports that Zeek's analyzers register: a first packet *from* one of them is a reply."""
    ports = np.zeros(65536, dtype=np.bool_)
    for p in (
        7, 13, 20, 21, 22, 23, 25, 37, 42, 53, 67, 69, 79, 80, 88, 102, 110, 111, 113, 119, 123,
        135, 137, 138, 139, 143, 161, 162, 179, 389, 427, 443, 445, 464, 465, 500, 502, 513, 514,
        515, 520, 546, 547, 554, 563, 587, 593, 631, 636, 853, 873, 989, 990, 992, 993, 994, 995,
        1080, 1194, 1433, 1434, 1521, 1701, 1723, 1812, 1813, 1883, 1900, 2049, 2123, 2152, 2404,
        3128, 3260, 3306, 3389, 3478, 3544, 4500, 4789, 5004, 5060, 5061, 5222, 5223, 5269, 5353,
        5355, 5432, 5671, 5672, 5900, 6379, 6443, 6660, 6661, 6662, 6663, 6664, 6665, 6666, 6667,
        6668, 6669, 6697, 8000, 8008, 8080, 8081, 8443, 8883, 8888, 9042, 9200, 11211, 20000,
        27017, 47808, 51820,
    ):
        ports[p] = True
    return ports


@njit(cache=True, inline="always")
def _hash(k0, k1, k2, k3, k4):
    h = np.uint64(0x9E3779B97F4A7C15)
    for v in (k0, k1, k2, k3, k4):
        h ^= v
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
    return h


@njit(cache=True, _nrt=False)
def _find(K, used, mask, k0, k1, k2, k3, k4):
    """Slot holding the key, or ``-(free slot) - 1`` when absent."""
    j = np.int64(_hash(k0, k1, k2, k3, k4) & np.uint64(mask))
    while used[j]:
        if K[j, 0] == k0 and K[j, 1] == k1 and K[j, 2] == k2 and K[j, 3] == k3 and K[j, 4] == k4:
            return j
        j = (j + 1) & mask
    return -j - 1


@njit(cache=True, _nrt=False)
def _copy_row(dst, i, src, j):
    """``dst[i, :] = src[j, :]`` without the temporary numba allocates when rows may overlap."""
    for c in range(dst.shape[1]):
        dst[i, c] = src[j, c]


@njit(cache=True, _nrt=False)
def _delete(K, F, H, used, mask, slot):
    """Backward-shift deletion keeps linear probing chains intact without tombstones."""
    j = slot
    used[j] = 0
    k = j
    while True:
        k = (k + 1) & mask
        if not used[k]:
            return
        h = np.int64(_hash(K[k, 0], K[k, 1], K[k, 2], K[k, 3], K[k, 4]) & np.uint64(mask))
        # leave k where it is if its home h lies cyclically in (j, k]
        if j <= k:
            if j < h <= k:
                continue
        else:
            if h > j or h <= k:
                continue
        _copy_row(K, j, K, k)
        _copy_row(F, j, F, k)
        _copy_row(H, j, H, k)
        used[j] = 1
        used[k] = 0
        j = k


@njit(cache=True, _nrt=False)
def _end(K, F, H, used, mask, slot, reason, EK, EF, EH, state):
    e = state[S_N_ENDED]
    _copy_row(EK, e, K, slot)
    _copy_row(EF, e, F, slot)
    EF[e, F_END_REASON] = reason
    _copy_row(EH, e, H, slot)
    state[S_N_ENDED] = e + 1
    state[S_COUNT] -= 1
    _delete(K, F, H, used, mask, slot)


@njit(cache=True, inline="always")
def _timeout(F, slot):
    proto = F[slot, F_PROTO]
    if proto == 6:
        os_ = F[slot, F_STATE]
        rs = F[slot, F_STATE + 1]
        if os_ == TCP_RESET or rs == TCP_RESET or (os_ == TCP_CLOSED and rs == TCP_CLOSED):
            return TCP_CLOSE_DELAY
        if os_ == TCP_SYN_SENT and rs == TCP_INACTIVE:
            return TCP_ATTEMPT_DELAY
        return TCP_TIMEOUT
    if proto == 17:
        return UDP_TIMEOUT
    return ICMP_TIMEOUT


@njit(cache=True, _nrt=False)
def _add_letter(H, F, slot, ch):
    n = F[slot, F_HIST_LEN]
    if n < HLEN:
        H[slot, n] = ch
        F[slot, F_HIST_LEN] = n + 1


@njit(cache=True, inline="always")
def _letter(is_orig, upper):
    return upper if is_orig else upper + 32


@njit(cache=True, _nrt=False)
def _once(H, F, slot, d, bit, ch):
    if (F[slot, F_SEEN + d] & bit) == 0:
        F[slot, F_SEEN + d] |= bit
        _add_letter(H, F, slot, ch)


@njit(cache=True, _nrt=False)
def _repeat(H, F, slot, d, col, seq, ch):
    """S/H/F/R: recorded again only when the sequence number differs from the last one."""
    if F[slot, col + d] != seq:
        F[slot, col + d] = seq
        _add_letter(H, F, slot, ch)


@njit(cache=True, _nrt=False)
def _logarithmic(H, F, slot, col, d, ch):
    """T/W: recorded at the 1st, 10th, 100th … occurrence."""
    c = F[slot, col + d] + 1
    F[slot, col + d] = c
    t = 1
    while t < c:
        t *= 10
    if t == c:
        _add_letter(H, F, slot, ch)


@njit(cache=True, inline="always")
def _signed32(x):
    x = x & 0xFFFFFFFF
    return x - 0x100000000 if x >= 0x80000000 else x


@njit(cache=True, _nrt=False)
def _rel_seq(F, slot, d, seq):
    """Unwrap a 32-bit sequence number into the endpoint's 64-bit relative sequence space."""
    return F[slot, F_LAST_REL + d] + _signed32(seq - F[slot, F_LAST_RAW + d])


@njit(cache=True, _nrt=False)
def _tcp_update(H, F, slot, d, flags, seq, ack, window, plen):
    is_orig = d == 0
    p = 1 - d
    syn = (flags & _FLAGS_SYN) != 0
    fin = (flags & _FLAGS_FIN) != 0
    rst = (flags & _FLAGS_RST) != 0
    ackf = (flags & _FLAGS_ACK) != 0

    # ---- sequence space (sizes, retransmissions) ----
    if F[slot, F_LAST_RAW + d] < 0:
        F[slot, F_LAST_RAW + d] = seq
        F[slot, F_LAST_REL + d] = 0
    rel = _rel_seq(F, slot, d, seq)
    if rel > F[slot, F_LAST_REL + d]:
        F[slot, F_LAST_RAW + d] = seq
        F[slot, F_LAST_REL + d] = rel
    if plen > 0 and not syn and rel < F[slot, F_HIGH + d] and not rst:
        _logarithmic(H, F, slot, F_RETX, d, _letter(is_orig, 84))  # T
    seg_end = rel + plen + (1 if syn else 0) + (1 if fin else 0)
    if plen > 0 and not rst:
        hs = F[slot, F_HOLE_START + d]
        he = F[slot, F_HOLE_END + d]
        if he > hs:  # data filling the outstanding hole from its start
            if rel <= hs < seg_end:
                F[slot, F_HOLE_START + d] = seg_end if seg_end < he else he
        elif rel > F[slot, F_HIGH + d] and F[slot, F_HIGH + d] > 0:
            F[slot, F_HOLE_START + d] = F[slot, F_HIGH + d]
            F[slot, F_HOLE_END + d] = rel
    if seg_end > F[slot, F_HIGH + d] and not rst:
        F[slot, F_HIGH + d] = seg_end
    if syn:
        F[slot, F_SYN_CNT + d] += 1
    if fin:
        F[slot, F_FIN_CNT + d] += 1
    if ackf and F[slot, F_LAST_RAW + p] >= 0:
        arel = _rel_seq(F, slot, p, ack)
        if arel > F[slot, F_ACKED + p]:
            F[slot, F_ACKED + p] = arel
        # Acknowledged bytes we never saw: a content gap in the peer's stream (Zeek's 'g').
        hs = F[slot, F_HOLE_START + p]
        he = F[slot, F_HOLE_END + p]
        if he > hs and arel >= he:
            F[slot, F_MISSED] += he - hs
            F[slot, F_HOLE_START + p] = 0
            F[slot, F_HOLE_END + p] = 0
            _logarithmic(H, F, slot, F_GAPS, p, _letter(not is_orig, 71))  # G
        high = F[slot, F_HIGH + p]
        if arel > high and high > 0 and not rst and arel - high < 0x40000000:
            F[slot, F_MISSED] += arel - high
            F[slot, F_HIGH + p] = arel
            _logarithmic(H, F, slot, F_GAPS, p, _letter(not is_orig, 71))  # G

    # ---- history ----
    if syn:
        if ackf:
            _repeat(H, F, slot, d, F_SEQ_H, seq, _letter(is_orig, 72))  # H
        else:
            _repeat(H, F, slot, d, F_SEQ_S, seq, _letter(is_orig, 83))  # S
        if fin or rst:
            _once(H, F, slot, d, _B_Q, _letter(is_orig, 81))  # Q
    if fin:
        _repeat(H, F, slot, d, F_SEQ_F, seq, _letter(is_orig, 70))  # F
    if rst:
        _repeat(H, F, slot, d, F_SEQ_R, seq, _letter(is_orig, 82))  # R
    if fin and rst:
        _once(H, F, slot, d, _B_I, _letter(is_orig, 73))  # I
    if plen > 0:
        _once(H, F, slot, d, _B_D, _letter(is_orig, 68))  # D
    elif ackf and not (syn or fin or rst):
        _once(H, F, slot, d, _B_A, _letter(is_orig, 65))  # A
    if window == 0 and not rst and not syn:
        _logarithmic(H, F, slot, F_ZWIN, d, _letter(is_orig, 87))  # W

    # ---- endpoint state machine (Zeek's TCP_ENDPOINT_*) ----
    st = F[slot, F_STATE + d]
    pst = F[slot, F_STATE + p]
    if rst:
        # A RST after both sides closed cleanly does not undo the close (Zeek logs such as SF).
        if not (st == TCP_CLOSED and pst == TCP_CLOSED):
            F[slot, F_STATE + d] = TCP_RESET
        return
    if syn:
        if st == TCP_INACTIVE:
            F[slot, F_STATE + d] = TCP_SYN_ACK_SENT if ackf else TCP_SYN_SENT
        elif ackf and st == TCP_SYN_SENT:
            # simultaneous open: our SYN-ACK answers their SYN
            F[slot, F_STATE + d] = TCP_ESTABLISHED
        if fin:
            F[slot, F_STATE + d] = TCP_CLOSED
        return
    if fin:
        F[slot, F_STATE + d] = TCP_CLOSED
        return
    if st == TCP_INACTIVE:
        F[slot, F_STATE + d] = TCP_PARTIAL
    elif st == TCP_SYN_SENT or st == TCP_SYN_ACK_SENT:
        if ackf or plen > 0:
            F[slot, F_STATE + d] = TCP_ESTABLISHED
            if pst == TCP_SYN_ACK_SENT or pst == TCP_SYN_SENT:
                F[slot, F_STATE + p] = TCP_ESTABLISHED


@njit(cache=True, _nrt=False)
def _icmp_pair(proto, t):
    """(request type, reply type, packet is the reply) for paired ICMP types, else (-1, -1, 0)."""
    if proto == 1:
        for k in range(5):
            rq = (8, 13, 15, 17, 10)[k]
            rp = (0, 14, 16, 18, 9)[k]
            if t == rq:
                return rq, rp, 0
            if t == rp:
                return rq, rp, 1
    else:
        for k in range(4):
            rq = (128, 133, 135, 130)[k]
            rp = (129, 134, 136, 131)[k]
            if t == rq:
                return rq, rp, 0
            if t == rp:
                return rq, rp, 1
    return -1, -1, 0


@njit(cache=True, inline="always")
def _is_group(hi, lo):
    if hi == 0 and (lo >> np.uint64(32)) == np.uint64(0xFFFF):
        v4 = lo & np.uint64(0xFFFFFFFF)
        return v4 == np.uint64(0xFFFFFFFF) or (v4 >> np.uint64(28)) == np.uint64(0xE)
    return (hi >> np.uint64(56)) == np.uint64(0xFF)


@njit(cache=True, _nrt=False)
def _flow_for_packet(K, F, H, used, mask, state, server_ports, EK, EF, EH,
                     s_hi, s_lo, d_hi, d_lo, sport, dport, proto, ipver, flags, seq, ts):
    """Find or create the flow for one packet; returns (slot, is_orig)."""
    icmp = proto == 1 or proto == 58
    if icmp:
        rq, rp, is_reply = _icmp_pair(proto, sport)
        if rq >= 0:
            # key: (request sender, replier, request type, reply type)
            if is_reply:
                k0, k1, k2, k3 = d_hi, d_lo, s_hi, s_lo
            else:
                k0, k1, k2, k3 = s_hi, s_lo, d_hi, d_lo
            pa, pb = rq, rp
            pkt_is_a = is_reply == 0
        else:
            k0, k1, k2, k3 = s_hi, s_lo, d_hi, d_lo
            pa, pb = sport, dport
            pkt_is_a = True
    else:
        if (s_hi < d_hi) or (s_hi == d_hi and (s_lo < d_lo or (s_lo == d_lo and sport <= dport))):
            k0, k1, k2, k3 = s_hi, s_lo, d_hi, d_lo
            pa, pb = sport, dport
            pkt_is_a = True
        else:
            k0, k1, k2, k3 = d_hi, d_lo, s_hi, s_lo
            pa, pb = dport, sport
            pkt_is_a = False
    k4 = (np.uint64(pa) << np.uint64(24)) | (np.uint64(pb) << np.uint64(8)) | np.uint64(proto)
    slot = _find(K, used, mask, k0, k1, k2, k3, k4)
    if slot >= 0:
        is_orig = pkt_is_a == (F[slot, F_ORIG_IS_A] == 1)
        expired = ts - F[slot, F_LAST_TS] > _timeout(F, slot)
        reuse = False
        if proto == 6 and (flags & (_FLAGS_SYN | _FLAGS_ACK | _FLAGS_RST)) == _FLAGS_SYN:
            os_ = F[slot, F_STATE + (0 if is_orig else 1)]
            rs = F[slot, F_STATE + (1 if is_orig else 0)]
            closed = (os_ == TCP_CLOSED or os_ == TCP_RESET) and (rs == TCP_CLOSED or rs == TCP_RESET or rs == TCP_INACTIVE)
            closed = closed or os_ == TCP_RESET or rs == TCP_RESET
            if closed and F[slot, F_SEQ_S + (0 if is_orig else 1)] != seq:
                reuse = True
        if not (expired or reuse):
            return slot, is_orig
        _end(K, F, H, used, mask, slot, END_REUSE if reuse else END_TIMEOUT, EK, EF, EH, state)
        slot = _find(K, used, mask, k0, k1, k2, k3, k4)
    slot = -slot - 1
    used[slot] = 1
    K[slot, 0] = k0
    K[slot, 1] = k1
    K[slot, 2] = k2
    K[slot, 3] = k3
    K[slot, 4] = k4
    for c in range(NF):
        F[slot, c] = 0
    for c in range(HLEN):
        H[slot, c] = 0
    for c in range(2):
        F[slot, F_LAST_RAW + c] = -1
        F[slot, F_SEQ_S + c] = -1
        F[slot, F_SEQ_H + c] = -1
        F[slot, F_SEQ_F + c] = -1
        F[slot, F_SEQ_R + c] = -1
    fid = state[S_NEXT_FID]
    state[S_NEXT_FID] = fid + 1
    state[S_COUNT] += 1
    F[slot, F_FID] = fid
    F[slot, F_FIRST_TS] = ts
    F[slot, F_LAST_TS] = ts
    F[slot, F_PROTO] = proto
    F[slot, F_IPVER] = ipver
    F[slot, F_PARENT] = -1
    F[slot, F_ICMP_TYPE] = (sport << 8) | dport if icmp else -1
    # Who is the originator? The sender of the first packet, unless that packet looks like a
    # reply (Zeek's heuristics: TCP without a bare SYN, or UDP, from a likely server port).
    flip = False
    if proto == 6:
        if (flags & _FLAGS_SYN) == 0 or (flags & _FLAGS_ACK) != 0:
            if server_ports[sport]:
                if server_ports[dport]:
                    flip = (flags & _FLAGS_SYN) == 0 and sport < dport
                else:
                    flip = True
    elif proto == 17:
        # A datagram to a broadcast or multicast address is never a reply.
        flip = server_ports[sport] and not server_ports[dport] and not _is_group(d_hi, d_lo)
    orig_is_a = pkt_is_a != flip
    F[slot, F_ORIG_IS_A] = 1 if orig_is_a else 0
    if flip:
        F[slot, F_FLIPPED] = 1
        _add_letter(H, F, slot, 94)  # '^'
    return slot, not flip


@njit(cache=True, _nrt=False)
def _scan_expired(K, F, H, used, mask, state, now, EK, EF, EH):
    cap = mask + 1
    j = 0
    while j < cap:
        if used[j] and now - F[j, F_LAST_TS] > _timeout(F, j):
            if state[S_N_ENDED] >= EK.shape[0]:
                return False
            _end(K, F, H, used, mask, j, END_TIMEOUT, EK, EF, EH, state)
            continue  # a shifted entry may now sit in slot j
        j += 1
    return True


@njit(cache=True, _nrt=False)
def _account(F, slot, d, ts, ip_len, plen):
    F[slot, F_LAST_TS] = ts
    F[slot, F_PKTS + d] += 1
    F[slot, F_IP_BYTES + d] += ip_len
    F[slot, F_PAY_BYTES + d] += plen


@njit(cache=True, _nrt=False)
def _dns_query_like(b, off, n):
    """A well-formed DNS message with one question (header sanity + QNAME walk + class)."""
    if n < 17:
        return False
    flags = (np.int64(b[off + 2]) << 8) | np.int64(b[off + 3])
    if (flags >> 11) & 0xF != 0 or (flags & 0x0040) != 0:
        return False  # opcode QUERY only, Z bit clear
    qd = (np.int64(b[off + 4]) << 8) | np.int64(b[off + 5])
    an = (np.int64(b[off + 6]) << 8) | np.int64(b[off + 7])
    ns = (np.int64(b[off + 8]) << 8) | np.int64(b[off + 9])
    ar = (np.int64(b[off + 10]) << 8) | np.int64(b[off + 11])
    if qd != 1 or an > 256 or ns > 256 or ar > 256:
        return False
    if (flags >> 15) == 0 and (an != 0 or ns != 0):
        return False  # a query carries no answers
    p = off + 12
    end = off + n
    total = 0
    while True:
        if p >= end:
            return False
        ln = np.int64(b[p])
        if ln == 0:
            p += 1
            break
        if ln > 63:
            return False
        total += ln + 1
        if total > 255:
            return False
        p += ln + 1
    if p + 4 > end:
        return False
    qtype = (np.int64(b[p]) << 8) | np.int64(b[p + 1])
    qclass = ((np.int64(b[p + 2]) << 8) | np.int64(b[p + 3])) & 0x7FFF
    return qtype != 0 and (qclass == 1 or qclass == 255 or qclass == 3 or qclass == 4)


@njit(cache=True, _nrt=False)
def _kernel_service(F, slot, data, off, plen, sport, dport):
    if sport == 53 or dport == 53:
        if _dns_query_like(data, off, plen):
            F[slot, F_SVC] = SVC_DNS
    elif sport == 5353 or dport == 5353:
        if _dns_query_like(data, off, plen):
            F[slot, F_SVC] = SVC_MDNS


@njit(cache=True, _nrt=False)
def _sample(F, slot, d, data, off, plen, S, arena, state):
    """Keep the first payloads of each direction for DPI (copied: the batch buffer is reused)."""
    if plen <= 0 or F[slot, F_SAMPLES + d] >= SAMPLE_PACKETS:
        return True
    n = state[S_N_SAMPLES]
    if n >= S.shape[0]:
        return False
    take = plen if plen < SAMPLE_BYTES else SAMPLE_BYTES
    a = state[S_ARENA_USED]
    if a + take > arena.shape[0]:
        return False
    for k in range(take):
        arena[a + k] = data[off + k]
    S[n, 0] = F[slot, F_FID]
    S[n, 1] = d
    S[n, 2] = a
    S[n, 3] = take
    state[S_N_SAMPLES] = n + 1
    state[S_ARENA_USED] = a + take
    F[slot, F_SAMPLES + d] += 1
    return True


@njit(cache=True, nogil=True)
def process(data, A, D, ts, start, n, K, F, H, used, state, server_ports, EK, EF, EH, S, arena, PF, POF, PD, PS):
    """Run packets ``start..n-1`` of a decoded batch through the table.

    Per packet it fills ``PF`` (flow id, -1 if none), ``POF`` (tunnel flow id), ``PD``
    (1 when the packet travels from the originator, 0 from the responder) and ``PS`` (the
    service the kernel recognised for the packet's flow, ``SVC_*``, 0 when DPI must decide).

    Returns ``(rc, i)``: ``RC_DONE`` with ``i == n``, or a request to Python (grow the table,
    drain the ended buffer or the sample arena) and the packet index to resume from.
    """
    mask = K.shape[0] - 1
    cap = K.shape[0]
    for i in range(start, n):
        # Room for the worst case of this packet: two new flows, two ended flows, two samples.
        if (state[S_COUNT] + 2) * 10 > cap * 6:
            return RC_GROW, i
        if state[S_N_ENDED] + 4 > EK.shape[0]:
            return RC_ENDED_FULL, i
        if state[S_N_SAMPLES] + 2 > S.shape[0] or state[S_ARENA_USED] + 2 * SAMPLE_BYTES > arena.shape[0]:
            return RC_SAMPLES_FULL, i
        t = ts[i]
        if t > state[S_NOW]:
            state[S_NOW] = t
        PF[i] = -1
        POF[i] = -1
        PD[i] = 0
        PS[i] = 0
        if D[i, dk.C_STATUS] != dk.ST_FLOW:
            continue
        if t - state[S_LAST_SCAN] > SCAN_INTERVAL:
            if state[S_LAST_SCAN] > 0:
                if not _scan_expired(K, F, H, used, mask, state, t, EK, EF, EH):
                    return RC_ENDED_FULL, i
            state[S_LAST_SCAN] = t
        parent = -1
        tk = D[i, dk.C_TUN_KIND]
        if tk != dk.TUN_NONE:
            if tk == dk.TUN_GTPV1 or tk == dk.TUN_VXLAN:
                osp = D[i, dk.C_TUN_SPORT]
                odp = D[i, dk.C_TUN_DPORT]
                oproto = 17
            else:
                osp = 0
                odp = 0
                oproto = D[i, dk.C_TUN_PROTO]
            oslot, o_orig = _flow_for_packet(
                K, F, H, used, mask, state, server_ports, EK, EF, EH,
                A[i, 4], A[i, 5], A[i, 6], A[i, 7], osp, odp, oproto, D[i, dk.C_TUN_IPVER], 0, 0, t,
            )
            od = 0 if o_orig else 1
            F[oslot, F_TUN_KIND] = tk
            if tk == dk.TUN_GTPV1 and F[oslot, F_TEID] == 0:
                F[oslot, F_TEID] = D[i, dk.C_GTP_TEID]
            _account(F, oslot, od, t, D[i, dk.C_TUN_IP_LEN], D[i, dk.C_TUN_PAY_LEN])
            if oproto == 17 and D[i, dk.C_TUN_PAY_LEN] > 0:
                _once(H, F, oslot, od, _B_D, _letter(o_orig, 68))
            F[oslot, F_STATE + od] = 1 if oproto != 6 else F[oslot, F_STATE + od]
            parent = F[oslot, F_FID]
            POF[i] = parent
        proto = D[i, dk.C_PROTO]
        flags = D[i, dk.C_FLAGS]
        seq = D[i, dk.C_SEQ]
        slot, is_orig = _flow_for_packet(
            K, F, H, used, mask, state, server_ports, EK, EF, EH,
            A[i, 0], A[i, 1], A[i, 2], A[i, 3], D[i, dk.C_SPORT], D[i, dk.C_DPORT], proto,
            D[i, dk.C_IPVER], flags, seq, t,
        )
        d = 0 if is_orig else 1
        plen = D[i, dk.C_PAY_LEN]
        if F[slot, F_PKTS] + F[slot, F_PKTS + 1] == 0:
            F[slot, F_VLAN] = D[i, dk.C_VLAN]
            F[slot, F_INNER_VLAN] = D[i, dk.C_INNER_VLAN]
            F[slot, F_PARENT] = parent
        _account(F, slot, d, t, D[i, dk.C_IP_LEN], plen)
        if proto == 6:
            _tcp_update(H, F, slot, d, flags, seq, D[i, dk.C_ACK], D[i, dk.C_WINDOW], plen)
        else:
            F[slot, F_STATE + d] = 1
            if plen > 0 and proto != 1 and proto != 58:
                _once(H, F, slot, d, _B_D, _letter(is_orig, 68))
        PF[i] = F[slot, F_FID]
        PD[i] = 1 if is_orig else 0
        if proto == 17 and plen > 0 and F[slot, F_SVC] == 0 and F[slot, F_SAMPLES] + F[slot, F_SAMPLES + 1] == 0:
            _kernel_service(F, slot, data, D[i, dk.C_PAY_OFF], plen, D[i, dk.C_SPORT], D[i, dk.C_DPORT])
        PS[i] = F[slot, F_SVC]
        if proto != 1 and proto != 58 and state[S_NO_SAMPLES] == 0 and F[slot, F_SVC] == 0:
            _sample(F, slot, d, data, D[i, dk.C_PAY_OFF], plen, S, arena, state)
    return RC_DONE, n


@njit(cache=True, nogil=True)
def flush_all(K, F, H, used, state, EK, EF, EH):
    """End every live flow (end of input); returns False when the ended buffer filled first."""
    mask = K.shape[0] - 1
    j = 0
    while j <= mask:
        if used[j]:
            if state[S_N_ENDED] >= EK.shape[0]:
                return False
            _end(K, F, H, used, mask, j, END_FLUSH, EK, EF, EH, state)
            continue
        j += 1
    return True


@njit(cache=True, nogil=True)
def rehash(K, F, H, used, K2, F2, H2, used2):
    mask2 = K2.shape[0] - 1
    for j in range(K.shape[0]):
        if used[j]:
            s = _find(K2, used2, mask2, K[j, 0], K[j, 1], K[j, 2], K[j, 3], K[j, 4])
            s = -s - 1
            used2[s] = 1
            K2[s, :] = K[j, :]
            F2[s, :] = F[j, :]
            H2[s, :] = H[j, :]


@njit(cache=True, nogil=True)
def uid_chars(fids, k1, k2, prefix, digits, out):
    """The 18 characters of each flow's uid (``lawtap.flows.engine.make_uids`` in a kernel):
    two salted splitmix64 hashes of the flow number, written as 10 + 7 base62 digits."""
    m1 = np.uint64(0xBF58476D1CE4E5B9)
    m2 = np.uint64(0x94D049BB133111EB)
    golden = np.uint64(0x9E3779B97F4A7C15)
    base = np.uint64(62)
    for i in range(fids.shape[0]):
        f = np.uint64(fids[i])
        x = f ^ k1
        x = (x ^ (x >> np.uint64(30))) * m1
        x = (x ^ (x >> np.uint64(27))) * m2
        h1 = x ^ (x >> np.uint64(31))
        x = h1 ^ k2 ^ (f * golden)
        x = (x ^ (x >> np.uint64(30))) * m1
        x = (x ^ (x >> np.uint64(27))) * m2
        h2 = x ^ (x >> np.uint64(31))
        out[i, 0] = prefix
        v = h1 % np.uint64(839299365868340224)  # 62**10
        for k in range(10):
            out[i, 1 + k] = digits[v % base]
            v //= base
        v = h2 % np.uint64(3521614606208)  # 62**7
        for k in range(7):
            out[i, 11 + k] = digits[v % base]
            v //= base


@njit(cache=True, nogil=True, _nrt=False)
def _hextet(hi, lo, g):
    """16-bit group ``g`` (0 = most significant) of the address ``hi:lo``."""
    if g < 4:
        return np.int64((hi >> np.uint64(48 - 16 * g)) & np.uint64(0xFFFF))
    return np.int64((lo >> np.uint64(112 - 16 * g)) & np.uint64(0xFFFF))


@njit(cache=True, nogil=True)
def ipv4_chars(q, out, pos):
    """Write the 32-bit address ``q`` as a dotted quad at ``out[pos:]``; return the new end."""
    for shift in range(24, -8, -8):
        o = (q >> shift) & 0xFF
        if o >= 100:
            out[pos] = 48 + o // 100
            pos += 1
        if o >= 10:
            out[pos] = 48 + (o // 10) % 10
            pos += 1
        out[pos] = 48 + o % 10
        pos += 1
        if shift:
            out[pos] = 46  # '.'
            pos += 1
    return pos


@njit(cache=True, nogil=True)
def ipv6_chars(h, v, out, pos):
    """Write the IPv6 address ``h:v`` as :mod:`ipaddress` prints it (RFC 5952: lower-case hex
    without leading zeros, the first longest run of two or more zero groups as ``::``, no
    embedded IPv4) at ``out[pos:]`` (room for 39 bytes); return the new end."""
    best_start = -1
    best_len = 0
    run_start = -1
    for g in range(8):
        if _hextet(h, v, g) == 0:
            if run_start < 0:
                run_start = g
            if g - run_start + 1 > best_len:
                best_start = run_start
                best_len = g - run_start + 1
        else:
            run_start = -1
    if best_len < 2:
        best_start = -1
    first = True
    if best_start == 0:
        first = False  # an empty first token: the text starts with "::"
    g = 0
    while g < 8:
        if not first:
            out[pos] = 58  # ':'
            pos += 1
        first = False
        if g == best_start:
            g += best_len
            continue
        x = _hextet(h, v, g)
        for shift in range(12, -4, -4):
            if x >> shift or shift == 0:
                d = (x >> shift) & 0xF
                out[pos] = 48 + d if d < 10 else 87 + d
                pos += 1
        g += 1
    if best_start >= 0 and best_start + best_len == 8:
        out[pos] = 58  # the empty last token: the text ends with "::"
        pos += 1
    return pos


@njit(cache=True, nogil=True)
def address_chars(hi, lo, offsets, out):
    """Arrow string data for a column of addresses (``engine.address_strings`` in a kernel).

    IPv4 (stored IPv4-mapped) as a dotted quad; IPv6 as :mod:`ipaddress` prints it
    (:func:`ipv6_chars`). Writes the bytes to ``out`` (room for 39 per row) and the Arrow
    offsets to ``offsets`` (``n + 1`` entries); returns the number of bytes written.
    """
    pos = 0
    offsets[0] = 0
    for i in range(lo.shape[0]):
        h = hi[i]
        v = lo[i]
        if h == np.uint64(0) and (v >> np.uint64(32)) == np.uint64(0xFFFF):
            pos = ipv4_chars(np.int64(v & np.uint64(0xFFFFFFFF)), out, pos)
        else:
            pos = ipv6_chars(h, v, out, pos)
        offsets[i + 1] = pos
    return pos
