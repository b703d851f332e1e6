"""Infrastructure family: dns, mdns, llmnr, netbios, dhcp, dhcpv6, ntp,
snmp, syslog, radius, kerberos, ldap, dce_rpc, bgp."""

from __future__ import annotations

import re
import struct

from ._core import DEFINITE, MEDIUM, STRONG, TRUNC, WEAK, Ctx, ber_len, detector, fits

# --------------------------------------------------------------------------
# DNS message walk (shared by dns, mdns, llmnr)

_QCLASSES = frozenset((1, 3, 4, 254, 255))


def _skip_name(p: bytes, off: int, n: int) -> int:
    """Offset after the (possibly compressed) name at off; -1 invalid, -2 short."""
    end = off + 256
    while off < n:
        ln = p[off]
        if ln == 0:
            return off + 1
        if ln >= 0xC0:
            return off + 2 if off + 2 <= n else -2
        if ln > 63 or off > end:
            return -1
        off += 1 + ln
    return -2


_HDR = struct.Struct("!HHHHHH")
_OPCODES = frozenset((0, 1, 2, 4, 5))


def dns_message(p: bytes) -> int:
    """Score p as a DNS message: header sanity, question(s), then up to 6 resource
    records walked; a fully walked message must end exactly at the end of p."""
    n = len(p)
    if n < 12:
        return 0
    _id, flags, qd, an, ns, ar = _HDR.unpack_from(p)
    if (flags >> 11) & 0xF not in _OPCODES:
        return 0
    if flags & 0x0040:  # reserved Z bit: a few stacks set it; don't count it as definite
        s = dns_message(p[:2] + bytes([p[2], p[3] & 0xBF]) + p[4:])
        return min(s, STRONG)
    if qd > 16 or an > 512 or ns > 512 or ar > 512 or not (qd or an or ns or ar):
        return 0
    if not qd and not flags & 0x8000 and (flags >> 11) != 5:
        return 0  # a query without a question (only UPDATE may)
    off = 12
    for _ in range(qd):
        off = _skip_name(p, off, n)
        if off < 0 or off + 4 > n:
            return DEFINITE - 10 if off != -1 and n >= TRUNC else 0
        qt, qc = (p[off] << 8) | p[off + 1], ((p[off + 2] << 8) | p[off + 3]) & 0x7FFF
        if not qt or qc not in _QCLASSES:
            return 0
        off += 4
    rr = an + ns + ar
    for i in range(rr):
        if i == 6:  # enough evidence; don't walk huge responses record by record
            return DEFINITE - 5
        off = _skip_name(p, off, n)
        if off < 0 or off + 10 > n:
            return STRONG if off != -1 and n >= TRUNC else 0
        off += 10 + ((p[off + 8] << 8) | p[off + 9])
        if off > n:
            return STRONG if n >= TRUNC else 0
    return DEFINITE if off == n else 0


def _dns_udp(ctx: Ctx) -> int:
    s = dns_message(ctx.o0) if ctx.o0 else 0
    if s < DEFINITE and ctx.r0:
        s = max(s, dns_message(ctx.r0))
    return s


def _dns_tcp_one(p: bytes, nxt: bytes | None) -> int:
    n = len(p)
    if n == 2 and nxt:  # length prefix sent in its own segment
        ln = (p[0] << 8) | p[1]
        return dns_message(nxt[:ln]) if ln >= 12 and len(nxt) >= min(ln, 12) else 0
    if n < 14:
        return 0
    ln = (p[0] << 8) | p[1]
    if ln < 12:
        return 0
    if ln + 2 <= n:
        return dns_message(p[2 : 2 + ln])
    # message continues in later segments: only the header and question can be checked
    return _dns_partial(p[2:])


def _dns_partial(p: bytes) -> int:
    """A DNS message cut short by TCP segmentation: check header + question."""
    n = len(p)
    flags = (p[2] << 8) | p[3]
    if (flags >> 11) & 0xF not in _OPCODES or flags & 0x0040:
        return 0
    qd = (p[4] << 8) | p[5]
    if qd != 1:
        return 0
    off = _skip_name(p, 12, n)
    if off < 0 or off + 4 > n:
        return 0
    qc = ((p[off + 2] << 8) | p[off + 3]) & 0x7FFF
    return STRONG if qc in _QCLASSES and (p[off] << 8 | p[off + 1]) else 0


