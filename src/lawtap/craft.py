"""Packet crafting for tests and the demo generator: bytes in, bytes out, correct checksums.

Why our own instead of scapy: the tests need exact control over every byte (stacked tags, odd
fragments, deliberately wrong checksums), the demo generator needs speed and byte-for-byte
determinism, and lawtap must not grow a heavy runtime dependency for either. So everything here
is standard library only, and every layer is a plain function returning ``bytes``; layers compose
by nesting calls, innermost last::

    frame = ethernet(CLIENT_MAC, GATEWAY_MAC, ETH_P_IP,
                     ipv4("10.0.0.1", "192.0.2.1", IPPROTO_UDP,
                          udp(5353, 53, query, src_ip="10.0.0.1", dst_ip="192.0.2.1")))

Conventions:
  * Addresses are accepted as text (``"10.0.0.1"``, ``"2001:db8::1"``, ``"02:00:00:00:00:01"``),
    as packed ``bytes``, or as :mod:`ipaddress` objects.
  * Every checksum is computed unless the caller passes ``checksum=`` explicitly (to craft a
    bad one). Transport checksums need the IP addresses for the pseudo-header, so ``tcp``,
    ``udp`` take ``src_ip``/``dst_ip``; without them the field is left 0 (as with checksum
    offload on the capturing host).
  * Multi-byte header fields are big-endian (network order) except where a link type says
    otherwise (``bsd_null``).

Above the layer functions sit conversation helpers (:class:`TcpSession`,
:class:`UdpExchange`, :class:`PingExchange`) that produce time-stamped frames for a whole
exchange, with pluggable link framing (:class:`EthernetLink`, :class:`SllLink`, ...) and
tunnels (:class:`GreTunnel`, :class:`GtpuTunnel`, ...), and two small capture writers.
The product's fast writer lives elsewhere; these exist so tests never depend on the code they
test.
"""

from __future__ import annotations

import ipaddress
import math
import random
import struct
import sys
import zlib
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from heapq import merge as _heap_merge
from pathlib import Path
from typing import ClassVar, Protocol, Self, TypedDict, Unpack

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

# EtherTypes
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_IPV6 = 0x86DD
ETH_P_MPLS_UC = 0x8847
ETH_P_PPPOE_DISC = 0x8863
ETH_P_PPPOE_SESS = 0x8864
ETH_P_8021AD = 0x88A8
ETH_P_TEB = 0x6558  # transparent Ethernet bridging (Ethernet inside GRE)

# PPP protocol numbers (inside PPPoE session frames)
PPP_IP = 0x0021
PPP_IPV6 = 0x0057

# IP protocol / IPv6 next-header numbers
IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_GRE = 47
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_SCTP = 132

# Address families as written by BSD-style loopback link types (the IPv6 value differs per OS).
AF_INET = 2
AF_INET6_BSD = 24  # NetBSD, OpenBSD, BSD/OS
AF_INET6_FREEBSD = 28
AF_INET6_DARWIN = 30

# libpcap LINKTYPE_* values (mirrors lawtap.sources.batch without importing numpy)
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

# Linux packet types (sll_pkttype)
PACKET_HOST = 0
PACKET_BROADCAST = 1
PACKET_MULTICAST = 2
PACKET_OTHERHOST = 3
PACKET_OUTGOING = 4

# TCP flag bits
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_ECE = 0x40
TCP_CWR = 0x80
_TCP_FLAG_LETTERS = {
    "F": TCP_FIN,
    "S": TCP_SYN,
    "R": TCP_RST,
    "P": TCP_PSH,
    "A": TCP_ACK,
    "U": TCP_URG,
    "E": TCP_ECE,
    "C": TCP_CWR,
}

# Well-known tunnel ports
VXLAN_PORT = 4789
GTPU_PORT = 2152

Address = str | bytes | ipaddress.IPv4Address | ipaddress.IPv6Address
MacAddress = str | bytes
Frame = tuple[float, bytes]
"""A captured frame: (timestamp in seconds since the Unix epoch, link-layer bytes)."""

_LITTLE_ENDIAN_HOST = sys.byteorder == "little"

# --------------------------------------------------------------------------------------------
# Address helpers
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _parse_ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def ip_bytes(addr: Address) -> bytes:
    """Packed 4- or 16-byte form of an IPv4/IPv6 address given as text, bytes or ipaddress."""
    if isinstance(addr, bytes):
        if len(addr) not in (4, 16):
            raise ValueError(f"packed IP address must be 4 or 16 bytes, got {len(addr)}")
        return addr
    if isinstance(addr, str):
        return _parse_ip(addr)
    return addr.packed


@lru_cache(maxsize=1024)
def _parse_mac(text: str) -> bytes:
    digits = text.replace(":", "").replace("-", "").replace(".", "")
    if len(digits) != 12:
        raise ValueError(f"not a MAC address: {text!r}")
    return bytes.fromhex(digits)


