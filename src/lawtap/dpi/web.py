"""Web family: http, tls (and DTLS), quic, rtsp, ssdp, socks."""

from __future__ import annotations

from ._core import DEFINITE, MEDIUM, STRONG, TRUNC, WEAK, Ctx, detector, either, first_line

# --------------------------------------------------------------------------
# HTTP/1.x (and the HTTP/2 prior-knowledge preface)

HTTP_METHODS = frozenset(
    b"GET POST HEAD PUT DELETE OPTIONS CONNECT TRACE PATCH PROPFIND PROPPATCH MKCOL "
    b"COPY MOVE LOCK UNLOCK REPORT SEARCH SUBSCRIBE UNSUBSCRIBE NOTIFY MKCALENDAR "
    b"MKACTIVITY CHECKOUT MERGE PURGE LINK UNLINK BIND REBIND ACL SOURCE PRI "
    b"BPROPFIND BPROPPATCH BDELETE BCOPY BMOVE POLL X-MS-ENUMATTS RPC_IN_DATA RPC_OUT_DATA".split()
)
_HTTP_FIRST = frozenset(m[0] for m in HTTP_METHODS) | {ord("H")}
_HTTP_VERSIONS = (b" HTTP/1.1", b" HTTP/1.0", b" HTTP/0.9", b" HTTP/2.0", b" HTTP/2", b" HTTP/3")


def _http_request(p: bytes) -> int:
    sp = p.find(b" ", 0, 20)
    if sp < 3 or p[:sp] not in HTTP_METHODS:
        return 0
    line = first_line(p, TRUNC)
    if line.endswith(_HTTP_VERSIONS):
        return DEFINITE
    target = p[sp + 1 : sp + 2]
    if len(line) == len(p) and len(p) >= 256 and target in (b"/", b"h", b"*"):
        return STRONG  # request line longer than the truncated payload
    return 0


def _http_status(p: bytes) -> int:
    if p[:7] in (b"HTTP/1.", b"HTTP/2 ", b"HTTP/2.") and len(p) >= 12:
        i = 9 if p[6:7] == b"." else 7
        if p[i - 1 : i] == b" " and p[i : i + 3].isdigit():
            return DEFINITE
    return 0


@detector("http", "tcp", (80, 8080, 8000, 8008, 8081, 8088, 8888, 3128, 591), both=_HTTP_FIRST, prio=10)
def http(ctx: Ctx) -> int:
    o, r = ctx.o0, ctx.r0
    if o:
        s = _http_request(o) or _http_status(o)
        if s:
            return s
    if r:
        s = _http_status(r) or _http_request(r)
        if s:
            return s
    return 0


# --------------------------------------------------------------------------
# TLS / SSL

_TLS_CT = frozenset((20, 21, 22, 23, 24))


def _tls_records(p: bytes) -> int:
    """Score a payload that should start with a TLS record."""
    n = len(p)
    if n < 5:
        return 0
    ct = p[0]
    if ct not in _TLS_CT or p[1] != 3 or p[2] > 4:
        return _sslv2(p)
    ln = (p[3] << 8) | p[4]
    if ln == 0 or ln > 18432:
        return 0
    score = STRONG
    if ct == 22 and n >= 9:
        hs = p[5]
        hl = (p[6] << 16) | (p[7] << 8) | p[8]
        if hs in (1, 2) and hl + 4 <= ln and hl >= 34 and p[9:10] == b"\x03":
            score = DEFINITE
        elif hs in (1, 2, 4, 8, 11, 12, 13, 14, 15, 16, 20, 22, 24) and hl + 4 <= max(ln, 1 << 14):
            score = STRONG + 10
    elif ct == 20:
        score = STRONG + 10 if ln == 1 and n >= 6 and p[5] == 1 else MEDIUM
    elif ct == 21:
        score = STRONG if ln in (2,) or ln >= 18 else MEDIUM
    # walk the following records that are fully inside the payload
    off = 5 + ln
    while off + 5 <= n:
        if p[off] not in _TLS_CT or p[off + 1] != 3 or p[off + 2] > 4:
            return 0
        ln = (p[off + 3] << 8) | p[off + 4]
        if ln > 18432:
            return 0
        off += 5 + ln
    if off < n and n - off < 5:
        # a partial header: accept only a plausible first byte
        if p[off] not in _TLS_CT:
            return 0
    return score


