"""DHCPv4 (RFC 2131/2132, relay agent information RFC 3046/3993) and DHCPv6 (RFC 8415).

Sans-IO: :class:`DhcpAnalyzer` and :class:`Dhcpv6Analyzer` take one message per datagram.

DHCPv4 ``dhcp`` records follow Zeek's dhcp.log: a record is one *transaction* — the messages
sharing a transaction id (xid) within a short time (5 s without a message, 30 s at most) — with
Zeek's rules for every field (client messages give host_name, client_fqdn, requested_addr,
the MAC from a Client-Identifier of hardware type 1 else ``client_chaddr``; server messages
that hand out an address give server_addr (their sender), assigned_addr, lease_time, domain,
and the MAC from chaddr when the client gave none; client_addr is a client's non-broadcast
source address, else the first assigned address). Uids are not listed; the record carries the
uid of the connection that wrote it. ``circuit_id``, ``agent_remote_id`` and ``subscriber_id``
come from option 82 (as Zeek's dhcp-sub-opts policy script logs them).

A transaction spans several "connections" (client broadcasts from 0.0.0.0, server replies to
the offered address or to broadcast), so the analyzers of one run can share a
:class:`DhcpTracker`, as Zeek's script-level join does. Wiring, for the pipeline::

    tracker = DhcpTracker()
    registry["dhcp"] = functools.partial(DhcpAnalyzer, tracker=tracker)

Without one, each analyzer joins the messages of its own connection only. A shared transaction
is written by the analyzer whose message (or whose :meth:`finish`, once every connection that
took part has finished) closes it.

Identity evidence (``identity_event``, see :mod:`lawtap.identity`): DHCPACK with an address ->
``lease`` (identity = MAC, ``lease_time``, host name, option 82 as ``location``);
DHCPRELEASE -> ``release`` of ciaddr; DHCPDECLINE -> ``release`` of the declined address;
DHCPINFORM from a configured address -> ``update``. DHCPv6 Reply with IA_NA addresses /
IA_PD prefixes -> ``lease`` per address/prefix (identity = client DUID, MAC from a link-layer
DUID or the relay's client link-layer address option), lifetime 0 -> ``release``; Release and
Decline -> ``release``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import COMMON_FIELDS, ConnInfo, StreamAnalyzer
from lawtap.identity import IDENTITY_EVENT_SCHEMA, mac_from_bytes

TS = pa.timestamp("us", tz="UTC")

_COMMON = COMMON_FIELDS  # lawtap.analyzers.base

DHCP_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("client_addr", pa.string()),
        pa.field("server_addr", pa.string()),
        pa.field("mac", pa.string()),
        pa.field("host_name", pa.string()),
        pa.field("client_fqdn", pa.string()),
        pa.field("domain", pa.string()),
        pa.field("requested_addr", pa.string()),
        pa.field("assigned_addr", pa.string()),
        pa.field("lease_time", pa.float64()),  # seconds
        pa.field("client_message", pa.string()),
        pa.field("server_message", pa.string()),
        pa.field("msg_types", pa.list_(pa.string())),
        pa.field("duration", pa.float64()),  # seconds
        pa.field("client_chaddr", pa.string()),
        pa.field("circuit_id", pa.string()),
        pa.field("agent_remote_id", pa.string()),
        pa.field("subscriber_id", pa.string()),
        # lawtap
        pa.field("trans_id", pa.uint32()),
        pa.field("requested_addrs", pa.list_(pa.string())),  # every distinct one (Zeek keeps the last)
        pa.field("requested_lease_time", pa.float64()),  # seconds, option 51 from the client
        pa.field("relay_addr", pa.string()),  # giaddr
        pa.field("vendor_class", pa.string()),
    ]
)

DHCPV6_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("msg_type", pa.string()),
        pa.field("trans_id", pa.uint32()),
        pa.field("client_duid", pa.string()),
        pa.field("server_duid", pa.string()),
        pa.field("mac", pa.string()),
        pa.field("client_fqdn", pa.string()),
        pa.field("addresses", pa.list_(pa.string())),  # IA_NA / IA_TA
        pa.field("prefixes", pa.list_(pa.string())),  # IA_PD
        pa.field("valid_lifetime", pa.float64()),  # seconds, smallest of the leases
        pa.field("status", pa.string()),
        pa.field("relay_link_addr", pa.string()),
        pa.field("relay_peer_addr", pa.string()),
        pa.field("interface_id", pa.string()),
        pa.field("remote_id", pa.string()),
        pa.field("subscriber_id", pa.string()),
        pa.field("vendor_class", pa.string()),
    ]
)

RECORD_SCHEMAS = {"dhcp": DHCP_SCHEMA, "dhcpv6": DHCPV6_SCHEMA, "identity_event": IDENTITY_EVENT_SCHEMA}

MSG_TYPES = {
    1: "DISCOVER", 2: "OFFER", 3: "REQUEST", 4: "DECLINE", 5: "ACK", 6: "NAK", 7: "RELEASE",
    8: "INFORM", 9: "FORCERENEW", 10: "LEASEQUERY", 11: "LEASEUNASSIGNED", 12: "LEASEUNKNOWN",
    13: "LEASEACTIVE", 14: "BULKLEASEQUERY", 15: "LEASEQUERYDONE", 16: "ACTIVELEASEQUERY",
    17: "LEASEQUERYSTATUS", 18: "TLS",
}
V6_TYPES = {
    1: "SOLICIT", 2: "ADVERTISE", 3: "REQUEST", 4: "CONFIRM", 5: "RENEW", 6: "REBIND",
    7: "REPLY", 8: "RELEASE", 9: "DECLINE", 10: "RECONFIGURE", 11: "INFORMATION-REQUEST",
    12: "RELAY-FORW", 13: "RELAY-REPL", 14: "LEASEQUERY", 15: "LEASEQUERY-REPLY",
}
V6_STATUS = {0: "Success", 1: "UnspecFail", 2: "NoAddrsAvail", 3: "NoBinding", 4: "NotOnLink",
             5: "UseMulticast", 6: "NoPrefixAvail"}

MAGIC = b"\x63\x82\x53\x63"
IDLE_TIMEOUT = 5.0  # Zeek: a transaction is logged 5 s after its last message ...
MAX_WATCH = 30.0  # ... or 30 s after its first (DHCP::max_txid_watch_time)
MAX_UIDS = 10  # Zeek: DHCP::max_uids_per_log_entry
MAX_MSG_TYPES = 50  # Zeek: DHCP::max_msg_types_per_log_entry
MAX_TXNS = 4096


def _text(b: bytes) -> str:
    """Option text as Zeek logs it: UTF-8, control characters as ``\\xNN``."""
    s = b.decode("utf-8", "backslashreplace")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in s):
        s = "".join(f"\\x{ord(c):02x}" if ord(c) < 0x20 or ord(c) == 0x7F else c for c in s)
    return s


def _v4(b: bytes) -> str:
    return str(ipaddress.IPv4Address(b))


def _dns_name(b: bytes) -> str | None:
    """An uncompressed DNS wire-format name (option 81 with the E flag, DHCPv6 FQDN)."""
    labels, off = [], 0
    while off < len(b):
        ln = b[off]
        if ln == 0:
            break
        if ln > 63 or off + 1 + ln > len(b):
            return None
        labels.append(b[off + 1 : off + 1 + ln].decode("ascii", "backslashreplace"))
        off += 1 + ln
    return ".".join(labels) or None


# --------------------------------------------------------------------------------------------
# DHCPv4 message


@dataclass
class DhcpMessage:
    op: int
    htype: int
    hlen: int
    xid: int
    ciaddr: str
    yiaddr: str
    siaddr: str
    giaddr: str
    chaddr: str
    msg_type: int | None = None
    options: dict[int, bytes] = field(default_factory=dict)  # first occurrence (RFC 3396 concatenated)
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def type_name(self) -> str:
        if self.msg_type is None:
            return "BOOTREQUEST" if self.op == 1 else "BOOTREPLY"
        return MSG_TYPES.get(self.msg_type, f"UNKNOWN-{self.msg_type}")

    def addr(self, code: int) -> str | None:
        v = self.options.get(code)
        return _v4(v[:4]) if v is not None and len(v) >= 4 else None

    def u32(self, code: int) -> int | None:
        v = self.options.get(code)
        return struct.unpack("!I", v[:4])[0] if v is not None and len(v) >= 4 else None

    def text(self, code: int) -> str | None:
        v = self.options.get(code)
        if not v:
            return None
        return _text(v.rstrip(b"\0")) or None

    def client_id_mac(self) -> str | None:
        """Option 61 of hardware type 1 (Ethernet): the client's MAC, as Zeek takes it."""
        v = self.options.get(61)
        if v is not None and len(v) == 7 and v[0] == 1:
            return mac_from_bytes(v[1:7])
        return None

    def fqdn(self) -> str | None:
        v = self.options.get(81)
        if v is None or len(v) < 3:
            return None
        if v[0] & 0x04:
            return _dns_name(v[3:])
        return _text(v[3:].rstrip(b"\0")) or None

    def agent_info(self) -> dict[int, bytes]:
        """Option 82 sub-options: 1 circuit id, 2 remote id, 6 subscriber id ..."""
        v = self.options.get(82)
        out: dict[int, bytes] = {}
        off = 0
        while v is not None and off + 2 <= len(v):
            code, ln = v[off], v[off + 1]
            if off + 2 + ln > len(v):
                break
            out.setdefault(code, v[off + 2 : off + 2 + ln])
            off += 2 + ln
        return out