def mac_bytes(mac: MacAddress) -> bytes:
    """Packed 6-byte MAC from ``"aa:bb:cc:dd:ee:ff"`` (``-`` or Cisco dots also fine) or bytes."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise ValueError(f"packed MAC must be 6 bytes, got {len(mac)}")
        return mac
    return _parse_mac(mac)


def ip_version(packet: bytes) -> int:
    """IP version nibble of a packet (4 or 6); raises for anything else."""
    if not packet:
        raise ValueError("empty IP packet")
    version = packet[0] >> 4
    if version not in (4, 6):
        raise ValueError(f"not an IP packet (version nibble {version})")
    return version


def ethertype_of(packet: bytes) -> int:
    """EtherType that announces ``packet`` (IPv4 or IPv6), so wrappers need not be told."""
    return ETH_P_IP if ip_version(packet) == 4 else ETH_P_IPV6


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement checksum of ``data`` (odd length padded with a zero byte).

    Why this shape: summing native-order 16-bit words in C (``array``) is ~50x faster than a
    Python loop, and the one's-complement sum is byte-order independent (RFC 1071 §2(B)), so a
    little-endian host just swaps the folded result once.
    """
    if len(data) % 2:
        data = bytes(data) + b"\x00"
    total = sum(array("H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    if _LITTLE_ENDIAN_HOST:
        total = ((total & 0xFF) << 8) | (total >> 8)
    return ~total & 0xFFFF


def pseudo_header(src: Address, dst: Address, proto: int, length: int) -> bytes:
    """TCP/UDP/ICMPv6 checksum pseudo-header (RFC 793 for IPv4, RFC 8200 §8.1 for IPv6)."""
    s, d = ip_bytes(src), ip_bytes(dst)
    if len(s) != len(d):
        raise ValueError("source and destination addresses are of different families")
    if len(s) == 4:
        return s + d + struct.pack("!BBH", 0, proto, length)
    return s + d + struct.pack("!I3xB", length, proto)


def _make_crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as SCTP uses (RFC 9260 appendix A); ``crc32c(b"123456789")`` is
    ``0xE3069283``.

    A byte-at-a-time table loop: slow (~5 MB/s) but SCTP packets in tests are small, and this
    keeps SCTP checksums real rather than zero.
    """
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# Layer 2
# --------------------------------------------------------------------------------------------

VlanSpec = int | tuple[int, int]
"""A VLAN tag: a bare VLAN id, or ``(tpid, vid)`` to choose 0x8100 / 0x88a8 explicitly."""


def vlan_tag(vid: int, ethertype: int, payload: bytes, *, pcp: int = 0, dei: bool = False) -> bytes:
    """The bytes following a 0x8100/0x88a8 TPID: TCI (pcp, dei, vid) + inner EtherType + payload."""
    if not 0 <= vid <= 0xFFF:
        raise ValueError(f"VLAN id out of range: {vid}")
    tci = (pcp & 7) << 13 | int(dei) << 12 | vid
    return struct.pack("!HH", tci, ethertype) + payload


def vlan_stack(tags: Sequence[VlanSpec], ethertype: int, payload: bytes) -> tuple[int, bytes]:
    """Wrap ``payload`` in VLAN tags, outermost first; returns (outer TPID, tagged bytes).

    Bare ids get TPID 0x88a8 (802.1ad S-tag) for the outer tag of a stack of two or more and
    0x8100 (802.1Q C-tag) otherwise, which is what QinQ provider networks put on the wire.
    """
    if not tags:
        return ethertype, payload
    resolved: list[tuple[int, int]] = []
    for i, tag in enumerate(tags):
        if isinstance(tag, tuple):
            resolved.append(tag)
        else:
            resolved.append((ETH_P_8021AD if i == 0 and len(tags) > 1 else ETH_P_8021Q, tag))
    inner_type, body = ethertype, payload
    for tpid, vid in reversed(resolved):
        body = vlan_tag(vid, inner_type, body)
        inner_type = tpid
    return inner_type, body


def ethernet(
    src_mac: MacAddress,
    dst_mac: MacAddress,
    ethertype: int,
    payload: bytes,
    *,
    vlans: Sequence[VlanSpec] = (),
    pad: bool = False,
) -> bytes:
    """Ethernet II frame (no FCS). Note the argument order is src, dst; the wire order is dst, src.

    ``vlans`` inserts 802.1Q/802.1ad tags (outermost first, see :func:`vlan_stack`). ``pad``
    pads to the 60-byte minimum, as frames look when captured off the wire rather than on the
    sending host (where they are captured before the NIC pads them).
    """
    outer_type, body = vlan_stack(vlans, ethertype, payload)
    frame = mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", outer_type) + body
    if pad and len(frame) < 60:
        frame += bytes(60 - len(frame))
    return frame


def mpls(labels: Sequence[int], payload: bytes, *, tc: int = 0, ttl: int = 64) -> bytes:
    """MPLS label stack (outermost first) with the bottom-of-stack bit on the last label.

    Carry it in Ethernet with EtherType :data:`ETH_P_MPLS_UC`; MPLS has no payload-type field,
    so receivers (and lawtap) guess the payload from its first nibble.
    """
    if not labels:
        raise ValueError("an MPLS stack needs at least one label")
    out = bytearray()
    for i, label in enumerate(labels):
        if not 0 <= label < 1 << 20:
            raise ValueError(f"MPLS label out of range: {label}")
        bos = 1 if i == len(labels) - 1 else 0
        out += struct.pack("!I", label << 12 | (tc & 7) << 9 | bos << 8 | (ttl & 0xFF))
    return bytes(out) + payload


def pppoe_session(session_id: int, ppp_proto: int, payload: bytes) -> bytes:
    """PPPoE session-stage header (RFC 2516) plus the 2-byte PPP protocol field.

    Carry it in Ethernet with EtherType :data:`ETH_P_PPPOE_SESS`. The PPPoE length field covers
    the PPP protocol field and payload.
    """
    return struct.pack("!BBHHH", 0x11, 0x00, session_id, len(payload) + 2, ppp_proto) + payload


def linux_sll(
    protocol: int,
    payload: bytes,
    *,
    pkttype: int = PACKET_HOST,
    hatype: int = 1,
    addr: bytes = b"",
) -> bytes:
    """LINKTYPE_LINUX_SLL (113) cooked header: what ``tcpdump -i any`` writes on older libpcap.

    ``protocol`` is the EtherType of the payload; ``addr`` is the link-layer source address
    (up to 8 bytes, e.g. a MAC), ``hatype`` the ARPHRD_ type (1 = Ethernet).
    """
    if len(addr) > 8:
        raise ValueError("SLL address is at most 8 bytes")
    return struct.pack("!HHH8sH", pkttype, hatype, len(addr), addr, protocol) + payload


def linux_sll2(
    protocol: int,
    payload: bytes,
    *,
    ifindex: int = 1,
    pkttype: int = PACKET_HOST,
    hatype: int = 1,
    addr: bytes = b"",
) -> bytes:
    """LINKTYPE_LINUX_SLL2 (276) cooked header: SLL plus the interface index (libpcap >= 1.10)."""
    if len(addr) > 8:
        raise ValueError("SLL2 address is at most 8 bytes")
    return (
        struct.pack("!HHIHBB8s", protocol, 0, ifindex, hatype, pkttype, len(addr), addr) + payload
    )


def bsd_null(family: int, payload: bytes) -> bytes:
    """LINKTYPE_NULL (0) header: the address family as a 4-byte *host-order* integer.

    Captures come from little-endian hosts in practice, so this writes little-endian; the
    IPv6 family value depends on the capturing OS (:data:`AF_INET6_BSD`, ``_FREEBSD``,
    ``_DARWIN``), which is why readers must accept all three.
    """
    return struct.pack("<I", family) + payload


def loopback(family: int, payload: bytes) -> bytes:
    """LINKTYPE_LOOP (108) header: like :func:`bsd_null` but the family is always big-endian
    (OpenBSD loopback)."""
    return struct.pack("!I", family) + payload


# --------------------------------------------------------------------------------------------
# Layer 3: IPv4
# --------------------------------------------------------------------------------------------


def ipv4(
    src: Address,
    dst: Address,
    proto: int,
    payload: bytes,
    *,
    ttl: int = 64,
    ident: int = 0,
    tos: int = 0,
    df: bool = False,
    mf: bool = False,
    frag_offset: int = 0,
    options: bytes = b"",
    total_length: int | None = None,
    checksum: int | None = None,
) -> bytes:
    """IPv4 packet with a correct header checksum.

    ``frag_offset`` is in bytes (must be a multiple of 8; the header stores eighths).
    ``options`` are raw option bytes, zero-padded (EOL) to a 4-byte boundary, at most 40.
    ``total_length``/``checksum`` override the computed values, to craft damaged packets.
    """
    if frag_offset % 8 or not 0 <= frag_offset <= 0x1FFF * 8:
        raise ValueError(f"fragment offset must be a multiple of 8 below 65536: {frag_offset}")
    if len(options) % 4:
        options = options + bytes(4 - len(options) % 4)
    if len(options) > 40:
        raise ValueError("IPv4 options exceed 40 bytes")
    ihl = 5 + len(options) // 4
    length = ihl * 4 + len(payload) if total_length is None else total_length
    if length > 0xFFFF:
        raise ValueError(f"IPv4 packet too long: {length}")
    flags_frag = int(df) << 14 | int(mf) << 13 | frag_offset // 8
    header = (
        struct.pack(
            "!BBHHHBBH4s4s",
            0x40 | ihl,
            tos,
            length,
            ident & 0xFFFF,
            flags_frag,
            ttl,
            proto,
            0,
            ip_bytes(src),
            ip_bytes(dst),
        )
        + options
    )
    csum = internet_checksum(header) if checksum is None else checksum
    return header[:10] + struct.pack("!H", csum) + header[12:] + payload


def _ipv4_copied_options(options: bytes) -> bytes:
    """The options a fragment after the first must repeat: those with the 'copied' bit set."""
    out = bytearray()
    i = 0
    while i < len(options):
        kind = options[i]
        if kind == 0:  # end of option list
            break
        if kind == 1:  # NOP
            i += 1
            continue
        if i + 1 >= len(options) or options[i + 1] < 2:
            break  # malformed; stop rather than loop
        length = options[i + 1]
        if kind & 0x80:
            out += options[i : i + length]
        i += length
    if len(out) % 4:
        out += bytes(4 - len(out) % 4)
    return bytes(out)


def ipv4_fragments(packet: bytes, mtu: int, *, ignore_df: bool = False) -> list[bytes]:
    """Split an IPv4 packet into fragments of at most ``mtu`` bytes each (RFC 791).

    Works on already-fragmented input too (offsets add up, the last piece keeps the original
    MF bit). Later fragments carry only the options with the copied bit. A packet that already
    fits is returned unchanged. DF raises unless ``ignore_df``, since a router would drop it.
    """
    ihl = (packet[0] & 0x0F) * 4
    (total_length, ident, flags_frag, ttl, proto) = struct.unpack_from("!2xHHHBB", packet, 0)
    tos = packet[1]
    if len(packet) <= mtu:
        return [packet]
    df = bool(flags_frag & 0x4000)
    if df and not ignore_df:
        raise ValueError("packet has DF set and exceeds the MTU")
    orig_mf = bool(flags_frag & 0x2000)
    orig_offset = (flags_frag & 0x1FFF) * 8
    src, dst = packet[12:16], packet[16:20]
    first_options = packet[20:ihl]
    later_options = _ipv4_copied_options(first_options)
    payload = packet[ihl:total_length]
    fragments = []
    pos = 0
    while pos < len(payload):
        options = first_options if pos == 0 else later_options
        room = (mtu - 20 - len(options)) // 8 * 8
        if room <= 0:
            raise ValueError(f"MTU {mtu} too small to carry any fragment data")
        chunk = payload[pos : pos + room]
        last = pos + len(chunk) >= len(payload)
        fragments.append(
            ipv4(
                src,
                dst,
                proto,
                chunk,
                ttl=ttl,
                ident=ident,
                tos=tos,
                df=df,
                mf=orig_mf if last else True,
                frag_offset=orig_offset + pos,
                options=options,
            )
        )
        pos += len(chunk)
    return fragments


# --------------------------------------------------------------------------------------------
# Layer 3: IPv6
# --------------------------------------------------------------------------------------------


def _options_header(next_header: int, options: bytes) -> bytes:
    """Hop-by-hop / destination options header body padded with Pad1/PadN to 8 bytes."""
    used = 2 + len(options)
    pad = -used % 8
    if pad == 1:
        options = options + b"\x00"
    elif pad > 1:
        options = options + bytes([1, pad - 2]) + bytes(pad - 2)
    return bytes([next_header, (used + pad) // 8 - 1]) + options


@dataclass(frozen=True)
class HopByHop:
    """IPv6 hop-by-hop options header; ``options`` are raw TLVs (padding added for you)."""

    options: bytes = b""
    proto: ClassVar[int] = IPPROTO_HOPOPTS

    def encode(self, next_header: int) -> bytes:
        return _options_header(next_header, self.options)


@dataclass(frozen=True)
class DestOptions:
    """IPv6 destination options header; ``options`` are raw TLVs (padding added for you)."""

    options: bytes = b""
    proto: ClassVar[int] = IPPROTO_DSTOPTS

    def encode(self, next_header: int) -> bytes:
        return _options_header(next_header, self.options)


@dataclass(frozen=True)
class Routing:
    """IPv6 routing header carrying a list of addresses, written in the order given.

    ``routing_type`` 0 (deprecated but still seen), 2 (Mobile IPv6, one address) or 4 (SRv6
    segment list, which is stored last-segment-first) all share this layout; for type 4 the
    "last entry" byte is filled in. ``segments_left`` defaults to the number of addresses.
    Remember that with segments left the *final* address is the one transport checksums use.
    """

    addresses: Sequence[Address] = ()
    routing_type: int = 0
    segments_left: int | None = None
    proto: ClassVar[int] = IPPROTO_ROUTING

    def encode(self, next_header: int) -> bytes:
        data = b"".join(ip_bytes(a) for a in self.addresses)
        if len(data) % 8:
            raise ValueError("routing header addresses must be IPv6")
        left = len(self.addresses) if self.segments_left is None else self.segments_left
        reserved = (
            struct.pack("!BBH", len(self.addresses) - 1, 0, 0)
            if self.routing_type == 4
            else bytes(4)
        )
        return (
            struct.pack("!BBBB", next_header, len(data) // 8, self.routing_type, left)
            + reserved
            + data
        )


@dataclass(frozen=True)
class Fragment:
    """IPv6 fragment header; ``offset`` in bytes (multiple of 8)."""

    offset: int = 0
    more: bool = False
    ident: int = 0
    proto: ClassVar[int] = IPPROTO_FRAGMENT

    def encode(self, next_header: int) -> bytes:
        if self.offset % 8:
            raise ValueError("IPv6 fragment offset must be a multiple of 8")
        return struct.pack(
            "!BBHI", next_header, 0, self.offset | int(self.more), self.ident & 0xFFFFFFFF
        )


class ExtHeader(Protocol):
    """Anything that can sit in an IPv6 extension-header chain."""

    proto: ClassVar[int]

    def encode(self, next_header: int) -> bytes: ...


def ipv6(
    src: Address,
    dst: Address,
    next_header: int,
    payload: bytes,
    *,
    ext_headers: Sequence[ExtHeader] = (),
    hop_limit: int = 64,
    traffic_class: int = 0,
    flow_label: int = 0,
    payload_length: int | None = None,
) -> bytes:
    """IPv6 packet; ``ext_headers`` are chained in order and ``next_header`` names the payload.

    ``payload_length`` overrides the computed value, to craft damaged packets.
    """
    chain = bytearray()
    for i, ext in enumerate(ext_headers):
        nxt = ext_headers[i + 1].proto if i + 1 < len(ext_headers) else next_header
        chain += ext.encode(nxt)
    first = ext_headers[0].proto if ext_headers else next_header
    plen = len(chain) + len(payload) if payload_length is None else payload_length
    if plen > 0xFFFF:
        raise ValueError(f"IPv6 payload too long (jumbograms unsupported): {plen}")
    first_word = 6 << 28 | (traffic_class & 0xFF) << 20 | (flow_label & 0xFFFFF)
    header = (
        struct.pack("!IHBB", first_word, plen, first, hop_limit) + ip_bytes(src) + ip_bytes(dst)
    )
    return header + bytes(chain) + payload


def ipv6_fragments(packet: bytes, mtu: int, *, ident: int = 0) -> list[bytes]:
    """Split an IPv6 packet into fragments of at most ``mtu`` bytes (RFC 8200 §4.5).

    The unfragmentable part (IPv6 header plus hop-by-hop, routing, and destination options
    preceding a routing header) is repeated in every fragment, followed by a fragment header
    with identification ``ident``. A packet that already fits is returned unchanged (no atomic
    fragments); one that already has a fragment header raises.
    """
    if len(packet) <= mtu:
        return [packet]
    payload_length = struct.unpack_from("!H", packet, 4)[0]
    end = 40 + payload_length
    nh_pos = 6  # position of the next-header byte that points past the unfragmentable part
    pos = 40
    unfrag_end = 40
    nh = packet[6]
    while nh in (IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS):
        length = (packet[pos + 1] + 1) * 8
        if nh != IPPROTO_DSTOPTS:
            unfrag_end = pos + length
            nh_pos = pos
        nh = packet[pos]
        pos += length
    if IPPROTO_FRAGMENT in (nh, packet[nh_pos]):
        raise ValueError("packet is already fragmented")
    first_fragmentable = packet[nh_pos]
    unfragmentable = bytearray(packet[:unfrag_end])
    unfragmentable[nh_pos] = IPPROTO_FRAGMENT
    fragmentable = packet[unfrag_end:end]
    room = (mtu - len(unfragmentable) - 8) // 8 * 8
    if room <= 0:
        raise ValueError(f"MTU {mtu} too small to carry any fragment data")
    fragments = []
    for offset in range(0, len(fragmentable), room):
        chunk = fragmentable[offset : offset + room]
        more = offset + room < len(fragmentable)
        frag = Fragment(offset=offset, more=more, ident=ident).encode(first_fragmentable)
        piece = bytearray(unfragmentable) + frag + chunk
        struct.pack_into("!H", piece, 4, len(piece) - 40)
        fragments.append(bytes(piece))
    return fragments


def ip(
    src: Address,
    dst: Address,
    proto: int,
    payload: bytes,
    *,
    ttl: int = 64,
    ident: int = 0,
    df: bool = False,
    flow_label: int = 0,
) -> bytes:
    """IPv4 or IPv6 packet, chosen by the address family; for code that serves both."""
    s, d = ip_bytes(src), ip_bytes(dst)
    if len(s) != len(d):
        raise ValueError("source and destination addresses are of different families")
    if len(s) == 4:
        return ipv4(s, d, proto, payload, ttl=ttl, ident=ident, df=df)
    return ipv6(s, d, proto, payload, hop_limit=ttl, flow_label=flow_label)


# --------------------------------------------------------------------------------------------
# Layer 4
# --------------------------------------------------------------------------------------------


def tcp_flags(spec: int | str) -> int:
    """Flag bits from an int or letters (``"S"``, ``"SA"``, ``"PA"``, ``"FA"``, ``"RA"``...)."""
    if isinstance(spec, int):
        return spec
    bits = 0
    for letter in spec.upper():
        try:
            bits |= _TCP_FLAG_LETTERS[letter]
        except KeyError:
            raise ValueError(f"unknown TCP flag letter {letter!r} in {spec!r}") from None
    return bits


def tcp_options(
    *,
    mss: int | None = None,
    sack_permitted: bool = False,
    timestamps: tuple[int, int] | None = None,
    wscale: int | None = None,
    sack: Sequence[tuple[int, int]] = (),
) -> bytes:
    """TCP options laid out as Linux does (MSS, SACK-permitted/timestamps, NOP+window scale).

    Returned padded to a 4-byte multiple so it can go straight into :func:`tcp`.
    """
    out = bytearray()
    if mss is not None:
        out += struct.pack("!BBH", 2, 4, mss)
    if sack_permitted and timestamps is not None:
        out += b"\x04\x02" + struct.pack("!BBII", 8, 10, *timestamps)
    elif sack_permitted:
        out += b"\x01\x01\x04\x02"
    elif timestamps is not None:
        out += b"\x01\x01" + struct.pack("!BBII", 8, 10, *timestamps)
    if wscale is not None:
        out += struct.pack("!BBBB", 1, 3, 3, wscale)
    if sack:
        out += b"\x01\x01" + struct.pack("!BB", 5, 2 + 8 * len(sack))
        for left, right in sack:
            out += struct.pack("!II", left & 0xFFFFFFFF, right & 0xFFFFFFFF)
    if len(out) % 4:
        out += bytes(4 - len(out) % 4)
    return bytes(out)


def tcp(
    sport: int,
    dport: int,
    seq: int,
    ack: int,
    flags: int | str,
    payload: bytes = b"",
    *,
    window: int = 65535,
    options: bytes = b"",
    urgent: int = 0,
    src_ip: Address | None = None,
    dst_ip: Address | None = None,
    checksum: int | None = None,
) -> bytes:
    """TCP segment; the checksum covers the IPv4 or IPv6 pseudo-header built from
    ``src_ip``/``dst_ip`` (left 0 when they are not given and ``checksum`` is None).

    ``flags`` is an int of ``TCP_*`` bits or letters like ``"SA"``. ``options`` are raw and
    zero-padded to 4 bytes (see :func:`tcp_options`).
    """
    if len(options) % 4:
        options = options + bytes(4 - len(options) % 4)
    if len(options) > 40:
        raise ValueError("TCP options exceed 40 bytes")
    offset = (20 + len(options)) // 4
    header = (
        struct.pack(
            "!HHIIBBHHH",
            sport,
            dport,
            seq & 0xFFFFFFFF,
            ack & 0xFFFFFFFF,
            offset << 4,
            tcp_flags(flags),
            window,
            0,
            urgent,
        )
        + options
    )
    segment = header + payload
    if checksum is None:
        if src_ip is None or dst_ip is None:
            return segment
        checksum = internet_checksum(
            pseudo_header(src_ip, dst_ip, IPPROTO_TCP, len(segment)) + segment
        )
    return segment[:16] + struct.pack("!H", checksum) + segment[18:]


def udp(
    sport: int,
    dport: int,
    payload: bytes = b"",
    *,
    src_ip: Address | None = None,
    dst_ip: Address | None = None,
    checksum: int | None = None,
    length: int | None = None,
) -> bytes:
    """UDP datagram; checksum over the pseudo-header from ``src_ip``/``dst_ip``.

    A computed checksum of 0 is sent as 0xFFFF (0 means "none" on IPv4, and is illegal on
    IPv6). Without addresses the field is 0, which is legal only over IPv4.
    """
    total = 8 + len(payload) if length is None else length
    datagram = struct.pack("!HHHH", sport, dport, total, 0) + payload
    if checksum is None:
        if src_ip is None or dst_ip is None:
            return datagram
        checksum = internet_checksum(
            pseudo_header(src_ip, dst_ip, IPPROTO_UDP, len(datagram)) + datagram
        )
        checksum = checksum or 0xFFFF
    return datagram[:6] + struct.pack("!H", checksum) + datagram[8:]


def icmp(
    icmp_type: int, code: int, body: bytes = b"\x00\x00\x00\x00", *, checksum: int | None = None
) -> bytes:
    """ICMPv4 message: type, code, checksum, then ``body`` (the 4 "rest of header" bytes + data)."""
    message = struct.pack("!BBH", icmp_type, code, 0) + body
    csum = internet_checksum(message) if checksum is None else checksum
    return message[:2] + struct.pack("!H", csum) + message[4:]


def icmp_echo(ident: int, seq: int, payload: bytes = b"", *, reply: bool = False) -> bytes:
    """ICMPv4 echo request (type 8) or echo reply (type 0)."""
    return icmp(0 if reply else 8, 0, struct.pack("!HH", ident, seq) + payload)


def icmpv6(
    icmp_type: int,
    code: int,
    body: bytes,
    *,
    src_ip: Address,
    dst_ip: Address,
    checksum: int | None = None,
) -> bytes:
    """ICMPv6 message; unlike ICMPv4 its checksum includes the IPv6 pseudo-header."""
    message = struct.pack("!BBH", icmp_type, code, 0) + body
    if checksum is None:
        checksum = internet_checksum(
            pseudo_header(src_ip, dst_ip, IPPROTO_ICMPV6, len(message)) + message
        )
    return message[:2] + struct.pack("!H", checksum) + message[4:]


def icmpv6_echo(
    ident: int,
    seq: int,
    payload: bytes = b"",
    *,
    src_ip: Address,
    dst_ip: Address,
    reply: bool = False,
) -> bytes:
    """ICMPv6 echo request (type 128) or echo reply (type 129)."""
    return icmpv6(
        129 if reply else 128,
        0,
        struct.pack("!HH", ident, seq) + payload,
        src_ip=src_ip,
        dst_ip=dst_ip,
    )


def sctp_chunk(chunk_type: int, value: bytes = b"", *, flags: int = 0) -> bytes:
    """One SCTP chunk (type, flags, length, value), zero-padded to 4 bytes as RFC 9260 requires."""
    chunk = struct.pack("!BBH", chunk_type, flags, 4 + len(value)) + value
    return chunk + bytes(-len(chunk) % 4)


def sctp_data(
    tsn: int, stream: int, ssn: int, ppid: int, data: bytes, *, flags: int = 0x03
) -> bytes:
    """SCTP DATA chunk (type 0); default flags B|E mark an unfragmented user message."""
    return sctp_chunk(0, struct.pack("!IHHI", tsn, stream, ssn, ppid) + data, flags=flags)


def sctp_init(
    init_tag: int,
    initial_tsn: int,
    *,
    a_rwnd: int = 106496,
    out_streams: int = 10,
    in_streams: int = 65535,
    ack: bool = False,
    params: bytes = b"",
) -> bytes:
    """SCTP INIT (type 1) or, with ``ack=True``, INIT ACK (type 2) chunk."""
    value = struct.pack("!IIHHI", init_tag, a_rwnd, out_streams, in_streams, initial_tsn) + params
    return sctp_chunk(2 if ack else 1, value)


def sctp(
    sport: int, dport: int, chunks: bytes, *, vtag: int = 0, checksum: int | None = None
) -> bytes:
    """SCTP packet: common header plus already-encoded ``chunks``, with a real CRC-32C.

    The CRC is stored least-significant byte first, as RFC 9260 appendix A's reference
    implementation does (which is why a plain ``!I`` pack would be wrong).
    """
    packet = struct.pack("!HHII", sport, dport, vtag, 0) + chunks
    if checksum is None:
        return packet[:8] + struct.pack("<I", crc32c(packet)) + packet[12:]
    return packet[:8] + struct.pack("!I", checksum) + packet[12:]


# --------------------------------------------------------------------------------------------
# Tunnels
# --------------------------------------------------------------------------------------------


def gre(
    proto: int,
    payload: bytes,
    *,
    key: int | None = None,
    seq: int | None = None,
    checksum: bool = False,
) -> bytes:
    """GRE header (RFC 2784/2890) announcing EtherType ``proto``, plus ``payload``.

    Optional fields appear in wire order checksum, key, sequence. Carry it in IP protocol
    :data:`IPPROTO_GRE`; use :data:`ETH_P_TEB` to carry whole Ethernet frames.
    """
    flags = (
        (0x8000 if checksum else 0)
        | (0x2000 if key is not None else 0)
        | (0x1000 if seq is not None else 0)
    )
    header = bytearray(struct.pack("!HH", flags, proto))
    if checksum:
        header += bytes(4)
    if key is not None:
        header += struct.pack("!I", key & 0xFFFFFFFF)
    if seq is not None:
        header += struct.pack("!I", seq & 0xFFFFFFFF)
    packet = bytes(header) + payload
    if checksum:
        packet = packet[:4] + struct.pack("!H", internet_checksum(packet)) + packet[6:]
    return packet


def vxlan(vni: int, inner_ethernet_frame: bytes) -> bytes:
    """VXLAN header (RFC 7348, I flag set) plus the inner Ethernet frame; carry in UDP port
    :data:`VXLAN_PORT`."""
    if not 0 <= vni < 1 << 24:
        raise ValueError(f"VNI out of range: {vni}")
    return struct.pack("!II", 0x08 << 24, vni << 8) + inner_ethernet_frame


def gtpu(
    teid: int, inner_ip_packet: bytes, *, seq: int | None = None, msg_type: int = 255
) -> bytes:
    """GTPv1-U header (3GPP TS 29.281) carrying a user-plane packet; message type 255 is G-PDU.

    With ``seq`` the optional 4-byte block (sequence, N-PDU, next-extension) is present and
    counted in the length field, as the spec requires. Carry in UDP port :data:`GTPU_PORT`.
    """
    if seq is None:
        return struct.pack("!BBHI", 0x30, msg_type, len(inner_ip_packet), teid) + inner_ip_packet
    header = struct.pack(
        "!BBHIHBB", 0x32, msg_type, len(inner_ip_packet) + 4, teid, seq & 0xFFFF, 0, 0
    )
    return header + inner_ip_packet


def ip_in_ip(
    outer_src: Address, outer_dst: Address, inner_packet: bytes, *, ttl: int = 64, ident: int = 0
) -> bytes:
    """Encapsulate an IP packet in another: protocol 4 for IPv4 inside, 41 for IPv6 inside.

    The outer family follows the outer addresses, so 4in4, 6in4, 4in6 and 6in6 all work.
    """
    proto = IPPROTO_IPIP if ip_version(inner_packet) == 4 else IPPROTO_IPV6
    return ip(outer_src, outer_dst, proto, inner_packet, ttl=ttl, ident=ident)


# --------------------------------------------------------------------------------------------
# Link framers and tunnel encapsulators for conversations
# --------------------------------------------------------------------------------------------

Framer = Callable[[bytes, bool], bytes]
"""Turns an IP packet into a link-layer frame; the bool says it travels client -> server."""
Encap = Callable[[bytes, bool], bytes]
"""Turns an IP packet into another IP packet (a tunnel); the bool says client -> server."""


@dataclass
class EthernetLink:
    """Ethernet framing, optionally with VLAN tags, then PPPoE or an MPLS stack before IP.

    The client's frames go ``client_mac -> server_mac`` and replies the other way; for a
    capture at a gateway, ``server_mac`` is simply the router's MAC.
    """

    client_mac: MacAddress = "00:00:5e:00:53:01"
    server_mac: MacAddress = "00:00:5e:00:53:fe"
    vlans: Sequence[VlanSpec] = ()
    mpls_labels: Sequence[int] = ()
    pppoe_session_id: int | None = None
    pad: bool = False
    linktype: ClassVar[int] = LINKTYPE_ETHERNET

    def __call__(self, packet: bytes, from_client: bool) -> bytes:
        src, dst = (
            (self.client_mac, self.server_mac)
            if from_client
            else (self.server_mac, self.client_mac)
        )
        ethertype, body = ethertype_of(packet), packet
        if self.pppoe_session_id is not None:
            ppp_proto = PPP_IP if ethertype == ETH_P_IP else PPP_IPV6
            ethertype, body = (
                ETH_P_PPPOE_SESS,
                pppoe_session(self.pppoe_session_id, ppp_proto, body),
            )
        elif self.mpls_labels:
            ethertype, body = ETH_P_MPLS_UC, mpls(self.mpls_labels, body)
        return ethernet(src, dst, ethertype, body, vlans=self.vlans, pad=self.pad)


@dataclass
class RawLink:
    """No link header (LINKTYPE_RAW): the frame is the IP packet itself."""

    linktype: ClassVar[int] = LINKTYPE_RAW

    def __call__(self, packet: bytes, from_client: bool) -> bytes:
        return packet


@dataclass
class SllLink:
    """Linux cooked capture v1; the client's packets are 'outgoing', the server's 'to us'."""

    client_mac: MacAddress = "00:00:5e:00:53:01"
    server_mac: MacAddress = "00:00:5e:00:53:fe"
    linktype: ClassVar[int] = LINKTYPE_LINUX_SLL

    def __call__(self, packet: bytes, from_client: bool) -> bytes:
        pkttype = PACKET_OUTGOING if from_client else PACKET_HOST
        addr = mac_bytes(self.client_mac if from_client else self.server_mac)
        return linux_sll(ethertype_of(packet), packet, pkttype=pkttype, addr=addr)


@dataclass
class Sll2Link:
    """Linux cooked capture v2 (adds the interface index)."""

    client_mac: MacAddress = "00:00:5e:00:53:01"
    server_mac: MacAddress = "00:00:5e:00:53:fe"
    ifindex: int = 2
    linktype: ClassVar[int] = LINKTYPE_LINUX_SLL2

    def __call__(self, packet: bytes, from_client: bool) -> bytes:
        pkttype = PACKET_OUTGOING if from_client else PACKET_HOST
        addr = mac_bytes(self.client_mac if from_client else self.server_mac)
        return linux_sll2(
            ethertype_of(packet), packet, ifindex=self.ifindex, pkttype=pkttype, addr=addr
        )


@dataclass
class NullLink:
    """BSD loopback (LINKTYPE_NULL, little-endian family); pick the OS's AF_INET6 value."""

    af_inet6: int = AF_INET6_BSD
    linktype: ClassVar[int] = LINKTYPE_NULL

    def __call__(self, packet: bytes, from_client: bool) -> bytes:
        return bsd_null(AF_INET if ip_version(packet) == 4 else self.af_inet6, packet)


@dataclass
class LoopLink:
    """OpenBSD loopback (LINKTYPE_LOOP, big-endian family)."""

    af_inet6: int = AF_INET6_BSD
    linktype: ClassVar[int] = LINKTYPE_LOOP

    def __call__(self, packet: bytes, from_client: bool) -> bytes:
        return loopback(AF_INET if ip_version(packet) == 4 else self.af_inet6, packet)


class _OuterIp:
    """Shared outer-header bookkeeping for tunnels: endpoints per direction and IPv4 ids."""

    def __init__(self, client_end: Address, server_end: Address, ttl: int, ident: int) -> None:
        self.client_end = ip_bytes(client_end)
        self.server_end = ip_bytes(server_end)
        if len(self.client_end) != len(self.server_end):
            raise ValueError("tunnel endpoints are of different families")
        self.ttl = ttl
        self._ident = ident

    def endpoints(self, from_client: bool) -> tuple[bytes, bytes]:
        return (
            (self.client_end, self.server_end)
            if from_client
            else (self.server_end, self.client_end)
        )

    def outer(self, proto: int, payload: bytes, from_client: bool) -> bytes:
        src, dst = self.endpoints(from_client)
        self._ident = (self._ident + 1) & 0xFFFF
        return ip(src, dst, proto, payload, ttl=self.ttl, ident=self._ident)


class GreTunnel(_OuterIp):
    """GRE between two tunnel endpoints (IPv4 or IPv6 outside, either family inside)."""

    def __init__(
        self,
        client_end: Address,
        server_end: Address,
        *,
        key: int | None = None,
        checksum: bool = False,
        ttl: int = 64,
        ident: int = 0x2000,
    ) -> None:
        super().__init__(client_end, server_end, ttl, ident)
        self.key = key
        self.checksum = checksum

    def __call__(self, packet: bytes, from_client: bool) -> bytes:
        body = gre(ethertype_of(packet), packet, key=self.key, checksum=self.checksum)
        return self.outer(IPPROTO_GRE, body, from_client)


class IpIpTunnel(_OuterIp):
    """IP-in-IP (protocol 4 / 41 chosen by the inner packet's family)."""

    def __init__(
        self, client_end: Address, server_end: Address, *, ttl: int = 64, ident: int = 0x3000
    ) -> None:
        super().__init__(client_end, server_end, ttl, ident)

    def __call__(self, packet: bytes, from_client: bool) -> bytes:
        proto = IPPROTO_IPIP if ip_version(packet) == 4 else IPPROTO_IPV6
        return self.outer(proto, packet, from_client)


class GtpuTunnel(_OuterIp):
    """GTP-U between a radio node (client side, e.g. eNodeB) and a gateway (e.g. UPF).

    Each direction has its own TEID, chosen by the receiving end, as on a real S1-U/N3
    interface: uplink packets carry ``teid_up``, downlink ones ``teid_down``.
    """

    def __init__(
        self,
        client_end: Address,
        server_end: Address,
        *,
        teid_up: int,
        teid_down: int,
        ttl: int = 64,
        ident: int = 0x4000,
    ) -> None:
        super().__init__(client_end, server_end, ttl, ident)
        self.teid_up = teid_up
        self.teid_down = teid_down

    def __call__(self, packet: bytes, from_client: bool) -> bytes:
        src, dst = self.endpoints(from_client)
        teid = self.teid_up if from_client else self.teid_down
        body = udp(GTPU_PORT, GTPU_PORT, gtpu(teid, packet), src_ip=src, dst_ip=dst)
        return self.outer(IPPROTO_UDP, body, from_client)


class VxlanTunnel(_OuterIp):
    """VXLAN between two VTEPs; the inner packet gets its own Ethernet header first."""

    def __init__(
        self,
        client_end: Address,
        server_end: Address,
        *,
        vni: int,
        inner_client_mac: MacAddress = "00:00:5e:00:53:11",
        inner_server_mac: MacAddress = "00:00:5e:00:53:12",
        sport: int = 49152,
        ttl: int = 64,
        ident: int = 0x5000,
    ) -> None:
        super().__init__(client_end, server_end, ttl, ident)
        self.vni = vni
        self.inner = EthernetLink(inner_client_mac, inner_server_mac)
        self.sport = sport

    def __call__(self, packet: bytes, from_client: bool) -> bytes:
        src, dst = self.endpoints(from_client)
        body = udp(
            self.sport,
            VXLAN_PORT,
            vxlan(self.vni, self.inner(packet, from_client)),
            src_ip=src,
            dst_ip=dst,
        )
        return self.outer(IPPROTO_UDP, body, from_client)


# --------------------------------------------------------------------------------------------
# Conversations
# --------------------------------------------------------------------------------------------


class ConversationOptions(TypedDict, total=False):
    """Keyword arguments every conversation helper accepts (see :class:`Conversation`)."""

    start: float
    rtt: float
    link: Framer | None
    tunnel: Encap | Sequence[Encap]
    rng: random.Random | None
    client_ttl: int
    server_ttl: int


def _stable_seed(*parts: object) -> int:
    """A seed that is the same in every process (``hash()`` of str is salted per process)."""
    return zlib.crc32(repr(parts).encode())


def _seed_from_ports(
    options: ConversationOptions, client: Address, server: Address, sport: int, dport: int
) -> None:
    """Default RNG per 5-tuple, so two sessions differing only in ports get different ISNs."""
    if options.get("rng") is None:
        start = options.get("start")
        options["rng"] = random.Random(_stable_seed(client, server, sport, dport, start))


class Conversation:
    """Plumbing shared by the exchange helpers: endpoints, IP header fields, tunnels, link
    framing, and a clock.

    The clock models a tap next to the client: a server reaction to a client packet shows up
    one ``rtt`` later, a client reaction to a server packet almost at once, and back-to-back
    packets from one side a few tens of microseconds apart. That is what makes RTT and
    handshake timing in lawtap's flow records come out plausible. Timestamps are rounded to
    microseconds so pcap round trips are exact.

    Frames are kept in emission order and returned sorted by time by :attr:`frames`.
    """

    def __init__(
        self,
        client: Address,
        server: Address,
        *,
        start: float = 1_700_000_000.0,
        rtt: float = 0.02,
        link: Framer | None = None,
        tunnel: Encap | Sequence[Encap] = (),
        rng: random.Random | None = None,
        client_ttl: int = 64,
        server_ttl: int = 52,
    ) -> None:
        self.client = ip_bytes(client)
        self.server = ip_bytes(server)
        if len(self.client) != len(self.server):
            raise ValueError("client and server addresses are of different families")
        self.version = 4 if len(self.client) == 4 else 6
        self.rtt = rtt
        self.link: Framer = link if link is not None else EthernetLink()
        self.tunnels: list[Encap] = [tunnel] if callable(tunnel) else list(tunnel)
        self.rng = rng if rng is not None else random.Random(_stable_seed(client, server, start))
        self.client_ttl = client_ttl
        self.server_ttl = server_ttl
        self.now = start
        self._started = False
        self._last_from_client: bool | None = None
        self._ident = {True: self.rng.randrange(0x10000), False: self.rng.randrange(0x10000)}
        self._flow_label = {
            True: self.rng.randrange(1, 0x100000),
            False: self.rng.randrange(1, 0x100000),
        }
        self._frames: list[tuple[float, int, bytes]] = []

    # -- clock -----------------------------------------------------------------------------

    def wait(self, seconds: float) -> Self:
        """Let time pass (think time, idle gaps) before the next packet."""
        self.now += seconds
        return self

    def wait_until(self, ts: float) -> Self:
        """Move the clock forward to ``ts`` (no-op if already later); for keeping two
        conversations of one application (FTP control and data, SIP and RTP) in step."""
        self.now = max(self.now, ts)
        return self

    def _gap(self) -> float:
        return self.rng.uniform(0.00002, 0.00008)

    def _reaction(self, by_client: bool) -> float:
        """Delay before side ``by_client`` reacts to a packet from the other side, at the tap."""
        if by_client:
            return self.rng.uniform(0.00005, 0.0004)
        return self.rtt * self.rng.uniform(0.92, 1.15)

    def _next_ts(self, from_client: bool, think: float = 0.0) -> float:
        """Timestamp for the next packet sent by one side, after the previous one."""
        if not self._started:
            self._started = True
            ts = self.now + think
        elif self._last_from_client is None or self._last_from_client == from_client:
            ts = self.now + self._gap() + think
        else:
            ts = self.now + self._reaction(from_client) + think
        return round(ts, 6)

    # -- packet assembly -------------------------------------------------------------------

    def endpoints(self, from_client: bool) -> tuple[bytes, bytes]:
        """(source, destination) addresses for a packet in the given direction."""
        return (self.client, self.server) if from_client else (self.server, self.client)

    def ip_packet(
        self, proto: int, payload: bytes, from_client: bool, *, df: bool = False
    ) -> bytes:
        """An IP packet in the given direction with per-side TTL, IPv4 id, and flow label."""
        src, dst = self.endpoints(from_client)
        ttl = self.client_ttl if from_client else self.server_ttl
        ident = self._ident[from_client] = (self._ident[from_client] + 1) & 0xFFFF
        return ip(
            src,
            dst,
            proto,
            payload,
            ttl=ttl,
            ident=ident,
            df=df,
            flow_label=self._flow_label[from_client],
        )

    def frame(self, packet: bytes, from_client: bool) -> bytes:
        """Apply the tunnels (innermost first) and the link framing to an IP packet."""
        for encap in self.tunnels:
            packet = encap(packet, from_client)
        return self.link(packet, from_client)

    def emit(self, packet: bytes, from_client: bool, ts: float) -> None:
        """Record an IP packet as captured at ``ts``; the clock never moves backwards."""
        self._frames.append((ts, len(self._frames), self.frame(packet, from_client)))
        if ts >= self.now:
            self.now = ts
            self._last_from_client = from_client
        self._started = True

    @property
    def frames(self) -> list[Frame]:
        """All frames so far, in time order (emission order breaks ties)."""
        return [(ts, data) for ts, _, data in sorted(self._frames, key=lambda f: (f[0], f[1]))]

    def __len__(self) -> int:
        return len(self._frames)


class TcpSession(Conversation):
    """A realistic TCP connection, built step by step::

        s = TcpSession("10.0.0.1", "192.0.2.1", 40000, 80)
        s.handshake().client_send(request).server_send(response).close()
        frames = s.frames

    Sequence and acknowledgement numbers are tracked for you; the receiver acknowledges every
    second segment (delayed ACK) and at the end of each burst. Features for exercising a flow
    engine: ``midstream=True`` (capture starts after the handshake), ``retransmit=`` and
    ``reorder=`` on :meth:`send`, :meth:`reset`, :meth:`refused`, :meth:`syn_timeout`.
    SYNs carry MSS, SACK-permitted and window-scale options; later segments carry none.
    """

    def __init__(
        self,
        client: Address,
        server: Address,
        sport: int,
        dport: int,
        *,
        client_isn: int | None = None,
        server_isn: int | None = None,
        mss: int | None = None,
        window: int = 64240,
        wscale: int = 7,
        midstream: bool = False,
        **conversation: Unpack[ConversationOptions],
    ) -> None:
        _seed_from_ports(conversation, client, server, sport, dport)
        super().__init__(client, server, **conversation)
        self.sport = sport
        self.dport = dport
        self.client_isn = self.rng.randrange(1 << 32) if client_isn is None else client_isn
        self.server_isn = self.rng.randrange(1 << 32) if server_isn is None else server_isn
        self.mss = mss if mss is not None else (1460 if self.version == 4 else 1440)
        self.window = window
        self.wscale = wscale
        self.established = midstream
        self._seq = {
            True: (self.client_isn + 1) & 0xFFFFFFFF,
            False: (self.server_isn + 1) & 0xFFFFFFFF,
        }

    # -- low level -------------------------------------------------------------------------

    def segment(
        self,
        from_client: bool,
        flags: int | str,
        payload: bytes = b"",
        *,
        ts: float,
        seq: int | None = None,
        ack: int | None = None,
        options: bytes = b"",
        window: int | None = None,
    ) -> None:
        """Emit one segment; seq/ack default to the current state (state is not advanced)."""
        flag_bits = tcp_flags(flags)
        src, dst = self.endpoints(from_client)
        seq = self._seq[from_client] if seq is None else seq
        if ack is None:
            ack = self._seq[not from_client] if flag_bits & TCP_ACK else 0
        if window is None:
            window = self.window if flag_bits & TCP_SYN else min(0xFFFF, self.window >> self.wscale)
        segment = tcp(
            *((self.sport, self.dport) if from_client else (self.dport, self.sport)),
            seq,
            ack,
            flag_bits,
            payload,
            window=window,
            options=options,
            src_ip=src,
            dst_ip=dst,
        )
        self.emit(self.ip_packet(IPPROTO_TCP, segment, from_client, df=True), from_client, ts)

    def _syn_options(self) -> bytes:
        return tcp_options(mss=self.mss, sack_permitted=True, wscale=self.wscale)

    # -- connection life cycle -------------------------------------------------------------

    def handshake(self) -> Self:
        """SYN, SYN-ACK, ACK."""
        self.segment(
            True, "S", seq=self.client_isn, options=self._syn_options(), ts=self._next_ts(True)
        )
        self.segment(
            False,
            "SA",
            seq=self.server_isn,
            ack=self._seq[True],
            options=self._syn_options(),
            ts=self._next_ts(False),
        )
        self.segment(True, "A", ts=self._next_ts(True))  # the client reacts to the SYN-ACK
        self.established = True
        return self

    def refused(self) -> Self:
        """SYN answered by RST-ACK: nothing listens on the port."""
        self.segment(
            True, "S", seq=self.client_isn, options=self._syn_options(), ts=self._next_ts(True)
        )
        self.segment(False, "RA", seq=0, ack=self._seq[True], window=0, ts=self._next_ts(False))
        return self

    def syn_timeout(self, retries: int = 2, rto: float = 1.0) -> Self:
        """A SYN that is never answered, retransmitted with exponential back-off."""
        ts = self._next_ts(True)
        for attempt in range(retries + 1):
            self.segment(True, "S", seq=self.client_isn, options=self._syn_options(), ts=ts)
            ts = round(ts + rto * (2**attempt), 6)
        return self

    def send(
        self,
        data: bytes,
        from_client: bool = True,
        *,
        think: float = 0.0,
        ack: bool = True,
        push: bool = True,
        retransmit: bool = False,
        reorder: bool = False,
    ) -> Self:
        """Send application data from one side, cut into MSS-sized segments.

        ``ack``: the receiver sends pure ACKs (every second segment and at the end); turn off
        when the receiver answers with data at once (the ACK then rides on the answer).
        ``retransmit``: the first segment is lost beyond the tap, the receiver sends duplicate
        ACKs for the rest, and the sender retransmits it after a timeout.
        ``reorder``: the first two segments reach the tap swapped.
        """
        if not self.established:
            raise ValueError("send() before handshake(); use midstream=True for a mid-stream start")
        if not data:
            return self
        sender, receiver = from_client, not from_client
        base = self._seq[sender]
        pieces = [(base + off, data[off : off + self.mss]) for off in range(0, len(data), self.mss)]
        order = list(range(len(pieces)))
        if reorder:
            if len(pieces) < 2:
                raise ValueError("reorder needs at least two segments")
            order[0], order[1] = 1, 0
        # Sender emits the burst.
        sent_ts: list[float] = []
        ts = self._next_ts(sender, think)
        for n, idx in enumerate(order):
            if n:
                ts = round(ts + self._gap(), 6)
            seq, chunk = pieces[idx]
            flags = TCP_ACK | (TCP_PSH if push and idx == len(pieces) - 1 else 0)
            self.segment(sender, flags, chunk, seq=seq, ts=ts)
            sent_ts.append(ts)
        self._seq[sender] = (base + len(data)) & 0xFFFFFFFF
        # What reaches the receiver: (arrival-order index into pieces, time seen at the tap).
        arrivals = [(idx, sent_ts[n]) for n, idx in enumerate(order)]
        lost = order[0] if retransmit else None
        if lost is not None:
            arrivals = [a for a in arrivals if a[0] != lost]
            rto = max(0.2, 3 * self.rtt)
            rtx_ts = round(sent_ts[-1] + rto, 6)
            seq, chunk = pieces[lost]
            flags = TCP_ACK | (TCP_PSH if push and lost == len(pieces) - 1 else 0)
            self.segment(sender, flags, chunk, seq=seq, ts=rtx_ts)
            arrivals.append((lost, rtx_ts))
        if ack or retransmit or reorder:
            self._ack_arrivals(receiver, base, pieces, arrivals)
        return self

    def _ack_arrivals(
        self,
        receiver: bool,
        base: int,
        pieces: list[tuple[int, bytes]],
        arrivals: list[tuple[int, float]],
    ) -> None:
        """Receiver ACKs as RFC 5681 §4.2 has them: cumulative, for every second in-order
        segment, and at once for a segment that is out of order or fills a hole."""
        rcv_next = base
        held: dict[int, int] = {}  # out-of-order seq -> end
        unacked = 0
        last_ack_ts = 0.0
        for n, (idx, ts) in enumerate(arrivals):
            seq, chunk = pieces[idx]
            end = seq + len(chunk)
            out_of_order = seq > rcv_next
            fills_hole = bool(held) and not out_of_order
            if out_of_order:
                held[seq] = end
            else:
                rcv_next = max(rcv_next, end)
                while rcv_next in held:
                    rcv_next = held.pop(rcv_next)
            unacked += 1
            if out_of_order or fills_hole or unacked >= 2 or n == len(arrivals) - 1:
                # ACKs leave in order even though each reaction delay is jittered.
                ack_ts = round(max(ts + self._reaction(receiver), last_ack_ts + self._gap()), 6)
                self.segment(receiver, "A", ack=rcv_next & 0xFFFFFFFF, ts=ack_ts)
                last_ack_ts = ack_ts
                unacked = 0

    def client_send(
        self,
        data: bytes,
        *,
        think: float = 0.0,
        ack: bool = True,
        push: bool = True,
        retransmit: bool = False,
        reorder: bool = False,
    ) -> Self:
        """:meth:`send` from the client."""
        return self.send(
            data, True, think=think, ack=ack, push=push, retransmit=retransmit, reorder=reorder
        )

    def server_send(
        self,
        data: bytes,
        *,
        think: float = 0.0,
        ack: bool = True,
        push: bool = True,
        retransmit: bool = False,
        reorder: bool = False,
    ) -> Self:
        """:meth:`send` from the server."""
        return self.send(
            data, False, think=think, ack=ack, push=push, retransmit=retransmit, reorder=reorder
        )

    def close(self, from_client: bool = True) -> Self:
        """Orderly release: FIN-ACK, FIN-ACK back, final ACK."""
        closer, other = from_client, not from_client
        self.segment(closer, "FA", ts=self._next_ts(closer))
        self._seq[closer] = (self._seq[closer] + 1) & 0xFFFFFFFF
        self.segment(other, "FA", ts=self._next_ts(other))
        self._seq[other] = (self._seq[other] + 1) & 0xFFFFFFFF
        self.segment(closer, "A", ts=self._next_ts(closer))
        self.established = False
        return self

    def reset(self, from_client: bool = True) -> Self:
        """Abort the connection with RST-ACK from one side."""
        self.segment(from_client, "RA", ts=self._next_ts(from_client), window=0)
        self.established = False
        return self


class UdpExchange(Conversation):
    """Datagrams between a client and a server port (DNS, SIP, RTP, ...)::

        u = UdpExchange("10.0.0.1", "192.0.2.53", 53124, 53)
        u.request(query).response(answer)

    ``fragment_mtu`` on :meth:`send` fragments the IP packet (before any tunnel), which is the
    easy way to get a fragmented datagram into a test capture.
    """

    def __init__(
        self,
        client: Address,
        server: Address,
        sport: int,
        dport: int,
        **conversation: Unpack[ConversationOptions],
    ) -> None:
        _seed_from_ports(conversation, client, server, sport, dport)
        super().__init__(client, server, **conversation)
        self.sport = sport
        self.dport = dport

    def send(
        self,
        data: bytes,
        from_client: bool = True,
        *,
        think: float = 0.0,
        fragment_mtu: int | None = None,
        at: float | None = None,
    ) -> Self:
        """One datagram from one side (fragmented to ``fragment_mtu`` if given).

        ``at`` pins the timestamp instead of using the reaction-time clock, for paced
        streams such as RTP.
        """
        src, dst = self.endpoints(from_client)
        ports = (self.sport, self.dport) if from_client else (self.dport, self.sport)
        packet = self.ip_packet(IPPROTO_UDP, udp(*ports, data, src_ip=src, dst_ip=dst), from_client)
        ts = self._next_ts(from_client, think) if at is None else round(at, 6)
        if fragment_mtu is None:
            self.emit(packet, from_client, ts)
            return self
        if self.version == 4:
            pieces = ipv4_fragments(packet, fragment_mtu)
        else:
            pieces = ipv6_fragments(packet, fragment_mtu, ident=self.rng.randrange(1 << 32))
        for n, piece in enumerate(pieces):
            if n:
                ts = round(ts + self._gap(), 6)
            self.emit(piece, from_client, ts)
        return self

    def request(self, data: bytes, *, think: float = 0.0, fragment_mtu: int | None = None) -> Self:
        """:meth:`send` from the client."""
        return self.send(data, True, think=think, fragment_mtu=fragment_mtu)

    def response(self, data: bytes, *, think: float = 0.0, fragment_mtu: int | None = None) -> Self:
        """:meth:`send` from the server."""
        return self.send(data, False, think=think, fragment_mtu=fragment_mtu)


class PingExchange(Conversation):
    """ICMP / ICMPv6 echo request-reply pairs, ``ping``-style (same id, rising sequence)."""

    def __init__(
        self,
        client: Address,
        server: Address,
        *,
        ident: int | None = None,
        **conversation: Unpack[ConversationOptions],
    ) -> None:
        super().__init__(client, server, **conversation)
        self.ident = self.rng.randrange(1, 0x10000) if ident is None else ident
        self.seq = 0

    def ping(
        self, count: int = 4, *, interval: float = 1.0, size: int = 56, lost: Iterable[int] = ()
    ) -> Self:
        """``count`` echoes ``interval`` apart with ``size`` payload bytes; requests whose index
        is in ``lost`` get no reply."""
        lost_set = set(lost)
        payload = bytes((0x10 + i) & 0xFF for i in range(size))
        for n in range(count):
            if n:
                self.wait(interval)
                self._last_from_client = True  # the next request is not a reaction to a reply
            self.seq += 1
            self._echo(True, payload)
            if n not in lost_set:
                self._echo(False, payload)
        return self

    def _echo(self, from_client: bool, payload: bytes) -> None:
        src, dst = self.endpoints(from_client)
        if self.version == 4:
            message = icmp_echo(self.ident, self.seq, payload, reply=not from_client)
            proto = IPPROTO_ICMP
        else:
            message = icmpv6_echo(
                self.ident, self.seq, payload, src_ip=src, dst_ip=dst, reply=not from_client
            )
            proto = IPPROTO_ICMPV6
        self.emit(
            self.ip_packet(proto, message, from_client), from_client, self._next_ts(from_client)
        )


def merge_frames(*streams: Iterable[Frame]) -> list[Frame]:
    """Interleave several time-ordered frame lists into one, in time order.

    Ties keep the order of the arguments, so merging is deterministic.
    """
    return list(_heap_merge(*streams, key=lambda f: f[0]))


# --------------------------------------------------------------------------------------------
# Capture writers
# --------------------------------------------------------------------------------------------


def _ticks(ts: float, per_second: int) -> int:
    """Timestamp in units of 1/per_second, without the precision loss of ``ts * 1e9``.

    A float near 1.7e9 has ~0.24 us resolution; multiplying it by 1e9 first would also
    round to 256 ns steps. Splitting off the whole seconds (exact) avoids the latter.
    """
    whole = math.floor(ts)
    return whole * per_second + round((ts - whole) * per_second)


def write_pcap(
    path: str | Path,
    frames: Iterable[Frame],
    linktype: int = LINKTYPE_ETHERNET,
    nanosecond: bool = False,
    *,
    snaplen: int = 262144,
) -> int:
    """Write a classic little-endian pcap file; returns the number of records.

    Frames longer than ``snaplen`` are truncated, keeping their original length, which is how
    truncated captures look.
    """
    per_second = 1_000_000_000 if nanosecond else 1_000_000
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    count = 0
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        for ts, data in frames:
            sec, frac = divmod(_ticks(ts, per_second), per_second)
            captured = data[:snaplen]
            out.write(struct.pack("<IIII", sec, frac, len(captured), len(data)))
            out.write(captured)
            count += 1
    return count


def _pcapng_block(block_type: int, body: bytes) -> bytes:
    body = body + bytes(-len(body) % 4)
    length = len(body) + 12
    return struct.pack("<II", block_type, length) + body + struct.pack("<I", length)


def _pcapng_option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + bytes(-len(value) % 4)


def write_pcapng(
    path: str | Path,
    frames_with_interface: Iterable[tuple[float, bytes, int]],
    interfaces: Sequence[tuple[int, int]] = ((LINKTYPE_ETHERNET, 6),),
    *,
    snaplen: int = 262144,
) -> int:
    """Write a little-endian pcapng file with one section; returns the number of packets.

    ``frames_with_interface`` are ``(ts, frame, interface_index)`` (the first two items as in
    :data:`Frame`, so ``[(t, f, 0) for t, f in frames]`` works). ``interfaces`` are
    ``(linktype, tsresol)`` pairs where ``tsresol`` is the raw ``if_tsresol`` option value:
    6 = microseconds (the default, then the option is omitted), 9 = nanoseconds, and with the
    high bit set a power of two (0x80 | n for 2**-n s). Enhanced Packet Blocks are used.
    """
    units: list[int] = []
    count = 0
    with open(path, "wb") as out:
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _pcapng_option(0, b"")
        out.write(_pcapng_block(0x0A0D0D0A, shb))
        for linktype, tsresol in interfaces:
            options = b""
            if tsresol != 6:
                options += _pcapng_option(9, bytes([tsresol]))
            options += _pcapng_option(0, b"")
            out.write(
                _pcapng_block(0x00000001, struct.pack("<HHI", linktype, 0, snaplen) + options)
            )
            units.append(2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10**tsresol)
        for ts, data, iface in frames_with_interface:
            if not 0 <= iface < len(units):
                raise ValueError(f"frame refers to interface {iface}, only {len(units)} defined")
            ticks = _ticks(ts, units[iface])
            captured = data[:snaplen]
            epb = (
                struct.pack(
                    "<IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(captured), len(data)
                )
                + captured
            )
            out.write(_pcapng_block(0x00000006, epb))
            count += 1
    return count