def _dns_tcp(ctx: Ctx) -> int:
    o, r = ctx.o0, ctx.r0
    s = _dns_tcp_one(o, ctx.orig[1] if len(ctx.orig) > 1 else None) if o else 0
    if s < DEFINITE and r:
        s = max(s, _dns_tcp_one(r, ctx.resp[1] if len(ctx.resp) > 1 else None))
    return s


@detector("mdns", "udp", (5353,), prio=7, port_only=True)
def mdns(ctx: Ctx) -> int:
    if 5353 not in ctx.ports:
        return 0
    return _dns_udp(ctx)


@detector("llmnr", "udp", (5355,), prio=7, port_only=True)
def llmnr(ctx: Ctx) -> int:
    if 5355 not in ctx.ports:
        return 0
    return _dns_udp(ctx)


@detector("dns", "udp", (53, 5353, 5355), prio=8)
def dns(ctx: Ctx) -> int:
    if ctx.has_port(137, 138):
        return 0
    return _dns_udp(ctx)


@detector("dns", "tcp", (53, 853, 5353), both=bytes(range(0x40)), prio=25)
def dns_tcp(ctx: Ctx) -> int:
    return _dns_tcp(ctx)


# --------------------------------------------------------------------------
# NetBIOS: name service (137), datagram (138), session (139)


def _nb_name(p: bytes, off: int) -> bool:
    if len(p) < off + 34 or p[off] != 0x20:
        return False
    for c in p[off + 1 : off + 33]:
        if not 0x41 <= c <= 0x50:
            return False
    return True


@detector("netbios", "udp", (137, 138), prio=6, port_only=True)
def netbios_udp(ctx: Ctx) -> int:
    for p in (ctx.o0, ctx.r0):
        n = len(p)
        if n < 12:
            continue
        # NBDGM: type 0x10-0x16, flags, id, src ip, src port, len, offset, names
        if 0x10 <= p[0] <= 0x16 and p[1] & 0xF0 == 0:
            if p[0] <= 0x12 and _nb_name(p, 14):
                return DEFINITE
            if p[0] in (0x13, 0x14, 0x15, 0x16) and n >= 11 and (n == 11 or _nb_name(p, 10)):
                return DEFINITE if n > 11 else WEAK
        # NBNS: DNS-like header, encoded name
        qd = (p[4] << 8) | p[5]
        an = (p[6] << 8) | p[7]
        if (qd or an) and _nb_name(p, 12):
            return DEFINITE
    return 0


@detector("netbios", "tcp", (139,), both=b"\x81\x82\x83\x84\x85", prio=30)
def netbios_ssn(ctx: Ctx) -> int:
    for p in (ctx.o0, ctx.r0):
        if len(p) >= 72 and p[0] == 0x81 and p[1] <= 1 and _nb_name(p, 4) and _nb_name(p, 38):
            return DEFINITE  # session request: called and calling names
    for p in (ctx.r0, ctx.o0):
        if len(p) == 4 and p[0] == 0x82 and p[1:] == b"\x00\x00\x00":
            return WEAK
        if len(p) == 5 and p[0] == 0x83 and p[1:4] == b"\x00\x00\x01" and 0x80 <= p[4] <= 0x8F:
            return WEAK
    return 0


# --------------------------------------------------------------------------
# DHCP / BOOTP and DHCPv6


@detector("dhcp", "udp", (67, 68), o_first=b"\x01\x02", r_first=b"\x01\x02", prio=12)
def dhcp(ctx: Ctx) -> int:
    for p in (ctx.o0, ctx.r0):
        if len(p) >= 240 and p[0] in (1, 2) and 1 <= p[1] <= 40 and p[2] <= 16 and p[3] <= 16:
            if p[236:240] == b"\x63\x82\x53\x63":
                return DEFINITE
            if ctx.has_port(67, 68) and len(p) >= 300:
                return WEAK  # plain BOOTP
    return 0


def _dhcpv6_options(p: bytes, off: int) -> bool:
    n = len(p)
    k = 0
    while off < n:
        if off + 4 > n:
            return False
        code = (p[off] << 8) | p[off + 1]
        ln = (p[off + 2] << 8) | p[off + 3]
        if code == 0 or code > 200:
            return False
        off += 4 + ln
        k += 1
    return off == n and k > 0 or (n >= TRUNC and k > 0)