def _options(buf: bytes, opts: dict[int, bytes], problems: list[tuple[str, str]]) -> None:
    off, n = 0, len(buf)
    while off < n:
        code = buf[off]
        if code == 0:
            off += 1
            continue
        if code == 255:
            return
        if off + 1 >= n or off + 2 + buf[off + 1] > n:
            problems.append(("DHCP_option_truncated", str(code)))
            return
        ln = buf[off + 1]
        val = buf[off + 2 : off + 2 + ln]
        opts[code] = opts[code] + val if code in opts else val  # RFC 3396: split options concatenate
        off += 2 + ln


def parse_dhcp(data: bytes) -> DhcpMessage | None:
    """Parse a BOOTP/DHCP message; None when the 236-byte fixed part is missing. Never raises."""
    if len(data) < 236:
        return None
    op, htype, hlen, _hops, xid = struct.unpack_from("!BBBBI", data)
    hl = min(hlen, 16)
    ch = data[28 : 28 + hl]
    m = DhcpMessage(
        op=op, htype=htype, hlen=hlen, xid=xid, ciaddr=_v4(data[12:16]), yiaddr=_v4(data[16:20]),
        siaddr=_v4(data[20:24]), giaddr=_v4(data[24:28]), chaddr=mac_from_bytes(ch) if ch else "",
    )
    if len(data) >= 240 and data[236:240] == MAGIC:
        _options(data[240:], m.options, m.problems)
        over = m.options.get(52)
        if over:
            if over[0] & 1:
                _options(data[108:236], m.options, m.problems)
            if over[0] & 2:
                _options(data[44:108], m.options, m.problems)
        t = m.options.get(53)
        if t:
            m.msg_type = t[0]
    elif len(data) >= 240:
        m.problems.append(("DHCP_no_magic_cookie", data[236:240].hex()))
    return m


