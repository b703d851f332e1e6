"""L2–L4 decoding of a whole batch in one numba call.

Why a kernel: Python spends about a microsecond per packet just to look at it, which caps a
pure-Python decoder near 1 M packets/s before any work is done. This kernel walks every packet
of a :class:`~lawtap.sources.batch.PacketBatch` in compiled code and fills two column arrays:

* ``A`` (uint64, ``n x 8``): inner src (hi, lo), inner dst (hi, lo), outer src, outer dst.
  IPv4 addresses are stored IPv4-mapped (``::ffff:a.b.c.d``) so both families share one key.
* ``D`` (int64, ``n x NCOL``): everything else, indexed by the ``C_*`` constants below.

Layers understood: Ethernet, Linux SLL/SLL2, raw IPv4/IPv6, BSD NULL/loopback; 802.1Q/802.1ad
(any depth), MPLS (any depth), PPPoE session; IPv4 with options, IPv6 with extension headers;
GRE, IP-in-IP (4/41), VXLAN (UDP 4789) and GTP-U (UDP 2152) tunnels, decapsulated with the
outer layer kept in the ``C_TUN_*``/outer-address columns; TCP, UDP, ICMP, ICMPv6 and SCTP.

IP fragments are not reassembled here: the packet gets status ``ST_FRAGMENT`` and the offset of
its IP header, and :mod:`lawtap.decode.defrag` rebuilds the datagram and decodes it again.
"""

from __future__ import annotations

from lawtap.jit import njit
import numpy as np

# ---- columns of D -------------------------------------------------------------------------
C_STATUS = 0  # ST_* below
C_WEIRD = 1  # W_* code of the first anomaly in this packet (0: none)
C_IPVER = 2
C_PROTO = 3  # transport protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, 132 sctp)
C_SPORT = 4  # for ICMP: type
C_DPORT = 5  # for ICMP: code
C_FLAGS = 6  # TCP flags byte
C_WINDOW = 7
C_SEQ = 8
C_ACK = 9
C_PAY_OFF = 10  # offset of the transport payload in the batch buffer
C_PAY_LEN = 11
C_IP_LEN = 12  # IP total length (header + payload), as Zeek's ip_bytes counts it
C_VLAN = 13  # outermost VLAN id, -1 if none
C_INNER_VLAN = 14  # second VLAN id (QinQ), -1 if none
C_TUN_KIND = 15  # TUN_* below
C_TUN_IPVER = 16
C_TUN_PROTO = 17  # 17 for UDP tunnels, 47 GRE, 4/41 IP-in-IP
C_TUN_SPORT = 18
C_TUN_DPORT = 19
C_TUN_IP_LEN = 20
C_TUN_PAY_LEN = 21
C_L3_OFF = 22  # offset of the (innermost) IP header in the buffer (for the fragment slow path)
C_L3_LEN = 23  # bytes available from C_L3_OFF
C_GTP_TEID = 24
NCOL = 25

# ---- status -------------------------------------------------------------------------------
ST_FLOW = 0  # decoded to a transport 5-tuple: goes to the flow table
ST_NON_IP = 1  # ARP, LLDP, STP, PPPoE discovery, …: counted, not a flow
ST_IP_OTHER = 2  # IP with a transport we don't track (ESP, OSPF, …)
ST_FRAGMENT = 3  # an IP fragment: the defragmenter takes it
ST_BAD = 4  # malformed: C_WEIRD says why

# ---- tunnel kinds (Zeek's Tunnel::Type names in TUNNEL_NAMES) ------------------------------
TUN_NONE = 0
TUN_GTPV1 = 1
TUN_VXLAN = 2
TUN_GRE = 3
TUN_IP = 4
TUNNEL_NAMES = {TUN_GTPV1: "Tunnel::GTPv1", TUN_VXLAN: "Tunnel::VXLAN", TUN_GRE: "Tunnel::GRE", TUN_IP: "Tunnel::IP"}