@detector("dhcpv6", "udp", (546, 547), o_first=bytes(range(1, 14)), r_first=bytes(range(1, 14)), prio=20)
def dhcpv6(ctx: Ctx) -> int:
    for p in (ctx.o0, ctx.r0):
        if len(p) < 8 or not 1 <= p[0] <= 13:
            continue
        off = 34 if p[0] in (12, 13) else 4
        if _dhcpv6_options(p, off):
            code = (p[off] << 8) | p[off + 1]
            if code in (1, 2, 3, 4, 6, 8, 9, 14, 18, 25, 39, 79) or ctx.has_port(546, 547):
                return STRONG
            return WEAK
    return 0


# --------------------------------------------------------------------------
# NTP


_NTP_GATE = bytes(li << 6 | vn << 3 | mode for li in range(4) for vn in range(1, 5) for mode in range(1, 8))


def _ntp(p: bytes) -> int:
    n = len(p)
    if n < 12:
        return 0
    vn = (p[0] >> 3) & 7
    mode = p[0] & 7
    if not 1 <= vn <= 4:
        return 0
    if mode == 6:  # control (ntpq): opcode 1-31, count bytes of data after a 12-byte header
        cnt = (p[10] << 8) | p[11]
        return WEAK if 1 <= p[1] & 0x1F <= 31 and 12 + cnt <= n <= 12 + cnt + 3 + 24 and cnt <= 468 else 0
    if mode == 7:  # private (ntpdc): implementation 0/2/3
        return WEAK if p[2] in (0, 2, 3) and p[3] < 64 else 0
    if mode == 0 or n < 48:
        return 0
    stratum, poll, prec = p[1], p[2], p[3]
    if stratum > 16 or (poll > 17 and poll < 0xFA):
        return 0
    if not (prec == 0 or prec >= 0xE0):
        return 0
    if n in (48, 52, 60, 68, 72, 120):  # header [+ key id + MD5/SHA1 MAC]
        return MEDIUM + 5 if mode in (3, 4) else MEDIUM
    if (n - 48) % 4 == 0:
        return WEAK  # extension fields (NTS): only on the NTP port
    return 0


@detector("ntp", "udp", (123,), both=_NTP_GATE, prio=30)
def ntp(ctx: Ctx) -> int:
    o, r = ctx.o0, ctx.r0
    s = _ntp(o)
    if s and r:
        s2 = _ntp(r)
        if s2 > WEAK and (o[0] & 7, r[0] & 7) in ((3, 4), (1, 2), (1, 1), (2, 1)):
            return DEFINITE
    return s or _ntp(r)


# --------------------------------------------------------------------------
# SNMP (v1/v2c community, v3)


def _snmp(p: bytes) -> int:
    if len(p) < 10 or p[0] != 0x30:
        return 0
    ln, off = ber_len(p, 1)
    if ln < 0 or not fits(off + ln, len(p)):
        return 0
    if p[off : off + 2] != b"\x02\x01" or p[off + 2] not in (0, 1, 3):
        return 0
    ver = p[off + 2]
    off += 3
    if ver == 3:
        return STRONG if p[off : off + 1] == b"\x30" else 0
    if p[off : off + 1] != b"\x04":
        return 0
    cl, off = ber_len(p, off + 1)
    if cl < 0 or off + cl >= len(p):
        return 0
    pdu = p[off + cl]
    return DEFINITE if 0xA0 <= pdu <= 0xA8 else 0


@detector("snmp", ("udp", "tcp"), (161, 162, 10161, 10162), both=b"\x30", prio=20)
def snmp(ctx: Ctx) -> int:
    return max(_snmp(ctx.o0), _snmp(ctx.r0))


# --------------------------------------------------------------------------
# syslog: "<PRI>" (RFC 3164 / 5424), TCP octet-counting "LEN <PRI>"


def _syslog_pri(p: bytes, off: int) -> int:
    if p[off : off + 1] != b"<":
        return 0
    end = p.find(b">", off + 1, off + 5)
    if end < off + 2:
        return 0
    d = p[off + 1 : end]
    if not d.isdigit() or int(d) > 191 or (len(d) > 1 and d[0] == 0x30):
        return 0
    rest = p[end + 1 : end + 17]
    if not rest:
        return WEAK
    for c in rest:
        if not (32 <= c < 127 or c == 9):
            return 0
    return STRONG


