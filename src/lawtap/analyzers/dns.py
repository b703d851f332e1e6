"""DNS (and mDNS / LLMNR) over UDP and TCP: one ``dns`` record per query/response pair.

Sans-IO: :class:`DNSAnalyzer` takes datagrams (one DNS message each) or, on TCP, the byte stream
with RFC 1035 two-byte length framing (a message may span ``feed()`` calls). Field names follow
Zeek's ``dns.log`` (plus ``auth``/``addl`` from Zeek's ``auth-addl`` policy script); answers are
rendered the way Zeek renders them (A/AAAA as addresses, names for CNAME/NS/PTR/MX/SRV, SOA as
its mname, ``TXT <len> <text>``, ``RRSIG <type> <signer>`` ...). Types Zeek has no rendering
for are rendered from their parsed fields, unknown types as ``<unknown type=N> <rdata hex>``.

Pairing: a response is matched with the oldest pending query of the same ``(trans_id, query)``
(falling back to ``trans_id`` alone when the response has no question); queries still pending at
:meth:`finish` are logged unanswered, responses without a query are logged at once.

:func:`parse_message` is the reusable, never-raising message parser (name compression with loop
protection, EDNS0 options incl. client subnet, SVCB/HTTPS parameters, CAA, DNSSEC types).
"""

from __future__ import annotations

import re

import ipaddress
import socket
import struct
from collections import deque
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from lawtap.analyzers.base import COMMON_FIELDS
from lawtap.records import as_timestamps

from .base import ConnInfo, StreamAnalyzer

# --------------------------------------------------------------------------------------------
# Schema

_COMMON = COMMON_FIELDS  # lawtap.analyzers.base

DNS_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("proto", pa.string()),
        pa.field("trans_id", pa.uint16()),
        pa.field("rtt", pa.float64()),  # seconds (Zeek interval)
        pa.field("query", pa.string()),
        pa.field("qclass", pa.uint16()),
        pa.field("qclass_name", pa.string()),
        pa.field("qtype", pa.uint16()),
        pa.field("qtype_name", pa.string()),
        pa.field("rcode", pa.uint16()),
        pa.field("rcode_name", pa.string()),
        pa.field("AA", pa.bool_()),
        pa.field("TC", pa.bool_()),
        pa.field("RD", pa.bool_()),
        pa.field("RA", pa.bool_()),
        pa.field("Z", pa.uint8()),
        pa.field("answers", pa.list_(pa.string())),
        pa.field("TTLs", pa.list_(pa.float64())),
        pa.field("rejected", pa.bool_()),
        pa.field("auth", pa.list_(pa.string())),
        pa.field("addl", pa.list_(pa.string())),
        pa.field("edns_client_subnet", pa.string()),
    ]
)

RECORD_SCHEMAS = {"dns": DNS_SCHEMA}

# --------------------------------------------------------------------------------------------
# Names of things (Zeek's tables)

QTYPES: dict[int, str] = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR", 10: "NULL",
    11: "WKS", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP", 18: "AFSDB",
    19: "X25", 20: "ISDN", 21: "RT", 22: "NSAP", 23: "NSAP-PTR", 24: "SIG", 25: "KEY", 26: "PX",
    27: "GPOS", 28: "AAAA", 29: "LOC", 30: "NXT", 31: "EID", 32: "NIMLOC", 33: "SRV", 34: "ATMA",
    35: "NAPTR", 36: "KX", 37: "CERT", 38: "A6", 39: "DNAME", 40: "SINK", 41: "OPT", 42: "APL",
    43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY", 49: "DHCID",
    50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA", 55: "HIP", 59: "CDS", 60: "CDNSKEY",
    61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS", 99: "SPF", 100: "UINFO",
    101: "UID", 102: "GID", 103: "UNSPEC", 249: "TKEY", 250: "TSIG", 251: "IXFR", 252: "AXFR",
    253: "MAILB", 254: "MAILA", 255: "*", 256: "URI", 257: "CAA", 32768: "TA", 32769: "DLV",
    65422: "BINDS",
}
CLASSES: dict[int, str] = {1: "C_INTERNET", 2: "C_CSNET", 3: "C_CHAOS", 4: "C_HESIOD", 254: "C_NONE", 255: "C_ANY"}
RCODES: dict[int, str] = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
    7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADVERS", 17: "BADKEY", 18: "BADTIME",
    19: "BADMODE", 20: "BADNAME", 21: "BADALG", 22: "BADTRUNC", 23: "BADCOOKIE",
}
SVC_KEYS = {0: "mandatory", 1: "alpn", 2: "no-default-alpn", 3: "port", 4: "ipv4hint", 5: "ech", 6: "ipv6hint",
            7: "dohpath", 8: "ohttp"}


def qtype_name(t: int) -> str:
    return QTYPES.get(t, f"query-{t}")


def qclass_name(c: int) -> str:
    if c in CLASSES:
        return CLASSES[c]
    if (c & 0x7FFF) in CLASSES:  # mDNS: top bit is unicast-response / cache-flush
        return CLASSES[c & 0x7FFF]
    return f"unknown-{c}"


def rcode_name(r: int) -> str:
    return RCODES.get(r, f"unknown-{r}")


# --------------------------------------------------------------------------------------------
# Message parser
#
# Speed matters here: a busy link carries hundreds of thousands of DNS messages, and this
# parser runs once per message. It is tuned for the typical message (one question; a few
# A/AAAA/CNAME answers whose names point at earlier names; an OPT record): a per-message cache
# of decoded names, memoized name and address texts, one check per name instead of one per
# label, combined struct unpacks, tuples instead of objects on the analyzer's path. Every
# shortcut gives exactly what the plain RFC 1035 walk gives, and malformed input takes the same
# checks in the same order (tests/test_dns.py holds the plain walk as a reference and compares).


class DNSParseError(Exception):
    """Internal: malformed message (never escapes :func:`parse_message`)."""


@dataclass(slots=True)
class RR:
    name: str
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes
    section: str  # "answer" | "authority" | "additional"
    text: str  # Zeek-style rendering ("" when Zeek renders nothing, e.g. OPT)
    value: Any = None  # parsed value (address string, name, dict ...)


@dataclass(slots=True)
class Message:
    id: int
    qr: bool
    opcode: int
    aa: bool
    tc: bool
    rd: bool
    ra: bool
    z: int
    rcode: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int
    questions: list[tuple[str, int, int]] = field(default_factory=list)
    answers: list[RR] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)
    edns: dict | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)  # (weird name, detail)
    truncated: bool = False  # stopped early on malformed data


MAX_POINTERS = 64
MAX_NAME = 255


_PLAIN_LABEL = re.compile(rb"[!-\-/-\[\]-~]*")  # printable ASCII except "." and "\\"
#: The same bytes, for ``bytes.translate(None, _PLAIN_BYTES)``: what is left is what needs escaping.
_PLAIN_BYTES = bytes(b for b in range(0x21, 0x7F) if b not in (0x2E, 0x5C))


def _label_text(lab: bytes) -> str:
    """A label as Zeek renders it: printable ASCII as is, '.' and '\\' escaped, other bytes as \\DDD."""
    if _PLAIN_LABEL.fullmatch(lab):
        return lab.decode("ascii")  # the common case, in C
    out = []
    for b in lab:
        if b == 0x2E or b == 0x5C:
            out.append("\\" + chr(b))
        elif 0x21 <= b <= 0x7E:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    return "".join(out)


#: Names decoded so far in one message, keyed by ``0xC000 + offset`` of where their decoding
#: started -- the value of the two bytes of a compression pointer to that offset, so a pointer
#: is looked up as it stands (offsets past 0x3FFF, which no pointer reaches, get keys no pointer
#: has). Values: ``(name, wire length counted against MAX_NAME, pointers followed, pointer
#: targets)``. Only names that followed fewer than MAX_POINTERS pointers are kept (a pointer to
#: one of them is always within the limit). Valid for the one message it was filled from.
NameCache = dict[int, tuple[str, int, int, tuple[int, ...]]]

