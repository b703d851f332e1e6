"""Mail and news family: smtp, pop3, imap, nntp.

These servers speak first (banner) and clients answer with a small set of
commands, so each detector looks at both directions: the banner alone is
enough when it names the protocol, the first client command is enough when
it is specific (EHLO, CAPA, "a1 LOGIN"), and a bare numeric banner only
counts on the protocol's port.
"""

from __future__ import annotations

from ._core import DEFINITE, MEDIUM, STRONG, WEAK, Ctx, detector, either, upper_word


def _code_banner(p: bytes, codes: tuple[bytes, ...]) -> bool:
    return p[:3] in codes and p[3:4] in (b" ", b"-", b"\r", b"\n")


# --------------------------------------------------------------------------
# SMTP / LMTP

_SMTP_HELLO = frozenset((b"EHLO", b"HELO", b"LHLO"))
_SMTP_MID = frozenset((b"MAIL", b"RCPT", b"DATA", b"STARTTLS", b"RSET", b"BDAT"))
_SMTP_BANNER_WORDS = (b"SMTP", b"MAIL", b"POSTFIX", b"EXIM", b"SENDMAIL", b"MTA", b"RELAY")


@detector("smtp", "tcp", (25, 587, 465, 2525, 24), both=b"EHLMRDSB2345", prio=20)
def smtp(ctx: Ctx) -> int:
    return either(_smtp, ctx)


def _smtp(o: bytes, r: bytes) -> int:
    w = upper_word(o) if o else b""
    banner = _code_banner(r, (b"220", b"421", b"554"))
    if w in _SMTP_HELLO and len(o) > 5:
        if banner or not r or r[:1] in b"2345":
            return DEFINITE
    if banner:
        head = r[:256].upper()
        if any(k in head for k in _SMTP_BANNER_WORDS):
            return DEFINITE if r[:3] == b"220" else STRONG
        if w in _SMTP_HELLO or w in _SMTP_MID:
            return DEFINITE
        if w in (b"USER", b"AUTH", b"FEAT", b"SYST", b"OPTS") or b"FTP" in head:
            return 0
        return WEAK
    if w == b"MAIL" and o[:10].upper() == b"MAIL FROM:":
        return STRONG
    if w == b"RCPT" and o[:8].upper() == b"RCPT TO:":
        return STRONG
    return 0


# --------------------------------------------------------------------------
# POP3

_POP_CMDS = frozenset(
    (b"CAPA", b"USER", b"PASS", b"APOP", b"AUTH", b"STLS", b"QUIT", b"STAT", b"LIST", b"RETR", b"UIDL", b"TOP",
     b"DELE", b"NOOP", b"RSET")
)


@detector("pop3", "tcp", (110, 995, 1110), both=b"CUPASQLRTDN+-", prio=22)
def pop3(ctx: Ctx) -> int:
    return either(_pop3, ctx)


def _pop3(o: bytes, r: bytes) -> int:
    if r.startswith((b"+OK ", b"+OK\r\n", b"+OK\n")) and not o.startswith(b"*"):
        if r == b"+OK\r\n" and not o:
            return WEAK
        w = upper_word(o) if o else b""
        if not o or w in _POP_CMDS:
            return DEFINITE
        if r[:4] == b"+OK " and len(r) > 8:
            return STRONG
        return WEAK
    if r.startswith(b"-ERR") and upper_word(o) in _POP_CMDS:
        return STRONG
    if o:
        w = upper_word(o)
        if w in (b"CAPA", b"APOP", b"STLS") and len(o) <= 64:
            return MEDIUM
        if w in (b"USER", b"AUTH") and len(o) <= 128:
            return WEAK
    return 0


# --------------------------------------------------------------------------
# IMAP

_IMAP_CMDS = frozenset(
    (b"CAPABILITY", b"LOGIN", b"AUTHENTICATE", b"STARTTLS", b"NOOP", b"ID", b"SELECT", b"EXAMINE", b"LOGOUT",
     b"LIST", b"LSUB", b"STATUS", b"FETCH", b"UID", b"ENABLE", b"IDLE", b"NAMESPACE", b"APPEND", b"SEARCH", b"CREATE",
     b"CLOSE", b"EXPUNGE", b"STORE", b"COPY", b"GETQUOTAROOT")
)


def _imap_cmd(p: bytes) -> bool:
    sp = p.find(b" ", 0, 24)
    if sp <= 0:
        return False
    tag = p[:sp]
    if not tag.replace(b".", b"").replace(b"_", b"").isalnum():
        return False
    return upper_word(p[sp + 1 :], 16) in _IMAP_CMDS


@detector("imap", "tcp", (143, 993, 220), both=b"*" + bytes(range(0x30, 0x3A)) + bytes(range(0x41, 0x5B))
          + bytes(range(0x61, 0x7B)), prio=21)
def imap(ctx: Ctx) -> int:
    o, r = ctx.o0, ctx.r0
    for p in (r, o):
        if p.startswith((b"* OK", b"* PREAUTH", b"* BYE")):
            return DEFINITE
    for a, b in ((o, r), (r, o)):
        if a and _imap_cmd(a):
            return STRONG if b[:2] in (b"* ", b"") or b[:1].isalnum() else MEDIUM
    return 0


# --------------------------------------------------------------------------
# NNTP

_NNTP_CMDS = frozenset(
    (b"MODE", b"CAPABILITIES", b"GROUP", b"ARTICLE", b"AUTHINFO", b"LISTGROUP", b"XOVER", b"OVER", b"NEWNEWS",
     b"NEWGROUPS", b"XHDR", b"POST", b"IHAVE")
)


@detector("nntp", "tcp", (119, 563, 433), both=b"MCGALXONPI24", prio=45)
def nntp(ctx: Ctx) -> int:
    return either(_nntp, ctx)


def _nntp(o: bytes, r: bytes) -> int:
    w = upper_word(o) if o else b""
    banner = _code_banner(r, (b"200", b"201", b"400", b"502"))
    if banner:
        head = r[:256].upper()
        if b"NNTP" in head or b"NEWS" in head or b"INN" in head:
            return DEFINITE
        if w in (b"MODE", b"CAPABILITIES", b"AUTHINFO", b"GROUP", b"LIST", b"ARTICLE"):
            return STRONG
        return WEAK
    if w == b"AUTHINFO" or (w == b"MODE" and o[:11].upper() == b"MODE READER"):
        return STRONG
    return 0