@detector("syslog", ("udp", "tcp"), (514, 601, 6514), both=b"<0123456789", prio=35)
def syslog(ctx: Ctx) -> int:
    # syslog is one-way: the messages may sit on either side (the flow engine may
    # have made the receiver the originator, e.g. 514 -> 11000)
    tcp = ctx.transport == "tcp"
    for p in (ctx.o0, ctx.r0):
        if not p:
            continue
        if p[0] == 0x3C:
            s = _syslog_pri(p, 0)
            if s:
                return s
        elif tcp:
            sp = p.find(b" ", 1, 7)
            if sp > 0 and p[:sp].isdigit():
                s = _syslog_pri(p, sp + 1)
                if s:
                    return s
    return 0


# --------------------------------------------------------------------------
# RADIUS

_RADIUS_CODES = frozenset((1, 2, 3, 4, 5, 11, 12, 13, 40, 41, 42, 43, 44, 45))


def _radius(p: bytes) -> int:
    n = len(p)
    if n < 20 or p[0] not in _RADIUS_CODES:
        return 0
    ln = (p[2] << 8) | p[3]
    if ln < 20 or ln > 4096 or not fits(ln, n):
        return 0
    off, end = 20, min(ln, n)
    while off < end:
        if off + 2 > end:
            return 0 if n < TRUNC else STRONG
        al = p[off + 1]
        if al < 2 or p[off] == 0:
            return 0
        off += al
    if off != end and n < TRUNC:
        return 0
    return STRONG + 10 if ln > 20 else WEAK


@detector("radius", "udp", (1812, 1813, 1645, 1646, 3799), both=bytes(_RADIUS_CODES), prio=25)
def radius(ctx: Ctx) -> int:
    s = _radius(ctx.o0)
    if s and ctx.r0:
        s2 = _radius(ctx.r0)
        if s2 and ctx.r0[1] == ctx.o0[1]:  # same identifier
            return DEFINITE
    return s or _radius(ctx.r0)


# --------------------------------------------------------------------------
# Kerberos (UDP 88; TCP with 4-byte record mark)

_KRB_TAGS = frozenset((0x6A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F, 0x74, 0x75, 0x76, 0x7E))


def _krb(p: bytes, off: int, total: int = -1) -> int:
    """Kerberos message at p[off:]; total = expected end offset (TCP record
    mark) or -1 for "the datagram"."""
    if len(p) < off + 12 or p[off] not in _KRB_TAGS:
        return 0
    ln, c = ber_len(p, off + 1)
    if ln < 0:
        return 0
    if total < 0:
        if not fits(c + ln, len(p)):
            return 0
    elif c + ln != total:
        return 0
    if p[c] != 0x30:
        return 0
    ln2, c2 = ber_len(p, c + 1)
    if ln2 < 0:
        return 0
    # pvno [0] or [1] INTEGER 5 opens every KDC-REQ/REP, AP-REQ/REP, KRB-ERROR ...
    if p[c2 : c2 + 5] in (b"\xa0\x03\x02\x01\x05", b"\xa1\x03\x02\x01\x05"):
        return DEFINITE
    return 0


@detector("kerberos", "udp", (88, 750), both=bytes(_KRB_TAGS), prio=25)
def kerberos(ctx: Ctx) -> int:
    return max(_krb(ctx.o0, 0), _krb(ctx.r0, 0))


def _krb_tcp(p: bytes) -> int:
    if len(p) < 16 or p[0] & 0x80:
        return 0
    rec = int.from_bytes(p[:4], "big")
    if rec < 12 or rec > (1 << 20):
        return 0
    return _krb(p, 4, rec + 4)


@detector("kerberos", "tcp", (88, 750), both=b"\x00", prio=30)
def kerberos_tcp(ctx: Ctx) -> int:
    s = _krb_tcp(ctx.o0)
    return s or _krb_tcp(ctx.r0)


# --------------------------------------------------------------------------
# LDAP / CLDAP (BER LDAPMessage)

_LDAP_OPS = frozenset(
    (0x60, 0x61, 0x42, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x4A, 0x6B, 0x6C, 0x6D, 0x6E, 0x6F, 0x50, 0x73, 0x77,
     0x78, 0x79)
)


