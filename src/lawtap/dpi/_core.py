"""Detector registry and the classification engine.

Every protocol family module registers small detector functions with
:func:`detector`.  A detector takes a :class:`Ctx` and returns a confidence
score (0 = not this protocol).  The engine only calls the detectors that can
possibly match, using the first byte of the first payload in each direction
as a pre-filter, and calls the detectors whose hint ports match the flow
first.  Ports never decide on their own: they add :data:`HINT_BONUS` to a
detector's payload score, which lets weak payload evidence (e.g. a single
RTP-looking datagram, a bare ``220`` banner) pass the threshold only on the
protocol's usual port, and breaks ties between equally plausible payloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

__all__ = [
    "Ctx",
    "Detector",
    "REGISTRY",
    "detector",
    "ANY",
    "classify",
    "candidates",
    "DEFINITE",
    "STRONG",
    "MEDIUM",
    "WEAK",
    "HINT_BONUS",
    "THRESHOLD",
    "TRUNC",
    "either",
]

# Score scale.  A detector returns one of these (or anything in between).
DEFINITE = 100  #: unambiguous signature (e.g. "SSH-2.0-", TLS ClientHello)
STRONG = 80  #: structure fully consistent, very unlikely by chance
MEDIUM = 60  #: consistent structure, passes on its own
WEAK = 40  #: plausible only; needs the port hint to pass
HINT_BONUS = 25  #: added when one of the flow's ports is a hint port
THRESHOLD = 60  #: minimum (score + bonus) to report a protocol
EXIT = 100  #: stop scanning once a candidate reaches this

#: payloads are truncated to this many bytes by the flow engine; a payload of
#: at least this length may have lost its tail, so exact-length checks relax.
TRUNC = 1024

TRANSPORTS = ("tcp", "udp", "sctp")


class Ctx:
    """What a detector sees of a flow.

    ``orig`` / ``resp`` are the first payloads (up to 6) of each direction;
    ``o0`` / ``r0`` the first one of each (``b''`` when none).
    ``ports`` is ``(orig_p, resp_p)``.
    """

    __slots__ = ("transport", "orig_p", "resp_p", "ports", "orig", "resp", "o0", "r0")

    def __init__(
        self,
        transport: str,
        orig_p: int,
        resp_p: int,
        orig: Sequence[bytes],
        resp: Sequence[bytes],
    ) -> None:
        self.transport = transport
        self.orig_p = orig_p
        self.resp_p = resp_p
        self.ports = (orig_p, resp_p)
        self.orig = orig
        self.resp = resp
        self.o0 = orig[0] if orig else b""
        self.r0 = resp[0] if resp else b""

    def has_port(self, *ports: int) -> bool:
        return self.orig_p in ports or self.resp_p in ports


@dataclass(frozen=True)
class Detector:
    name: str  #: service name reported (lower case)
    fn: Callable[[Ctx], int]
    transports: frozenset[str]
    ports: frozenset[int]  #: hint ports (either side of the flow)
    o_first: frozenset[int] | None  #: possible first bytes of orig's first payload (None: any)
    r_first: frozenset[int] | None  #: possible first bytes of resp's first payload (None: any)
    prio: int  #: lower runs earlier among non-hinted candidates
    seq: int  #: registration order, tie-breaker
    port_only: bool = False  #: only tried when one of the flow's ports is a hint port


REGISTRY: list[Detector] = []


def _byteset(v: bytes | str | Iterable[int] | None) -> frozenset[int] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = v.encode("latin-1")
    return frozenset(v)


ANY = None  #: "no first-byte constraint" for o_first / r_first
_UNSET = object()


def detector(
    name: str,
    transports: str | Iterable[str],
    ports: Iterable[int] = (),
    *,
    o_first=_UNSET,
    r_first=_UNSET,
    both=_UNSET,
    prio: int = 50,
    port_only: bool = False,
):
    """Register ``fn(ctx) -> score`` as a detector for service ``name``.

    ``o_first`` / ``r_first`` are *necessary* conditions on the first byte of
    the first originator / responder payload: the detector is called when
    either side's first byte is in its set.  ``ANY`` (None) on a side means
    "always call"; a side left unset is "never via this side" when the other
    side is set, and the detector is always called when neither is set.
    ``both`` sets the two sides to the same bytes, for detectors that accept
    their signature in either direction (mid-flow captures, responder first).
    ``port_only`` detectors (weak heuristics such as "printable text on 23")
    are only tried when one of the flow's ports is among their hint ports.
    """
    if isinstance(transports, str):
        transports = (transports,)
    tr = frozenset(transports)
    for t in tr:
        if t not in TRANSPORTS:
            raise ValueError(f"unknown transport {t!r}")
    if both is not _UNSET:
        o_first = r_first = both
    if o_first is _UNSET and r_first is _UNSET:
        of = rf = None
    else:
        of = frozenset() if o_first is _UNSET else _byteset(o_first)
        rf = frozenset() if r_first is _UNSET else _byteset(r_first)

    def deco(fn: Callable[[Ctx], int]) -> Callable[[Ctx], int]:
        if port_only and not ports:
            raise ValueError("port_only detector needs hint ports")
        REGISTRY.append(Detector(name, fn, tr, frozenset(ports), of, rf, prio, len(REGISTRY), port_only))
        _TABLES.clear()
        return fn

    return deco


# --------------------------------------------------------------------------
# candidate selection, cached per transport and (first byte of o0, first byte
# of r0, orig_p if it is some detector's hint port, resp_p likewise)

_Cands = tuple  # tuple[tuple[Callable[[Ctx], int], str, int], ...]
_CACHE_MAX = 1 << 15
# transport -> (hint ports of that transport, cache dict)
_TABLES: dict[str, tuple[frozenset[int], dict[tuple[int, int, int, int], _Cands]]] = {}


def _table(transport: str):
    t = _TABLES.get(transport)
    if t is None:
        hp: set[int] = set()
        for d in REGISTRY:
            if transport in d.transports:
                hp |= d.ports
        t = _TABLES[transport] = (frozenset(hp), {})
    return t


def _build(transport: str, ob: int, rb: int, hpo: int, hpr: int) -> _Cands:
    hinted, rest = [], []
    for d in REGISTRY:
        if transport not in d.transports:
            continue
        if not (d.o_first is None or d.r_first is None or ob in d.o_first or rb in d.r_first):
            continue
        if hpo in d.ports or hpr in d.ports:
            hinted.append(d)
        elif not d.port_only:
            rest.append(d)
    hinted.sort(key=lambda d: (d.prio, d.seq))
    rest.sort(key=lambda d: (d.prio, d.seq))
    return tuple((d.fn, d.name, HINT_BONUS) for d in hinted) + tuple((d.fn, d.name, 0) for d in rest)


def candidates(transport: str, orig_p: int, resp_p: int, o0: bytes, r0: bytes) -> _Cands:
    """The (fn, name, bonus) triples the engine tries for such a flow, in order."""
    hp, cache = _table(transport)
    key = (
        o0[0] if o0 else 256,
        r0[0] if r0 else 256,
        orig_p if orig_p in hp else -1,
        resp_p if resp_p in hp else -1,
    )
    c = cache.get(key)
    if c is None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        c = cache[key] = _build(transport, *key)
    return c


def _as_payloads(x) -> list[bytes]:
    out: list[bytes] = []
    if not x or isinstance(x, (bytes, bytearray, str)):
        return out
    for p in x:
        if isinstance(p, bytes):
            if p:
                out.append(p)
        elif isinstance(p, (bytearray, memoryview)):
            if len(p):
                out.append(bytes(p))
    return out


def _port(p) -> int:
    try:
        p = int(p)
    except Exception:
        return -1
    return p if 0 <= p <= 65535 else -1


def classify(
    transport: str,
    orig_p: int,
    resp_p: int,
    orig: list[bytes],
    resp: list[bytes],
) -> str:
    """Decide a flow's service from its first payloads.

    transport is 'tcp' | 'udp' | 'sctp'; orig/resp are the payloads of the
    first few (up to 6) payload-carrying packets from the originator /
    responder, in order, each truncated to 1024 bytes.  Returns the lower-case
    service name, or '' when unknown.  Never raises.
    """
    try:
        tab = _TABLES.get(transport)
        if tab is None:
            tab = _table_for(transport)
            if tab is None:
                return ""
            transport = transport.strip().lower()
        o0 = orig[0] if orig else b""
        r0 = resp[0] if resp else b""
        # fast path: lists of bytes and int ports, as the flow engine passes them
        if type(o0) is not bytes or type(r0) is not bytes or type(orig_p) is not int or type(resp_p) is not int:
            orig, resp = _as_payloads(orig), _as_payloads(resp)
            orig_p, resp_p = _port(orig_p), _port(resp_p)
            o0 = orig[0] if orig else b""
            r0 = resp[0] if resp else b""
        elif not o0 and not r0:
            return ""
        hp, cache = tab
        cands = cache.get(
            (o0[0] if o0 else 256, r0[0] if r0 else 256, orig_p if orig_p in hp else -1, resp_p if resp_p in hp else -1)
        )
        if cands is None:
            cands = candidates(transport, orig_p, resp_p, o0, r0)
        ctx = Ctx(transport, orig_p, resp_p, orig or (), resp or ())
        best_name, best = "", THRESHOLD - 1
        for fn, name, bonus in cands:
            try:
                s = fn(ctx)
            except Exception:  # a detector bug must never break the flow engine
                continue
            if s:
                s += bonus
                if s > best:
                    best, best_name = s, name
                    if s >= EXIT:
                        break
        return best_name
    except Exception:
        return ""


def _table_for(transport):
    if isinstance(transport, str):
        t = transport.strip().lower()
        if t in TRANSPORTS:
            return _table(t)
    return None


# --------------------------------------------------------------------------
# small shared helpers


def either(score: Callable[[bytes, bytes], int], ctx: Ctx) -> int:
    """score(client, server) for client-speaks / server-answers protocols, tried with the
    flow's roles as given and swapped (the flow engine may have picked the server as
    originator: capture started mid-connection, UDP from a well-known port, ...)."""
    s = score(ctx.o0, ctx.r0)
    if s >= DEFINITE:
        return s
    return max(s, score(ctx.r0, ctx.o0))


def fits(declared: int, have: int) -> bool:
    """A length field ``declared`` is consistent with ``have`` bytes seen
    (equal, or larger when the payload may have been truncated)."""
    return declared == have or (have >= TRUNC and declared > have)


def ber_len(p: bytes, off: int) -> tuple[int, int]:
    """Decode a BER length at ``p[off]``; returns (length, offset of content)
    or (-1, -1) when invalid/short."""
    n = len(p)
    if off >= n:
        return -1, -1
    b = p[off]
    if b < 0x80:
        return b, off + 1
    k = b & 0x7F
    if k == 0 or k > 4 or off + 1 + k > n:
        return -1, -1
    v = 0
    for i in range(off + 1, off + 1 + k):
        v = (v << 8) | p[i]
    return v, off + 1 + k


def is_printable(b: bytes, extra: bytes = b"") -> bool:
    for c in b:
        if not (32 <= c < 127 or c in (9, 10, 13) or c in extra):
            return False
    return True


def first_line(p: bytes, limit: int = 512) -> bytes:
    i = p.find(b"\n", 0, limit)
    if i < 0:
        return p[:limit]
    return p[:i].rstrip(b"\r")


def upper_word(p: bytes, limit: int = 16) -> bytes:
    """The first whitespace-delimited word of p[:limit], upper-cased."""
    w = p[:limit].split(None, 1)
    return w[0].upper() if w and not p[:1].isspace() else b""