def _sslv2(p: bytes) -> int:
    # SSLv2 ClientHello: 2-byte length with high bit, type 1, version 0x0002/0x03xx
    if len(p) >= 11 and p[0] & 0x80 and p[2] == 1 and (p[3:5] == b"\x00\x02" or (p[3] == 3 and p[4] <= 3)):
        ln = ((p[0] & 0x7F) << 8) | p[1]
        if ln + 2 == len(p) or (len(p) >= TRUNC and ln + 2 > len(p)):
            cs, sid, ch = (p[5] << 8) | p[6], (p[7] << 8) | p[8], (p[9] << 8) | p[10]
            if cs % 3 == 0 and sid in (0, 16, 32) and 16 <= ch <= 32 and 11 + cs + sid + ch == ln + 2:
                return DEFINITE
            return MEDIUM
    return 0


@detector("tls", "tcp", (443, 8443, 993, 995, 465, 636, 989, 990, 992, 994, 5061, 5223, 6697, 853, 4443),
          both=bytes(_TLS_CT) + b"\x80\x81", prio=5)
def tls(ctx: Ctx) -> int:
    s = _tls_records(ctx.o0) if ctx.o0 else 0
    if s >= DEFINITE:
        return s
    if ctx.r0:
        s2 = _tls_records(ctx.r0)
        if s and s2:
            return DEFINITE
        s = max(s, s2)
    return s


# DTLS: content type, version 0xfeff (1.0) / 0xfefd (1.2) / 0xfefc (1.3), epoch, seq, length
def _dtls(p: bytes) -> int:
    n = len(p)
    if n < 13 or p[0] not in (20, 21, 22, 23, 24, 25) or p[1] != 0xFE or p[2] not in (0xFF, 0xFD, 0xFC):
        return 0
    ln = (p[11] << 8) | p[12]
    if ln == 0 or 13 + ln > n and n < TRUNC:
        return 0
    if p[0] == 22 and n >= 25 and p[13] in (1, 2, 3) and p[3:5] == b"\x00\x00":
        return DEFINITE
    return STRONG


@detector("tls", "udp", (443, 4433, 5061, 5684, 3478, 5349), both=b"\x14\x15\x16\x17\x18\x19", prio=20)
def dtls(ctx: Ctx) -> int:
    return max(_dtls(ctx.o0), _dtls(ctx.r0))


# --------------------------------------------------------------------------
# QUIC (IETF v1/v2/drafts, Google QUIC, mvfst)

_QUIC_KNOWN = frozenset(
    [0x00000001, 0x6B3343CF, 0x709A50C4, 0xFF020000, 0xFACEB001, 0xFACEB002, 0xFACEB00E, 0xFACEB00F, 0xFACEB010,
     0xFACEB003]
    + [0xFF000000 | d for d in range(1, 35)]
)


def _quic_version_ok(v: int) -> bool:
    if v in _QUIC_KNOWN:
        return True
    hi = v >> 24
    if hi in (0x51, 0x54) and 0x30 <= (v >> 16) & 0xFF <= 0x39:  # 'Q0xx' gQUIC, 'T0xx'
        return 0x30 <= (v >> 8) & 0xFF <= 0x39 and 0x30 <= v & 0xFF <= 0x39
    return False


def _quic_long(p: bytes) -> int:
    n = len(p)
    if n < 7 or not p[0] & 0x80:
        return 0
    v = int.from_bytes(p[1:5], "big")
    if v == 0:
        # version negotiation: CIDs then a list of 4-byte versions
        dcil = p[5]
        if dcil > 20 or 6 + dcil >= n:
            return 0
        scil = p[6 + dcil]
        rest = n - (7 + dcil + scil)
        if scil <= 20 and rest >= 4 and rest % 4 == 0:
            vs = [int.from_bytes(p[i : i + 4], "big") for i in range(7 + dcil + scil, n, 4)]
            if any(_quic_version_ok(x) for x in vs):
                return DEFINITE
        return 0
    if not _quic_version_ok(v):
        if (v & 0x0F0F0F0F) == 0x0A0A0A0A and p[0] & 0x40:  # reserved "grease" version
            dcil = p[5]
            if dcil <= 20 and n > 6 + dcil and p[6 + dcil] <= 20 and n >= 1200:
                return MEDIUM
        return 0
    if v >> 24 in (0x51, 0x54):  # Google QUIC Q046+ long header
        return DEFINITE
    if not p[0] & 0x40:
        return WEAK  # fixed bit clear (grease_quic_bit) - still plausible
    dcil = p[5]
    if dcil > 20 or 6 + dcil >= n:
        return 0
    scil = p[6 + dcil]
    if scil > 20:
        return 0
    return DEFINITE


