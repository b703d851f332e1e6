"""Mobile core family: gtp-c (GTPv0/v1/v2 control), gtp-u, gtp-prime (GTP'),
diameter."""

from __future__ import annotations

from ._core import DEFINITE, MEDIUM, STRONG, TRUNC, WEAK, Ctx, detector, fits

_GTPU_TYPES = frozenset((255, 26, 254))
_GTP_ECHOISH = frozenset((1, 2, 31))
_GTPC1_TYPES = frozenset(
    list(range(1, 8)) + list(range(16, 24)) + list(range(27, 32)) + list(range(48, 56)) + list(range(58, 62))
    + [70, 71] + list(range(96, 102)) + list(range(112, 132))
)


def _gtp1(p: bytes):
    """(msg type, score) for a GTPv1 header (PT=1), else None."""
    n = len(p)
    if n < 8 or p[0] >> 5 != 1 or not p[0] & 0x10 or p[0] & 0x08:
        return None
    ln = (p[2] << 8) | p[3]
    if not fits(ln + 8, n):
        return None
    mt = p[1]
    if p[0] & 0x07 and ln < 4:
        return None
    return mt


def _gtpu_inner_ok(p: bytes) -> bool:
    off = 8
    if p[0] & 0x07:
        off = 12
        nxt = p[11]
        while nxt:
            if off >= len(p):
                return False
            el = p[off] * 4
            if el == 0:
                return False
            off += el
            nxt = p[off - 1]
    return off < len(p) and p[off] >> 4 in (4, 6)


@detector("gtp-u", "udp", (2152,), both=bytes(range(0x30, 0x38)), prio=10)
def gtp_u(ctx: Ctx) -> int:
    best = 0
    for p in (ctx.o0, ctx.r0):
        mt = _gtp1(p)
        if mt is None:
            continue
        if mt == 255:
            if _gtpu_inner_ok(p):
                return DEFINITE
            best = max(best, STRONG)
        elif mt in (26, 254):
            best = max(best, STRONG)
        elif mt in _GTP_ECHOISH and 2152 in ctx.ports:
            best = max(best, STRONG)
    return best


def _gtp2(p: bytes) -> int:
    n = len(p)
    if n < 8 or p[0] >> 5 != 2 or p[0] & 0x07:
        return 0
    ln = (p[2] << 8) | p[3]
    hdr = 12 if p[0] & 0x08 else 8
    if ln + 4 < hdr:
        return 0
    if not (fits(ln + 4, n) or (p[0] & 0x10 and ln + 4 < n)):
        return 0
    return DEFINITE if p[1] in _GTPC2_COMMON else 0


_GTPC2_COMMON = frozenset(
    [1, 2, 3, 4, 5] + list(range(32, 42)) + list(range(64, 74)) + list(range(95, 104)) + list(range(128, 172))
    + [176, 177, 178, 179, 200, 201, 211, 212, 231, 232, 233, 234, 235, 236]
)


def _gtp0(p: bytes) -> int:
    # GTPv0: version 0, PT 1, spare '111', 20-byte header, length = n - 20
    n = len(p)
    if n < 20 or p[0] & 0xFE != 0x1E:
        return 0
    ln = (p[2] << 8) | p[3]
    if not fits(ln + 20, n):
        return 0
    return STRONG if p[1] in _GTPC1_TYPES or p[1] == 255 else 0


@detector("gtp-c", "udp", (2123, 3386), both=bytes(range(0x1E, 0x20)) + bytes(range(0x30, 0x38))
          + bytes(range(0x40, 0x60)), prio=11)
def gtp_c(ctx: Ctx) -> int:
    best = 0
    for p in (ctx.o0, ctx.r0):
        if not p:
            continue
        v = p[0] >> 5
        if v == 1:
            mt = _gtp1(p)
            if mt is None or mt in _GTPU_TYPES:
                continue
            if mt in _GTP_ECHOISH:
                if 2152 not in ctx.ports:
                    best = max(best, STRONG if 2123 in ctx.ports else MEDIUM)
            elif mt in _GTPC1_TYPES:
                return DEFINITE
        elif v == 2:
            best = max(best, _gtp2(p))
        elif v == 0:
            best = max(best, _gtp0(p))
    return best


def _gtp_prime(p: bytes) -> int:
    n = len(p)
    if n < 6 or p[0] & 0x10 or p[0] & 0x0E != 0x0E or p[0] >> 5 > 2:
        return 0
    hl = 20 if p[0] & 0x01 else 6
    ln = (p[2] << 8) | p[3]
    if n < hl or not fits(ln + hl, n):
        return 0
    if p[1] in (240, 241):
        return DEFINITE
    if p[1] in (1, 2, 3, 4, 5, 6, 7):
        return MEDIUM
    return 0


@detector("gtp-prime", "udp", (3386,), both=b"\x0e\x0f\x2e\x2f\x4e\x4f", prio=12)
def gtp_prime(ctx: Ctx) -> int:
    return max(_gtp_prime(ctx.o0), _gtp_prime(ctx.r0))


# --------------------------------------------------------------------------
# Diameter (RFC 6733) over TCP / SCTP

_DIAM_CMDS = frozenset((257, 258, 271, 272, 274, 275, 280, 282, 283, 284, 285, 286, 287, 288)
                       + tuple(range(300, 330)) + (8388620, 8388621, 8388622))


def _diameter(p: bytes) -> int:
    n = len(p)
    if n < 20 or p[0] != 1 or p[4] & 0x0F:
        return 0
    ln = (p[1] << 16) | (p[2] << 8) | p[3]
    if ln < 20 or ln & 3 or not (ln == n or (ln < n) or n >= TRUNC):
        return 0
    cc = (p[5] << 16) | (p[6] << 8) | p[7]
    if cc in _DIAM_CMDS:
        return DEFINITE if ln <= n or n >= TRUNC else STRONG
    return MEDIUM if ln == n else WEAK


@detector("diameter", ("tcp", "sctp"), (3868, 3869), both=b"\x01", prio=40)
def diameter(ctx: Ctx) -> int:
    return max(_diameter(ctx.o0), _diameter(ctx.r0))
