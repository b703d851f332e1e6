"""VPN and tunnel family: openvpn, wireguard, ike, pptp, l2tp, vxlan."""

from __future__ import annotations

from ._core import DEFINITE, MEDIUM, STRONG, TRUNC, WEAK, Ctx, detector

# --------------------------------------------------------------------------
# OpenVPN: opcode (5 bits) + key id (3 bits), 8-byte session id
#   1 P_CONTROL_HARD_RESET_CLIENT_V1   2 ..._SERVER_V1   3 P_CONTROL_SOFT_RESET_V1
#   4 P_CONTROL_V1   5 P_ACK_V1   6 P_DATA_V1   7 ..._CLIENT_V2   8 ..._SERVER_V2
#   9 P_DATA_V2   10 ..._CLIENT_V3   11 P_CONTROL_WKC_V1

_OVPN_CLIENT_RESET = (1, 7, 10)
_OVPN_SERVER_RESET = (2, 8)
# client hard reset sizes: bare (14), + tls-auth/tls-crypt (HMAC 16/20/32/64 + 8), + early-negotiation TLV
_OVPN_RESET_LENS = frozenset(
    {14, 20}
    | {22 + h for h in (16, 20, 32, 64)}
    | {28 + h for h in (16, 20, 32, 64)}
    | {54 + 8, 54 + 14}
)


def _ovpn_msgs(pkts, tcp: bool) -> list[bytes]:
    out = []
    for p in pkts:
        if tcp:
            if len(p) < 3:
                return out
            ln = (p[0] << 8) | p[1]
            if ln < 1 or (ln + 2 > len(p) and len(p) < TRUNC and ln + 2 - len(p) > 2048):
                return out
            p = p[2 : 2 + ln]
        out.append(p)
    return out


def _openvpn(ctx: Ctx) -> int:
    tcp = ctx.transport == "tcp"
    o = _ovpn_msgs(ctx.orig[:3], tcp)
    r = _ovpn_msgs(ctx.resp[:3], tcp)
    best = 0
    for a, b in ((o, r), (r, o)):
        if not a or len(a[0]) < 10:
            continue
        p = a[0]
        op, kid = p[0] >> 3, p[0] & 7
        if kid != 0 or op not in _OVPN_CLIENT_RESET + _OVPN_SERVER_RESET:
            continue
        sid = p[1:9]
        if op in _OVPN_CLIENT_RESET:
            # the server's reply acknowledges us: our session id appears in it
            if b and len(b[0]) >= 18 and b[0][0] >> 3 in _OVPN_SERVER_RESET and sid in b[0][9:]:
                return DEFINITE
            if len(a) > 1 and len(a[1]) >= 9 and a[1][1:9] == sid and a[1][0] >> 3 in (3, 4, 5, 7, 10, 11):
                best = max(best, STRONG + 10)
            elif b and len(b[0]) >= 10 and b[0][0] in (0x10, 0x40) and len(b) > 1 and len(b[1]) >= 9 and (
                b[1][1:9] == b[0][1:9]
            ):
                best = max(best, STRONG)  # tls-crypt: the server keeps its session id
            elif len(p) in _OVPN_RESET_LENS:
                best = max(best, MEDIUM - 10)
        else:
            # server reset first (capture started late): ack array then remote session id
            na = p[9]
            if 1 <= na <= 8 and len(p) >= 10 + 4 * na + 8 + 4:
                if len(a) > 1 and len(a[1]) >= 9 and a[1][1:9] == sid:
                    best = max(best, STRONG + 10)
                else:
                    best = max(best, MEDIUM - 10)
    return best


_OVPN_GATE = bytes(x for x in range(256) if x & 7 == 0 and (x >> 3) in (1, 2, 7, 8, 10))


@detector("openvpn", "udp", (1194, 1195, 1197, 443), both=_OVPN_GATE, prio=30)
def openvpn(ctx: Ctx) -> int:
    return _openvpn(ctx)


@detector("openvpn", "tcp", (1194, 443, 1195), both=b"\x00", prio=45)
def openvpn_tcp(ctx: Ctx) -> int:
    return _openvpn(ctx)


