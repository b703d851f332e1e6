"""Voice/video family: sip, rtp, rtcp, stun, mgcp, iax2, h323, skinny."""

from __future__ import annotations

from ._core import DEFINITE, MEDIUM, STRONG, TRUNC, WEAK, Ctx, detector, first_line

# --------------------------------------------------------------------------
# SIP (UDP, TCP)

_SIP_METHODS = frozenset(
    b"INVITE ACK BYE CANCEL REGISTER OPTIONS PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER MESSAGE UPDATE".split()
)


def _sip(p: bytes) -> int:
    if p.startswith(b"SIP/2.0 ") and p[8:11].isdigit():
        return DEFINITE
    sp = p.find(b" ", 0, 12)
    if sp > 0 and p[:sp] in _SIP_METHODS:
        line = first_line(p)
        if line.endswith(b" SIP/2.0") and (p[sp + 1 : sp + 5] in (b"sip:", b"tel:") or p[sp + 1 : sp + 5] == b"sips"):
            return DEFINITE
        if line.endswith(b" SIP/2.0"):
            return STRONG
    return 0


@detector("sip", ("udp", "tcp"), (5060, 5061, 5062, 5080), both=b"SIABCROPNMU\r", prio=12)
def sip(ctx: Ctx) -> int:
    s = max(_sip(ctx.o0), _sip(ctx.r0))
    if s:
        return s
    if ctx.o0 in (b"\r\n\r\n", b"\r\n") and ctx.has_port(5060, 5061):
        return WEAK  # keep-alive
    return 0


# --------------------------------------------------------------------------
# RTP / RTCP


def _rtp_hdr(p: bytes):
    n = len(p)
    if n < 12 or p[0] & 0xC0 != 0x80:
        return None
    pt = p[1] & 0x7F
    if 72 <= pt <= 79:
        return None
    if 12 + 4 * (p[0] & 0x0F) > n:
        return None
    if p[0] & 0x20 and n < TRUNC and (p[-1] == 0 or p[-1] > n - 12):
        return None  # padding count must fit
    return pt, (p[2] << 8) | p[3], int.from_bytes(p[4:8], "big"), int.from_bytes(p[8:12], "big")


def _rtp_dir(pkts) -> int:
    """Score a direction's datagrams as one RTP stream."""
    prev = None
    good = 0
    seen = 0
    for p in pkts:
        h = _rtp_hdr(p)
        if h is None:
            if 0x80 <= p[0] <= 0xBF if p else False:
                if len(p) > 1 and 200 <= p[1] <= 207:
                    continue  # RTCP multiplexed on the same port
            return 0
        seen += 1
        if prev is not None:
            if h[3] != prev[3]:
                return 0
            # sequence numbers advance by small steps (0: duplicated packet);
            # timestamps are not checked, some senders reset them mid-stream
            if (h[1] - prev[1]) & 0xFFFF > 64:
                return 0
            good += 1
        prev = h
    if good >= 2:
        return DEFINITE - 10
    if good == 1:
        return STRONG
    # a single datagram: only with a static or dynamic payload type
    return WEAK if seen and (prev[0] <= 34 or prev[0] >= 96) else 0


def _strip_rfc4571(pkts):
    out = []
    for p in pkts:
        if len(p) < 14:
            return []
        ln = (p[0] << 8) | p[1]
        if ln < 12 or (ln + 2 != len(p) and not (len(p) >= TRUNC and ln + 2 > len(p))):
            return []
        out.append(p[2:])
    return out


@detector("rtp", "udp", (5004, 5006), both=bytes(range(0x80, 0xC0)), prio=40)
def rtp(ctx: Ctx) -> int:
    so = _rtp_dir(ctx.orig) if ctx.o0[:1] and 0x80 <= ctx.o0[0] <= 0xBF else 0
    if so >= DEFINITE - 10:
        return so
    sr = _rtp_dir(ctx.resp) if ctx.r0[:1] and 0x80 <= ctx.r0[0] <= 0xBF else 0
    return max(so, sr)


@detector("rtp", "tcp", (), both=b"\x00\x01\x02\x03\x04\x05", prio=60)
def rtp_tcp(ctx: Ctx) -> int:
    s = 0
    for pk in (ctx.orig, ctx.resp):
        if len(pk) >= 2:
            q = _strip_rfc4571(pk)
            if q:
                s = max(s, _rtp_dir(q))
    return s if s > WEAK else 0


