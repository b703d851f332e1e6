"""Database / cache family: mysql, postgresql, redis, memcached."""

from __future__ import annotations

from ._core import DEFINITE, MEDIUM, STRONG, TRUNC, WEAK, Ctx, detector, either, upper_word

# --------------------------------------------------------------------------
# MySQL / MariaDB: server greeting (protocol 10) is sent first


def _mysql_greeting(p: bytes) -> int:
    n = len(p)
    if n < 12 or p[3] != 0:
        return 0
    ln = p[0] | (p[1] << 8) | (p[2] << 16)
    if not (ln + 4 == n or (n >= TRUNC and ln + 4 > n)):
        return 0
    if p[4] == 0x0A:
        end = p.find(b"\x00", 5, 5 + 64)
        if end > 6 and p[5:6].isdigit():
            ver = p[5:end]
            if all(32 <= c < 127 for c in ver) and b"." in ver:
                return DEFINITE
        return 0
    if p[4] == 0xFF and n >= 9:  # ERR as greeting, e.g. "Host ... is not allowed"
        code = p[5] | (p[6] << 8)
        if 1000 <= code <= 2100 and all(32 <= c < 127 for c in p[7 : min(n, 40)]):
            return MEDIUM
    return 0


@detector("mysql", "tcp", (3306, 3307, 33060), o_first=None, r_first=None, prio=30)
def mysql(ctx: Ctx) -> int:
    s = _mysql_greeting(ctx.r0) if ctx.r0 else 0
    if not s and ctx.o0:
        s = _mysql_greeting(ctx.o0)  # capture started at the greeting / reversed roles
    return s


# --------------------------------------------------------------------------
# PostgreSQL: StartupMessage (protocol 3.0), SSLRequest, GSSENCRequest, CancelRequest

_PG_SSL = b"\x04\xd2\x16\x2f"
_PG_GSS = b"\x04\xd2\x16\x30"
_PG_CANCEL = b"\x04\xd2\x16\x2e"


@detector("postgresql", "tcp", (5432, 5433, 6432), both=b"\x00", prio=30)
def postgresql(ctx: Ctx) -> int:
    return either(_postgresql, ctx)


def _postgresql(p: bytes, r: bytes) -> int:
    n = len(p)
    if n < 8 or p[0] != 0:
        return 0
    ln = int.from_bytes(p[0:4], "big")
    code = p[4:8]
    if ln == 8 and n == 8 and code in (_PG_SSL, _PG_GSS):
        if r in (b"S", b"N", b"G"):
            return DEFINITE
        return STRONG if not r or r[:1] in (b"\x16", b"E") else MEDIUM
    if ln == 16 and n == 16 and code == _PG_CANCEL:
        return MEDIUM
    if code in (b"\x00\x03\x00\x00", b"\x00\x02\x00\x00") and (ln == n or (n >= TRUNC and ln > n)):
        if p.endswith(b"\x00") or n >= TRUNC:
            return DEFINITE if b"user\x00" in p[8:] or b"database\x00" in p[8:] else STRONG
    return 0


# --------------------------------------------------------------------------
# Redis (RESP)


def _resp_request(p: bytes) -> bool:
    # *<n>\r\n$<len>\r\n<cmd>\r\n
    if len(p) < 8 or p[0] != 0x2A:
        return False
    i = p.find(b"\r\n", 1, 8)
    if i < 2 or not p[1:i].isdigit():
        return False
    if p[i + 2 : i + 3] != b"$":
        return False
    j = p.find(b"\r\n", i + 3, i + 10)
    return j > i + 3 and p[i + 3 : j].isdigit()


_REDIS_INLINE = frozenset((b"PING", b"AUTH", b"INFO", b"SELECT", b"CONFIG", b"HELLO", b"CLIENT", b"KEYS", b"FLUSHALL"))


@detector("redis", "tcp", (6379, 6380, 16379, 26379), both=b"*PAICSHKF+-$:", prio=35)
def redis(ctx: Ctx) -> int:
    hinted = ctx.has_port(6379, 6380)
    s = _redis(ctx.o0, ctx.r0, hinted)
    return s if s >= DEFINITE else max(s, _redis(ctx.r0, ctx.o0, hinted))


def _redis(o: bytes, r: bytes, hinted: bool) -> int:
    if _resp_request(o):
        if not r or r[:1] in (b"+", b"-", b"$", b"*", b":", b"%", b"|", b">", b"_"):
            return DEFINITE
        return STRONG
    if r.startswith((b"+PONG\r\n", b"-NOAUTH ", b"-ERR unknown command", b"-DENIED ", b"$")) and o.endswith(b"\r\n"):
        if upper_word(o) in _REDIS_INLINE:
            return STRONG
    if hinted and upper_word(o) in _REDIS_INLINE and o.endswith(b"\r\n"):
        return WEAK
    return 0


# --------------------------------------------------------------------------
# memcached: text / binary protocol, UDP frame header

_MC_CMDS = frozenset(
    (b"get", b"gets", b"set", b"add", b"replace", b"append", b"prepend", b"cas", b"delete", b"incr", b"decr",
     b"touch", b"gat", b"gats", b"stats", b"version", b"flush_all", b"verbosity", b"mg", b"ms", b"md", b"mn", b"ma")
)
_MC_REPLIES = (b"VALUE ", b"END\r\n", b"STORED\r\n", b"NOT_STORED\r\n", b"STAT ", b"VERSION ", b"DELETED\r\n",
               b"NOT_FOUND\r\n", b"ERROR\r\n", b"EXISTS\r\n", b"HD", b"EN\r\n", b"VA ")


def _mc_text(o: bytes, r: bytes, hinted: bool) -> int:
    sp = o.find(b" ", 0, 12)
    w = o[:sp] if sp > 0 else o[: o.find(b"\r\n")] if b"\r\n" in o[:12] else b""
    if w not in _MC_CMDS or not o.endswith(b"\r\n"):
        return 0
    if r.startswith(_MC_REPLIES):
        return STRONG
    return WEAK if hinted else 0


def _mc_binary(p: bytes) -> int:
    n = len(p)
    if n < 24 or p[0] not in (0x80, 0x81) or p[5] != 0:
        return 0
    kl = (p[2] << 8) | p[3]
    el = p[4]
    bl = int.from_bytes(p[8:12], "big")
    if bl + 24 == n and kl + el <= bl and p[1] <= 0x48:
        return MEDIUM
    return 0


@detector("memcached", ("tcp", "udp"), (11211,), prio=45, port_only=True)
def memcached(ctx: Ctx) -> int:
    hinted = ctx.has_port(11211)
    o, r = ctx.o0, ctx.r0
    if ctx.transport == "udp":
        # 8-byte frame header: request id, seq no, datagram count, reserved 0
        if len(o) > 8 and o[6:8] == b"\x00\x00" and o[4:6] != b"\x00\x00":
            return _mc_text(o[8:], r[8:], hinted) or (WEAK if hinted and o[8:9].isalpha() else 0)
        return 0
    return max(_mc_text(o, r, hinted), _mc_text(r, o, hinted), _mc_binary(o), _mc_binary(r))