def _gquic_public(p: bytes) -> int:
    # Google QUIC <= Q043 public header: flags, [8-byte CID], 'Q0xx' version
    if len(p) >= 13 and not p[0] & 0x80 and p[0] & 0x01:
        off = 9 if p[0] & 0x08 else 1
        v = int.from_bytes(p[off : off + 4], "big")
        if v >> 24 == 0x51 and _quic_version_ok(v):
            return DEFINITE
    return 0


_QUIC_GATE = bytes(b for b in range(256) if not 0x80 <= b <= 0xBF)


@detector("quic", "udp", (443, 80, 8443, 784, 853, 4433), both=_QUIC_GATE, prio=6)
def quic(ctx: Ctx) -> int:
    o, r = ctx.o0, ctx.r0
    s = _quic_long(o) if o and o[0] >= 0xC0 else 0
    if s >= DEFINITE:
        return s
    if r and r[0] >= 0xC0:
        s = max(s, _quic_long(r))
    s = s or _gquic_public(o) or _gquic_public(r)
    if s:
        return s
    if ctx.has_port(443, 80, 8443):
        # short-header only (capture started mid-connection): the datagrams of one
        # direction have the long-header bit clear and repeat the same connection id
        for pk in (ctx.orig, ctx.resp):
            if len(pk) >= 2 and all(len(x) >= 21 and not x[0] & 0x80 for x in pk):
                if all(x[1:5] == pk[0][1:5] for x in pk):
                    return WEAK
    return 0


# --------------------------------------------------------------------------
# RTSP

_RTSP_METHODS = frozenset(
    b"DESCRIBE ANNOUNCE GET_PARAMETER OPTIONS PAUSE PLAY PLAY_NOTIFY RECORD REDIRECT SETUP SET_PARAMETER TEARDOWN".split()
)


@detector("rtsp", "tcp", (554, 8554, 322), both=b"DAGOPRSTDR", prio=30)
def rtsp(ctx: Ctx) -> int:
    for p in (ctx.o0, ctx.r0):
        if p.startswith((b"RTSP/1.0 ", b"RTSP/2.0 ")):
            return DEFINITE
        sp = p.find(b" ", 0, 16)
        if sp > 0 and p[:sp] in _RTSP_METHODS and first_line(p).endswith((b" RTSP/1.0", b" RTSP/2.0")):
            return DEFINITE
    return 0


# --------------------------------------------------------------------------
# SSDP (HTTPU on 1900)


@detector("ssdp", "udp", (1900,), both=b"MNH", prio=15)
def ssdp(ctx: Ctx) -> int:
    for p in (ctx.o0, ctx.r0):
        if p.startswith((b"M-SEARCH * HTTP/1.", b"NOTIFY * HTTP/1.")):
            return DEFINITE
        if p.startswith(b"HTTP/1.1 200"):
            head = p[:600].lower()
            if b"\nst:" in head or b"\nusn:" in head:
                return DEFINITE
            return WEAK
    return 0


# --------------------------------------------------------------------------
# SOCKS 4 / 4a / 5


def _socks4_req(p: bytes) -> bool:
    return len(p) >= 9 and p[0] == 4 and p[1] in (1, 2) and p[-1] == 0 and (
        p.find(b"\x00", 8) == len(p) - 1 or (p[4:7] == b"\x00\x00\x00" and p[7] != 0)
    )


def _socks5_greet(p: bytes) -> bool:
    if len(p) < 3 or p[0] != 5:
        return False
    nm = p[1]
    if nm == 0 or nm > 16 or len(p) != 2 + nm:
        return False
    return all(m <= 3 or m == 0x80 or 0x80 <= m <= 0xFE or m == 9 for m in p[2:])


@detector("socks", "tcp", (1080, 1081, 9050, 9150, 1085), both=b"\x04\x05", prio=40)
def socks(ctx: Ctx) -> int:
    return either(_socks, ctx)


def _socks(o: bytes, r: bytes) -> int:
    if _socks4_req(o):
        if len(r) >= 8 and r[0] == 0 and 0x5A <= r[1] <= 0x5D:
            return DEFINITE
        return WEAK if r else MEDIUM - 10
    if _socks5_greet(o):
        if len(r) >= 2 and r[0] == 5 and (r[1] in o[2:] or r[1] == 0xFF):
            return DEFINITE if len(r) == 2 or r[2:3] == b"\x01" else STRONG
        return WEAK
    return 0