def _ldap(p: bytes, tcp: bool) -> int:
    if len(p) < 7 or p[0] != 0x30:
        return 0
    ln, off = ber_len(p, 1)
    if ln < 5:
        return 0
    if tcp:
        if off + ln > len(p) and len(p) < TRUNC and len(p) < 64:
            return 0
    elif not fits(off + ln, len(p)):
        return 0
    if p[off] != 0x02 or not 1 <= p[off + 1] <= 4:
        return 0
    op_off = off + 2 + p[off + 1]
    if op_off >= len(p) or p[op_off] not in _LDAP_OPS:
        return 0
    op = p[op_off]
    ol, oc = ber_len(p, op_off + 1)
    if ol < 0 or oc + ol > off + ln:
        return 0
    if op == 0x60 and p[oc : oc + 2] == b"\x02\x01" and p[oc + 2] in (2, 3):
        return DEFINITE
    if op in (0x61, 0x65, 0x67, 0x69, 0x6B, 0x6D, 0x6F, 0x78) and p[oc : oc + 2] == b"\x0a\x01":
        return DEFINITE  # LDAPResult: resultCode ENUMERATED
    if op == 0x63 and p[oc : oc + 1] == b"\x04":
        return DEFINITE - 10
    return STRONG


@detector("ldap", ("tcp", "udp"), (389, 3268, 3269), both=b"\x30", prio=22)
def ldap(ctx: Ctx) -> int:
    tcp = ctx.transport == "tcp"
    return max(_ldap(ctx.o0, tcp), _ldap(ctx.r0, tcp))


@detector("ldap", "tcp", (389, 3268), prio=90, port_only=True)
def ldap_sasl(ctx: Ctx) -> int:
    """SASL-wrapped (GSS-API signed/sealed) LDAP: a 4-byte buffer length then an
    opaque token; structural evidence only, so only on the LDAP ports."""
    for pk in (ctx.orig, ctx.resp):
        if pk:
            p = pk[0]
            if len(p) >= 16 and p[0] == 0:
                ln = int.from_bytes(p[:4], "big")
                if ln + 4 == len(p) or (len(p) >= TRUNC and 0 < ln < 1 << 24 and ln + 4 > len(p)):
                    return WEAK
    return 0


# --------------------------------------------------------------------------
# DCE/RPC connection-oriented (v5)


def _dcerpc(p: bytes) -> int:
    if len(p) < 16 or p[0] != 5 or p[1] > 1 or p[2] > 19 or p[4] not in (0x10, 0x00):
        return 0
    fl = (p[8] | (p[9] << 8)) if p[4] == 0x10 else ((p[8] << 8) | p[9])
    if fl < 16 or (fl > len(p) and len(p) < TRUNC and len(p) < 1400 and fl - len(p) > 4096):
        return 0
    if p[2] in (11, 12, 13, 14, 15, 16) and fl >= 24:  # bind, bind_ack, ... : version 5.0
        return DEFINITE if p[1] == 0 else STRONG
    return STRONG if fl <= len(p) else MEDIUM


@detector("dce_rpc", "tcp", (135, 593), both=b"\x05", prio=35)
def dce_rpc(ctx: Ctx) -> int:
    return max(_dcerpc(ctx.o0), _dcerpc(ctx.r0))


# --------------------------------------------------------------------------
# BGP: 16-byte all-ones marker


@detector("bgp", "tcp", (179,), both=b"\xff", prio=40)
def bgp(ctx: Ctx) -> int:
    for p in (ctx.o0, ctx.r0):
        if len(p) >= 19 and p[:16] == b"\xff" * 16:
            ln = (p[16] << 8) | p[17]
            if 19 <= ln <= 4096 and 1 <= p[18] <= 5:
                return DEFINITE
    return 0


_KRB_TIME = re.compile(rb"\x18\x0f(?:19|20)\d{12}Z")
_KRB_ETYPE = re.compile(rb"\xa0\x03\x02\x01[\x01\x03\x11\x12\x17\x18][\xa1\xa2]")


@detector("kerberos", "tcp", (88,), prio=95, port_only=True)
def kerberos_tcp_cont(ctx: Ctx) -> int:
    """Continuation segments (capture missed the record mark): KerberosTime
    or an EncryptedData etype inside the payload, on port 88 only."""
    for p in (ctx.o0, ctx.r0):
        if _KRB_TIME.search(p) or _KRB_ETYPE.search(p):
            return WEAK
    return 0