# ---- weird codes --------------------------------------------------------------------------
WEIRD_NAMES = [
    "",
    "truncated_link_header",
    "unknown_link_type",
    "truncated_IP",
    "bad_IP_version",
    "bad_IP_header_len",
    "IP_len_exceeds_caplen",  # internal: caplen shorter than IP length (snaplen cut)
    "truncated_header",  # transport header cut short
    "bad_TCP_header_len",
    "truncated_ipv6_ext_header",
    "bad_GRE_header",
    "bad_GTP_header",
    "truncated_tunnel",
    "tunnel_depth_exceeded",
    "bad_IP_len",
    "mpls_stack_too_deep",
    "vlan_stack_too_deep",
]
W_TRUNC_LINK = 1
W_UNKNOWN_LINK = 2
W_TRUNC_IP = 3
W_BAD_IP_VER = 4
W_BAD_IP_HLEN = 5
W_IP_CAPLEN = 6
W_TRUNC_L4 = 7
W_BAD_TCP_HLEN = 8
W_TRUNC_V6EXT = 9
W_BAD_GRE = 10
W_BAD_GTP = 11
W_TRUNC_TUN = 12
W_TUN_DEPTH = 13
W_BAD_IP_LEN = 14
W_MPLS_DEPTH = 15
W_VLAN_DEPTH = 16

V4_MAPPED_HI = np.uint64(0)
V4_MAPPED_PREFIX = np.uint64(0xFFFF00000000)

VXLAN_PORT = 4789
GTPU_PORT = 2152


@njit(cache=True, inline="always")
def _u16(b, i):
    return (np.int64(b[i]) << 8) | np.int64(b[i + 1])


@njit(cache=True, inline="always")
def _u32(b, i):
    return (np.int64(b[i]) << 24) | (np.int64(b[i + 1]) << 16) | (np.int64(b[i + 2]) << 8) | np.int64(b[i + 3])


@njit(cache=True, inline="always")
def _u64(b, i):
    v = np.uint64(0)
    for k in range(8):
        v = (v << np.uint64(8)) | np.uint64(b[i + k])
    return v


# Result codes of the internal layer walkers.
_NEXT_ETHER = 1  # continue with an ethertype at `pos`
_NEXT_IP4 = 2
_NEXT_IP6 = 3
_DONE = 0


@njit(cache=True, _nrt=False)
def _ether_chain(b, pos, end, ethertype, D, i):
    """Walk VLAN/MPLS/PPPoE shims from an ethertype; returns (kind, pos) with kind _NEXT_IP4/6."""
    vlans = 0
    while True:
        if ethertype == 0x0800:
            return _NEXT_IP4, pos
        if ethertype == 0x86DD:
            return _NEXT_IP6, pos
        if ethertype == 0x8100 or ethertype == 0x88A8 or ethertype == 0x9100:
            if pos + 4 > end:
                D[i, C_WEIRD] = W_TRUNC_LINK
                return -1, pos
            vid = _u16(b, pos) & 0x0FFF
            if D[i, C_VLAN] < 0:
                D[i, C_VLAN] = vid
            elif D[i, C_INNER_VLAN] < 0:
                D[i, C_INNER_VLAN] = vid
            vlans += 1
            if vlans > 8:
                D[i, C_WEIRD] = W_VLAN_DEPTH
                return -1, pos
            ethertype = _u16(b, pos + 2)
            pos += 4
            continue
        if ethertype == 0x8847 or ethertype == 0x8848:
            depth = 0
            while True:
                if pos + 4 > end:
                    D[i, C_WEIRD] = W_TRUNC_LINK
                    return -1, pos
                bos = b[pos + 2] & 1
                pos += 4
                depth += 1
                if bos:
                    break
                if depth > 16:
                    D[i, C_WEIRD] = W_MPLS_DEPTH
                    return -1, pos
            if pos >= end:
                D[i, C_WEIRD] = W_TRUNC_LINK
                return -1, pos
            nib = b[pos] >> 4
            if nib == 4:
                return _NEXT_IP4, pos
            if nib == 6:
                return _NEXT_IP6, pos
            # Pseudowire control word then Ethernet: skip the 4-byte control word when it is 0.
            if nib == 0 and pos + 4 + 14 <= end:
                pos += 4
                ethertype = _u16(b, pos + 12)
                pos += 14
                continue
            return 0, pos
        if ethertype == 0x8864:  # PPPoE session: 6-byte header + 2-byte PPP protocol
            if pos + 8 > end:
                D[i, C_WEIRD] = W_TRUNC_LINK
                return -1, pos
            ppp = _u16(b, pos + 6)
            pos += 8
            if ppp == 0x0021:
                return _NEXT_IP4, pos
            if ppp == 0x0057:
                return _NEXT_IP6, pos
            return 0, pos
        return 0, pos