def _rtcp(p: bytes) -> int:
    n = len(p)
    off = k = 0
    if n < 8:
        return 0
    while off + 4 <= n:
        if p[off] & 0xC0 != 0x80 or not 200 <= p[off + 1] <= 207:
            break
        off += (((p[off + 2] << 8) | p[off + 3]) + 1) * 4
        k += 1
    if not k or p[1] not in (200, 201, 202, 203, 205, 206, 207):
        return 0
    # SR / RR: the length follows from the report count
    words = (((p[2] << 8) | p[3]) + 1) * 4
    rc = p[0] & 0x1F
    sized = (p[1] == 200 and words == 28 + 24 * rc) or (p[1] == 201 and words == 8 + 24 * rc)
    if off == n:
        return DEFINITE - 5 if sized else (STRONG if p[1] in (200, 201) else MEDIUM)
    if off < n and sized and n - off >= 4:
        return MEDIUM + 5  # SRTCP: encrypted tail (E flag + index + auth tag) after the first packet
    if off > n and n >= TRUNC and sized:
        return STRONG
    return 0


@detector("rtcp", "udp", (5005, 5007), both=bytes(range(0x80, 0xC0)), prio=39)
def rtcp(ctx: Ctx) -> int:
    return max(_rtcp(ctx.o0), _rtcp(ctx.r0))


# --------------------------------------------------------------------------
# STUN / TURN (RFC 5389 with magic cookie; RFC 3489 classic)

_STUN_CLASSIC = frozenset((0x0001, 0x0101, 0x0111, 0x0002, 0x0102, 0x0112))


def _stun(p: bytes, tcp: bool) -> int:
    n = len(p)
    if n < 20 or p[0] & 0xC0:
        return 0
    ln = (p[2] << 8) | p[3]
    if ln & 3:
        return 0
    if p[4:8] == b"\x21\x12\xa4\x42":
        if ln + 20 == n or (tcp and ln + 20 < n) or (n >= TRUNC and ln + 20 > n):
            return DEFINITE
        return 0
    t = (p[0] << 8) | p[1]
    if t in _STUN_CLASSIC and ln + 20 == n:
        # classic attributes: type/length TLVs that tile the body
        off = 20
        while off + 4 <= n:
            off += 4 + ((p[off + 2] << 8) | p[off + 3])
        return MEDIUM if off == n else 0
    return 0


@detector("stun", ("udp", "tcp"), (3478, 3479, 5349, 19302, 19305), both=b"\x00\x01", prio=18)
def stun(ctx: Ctx) -> int:
    tcp = ctx.transport == "tcp"
    return max(_stun(ctx.o0, tcp), _stun(ctx.r0, tcp))


# --------------------------------------------------------------------------
# MGCP (RFC 3435)

_MGCP_VERBS = frozenset(b"EPCF CRCX MDCX DLCX RQNT NTFY AUEP AUCX RSIP MESG".split())


def _mgcp(p: bytes) -> int:
    if p[:4] in _MGCP_VERBS and p[4:5] == b" ":
        line = first_line(p, 256)
        if b" MGCP " in line:
            return DEFINITE
    return 0


@detector("mgcp", ("udp", "tcp"), (2427, 2727), both=b"ECMDRNAS0123456789", prio=30)
def mgcp(ctx: Ctx) -> int:
    s = max(_mgcp(ctx.o0), _mgcp(ctx.r0))
    if s:
        return s
    for p in (ctx.o0, ctx.r0):
        # response: "200 1203 OK"
        if len(p) >= 6 and p[:3].isdigit() and p[3:4] == b" " and p[4:5].isdigit() and ctx.has_port(2427, 2727):
            return WEAK
    return 0


# --------------------------------------------------------------------------
# IAX2 (RFC 5456)


def _iax_full(p: bytes) -> int:
    if len(p) < 12 or not p[0] & 0x80:
        return 0
    ft, sc = p[10], p[11]
    if ft == 6 and sc == 1 and p[2:4] == b"\x00\x00" and p[8] == 0 and p[9] == 0:
        return DEFINITE  # NEW: destination call 0, oseqno = iseqno = 0
    if (ft == 6 and 1 <= sc <= 0x26 or 1 <= ft <= 10) and p[8] < 64 and p[9] < 64:
        return WEAK
    return 0