# --------------------------------------------------------------------------------------------
# Transactions (Zeek's DHCP::Info)


@dataclass(eq=False)
class _Txn:
    xid: int
    ts: float
    last_ts: float
    rec: dict[str, Any]
    uids: set[str] = field(default_factory=set)
    live: set[DhcpAnalyzer] = field(default_factory=set)  # analyzers taking part, still running


class DhcpTracker:
    """Joins DHCPv4 messages of one transaction id across connections (Zeek's ``join_data``)."""

    def __init__(self, idle_timeout: float = IDLE_TIMEOUT, max_watch: float = MAX_WATCH) -> None:
        self.idle_timeout = idle_timeout
        self.max_watch = max_watch
        self._txns: dict[int, _Txn] = {}
        self._next_sweep = float("-inf")

    def _expired(self, t: _Txn, now: float) -> bool:
        return now - t.last_ts > self.idle_timeout or now - t.ts > self.max_watch

    def message(self, an: DhcpAnalyzer, msg: DhcpMessage, is_client: bool, sender: str, ts: float) -> _Txn:
        """Fold one message into its transaction; returns it (already updated)."""
        self._sweep(an, ts)
        t = self._txns.get(msg.xid)
        if t is not None and self._expired(t, ts):
            self._emit(an, self._txns.pop(msg.xid))
            t = None
        if t is None:
            rec: dict[str, Any] = {name: None for name in DHCP_SCHEMA.names[6:]}
            rec["ts"] = ts
            rec["msg_types"] = []
            rec["duration"] = 0.0
            rec["trans_id"] = msg.xid
            t = self._txns[msg.xid] = _Txn(msg.xid, ts, ts, rec)
            if len(self._txns) > MAX_TXNS:
                oldest = next(iter(self._txns))
                self._emit(an, self._txns.pop(oldest))
        t.uids.add(an.conn.uid)
        t.live.add(an)
        an._txns[msg.xid] = t
        _fold(t.rec, msg, is_client, sender, ts)
        t.last_ts = ts
        if len(t.uids) >= MAX_UIDS or len(t.rec["msg_types"]) >= MAX_MSG_TYPES:
            self._emit(an, self._txns.pop(msg.xid))
        return t

    def _sweep(self, an: DhcpAnalyzer, now: float) -> None:
        # At most once per second of capture time: a scan costs O(open transactions).
        if not self._txns or now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        for xid in [x for x, t in self._txns.items() if self._expired(t, now)]:
            self._emit(an, self._txns.pop(xid))

    def detach(self, an: DhcpAnalyzer, ts: float) -> None:
        """``an`` finished: write the transactions no running analyzer takes part in any more."""
        for xid, t in list(an._txns.items()):
            t.live.discard(an)
            if not t.live and self._txns.get(xid) is t:
                self._emit(an, self._txns.pop(xid))
        an._txns.clear()

    @staticmethod
    def _emit(an: DhcpAnalyzer, t: _Txn) -> None:
        rec = t.rec
        if rec["mac"] is None and rec["client_chaddr"] is not None:
            rec["mac"] = rec["client_chaddr"]
        rec["msg_types"] = rec["msg_types"] or None
        an.records.append(("dhcp", rec))