@njit(cache=True, _nrt=False)
def _set_addr4(A, i, col, b, pos):
    A[i, col] = np.uint64(0)
    A[i, col + 1] = V4_MAPPED_PREFIX | np.uint64(_u32(b, pos))


@njit(cache=True, _nrt=False)
def _set_addr6(A, i, col, b, pos):
    A[i, col] = _u64(b, pos)
    A[i, col + 1] = _u64(b, pos + 8)


@njit(cache=True, _nrt=False)
def _decode_one(b, start, caplen, linktype, A, D, i):
    end = start + caplen
    pos = start
    kind = 0
    # ---- link layer ----
    if linktype == 1:  # Ethernet
        if caplen < 14:
            D[i, C_WEIRD] = W_TRUNC_LINK
            D[i, C_STATUS] = ST_BAD
            return
        ethertype = _u16(b, pos + 12)
        pos += 14
        if ethertype < 0x0600:  # 802.3 length field: LLC/SNAP, not IP for our purposes
            D[i, C_STATUS] = ST_NON_IP
            return
        kind, pos = _ether_chain(b, pos, end, ethertype, D, i)
    elif linktype == 113:  # Linux cooked v1: 16 bytes, protocol at 14
        if caplen < 16:
            D[i, C_WEIRD] = W_TRUNC_LINK
            D[i, C_STATUS] = ST_BAD
            return
        kind, pos = _ether_chain(b, pos + 16, end, _u16(b, pos + 14), D, i)
    elif linktype == 276:  # Linux cooked v2: 20 bytes, protocol at 0
        if caplen < 20:
            D[i, C_WEIRD] = W_TRUNC_LINK
            D[i, C_STATUS] = ST_BAD
            return
        kind, pos = _ether_chain(b, pos + 20, end, _u16(b, pos), D, i)
    elif linktype == 101 or linktype == 12 or linktype == 14 or linktype == 228 or linktype == 229:
        if caplen < 1:
            D[i, C_WEIRD] = W_TRUNC_LINK
            D[i, C_STATUS] = ST_BAD
            return
        nib = b[pos] >> 4
        kind = _NEXT_IP4 if nib == 4 else (_NEXT_IP6 if nib == 6 else -2)
        if kind == -2:
            D[i, C_WEIRD] = W_BAD_IP_VER
            D[i, C_STATUS] = ST_BAD
            return
    elif linktype == 0 or linktype == 108:  # BSD NULL (host order) / LOOP (network order)
        if caplen < 4:
            D[i, C_WEIRD] = W_TRUNC_LINK
            D[i, C_STATUS] = ST_BAD
            return
        if linktype == 108:
            fam = _u32(b, pos)
        else:
            fam = np.int64(b[pos]) | (np.int64(b[pos + 1]) << 8) | (np.int64(b[pos + 2]) << 16) | (np.int64(b[pos + 3]) << 24)
            if fam > 0xFFFF:  # written big-endian by the capturing host
                fam = _u32(b, pos)
        pos += 4
        if fam == 2:
            kind = _NEXT_IP4
        elif fam == 10 or fam == 24 or fam == 28 or fam == 30:
            kind = _NEXT_IP6
        else:
            D[i, C_STATUS] = ST_NON_IP
            return
    else:
        D[i, C_WEIRD] = W_UNKNOWN_LINK
        D[i, C_STATUS] = ST_BAD
        return
    if kind < 0:
        D[i, C_STATUS] = ST_BAD
        return
    if kind == 0:
        D[i, C_STATUS] = ST_NON_IP
        return
    _decode_ip(b, pos, end, kind, A, D, i)


