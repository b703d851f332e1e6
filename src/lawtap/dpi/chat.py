"""Chat and peer-to-peer family: bittorrent, irc, xmpp."""

from __future__ import annotations

from ._core import DEFINITE, MEDIUM, STRONG, WEAK, Ctx, detector, first_line, upper_word

# --------------------------------------------------------------------------
# BitTorrent: peer wire handshake, DHT (bencoded KRPC), uTP

_BT_HS = b"\x13BitTorrent protocol"


@detector("bittorrent", "tcp", (6881, 6882, 6883, 6884, 6885, 6886, 6887, 6888, 6889, 51413), both=b"\x13", prio=14)
def bittorrent(ctx: Ctx) -> int:
    if ctx.o0.startswith(_BT_HS) or ctx.r0.startswith(_BT_HS):
        return DEFINITE
    return 0


def _krpc(p: bytes) -> int:
    if p.startswith((b"d1:ad2:id20:", b"d1:rd2:id20:")):
        return DEFINITE
    if p[:3] == b"d1:" and p.endswith(b"e") and len(p) >= 20:
        # KRPC dict: has a transaction id "1:t" and a type "1:y1:q|r|e"
        if b"1:y1:" in p and b"1:t" in p:
            return DEFINITE
    return 0


def _utp(pkts) -> int:
    # uTP (BEP 29): type<<4 | version 1, extension, conn id; ST_SYN (type 4) first
    if len(pkts) < 2:
        return 0
    p = pkts[0]
    if len(p) < 20 or p[0] != 0x41 or p[1] > 2:
        return 0
    return MEDIUM if all(len(x) >= 20 and x[0] & 0x0F == 1 and x[0] >> 4 <= 4 for x in pkts) else 0


@detector("bittorrent", "udp", (6881, 6882, 6883, 6884, 6885, 6886, 6887, 6888, 6889, 51413), both=b"dA", prio=30)
def bittorrent_udp(ctx: Ctx) -> int:
    s = max(_krpc(ctx.o0), _krpc(ctx.r0))
    return s or _utp(ctx.orig)


# --------------------------------------------------------------------------
# IRC

_IRC_NUMERIC_LINE = (b" 001 ", b" 002 ", b" 003 ", b" 004 ", b" 005 ", b" 020 ", b" 375 ", b" 372 ", b" 433 ",
                     b" 451 ")


def _irc_server(p: bytes) -> int:
    line = first_line(p, 400)
    if p[:1] == b":":
        sp = line.find(b" ")
        if sp > 1:
            rest = line[sp:]
            if rest.startswith((b" NOTICE ", b" PRIVMSG ", b" MODE ", b" JOIN ", b" PING ", b" CAP ")) or rest.startswith(
                _IRC_NUMERIC_LINE
            ):
                return STRONG + 10
    if line.startswith((b"NOTICE AUTH :", b"NOTICE * :", b"PING :")):
        return STRONG
    return 0


def _irc_client(p: bytes) -> int:
    w = upper_word(p)
    line = first_line(p, 400)
    if w == b"NICK" and 5 < len(line) <= 64 and line.count(b" ") <= 2:
        return STRONG + 10
    if w == b"USER" and line.count(b" ") >= 4 and b" :" in line:
        return STRONG + 10
    if w == b"CAP" and line[4:6].upper() in (b"LS", b"RE"):
        return STRONG
    if w == b"PASS" and b"\nNICK " in p[:400].upper():
        return STRONG + 10
    return 0


@detector("irc", "tcp", (6667, 6660, 6661, 6662, 6663, 6664, 6665, 6666, 6668, 6669, 7000, 194),
          both=b":NUCP", prio=24)
def irc(ctx: Ctx) -> int:
    sc = _irc_client(ctx.o0) if ctx.o0 else 0
    ss = _irc_server(ctx.r0) if ctx.r0 else 0
    if sc and ss:
        return DEFINITE
    s = max(sc, ss)
    if not s:  # mid-stream / reversed
        s = max(_irc_server(ctx.o0), _irc_client(ctx.r0)) if ctx.o0 else 0
    return s


# --------------------------------------------------------------------------
# XMPP (Jabber)

_XMPP_MARKS = (b"jabber:client", b"jabber:server", b"http://etherx.jabber.org/streams", b"jabber:component")


def _xmpp(p: bytes) -> int:
    if p[:1] != b"<":
        return 0
    head = p[:512]
    if b"<stream:stream" in head or any(m in head for m in _XMPP_MARKS):
        return DEFINITE
    if head.startswith(b"<?xml"):
        return WEAK
    if head.startswith((b"<iq ", b"<presence", b"</stream:stream>", b"<stream:features", b"<starttls ")):
        return MEDIUM
    if head.startswith(b"<message ") and (b" to=" in head or b" from=" in head):
        return MEDIUM - 10
    return 0


@detector("xmpp", "tcp", (5222, 5269, 5223, 5280), both=b"<", prio=23)
def xmpp(ctx: Ctx) -> int:
    best = 0
    for pk in (ctx.orig[:2], ctx.resp[:2]):
        for p in pk:
            s = _xmpp(p)
            if s >= DEFINITE:
                return s
            best = max(best, s)
    return best
