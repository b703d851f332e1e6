"""DNS messages of the usual shape, parsed in a kernel, many at once.

Why: a large capture carries hundreds of thousands of DNS messages, nearly all of one shape --
one question, a few A/AAAA/CNAME answers whose owners point at earlier names, maybe an EDNS
OPT record without options. :func:`scan` reads a whole batch of them and writes what a ``dns``
record takes from each (header fields, the question's name in lower case, the answers' texts
and TTLs) into arrays. Every message of any other shape, or with anything :func:`~lawtap.
analyzers.dns._parse` would report as a problem, is marked for that parser instead; for the
messages it accepts, the kernel gives exactly what ``_parse(data, False)`` gives
(``tests/test_dns_scan.py`` compares both on generated, corpus and random messages).

Accepted: QDCOUNT 1 and NSCOUNT 0; a question name of plain labels (printable ASCII but '.'
and '\\', no compression); answers of type A (4 bytes), AAAA (16 bytes, not starting with 80
zero bits, which ``ipaddress`` renders its own way) and CNAME (a name that stays within its
RDATA, plain labels, pointers followed with the parser's loop and length checks); additional
records that are OPT with the root as owner, no options and no extended RCODE bits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lawtap.flows.table import ipv4_chars, ipv6_chars
from lawtap.jit import njit

# Columns of scan()'s ``out`` (one row per message).
K_OK, K_ID, K_FLAGS, K_QD, K_AN, K_NS, K_AR, K_QTYPE, K_QCLASS, K_NAME0, K_NAME1, K_ANS0, K_ANS1 = range(13)
N_COLUMNS = 13

MAX_POINTERS = 64  # as lawtap.analyzers.dns
MAX_NAME = 255

#: Bytes a label may hold as they are (what dns._PLAIN_LABEL matches): any other needs escaping.
PLAIN = np.zeros(256, dtype=np.uint8)
PLAIN[0x21:0x7F] = 1
PLAIN[0x2E] = 0
PLAIN[0x5C] = 0


@njit(cache=True, nogil=True)
def _name(msg, n, off, out, pos, cap, lower, pointers, plain, seen):
    """The name at ``msg[off:]`` as :func:`~lawtap.analyzers.dns._walk_name` reads it, its text
    written at ``out[pos:]`` (``cap``: room; with ``cap`` 0 nothing is written, only checked).
    Returns (offset after the name, new pos), or (-1, pos) when the parser would report a
    problem, a label needs escaping, a pointer is met without ``pointers``, or room runs out."""
    end = -1
    total = 0
    jumps = 0
    first = True
    while True:
        if off >= n:
            return -1, pos
        ln = msg[off]
        if ln >= 0xC0:
            if not pointers or off + 1 >= n:
                return -1, pos
            ptr = ((ln & 0x3F) << 8) | msg[off + 1]
            if end < 0:
                end = off + 2
            jumps += 1
            if jumps > MAX_POINTERS or ptr >= n:
                return -1, pos
            for s in range(jumps - 1):
                if seen[s] == ptr:
                    return -1, pos
            seen[jumps - 1] = ptr
            off = ptr
            continue
        if ln >= 0x40:
            return -1, pos
        off += 1
        if ln == 0:
            break
        if off + ln > n:
            return -1, pos
        total += ln + 1
        if total > MAX_NAME:
            return -1, pos
        if cap:
            if pos + ln + 1 > cap:
                return -1, pos
            if not first:
                out[pos] = 46  # '.'
                pos += 1
        first = False
        for j in range(ln):
            b = msg[off + j]
            if plain[b] == 0:
                return -1, pos
            if cap:
                if lower and 65 <= b <= 90:
                    b += 32
                out[pos] = b
                pos += 1
        off += ln
    if end < 0:
        end = off
    return end, pos


@njit(cache=True, nogil=True)
def scan(data, offs, lens, out, names, answers, answer_offs, ttls, plain):
    """Parse messages ``data[offs[k]:offs[k] + lens[k]]``.

    Row ``k`` of ``out`` (:data:`N_COLUMNS` columns) gets ``K_OK`` 1 when the message has the
    accepted shape, and then its header fields, its question's type and class, the question's
    name in lower case as ``names[K_NAME0:K_NAME1]`` and its answers ``K_ANS0 .. K_ANS1 - 1``:
    answer ``j``'s text is ``answers[answer_offs[j]:answer_offs[j + 1]]``, its TTL
    ``ttls[j]``. Returns (bytes of ``names`` used, bytes of ``answers`` used, answers).
    """
    seen = np.empty(MAX_POINTERS, dtype=np.int64)
    name_cap = names.shape[0]
    answer_cap = answers.shape[0]
    ttl_cap = ttls.shape[0]
    npos = 0
    apos = 0
    na = 0
    answer_offs[0] = 0
    for k in range(offs.shape[0]):
        out[k, K_OK] = 0
        n = lens[k]
        if n < 12:
            continue
        o = offs[k]
        msg = data[o : o + n]
        qd = (np.int64(msg[4]) << 8) | msg[5]
        an = (np.int64(msg[6]) << 8) | msg[7]
        ns = (np.int64(msg[8]) << 8) | msg[9]
        ar = (np.int64(msg[10]) << 8) | msg[11]
        if qd != 1 or ns != 0:
            continue
        npos0 = npos
        apos0 = apos
        na0 = na
        end, npos = _name(msg, n, 12, names, npos, name_cap, True, False, plain, seen)
        if end < 0 or end + 4 > n:
            npos = npos0
            continue
        qtype = (np.int64(msg[end]) << 8) | msg[end + 1]
        qclass = (np.int64(msg[end + 2]) << 8) | msg[end + 3]
        off = end + 4
        ok = True
        for i in range(an + ar):
            if off >= n:
                ok = False
                break
            root = msg[off] == 0
            if root:
                off += 1
            else:
                off, _ = _name(msg, n, off, names, 0, 0, False, True, plain, seen)
                if off < 0:
                    ok = False
                    break
            if off + 10 > n:
                ok = False
                break
            rtype = (np.int64(msg[off]) << 8) | msg[off + 1]
            ttl = ((np.int64(msg[off + 4]) << 24) | (np.int64(msg[off + 5]) << 16)
                   | (np.int64(msg[off + 6]) << 8) | msg[off + 7])
            rdlen = (np.int64(msg[off + 8]) << 8) | msg[off + 9]
            off += 10
            if off + rdlen > n:
                ok = False
                break
            if i < an:
                if na + 1 >= ttl_cap or apos + 40 > answer_cap:
                    ok = False
                    break
                if rtype == 1 and rdlen == 4:
                    q = ((np.int64(msg[off]) << 24) | (np.int64(msg[off + 1]) << 16)
                         | (np.int64(msg[off + 2]) << 8) | msg[off + 3])
                    apos = ipv4_chars(q, answers, apos)
                elif rtype == 28 and rdlen == 16:
                    h = np.uint64(0)
                    v = np.uint64(0)
                    for j in range(8):
                        h = (h << np.uint64(8)) | np.uint64(msg[off + j])
                        v = (v << np.uint64(8)) | np.uint64(msg[off + 8 + j])
                    if h == np.uint64(0) and (v >> np.uint64(48)) == np.uint64(0):
                        ok = False  # the first 80 bits zero: ipaddress has its own rendering
                        break
                    apos = ipv6_chars(h, v, answers, apos)
                elif rtype == 5:
                    after, apos = _name(msg, n, off, answers, apos, answer_cap, False, True, plain, seen)
                    if after < 0 or after > off + rdlen:
                        ok = False
                        break
                else:
                    ok = False
                    break
                ttls[na] = ttl
                na += 1
                answer_offs[na] = apos
            elif not (rtype == 41 and root and rdlen == 0 and (ttl >> 24) == 0):
                ok = False
                break
            off += rdlen
        if not ok:
            npos = npos0
            apos = apos0
            na = na0
            continue
        out[k, K_OK] = 1
        out[k, K_ID] = (np.int64(msg[0]) << 8) | msg[1]
        out[k, K_FLAGS] = (np.int64(msg[2]) << 8) | msg[3]
        out[k, K_QD] = qd
        out[k, K_AN] = an
        out[k, K_NS] = ns
        out[k, K_AR] = ar
        out[k, K_QTYPE] = qtype
        out[k, K_QCLASS] = qclass
        out[k, K_NAME0] = npos0
        out[k, K_NAME1] = npos
        out[k, K_ANS0] = na0
        out[k, K_ANS1] = na
    return npos, apos, na


class Scanned(NamedTuple):
    """What :func:`scan_messages` found in a batch of messages."""

    out: np.ndarray  # one row per message (K_* columns)
    names: str  # the questions' names in lower case (ASCII: str offsets are byte offsets)
    answers: str  # the answers' texts, back to back
    answer_offs: np.ndarray  # answer j is answers[answer_offs[j]:answer_offs[j + 1]]
    ttls: np.ndarray  # answer j's TTL
    name_bytes: np.ndarray  # ``names`` as bytes (uint8)
    answer_bytes: np.ndarray  # ``answers`` as bytes (uint8)


def scan_messages(data: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> Scanned:
    """:func:`scan` with buffers sized for the batch."""
    count = offs.shape[0]
    total = int(lens.sum()) if count else 0
    out = np.zeros((count, N_COLUMNS), dtype=np.int64)
    names = np.empty(total + 1, dtype=np.uint8)
    answers = np.empty(4 * total + 64, dtype=np.uint8)
    answer_offs = np.zeros(total // 11 + 2, dtype=np.int64)
    ttls = np.empty(total // 11 + 2, dtype=np.int64)
    used_names = used_answers = n_answers = 0
    if count:
        used_names, used_answers, n_answers = scan(data, np.ascontiguousarray(offs, dtype=np.int64),
                                                   np.ascontiguousarray(lens, dtype=np.int64), out, names, answers,
                                                   answer_offs, ttls, PLAIN)
    return Scanned(out, names[:used_names].tobytes().decode("ascii"), answers[:used_answers].tobytes().decode("ascii"),
                   answer_offs[: n_answers + 1], ttls[:n_answers], names[:used_names], answers[:used_answers])