@njit(cache=True, _nrt=False)
def _decode_ip(b, pos, end, kind, A, D, i):
    """Decode an IP packet at ``pos``, following tunnels (at most 4 deep) in a loop."""
    for _depth in range(4):
        kind, pos, end = _decode_ip_layer(b, pos, end, kind, A, D, i)
        if kind <= 0:
            return
    D[i, C_WEIRD] = W_TUN_DEPTH
    D[i, C_STATUS] = ST_BAD


@njit(cache=True, _nrt=False)
def _decode_ip_layer(b, pos, end, kind, A, D, i):
    """Decode one IP layer and its transport; returns the inner IP to decode next, if any."""
    D[i, C_L3_OFF] = pos
    D[i, C_L3_LEN] = end - pos
    if kind == _NEXT_IP4:
        if pos + 20 > end:
            D[i, C_WEIRD] = W_TRUNC_IP
            D[i, C_STATUS] = ST_BAD
            return 0, pos, end
        vhl = b[pos]
        if (vhl >> 4) != 4:
            D[i, C_WEIRD] = W_BAD_IP_VER
            D[i, C_STATUS] = ST_BAD
            return 0, pos, end
        hlen = np.int64(vhl & 0x0F) * 4
        if hlen < 20 or pos + hlen > end:
            D[i, C_WEIRD] = W_BAD_IP_HLEN
            D[i, C_STATUS] = ST_BAD
            return 0, pos, end
        total = _u16(b, pos + 2)
        if total < hlen:
            # TSO/offloaded captures write 0 here; trust the capture length then.
            if total == 0:
                total = end - pos
            else:
                D[i, C_WEIRD] = W_BAD_IP_LEN
                D[i, C_STATUS] = ST_BAD
                return 0, pos, end
        frag = _u16(b, pos + 6)
        proto = np.int64(b[pos + 9])
        D[i, C_IPVER] = 4
        D[i, C_IP_LEN] = total
        _set_addr4(A, i, 0, b, pos + 12)
        _set_addr4(A, i, 2, b, pos + 16)
        l4end = pos + total
        if l4end > end:
            l4end = end  # snaplen cut: decode what we have
        if (frag & 0x3FFF) != 0:  # MF set or offset != 0
            D[i, C_PROTO] = proto
            D[i, C_STATUS] = ST_FRAGMENT
            return 0, pos, end
        return _decode_l4(b, pos + hlen, l4end, proto, A, D, i)
    # IPv6
    if pos + 40 > end:
        D[i, C_WEIRD] = W_TRUNC_IP
        D[i, C_STATUS] = ST_BAD
        return 0, pos, end
    if (b[pos] >> 4) != 6:
        D[i, C_WEIRD] = W_BAD_IP_VER
        D[i, C_STATUS] = ST_BAD
        return 0, pos, end
    plen = _u16(b, pos + 4)
    nh = np.int64(b[pos + 6])
    D[i, C_IPVER] = 6
    D[i, C_IP_LEN] = plen + 40
    _set_addr6(A, i, 0, b, pos + 8)
    _set_addr6(A, i, 2, b, pos + 24)
    l4end = pos + 40 + plen
    if plen == 0 or l4end > end:  # jumbogram or snaplen cut
        l4end = end
    p = pos + 40
    for _ in range(16):
        if nh == 0 or nh == 43 or nh == 60 or nh == 135 or nh == 139 or nh == 140:
            if p + 8 > l4end:
                D[i, C_WEIRD] = W_TRUNC_V6EXT
                D[i, C_STATUS] = ST_BAD
                return 0, pos, end
            nh2 = np.int64(b[p])
            p += (np.int64(b[p + 1]) + 1) * 8
            nh = nh2
        elif nh == 51:  # AH: length in 4-byte units minus 2
            if p + 8 > l4end:
                D[i, C_WEIRD] = W_TRUNC_V6EXT
                D[i, C_STATUS] = ST_BAD
                return 0, pos, end
            nh2 = np.int64(b[p])
            p += (np.int64(b[p + 1]) + 2) * 4
            nh = nh2
        elif nh == 44:  # fragment header
            if p + 8 > l4end:
                D[i, C_WEIRD] = W_TRUNC_V6EXT
                D[i, C_STATUS] = ST_BAD
                return 0, pos, end
            offm = _u16(b, p + 2)
            if (offm & 0xFFF9) != 0:  # offset != 0 or M set: a real fragment
                D[i, C_PROTO] = np.int64(b[p])
                D[i, C_STATUS] = ST_FRAGMENT
                return 0, pos, end
            nh = np.int64(b[p])  # atomic fragment: carry on
            p += 8
        else:
            break
    if p > l4end:
        D[i, C_WEIRD] = W_TRUNC_V6EXT
        D[i, C_STATUS] = ST_BAD
        return 0, pos, end
    return _decode_l4(b, p, l4end, nh, A, D, i)