#: ``_LABEL_STEP[b]``: for a length byte ``b`` of an ordinary label (1..63), the distance to the
#: next length byte; 0 for the root byte, pointers and reserved label types (the walk stops).
_LABEL_STEP: tuple[int, ...] = tuple(b + 1 if 0 < b < 0x40 else 0 for b in range(256))


def _labels_text(raw: list[bytes]) -> str:
    """Labels joined with dots, as Zeek renders them (see :func:`_label_text`).

    One check over the whole name instead of one per label: when deleting the plain bytes
    leaves just the separating dots, no label needs escaping."""
    dotted = b".".join(raw)
    if len(dotted.translate(None, _PLAIN_BYTES)) == len(raw) - 1:
        return dotted.decode("ascii")
    return ".".join([_label_text(lab) for lab in raw])


def _wire_text(wire: bytes) -> str:
    """Text of a well-formed run of length-prefixed labels (without the root byte).

    The length bytes are overwritten with dots in a copy, which then is the text when deleting
    the plain bytes leaves only those dots (see :func:`_labels_text`)."""
    buf = bytearray(wire)
    labels = 0
    o = 0
    while o < len(buf):
        step = buf[o] + 1
        buf[o] = 0x2E
        o += step
        labels += 1
    if len(buf.translate(None, _PLAIN_BYTES)) == labels:
        return buf[1:].decode("ascii")
    out = []
    o = 0
    while o < len(wire):
        step = wire[o] + 1
        out.append(_label_text(wire[o + 1 : o + step]))
        o += step
    return ".".join(out)


# Texts of uncompressed names by their wire bytes (length-prefixed labels, without the root
# byte): decoding such a name depends on nothing else, and the same names come back all the
# time (a response repeats its query's question; popular names recur). Cleared when full.
_NAME_MEMO: dict[bytes, str] = {}
_NAME_MEMO_MAX = 8192


def read_name(msg: bytes, off: int, cache: NameCache | None = None) -> tuple[str, int]:
    """Decode the (possibly compressed) name at ``off``; return (name, offset after it).

    With a ``cache`` (one dict per message, see :data:`NameCache`) a compression pointer to a
    name decoded before is resolved by a lookup instead of walking its labels again: names in
    answers are nearly always pointers to the question or to an earlier answer.

    This is the fast path for the usual shapes -- labels ending in a root byte, or in one
    pointer to a cached name -- in a ``bytes`` message. Anything else (a pointer to an uncached
    name, a truncated or over-long name, a reserved label type, another buffer type) is left
    to :func:`_walk_name`, which restarts from ``off`` and checks every step, so malformed
    names fail exactly as they always did.
    """
    start = off
    try:
        step = _LABEL_STEP[msg[off]]
        while step:
            off += step
            step = _LABEL_STEP[msg[off]]  # IndexError when the labels ran to (or past) the end
        ln = msg[off]
        if ln >= 0xC0:
            key = (ln << 8) | msg[off + 1]  # the pointer, as a cache key
    except IndexError:
        return _walk_name(msg, start, cache)
    total = off - start  # the wire length the walk counts against MAX_NAME
    if total > MAX_NAME or (ln and (ln < 0xC0 or cache is None)) or type(msg) is not bytes:
        return _walk_name(msg, start, cache)
    wire = msg[start:off]
    name = _NAME_MEMO.get(wire)
    if name is None:
        name = _wire_text(wire)
        if len(_NAME_MEMO) >= _NAME_MEMO_MAX:
            _NAME_MEMO.clear()
        _NAME_MEMO[wire] = name
    if not ln:  # uncompressed
        if cache is not None:
            cache[0xC000 + start] = (name, total, 0, ())
        return name, off + 1
    hit = cache.get(key)  # type: ignore[union-attr]
    # A cached name decoded without error from its start never points back to that start, and
    # has followed fewer than MAX_POINTERS pointers: from here the walk could only fail on the
    # combined length.
    if hit is None or total + hit[1] > MAX_NAME:
        return _walk_name(msg, start, cache)
    if not total:
        name = hit[0]
    elif hit[0]:
        name = name + "." + hit[0]
    if hit[2] + 1 < MAX_POINTERS:
        cache[0xC000 + start] = (name, total + hit[1], hit[2] + 1, (key - 0xC000,) + hit[3])  # type: ignore[index]
    return name, off + 2


def _walk_name(msg: bytes, off: int, cache: NameCache | None) -> tuple[str, int]:
    """:func:`read_name` step by step, with every RFC 1035 check (and the cache where it is
    certain to give the same result)."""
    start = off
    n = len(msg)
    raw: list[bytes] = []
    seen: list[int] = []  # pointer targets followed (loop protection), in order
    total = 0
    jumps = 0
    end = -1
    tail = None  # cached name the walk ended in
    while True:
        if off >= n:
            raise DNSParseError("DNS_name_truncated")
        ln = msg[off]
        if ln >= 0xC0:  # compression pointer
            if off + 1 >= n:
                raise DNSParseError("DNS_name_truncated")
            ptr = ((ln & 0x3F) << 8) | msg[off + 1]
            if end < 0:
                end = off + 2
            jumps += 1
            if jumps > MAX_POINTERS or ptr in seen or ptr >= n:
                raise DNSParseError("DNS_name_compression_loop")
            seen.append(ptr)
            if cache is not None:
                hit = cache.get(0xC000 + ptr)
                # A cached name decoded without error from its start never points back to that
                # start, so going on from here could only fail on the combined length, pointer
                # count, or a pointer target this walk has followed already.
                if (hit is not None and total + hit[1] <= MAX_NAME and jumps + hit[2] <= MAX_POINTERS
                        and not any(t in seen for t in hit[3])):
                    tail = hit
                    break
            off = ptr
            continue
        if ln >= 0x40:  # 0x40 / 0x80: extended / reserved label types
            raise DNSParseError("DNS_label_bad_type")
        off += 1
        if ln == 0:
            break
        if off + ln > n:
            raise DNSParseError("DNS_label_truncated")
        total += ln + 1
        if total > MAX_NAME:
            raise DNSParseError("DNS_name_too_long")
        raw.append(msg[off : off + ln])
        off += ln
    if end < 0:
        end = off
    if raw:
        name = _labels_text(raw)
        if tail is not None and tail[0]:
            name = name + "." + tail[0]
    else:
        name = tail[0] if tail is not None else ""
    if tail is not None:
        total += tail[1]
        jumps += tail[2]
        seen.extend(tail[3])
    if cache is not None and jumps < MAX_POINTERS:
        cache[0xC000 + start] = (name, total, jumps, tuple(seen))
    return name, end


def _u16(b: bytes, o: int) -> int:
    if o + 2 > len(b):
        raise DNSParseError("DNS_rdata_truncated")
    return (b[o] << 8) | b[o + 1]


def _u32(b: bytes, o: int) -> int:
    if o + 4 > len(b):
        raise DNSParseError("DNS_rdata_truncated")
    return struct.unpack_from("!I", b, o)[0]


# Addresses. ``str(ipaddress.IPv4Address(b))`` costs microseconds; the same text comes from a
# memo (answers repeat the same addresses) or from inet_ntop. inet_ntop renders IPv6 as
# ipaddress does (RFC 5952: lower case, longest zero run of two or more groups compressed,
# first one on a tie) except when the first 80 bits are zero (glibc writes "::ffff:1.2.3.4",
# ipaddress "::ffff:102:304"): those keep going through ipaddress, as does everything when
# the self-check at import finds the platform's inet_ntop rendering differently.

_ADDR_MEMO: dict[bytes, str] = {}
_ADDR_MEMO_MAX = 8192  # cleared when full: bounded memory, and hot addresses come back at once
_V6_EMBEDDED_V4 = bytes(10)


