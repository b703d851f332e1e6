"""Remote access family: ssh, telnet, rdp, vnc."""

from __future__ import annotations

from ._core import DEFINITE, MEDIUM, STRONG, WEAK, Ctx, detector, is_printable

# --------------------------------------------------------------------------
# SSH: identification string "SSH-2.0-..." / "SSH-1.99-..." in either direction


def _ssh(p: bytes) -> bool:
    return p.startswith(b"SSH-") and p[4:6] in (b"2.", b"1.") and p[5:6] == b"."


def _ssh_after_preamble(p: bytes) -> bool:
    # RFC 4253 4.2: a server may send other text lines before its version string
    i = p.find(b"\nSSH-", 0, 1024)
    return i > 0 and is_printable(p[:i]) and _ssh(p[i + 1 :])


@detector("ssh", "tcp", (22, 2222, 22222, 830), both=b"S", prio=4)
def ssh(ctx: Ctx) -> int:
    if _ssh(ctx.o0) or _ssh(ctx.r0):
        return DEFINITE
    return 0


@detector("ssh", "tcp", (22, 2222), prio=80, port_only=True)
def ssh_preamble(ctx: Ctx) -> int:
    if _ssh_after_preamble(ctx.r0) or _ssh_after_preamble(ctx.o0):
        return STRONG
    return 0


# --------------------------------------------------------------------------
# Telnet: IAC option negotiation (RFC 854/855)


def _telnet_opt(o: int) -> bool:
    return o < 50 or o in (138, 139, 140, 255)


def _iac_run(p: bytes) -> tuple[int, bool]:
    """(number of option negotiations/subnegotiations at the start of p, whether the
    IAC run covers the whole payload); (0, False) when malformed."""
    n, i, k = len(p), 0, 0
    while i < n and p[i] == 0xFF:
        if i + 1 >= n:
            return 0, False
        c = p[i + 1]
        if 0xFB <= c <= 0xFE:  # WILL WONT DO DONT <option>
            if i + 2 >= n or not _telnet_opt(p[i + 2]):
                return 0, False
            i += 3
            k += 1
        elif c == 0xFA:  # SB <option> ... IAC SE
            j = p.find(b"\xff\xf0", i + 2)
            if j < 0 or not _telnet_opt(p[i + 2]):
                return 0, False
            i = j + 2
            k += 1
        elif 0xF1 <= c <= 0xF9 and k:  # NOP, DM, BRK, IP, AO, AYT, EC, EL, GA after a negotiation
            i += 2
        else:
            return 0, False
    return k, i == n


@detector("telnet", "tcp", (23, 2323, 992), both=b"\xff", prio=40)
def telnet(ctx: Ctx) -> int:
    best = 0
    for p in (ctx.o0, ctx.r0):
        if p[:1] == b"\xff":
            k, whole = _iac_run(p)
            if k >= 2:
                return STRONG + 10
            if k == 1:
                best = max(best, STRONG if whole else MEDIUM)
    return best


@detector("telnet", "tcp", (23, 2323), prio=90, port_only=True)
def telnet_text(ctx: Ctx) -> int:
    # option-less session, or capture started after the negotiation: text only
    pk = [x for x in (ctx.o0, ctx.r0) if x]
    if pk and all(is_printable(x[:128], b"\x00\x07\x08\x1b") for x in pk):
        return WEAK
    return 0


# --------------------------------------------------------------------------
# RDP: TPKT + X.224 Connection Request/Confirm with cookie / rdpNegReq


def _rdp(p: bytes) -> int:
    n = len(p)
    if n < 11 or p[0] != 3 or p[1] != 0:
        return 0
    ln = (p[2] << 8) | p[3]
    li = p[4]
    if ln != n or li + 5 != n:
        return 0
    code = p[5] & 0xF0
    if code == 0xE0:  # CR
        body = p[11:]
        if body.startswith((b"Cookie: mstshash=", b"Cookie: msts=")):
            return DEFINITE
        if len(body) >= 8 and body[-8] == 1 and body[-6:-4] == b"\x08\x00":
            return DEFINITE
        return WEAK
    if code == 0xD0:  # CC
        body = p[11:]
        if len(body) >= 8 and body[0] in (2, 3) and body[2:4] == b"\x08\x00":
            return DEFINITE
        return WEAK
    return 0


@detector("rdp", "tcp", (3389,), both=b"\x03", prio=25)
def rdp(ctx: Ctx) -> int:
    return max(_rdp(ctx.o0), _rdp(ctx.r0))


# --------------------------------------------------------------------------
# VNC / RFB: "RFB 003.008\n"


def _rfb(p: bytes) -> bool:
    return len(p) == 12 and p[:4] == b"RFB " and p[7] == 0x2E and p[11] == 0x0A and p[4:7].isdigit()


@detector("vnc", "tcp", (5900, 5901, 5902, 5800), both=b"R", prio=30)
def vnc(ctx: Ctx) -> int:
    if _rfb(ctx.o0) or _rfb(ctx.r0):
        return DEFINITE
    return 0