def _fold(rec: dict[str, Any], msg: DhcpMessage, is_client: bool, sender: str, ts: float) -> None:
    """Zeek's ``DHCP::aggregate_msgs`` for one message."""
    rec["duration"] = ts - rec["ts"]
    rec["msg_types"].append(msg.type_name)
    text = msg.text(56)
    if text is not None:
        rec["client_message" if is_client else "server_message"] = text
    if is_client:
        if sender not in ("0.0.0.0", "255.255.255.255"):
            rec["client_addr"] = sender
        if (h := msg.text(12)) is not None:
            rec["host_name"] = h
        if (f := msg.fqdn()) is not None:
            rec["client_fqdn"] = f
        mac = msg.client_id_mac()
        if mac is not None:
            rec["mac"] = mac
        else:
            rec["client_chaddr"] = msg.chaddr or None
        if (r := msg.addr(50)) is not None:
            rec["requested_addr"] = r
            if r not in (rec["requested_addrs"] or ()):
                rec["requested_addrs"] = (rec["requested_addrs"] or []) + [r]
        if (lt := msg.u32(51)) is not None:
            rec["requested_lease_time"] = float(lt)
    else:
        if msg.yiaddr != "0.0.0.0":
            rec["server_addr"] = sender
        if msg.chaddr and rec["mac"] is None:
            rec["mac"] = msg.chaddr
        if msg.yiaddr != "0.0.0.0":
            rec["assigned_addr"] = msg.yiaddr
        if rec["client_addr"] is None and rec["assigned_addr"] is not None:
            rec["client_addr"] = rec["assigned_addr"]
        if (d := msg.text(15)) is not None:
            rec["domain"] = d
        if (lt := msg.u32(51)) is not None:
            rec["lease_time"] = float(lt)
    if msg.giaddr != "0.0.0.0":
        rec["relay_addr"] = msg.giaddr
    if (vc := msg.text(60)) is not None and (is_client or rec["vendor_class"] is None):
        rec["vendor_class"] = vc
    agent = msg.agent_info()
    for code, name in ((1, "circuit_id"), (2, "agent_remote_id"), (6, "subscriber_id")):
        if code in agent:
            rec[name] = _text(agent[code])