# --------------------------------------------------------------------------
# WireGuard: type (1..4) + three zero bytes, fixed sizes


def _wg(p: bytes) -> int:
    n = len(p)
    if n < 32 or p[1:4] != b"\x00\x00\x00":
        return 0
    t = p[0]
    if (t == 1 and n == 148) or (t == 2 and n == 92):
        return DEFINITE
    if t == 3 and n == 64:
        return STRONG
    if t == 4 and (n - 32) % 16 == 0:
        return WEAK
    return 0


@detector("wireguard", "udp", (51820, 51821), both=b"\x01\x02\x03\x04", prio=15)
def wireguard(ctx: Ctx) -> int:
    so, sr = _wg(ctx.o0), _wg(ctx.r0)
    s = max(so, sr)
    if s == WEAK:
        # transport data only: same receiver index on every packet of a direction
        for pk in (ctx.orig, ctx.resp):
            if len(pk) >= 2 and all(_wg(x) == WEAK and x[4:8] == pk[0][4:8] for x in pk):
                return STRONG
        if so == WEAK and sr == WEAK:
            return MEDIUM
    return s


# --------------------------------------------------------------------------
# IKE / ISAKMP (UDP 500, 4500 with non-ESP marker)


def _ike(p: bytes) -> int:
    if len(p) >= 32 and p[:4] == b"\x00\x00\x00\x00":
        p = p[4:]  # NAT-T non-ESP marker
    n = len(p)
    if n < 28 or p[:8] == b"\x00" * 8:
        return 0
    ver, xt = p[17], p[18]
    if ver not in (0x10, 0x20):
        return 0
    if ver == 0x10 and xt not in (0, 1, 2, 3, 4, 5, 6, 32, 33, 34):
        return 0
    if ver == 0x20 and not 34 <= xt <= 43:
        return 0
    ln = int.from_bytes(p[24:28], "big")
    if ln == n or (n >= TRUNC and ln > n):
        return DEFINITE
    return 0


@detector("ike", "udp", (500, 4500), prio=35, port_only=True)
def ike(ctx: Ctx) -> int:
    return max(_ike(ctx.o0), _ike(ctx.r0))


# --------------------------------------------------------------------------
# PPTP control (TCP 1723): length, type 1, magic cookie 0x1A2B3C4D


@detector("pptp", "tcp", (1723,), both=b"\x00", prio=35)
def pptp(ctx: Ctx) -> int:
    for p in (ctx.o0, ctx.r0):
        if len(p) >= 16 and p[2:4] == b"\x00\x01" and p[4:8] == b"\x1a\x2b\x3c\x4d":
            return DEFINITE
    return 0


# --------------------------------------------------------------------------
# L2TPv2 control (UDP 1701): T L S bits, version 2


@detector("l2tp", "udp", (1701,), both=b"\xc8\xc0", prio=45)
def l2tp(ctx: Ctx) -> int:
    for p in (ctx.o0, ctx.r0):
        if len(p) >= 12 and p[0] & 0xCB == 0xC8 and p[1] & 0x0F == 2:
            ln = (p[2] << 8) | p[3]
            if ln == len(p):
                # first AVP of a control message: Message Type (attr 0)
                return DEFINITE if p[12:13] and p[14:18] == b"\x00\x00\x00\x00" else STRONG
    return 0


# --------------------------------------------------------------------------
# VXLAN (UDP 4789): flags 0x08, reserved zero, VNI, reserved zero, inner Ethernet


@detector("vxlan", "udp", (4789, 8472), both=b"\x08\x0c", prio=20)
def vxlan(ctx: Ctx) -> int:
    for p in (ctx.o0, ctx.r0):
        if len(p) >= 22 and p[0] in (0x08, 0x0C) and p[1:4] == b"\x00\x00\x00" and p[7] == 0:
            et = p[20:22]
            if et in (b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x81\x00"):
                return DEFINITE if ctx.has_port(4789, 8472) else MEDIUM
    return 0
