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
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import COMMON_FIELDS

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


class DNSParseError(Exception):
    """Internal: malformed message (never escapes :func:`parse_message`)."""


@dataclass
class RR:
    name: str
    rtype: int
    rclass: int
    ttl: int
    rdata: bytes
    section: str  # "answer" | "authority" | "additional"
    text: str  # Zeek-style rendering ("" when Zeek renders nothing, e.g. OPT)
    value: Any = None  # parsed value (address string, name, dict ...)


@dataclass
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


def read_name(msg: bytes, off: int) -> tuple[str, int]:
    """Decode the (possibly compressed) name at ``off``; return (name, offset after it)."""
    labels: list[str] = []
    end = -1
    jumps = 0
    total = 0
    seen: set[int] = set()
    n = len(msg)
    while True:
        if off >= n:
            raise DNSParseError("DNS_name_truncated")
        ln = msg[off]
        kind = ln & 0xC0
        if kind == 0xC0:
            if off + 1 >= n:
                raise DNSParseError("DNS_name_truncated")
            ptr = ((ln & 0x3F) << 8) | msg[off + 1]
            if end < 0:
                end = off + 2
            jumps += 1
            if jumps > MAX_POINTERS or ptr in seen or ptr >= n:
                raise DNSParseError("DNS_name_compression_loop")
            seen.add(ptr)
            off = ptr
            continue
        if kind != 0:
            raise DNSParseError("DNS_label_bad_type")
        off += 1
        if ln == 0:
            break
        if off + ln > n:
            raise DNSParseError("DNS_label_truncated")
        total += ln + 1
        if total > MAX_NAME:
            raise DNSParseError("DNS_name_too_long")
        labels.append(_label_text(msg[off : off + ln]))
        off += ln
    if end < 0:
        end = off
    return ".".join(labels), end


def _u16(b: bytes, o: int) -> int:
    if o + 2 > len(b):
        raise DNSParseError("DNS_rdata_truncated")
    return (b[o] << 8) | b[o + 1]


def _u32(b: bytes, o: int) -> int:
    if o + 4 > len(b):
        raise DNSParseError("DNS_rdata_truncated")
    return struct.unpack_from("!I", b, o)[0]


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
        "do": bool(ttl & 0x8000),
        "options": [],
    }
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


def _render(msg: bytes, rtype: int, rdata: bytes, rd_off: int, rr_name: str) -> tuple[str, Any]:
    """(Zeek-style text, parsed value) of one RR's rdata. Raises DNSParseError when malformed."""
    end = rd_off + len(rdata)

    def name_at(o: int) -> tuple[str, int]:
        nm, after = read_name(msg, o)
        if after > end:
            raise DNSParseError("DNS_rdata_name_overrun")
        return nm, after

    if rtype == 1:
        if len(rdata) != 4:
            raise DNSParseError("DNS_A_bad_length")
        a = str(ipaddress.IPv4Address(rdata))
        return a, a
    if rtype == 28:
        if len(rdata) != 16:
            raise DNSParseError("DNS_AAAA_bad_length")
        a = str(ipaddress.IPv6Address(rdata))
        return a, a
    if rtype in (2, 5, 12, 39, 3, 4, 7, 8, 9):  # NS CNAME PTR DNAME MD MF MB MG MR
        nm, _ = name_at(rd_off)
        return nm, nm
    if rtype == 15:
        pref = _u16(rdata, 0)
        nm, _ = name_at(rd_off + 2)
        return nm, {"preference": pref, "exchange": nm}
    if rtype == 6:
        mname, o = name_at(rd_off)
        rname, o = name_at(o)
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
        nm, _ = name_at(rd_off + 6)
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
        repl, _ = name_at(rd_off + o)
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
        signer, after = name_at(rd_off + 18)
        val = {"type_covered": qtype_name(covered), "algorithm": alg, "labels": labels, "orig_ttl": orig_ttl,
               "expiration": expi, "inception": incep, "key_tag": key_tag, "signer_name": signer,
               "signature": msg[after:end].hex()}
        return f"RRSIG {qtype_name(covered)} {signer or '<Root>'}", val
    if rtype == 47:
        nxt, after = name_at(rd_off)
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
        target, after = name_at(rd_off + 2)
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