@njit(cache=True, _nrt=False)
def _push_tunnel(D, A, i, kind):
    """Remember the current (outer) layer as the tunnel before decoding the inner packet.

    Only the outermost tunnel is kept: nested tunnels are rare and Zeek also reports the
    immediate parent only in conn.tunnel_parents.
    """
    if D[i, C_TUN_KIND] != TUN_NONE:
        return
    D[i, C_TUN_KIND] = kind
    D[i, C_TUN_IPVER] = D[i, C_IPVER]
    D[i, C_TUN_PROTO] = D[i, C_PROTO]
    D[i, C_TUN_SPORT] = D[i, C_SPORT]
    D[i, C_TUN_DPORT] = D[i, C_DPORT]
    D[i, C_TUN_IP_LEN] = D[i, C_IP_LEN]
    D[i, C_TUN_PAY_LEN] = D[i, C_PAY_LEN]
    for k in range(4):
        A[i, 4 + k] = A[i, k]
    D[i, C_SPORT] = 0
    D[i, C_DPORT] = 0
    D[i, C_FLAGS] = 0
    D[i, C_PAY_LEN] = 0


@njit(cache=True, _nrt=False)
def _decode_l4(b, p, end, proto, A, D, i):
    D[i, C_PROTO] = proto
    if proto == 6:
        if p + 20 > end:
            D[i, C_WEIRD] = W_TRUNC_L4
            D[i, C_STATUS] = ST_BAD
            return 0, p, end
        doff = np.int64(b[p + 12] >> 4) * 4
        if doff < 20:
            D[i, C_WEIRD] = W_BAD_TCP_HLEN
            D[i, C_STATUS] = ST_BAD
            return 0, p, end
        D[i, C_SPORT] = _u16(b, p)
        D[i, C_DPORT] = _u16(b, p + 2)
        D[i, C_SEQ] = _u32(b, p + 4)
        D[i, C_ACK] = _u32(b, p + 8)
        D[i, C_FLAGS] = np.int64(b[p + 13])
        D[i, C_WINDOW] = _u16(b, p + 14)
        if p + doff > end:
            D[i, C_WEIRD] = W_BAD_TCP_HLEN
            D[i, C_PAY_OFF] = end
            D[i, C_PAY_LEN] = 0
        else:
            D[i, C_PAY_OFF] = p + doff
            D[i, C_PAY_LEN] = end - p - doff
        D[i, C_STATUS] = ST_FLOW
        return 0, p, end
    if proto == 17:
        if p + 8 > end:
            D[i, C_WEIRD] = W_TRUNC_L4
            D[i, C_STATUS] = ST_BAD
            return 0, p, end
        sport = _u16(b, p)
        dport = _u16(b, p + 2)
        ulen = _u16(b, p + 4)
        D[i, C_SPORT] = sport
        D[i, C_DPORT] = dport
        pay = p + 8
        pend = end
        if ulen >= 8 and p + ulen < end:
            pend = p + ulen  # Ethernet padding after the datagram is not payload
        D[i, C_PAY_OFF] = pay
        D[i, C_PAY_LEN] = pend - pay
        D[i, C_STATUS] = ST_FLOW
        # ---- UDP tunnels ----
        if dport == GTPU_PORT or sport == GTPU_PORT:
            return _gtpu(b, pay, pend, A, D, i)
        if dport == VXLAN_PORT:
            return _vxlan(b, pay, pend, A, D, i)
        return 0, p, end
    if proto == 1 or proto == 58:
        if p + 4 > end:
            D[i, C_WEIRD] = W_TRUNC_L4
            D[i, C_STATUS] = ST_BAD
            return 0, p, end
        D[i, C_SPORT] = np.int64(b[p])
        D[i, C_DPORT] = np.int64(b[p + 1])
        D[i, C_PAY_OFF] = p + 4
        D[i, C_PAY_LEN] = end - p - 4
        D[i, C_STATUS] = ST_FLOW
        return 0, p, end
    if proto == 132:
        if p + 12 > end:
            D[i, C_WEIRD] = W_TRUNC_L4
            D[i, C_STATUS] = ST_BAD
            return 0, p, end
        D[i, C_SPORT] = _u16(b, p)
        D[i, C_DPORT] = _u16(b, p + 2)
        D[i, C_PAY_OFF] = p + 12
        D[i, C_PAY_LEN] = end - p - 12
        D[i, C_STATUS] = ST_FLOW
        return 0, p, end
    if proto == 47:
        return _gre(b, p, end, A, D, i)
    if proto == 4 or proto == 41:
        _push_tunnel(D, A, i, TUN_IP)
        return (_NEXT_IP4 if proto == 4 else _NEXT_IP6), p, end
    D[i, C_STATUS] = ST_IP_OTHER
    return 0, p, end