def _ntop_matches_ipaddress() -> bool:
    """Whether this platform's inet_ntop writes addresses as ipaddress does (checked once)."""
    probes6 = [bytes.fromhex(h) for h in (
        "20010db8000000000000000000000001", "20010db8000000010000000000000001", "20010db8000100000001000000000001",
        "00000000000000000000000000000001", "fe800000000000000000000000000000", "20010db800000000000100000000abcd",
        "000102030405060708090a0b0c0d0e0f", "ff020000000000000000000000000001", "20010db8aaaa0000bbbb0000cccc0000",
        "0000000000000000000000000000ffff", "00000000000000000001000000000000", "ffffffffffffffffffffffffffffffff",
        "2a001450400108060000000000002004", "26064700000000000000000068101234", "00000000000000000000000100000000",
    )]
    probes4 = [bytes([0, 0, 0, 0]), bytes([255, 255, 255, 255]), bytes([10, 0, 0, 1]), bytes([192, 168, 1, 100])]
    try:
        return (all(socket.inet_ntop(socket.AF_INET6, p) == str(ipaddress.IPv6Address(p)) for p in probes6
                    if p[:10] != _V6_EMBEDDED_V4)
                and all(socket.inet_ntop(socket.AF_INET, p) == str(ipaddress.IPv4Address(p)) for p in probes4))
    except (OSError, ValueError, AttributeError):
        return False


_NTOP_OK = _ntop_matches_ipaddress()


def _ipv4_text(raw: bytes) -> str:
    """4-byte A rdata as ``str(ipaddress.IPv4Address(raw))`` (memoized for bytes)."""
    if type(raw) is not bytes:
        return str(ipaddress.IPv4Address(raw))
    text = _ADDR_MEMO.get(raw)
    if text is None:
        text = socket.inet_ntop(socket.AF_INET, raw) if _NTOP_OK else str(ipaddress.IPv4Address(raw))
        if len(_ADDR_MEMO) >= _ADDR_MEMO_MAX:
            _ADDR_MEMO.clear()
        _ADDR_MEMO[raw] = text
    return text


def _ipv6_text(raw: bytes) -> str:
    """16-byte AAAA rdata as ``str(ipaddress.IPv6Address(raw))`` (memoized for bytes)."""
    if type(raw) is not bytes:
        return str(ipaddress.IPv6Address(raw))
    text = _ADDR_MEMO.get(raw)
    if text is None:
        if _NTOP_OK and raw[:10] != _V6_EMBEDDED_V4:
            text = socket.inet_ntop(socket.AF_INET6, raw)
        else:
            text = str(ipaddress.IPv6Address(raw))
        if len(_ADDR_MEMO) >= _ADDR_MEMO_MAX:
            _ADDR_MEMO.clear()
        _ADDR_MEMO[raw] = text
    return text


def _raw_strings(b: bytes) -> list[bytes]:
    out = []
    o = 0
    while o < len(b):
        ln = b[o]
        o += 1
        if o + ln > len(b):
            raise DNSParseError("DNS_TXT_truncated")
        out.append(b[o : o + ln])
        o += ln
    return out


def _char_strings(b: bytes) -> list[str]:
    return [s.decode("utf-8", "backslashreplace") for s in _raw_strings(b)]


def _type_bitmap(b: bytes) -> list[str]:
    types = []
    o = 0
    while o + 2 <= len(b):
        win, ln = b[o], b[o + 1]
        o += 2
        if ln == 0 or ln > 32 or o + ln > len(b):
            raise DNSParseError("DNS_NSEC_bitmap_bad")
        for i in range(ln):
            byte = b[o + i]
            for bit in range(8):
                if byte & (0x80 >> bit):
                    types.append(qtype_name(win * 256 + i * 8 + bit))
        o += ln
    if o != len(b):
        raise DNSParseError("DNS_NSEC_bitmap_bad")
    return types


def _svc_params(b: bytes) -> list[str]:
    out = []
    o = 0
    while o < len(b):
        key = _u16(b, o)
        ln = _u16(b, o + 2)
        o += 4
        if o + ln > len(b):
            raise DNSParseError("DNS_SVCB_truncated")
        v = b[o : o + ln]
        o += ln
        name = SVC_KEYS.get(key, f"key{key}")
        if key == 1:
            val = ",".join(_char_strings(v))
        elif key == 3 and ln == 2:
            val = str(_u16(v, 0))
        elif key == 4 and ln % 4 == 0:
            val = ",".join(str(ipaddress.IPv4Address(v[i : i + 4])) for i in range(0, ln, 4))
        elif key == 6 and ln % 16 == 0:
            val = ",".join(str(ipaddress.IPv6Address(v[i : i + 16])) for i in range(0, ln, 16))
        elif key == 0 and ln % 2 == 0:
            val = ",".join(SVC_KEYS.get(_u16(v, i), f"key{_u16(v, i)}") for i in range(0, ln, 2))
        elif key == 7:
            val = v.decode("utf-8", "backslashreplace")
        elif ln == 0:
            out.append(name)
            continue
        else:
            val = v.hex()
        out.append(f"{name}={val}")
    return out


def _parse_ecs(v: bytes) -> tuple[dict | None, tuple[str, str] | None]:
    if len(v) < 4:
        return None, ("EDNS_ECS_invalid_option_len", "")
    family, src, scope = _u16(v, 0), v[2], v[3]
    addr = v[4:]
    if family == 1:
        if src > 32:
            return None, ("EDNS_ECS_invalid_addr_v4_prefix", f"{src} bits")
        if len(addr) > 4:
            return None, ("EDNS_ECS_invalid_addr_v4", f"need 32 bits, have {len(addr) * 8} bits")
        a = str(ipaddress.IPv4Address(addr.ljust(4, b"\0")))
    elif family == 2:
        if src > 128:
            return None, ("EDNS_ECS_invalid_addr_v6_prefix", f"{src} bits")
        if len(addr) > 16:
            return None, ("EDNS_ECS_invalid_addr_v6", f"need 128 bits, have {len(addr) * 8} bits")
        a = str(ipaddress.IPv6Address(addr.ljust(16, b"\0")))
    else:
        return None, ("EDNS_ECS_invalid_family", str(family))
    return {"family": "v4" if family == 1 else "v6", "source_prefix_len": src, "scope_prefix_len": scope,
            "address": a}, None


def _parse_opt(rr_class: int, ttl: int, rdata: bytes, problems: list) -> dict:
    edns: dict[str, Any] = {
        "udp_size": rr_class,
        "extended_rcode": (ttl >> 24) & 0xFF,
        "version": (ttl >> 16) & 0xFF,
        "do": ttl & 0x8000 != 0,
        "options": [],
    }
    if not rdata:  # the usual OPT: no options
        return edns
    o = 0
    while o < len(rdata):
        if o + 4 > len(rdata):
            problems.append(("EDNS_truncated_option", ""))
            break
        code, ln = _u16(rdata, o), _u16(rdata, o + 2)
        o += 4
        if o + ln > len(rdata):
            problems.append(("EDNS_truncated_option", ""))
            break
        v = rdata[o : o + ln]
        o += ln
        edns["options"].append((code, v))
        if code == 8:
            ecs, prob = _parse_ecs(v)
            if prob:
                problems.append(prob)
            else:
                edns["ecs"] = ecs
        elif code == 10:
            edns["cookie"] = v.hex()
        elif code == 12:
            pass  # padding
    return edns


def _rdata_name(msg: bytes, o: int, end: int, cache: NameCache | None) -> tuple[str, int]:
    """The name at ``o`` inside an RR's rdata (which ends at ``end``)."""
    nm, after = read_name(msg, o, cache)
    if after > end:
        raise DNSParseError("DNS_rdata_name_overrun")
    return nm, after


#: RR types whose rdata is one name: NS CNAME PTR DNAME MD MF MB MG MR
_NAME_TYPES = frozenset((2, 5, 12, 39, 3, 4, 7, 8, 9))