def parse_message(data: bytes) -> Message | None:
    """Parse one DNS message. Returns None when there is not even a header; otherwise a
    :class:`Message` with whatever could be parsed (``problems`` lists what went wrong)."""
    if len(data) < 12:
        return None
    mid, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", data, 0)
    m = Message(
        id=mid, qr=bool(flags & 0x8000), opcode=(flags >> 11) & 0xF, aa=bool(flags & 0x0400),
        tc=bool(flags & 0x0200), rd=bool(flags & 0x0100), ra=bool(flags & 0x0080), z=(flags >> 4) & 0x7,
        rcode=flags & 0xF, qdcount=qd, ancount=an, nscount=ns, arcount=ar,
    )
    off = 12
    try:
        for _ in range(qd):
            name, off = read_name(data, off)
            if off + 4 > len(data):
                raise DNSParseError("DNS_truncated_quest_too_short")
            qt, qc = struct.unpack_from("!HH", data, off)
            off += 4
            m.questions.append((name, qt, qc))
        for section, count, dest in (("answer", an, m.answers), ("authority", ns, m.authority),
                                     ("additional", ar, m.additional)):
            for _ in range(count):
                name, off = read_name(data, off)
                if off + 10 > len(data):
                    raise DNSParseError("DNS_truncated_ans_too_short")
                rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, off)
                off += 10
                if off + rdlen > len(data):
                    raise DNSParseError("DNS_truncated_RR_rdlength_lt_len")
                rdata = data[off : off + rdlen]
                if rtype == 41:
                    m.edns = _parse_opt(rclass, ttl, rdata, m.problems)
                    if m.edns.get("extended_rcode"):
                        m.rcode |= m.edns["extended_rcode"] << 4
                    text, value = "", m.edns
                else:
                    try:
                        text, value = _render(data, rtype, rdata, off, name)
                    except (DNSParseError, ValueError, IndexError, struct.error) as e:
                        m.problems.append((e.args[0] if isinstance(e, DNSParseError) else "DNS_rdata_bad", qtype_name(rtype)))
                        text, value = f"<unknown type={rtype}> {rdata.hex()}", rdata.hex()
                off += rdlen
                dest.append(RR(name, rtype, rclass, ttl, rdata, section, text, value))
    except DNSParseError as e:
        m.problems.append((e.args[0], ""))
        m.truncated = True
    except (ValueError, IndexError, struct.error) as e:  # defensive: never raise
        m.problems.append(("DNS_parse_error", type(e).__name__))
        m.truncated = True
    return m


# --------------------------------------------------------------------------------------------
# Analyzer


@dataclass
class _Pending:
    ts: float
    trans_id: int
    query: str | None
    rec: dict[str, Any]


MAX_PENDING = 4096
MAX_TCP_BUFFER = 65535 + 2