@njit(cache=True, _nrt=False)
def _gre(b, p, end, A, D, i):
    if p + 4 > end:
        D[i, C_WEIRD] = W_BAD_GRE
        D[i, C_STATUS] = ST_BAD
        return 0, p, end
    flags = _u16(b, p)
    ver = flags & 7
    ptype = _u16(b, p + 2)
    q = p + 4
    if ver == 0:
        if flags & 0x8000 or flags & 0x4000:
            q += 4  # checksum (+ reserved) or routing present
        if flags & 0x2000:
            q += 4  # key
        if flags & 0x1000:
            q += 4  # sequence number
    elif ver == 1:  # enhanced GRE (PPTP): key always, seq and ack optional, carries PPP
        q += 4
        if flags & 0x1000:
            q += 4
        if flags & 0x0080:
            q += 4
    else:
        D[i, C_WEIRD] = W_BAD_GRE
        D[i, C_STATUS] = ST_BAD
        return 0, p, end
    if q > end:
        D[i, C_WEIRD] = W_BAD_GRE
        D[i, C_STATUS] = ST_BAD
        return 0, p, end
    if ptype == 0x88BE and ver == 0:  # ERSPAN type II: 8-byte header then Ethernet
        q += 8
        ptype = 0x6558
    _push_tunnel(D, A, i, TUN_GRE)
    if ptype == 0x6558:  # transparent Ethernet bridging
        if q + 14 > end:
            D[i, C_WEIRD] = W_TRUNC_TUN
            D[i, C_STATUS] = ST_BAD
            return 0, p, end
        kind, q = _ether_chain(b, q + 14, end, _u16(b, q + 12), D, i)
    elif ptype == 0x880B:  # PPP (PPTP)
        if q + 2 > end:
            D[i, C_STATUS] = ST_IP_OTHER
            return 0, p, end
        if b[q] == 0xFF and q + 4 <= end:
            q += 2
        pp = _u16(b, q)
        if pp == 0x0021:
            kind = _NEXT_IP4
        elif pp == 0x0057:
            kind = _NEXT_IP6
        else:
            kind = 0
        q += 2
    else:
        kind, q = _ether_chain(b, q, end, ptype, D, i)
    if kind <= 0:
        D[i, C_STATUS] = ST_IP_OTHER if kind == 0 else ST_BAD
        return 0, p, end
    return kind, q, end