def _render(msg: bytes, rtype: int, rdata: bytes, rd_off: int, rr_name: str,
            cache: NameCache | None = None) -> tuple[str, Any]:
    """(Zeek-style text, parsed value) of one RR's rdata. Raises DNSParseError when malformed.

    ``cache``: the message's :data:`NameCache` (names in rdata are cached like any other)."""
    end = rd_off + len(rdata)

    # the common types first
    if rtype == 1:
        if len(rdata) != 4:
            raise DNSParseError("DNS_A_bad_length")
        a = _ipv4_text(rdata)
        return a, a
    if rtype == 28:
        if len(rdata) != 16:
            raise DNSParseError("DNS_AAAA_bad_length")
        a = _ipv6_text(rdata)
        return a, a
    if rtype in _NAME_TYPES:
        nm, _ = _rdata_name(msg, rd_off, end, cache)
        return nm, nm
    if rtype == 15:
        pref = _u16(rdata, 0)
        nm, _ = _rdata_name(msg, rd_off + 2, end, cache)
        return nm, {"preference": pref, "exchange": nm}
    if rtype == 6:
        mname, o = _rdata_name(msg, rd_off, end, cache)
        rname, o = _rdata_name(msg, o, end, cache)
        o -= rd_off
        if o + 20 > len(rdata):
            raise DNSParseError("DNS_SOA_truncated")
        serial, refresh, retry, expire, minimum = struct.unpack_from("!IIIII", rdata, o)
        return mname, {"mname": mname, "rname": rname, "serial": serial, "refresh": refresh, "retry": retry,
                       "expire": expire, "minimum": minimum}
    if rtype in (16, 99):
        raw = _raw_strings(rdata)
        strs = [s.decode("utf-8", "backslashreplace") for s in raw]
        tag = "TXT" if rtype == 16 else "SPF"
        return " ".join(f"{tag} {len(r)} {s}" for r, s in zip(raw, strs)), strs
    if rtype == 33:
        prio, weight, port = _u16(rdata, 0), _u16(rdata, 2), _u16(rdata, 4)
        nm, _ = _rdata_name(msg, rd_off + 6, end, cache)
        return nm, {"priority": prio, "weight": weight, "port": port, "target": nm}
    if rtype == 35:
        order, pref = _u16(rdata, 0), _u16(rdata, 2)
        o = 4
        strs = []
        for _ in range(3):
            if o >= len(rdata):
                raise DNSParseError("DNS_NAPTR_truncated")
            ln = rdata[o]
            if o + 1 + ln > len(rdata):
                raise DNSParseError("DNS_NAPTR_truncated")
            strs.append(rdata[o + 1 : o + 1 + ln].decode("utf-8", "backslashreplace"))
            o += 1 + ln
        repl, _ = _rdata_name(msg, rd_off + o, end, cache)
        flags, services, regexp = strs
        val = {"order": order, "preference": pref, "flags": flags, "services": services, "regexp": regexp,
               "replacement": repl}
        return f'NAPTR {order} {pref} "{flags}" "{services}" "{regexp}" {repl or "."}', val
    if rtype in (43, 59, 32769):
        if len(rdata) < 4:
            raise DNSParseError("DNS_DS_truncated")
        tag, alg, dtype = _u16(rdata, 0), rdata[2], rdata[3]
        return f"DS {alg} {dtype}", {"key_tag": tag, "algorithm": alg, "digest_type": dtype,
                                     "digest": rdata[4:].hex()}
    if rtype in (48, 60, 25):
        if len(rdata) < 4:
            raise DNSParseError("DNS_DNSKEY_truncated")
        flags, proto, alg = _u16(rdata, 0), rdata[2], rdata[3]
        return f"DNSKEY {alg}", {"flags": flags, "protocol": proto, "algorithm": alg, "public_key": rdata[4:].hex()}
    if rtype in (46, 24):
        if len(rdata) < 18:
            raise DNSParseError("DNS_RRSIG_truncated")
        covered, alg, labels = _u16(rdata, 0), rdata[2], rdata[3]
        orig_ttl, expi, incep = struct.unpack_from("!III", rdata, 4)
        key_tag = _u16(rdata, 16)
        signer, after = _rdata_name(msg, rd_off + 18, end, cache)
        val = {"type_covered": qtype_name(covered), "algorithm": alg, "labels": labels, "orig_ttl": orig_ttl,
               "expiration": expi, "inception": incep, "key_tag": key_tag, "signer_name": signer,
               "signature": msg[after:end].hex()}
        return f"RRSIG {qtype_name(covered)} {signer or '<Root>'}", val
    if rtype == 47:
        nxt, after = _rdata_name(msg, rd_off, end, cache)
        types = _type_bitmap(msg[after:end])
        return f"NSEC {rr_name} {nxt}", {"next_name": nxt, "types": types}
    if rtype == 50:
        return "NSEC3", {"hash_algorithm": rdata[0] if rdata else None}
    if rtype == 51:
        return "NSEC3PARAM", None
    if rtype == 44:
        if len(rdata) < 2:
            raise DNSParseError("DNS_SSHFP_truncated")
        return f"SSHFP: {rdata[2:].hex()}", {"algorithm": rdata[0], "fp_type": rdata[1], "fingerprint": rdata[2:].hex()}
    if rtype == 13:
        strs = _char_strings(rdata)
        return " ".join(strs), strs
    if rtype in (64, 65):
        prio = _u16(rdata, 0)
        target, after = _rdata_name(msg, rd_off + 2, end, cache)
        params = _svc_params(msg[after:end])
        tag = "HTTPS" if rtype == 65 else "SVCB"
        text = " ".join([tag, str(prio), target or "."] + params)
        return text, {"priority": prio, "target": target, "params": params}
    if rtype == 257:
        if len(rdata) < 2:
            raise DNSParseError("DNS_CAA_truncated")
        flags, tl = rdata[0], rdata[1]
        if 2 + tl > len(rdata):
            raise DNSParseError("DNS_CAA_truncated")
        tag = rdata[2 : 2 + tl].decode("ascii", "backslashreplace")
        value = rdata[2 + tl :].decode("utf-8", "backslashreplace")
        return f"CAA {flags} {tag} {value}", {"flags": flags, "tag": tag, "value": value}
    if rtype == 52 or rtype == 53:
        if len(rdata) < 3:
            raise DNSParseError("DNS_TLSA_truncated")
        return f"TLSA {rdata[0]} {rdata[1]} {rdata[2]} {rdata[3:].hex()}", None
    if rtype == 256:
        prio, weight = _u16(rdata, 0), _u16(rdata, 2)
        target = rdata[4:].decode("utf-8", "backslashreplace")
        return f"URI {prio} {weight} {target}", {"priority": prio, "weight": weight, "target": target}
    if rtype == 11:
        return "", None  # WKS: Zeek renders nothing
    return f"<unknown type={rtype}> {rdata.hex()}", rdata.hex()


_HEADER = struct.Struct("!HHHHHH").unpack_from
_QUESTION_TAIL = struct.Struct("!HH").unpack_from
_RR_HEAD = struct.Struct("!HHIH").unpack_from  # type, class, TTL, rdlength
_PTR_RR_HEAD = struct.Struct("!HHHIH").unpack_from  # a 2-byte owner (a pointer), then the above
_ROOT_RR_HEAD = struct.Struct("!xHHIH").unpack_from  # the root as owner, then the above

#: One resource record as :func:`_parse` returns it: the fields of :class:`RR` but the section
#: (name, rtype, rclass, ttl, rdata, text, value).
RawRR = tuple[str, int, int, int, bytes, str, Any]
#: What :func:`_parse` returns: (id, flags, rcode incl. the EDNS extended bits, qdcount, ancount,
#: nscount, arcount, questions, rrs, edns, problems, truncated). ``rrs`` holds the records of
#: all three sections in message order: answers are ``rrs[:ancount]``, authority records
#: ``rrs[ancount:ancount + nscount]``, additional ones the rest (fewer when parsing stopped early).
#: With ``full=False``, ``rrs`` is a :data:`RecordTexts` instead.
Parsed = tuple[int, int, int, int, int, int, int, list[tuple[str, int, int]], "list[RawRR] | RecordTexts",
               "dict | None", list[tuple[str, str]], bool]