class DNSAnalyzer(StreamAnalyzer):
    """DNS over UDP datagrams or TCP (length-framed) streams."""

    service = "dns"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self._pending: deque[_Pending] = deque()
        self._buf = {True: bytearray(), False: bytearray()}
        self._dead = {True: False, False: False}
        self.messages = 0

    # ---- transport

    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        self._message(is_orig, bytes(data), ts)

    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self._dead[is_orig] or not data:
            return
        buf = self._buf[is_orig]
        buf += data
        while len(buf) >= 2:
            ln = (buf[0] << 8) | buf[1]
            if ln < 12:
                self.weirds.append(("DNS_TCP_bad_length", str(ln)))
                self._dead[is_orig] = True
                buf.clear()
                return
            if len(buf) < 2 + ln:
                break
            msg = bytes(buf[2 : 2 + ln])
            del buf[: 2 + ln]
            self._message(is_orig, msg, ts)
        if len(buf) > MAX_TCP_BUFFER:  # cannot happen with a 16-bit length; belt and braces
            self._dead[is_orig] = True
            buf.clear()

    def gap(self, is_orig: bool, length: int, ts: float) -> None:
        # Message framing of this direction is lost; stop parsing it.
        if not self._dead[is_orig]:
            self.weirds.append(("DNS_TCP_gap", str(length)))
        self._dead[is_orig] = True
        self._buf[is_orig].clear()

    def finish(self, ts: float) -> None:
        if self._buf[True] or self._buf[False]:
            self.weirds.append(("DNS_truncated_len_lt_hdr_len", ""))
            self._buf[True].clear()
            self._buf[False].clear()
        while self._pending:
            self.records.append(("dns", self._pending.popleft().rec))

    # ---- messages

    def _message(self, is_orig: bool, data: bytes, ts: float) -> None:
        m = parse_message(data)
        if m is None:
            self.weirds.append(("DNS_truncated_len_lt_hdr_len", str(len(data))))
            return
        self.messages += 1
        for w in m.problems:
            self.weirds.append(w)
        if m.qr:
            self._response(m, ts)
        else:
            self._query(m, ts)

    def _base(self, m: Message, ts: float) -> dict[str, Any]:
        rec: dict[str, Any] = {name: None for name in DNS_SCHEMA.names[6:]}
        rec["ts"] = ts
        rec["proto"] = self.conn.proto
        rec["trans_id"] = m.id
        rec["Z"] = m.z
        rec["rejected"] = False
        if m.questions:
            q, qt, qc = m.questions[0]
            rec["query"] = q.lower()
            rec["qtype"], rec["qtype_name"] = qt, qtype_name(qt)
            rec["qclass"], rec["qclass_name"] = qc, qclass_name(qc)
        if m.edns and m.edns.get("ecs"):
            e = m.edns["ecs"]
            rec["edns_client_subnet"] = f"{e['address']}/{e['source_prefix_len']}"
        return rec

    def _query(self, m: Message, ts: float) -> None:
        rec = self._base(m, ts)
        rec["RD"] = m.rd
        rec["TC"] = m.tc
        if len(self._pending) >= MAX_PENDING:
            self.records.append(("dns", self._pending.popleft().rec))
            self.weirds.append(("DNS_too_many_pending_queries", str(MAX_PENDING)))
        self._pending.append(_Pending(ts, m.id, rec["query"], rec))

    def _response(self, m: Message, ts: float) -> None:
        if m.questions:
            query = m.questions[0][0].lower()
        elif m.answers:  # mDNS answers carry no question: the first answer names the query
            query = m.answers[0].name.lower()
        else:
            query = None
        match = None
        for i, p in enumerate(self._pending):
            if p.trans_id == m.id and (query is None or p.query == query):
                match = i
                break
        if match is not None:
            p = self._pending[match]
            del self._pending[match]
            rec = p.rec
            rtt = ts - p.ts
            rec["rtt"] = rtt if rtt > 0 else None
            if rec.get("edns_client_subnet") is None and m.edns and m.edns.get("ecs"):
                e = m.edns["ecs"]
                rec["edns_client_subnet"] = f"{e['address']}/{e['source_prefix_len']}"
        else:
            rec = self._base(m, ts)
            rec["RD"] = m.rd
            rec["TC"] = m.tc
        rec["rcode"], rec["rcode_name"] = m.rcode, rcode_name(m.rcode)
        rec["AA"], rec["RA"] = m.aa, m.ra
        if m.tc:
            rec["TC"] = True
        answers = [rr for rr in m.answers if rr.text != ""]
        if rec["query"] is None and m.answers:
            rec["query"] = m.answers[0].name.lower()
        rec["answers"] = [rr.text for rr in answers] or None
        rec["TTLs"] = [float(rr.ttl) for rr in answers] or None
        rec["auth"] = [rr.text for rr in m.authority if rr.text] or None
        rec["addl"] = [rr.text for rr in m.additional if rr.text] or None
        if (m.questions and not (m.ancount or m.nscount or m.arcount)) or (m.rcode != 0 and not m.qdcount):
            rec["rejected"] = True
        self.records.append(("dns", rec))


class MDNSAnalyzer(DNSAnalyzer):
    """Multicast DNS (RFC 6762): same wire format; mostly unsolicited responses."""

    service = "mdns"


ANALYZERS = {"dns": DNSAnalyzer, "mdns": MDNSAnalyzer}
