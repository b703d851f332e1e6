"""File transfer family: ftp (control), tftp, smb."""

from __future__ import annotations

from ._core import DEFINITE, MEDIUM, STRONG, WEAK, Ctx, detector, upper_word

# --------------------------------------------------------------------------
# FTP control channel

_FTP_OPENERS = frozenset((b"USER", b"AUTH", b"FEAT", b"SYST", b"OPTS", b"CLNT", b"HOST", b"ACCT", b"PBSZ", b"LANG"))
_FTP_ANY = _FTP_OPENERS | frozenset(
    (b"PASS", b"PWD", b"XPWD", b"CWD", b"CDUP", b"TYPE", b"PASV", b"EPSV", b"PORT", b"EPRT", b"LIST", b"NLST",
     b"MLSD", b"MLST", b"RETR", b"STOR", b"SIZE", b"MDTM", b"REST", b"QUIT", b"NOOP", b"SITE", b"HELP", b"ABOR")
)
_FTP_ONLY = frozenset((b"SYST", b"PASV", b"EPSV", b"FEAT", b"CWD", b"PWD", b"XPWD", b"TYPE", b"EPRT", b"MLSD", b"CLNT"))


@detector("ftp", "tcp", (21, 2121, 990), both=b"UAFSOCHPLTXRMENQ12345", prio=21)
def ftp(ctx: Ctx) -> int:
    s = _ftp(ctx.o0, ctx.r0, ctx.orig)
    if s >= DEFINITE:
        return s
    return max(s, _ftp(ctx.r0, ctx.o0, ctx.resp))


def _ftp(o: bytes, r: bytes, client) -> int:
    w = upper_word(o) if o else b""
    banner = r[:3] in (b"220", b"120", b"421") and r[3:4] in (b" ", b"-")
    if banner:
        head = r[:256].upper()
        if w in (b"EHLO", b"HELO", b"LHLO"):
            return 0
        if w in _FTP_OPENERS:
            return DEFINITE
        if b"FTP" in head:
            return DEFINITE - 10
        if b"SMTP" in head:
            return 0
        return WEAK
    if w in _FTP_ONLY:
        return MEDIUM
    if w == b"USER":
        if r[:4] in (b"331 ", b"230 ", b"530 "):
            return DEFINITE
        if len(client) > 1 and upper_word(client[1]) == b"PASS" and not r.startswith((b"+", b"-")):
            return MEDIUM
        return WEAK
    if w in _FTP_ANY and r[:3].isdigit() and r[3:4] in (b" ", b"-"):
        return WEAK
    return 0


# --------------------------------------------------------------------------
# TFTP (RFC 1350 + option extension RFC 2347)

_TFTP_MODES = (b"netascii", b"octet", b"mail")
_TFTP_OPTS = (b"blksize", b"tsize", b"timeout", b"windowsize", b"multicast", b"utimeout")


def _tftp_req(p: bytes) -> int:
    # opcode 1/2, filename NUL mode NUL [option NUL value NUL]*
    parts = p[2:].split(b"\x00")
    if len(parts) < 3 or parts[-1] != b"":
        return 0
    for i in range(1, len(parts) - 1):
        if parts[i].lower() in _TFTP_MODES:
            return DEFINITE
    return 0


def _tftp_oack(p: bytes) -> int:
    if not p.endswith(b"\x00"):
        return 0
    parts = p[2:-1].split(b"\x00")
    if len(parts) % 2 == 0 and parts and parts[0].lower() in _TFTP_OPTS:
        return STRONG
    return 0


@detector("tftp", "udp", (69,), both=b"\x00", prio=25)
def tftp(ctx: Ctx) -> int:
    o, r = ctx.o0, ctx.r0
    for p in (o, r):
        if len(p) >= 4 and p[0] == 0:
            op = p[1]
            if op in (1, 2):
                s = _tftp_req(p)
                if s:
                    return s
            elif op == 6:
                s = _tftp_oack(p)
                if s:
                    return s
    # DATA / ACK exchange on the transfer ports
    if len(o) >= 4 and len(r) >= 4 and o[0] == 0 and r[0] == 0:
        a, b = (o, r) if o[1] == 3 else (r, o)
        if a[1] == 3 and b[1] == 4 and len(b) == 4 and len(a) <= 65468:
            da, db = (a[2] << 8) | a[3], (b[2] << 8) | b[3]
            if da == db or da == db + 1:  # ACK n for DATA n (RRQ) / ACK 0 then DATA 1 (WRQ)
                return DEFINITE - 5
        if a[1] == 3 and b[1] == 5 and b.endswith(b"\x00"):
            return STRONG
    for p in (o, r):
        if len(p) >= 5 and p[:2] == b"\x00\x05" and p[2] == 0 and p[3] <= 8 and p.endswith(b"\x00"):
            return MEDIUM - 10
        if len(p) == 4 and p[:2] == b"\x00\x04":
            return WEAK
        if len(p) > 4 and p[:2] == b"\x00\x03" and p[2:4] == b"\x00\x01":
            return WEAK
    return 0


# --------------------------------------------------------------------------
# SMB over NetBIOS session service / direct TCP 445

_SMB_MAGIC = (b"\xffSMB", b"\xfeSMB", b"\xfdSMB", b"\xfcSMB")


def _smb(p: bytes) -> int:
    if len(p) < 8 or p[0] != 0 or p[1] > 1:
        return 0
    if p[4:8] in _SMB_MAGIC:
        ln = (p[1] << 16) | (p[2] << 8) | p[3]
        if ln >= 32 or p[4] in (0xFD, 0xFC):
            return DEFINITE
    return 0


@detector("smb", "tcp", (445, 139), both=b"\x00\x81\x82", prio=15)
def smb(ctx: Ctx) -> int:
    return max(_smb(ctx.o0), _smb(ctx.r0)) or (
        max(_smb(ctx.orig[1]) if len(ctx.orig) > 1 else 0, _smb(ctx.resp[1]) if len(ctx.resp) > 1 else 0)
        if ctx.o0[:1] == b"\x81"
        else 0
    )