def _location(agent: dict[int, bytes], relay: str | None) -> str | None:
    parts = []
    for code, name in ((1, "circuit-id"), (2, "remote-id"), (6, "subscriber-id")):
        if code in agent:
            parts.append(f"{name}={_text(agent[code])}")
    if parts and relay and relay != "0.0.0.0":
        parts.append(f"relay={relay}")
    return "; ".join(parts) or None


class DhcpAnalyzer(StreamAnalyzer):
    """DHCPv4 / BOOTP on one UDP conversation (see the module doc for the transaction join)."""

    service = "dhcp"

    def __init__(self, conn: ConnInfo, tracker: DhcpTracker | None = None) -> None:
        super().__init__(conn)
        self.tracker = tracker if tracker is not None else DhcpTracker()
        self._txns: dict[int, _Txn] = {}
        self.messages = 0

    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        msg = parse_dhcp(bytes(data))
        if msg is None:
            self.weirds.append(("DHCP_truncated", str(len(data))))
            return
        self.messages += 1
        self.weirds.extend(msg.problems)
        sender = self.conn.orig_h if is_orig else self.conn.resp_h
        is_client = msg.op == 1
        txn = self.tracker.message(self, msg, is_client, sender, ts)
        self._identity(msg, txn.rec, is_client, sender, ts)

    def finish(self, ts: float) -> None:
        self.tracker.detach(self, ts)

    def _identity(self, msg: DhcpMessage, rec: dict[str, Any], is_client: bool, sender: str, ts: float) -> None:
        t = msg.msg_type
        mac = msg.client_id_mac() or msg.chaddr or rec.get("mac") or None
        agent = msg.agent_info()
        ev: dict[str, Any] = {
            "ts": ts, "kind": "dhcp", "identity": mac, "mac": mac, "imsi": None, "msisdn": None,
            "imei": None, "apn": None, "location": _location(agent, msg.giaddr),
            "hostname": rec.get("host_name") or rec.get("client_fqdn"), "lease_time": None,
            "session_time": None, "session": None, "teids": None,
        }
        if not is_client and t == 5 and msg.yiaddr != "0.0.0.0":
            lt = msg.u32(51)
            lease = float(lt) if lt is not None and lt != 0xFFFFFFFF else None  # 0xffffffff: infinite
            ev.update(action="lease", ip=msg.yiaddr, lease_time=lease)
        elif is_client and t == 7 and msg.ciaddr != "0.0.0.0":
            ev.update(action="release", ip=msg.ciaddr)
        elif is_client and t == 4 and (msg.addr(50) or msg.ciaddr) not in (None, "0.0.0.0"):
            ev.update(action="release", ip=msg.addr(50) or msg.ciaddr)
        elif is_client and t == 8 and msg.ciaddr != "0.0.0.0":
            ev.update(action="update", ip=msg.ciaddr)
        else:
            return
        self.records.append(("identity_event", ev))


# --------------------------------------------------------------------------------------------
# DHCPv6