#: What a ``dns`` record takes from the resource records: (the first record's name or None, the
#: answers' texts, their TTLs (as floats), authority texts or None, additional texts or None),
#: leaving out the records Zeek renders as nothing (text "": OPT, WKS).
RecordTexts = tuple["str | None", list[str], list[float], "list[str] | None", "list[str] | None"]


def parse_message(data: bytes) -> Message | None:
    """Parse one DNS message. Returns None when there is not even a header; otherwise a
    :class:`Message` with whatever could be parsed (``problems`` lists what went wrong)."""
    p = _parse(data)
    if p is None:
        return None
    mid, flags, rcode, qd, an, ns, ar, questions, rrs, edns, problems, truncated = p
    answers: list[RR] = []
    authority: list[RR] = []
    additional: list[RR] = []
    for i, (nm, t, c, ttl, rd, tx, v) in enumerate(rrs):  # type: ignore[arg-type]
        if i < an:
            answers.append(RR(nm, t, c, ttl, rd, "answer", tx, v))
        elif i < an + ns:
            authority.append(RR(nm, t, c, ttl, rd, "authority", tx, v))
        else:
            additional.append(RR(nm, t, c, ttl, rd, "additional", tx, v))
    return Message(
        mid, flags & 0x8000 != 0, (flags >> 11) & 0xF, flags & 0x0400 != 0, flags & 0x0200 != 0,
        flags & 0x0100 != 0, flags & 0x0080 != 0, (flags >> 4) & 0x7, rcode, qd, an, ns, ar, questions,
        answers, authority, additional, edns, problems, truncated,
    )


def _parse(data: bytes, full: bool = True) -> Parsed | None:
    """:func:`parse_message` with plain tuples instead of :class:`Message` and :class:`RR`
    objects (see :data:`Parsed`): the analyzer reads each message once and keeps none of
    them, and building the dataclasses would cost it a good part of its time.

    ``full=False`` is the analyzer's cut, for the same reason: the same parse (and the same
    problems), but only the :data:`RecordTexts` instead of every record, and ``edns`` None for
    an OPT without options (the analyzer looks in it for a client subnet option only)."""
    n = len(data)
    if n < 12:
        return None
    mid, flags, qd, an, ns, ar = _HEADER(data, 0)
    rcode = flags & 0xF
    questions: list[tuple[str, int, int]] = []
    rrs: list[RawRR] = []
    # full=False: the RecordTexts (authority and additional texts are rare: lists made on demand)
    first: str | None = None
    texts: list[str] = []
    ttls: list[float] = []
    auth: list[str] | None = None
    addl: list[str] | None = None
    problems: list[tuple[str, str]] = []
    edns: dict | None = None
    truncated = False
    cache: NameCache = {}
    # A/AAAA texts come from the address memo, keyed by the rdata: only for real bytes (other
    # buffers take the general path in _render, as they always did).
    memo = _ADDR_MEMO if type(data) is bytes else None
    off = 12
    try:
        for _ in range(qd):
            name, off = read_name(data, off, cache)
            if off + 4 > n:
                raise DNSParseError("DNS_truncated_quest_too_short")
            qt, qc = _QUESTION_TAIL(data, off)
            off += 4
            questions.append((name, qt, qc))
        for i in range(an + ns + ar):
            # The owner name is nearly always a compression pointer to a name decoded before
            # (what read_name's fast path does, inline: this runs for every RR); then it and
            # the fixed fields come out of one unpack. Else it is mostly the root (OPT).
            hit = None
            if off + 12 <= n:
                key, rtype, rclass, ttl, rdlen = _PTR_RR_HEAD(data, off)
                hit = cache.get(key)
            if hit:
                name = hit[0]
                off += 12
            elif off + 11 <= n and data[off] == 0:
                name = ""
                rtype, rclass, ttl, rdlen = _ROOT_RR_HEAD(data, off)
                off += 11
            else:
                name, off = read_name(data, off, cache)
                if off + 10 > n:
                    raise DNSParseError("DNS_truncated_ans_too_short")
                rtype, rclass, ttl, rdlen = _RR_HEAD(data, off)
                off += 10
            if off + rdlen > n:
                raise DNSParseError("DNS_truncated_RR_rdlength_lt_len")
            rdata = data[off : off + rdlen]
            if rtype == 1 and rdlen == 4 and memo is not None:  # A, the most common answer
                text = value = memo.get(rdata) or _ipv4_text(rdata)
            elif rtype == 28 and rdlen == 16 and memo is not None:  # AAAA
                text = value = memo.get(rdata) or _ipv6_text(rdata)
            elif rtype == 41:
                edns = value = _parse_opt(rclass, ttl, rdata, problems) if full or rdata else None
                if ttl & 0xFF000000:  # EDNS extended rcode (edns["extended_rcode"])
                    rcode |= (ttl >> 24) << 4
                text = ""
            else:
                try:
                    if rtype in _NAME_TYPES:  # CNAME, PTR, NS...: what _render does, without 2 calls
                        text, after = read_name(data, off, cache)
                        if after > off + rdlen:
                            raise DNSParseError("DNS_rdata_name_overrun")
                        value = text
                    else:
                        text, value = _render(data, rtype, rdata, off, name, cache)
                except (DNSParseError, ValueError, IndexError, struct.error) as e:
                    problems.append((e.args[0] if isinstance(e, DNSParseError) else "DNS_rdata_bad",
                                     qtype_name(rtype)))
                    text, value = f"<unknown type={rtype}> {rdata.hex()}", rdata.hex()
            off += rdlen
            if full:
                rrs.append((name, rtype, rclass, ttl, rdata, text, value))
                continue
            if not i:
                first = name
            if text:
                if i < an:
                    texts.append(text)
                    ttls.append(float(ttl))
                elif i < an + ns:
                    if auth is None:
                        auth = []
                    auth.append(text)
                else:
                    if addl is None:
                        addl = []
                    addl.append(text)
    except DNSParseError as e:
        problems.append((e.args[0], ""))
        truncated = True
    except (ValueError, IndexError, struct.error) as e:  # defensive: never raise
        problems.append(("DNS_parse_error", type(e).__name__))
        truncated = True
    if full:
        return mid, flags, rcode, qd, an, ns, ar, questions, rrs, edns, problems, truncated
    return mid, flags, rcode, qd, an, ns, ar, questions, (first, texts, ttls, auth, addl), edns, problems, truncated


# --------------------------------------------------------------------------------------------
# Analyzer


#: A query waiting for its response: (ts, trans_id, its name, the name in lower case, record). A
#: plain tuple: one is made per query.
_Pending = tuple[float, int, "str | None", "str | None", dict[str, Any]]


MAX_PENDING = 4096
MAX_TCP_BUFFER = 65535 + 2

# A record is a list: every DNS field in schema order after the common ones, then "ts"
# (:data:`RECORD_NAMES`). One is made per transaction, and a list of fixed positions is cheaper
# to fill than a dict and is a row as it stands for the column-wise table of :class:`DnsFlows`.
RECORD_NAMES: tuple[str, ...] = (*DNS_SCHEMA.names[6:], "ts")
(R_PROTO, R_TRANS_ID, R_RTT, R_QUERY, R_QCLASS, R_QCLASS_NAME, R_QTYPE, R_QTYPE_NAME, R_RCODE, R_RCODE_NAME, R_AA,
 R_TC, R_RD, R_RA, R_Z, R_ANSWERS, R_TTLS, R_REJECTED, R_AUTH, R_ADDL, R_ECS, R_TS) = range(len(RECORD_NAMES))
_RECORD_TEMPLATE: list[Any] = [None] * len(RECORD_NAMES)
_RECORD_TEMPLATE[R_REJECTED] = False