def _iax_session(pkts) -> bool:
    # full frames of one direction: same source call number, in-sequence oseqno
    if len(pkts) < 2:
        return False
    calls = set()
    for p in pkts:
        if len(p) < 12 or not p[0] & 0x80 or not 1 <= p[10] <= 10:
            return False
        calls.add(p[0:2])
    return len(calls) == 1 and all(b[8] >= a[8] for a, b in zip(pkts, pkts[1:]))


@detector("iax2", "udp", (4569,), both=bytes(range(0x80, 0x100)), prio=35)
def iax2(ctx: Ctx) -> int:
    s = max(_iax_full(ctx.o0), _iax_full(ctx.r0))
    if s == WEAK and (_iax_session(ctx.orig) or _iax_session(ctx.resp)):
        return MEDIUM
    return s


@detector("iax2", "udp", (4569,), prio=36, port_only=True)
def iax2_mini(ctx: Ctx) -> int:
    # mini (voice) frames: F bit clear, 15-bit source call number, 16-bit timestamp
    for pk in (ctx.orig, ctx.resp):
        if len(pk) >= 2 and all(len(p) >= 4 and not p[0] & 0x80 and p[0:2] == pk[0][0:2] for p in pk):
            return WEAK
    return 0


# --------------------------------------------------------------------------
# H.323: H.225 call signalling over TPKT (Q.931), H.225 RAS (UDP), H.245

_H225_OID = b"\x06\x00\x08\x91\x4a\x00"  # 0.0.8.2250.0 (protocolIdentifier)
_Q931_TYPES = frozenset((0x01, 0x02, 0x03, 0x05, 0x07, 0x0F, 0x20, 0x45, 0x4D, 0x5A, 0x62, 0x6E, 0x75, 0x7B, 0x7D))


def _tpkt(p: bytes) -> int:
    """Score an H.323 TPKT payload; 0 for X.224/COTP (RDP, ISO-TSAP)."""
    n = len(p)
    if n < 8 or p[0] != 3 or p[1] != 0:
        return 0
    ln = (p[2] << 8) | p[3]
    if ln < 7 or (ln > n and n < TRUNC and n < 512):
        return 0
    if p[4] == 0x08 and p[5] in (1, 2) and n > 6 + p[5] and p[6 + p[5]] in _Q931_TYPES:
        return DEFINITE
    if _H225_OID in p[:64]:
        return DEFINITE
    if p[4] + 5 == n or p[4:7] == b"\x02\xf0\x80":
        return 0  # X.224 / COTP
    return MEDIUM if ln == n else WEAK


@detector("h323", "tcp", (1720, 1503), both=b"\x03", prio=26)
def h323(ctx: Ctx) -> int:
    return max(_tpkt(ctx.o0), _tpkt(ctx.r0))


@detector("h323", "udp", (1718, 1719), prio=45, port_only=True)
def h323_ras(ctx: Ctx) -> int:
    for p in (ctx.o0, ctx.r0):
        if len(p) >= 12 and _H225_OID in p[:24]:
            return DEFINITE
    return 0


# --------------------------------------------------------------------------
# Cisco Skinny (SCCP)


def _skinny(p: bytes) -> int:
    n = len(p)
    if n < 12:
        return 0
    ln = int.from_bytes(p[0:4], "little")
    if ln < 4 or ln > 4096 or p[5:8] != b"\x00\x00\x00" or p[4] not in (0, 0x11, 0x12, 0x14, 0x15, 0x16, 0x17):
        return 0
    if p[10:12] != b"\x00\x00" or not (p[9] <= 0x01 or 0x80 <= p[9] <= 0x81):
        return 0
    if ln + 8 == n:
        return STRONG
    if ln + 8 < n:  # several messages: check the next header too
        q = p[ln + 8 :]
        if len(q) >= 8 and q[5:8] == b"\x00\x00\x00" and 4 <= int.from_bytes(q[0:4], "little") <= 4096:
            return STRONG
        return 0
    return WEAK


@detector("skinny", "tcp", (2000, 2443), prio=55, port_only=True)
def skinny(ctx: Ctx) -> int:
    return max(_skinny(ctx.o0), _skinny(ctx.r0))
