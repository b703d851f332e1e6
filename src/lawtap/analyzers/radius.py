"""RADIUS (RFC 2865/2866/3162/4818/5176) over UDP: ``radius`` records and identity evidence.

Sans-IO: :class:`RadiusAnalyzer` takes one RADIUS packet per datagram.

Authentication follows Zeek's radius.log: the messages of a connection are folded into one
record (user name and Calling-Station-Id MAC from the Access-Request, Framed-IP-Address and
Reply-Message from an Access-Challenge or -Accept) that is written when an Access-Accept
(``result`` success) or Access-Reject (failed) arrives, with ``ttl`` the time since the first
message; a record still open at :meth:`finish` has result ``unknown``. Zeek does not log
accounting; here every Accounting-Request is its own record (Acct-Status-Type, session id,
octets, session time, terminate cause, Framed-IPv6-*), completed by its Accounting-Response
(paired by Identifier; ``result`` success, ``ttl`` the response time) or written unanswered at
:meth:`finish`. Retransmissions (same Identifier and Request Authenticator) are dropped.

User-Password, CHAP-Password, Tunnel-Password and EAP payloads are never decoded or stored.

Identity evidence (``identity_event`` records, see :mod:`lawtap.identity`):
Accounting Start / Interim-Update / Stop -> ``start`` / ``update`` / ``stop`` for every
Framed-IP-Address, Framed-IPv6-Address, Framed-IPv6-Prefix and Delegated-IPv6-Prefix (one
event without address when a Stop carries none: the session key finds it), keyed by
``NAS/Acct-Session-Id``, with Acct-Session-Time so a session first seen mid-way is backdated;
an Access-Accept granting a concrete Framed-IP-Address -> ``start``. The identity is the user
name; Calling-Station-Id becomes ``mac`` when it is a MAC and ``msisdn`` when it is all digits
(3GPP networks put the MSISDN there; Zeek would take 12 digits for a MAC), the 3GPP vendor
attributes give IMSI, IMEISV and the user location, and Called-Station-Id is the APN when 3GPP
attributes are present, otherwise part of the location (the Wi-Fi AP / SSID).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import COMMON_FIELDS, ConnInfo, StreamAnalyzer
from lawtap.analyzers.gtpc import decode_uli_v1, decode_uli_v2
from lawtap.identity import IDENTITY_EVENT_SCHEMA, normalize_mac

TS = pa.timestamp("us", tz="UTC")

RADIUS_SCHEMA = pa.schema(
    [
        *COMMON_FIELDS,
        # Zeek's radius.log
        pa.field("username", pa.string()),
        pa.field("mac", pa.string()),
        pa.field("framed_addr", pa.string()),
        pa.field("tunnel_client", pa.string()),
        pa.field("remote_ip", pa.string()),
        pa.field("connect_info", pa.string()),
        pa.field("reply_msg", pa.string()),
        pa.field("result", pa.string()),
        pa.field("ttl", pa.float64()),  # seconds
        # lawtap: accounting and identity attributes
        pa.field("request_type", pa.string()),  # Access-Request, Accounting-Request, ...
        pa.field("nas_ip", pa.string()),
        pa.field("nas_identifier", pa.string()),
        pa.field("nas_port_id", pa.string()),
        pa.field("calling_station_id", pa.string()),
        pa.field("called_station_id", pa.string()),
        pa.field("framed_ipv6_addr", pa.list_(pa.string())),
        pa.field("framed_ipv6_prefix", pa.list_(pa.string())),
        pa.field("delegated_ipv6_prefix", pa.list_(pa.string())),
        pa.field("acct_status_type", pa.string()),
        pa.field("acct_session_id", pa.string()),
        pa.field("acct_input_octets", pa.uint64()),
        pa.field("acct_output_octets", pa.uint64()),
        pa.field("acct_session_time", pa.float64()),  # seconds
        pa.field("acct_terminate_cause", pa.string()),
        pa.field("imsi", pa.string()),
        pa.field("imei", pa.string()),
    ]
)

RECORD_SCHEMAS = {"radius": RADIUS_SCHEMA, "identity_event": IDENTITY_EVENT_SCHEMA}

CODES = {
    1: "Access-Request", 2: "Access-Accept", 3: "Access-Reject", 4: "Accounting-Request",
    5: "Accounting-Response", 11: "Access-Challenge", 12: "Status-Server", 13: "Status-Client",
    40: "Disconnect-Request", 41: "Disconnect-ACK", 42: "Disconnect-NAK", 43: "CoA-Request",
    44: "CoA-ACK", 45: "CoA-NAK",
}
ACCT_STATUS = {
    1: "Start", 2: "Stop", 3: "Interim-Update", 7: "Accounting-On", 8: "Accounting-Off",
    9: "Tunnel-Start", 10: "Tunnel-Stop", 11: "Tunnel-Reject", 12: "Tunnel-Link-Start",
    13: "Tunnel-Link-Stop", 14: "Tunnel-Link-Reject", 15: "Failed",
}
TERMINATE_CAUSES = {
    1: "User-Request", 2: "Lost-Carrier", 3: "Lost-Service", 4: "Idle-Timeout",
    5: "Session-Timeout", 6: "Admin-Reset", 7: "Admin-Reboot", 8: "Port-Error",
    9: "NAS-Error", 10: "NAS-Request", 11: "NAS-Reboot", 12: "Port-Unneeded",
    13: "Port-Preempted", 14: "Port-Suspended", 15: "Service-Unavailable", 16: "Callback",
    17: "User-Error", 18: "Host-Request", 19: "Supplicant-Restart", 20: "Reauthentication-Failure",
    21: "Port-Reinitialized", 22: "Port-Administratively-Disabled",
}

# Attribute numbers
USER_NAME, USER_PASSWORD, CHAP_PASSWORD, NAS_IP = 1, 2, 3, 4
FRAMED_IP, REPLY_MESSAGE, VENDOR_SPECIFIC = 8, 18, 26
CALLED_STATION, CALLING_STATION, NAS_IDENTIFIER = 30, 31, 32
ACCT_STATUS_TYPE, ACCT_INPUT_OCTETS, ACCT_OUTPUT_OCTETS = 40, 42, 43
ACCT_SESSION_ID, ACCT_SESSION_TIME, ACCT_TERMINATE_CAUSE = 44, 46, 49
ACCT_INPUT_GIGAWORDS, ACCT_OUTPUT_GIGAWORDS = 52, 53
TUNNEL_CLIENT_ENDPOINT, TUNNEL_PASSWORD, CONNECT_INFO, EAP_MESSAGE = 66, 69, 77, 79
NAS_PORT_ID, NAS_IPV6, FRAMED_IPV6_PREFIX, DELEGATED_IPV6_PREFIX, FRAMED_IPV6_ADDRESS = 87, 95, 97, 123, 168
VENDOR_3GPP = 10415
V3GPP_IMSI, V3GPP_IMEISV, V3GPP_ULI = 1, 20, 22

# Framed-IP-Address values that are instructions, not addresses (RFC 2865 5.8).
_NOT_ADDRESSES = {"255.255.255.255", "255.255.255.254", "0.0.0.0"}

MAX_PENDING = 256
MAX_SEEN = 1024


def _text(b: bytes) -> str:
    """Attribute text as Zeek logs it: UTF-8, control characters as ``\\xNN``."""
    s = b.decode("utf-8", "backslashreplace")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in s):
        s = "".join(f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in s)
    return s


def _v4(b: bytes) -> str | None:
    return str(ipaddress.IPv4Address(b)) if len(b) == 4 else None


def _v6_prefix(b: bytes) -> str | None:
    """RFC 3162 Framed-IPv6-Prefix / RFC 4818 Delegated-IPv6-Prefix: reserved, length, prefix."""
    if len(b) < 2 or b[1] > 128 or len(b) - 2 < (b[1] + 7) // 8 or len(b) > 18:
        return None
    plen = b[1]
    raw = (b[2:] + bytes(16))[:16]
    addr = int.from_bytes(raw, "big")
    addr &= ((1 << 128) - 1) ^ ((1 << (128 - plen)) - 1) if plen else 0
    return f"{ipaddress.IPv6Address(addr)}/{plen}"


def _u32(b: bytes) -> int | None:
    return struct.unpack("!I", b)[0] if len(b) == 4 else None


def _uli_3gpp(b: bytes) -> str | None:
    """3GPP-User-Location-Info (TS 29.061): a type octet then the GTP ULI body."""
    if not b:
        return None
    kind, body = b[0], b[1:]
    if kind in (0, 1, 2):
        loc = decode_uli_v1(bytes([kind]) + body)
        return "; ".join(loc) if loc else None
    flags = {128: 0x08, 129: 0x10, 130: 0x18, 131: 0x20, 132: 0x40, 133: 0x80}.get(kind)
    if flags is None:
        return None
    loc = decode_uli_v2(bytes([flags]) + body)
    return "; ".join(loc) if loc else None


@dataclass
class RadiusPacket:
    code: int
    ident: int
    authenticator: bytes
    attrs: list[tuple[int, bytes]] = field(default_factory=list)
    vsas: list[tuple[int, int, bytes]] = field(default_factory=list)  # (vendor, type, value)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def first(self, t: int) -> bytes | None:
        for a, v in self.attrs:
            if a == t:
                return v
        return None

    def all(self, t: int) -> list[bytes]:
        return [v for a, v in self.attrs if a == t]

    def vsa(self, vendor: int, t: int) -> bytes | None:
        for ven, a, v in self.vsas:
            if ven == vendor and a == t:
                return v
        return None


_SECRET = {USER_PASSWORD, CHAP_PASSWORD, TUNNEL_PASSWORD, EAP_MESSAGE}


def parse_packet(data: bytes) -> RadiusPacket | None:
    """Parse one RADIUS packet; None when not even the 20-byte header is there. Never raises.

    Secret-bearing attributes (User-Password, CHAP-Password, Tunnel-Password, EAP-Message)
    are dropped here, so nothing downstream can store them.
    """
    if len(data) < 20:
        return None
    code, ident, length = struct.unpack_from("!BBH", data)
    pkt = RadiusPacket(code, ident, bytes(data[4:20]))
    if length < 20 or length > 4096:
        pkt.problems.append(("radius_bad_length", str(length)))
        length = len(data)
    elif length > len(data):
        pkt.problems.append(("radius_truncated", f"{len(data)}<{length}"))
        length = len(data)
    off = 20
    while off + 2 <= length:
        t, ln = data[off], data[off + 1]
        if ln < 2 or off + ln > length:
            pkt.problems.append(("radius_attr_bad_length", f"type={t} len={ln}"))
            break
        val = bytes(data[off + 2 : off + ln])
        off += ln
        if t in _SECRET:
            continue
        if t == VENDOR_SPECIFIC and len(val) >= 4:
            vendor = struct.unpack_from("!I", val)[0]
            voff = 4
            while voff + 2 <= len(val):
                vt, vl = val[voff], val[voff + 1]
                if vl < 2 or voff + vl > len(val):
                    break
                pkt.vsas.append((vendor, vt, val[voff + 2 : voff + vl]))
                voff += vl
            continue
        pkt.attrs.append((t, val))
    if off < length and off + 2 > length:
        pkt.problems.append(("radius_attr_truncated", str(length - off)))
    return pkt


def _str(pkt: RadiusPacket, t: int) -> str | None:
    v = pkt.first(t)
    return _text(v) if v else None


def _tunnel_client(v: bytes | None) -> str | None:
    """Tunnel-Client-Endpoint is tagged (RFC 2868): a first octet <= 0x1F is the tag."""
    if not v:
        return None
    if v[0] <= 0x1F:
        v = v[1:]
    return _text(v) if v else None


def _octets(pkt: RadiusPacket, low: int, giga: int) -> int | None:
    lo = _u32(pkt.first(low) or b"")
    if lo is None:
        return None
    hi = _u32(pkt.first(giga) or b"") or 0
    return (hi << 32) | lo


@dataclass
class _Pending:
    ts: float
    authenticator: bytes
    rec: dict[str, Any]


class RadiusAnalyzer(StreamAnalyzer):
    """One RADIUS client/server (or NAS/accounting server) UDP conversation."""

    service = "radius"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self._access: dict[str, Any] | None = None  # Zeek: c$radius
        self._access_ids: dict[int, str | None] = {}  # Access-Request id -> user name
        self._acct: dict[int, _Pending] = {}
        self._seen: dict[tuple[int, int, bytes], None] = {}
        self.packets = 0

    # ---- transport

    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        pkt = parse_packet(bytes(data))
        if pkt is None:
            self.weirds.append(("radius_too_short", str(len(data))))
            return
        self.packets += 1
        self.weirds.extend(pkt.problems)
        key = (pkt.code, pkt.ident, pkt.authenticator)
        if key in self._seen:
            return  # retransmission
        self._seen[key] = None
        if len(self._seen) > MAX_SEEN:
            del self._seen[next(iter(self._seen))]
        sender = self.conn.orig_h if is_orig else self.conn.resp_h
        if pkt.code in (1, 2, 3, 11):
            self._access_msg(pkt, ts, sender)
        elif pkt.code == 4:
            self._acct_request(pkt, ts, sender)
        elif pkt.code == 5:
            self._acct_response(pkt, ts)

    def finish(self, ts: float) -> None:
        if self._access is not None:
            self._access["result"] = "unknown"
            self.records.append(("radius", self._access))
            self._access = None
        for p in self._acct.values():
            self.records.append(("radius", p.rec))
        self._acct.clear()

    # ---- records

    def _empty(self, ts: float, request_type: str) -> dict[str, Any]:
        rec: dict[str, Any] = {name: None for name in RADIUS_SCHEMA.names[6:]}
        rec["ts"] = ts
        rec["request_type"] = request_type
        return rec

    def _station(self, rec: dict[str, Any], pkt: RadiusPacket) -> None:
        calling = _str(pkt, CALLING_STATION)
        if calling is not None and rec["calling_station_id"] is None:
            rec["calling_station_id"] = calling
            if rec["mac"] is None and not _is_msisdn(calling):
                rec["mac"] = normalize_mac(calling)
        for name, t in (("called_station_id", CALLED_STATION), ("nas_identifier", NAS_IDENTIFIER),
                        ("nas_port_id", NAS_PORT_ID)):
            if rec[name] is None:
                rec[name] = _str(pkt, t)
        if rec["nas_ip"] is None:
            v = pkt.first(NAS_IP)
            rec["nas_ip"] = _v4(v) if v else None
            if rec["nas_ip"] is None and (v6 := pkt.first(NAS_IPV6)) is not None and len(v6) == 16:
                rec["nas_ip"] = str(ipaddress.IPv6Address(v6))
        for name, t in (("imsi", V3GPP_IMSI), ("imei", V3GPP_IMEISV)):
            v = pkt.vsa(VENDOR_3GPP, t)
            if v and rec[name] is None:
                rec[name] = _text(v)

    def _framed(self, rec: dict[str, Any], pkt: RadiusPacket) -> None:
        if rec["framed_addr"] is None and (v := pkt.first(FRAMED_IP)) is not None:
            rec["framed_addr"] = _v4(v)
        addrs = [str(ipaddress.IPv6Address(v)) for v in pkt.all(FRAMED_IPV6_ADDRESS) if len(v) == 16]
        pre = [p for p in map(_v6_prefix, pkt.all(FRAMED_IPV6_PREFIX)) if p]
        dele = [p for p in map(_v6_prefix, pkt.all(DELEGATED_IPV6_PREFIX)) if p]
        rec["framed_ipv6_addr"] = rec["framed_ipv6_addr"] or addrs or None
        rec["framed_ipv6_prefix"] = rec["framed_ipv6_prefix"] or pre or None
        rec["delegated_ipv6_prefix"] = rec["delegated_ipv6_prefix"] or dele or None

    def _access_msg(self, pkt: RadiusPacket, ts: float, sender: str) -> None:
        if self._access is None:
            self._access = self._empty(ts, "Access-Request")
        rec = self._access
        if pkt.code == 1:
            if rec["username"] is None:
                rec["username"] = _str(pkt, USER_NAME)
            self._station(rec, pkt)
            if rec["tunnel_client"] is None:
                rec["tunnel_client"] = _tunnel_client(pkt.first(TUNNEL_CLIENT_ENDPOINT))
                rec["remote_ip"] = _addr_or_none(rec["tunnel_client"])
            if rec["connect_info"] is None:
                rec["connect_info"] = _str(pkt, CONNECT_INFO)
            if len(self._access_ids) < MAX_PENDING:
                self._access_ids[pkt.ident] = rec["username"]
            return
        if pkt.code in (11, 2):
            self._framed(rec, pkt)
            if rec["reply_msg"] is None:
                rec["reply_msg"] = _str(pkt, REPLY_MESSAGE)
        if pkt.code == 11:
            return
        rec["result"] = "success" if pkt.code == 2 else "failed"
        ttl = ts - rec["ts"]
        rec["ttl"] = ttl if ttl != 0 else None
        if pkt.code == 2 and rec["username"] is None:
            rec["username"] = _str(pkt, USER_NAME)
        self.records.append(("radius", rec))
        self._access = None
        if pkt.code == 2:
            self._access_identity(rec, pkt, ts)

    def _access_identity(self, rec: dict[str, Any], pkt: RadiusPacket, ts: float) -> None:
        """An Access-Accept granting a concrete address is evidence the user got it."""
        v = pkt.first(FRAMED_IP)
        ips = [a for a in [_v4(v) if v else None] if a and a not in _NOT_ADDRESSES]
        ips += [str(ipaddress.IPv6Address(v)) for v in pkt.all(FRAMED_IPV6_ADDRESS) if len(v) == 16]
        ips += [p for p in map(_v6_prefix, pkt.all(FRAMED_IPV6_PREFIX)) if p]
        ips += [p for p in map(_v6_prefix, pkt.all(DELEGATED_IPV6_PREFIX)) if p]
        for ip in ips:
            self.records.append(("identity_event", self._event(rec, ts, "start", ip, None)))

    def _event(self, rec: dict[str, Any], ts: float, action: str, ip: str | None,
               session: str | None) -> dict[str, Any]:
        calling = rec["calling_station_id"]
        three_gpp = rec["imsi"] is not None or rec["imei"] is not None
        loc = rec.get("_uli")
        if loc is None:
            parts = []
            if rec["nas_port_id"]:
                parts.append(f"nas-port-id={rec['nas_port_id']}")
            if rec["called_station_id"] and not three_gpp:
                parts.append(f"called-station-id={rec['called_station_id']}")
            loc = "; ".join(parts) or None
        st = rec["acct_session_time"]
        return {
            "ts": ts, "kind": "radius", "action": action,
            "identity": rec["username"] or rec["imsi"] or calling, "ip": ip,
            "mac": rec["mac"], "imsi": rec["imsi"],
            "msisdn": calling.lstrip("+") if calling and _is_msisdn(calling) else None,
            "imei": rec["imei"], "apn": rec["called_station_id"] if three_gpp else None,
            "location": loc, "hostname": None, "lease_time": None,
            "session_time": st if action != "start" else None, "session": session, "teids": None,
        }

    def _acct_request(self, pkt: RadiusPacket, ts: float, sender: str) -> None:
        rec = self._empty(ts, "Accounting-Request")
        rec["username"] = _str(pkt, USER_NAME)
        self._station(rec, pkt)
        self._framed(rec, pkt)
        st = _u32(pkt.first(ACCT_STATUS_TYPE) or b"")
        rec["acct_status_type"] = ACCT_STATUS.get(st, str(st)) if st is not None else None
        rec["acct_session_id"] = _str(pkt, ACCT_SESSION_ID)
        rec["acct_input_octets"] = _octets(pkt, ACCT_INPUT_OCTETS, ACCT_INPUT_GIGAWORDS)
        rec["acct_output_octets"] = _octets(pkt, ACCT_OUTPUT_OCTETS, ACCT_OUTPUT_GIGAWORDS)
        stime = _u32(pkt.first(ACCT_SESSION_TIME) or b"")
        rec["acct_session_time"] = float(stime) if stime is not None else None
        tc = _u32(pkt.first(ACCT_TERMINATE_CAUSE) or b"")
        rec["acct_terminate_cause"] = TERMINATE_CAUSES.get(tc, str(tc)) if tc is not None else None
        rec["result"] = "unknown"
        if pkt.ident in self._acct:  # a new request reusing a pending Identifier
            self.records.append(("radius", self._acct.pop(pkt.ident).rec))
        if len(self._acct) >= MAX_PENDING:
            self.records.append(("radius", self._acct.pop(next(iter(self._acct))).rec))
        self._acct[pkt.ident] = _Pending(ts, pkt.authenticator, rec)
        action = {1: "start", 2: "stop", 3: "update"}.get(st or 0)
        if action is None:
            return
        uli = pkt.vsa(VENDOR_3GPP, V3GPP_ULI)
        ev_rec = dict(rec)
        ev_rec["_uli"] = _uli_3gpp(uli) if uli else None
        nas = rec["nas_ip"] or rec["nas_identifier"] or sender
        session = f"{nas}/{rec['acct_session_id']}" if rec["acct_session_id"] else None
        ips = [rec["framed_addr"]] if rec["framed_addr"] and rec["framed_addr"] not in _NOT_ADDRESSES else []
        for name in ("framed_ipv6_addr", "framed_ipv6_prefix", "delegated_ipv6_prefix"):
            ips += rec[name] or []
        if not ips and (action == "stop" or session is not None):
            ips = [None]
        for ip in ips:
            self.records.append(("identity_event", self._event(ev_rec, ts, action, ip, session)))

    def _acct_response(self, pkt: RadiusPacket, ts: float) -> None:
        p = self._acct.pop(pkt.ident, None)
        if p is None:
            return
        p.rec["result"] = "success"
        ttl = ts - p.ts
        p.rec["ttl"] = ttl if ttl != 0 else None
        self.records.append(("radius", p.rec))


def _is_msisdn(s: str) -> bool:
    t = s[1:] if s.startswith("+") else s
    return 5 <= len(t) <= 15 and t.isdigit()


def _addr_or_none(s: str | None) -> str | None:
    if not s:
        return None
    try:
        return str(ipaddress.ip_address(s.strip()))
    except ValueError:
        return None


ANALYZERS = {"radius": RadiusAnalyzer}