# Queries repeat: clients ask for the same names over and over, each time with a new ID, so
# most queries on a link are byte for byte a query seen before but for the ID. Their parses
# (``_parse(data, False)`` without the ID) by the message after the ID; cleared when full.
# A parse depends on the ID only through a compression pointer to it (offset 0 or 1: the
# bytes C0 00 or C0 01); messages holding those are not kept. The query path only reads a
# parse (nothing of it is stored by reference but strings and ints), so sharing one is safe.
_QUERY_MEMO: dict[bytes, tuple] = {}
_QUERY_MEMO_MAX = 4096


class DNSAnalyzer(StreamAnalyzer):
    """DNS over UDP datagrams or TCP (length-framed) streams."""

    service = "dns"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self._pending: deque[_Pending] = deque()
        # TCP framing state, created on the first feed()/gap(): most DNS flows are UDP, and
        # one analyzer is created per flow (often for a single query and its response).
        self._buf: dict[bool, bytearray] | None = None
        self._dead: dict[bool, bool] | None = None
        self.messages = 0

    # ---- transport

    def _tcp_state(self) -> tuple[dict[bool, bytearray], dict[bool, bool]]:
        if self._buf is None or self._dead is None:
            self._buf = {True: bytearray(), False: bytearray()}
            self._dead = {True: False, False: False}
        return self._buf, self._dead

    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        bufs, dead = self._tcp_state()
        if dead[is_orig] or not data:
            return
        buf = bufs[is_orig]
        buf += data
        while len(buf) >= 2:
            ln = (buf[0] << 8) | buf[1]
            if ln < 12:
                self.weirds.append(("DNS_TCP_bad_length", str(ln)))
                dead[is_orig] = True
                buf.clear()
                return
            if len(buf) < 2 + ln:
                break
            msg = bytes(buf[2 : 2 + ln])
            del buf[: 2 + ln]
            self.datagram(is_orig, msg, ts)  # one message, as over UDP
        if len(buf) > MAX_TCP_BUFFER:  # cannot happen with a 16-bit length; belt and braces
            dead[is_orig] = True
            buf.clear()

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        # Message framing of this direction is lost; stop parsing it.
        bufs, dead = self._tcp_state()
        if not dead[is_orig]:
            self.weirds.append(("DNS_TCP_gap", str(length)))
        dead[is_orig] = True
        bufs[is_orig].clear()

    def finish(self, ts: float) -> None:
        bufs = self._buf
        if bufs is not None and (bufs[True] or bufs[False]):
            self.weirds.append(("DNS_truncated_len_lt_hdr_len", ""))
            bufs[True].clear()
            bufs[False].clear()
        pending = self._pending
        while pending:
            self.records.append(("dns", pending.popleft()[4]))

    # ---- messages (as :func:`_parse` tuples, see :data:`Parsed`)

    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        """One DNS message (a UDP payload, or one length-framed message of a TCP stream)."""
        if _on_message(self._pending, self.conn.proto, data, ts, "dns", self.records, self.weirds):
            self.messages += 1

    def drain(self):
        """Records as dicts (they are kept as lists, see :data:`RECORD_NAMES`)."""
        records, files, weirds = super().drain()
        return [(t, dict(zip(RECORD_NAMES, rec))) for t, rec in records], files, weirds


def _on_message(pending: deque, proto: str, data: bytes, ts: float, tag: Any, records: list, weirds: list) -> bool:
    """One DNS message of a connection whose pending queries are ``pending``: a query waits
    there for its response; a response completes the oldest matching query's record (or makes
    one of its own). Records (lists, see :data:`RECORD_NAMES`) are appended to ``records`` as
    ``(tag, record)``, problems to ``weirds`` as ``(name, detail)``. Returns whether the message
    had a header.

    A function rather than a method so that :class:`DnsFlows` runs exactly this code for many
    connections without an analyzer object per connection."""
    if type(data) is not bytes:
        data = bytes(data)
    p = None
    if len(data) >= 12 and not data[2] & 0x80:  # a query: maybe seen before (see _QUERY_MEMO)
        body = data[2:]
        seen = _QUERY_MEMO.get(body)
        if seen is not None:
            p = ((data[0] << 8) | data[1],) + seen
        else:
            p = _parse(data, False)
            if b"\xc0\x00" not in body and b"\xc0\x01" not in body:
                if len(_QUERY_MEMO) >= _QUERY_MEMO_MAX:
                    _QUERY_MEMO.clear()
                _QUERY_MEMO[body] = p[1:]  # type: ignore[index]
    else:
        p = _parse(data, False)
        if p is None:
            weirds.append(("DNS_truncated_len_lt_hdr_len", str(len(data))))
            return False
    if p[10]:  # problems
        weirds.extend(p[10])
    _parsed_message(pending, proto, p, ts, tag, records, weirds)
    return True


def _parsed_message(pending: deque, proto: str, p: Parsed, ts: float, tag: Any, records: list, weirds: list) -> None:
    """:func:`_on_message` from the message's parse on (also :class:`DnsFlows`' kernel path)."""
    if p[1] & 0x8000:  # QR
        _response(pending, proto, p, ts, tag, records)
        return
    # a query: log it when its response comes (or at the end)
    mid, flags, _, _, _, _, _, questions, _, edns, _, _ = p
    rec = _base(proto, mid, flags, questions, edns, ts)
    if len(pending) >= MAX_PENDING:
        records.append((tag, pending.popleft()[4]))
        weirds.append(("DNS_too_many_pending_queries", str(MAX_PENDING)))
    pending.append((ts, mid, questions[0][0] if questions else None, rec[R_QUERY], rec))


def _base(proto: str, mid: int, flags: int, questions: list[tuple[str, int, int]], edns: dict | None,
          ts: float) -> list[Any]:
    """The record of a query (or of a response without one), as far as the message goes."""
    rec = _RECORD_TEMPLATE.copy()
    rec[R_TS] = ts
    rec[R_PROTO] = proto
    rec[R_TRANS_ID] = mid
    rec[R_Z] = (flags >> 4) & 0x7
    rec[R_RD] = flags & 0x0100 != 0
    rec[R_TC] = flags & 0x0200 != 0
    if questions:
        q, qt, qc = questions[0]
        rec[R_QUERY] = q.lower()
        rec[R_QTYPE] = qt
        rec[R_QTYPE_NAME] = QTYPES.get(qt) or qtype_name(qt)
        rec[R_QCLASS] = qc
        rec[R_QCLASS_NAME] = CLASSES.get(qc) or qclass_name(qc)
    if edns and edns.get("ecs"):
        e = edns["ecs"]
        rec[R_ECS] = f"{e['address']}/{e['source_prefix_len']}"
    return rec


def _response(pending: deque, proto: str, p: Parsed, ts: float, tag: Any, records: list) -> None:
    mid, flags, rcode, qd, an, ns, ar, questions, (first, texts, ttls, auth, addl), edns, _, _ = p
    if not an:
        first = None  # (no answer section: the first record is no answer)
    if questions:
        name = questions[0][0]
    elif first is not None:  # mDNS answers carry no question: the first answer names the query
        name = first
    else:
        name = None
    # the oldest pending query with this ID and name (compared in lower case; the name as
    # the query had it first: often the very same string, from the name memo)
    match = -1
    query = None
    for i, (_, pid, pname, pquery, _) in enumerate(pending):
        if pid == mid:
            if name is None or name == pname:
                match = i
                break
            if query is None:
                query = name.lower()
            if pquery == query:
                match = i
                break
    if match >= 0:
        if match:
            qts, _, _, _, rec = pending[match]
            del pending[match]
        else:
            qts, _, _, _, rec = pending.popleft()
        rtt = ts - qts
        rec[R_RTT] = rtt if rtt > 0 else None
        if rec[R_ECS] is None and edns and edns.get("ecs"):
            e = edns["ecs"]
            rec[R_ECS] = f"{e['address']}/{e['source_prefix_len']}"
        if flags & 0x0200:
            rec[R_TC] = True
    else:
        rec = _base(proto, mid, flags, questions, edns, ts)
    rec[R_RCODE] = rcode
    rec[R_RCODE_NAME] = RCODES.get(rcode) or rcode_name(rcode)
    rec[R_AA] = flags & 0x0400 != 0
    rec[R_RA] = flags & 0x0080 != 0
    if first is not None and rec[R_QUERY] is None:
        rec[R_QUERY] = first.lower()
    if texts:
        rec[R_ANSWERS] = texts
        rec[R_TTLS] = ttls
    if auth:
        rec[R_AUTH] = auth
    if addl:
        rec[R_ADDL] = addl
    if (questions and not (an or ns or ar)) or (rcode != 0 and not qd):
        rec[R_REJECTED] = True
    records.append((tag, rec))