@njit(cache=True, _nrt=False)
def _vxlan(b, p, end, A, D, i):
    if p + 8 + 14 > end or (b[p] & 0x08) == 0:
        return 0, p, end  # not VXLAN after all: keep it a plain UDP flow
    q = p + 8
    ethertype = _u16(b, q + 12)
    _push_tunnel(D, A, i, TUN_VXLAN)
    kind, q = _ether_chain(b, q + 14, end, ethertype, D, i)
    if kind <= 0:
        D[i, C_STATUS] = ST_NON_IP if kind == 0 else ST_BAD
        return 0, p, end
    return kind, q, end


@njit(cache=True, _nrt=False)
def _gtpu(b, p, end, A, D, i):
    """GTPv1-U: only G-PDUs (message type 255) carry user IP packets."""
    if p + 8 > end:
        return 0, p, end
    flags = b[p]
    if (flags >> 5) != 1 or (flags & 0x10) == 0:
        return 0, p, end  # not GTPv1 (GTP prime or garbage): leave as UDP
    if b[p + 1] != 0xFF:
        return 0, p, end  # echo, error indication, end marker: signalling on the tunnel flow itself
    D[i, C_GTP_TEID] = _u32(b, p + 4)
    q = p + 8
    if flags & 0x07:
        q += 4
        if flags & 0x04:  # extension headers chain
            nxt = b[q - 1]
            for _ in range(16):
                if nxt == 0:
                    break
                if q >= end:
                    D[i, C_WEIRD] = W_BAD_GTP
                    return 0, p, end
                ln = np.int64(b[q]) * 4
                if ln == 0 or q + ln > end:
                    D[i, C_WEIRD] = W_BAD_GTP
                    return 0, p, end
                nxt = b[q + ln - 1]
                q += ln
    if q >= end:
        return 0, p, end
    nib = b[q] >> 4
    if nib != 4 and nib != 6:
        D[i, C_WEIRD] = W_BAD_GTP
        return 0, p, end
    _push_tunnel(D, A, i, TUN_GTPV1)
    return (_NEXT_IP4 if nib == 4 else _NEXT_IP6), q, end


@njit(cache=True, nogil=True)
def decode_batch(data, offset, caplen, linktype, A, D):
    """Decode ``n`` packets into ``A``/``D`` (preallocated; see module docstring)."""
    n = offset.shape[0]
    for i in range(n):
        for c in range(NCOL):
            D[i, c] = 0
        D[i, C_VLAN] = -1
        D[i, C_INNER_VLAN] = -1
        _decode_one(data, offset[i], np.int64(caplen[i]), linktype[i], A, D, i)


def new_columns(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Allocate the ``A`` and ``D`` arrays for a batch of ``n`` packets."""
    return np.zeros((n, 8), dtype=np.uint64), np.zeros((n, NCOL), dtype=np.int64)
