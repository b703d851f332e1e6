"""GTP control plane (GTPv0 / GTPv1-C TS 29.060 / GTPv2-C TS 29.274): ``gtp`` records and the
subscriber behind every PDP context / PDN connection.

Sans-IO: :class:`GtpcAnalyzer` takes one UDP datagram at a time (GTPv2 piggybacked messages are
split). Every control message becomes a ``gtp`` record: message type, header TEID, sequence,
IMSI, MSISDN, IMEI(SV)/MEI, APN, PDN address(es) (v1 End User Address, v2 PAA), F-TEIDs (v2,
with interface types; v1 TEID Data I/II and TEID-C paired with the GSN addresses that own them),
bearer ids, user location (v1 ULI/RAI, v2 ULI: CGI, SAI, RAI, TAI, ECGI, LAI, macro eNodeB
ids, written ``TYPE:MCC-MNC-...`` with decimal codes) and cause.

Why F-TEID ownership matters: a TEID is chosen by the node that *receives* on it, so the pair
(address of that node, TEID) names one tunnel end. A GTP-U packet sent to that address with that
TEID belongs to the session, and a later Update/Delete request addressed to that node carries
that TEID in its header — which is how sessions are found again, across connections.

Identity evidence (``identity_event``, see :mod:`lawtap.identity`), decided when the response
to a request arrives (paired by sequence number) with an acceptance cause, or at
:meth:`finish` for requests never answered:

* Create PDP Context / Create Session -> ``start`` for each PDN address (identity = IMSI, else
  MSISDN, else IMEI), with every tunnel end of request and response in ``teids``; a Create
  for an already-known subscriber without IMSI (v1 secondary context) -> ``update``;
* Update PDP Context, Modify Bearer, Create/Update Bearer, Modify Access Bearers -> ``update``
  (new tunnel ends, new location), found through the header TEID;
* Delete PDP Context, Delete Session, Delete Bearer with a linked bearer id (the whole PDN
  connection) -> ``stop`` through the header TEID.
GTPv0 has no TEIDs: its sessions are keyed by the TID (IMSI + NSAPI).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import COMMON_FIELDS, ConnInfo, StreamAnalyzer
from lawtap.identity import IDENTITY_EVENT_SCHEMA

TS = pa.timestamp("us", tz="UTC")

FTEID_TYPE = pa.struct(
    [
        pa.field("interface", pa.string()),
        pa.field("teid", pa.uint32()),
        pa.field("ipv4", pa.string()),
        pa.field("ipv6", pa.string()),
    ]
)

GTP_SCHEMA = pa.schema(
    [
        *COMMON_FIELDS,
        pa.field("version", pa.uint8()),
        pa.field("msg_type", pa.uint8()),
        pa.field("msg_type_name", pa.string()),
        pa.field("teid", pa.uint32()),
        pa.field("seq", pa.uint32()),
        pa.field("imsi", pa.string()),
        pa.field("msisdn", pa.string()),
        pa.field("imei", pa.string()),
        pa.field("apn", pa.string()),
        pa.field("pdn_addr", pa.list_(pa.string())),
        pa.field("fteids", pa.list_(FTEID_TYPE)),
        pa.field("uli", pa.list_(pa.string())),
        pa.field("cause", pa.uint8()),
        pa.field("cause_name", pa.string()),
        pa.field("rat_type", pa.string()),
        pa.field("bearer_ids", pa.list_(pa.uint8())),  # v1 NSAPI / v2 EBI
    ]
)

RECORD_SCHEMAS = {"gtp": GTP_SCHEMA, "identity_event": IDENTITY_EVENT_SCHEMA}

V1_TYPES = {
    1: "Echo Request", 2: "Echo Response", 3: "Version Not Supported",
    4: "Node Alive Request", 5: "Node Alive Response", 6: "Redirection Request", 7: "Redirection Response",
    16: "Create PDP Context Request", 17: "Create PDP Context Response",
    18: "Update PDP Context Request", 19: "Update PDP Context Response",
    20: "Delete PDP Context Request", 21: "Delete PDP Context Response",
    22: "Initiate PDP Context Activation Request", 23: "Initiate PDP Context Activation Response",
    26: "Error Indication", 27: "PDU Notification Request", 28: "PDU Notification Response",
    29: "PDU Notification Reject Request", 30: "PDU Notification Reject Response",
    31: "Supported Extension Headers Notification",
    32: "Send Routeing Information for GPRS Request", 33: "Send Routeing Information for GPRS Response",
    48: "Identification Request", 49: "Identification Response", 50: "SGSN Context Request",
    51: "SGSN Context Response", 52: "SGSN Context Acknowledge", 53: "Forward Relocation Request",
    54: "Forward Relocation Response", 55: "Forward Relocation Complete",
    56: "Relocation Cancel Request", 57: "Relocation Cancel Response",
    58: "Forward SRNS Context", 59: "Forward Relocation Complete Acknowledge",
    60: "Forward SRNS Context Acknowledge", 70: "RAN Information Relay",
    96: "MBMS Notification Request", 97: "MBMS Notification Response",
    240: "Data Record Transfer Request", 241: "Data Record Transfer Response",
    254: "End Marker", 255: "G-PDU",
}
V2_TYPES = {
    1: "Echo Request", 2: "Echo Response", 3: "Version Not Supported Indication",
    32: "Create Session Request", 33: "Create Session Response",
    34: "Modify Bearer Request", 35: "Modify Bearer Response",
    36: "Delete Session Request", 37: "Delete Session Response",
    38: "Change Notification Request", 39: "Change Notification Response",
    40: "Remote UE Report Notification", 41: "Remote UE Report Acknowledge",
    64: "Modify Bearer Command", 65: "Modify Bearer Failure Indication",
    66: "Delete Bearer Command", 67: "Delete Bearer Failure Indication",
    68: "Bearer Resource Command", 69: "Bearer Resource Failure Indication",
    70: "Downlink Data Notification Failure Indication", 71: "Trace Session Activation",
    72: "Trace Session Deactivation", 73: "Stop Paging Indication",
    95: "Create Bearer Request", 96: "Create Bearer Response",
    97: "Update Bearer Request", 98: "Update Bearer Response",
    99: "Delete Bearer Request", 100: "Delete Bearer Response",
    101: "Delete PDN Connection Set Request", 102: "Delete PDN Connection Set Response",
    103: "PGW Downlink Triggering Notification", 104: "PGW Downlink Triggering Acknowledge",
    128: "Identification Request", 129: "Identification Response", 130: "Context Request",
    131: "Context Response", 132: "Context Acknowledge", 133: "Forward Relocation Request",
    134: "Forward Relocation Response", 135: "Forward Relocation Complete Notification",
    136: "Forward Relocation Complete Acknowledge", 137: "Forward Access Context Notification",
    138: "Forward Access Context Acknowledge", 139: "Relocation Cancel Request",
    140: "Relocation Cancel Response", 141: "Configuration Transfer Tunnel",
    149: "Detach Notification", 150: "Detach Acknowledge", 151: "CS Paging Indication",
    152: "RAN Information Relay", 153: "Alert MME Notification", 154: "Alert MME Acknowledge",
    155: "UE Activity Notification", 156: "UE Activity Acknowledge",
    160: "Create Forwarding Tunnel Request", 161: "Create Forwarding Tunnel Response",
    162: "Suspend Notification", 163: "Suspend Acknowledge", 164: "Resume Notification",
    165: "Resume Acknowledge", 166: "Create Indirect Data Forwarding Tunnel Request",
    167: "Create Indirect Data Forwarding Tunnel Response",
    168: "Delete Indirect Data Forwarding Tunnel Request",
    169: "Delete Indirect Data Forwarding Tunnel Response",
    170: "Release Access Bearers Request", 171: "Release Access Bearers Response",
    176: "Downlink Data Notification", 177: "Downlink Data Notification Acknowledge",
    179: "PGW Restart Notification", 180: "PGW Restart Notification Acknowledge",
    200: "Update PDN Connection Set Request", 201: "Update PDN Connection Set Response",
    211: "Modify Access Bearers Request", 212: "Modify Access Bearers Response",
}
V1_CAUSES = {
    0: "Request IMSI", 1: "Request IMEI", 2: "Request IMSI and IMEI", 3: "No identity needed",
    4: "MS refuses", 5: "MS is not GPRS responding", 128: "Request accepted",
    129: "New PDP type due to network preference", 130: "New PDP type due to single address bearer only",
    192: "Non-existent", 193: "Invalid message format", 194: "IMSI/IMEI not known",
    195: "MS is GPRS detached", 196: "MS is not GPRS responding", 197: "MS refuses",
    198: "Version not supported", 199: "No resources available", 200: "Service not supported",
    201: "Mandatory IE incorrect", 202: "Mandatory IE missing", 203: "Optional IE incorrect",
    204: "System failure", 205: "Roaming restriction", 206: "P-TMSI Signature mismatch",
    207: "GPRS connection suspended", 208: "Authentication failure", 209: "User authentication failed",
    210: "Context not found", 211: "All dynamic PDP addresses are occupied",
    212: "No memory is available", 213: "Relocation failure", 214: "Unknown mandatory extension header",
    215: "Semantic error in the TFT operation", 216: "Syntactic error in the TFT operation",
    217: "Semantic errors in packet filter(s)", 218: "Syntactic errors in packet filter(s)",
    219: "Missing or unknown APN", 220: "Unknown PDP address or PDP type",
}
V2_CAUSES = {
    2: "Local Detach", 3: "Complete Detach", 4: "RAT changed from 3GPP to Non-3GPP",
    5: "ISR deactivation", 6: "Error Indication received from RNC/eNodeB/S4-SGSN/MME",
    7: "IMSI Detach Only", 8: "Reactivation Requested", 9: "PDN reconnection to this APN disallowed",
    10: "Access changed from Non-3GPP to 3GPP", 11: "PDN connection inactivity timer expires",
    16: "Request accepted", 17: "Request accepted partially",
    18: "New PDN type due to network preference", 19: "New PDN type due to single address bearer only",
    64: "Context Not Found", 65: "Invalid Message Format", 66: "Version not supported by next peer",
    67: "Invalid length", 68: "Service not supported", 69: "Mandatory IE incorrect",
    70: "Mandatory IE missing", 72: "System failure", 73: "No resources available",
    74: "Semantic error in the TFT operation", 75: "Syntactic error in the TFT operation",
    76: "Semantic errors in packet filter(s)", 77: "Syntactic errors in packet filter(s)",
    78: "Missing or unknown APN", 80: "GRE key not found", 81: "Relocation failure",
    82: "Denied in RAT", 83: "Preferred PDN type not supported", 84: "All dynamic addresses are occupied",
    85: "UE context without TFT already activated", 86: "Protocol type not supported",
    87: "UE not responding", 88: "UE refuses", 89: "Service denied", 90: "Unable to page UE",
    91: "No memory available", 92: "User authentication failed", 93: "APN access denied - no subscription",
    94: "Request rejected (reason not specified)", 95: "P-TMSI Signature mismatch",
    96: "IMSI/IMEI not known", 100: "Remote peer not responding",
    110: "Temporarily rejected due to handover/TAU/RAU procedure in progress",
}
RAT_TYPES = {1: "UTRAN", 2: "GERAN", 3: "WLAN", 4: "GAN", 5: "HSPA Evolution", 6: "EUTRAN",
             7: "Virtual", 8: "EUTRAN-NB-IoT", 9: "LTE-M", 10: "NR"}
FTEID_INTERFACES = {
    0: "S1-U eNodeB GTP-U", 1: "S1-U SGW GTP-U", 2: "S12 RNC GTP-U", 3: "S12 SGW GTP-U",
    4: "S5/S8 SGW GTP-U", 5: "S5/S8 PGW GTP-U", 6: "S5/S8 SGW GTP-C", 7: "S5/S8 PGW GTP-C",
    8: "S5/S8 SGW PMIPv6", 9: "S5/S8 PGW PMIPv6", 10: "S11 MME GTP-C", 11: "S11/S4 SGW GTP-C",
    12: "S10/N26 MME GTP-C", 13: "S3 MME GTP-C", 14: "S3 SGSN GTP-C", 15: "S4 SGSN GTP-U",
    16: "S4 SGW GTP-U", 17: "S4 SGSN GTP-C", 18: "S16 SGSN GTP-C",
    19: "eNodeB/gNodeB GTP-U for DL data forwarding", 20: "eNodeB GTP-U for UL data forwarding",
    21: "RNC GTP-U for data forwarding", 22: "SGSN GTP-U for data forwarding",
    23: "SGW/UPF GTP-U for DL data forwarding", 24: "Sm MBMS GW GTP-C", 25: "Sn MBMS GW GTP-C",
    26: "Sm MME GTP-C", 27: "Sn SGSN GTP-C", 28: "SGW GTP-U for UL data forwarding",
    29: "Sn SGSN GTP-U", 30: "S2b ePDG GTP-C", 31: "S2b-U ePDG GTP-U", 32: "S2b PGW GTP-C",
    33: "S2b-U PGW GTP-U", 34: "S2a TWAN GTP-U", 35: "S2a TWAN GTP-C", 36: "S2a PGW GTP-C",
    37: "S2a PGW GTP-U", 38: "S11 MME GTP-U", 39: "S11 SGW GTP-U", 40: "N26 AMF GTP-C",
}

# v1 (and v0) TV information elements: type -> value length. Types >= 128 are TLV.
V1_TV = {1: 1, 2: 8, 3: 6, 4: 4, 5: 4, 8: 1, 9: 28, 11: 1, 12: 3, 13: 1, 14: 1, 15: 1, 16: 4,
         17: 4, 18: 5, 19: 1, 20: 1, 21: 1, 22: 9, 23: 1, 24: 1, 25: 2, 26: 2, 27: 2, 28: 2,
         29: 1, 127: 4}
V0_TV = {1: 1, 2: 8, 3: 6, 4: 4, 5: 4, 6: 3, 8: 1, 9: 28, 11: 1, 12: 3, 13: 1, 14: 1, 15: 1,
         16: 2, 17: 2, 18: 3, 19: 1, 127: 4}

# Request types -> what an accepted answer means for the session.
V1_REQUESTS = {16: "create", 18: "update", 20: "delete"}
V2_REQUESTS = {32: "create", 34: "update", 36: "delete", 95: "update", 97: "update", 99: "delete_bearer",
               211: "update"}
_V2_CONTROL_IFACES = {6, 7, 10, 11, 12, 13, 14, 17, 18, 24, 25, 26, 27, 30, 32, 35, 36, 40}

MAX_PENDING = 512
MAX_MESSAGES_PER_DATAGRAM = 8
MAX_GROUP_DEPTH = 4


# --------------------------------------------------------------------------------------------
# Field decoders (shared with RADIUS 3GPP-User-Location-Info)


def tbcd(b: bytes) -> str:
    """Telephony BCD (IMSI, MSISDN, IMEI): low nibble first, 0xF filler ends it."""
    out: list[str] = []
    for x in b:
        for d in (x & 0x0F, x >> 4):
            if d == 0x0F:
                return "".join(out)
            out.append("0123456789*#abc"[d] if d < 15 else "")
    return "".join(out)


def plmn(b: bytes) -> str:
    """MCC-MNC from the 3-octet PLMN identity (2- or 3-digit MNC)."""
    mcc = f"{b[0] & 0x0F}{b[0] >> 4}{b[1] & 0x0F}"
    m3 = b[1] >> 4
    mnc = f"{b[2] & 0x0F}{b[2] >> 4}" + (f"{m3}" if m3 != 0x0F else "")
    return f"{mcc}-{mnc}"


def decode_uli_v1(b: bytes) -> list[str]:
    """GTPv1 User Location Information (29.060 7.7.51): CGI, SAI or RAI."""
    if len(b) < 8:
        return []
    kind, p = b[0], plmn(b[1:4])
    lac, x = struct.unpack_from("!HH", b, 4)
    if kind == 0:
        return [f"CGI:{p}-{lac}-{x}"]
    if kind == 1:
        return [f"SAI:{p}-{lac}-{x}"]
    if kind == 2:
        return [f"RAI:{p}-{lac}-{b[6]}"]
    return []


def decode_uli_v2(b: bytes) -> list[str]:
    """GTPv2 User Location Information (29.274 8.21): the parts its flag octet announces."""
    if not b:
        return []
    flags, off, out = b[0], 1, []
    parts = ((0x01, 7, "CGI"), (0x02, 7, "SAI"), (0x04, 7, "RAI"), (0x08, 5, "TAI"),
             (0x10, 7, "ECGI"), (0x20, 5, "LAI"), (0x40, 6, "MENBID"), (0x80, 6, "EMENBID"))
    for bit, size, name in parts:
        if not flags & bit:
            continue
        if off + size > len(b):
            break
        v = b[off : off + size]
        off += size
        p = plmn(v[:3])
        if name in ("CGI", "SAI"):
            out.append(f"{name}:{p}-{struct.unpack_from('!H', v, 3)[0]}-{struct.unpack_from('!H', v, 5)[0]}")
        elif name == "RAI":
            out.append(f"RAI:{p}-{struct.unpack_from('!H', v, 3)[0]}-{v[5]}")
        elif name in ("TAI", "LAI"):
            out.append(f"{name}:{p}-{struct.unpack_from('!H', v, 3)[0]}")
        elif name == "ECGI":
            out.append(f"ECGI:{p}-{struct.unpack_from('!I', v, 3)[0] & 0x0FFFFFFF}")
        elif name == "MENBID":
            out.append(f"MENBID:{p}-{((v[3] & 0x0F) << 16) | (v[4] << 8) | v[5]}")
        else:
            out.append(f"EMENBID:{p}-{((v[3] & 0x1F) << 16) | (v[4] << 8) | v[5]}")
    return out


def apn_name(b: bytes) -> str:
    """APN labels (length-prefixed, like DNS) joined with dots; raw text when not labelled."""
    labels, off = [], 0
    while off < len(b):
        ln = b[off]
        if ln == 0 or off + 1 + ln > len(b):
            return b.decode("ascii", "backslashreplace")
        labels.append(b[off + 1 : off + 1 + ln].decode("ascii", "backslashreplace"))
        off += 1 + ln
    return ".".join(labels)


def _end_user_address(v: bytes) -> list[str]:
    """v0/v1 End User Address: IETF org (1) with PDP type 0x21 IPv4, 0x57 IPv6, 0x8D IPv4v6."""
    if len(v) < 2 or v[0] & 0x0F != 1:
        return []
    a = v[2:]
    out = []
    if v[1] in (0x21, 0x8D) and len(a) >= 4 and len(a) != 16:
        out.append(str(ipaddress.IPv4Address(a[:4])))
        a = a[4:]
    if v[1] in (0x57, 0x8D) and len(a) >= 16:
        out.append(str(ipaddress.IPv6Address(a[:16])))
    return out


def _paa(v: bytes) -> list[str]:
    """v2 PDN Address Allocation: IPv4, IPv6 prefix (as its /len network), or both."""
    if not v:
        return []
    t = v[0] & 0x07
    out = []
    if t in (2, 3) and len(v) >= 18:
        plen = min(v[1], 128)
        addr = int.from_bytes(v[2:18], "big")
        net = (addr >> (128 - plen) << (128 - plen)) if plen else 0
        out.append(f"{ipaddress.IPv6Address(net)}/{plen}" if plen < 128 else str(ipaddress.IPv6Address(addr)))
    if t == 1 and len(v) >= 5:
        out.append(str(ipaddress.IPv4Address(v[1:5])))
    elif t == 3 and len(v) >= 22:
        out.append(str(ipaddress.IPv4Address(v[18:22])))
    return out


# --------------------------------------------------------------------------------------------
# Messages


@dataclass
class FTeid:
    """One tunnel end: ``teid`` received at ``ipv4``/``ipv6``."""

    teid: int
    ipv4: str | None
    ipv6: str | None
    interface: str | None  # v2 interface type name; v1: "control" / "user"
    control: bool

    def ends(self) -> list[tuple[str, int]]:
        return [(a, self.teid) for a in (self.ipv4, self.ipv6) if a]

    def record(self) -> dict[str, Any]:
        return {"interface": self.interface, "teid": self.teid, "ipv4": self.ipv4, "ipv6": self.ipv6}


@dataclass
class GtpMessage:
    version: int
    msg_type: int
    teid: int | None
    seq: int | None
    imsi: str | None = None
    msisdn: str | None = None
    imei: str | None = None
    apn: str | None = None
    pdn_addrs: list[str] = field(default_factory=list)
    fteids: list[FTeid] = field(default_factory=list)
    uli: list[str] = field(default_factory=list)
    cause: int | None = None
    rat_type: int | None = None
    bearer_ids: list[int] = field(default_factory=list)
    linked_bearer: bool = False  # v2 top-level EBI of instance 0 (LBI)
    tid: bytes | None = None  # v0
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def type_name(self) -> str:
        names = V2_TYPES if self.version == 2 else V1_TYPES
        return names.get(self.msg_type, f"Unknown-{self.msg_type}")

    @property
    def accepted(self) -> bool:
        """No cause (not a response), or an acceptance cause."""
        if self.cause is None:
            return True
        return 16 <= self.cause <= 63 if self.version == 2 else 128 <= self.cause <= 191

    @property
    def cause_name(self) -> str | None:
        if self.cause is None:
            return None
        names = V2_CAUSES if self.version == 2 else V1_CAUSES
        return names.get(self.cause, f"cause-{self.cause}")


def _v1_ies(m: GtpMessage, buf: bytes, tv: dict[int, int], sender: str) -> None:
    gsn: list[str] = []
    teid_c: list[int] = []
    teid_u: list[int] = []
    off, n = 0, len(buf)
    rai: str | None = None
    while off < n:
        t = buf[off]
        if t < 128:
            ln = tv.get(t)
            if ln is None:
                m.problems.append(("GTP_unknown_tv_ie", str(t)))
                break
            if off + 1 + ln > n:
                m.problems.append(("GTP_ie_truncated", str(t)))
                break
            v = buf[off + 1 : off + 1 + ln]
            off += 1 + ln
        else:
            if off + 3 > n:
                m.problems.append(("GTP_ie_truncated", str(t)))
                break
            ln = (buf[off + 1] << 8) | buf[off + 2]
            if off + 3 + ln > n:
                m.problems.append(("GTP_ie_truncated", str(t)))
                break
            v = buf[off + 3 : off + 3 + ln]
            off += 3 + ln
        if t == 1:
            m.cause = v[0]
        elif t == 2:
            m.imsi = tbcd(v) or None
        elif t == 3:
            rai = f"RAI:{plmn(v[:3])}-{struct.unpack_from('!H', v, 3)[0]}-{v[5]}"
        elif t == 16:
            teid_u.append(int.from_bytes(v, "big"))  # v1 TEID Data I / v0 Flow Label Data I
        elif t == 17:
            teid_c.append(int.from_bytes(v, "big"))
        elif t == 18:
            m.bearer_ids.append(v[0] & 0x0F)
            teid_u.append(int.from_bytes(v[1:], "big"))
        elif t == 20:
            m.bearer_ids.append(v[0] & 0x0F)
        elif t == 128:
            m.pdn_addrs.extend(_end_user_address(v))
        elif t == 131:
            m.apn = apn_name(v) or None
        elif t == 133:
            if len(v) == 4:
                gsn.append(str(ipaddress.IPv4Address(v)))
            elif len(v) == 16:
                gsn.append(str(ipaddress.IPv6Address(v)))
        elif t == 134:
            m.msisdn = tbcd(v[1:]) if len(v) > 1 else None
        elif t == 151 and v:
            m.rat_type = v[0]
        elif t == 152:
            m.uli.extend(decode_uli_v1(v))
        elif t == 154:
            m.imei = tbcd(v) or None
    if not m.uli and rai:
        m.uli.append(rai)
    if tv is V0_TV:
        return  # flow labels are not TEIDs; v0 sessions are keyed by TID
    # The first GSN address is the control plane's, the second the user plane's (29.060 7.3.1).
    ctl = gsn[0] if gsn else sender
    usr = gsn[1] if len(gsn) > 1 else ctl
    for teid in teid_c:
        m.fteids.append(_fteid(teid, ctl, "control", True))
    for teid in teid_u:
        m.fteids.append(_fteid(teid, usr, "user", False))


def _fteid(teid: int, addr: str, iface: str, control: bool) -> FTeid:
    v6 = ":" in addr
    return FTeid(teid, None if v6 else addr, addr if v6 else None, iface, control)


def _v2_ies(m: GtpMessage, buf: bytes, depth: int) -> None:
    off, n = 0, len(buf)
    while off + 4 <= n:
        t = buf[off]
        ln = (buf[off + 1] << 8) | buf[off + 2]
        inst = buf[off + 3] & 0x0F
        if off + 4 + ln > n:
            m.problems.append(("GTPv2_ie_truncated", str(t)))
            return
        v = buf[off + 4 : off + 4 + ln]
        off += 4 + ln
        if not v:
            continue
        if t == 1:
            m.imsi = tbcd(v) or None
        elif t == 2:
            if depth == 0 or m.cause is None:
                m.cause = v[0]
        elif t == 71:
            m.apn = apn_name(v) or None
        elif t == 73:
            m.bearer_ids.append(v[0] & 0x0F)
            if depth == 0 and inst == 0:
                m.linked_bearer = True
        elif t == 75:
            m.imei = tbcd(v) or None
        elif t == 76:
            m.msisdn = tbcd(v) or None
        elif t == 79:
            m.pdn_addrs.extend(a for a in _paa(v) if a not in m.pdn_addrs)
        elif t == 82:
            m.rat_type = v[0]
        elif t == 86:
            m.uli.extend(decode_uli_v2(v))
        elif t == 87 and len(v) >= 5:
            flags = v[0]
            teid = struct.unpack_from("!I", v, 1)[0]
            p = 5
            v4 = v6 = None
            if flags & 0x80 and len(v) >= p + 4:
                v4 = str(ipaddress.IPv4Address(v[p : p + 4]))
                p += 4
            if flags & 0x40 and len(v) >= p + 16:
                v6 = str(ipaddress.IPv6Address(v[p : p + 16]))
            it = flags & 0x3F
            m.fteids.append(FTeid(teid, v4, v6, FTEID_INTERFACES.get(it, f"interface-{it}"), it in _V2_CONTROL_IFACES))
        elif t == 93 and depth < MAX_GROUP_DEPTH:  # Bearer Context (grouped)
            _v2_ies(m, v, depth + 1)


def parse_gtpc(data: bytes, sender: str = "0.0.0.0") -> list[GtpMessage]:
    """Every GTP control message in a datagram (v2 piggybacking), [] when none. Never raises.

    ``sender`` (the datagram's source address) stands in for a v1 GSN address the message
    does not carry.
    """
    out: list[GtpMessage] = []
    off = 0
    while off < len(data) and len(out) < MAX_MESSAGES_PER_DATAGRAM:
        m, nxt = _parse_one(data, off, sender)
        if m is None:
            break
        out.append(m)
        if nxt is None or nxt <= off:
            break
        off = nxt
    return out


def _parse_one(data: bytes, off: int, sender: str) -> tuple[GtpMessage | None, int | None]:
    b = data[off:]
    if len(b) < 4:
        return None, None
    ver = b[0] >> 5
    if ver == 2:
        if len(b) < 8:
            return None, None
        ln = (b[2] << 8) | b[3]
        has_teid = bool(b[0] & 0x08)
        hdr = 12 if has_teid else 8
        if len(b) < hdr:
            return None, None
        teid = struct.unpack_from("!I", b, 4)[0] if has_teid else None
        sp = 8 if has_teid else 4
        seq = (b[sp] << 16) | (b[sp + 1] << 8) | b[sp + 2]
        m = GtpMessage(2, b[1], teid, seq)
        end = 4 + ln
        if ln < hdr - 4:
            m.problems.append(("GTPv2_bad_length", str(ln)))
            return m, None
        if end > len(b):
            m.problems.append(("GTPv2_truncated", f"{len(b)}<{end}"))
            end = len(b)
        _v2_ies(m, b[hdr:end], 0)
        return m, (off + end if b[0] & 0x10 and end < len(b) else None)
    if ver == 1:
        if len(b) < 8 or not b[0] & 0x10 or b[1] == 0:
            return None, None  # GTP' (PT=0) is not GTP-C; type 0 does not exist
        ln = (b[2] << 8) | b[3]
        m = GtpMessage(1, b[1], struct.unpack_from("!I", b, 4)[0], None)
        end = 8 + ln
        if end > len(b):
            m.problems.append(("GTP_truncated", f"{len(b)}<{end}"))
            end = len(b)
        p = 8
        if b[0] & 0x07:
            if end < 12:
                m.problems.append(("GTP_truncated", "optional header"))
                return m, None
            m.seq = (b[8] << 8) | b[9]
            nxt, p = b[11], 12
            while nxt:
                if p >= end or b[p] == 0 or p + b[p] * 4 > end:
                    m.problems.append(("GTP_bad_extension_header", str(nxt)))
                    return m, None
                p += b[p] * 4
                nxt = b[p - 1]
        if m.msg_type != 255:
            _v1_ies(m, b[p:end], V1_TV, sender)
        return m, None
    if ver == 0:
        # v0: PT=1 and the three spare bits set; type 0 does not exist.
        if len(b) < 20 or b[0] & 0x1E != 0x1E or b[1] == 0:
            return None, None
        ln = (b[2] << 8) | b[3]
        m = GtpMessage(0, b[1], None, (b[4] << 8) | b[5])
        m.tid = bytes(b[12:20])
        digits = tbcd(m.tid[:7] + bytes([m.tid[7] | 0xF0]))
        m.imsi = digits or None
        m.bearer_ids.append(m.tid[7] >> 4)
        end = 20 + ln
        if end > len(b):
            m.problems.append(("GTP_truncated", f"{len(b)}<{end}"))
            end = len(b)
        if m.msg_type != 255:
            _v1_ies(m, b[20:end], V0_TV, sender)
        if m.imsi is not None and set(m.imsi) == {"0"}:
            m.imsi = None  # echo/path management: TID of zeros
        return m, None
    return None, None


# --------------------------------------------------------------------------------------------
# Analyzer


@dataclass
class _Pending:
    ts: float
    msg: GtpMessage
    dst: str
    sender: str
    op: str


class GtpcAnalyzer(StreamAnalyzer):
    """GTP-C between two nodes (one UDP conversation; either side may send requests)."""

    service = "gtp-c"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self._pending: dict[tuple[int, int, int], _Pending] = {}
        self.messages = 0

    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        sender, dst = (self.conn.orig_h, self.conn.resp_h) if is_orig else (self.conn.resp_h, self.conn.orig_h)
        msgs = parse_gtpc(bytes(data), sender)
        if not msgs:
            self.weirds.append(("GTP_not_control", str(len(data))))
            return
        for m in msgs:
            self.messages += 1
            self.weirds.extend(m.problems)
            if m.msg_type == 255:
                continue  # G-PDU on a control port: user plane, not ours
            self.records.append(("gtp", self._record(m, ts)))
            self._session(m, ts, sender, dst)

    def finish(self, ts: float) -> None:
        for p in self._pending.values():
            if p.op == "create" and p.msg.imsi is None and not p.msg.pdn_addrs:
                continue
            self._emit(p, None, p.ts)
        self._pending.clear()

    # ---- records

    @staticmethod
    def _record(m: GtpMessage, ts: float) -> dict[str, Any]:
        return {
            "ts": ts, "version": m.version, "msg_type": m.msg_type, "msg_type_name": m.type_name,
            "teid": m.teid, "seq": m.seq, "imsi": m.imsi, "msisdn": m.msisdn, "imei": m.imei,
            "apn": m.apn, "pdn_addr": list(m.pdn_addrs) or None,
            "fteids": [f.record() for f in m.fteids] or None, "uli": list(m.uli) or None,
            "cause": m.cause, "cause_name": m.cause_name,
            "rat_type": RAT_TYPES.get(m.rat_type, str(m.rat_type)) if m.rat_type is not None else None,
            "bearer_ids": list(dict.fromkeys(m.bearer_ids)) or None,
        }

    # ---- sessions

    def _session(self, m: GtpMessage, ts: float, sender: str, dst: str) -> None:
        reqs = V2_REQUESTS if m.version == 2 else V1_REQUESTS
        if m.seq is None:
            return
        op = reqs.get(m.msg_type)
        if op is not None:
            if op == "delete_bearer":
                if not m.linked_bearer:
                    return  # dedicated bearers only: the PDN connection stays
                op = "delete"
            if len(self._pending) >= MAX_PENDING:
                old = self._pending.pop(next(iter(self._pending)))
                self.weirds.append(("GTP_too_many_pending_requests", old.msg.type_name))
            self._pending[(m.version, m.seq, m.msg_type)] = _Pending(ts, m, dst, sender, op)
            return
        if m.msg_type - 1 in reqs:
            p = self._pending.pop((m.version, m.seq, m.msg_type - 1), None)
            if p is None:
                if reqs[m.msg_type - 1] == "delete" and m.accepted and m.teid:
                    # Answer to an unseen Delete: its header TEID is the requester's session end.
                    req = GtpMessage(m.version, m.msg_type - 1, m.teid, m.seq)
                    self._emit(_Pending(ts, req, sender, dst, "delete"), None, ts, ref=(dst, m.teid))
                return
            if m.accepted:
                self._emit(p, m, ts)

    def _emit(self, p: _Pending, resp: GtpMessage | None, ts: float,
              ref: tuple[str, int] | None = None) -> None:
        req = p.msg
        refs: list[tuple[str, int]] = []
        if ref is not None:
            refs.append(ref)
        elif req.teid:
            refs.append((p.dst, req.teid))  # the session end the request was addressed to
        session = None
        if req.version == 0 and req.tid is not None and set(req.tid) != {0}:
            session = f"gtpv0:{req.tid.hex()}"
        ends: list[tuple[str, int]] = []
        for f in req.fteids + (resp.fteids if resp is not None else []):
            for e in f.ends():
                if f.teid and e not in ends:
                    ends.append(e)
        ident_ev: dict[str, Any] = {
            "ts": ts, "kind": "gtp", "identity": req.imsi or req.msisdn or req.imei,
            "mac": None, "imsi": req.imsi, "msisdn": req.msisdn, "imei": req.imei, "apn": req.apn,
            "location": "; ".join(req.uli) or None, "hostname": None, "lease_time": None,
            "session_time": None, "session": session,
        }
        if p.op == "delete":
            self.records.append(("identity_event", {**ident_ev, "action": "stop", "ip": None, "teids": refs or None}))
            return
        addrs = (resp.pdn_addrs if resp is not None and resp.pdn_addrs else req.pdn_addrs)
        addrs = [a for a in addrs if a not in ("0.0.0.0", "::")]
        if p.op == "create" and (req.imsi or req.msisdn or req.imei or session):
            action = "start"
            teids = ends
        else:
            action = "update"
            teids = refs + [e for e in ends if e not in refs]
        if not teids and not addrs and session is None:
            return
        targets: list[str | None] = list(addrs) or [None]
        for ip in targets:
            self.records.append(("identity_event", {**ident_ev, "action": action, "ip": ip, "teids": teids or None}))


ANALYZERS = {"gtp-c": GtpcAnalyzer}