def _same_spans(text: str | np.ndarray, a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """``text[a0[i]:a1[i]] == text[b0[i]:b1[i]]`` for every i (ASCII ``text``, or its bytes as
    uint8), with numpy: a query's name against its response's, for tens of thousands of pairs a
    batch."""
    buf = text if isinstance(text, np.ndarray) else np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    la = a1 - a0
    same = la == b1 - b0
    idx = np.flatnonzero(same & (la > 0))
    if len(idx):
        lens = la[idx]
        pos = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        differ = buf[np.repeat(a0[idx], lens) + pos] != buf[np.repeat(b0[idx], lens) + pos]
        same[idx] = np.add.reduceat(differ, np.cumsum(lens) - lens) == 0
    return same


def _spans_as_strings(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    """``buf[starts[i]:ends[i]]`` (ASCII) for every i, as an Arrow string column, copied by a
    kernel: a batch's query names, without a Python string each."""
    from lawtap.streams.gather import gather_payloads

    lens = np.ascontiguousarray(ends - starts, dtype=np.int64)
    offsets = np.zeros(lens.shape[0] + 1, dtype=np.int32)
    np.cumsum(lens, out=offsets[1:])
    data = np.empty(int(offsets[-1]), dtype=np.uint8)
    gather_payloads(buf, np.ascontiguousarray(starts, dtype=np.int64), lens, data)
    return pa.StringArray.from_buffers(lens.shape[0], pa.py_buffer(offsets), pa.py_buffer(data))


def _lists(list_type: pa.DataType, offsets: np.ndarray, null: np.ndarray, values: pa.Array) -> pa.Array:
    """A list column from its int32 ``offsets`` and ``values``, null where ``null``.

    Why buffers: ``ListArray.from_arrays(..., mask=)`` inverts the mask with ``pyarrow.compute``,
    whose import costs a process about 0.16 s."""
    n = offsets.shape[0] - 1
    validity = pa.py_buffer(np.packbits(~null, bitorder="little")) if null.any() else None
    return pa.Array.from_buffers(list_type, n, [validity, pa.py_buffer(np.ascontiguousarray(offsets, dtype=np.int32))],
                                 null_count=int(null.sum()), children=[values])


class DnsFlows:
    """Every UDP DNS (and mDNS) connection of a run that the flow kernel named, handled together.

    Why: most flows of a large capture are DNS, each a query and its answer. An analyzer object,
    a dispatcher entry and a drain per connection cost more than the two messages, and so did
    parsing them one by one in Python. Here:

    * a batch's messages are parsed at once by :func:`~lawtap.analyzers.dns_scan.scan` (the
      usual shapes; any other goes through :func:`_parse`);
    * a connection with no state kept (nothing pending) whose messages in the batch are just a
      query and its response, or just a response, becomes its record with numpy and Arrow,
      column by column, without any Python per message (:meth:`_whole_transactions`);
    * every other message goes through :func:`_parsed_message`, the code :class:`DNSAnalyzer`
      runs, with the connection's pending queries (its :class:`ConnInfo` made when it first
      needs state).

    Records, their order within a connection, and weirds are what a DNSAnalyzer per connection
    makes (``tests/test_dns_scan.py``); across connections, the vectorized records of a batch
    come before the others.
    """

    def __init__(self, uids_of: Callable[[np.ndarray], list[str]]) -> None:
        self._uids_of = uids_of
        self._flows: dict[int, tuple[ConnInfo, deque[_Pending]]] = {}
        self._records: list[tuple[tuple[int, ConnInfo], list[Any]]] = []
        self._tables: list[pa.Table] = []
        self.weirds: list[tuple[int, str, str, float]] = []
        self.whole = 0  # records made column by column (whole transactions)

    def messages_of(self, data: np.ndarray, fids: np.ndarray, offs: np.ndarray, lens: np.ndarray, times: np.ndarray,
                    addrs: np.ndarray, sports: np.ndarray, dports: np.ndarray, origs: np.ndarray) -> None:
        """Messages ``data[offs[k]:offs[k] + lens[k]]`` of connections ``fids[k]``, at
        ``times[k]`` (seconds), grouped by connection (in capture order within one). Each
        message's packet: ``addrs[k]`` (source hi, lo, destination hi, lo), ports, and whether
        it came from the originator."""
        from lawtap.analyzers import dns_scan as K

        scanned = K.scan_messages(data, offs, lens)
        out = scanned.out
        n = fids.shape[0]
        starts = np.flatnonzero(np.concatenate(([True], fids[1:] != fids[:-1])))
        sizes = np.diff(np.append(starts, n))
        stateless = ~np.isin(fids[starts], np.fromiter(self._flows, dtype=np.int64, count=len(self._flows)))
        ok = out[:, K.K_OK] == 1
        response = (out[:, K.K_FLAGS] & 0x8000) != 0
        # a query and its response (same ID, same name), or a response alone
        twos = starts[(sizes == 2) & stateless]
        twos = twos[ok[twos] & ok[twos + 1] & ~response[twos] & response[twos + 1]
                    & (out[twos, K.K_ID] == out[twos + 1, K.K_ID])]
        if len(twos):
            twos = twos[_same_spans(scanned.name_bytes, out[twos, K.K_NAME0], out[twos, K.K_NAME1],
                                    out[twos + 1, K.K_NAME0], out[twos + 1, K.K_NAME1])]
        ones = starts[(sizes == 1) & stateless]
        ones = ones[ok[ones] & response[ones]]
        whole = np.sort(np.concatenate((twos, ones)))
        done = np.zeros(n, dtype=np.bool_)
        if len(whole):
            paired = np.isin(whole, twos)
            done[whole] = True
            done[whole[paired] + 1] = True
            self._tables.append(self._whole_transactions(scanned, whole, paired, fids, times, addrs, sports, dports,
                                                         origs))
            self.whole += len(whole)
        rest = np.flatnonzero(~done)
        if len(rest):
            self._one_by_one(data, scanned, rest, fids, offs, lens, times, addrs, sports, dports, origs)

    def _whole_transactions(self, scanned, first: np.ndarray, paired: np.ndarray, fids: np.ndarray,
                            times: np.ndarray, addrs: np.ndarray, sports: np.ndarray, dports: np.ndarray,
                            origs: np.ndarray) -> pa.Table:
        """The records of whole transactions: message ``first[i]`` is the query (``paired[i]``,
        the response follows it) or a response without one. What :func:`_parsed_message` makes
        of them, column by column."""
        from lawtap.analyzers import dns_scan as K
        from lawtap.flows.engine import address_strings, strings_by_code

        out = scanned.out
        resp = np.where(paired, first + 1, first)
        qflags = out[first, K.K_FLAGS]
        rflags = out[resp, K.K_FLAGS]
        rtt = times[resp] - times[first]
        is_orig = origs[first] != 0
        src_hi, src_lo, dst_hi, dst_lo = (addrs[first, c] for c in range(4))
        query = _spans_as_strings(scanned.name_bytes, out[first, K.K_NAME0], out[first, K.K_NAME1])
        a0 = out[resp, K.K_ANS0]
        counts = out[resp, K.K_ANS1] - a0
        list_offs = np.zeros(len(first) + 1, dtype=np.int32)
        np.cumsum(counts, out=list_offs[1:])
        picks = np.repeat(a0 - list_offs[:-1], counts) + np.arange(int(list_offs[-1]))
        no_answers = counts == 0
        rcode = rflags & 0xF
        qtype = out[first, K.K_QTYPE]
        qclass = out[first, K.K_QCLASS]
        nulls = pa.nulls(len(first), pa.string())

        def names_of(codes: np.ndarray, name_of: Callable[[int], str]) -> pa.Array:
            uniq, inverse = np.unique(codes, return_inverse=True)
            return strings_by_code([name_of(c) for c in uniq.tolist()], inverse)

        cols = {
            "ts": as_timestamps(pa.array((times[first] * 1e6).astype(np.int64)), DNS_SCHEMA.field("ts").type),
            "uid": self._uids_of(fids[first]),
            "id.orig_h": address_strings(np.where(is_orig, src_hi, dst_hi), np.where(is_orig, src_lo, dst_lo)),
            "id.orig_p": np.where(is_orig, sports[first], dports[first]),
            "id.resp_h": address_strings(np.where(is_orig, dst_hi, src_hi), np.where(is_orig, dst_lo, src_lo)),
            "id.resp_p": np.where(is_orig, dports[first], sports[first]),
            "proto": pa.array(["udp"] * len(first)),
            "trans_id": out[first, K.K_ID],
            "rtt": pa.array(rtt, mask=~(paired & (rtt > 0))),
            "query": query,
            "qclass": qclass,
            "qclass_name": names_of(qclass, lambda c: CLASSES.get(c) or qclass_name(c)),
            "qtype": qtype,
            "qtype_name": names_of(qtype, lambda t: QTYPES.get(t) or qtype_name(t)),
            "rcode": rcode,
            "rcode_name": names_of(rcode, lambda r: RCODES.get(r) or rcode_name(r)),
            "AA": (rflags & 0x0400) != 0,
            "TC": ((qflags & 0x0200) != 0) | ((rflags & 0x0200) != 0),
            "RD": (qflags & 0x0100) != 0,
            "RA": (rflags & 0x0080) != 0,
            "Z": (qflags >> 4) & 0x7,
            "answers": _lists(DNS_SCHEMA.field("answers").type, list_offs, no_answers,
                              _spans_as_strings(scanned.answer_bytes, scanned.answer_offs[picks],
                                                scanned.answer_offs[picks + 1])),
            "TTLs": _lists(DNS_SCHEMA.field("TTLs").type, list_offs, no_answers,
                           pa.array(scanned.ttls[picks].astype(np.float64))),
            "rejected": (out[resp, K.K_AN] + out[resp, K.K_NS] + out[resp, K.K_AR]) == 0,
            "auth": pa.nulls(len(first), DNS_SCHEMA.field("auth").type),
            "addl": pa.nulls(len(first), DNS_SCHEMA.field("addl").type),
            "edns_client_subnet": nulls,
        }
        return pa.Table.from_pydict({name: pa.array(col, type=DNS_SCHEMA.field(name).type)
                                     if isinstance(col, np.ndarray) else col for name, col in cols.items()},
                                    schema=DNS_SCHEMA)

    def _one_by_one(self, data: np.ndarray, scanned, rows: np.ndarray, fids: np.ndarray, offs: np.ndarray,
                    lens: np.ndarray, times: np.ndarray, addrs: np.ndarray, sports: np.ndarray, dports: np.ndarray,
                    origs: np.ndarray) -> None:
        """Messages ``rows`` through :func:`_parsed_message` (or :func:`_on_message`), with their
        connections' state (made here for connections that had none)."""
        from lawtap.analyzers import dns_scan as K

        flows = self._flows
        row_fids = fids[rows]
        first = rows[np.unique(row_fids, return_index=True)[1]]
        new = first[~np.isin(fids[first], np.fromiter(flows, dtype=np.int64, count=len(flows)))]
        if len(new):
            from lawtap.flows.engine import address_strings

            srcs = address_strings(addrs[new, 0], addrs[new, 1]).to_pylist()
            dsts = address_strings(addrs[new, 2], addrs[new, 3]).to_pylist()
            for fid, uid, src, dst, sp, dp, orig in zip(fids[new].tolist(), self._uids_of(fids[new]), srcs, dsts,
                                                        sports[new].tolist(), dports[new].tolist(), origs[new].tolist()):
                conn = ConnInfo(uid, src, sp, dst, dp, "udp") if orig else ConnInfo(uid, dst, dp, src, sp, "udp")
                flows[fid] = (conn, deque())
        out = scanned.out
        names = scanned.names
        answers = scanned.answers
        answer_offs = scanned.answer_offs.tolist()
        ttls = scanned.ttls.astype(np.float64).tolist()
        mv = memoryview(data)
        records = self._records
        problems: list[tuple[str, str]] = []
        no_problems: list[tuple[str, str]] = []
        for row, fid, off, n, t in zip(out[rows].tolist(), row_fids.tolist(), offs[rows].tolist(), lens[rows].tolist(),
                                       times[rows].tolist()):
            conn, pending = flows[fid]
            if row[K.K_OK]:
                flags = row[K.K_FLAGS]
                a0, a1 = row[K.K_ANS0], row[K.K_ANS1]
                texts = [answers[answer_offs[j] : answer_offs[j + 1]] for j in range(a0, a1)]
                p = (row[K.K_ID], flags, flags & 0xF, row[K.K_QD], row[K.K_AN], row[K.K_NS], row[K.K_AR],
                     [(names[row[K.K_NAME0] : row[K.K_NAME1]], row[K.K_QTYPE], row[K.K_QCLASS])],
                     (None, texts, ttls[a0:a1], None, None), None, no_problems, False)
                _parsed_message(pending, "udp", p, t, (fid, conn), records, problems)
            else:
                _on_message(pending, "udp", mv[off : off + n].tobytes(), t, (fid, conn), records, problems)
            if problems:
                self.weirds.extend((fid, name, detail, 0.0) for name, detail in problems)
                problems.clear()
        for fid in np.unique(row_fids).tolist():  # nothing pending: no state to keep
            if not flows[fid][1]:
                del flows[fid]

    def end(self, fids: list[int]) -> None:
        """Connections ended: their unanswered queries are logged (as :meth:`DNSAnalyzer.finish`)."""
        flows = self._flows
        if not flows:
            return
        records = self._records
        for fid in fids:
            entry = flows.pop(fid, None)
            if entry is not None and entry[1]:
                tag = (fid, entry[0])
                records.extend((tag, q[4]) for q in entry[1])

    def take(self) -> list[pa.Table]:
        """The ``dns`` records made so far, as tables."""
        tables, self._tables = self._tables, []
        if not self._records:
            return tables
        items, self._records = self._records, []
        conns = [conn for (_, conn), _ in items]
        columns = list(zip(*[rec for _, rec in items]))
        ts = np.array(columns[R_TS], dtype=np.float64)
        cols: dict[str, Any] = {
            "ts": as_timestamps(pa.array((ts * 1e6).astype(np.int64)), DNS_SCHEMA.field("ts").type),
            "uid": [c.uid for c in conns],
            "id.orig_h": [c.orig_h for c in conns],
            "id.orig_p": [c.orig_p for c in conns],
            "id.resp_h": [c.resp_h for c in conns],
            "id.resp_p": [c.resp_p for c in conns],
        }
        cols.update(zip(RECORD_NAMES[:R_TS], columns))
        return tables + [pa.Table.from_pydict(cols, schema=DNS_SCHEMA)]


class MDNSAnalyzer(DNSAnalyzer):
    """Multicast DNS (RFC 6762): same wire format; mostly unsolicited responses."""

    service = "mdns"


ANALYZERS = {"dns": DNSAnalyzer, "mdns": MDNSAnalyzer}