def format_duid(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def duid_mac(b: bytes) -> str | None:
    """The link-layer address inside a DUID-LLT (type 1) or DUID-LL (type 3) of an Ethernet."""
    if len(b) >= 4:
        dtype, hw = struct.unpack_from("!HH", b)
        if dtype == 1 and hw == 1 and len(b) == 14:
            return mac_from_bytes(b[8:14])
        if dtype == 3 and hw == 1 and len(b) == 10:
            return mac_from_bytes(b[4:10])
    return None


@dataclass
class V6Lease:
    addr: str  # address or "prefix/len"
    valid: int
    ia: str  # "na" | "ta" | "pd"


@dataclass
class Dhcpv6Message:
    msg_type: int
    trans_id: int | None
    client_duid: bytes | None = None
    server_duid: bytes | None = None
    fqdn: str | None = None
    leases: list[V6Lease] = field(default_factory=list)
    status: int | None = None
    relay_link: str | None = None
    relay_peer: str | None = None
    interface_id: bytes | None = None
    remote_id: bytes | None = None
    subscriber_id: bytes | None = None
    client_lladdr: str | None = None
    vendor_class: str | None = None
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def type_name(self) -> str:
        return V6_TYPES.get(self.msg_type, f"UNKNOWN-{self.msg_type}")


def _v6_options(buf: bytes, problems: list[tuple[str, str]]) -> list[tuple[int, bytes]]:
    out, off, n = [], 0, len(buf)
    while off + 4 <= n:
        code, ln = struct.unpack_from("!HH", buf, off)
        if off + 4 + ln > n:
            problems.append(("DHCPv6_option_truncated", str(code)))
            break
        out.append((code, buf[off + 4 : off + 4 + ln]))
        off += 4 + ln
    if 0 < n - off < 4:
        problems.append(("DHCPv6_option_truncated", "header"))
    return out


MAX_RELAY_DEPTH = 8


def parse_dhcpv6(data: bytes, depth: int = 0) -> Dhcpv6Message | None:
    """Parse a DHCPv6 message, unwrapping relay messages (the innermost message is returned,
    carrying the relay's link/peer address and relay options). Never raises."""
    if len(data) < 4:
        return None
    mt = data[0]
    if mt in (12, 13):
        if len(data) < 34:
            return None
        problems: list[tuple[str, str]] = []
        opts = _v6_options(data[34:], problems)
        inner = None
        for code, val in opts:
            if code == 9 and depth < MAX_RELAY_DEPTH:
                inner = parse_dhcpv6(val, depth + 1)
                break
        m = inner if inner is not None else Dhcpv6Message(mt, None)
        m.problems.extend(problems)
        if m.relay_link is None:  # the relay closest to the client is the innermost
            m.relay_link = str(ipaddress.IPv6Address(data[2:18]))
            m.relay_peer = str(ipaddress.IPv6Address(data[18:34]))
        for code, val in opts:
            if code == 18 and m.interface_id is None:
                m.interface_id = val
            elif code == 37 and len(val) > 4 and m.remote_id is None:
                m.remote_id = val[4:]  # enterprise number, then the id
            elif code == 38 and m.subscriber_id is None:
                m.subscriber_id = val
            elif code == 79 and len(val) > 2 and m.client_lladdr is None:
                hw = struct.unpack_from("!H", val)[0]
                if hw == 1 and len(val) == 8:
                    m.client_lladdr = mac_from_bytes(val[2:8])
        return m
    m = Dhcpv6Message(mt, int.from_bytes(data[1:4], "big"))
    for code, val in _v6_options(data[4:], m.problems):
        if code == 1:
            m.client_duid = val
        elif code == 2:
            m.server_duid = val
        elif code in (3, 4, 25):
            _ia(m, code, val)
        elif code == 13 and len(val) >= 2:
            m.status = struct.unpack_from("!H", val)[0]
        elif code == 39 and len(val) >= 1:
            m.fqdn = _dns_name(val[1:])
        elif code == 16 and len(val) > 6:
            m.vendor_class = _text(val[6:])
    return m


def _ia(m: Dhcpv6Message, code: int, val: bytes) -> None:
    """IA_NA (3) / IA_TA (4) / IA_PD (25) with their IAADDR (5) / IAPREFIX (26) options."""
    hdr = 4 if code == 4 else 12
    if len(val) < hdr:
        m.problems.append(("DHCPv6_IA_truncated", str(code)))
        return
    for sub, sv in _v6_options(val[hdr:], m.problems):
        if sub == 5 and code in (3, 4) and len(sv) >= 24:
            addr = str(ipaddress.IPv6Address(sv[:16]))
            valid = struct.unpack_from("!I", sv, 20)[0]
            m.leases.append(V6Lease(addr, valid, "na" if code == 3 else "ta"))
        elif sub == 26 and code == 25 and len(sv) >= 25:
            valid = struct.unpack_from("!I", sv, 4)[0]
            plen = min(sv[8], 128)
            net = ipaddress.IPv6Network((int.from_bytes(sv[9:25], "big"), 128), strict=False)
            pfx = ipaddress.IPv6Network((int(net.network_address) >> (128 - plen) << (128 - plen) if plen else 0, plen))
            m.leases.append(V6Lease(str(pfx), valid, "pd"))
        elif sub == 13 and len(sv) >= 2 and m.status is None:
            m.status = struct.unpack_from("!H", sv)[0]


class Dhcpv6Analyzer(StreamAnalyzer):
    """DHCPv6 on one UDP conversation: a ``dhcpv6`` record per message, identity evidence."""

    service = "dhcpv6"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self.messages = 0

    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        m = parse_dhcpv6(bytes(data))
        if m is None:
            self.weirds.append(("DHCPv6_truncated", str(len(data))))
            return
        self.messages += 1
        self.weirds.extend(m.problems)
        mac = m.client_lladdr or (duid_mac(m.client_duid) if m.client_duid else None)
        na = [ls.addr for ls in m.leases if ls.ia != "pd"]
        pd = [ls.addr for ls in m.leases if ls.ia == "pd"]
        self.records.append(("dhcpv6", {
            "ts": ts, "msg_type": m.type_name, "trans_id": m.trans_id,
            "client_duid": format_duid(m.client_duid) if m.client_duid else None,
            "server_duid": format_duid(m.server_duid) if m.server_duid else None,
            "mac": mac, "client_fqdn": m.fqdn, "addresses": na or None, "prefixes": pd or None,
            "valid_lifetime": float(min(ls.valid for ls in m.leases)) if m.leases else None,
            "status": V6_STATUS.get(m.status, str(m.status)) if m.status is not None else None,
            "relay_link_addr": m.relay_link, "relay_peer_addr": m.relay_peer,
            "interface_id": _text(m.interface_id) if m.interface_id else None,
            "remote_id": _text(m.remote_id) if m.remote_id else None,
            "subscriber_id": _text(m.subscriber_id) if m.subscriber_id else None,
            "vendor_class": m.vendor_class,
        }))
        self._identity(m, mac, ts)

    def _identity(self, m: Dhcpv6Message, mac: str | None, ts: float) -> None:
        if m.msg_type == 7:  # Reply
            lease_action = "lease"
        elif m.msg_type in (8, 9):  # Release, Decline
            lease_action = "release"
        else:
            return
        if not m.client_duid:
            return
        parts = []
        relay_ids = (("interface-id", m.interface_id), ("remote-id", m.remote_id), ("subscriber-id", m.subscriber_id))
        for name, v in relay_ids:
            if v:
                parts.append(f"{name}={_text(v)}")
        if parts and m.relay_link:
            parts.append(f"relay={m.relay_link}")
        duid = format_duid(m.client_duid)
        for ls in m.leases:
            action = lease_action if ls.valid != 0 else "release"
            self.records.append(("identity_event", {
                "ts": ts, "kind": "dhcpv6", "action": action, "identity": duid, "ip": ls.addr,
                "mac": mac, "imsi": None, "msisdn": None, "imei": None, "apn": None,
                "location": "; ".join(parts) or None, "hostname": m.fqdn,
                "lease_time": float(ls.valid) if action == "lease" and ls.valid != 0xFFFFFFFF else None,
                "session_time": None, "session": None, "teids": None,
            }))


ANALYZERS = {"dhcp": DhcpAnalyzer, "dhcpv6": Dhcpv6Analyzer}
