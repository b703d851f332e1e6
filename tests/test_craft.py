"""Tests for lawtap.craft (packet crafting) and lawtap.generate (the demo capture).

The crafting library is the ground truth other tests build on, so it is checked against
independent references here: a textbook one's-complement sum written out word by word,
pseudo-headers assembled by hand, a reassembler written from the RFCs, published CRC-32C
vectors, and (when installed) Wireshark's own dissectors.
"""

from __future__ import annotations

import hashlib
import ipaddress
import random
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lawtap import craft
from lawtap.craft import (
    ETH_P_8021AD,
    ETH_P_8021Q,
    ETH_P_IP,
    ETH_P_IPV6,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    DestOptions,
    EthernetLink,
    Fragment,
    GreTunnel,
    GtpuTunnel,
    HopByHop,
    IpIpTunnel,
    LoopLink,
    NullLink,
    PingExchange,
    RawLink,
    Routing,
    Sll2Link,
    SllLink,
    TcpSession,
    UdpExchange,
    VxlanTunnel,
)
from lawtap.generate import GUARANTEED, generate_capture, generate_frames

C4, S4 = "10.0.0.1", "192.0.2.1"
C6, S6 = "2001:db8::1", "2001:db8::2"

TSHARK = shutil.which("tshark")
needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")


# ---------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------


def ref_ones_sum(data: bytes) -> int:
    """Textbook RFC 1071 sum: big-endian 16-bit words, end-around carry after every add."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ref_checksum(data: bytes) -> int:
    return ~ref_ones_sum(data) & 0xFFFF


def verifies(data: bytes) -> bool:
    """A region carrying its own correct checksum sums to 0xFFFF (RFC 1071 §1)."""
    return ref_ones_sum(data) == 0xFFFF


def ref_pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version == 4:
        return s.packed + d.packed + bytes([0, proto]) + length.to_bytes(2, "big")
    return s.packed + d.packed + length.to_bytes(4, "big") + bytes([0, 0, 0, proto])


def parse_ip(packet: bytes) -> tuple[int, int, bytes, bytes, bytes]:
    """(version, proto, src, dst, l4) for an unfragmented packet without IPv6 extensions."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        total = int.from_bytes(packet[2:4], "big")
        return 4, packet[9], packet[12:16], packet[16:20], packet[ihl:total]
    plen = int.from_bytes(packet[4:6], "big")
    return 6, packet[6], packet[8:24], packet[24:40], packet[40 : 40 + plen]


def reassemble_ipv4(fragments: list[bytes]) -> bytes:
    """RFC 791 reassembly: header of the offset-0 fragment, payload pieces by offset."""
    pieces: dict[int, bytes] = {}
    first_header = b""
    last_end = None
    for frag in fragments:
        ihl = (frag[0] & 15) * 4
        total = int.from_bytes(frag[2:4], "big")
        ff = int.from_bytes(frag[6:8], "big")
        offset = (ff & 0x1FFF) * 8
        if offset == 0:
            first_header = frag[:ihl]
        pieces[offset] = frag[ihl:total]
        if not ff & 0x2000:
            last_end = offset + total - ihl
    payload = b""
    for offset in sorted(pieces):
        assert offset == len(payload), "gap or overlap in fragments"
        payload += pieces[offset]
    assert last_end == len(payload)
    header = bytearray(first_header)
    struct.pack_into("!H", header, 2, len(header) + len(payload))
    struct.pack_into("!H", header, 6, int.from_bytes(header[6:8], "big") & 0x4000)
    struct.pack_into("!H", header, 10, 0)
    struct.pack_into("!H", header, 10, ref_checksum(bytes(header)))
    return bytes(header) + payload


def reassemble_ipv6(fragments: list[bytes]) -> bytes:
    """RFC 8200 §4.5 reassembly: unfragmentable part of the first fragment, with the header
    that pointed at the fragment header pointing at what the fragment header announced."""
    chunks: dict[int, bytes] = {}
    unfrag = b""
    nh_pos = 0
    next_header = 0
    for frag in fragments:
        # walk to the fragment header
        nh, pos, prev = frag[6], 40, 6
        while nh != 44:
            prev = pos
            nh, pos = frag[pos], pos + (frag[pos + 1] + 1) * 8
        offset_field = int.from_bytes(frag[pos + 2 : pos + 4], "big")
        offset = offset_field & 0xFFF8
        end = 40 + int.from_bytes(frag[4:6], "big")
        chunks[offset] = frag[pos + 8 : end]
        if offset == 0:
            unfrag, nh_pos, next_header = frag[:pos], prev, frag[pos]
    data = b""
    for offset in sorted(chunks):
        assert offset == len(data)
        data += chunks[offset]
    header = bytearray(unfrag)
    header[nh_pos] = next_header
    struct.pack_into("!H", header, 4, len(header) - 40 + len(data))
    return bytes(header) + data


def strip_link(frame: bytes) -> bytes:
    """IP packet inside an untagged Ethernet frame."""
    assert int.from_bytes(frame[12:14], "big") in (ETH_P_IP, ETH_P_IPV6)
    return frame[14:]


# ---------------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------------


@given(st.binary(max_size=3000))
@settings(deadline=None)
def test_internet_checksum_matches_reference(data: bytes) -> None:
    assert craft.internet_checksum(data) == ref_checksum(data)


def test_internet_checksum_rfc1071_example() -> None:
    # RFC 1071 §3 example: words 0001 f203 f4f5 f6f7 sum to ddf2 -> checksum 220d
    assert craft.internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D


def test_ipv4_header_checksum() -> None:
    packet = craft.ipv4(
        C4, S4, IPPROTO_UDP, b"x" * 33, ttl=17, ident=0x1234, options=b"\x94\x04\x00\x00"
    )
    assert packet[0] == 0x46 and len(packet) == 24 + 33
    assert verifies(packet[:24])
    bad = craft.ipv4(C4, S4, IPPROTO_UDP, b"", checksum=0xBEEF)
    assert bad[10:12] == b"\xbe\xef"


@pytest.mark.parametrize(("src", "dst"), [(C4, S4), (C6, S6)])
@given(
    payload=st.binary(max_size=1500),
    options=st.sampled_from([b"", craft.tcp_options(mss=1460, wscale=7)]),
)
@settings(max_examples=60, deadline=None)
def test_tcp_checksum(src: str, dst: str, payload: bytes, options: bytes) -> None:
    seg = craft.tcp(1234, 80, 0xFFFFFFF0, 7, "PA", payload, options=options, src_ip=src, dst_ip=dst)
    assert verifies(ref_pseudo(src, dst, IPPROTO_TCP, len(seg)) + seg)
    assert seg[12] >> 4 == (20 + len(options)) // 4
    assert seg[13] == craft.TCP_PSH | craft.TCP_ACK


@pytest.mark.parametrize(("src", "dst"), [(C4, S4), (C6, S6)])
@given(payload=st.binary(max_size=1500))
@settings(max_examples=60, deadline=None)
def test_udp_checksum(src: str, dst: str, payload: bytes) -> None:
    dgram = craft.udp(5353, 53, payload, src_ip=src, dst_ip=dst)
    assert int.from_bytes(dgram[4:6], "big") == len(dgram)
    assert verifies(ref_pseudo(src, dst, IPPROTO_UDP, len(dgram)) + dgram)


def test_udp_zero_checksum_is_sent_as_ffff() -> None:
    # Pick the last payload word so the computed checksum is exactly 0.
    body = b"zero-sum" + b"\x00\x00"
    first = craft.udp(1, 2, body, src_ip=C4, dst_ip=S4)
    fixed = body[:-2] + first[6:8]
    dgram = craft.udp(1, 2, fixed, src_ip=C4, dst_ip=S4)
    assert dgram[6:8] == b"\xff\xff"
    assert verifies(ref_pseudo(C4, S4, IPPROTO_UDP, len(dgram)) + dgram)
    assert craft.udp(1, 2, b"abc")[6:8] == b"\x00\x00"  # no addresses: no checksum


def test_icmp_checksums() -> None:
    echo = craft.icmp_echo(0x4242, 7, b"ping payload")
    assert echo[0] == 8 and verifies(echo)
    assert craft.icmp_echo(1, 1, reply=True)[0] == 0
    echo6 = craft.icmpv6_echo(0x4242, 7, b"ping6", src_ip=C6, dst_ip=S6)
    assert echo6[0] == 128 and verifies(ref_pseudo(C6, S6, IPPROTO_ICMPV6, len(echo6)) + echo6)


def test_gre_checksum_and_flags() -> None:
    body = craft.gre(ETH_P_IP, b"inner", key=0xABCD, seq=5, checksum=True)
    assert body[:2] == b"\xb0\x00" and body[2:4] == b"\x08\x00"
    assert verifies(body)
    assert body[8:12] == (0xABCD).to_bytes(4, "big") and body[12:16] == (5).to_bytes(4, "big")
    assert craft.gre(ETH_P_IPV6, b"x") == b"\x00\x00\x86\xddx"


def test_crc32c_vectors() -> None:
    # RFC 3720 (iSCSI) appendix B.4 vectors and the common check value.
    assert craft.crc32c(b"123456789") == 0xE3069283
    assert craft.crc32c(bytes(32)) == 0x8A9136AA
    assert craft.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert craft.crc32c(bytes(range(32))) == 0x46DD794E


def test_sctp_checksum() -> None:
    packet = craft.sctp(3868, 3868, craft.sctp_data(1, 0, 0, 46, b"abc"), vtag=9)
    stored = struct.unpack("<I", packet[8:12])[0]
    assert stored == craft.crc32c(packet[:8] + bytes(4) + packet[12:])
    assert len(packet) % 4 == 0


# ---------------------------------------------------------------------------------------------
# Layer 2 and tunnels: exact bytes
# ---------------------------------------------------------------------------------------------


def test_ethernet_and_vlan_stack() -> None:
    frame = craft.ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", ETH_P_IP, b"P", vlans=[10, 20])
    assert frame[:6] == bytes.fromhex("020000000002") and frame[6:12] == bytes.fromhex(
        "020000000001"
    )
    assert frame[12:14] == ETH_P_8021AD.to_bytes(2, "big")
    assert frame[14:16] == (10).to_bytes(2, "big") and frame[16:18] == ETH_P_8021Q.to_bytes(
        2, "big"
    )
    assert (
        frame[18:20] == (20).to_bytes(2, "big")
        and frame[20:22] == b"\x08\x00"
        and frame[22:] == b"P"
    )
    single = craft.ethernet(
        b"\x00" * 6, b"\xff" * 6, ETH_P_IPV6, b"", vlans=[(ETH_P_8021Q, 7)], pad=True
    )
    assert single[12:14] == b"\x81\x00" and single[14:16] == b"\x00\x07" and len(single) == 60
    tagged = craft.vlan_tag(100, ETH_P_IP, b"", pcp=5, dei=True)
    assert tagged[:2] == ((5 << 13) | (1 << 12) | 100).to_bytes(2, "big")


def test_mpls_pppoe_cooked_and_loopback_headers() -> None:
    stack = craft.mpls([16, 1048575], b"IP", ttl=9)
    assert struct.unpack("!II", stack[:8]) == (16 << 12 | 9, 1048575 << 12 | 1 << 8 | 9)
    pppoe = craft.pppoe_session(0x1234, craft.PPP_IP, b"abcd")
    assert pppoe == b"\x11\x00\x12\x34\x00\x06\x00\x21abcd"
    sll = craft.linux_sll(ETH_P_IP, b"X", pkttype=craft.PACKET_OUTGOING, addr=b"\x01" * 6)
    assert (
        len(sll) == 17
        and sll[:2] == b"\x00\x04"
        and sll[4:6] == b"\x00\x06"
        and sll[14:16] == b"\x08\x00"
    )
    sll2 = craft.linux_sll2(ETH_P_IPV6, b"X", ifindex=3, addr=b"\x01" * 6)
    assert (
        len(sll2) == 21
        and sll2[:2] == b"\x86\xdd"
        and sll2[4:8] == b"\x00\x00\x00\x03"
        and sll2[11] == 6
    )
    assert craft.bsd_null(craft.AF_INET6_DARWIN, b"") == b"\x1e\x00\x00\x00"
    assert craft.loopback(craft.AF_INET, b"") == b"\x00\x00\x00\x02"


def test_tunnel_headers() -> None:
    inner = craft.ipv4(C4, S4, IPPROTO_UDP, craft.udp(1, 2, b"hi", src_ip=C4, dst_ip=S4))
    vx = craft.vxlan(0xABCDEF, b"frame")
    assert vx == b"\x08\x00\x00\x00\xab\xcd\xef\x00frame"
    g = craft.gtpu(0xDEADBEEF, inner)
    assert (
        g[:2] == b"\x30\xff"
        and int.from_bytes(g[2:4], "big") == len(inner)
        and g[4:8] == b"\xde\xad\xbe\xef"
    )
    g_seq = craft.gtpu(1, inner, seq=0x0102)
    assert (
        g_seq[0] == 0x32
        and int.from_bytes(g_seq[2:4], "big") == len(inner) + 4
        and g_seq[8:10] == b"\x01\x02"
    )
    assert craft.ip_in_ip("198.51.100.1", "198.51.100.2", inner)[9] == craft.IPPROTO_IPIP
    six = craft.ipv6(C6, S6, craft.IPPROTO_NONE, b"")
    assert craft.ip_in_ip("198.51.100.1", "198.51.100.2", six)[9] == craft.IPPROTO_IPV6
    assert craft.ip_in_ip("2001:db8:f::1", "2001:db8:f::2", inner)[6] == craft.IPPROTO_IPIP


def test_ipv6_extension_chain() -> None:
    exts: list[craft.ExtHeader] = [
        HopByHop(),
        Routing([S6], segments_left=0),
        DestOptions(b"\x1e\x01\x00"),
        Fragment(ident=5),
    ]
    packet = craft.ipv6(C6, S6, IPPROTO_UDP, b"data", ext_headers=exts, flow_label=0xABCDE)
    assert int.from_bytes(packet[:4], "big") & 0xFFFFF == 0xABCDE
    chain = [packet[6]]
    pos = 40
    while chain[-1] in (0, 43, 60, 44):
        nh = packet[pos]
        pos += 8 if chain[-1] == 44 else (packet[pos + 1] + 1) * 8
        assert (pos - 40) % 8 == 0
        chain.append(nh)
    assert chain == [0, 43, 60, 44, IPPROTO_UDP]
    assert packet[pos:] == b"data" and int.from_bytes(packet[4:6], "big") == len(packet) - 40


# ---------------------------------------------------------------------------------------------
# Fragmentation
# ---------------------------------------------------------------------------------------------


@given(
    size=st.integers(0, 5000),
    mtu=st.integers(68, 1600),
    with_options=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=80, deadline=None)
def test_ipv4_fragments_reassemble(size: int, mtu: int, with_options: bool, seed: int) -> None:
    payload = random.Random(seed).randbytes(size)
    # Router alert is copied to every fragment; the (fake) option 0x07 is not.
    options = b"\x94\x04\x00\x00\x07\x03\x00\x01" if with_options else b""
    original = craft.ipv4(C4, S4, IPPROTO_UDP, payload, ident=seed, options=options)
    frags = craft.ipv4_fragments(original, mtu)
    if len(original) <= mtu:
        assert frags == [original]
        return
    assert all(len(f) <= mtu for f in frags)
    for i, frag in enumerate(frags):
        ihl = (frag[0] & 15) * 4
        assert verifies(frag[:ihl])
        assert frag[4:6] == original[4:6]  # same identification
        if i:
            assert frag[20:ihl] in (b"", b"\x94\x04\x00\x00")
    random.Random(seed).shuffle(frags)
    assert reassemble_ipv4(frags) == original


def test_ipv4_fragments_of_fragment_and_df() -> None:
    original = craft.ipv4(C4, S4, IPPROTO_UDP, bytes(3000), ident=9)
    first_pass = craft.ipv4_fragments(original, 1500)
    second_pass = [piece for frag in first_pass for piece in craft.ipv4_fragments(frag, 576)]
    assert reassemble_ipv4(second_pass) == original
    with pytest.raises(ValueError, match="DF"):
        craft.ipv4_fragments(craft.ipv4(C4, S4, IPPROTO_UDP, bytes(3000), df=True), 1500)


@given(
    size=st.integers(0, 5000),
    mtu=st.integers(200, 1600),
    exts=st.sampled_from(
        [
            [],
            [HopByHop()],
            [
                HopByHop(),
                DestOptions(),
                Routing([S6], segments_left=0),
                DestOptions(b"\x1e\x02\x00\x00"),
            ],
            [DestOptions()],
        ]
    ),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=80, deadline=None)
def test_ipv6_fragments_reassemble(
    size: int, mtu: int, exts: list[craft.ExtHeader], seed: int
) -> None:
    payload = random.Random(seed).randbytes(size)
    original = craft.ipv6(C6, S6, IPPROTO_UDP, payload, ext_headers=exts)
    frags = craft.ipv6_fragments(original, mtu, ident=seed)
    if len(original) <= mtu:
        assert frags == [original]
        return
    assert all(len(f) <= mtu for f in frags)
    random.Random(seed).shuffle(frags)
    assert reassemble_ipv6(frags) == original


def test_ipv6_fragments_refuse_fragmented_input() -> None:
    packet = craft.ipv6(C6, S6, IPPROTO_UDP, bytes(3000), ext_headers=[Fragment(more=True)])
    with pytest.raises(ValueError, match="already fragmented"):
        craft.ipv6_fragments(packet, 1280)


# ---------------------------------------------------------------------------------------------
# Conversations
# ---------------------------------------------------------------------------------------------


def tcp_view(frames: list[craft.Frame]) -> list[tuple[float, bool, int, int, int, bytes]]:
    """(ts, from_client, flags, seq, ack, payload) per frame, checking every checksum."""
    out = []
    client = None
    for ts, frame in frames:
        _, proto, src, dst, seg = parse_ip(strip_link(frame))
        assert proto == IPPROTO_TCP
        s, d = str(ipaddress.ip_address(src)), str(ipaddress.ip_address(dst))
        assert verifies(ref_pseudo(s, d, IPPROTO_TCP, len(seg)) + seg)
        client = client or src
        seq, ack = struct.unpack("!II", seg[4:12])
        out.append((ts, src == client, seg[13], seq, ack, seg[(seg[12] >> 4) * 4 :]))
    return out


def stream_bytes(view: list[tuple[float, bool, int, int, int, bytes]], from_client: bool) -> bytes:
    """Reassemble one direction by sequence number (first copy of each byte wins)."""
    segs = sorted({(seq, data) for _, fc, _, seq, _, data in view if fc == from_client and data})
    out = b""
    base = segs[0][0] if segs else 0
    for seq, data in segs:
        start = seq - base
        if start + len(data) > len(out):
            out += data[len(out) - start :]
    return out


@pytest.mark.parametrize(("client", "server"), [(C4, S4), (C6, S6)])
def test_tcp_session_seq_ack(client: str, server: str) -> None:
    request, response = b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 40
    s = TcpSession(client, server, 40000, 80, start=1000.0, rtt=0.05)
    s.handshake().client_send(request, ack=False).server_send(response).close()
    view = tcp_view(s.frames)
    flags = [f for _, _, f, _, _, _ in view]
    assert flags[:3] == [0x02, 0x12, 0x10]
    assert (
        view[1][4] == (s.client_isn + 1) & 0xFFFFFFFF
        and view[2][4] == (s.server_isn + 1) & 0xFFFFFFFF
    )
    assert flags[-3:] == [0x11, 0x11, 0x10]
    assert stream_bytes(view, True) == request and stream_bytes(view, False) == response
    assert max(len(d) for *_, d in view) == s.mss
    times = [ts for ts, *_ in view]
    assert times == sorted(times) and times[0] == 1000.0
    assert 0.04 < times[1] - times[0] < 0.06  # SYN-ACK one RTT after the SYN at a client-side tap
    # Every ACK a side sends acknowledges exactly what the other side had sent by then.
    sent = {True: s.client_isn + 1, False: s.server_isn + 1}
    for _, from_client, f, seq, ack, data in view:
        if f & craft.TCP_SYN:
            continue
        assert ack <= sent[not from_client] % 2**32 or sent[not from_client] > 2**32
        sent[from_client] = max(
            sent[from_client], seq + len(data) + (1 if f & craft.TCP_FIN else 0)
        )


def test_tcp_session_retransmit_reorder_midstream_reset() -> None:
    s = TcpSession(C4, S4, 40001, 443, midstream=True, client_isn=0xFFFFFF00)  # seq wraps
    s.client_send(bytes(5000), retransmit=True).server_send(b"y" * 4000, reorder=True).reset(
        from_client=False
    )
    view = tcp_view(s.frames)
    client_seqs = [seq for _, fc, _, seq, _, d in view if fc and d]
    assert len(client_seqs) == len(set(client_seqs)) + 1  # exactly one retransmission
    server_seqs = [seq for _, fc, _, seq, _, d in view if not fc and d]
    assert server_seqs[0] != (s.server_isn + 1) and server_seqs[1] == (s.server_isn + 1)  # swapped
    assert stream_bytes(view, True) == bytes(5000) and stream_bytes(view, False) == b"y" * 4000
    assert view[-1][2] == craft.TCP_RST | craft.TCP_ACK and not view[-1][1]
    dup_acks = [ack for _, fc, f, _, ack, d in view if not fc and f == craft.TCP_ACK and not d]
    assert dup_acks.count((s.client_isn + 1) % 2**32) >= 2
    with pytest.raises(ValueError, match="handshake"):
        TcpSession(C4, S4, 1, 2).client_send(b"x")


def test_tcp_refused_and_syn_timeout() -> None:
    refused = tcp_view(TcpSession(C4, S4, 40002, 8080).refused().frames)
    assert [f for _, _, f, _, _, _ in refused] == [craft.TCP_SYN, craft.TCP_RST | craft.TCP_ACK]
    silent = TcpSession(C4, S4, 40003, 445, start=0.0).syn_timeout(retries=2)
    view = tcp_view(silent.frames)
    assert [f for _, _, f, _, _, _ in view] == [craft.TCP_SYN] * 3
    assert [round(ts) for ts, *_ in view] == [0, 1, 3]


def test_udp_exchange_fragmented_and_ping() -> None:
    u = UdpExchange(C4, S4, 5000, 53, link=EthernetLink())
    u.request(b"q").response(bytes(4000), fragment_mtu=1500)
    frags = [strip_link(f) for _, f in u.frames[1:]]
    assert len(frags) == 3 and all(len(f) <= 1500 for f in frags)
    whole = reassemble_ipv4(frags)
    _, proto, _, _, dgram = parse_ip(whole)
    assert proto == IPPROTO_UDP and dgram[8:] == bytes(4000)
    assert verifies(ref_pseudo(S4, C4, IPPROTO_UDP, len(dgram)) + dgram)
    u6 = UdpExchange(C6, S6, 5000, 53).response(bytes(3000), fragment_mtu=1280)
    assert parse_ip(reassemble_ipv6([strip_link(f) for _, f in u6.frames]))[4][8:] == bytes(3000)
    ping = PingExchange(C6, S6).ping(3, lost=[1])
    types = [parse_ip(strip_link(f))[4][0] for _, f in ping.frames]
    assert types == [128, 129, 128, 128, 129]


def test_link_framers_and_tunnels_wrap_both_directions() -> None:
    tunnel = GtpuTunnel("198.51.100.1", "198.51.100.2", teid_up=0x11, teid_down=0x22)
    s = TcpSession(C4, S4, 40004, 80, tunnel=tunnel, link=EthernetLink(vlans=[100]))
    s.handshake()
    up, down = s.frames[0][1], s.frames[1][1]
    assert up[12:14] == b"\x81\x00" and up[16:18] == b"\x08\x00"
    for frame, teid, outer_src in ((up, 0x11, "198.51.100.1"), (down, 0x22, "198.51.100.2")):
        _, proto, src, _, dgram = parse_ip(frame[18:])
        assert proto == IPPROTO_UDP and ipaddress.ip_address(src) == ipaddress.ip_address(outer_src)
        assert dgram[2:4] == craft.GTPU_PORT.to_bytes(2, "big") and dgram[12:16] == teid.to_bytes(
            4, "big"
        )
    assert RawLink()(b"\x45", True) == b"\x45"


def test_merge_frames_is_stable() -> None:
    merged = craft.merge_frames([(1.0, b"a"), (2.0, b"c")], [(1.0, b"b"), (3.0, b"d")])
    assert [f for _, f in merged] == [b"a", b"b", b"c", b"d"]


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def read_pcap(path: Path) -> tuple[int, int, list[tuple[int, int, int, bytes]]]:
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data)
    records, pos = [], 24
    while pos < len(data):
        sec, frac, incl, orig = struct.unpack_from("<IIII", data, pos)
        records.append((sec, frac, orig, data[pos + 16 : pos + 16 + incl]))
        pos += 16 + incl
    return magic, linktype, records


def test_write_pcap(tmp_path: Path) -> None:
    frames = [(1_700_000_000.123456, b"a" * 10), (1_700_000_001.5, b"b" * 300)]
    path = tmp_path / "t.pcap"
    assert craft.write_pcap(path, frames, linktype=101, snaplen=100) == 2
    magic, linktype, records = read_pcap(path)
    assert (magic, linktype) == (0xA1B2C3D4, 101)
    assert records[0] == (1_700_000_000, 123456, 10, b"a" * 10)
    assert records[1] == (1_700_000_001, 500000, 300, b"b" * 100)
    craft.write_pcap(path, frames, nanosecond=True)
    magic, _, records = read_pcap(path)
    assert magic == 0xA1B23C4D and abs(records[0][1] - 123456000) < 500  # float precision


def test_write_pcapng(tmp_path: Path) -> None:
    path = tmp_path / "t.pcapng"
    frames = [(10.25, b"\x00" * 61, 0), (10.5, b"\x01" * 3, 1)]
    assert craft.write_pcapng(path, frames, [(1, 6), (101, 9)]) == 2
    data = path.read_bytes()
    blocks, pos = [], 0
    while pos < len(data):
        btype, blen = struct.unpack_from("<II", data, pos)
        assert blen % 4 == 0 and struct.unpack_from("<I", data, pos + blen - 4)[0] == blen
        blocks.append((btype, data[pos + 8 : pos + blen - 4]))
        pos += blen
    assert [b for b, _ in blocks] == [0x0A0D0D0A, 1, 1, 6, 6]
    assert (
        struct.unpack_from("<HHI", blocks[2][1])[0] == 101
        and b"\x09\x00\x01\x00\x09" in blocks[2][1]
    )
    iface, hi, lo, caplen, origlen = struct.unpack_from("<IIIII", blocks[3][1])
    assert (iface, (hi << 32) | lo, caplen, origlen) == (0, 10_250_000, 61, 61)
    iface, hi, lo, caplen, _ = struct.unpack_from("<IIIII", blocks[4][1])
    assert (iface, (hi << 32) | lo, caplen) == (1, 10_500_000_000, 3)


# ---------------------------------------------------------------------------------------------
# Generator
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, float]:
    path = tmp_path_factory.mktemp("demo") / "demo.pcap"
    began = time.perf_counter()
    manifest = generate_capture(path, seed=7, sessions=300)
    return path, manifest, time.perf_counter() - began


def test_generator_is_deterministic(demo: tuple[Path, dict, float], tmp_path: Path) -> None:
    path, manifest, _ = demo
    again = generate_capture(tmp_path / "again.pcap", seed=7, sessions=300)
    other = generate_capture(tmp_path / "other.pcap", seed=8, sessions=300)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["sha256"] == digest == again["sha256"]
    assert (tmp_path / "again.pcap").read_bytes() == path.read_bytes()
    assert other["sha256"] != digest


def test_generator_manifest_is_consistent(demo: tuple[Path, dict, float]) -> None:
    path, manifest, elapsed = demo
    _, linktype, records = read_pcap(path)
    assert linktype == manifest["linktype"] == 1
    assert manifest["packets"] == len(records) == sum(f["packets"] for f in manifest["flows"])
    assert (
        manifest["bytes"]
        == sum(len(r[3]) for r in records)
        == sum(f["bytes"] for f in manifest["flows"])
    )
    assert manifest["file_bytes"] == path.stat().st_size
    assert 500_000 <= manifest["file_bytes"] <= 2_000_000
    assert elapsed < 5.0
    assert manifest["sessions"] == 300 == sum(manifest["scenarios"].values())
    assert sum(manifest["protocols"].values()) == manifest["flow_count"] == len(manifest["flows"])
    times = [sec * 1_000_000 + usec for sec, usec, _, _ in records]
    assert times == sorted(times)
    assert {kind for kind, _ in GUARANTEED} <= set(manifest["scenarios"])
    for proto in ("http", "dns", "tls", "smtp", "ssh", "sip", "rtp", "ftp", "ftp-data", "icmp"):
        assert manifest["protocols"].get(proto, 0) > 0, proto
    assert {"vlan", "gtpu", "gre", "fragmented"} <= set(manifest["encapsulations"])
    assert manifest["families"]["ipv4"] > 0 and manifest["families"]["ipv6"] > 0


def test_generator_small_runs() -> None:
    frames, manifest = generate_frames(seed=1, sessions=3)
    assert manifest["sessions"] == 3 and manifest["packets"] == len(frames) > 0
    frames, manifest = generate_frames(seed=1, sessions=0)
    assert frames == [] and manifest["packets"] == 0


# ---------------------------------------------------------------------------------------------
# Wireshark cross-checks
# ---------------------------------------------------------------------------------------------

_BAD_FILTER = (
    "_ws.malformed || _ws.expert.severity >= error"
    " || ip.checksum.status == 0 || tcp.checksum.status == 0 || udp.checksum.status == 0"
    " || icmp.checksum.status == 0 || icmpv6.checksum.status == 0"
    " || gre.checksum.status == 0 || sctp.checksum.status == 0"
)
_VALIDATE = [
    "-o", "ip.check_checksum:TRUE",
    "-o", "tcp.check_checksum:TRUE",
    "-o", "udp.check_checksum:TRUE",
    "-o", "sctp.checksum:CRC 32c",
]  # fmt: skip


def tshark(*args: str | Path) -> str:
    assert TSHARK is not None
    done = subprocess.run(
        [TSHARK, *map(str, args)], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout


def tshark_problems(path: Path) -> list[int]:
    """Numbers of the frames Wireshark finds malformed, in error, or with a bad checksum."""
    found = tshark(
        "-n", "-r", path, *_VALIDATE, "-Y", _BAD_FILTER, "-T", "fields", "-e", "frame.number"
    )
    return [int(n) for n in found.split()]


def _http_session(client: str, server: str, sport: int = 40000, **kw: object) -> TcpSession:
    s = TcpSession(client, server, sport, 80, **kw)  # type: ignore[arg-type]
    s.handshake().client_send(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", ack=False)
    body = b"<html>" + b"x" * 3000 + b"</html>"
    s.server_send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body).close()
    return s


_TUNNEL_CASES: dict[str, tuple[tuple[str, str], dict[str, Any], str]] = {
    "ethernet": ((C4, S4), {}, "eth:ethertype:ip:tcp"),
    "ethernet6": ((C6, S6), {}, "eth:ethertype:ipv6:tcp"),
    "vlan": ((C4, S4), {"link": EthernetLink(vlans=[100])}, "vlan:ethertype:ip:tcp"),
    "qinq": (
        (C6, S6),
        {"link": EthernetLink(vlans=[200, 100])},
        "ieee8021ad:ethertype:vlan:ethertype:ipv6",
    ),
    "mpls": ((C4, S4), {"link": EthernetLink(mpls_labels=[16, 17])}, "mpls:ip:tcp"),
    "pppoe": ((C6, S6), {"link": EthernetLink(pppoe_session_id=7)}, "pppoes:ppp:ipv6:tcp"),
    "gre": ((C4, S4), {"tunnel": GreTunnel("198.51.100.1", "198.51.100.2")}, "ip:gre:ip:tcp"),
    "gre_key_csum_6in6": (
        (C6, S6),
        {"tunnel": GreTunnel("2001:db8:f::1", "2001:db8:f::2", key=5, checksum=True)},
        "ipv6:gre:ipv6:tcp",
    ),
    "vxlan": (
        (C4, S4),
        {"tunnel": VxlanTunnel("198.51.100.1", "198.51.100.2", vni=42)},
        "udp:vxlan:eth:ethertype:ip:tcp",
    ),
    "gtpu": (
        (C4, S4),
        {"tunnel": GtpuTunnel("198.51.100.1", "198.51.100.2", teid_up=1, teid_down=2)},
        "udp:gtp:ip:tcp",
    ),
    "gtpu_v6_inner": (
        (C6, S6),
        {"tunnel": GtpuTunnel("198.51.100.1", "198.51.100.2", teid_up=1, teid_down=2)},
        "udp:gtp:ipv6:tcp",
    ),
    "ipip": (
        (C4, S4),
        {"tunnel": IpIpTunnel("198.51.100.1", "198.51.100.2")},
        "eth:ethertype:ip:ip:tcp",
    ),
    "6in4": (
        (C6, S6),
        {"tunnel": IpIpTunnel("198.51.100.1", "198.51.100.2")},
        "eth:ethertype:ip:ipv6:tcp",
    ),
    "4in6": (
        (C4, S4),
        {"tunnel": IpIpTunnel("2001:db8:f::1", "2001:db8:f::2")},
        "eth:ethertype:ipv6:ip:tcp",
    ),
    "gre_in_vlan": (
        (C4, S4),
        {
            "tunnel": GreTunnel("198.51.100.1", "198.51.100.2", key=1),
            "link": EthernetLink(vlans=[300]),
        },
        "vlan:ethertype:ip:gre:ip:tcp",
    ),
    "sll": ((C4, S4), {"link": SllLink()}, "sll:ethertype:ip:tcp"),
    "sll2": ((C6, S6), {"link": Sll2Link()}, "sll:ethertype:ipv6:tcp"),
    "null": ((C6, S6), {"link": NullLink()}, "null:ipv6:tcp"),
    "loop": ((C4, S4), {"link": LoopLink()}, "null:ip:tcp"),
    "raw": ((C6, S6), {"link": RawLink()}, "raw:ipv6:tcp"),
}


@pytest.fixture(scope="module")
def tunnel_capture(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[int, list[str], set[int]]]:
    """Every encapsulation case in one pcapng (one interface per case, so each keeps its own
    link type), read by tshark twice in total: starting tshark costs about a second, so one
    file instead of twenty keeps this affordable in the fast suite.

    Returns case -> (frame count, protocol stack per frame, numbers of frames with problems).
    """
    assert TSHARK is not None
    interfaces: list[tuple[int, int]] = []
    records: list[tuple[float, bytes, int]] = []
    spans: dict[str, range] = {}
    for index, case in enumerate(sorted(_TUNNEL_CASES)):
        (client, server), kw, _ = _TUNNEL_CASES[case]
        # Own port and time window per case, so Wireshark keeps the TCP streams apart.
        session = _http_session(
            client, server, sport=41000 + index, start=1000.0 + 10 * index, **kw
        )
        link = kw.get("link", EthernetLink())
        interfaces.append((link.linktype, 6))  # type: ignore[attr-defined]
        first = len(records) + 1
        records += [(ts, frame, index) for ts, frame in session.frames]
        spans[case] = range(first, len(records) + 1)
    path = tmp_path_factory.mktemp("tunnels") / "tunnels.pcapng"
    craft.write_pcapng(path, records, interfaces)
    stacks = tshark("-n", "-r", path, "-T", "fields", "-e", "frame.protocols").splitlines()
    assert len(stacks) == len(records)
    bad = set(tshark_problems(path))
    return {
        case: (len(span), stacks[span.start - 1 : span.stop - 1], bad & set(span))
        for case, span in spans.items()
    }


@needs_tshark
@pytest.mark.parametrize("case", sorted(_TUNNEL_CASES))
def test_tshark_accepts_each_encapsulation(
    case: str, tunnel_capture: dict[str, tuple[int, list[str], set[int]]]
) -> None:
    _, _, expected_stack = _TUNNEL_CASES[case]
    count, stacks, problems = tunnel_capture[case]
    assert problems == set(), f"tshark flags frames {sorted(problems)} (malformed or bad checksum)"
    assert count == len(stacks) > 0
    assert all(expected_stack in stack for stack in stacks), stacks[:3]
    assert any(stack.endswith(":http") or ":http:" in stack for stack in stacks)


@needs_tshark
def test_tshark_accepts_l3_l4_variety(tmp_path: Path) -> None:
    """Fragments (v4 and v6, reassembled by Wireshark), extension headers, ICMP, SCTP, pcapng
    with two timestamp resolutions, and a deliberately bad checksum as negative control."""
    frames: list[craft.Frame] = []
    data = bytes(range(256)) * 10

    def add(packet: bytes) -> None:
        frames.append(
            (
                1000.0 + len(frames) * 0.001,
                craft.ethernet(
                    "02:00:00:00:00:01", "02:00:00:00:00:02", craft.ethertype_of(packet), packet
                ),
            )
        )

    for frag in craft.ipv4_fragments(
        craft.ipv4(C4, S4, IPPROTO_UDP, craft.udp(1000, 2000, data, src_ip=C4, dst_ip=S4), ident=3),
        600,
    ):
        add(frag)
    six = craft.ipv6(
        C6,
        S6,
        IPPROTO_UDP,
        craft.udp(1000, 2000, data, src_ip=C6, dst_ip=S6),
        ext_headers=[HopByHop(), DestOptions()],
    )
    for frag in craft.ipv6_fragments(six, 1280, ident=4):
        add(frag)
    add(
        craft.ipv6(
            C6,
            S6,
            IPPROTO_TCP,
            craft.tcp(1, 2, 3, 0, "S", src_ip=C6, dst_ip=S6),
            ext_headers=[HopByHop(), Routing([S6], segments_left=0)],
        )
    )
    add(craft.ipv4(C4, S4, IPPROTO_ICMP, craft.icmp_echo(1, 1, b"abc")))
    add(craft.ipv6(C6, S6, IPPROTO_ICMPV6, craft.icmpv6_echo(1, 1, b"abc", src_ip=C6, dst_ip=S6)))
    add(craft.ipv4(C4, S4, IPPROTO_SCTP, craft.sctp(3868, 3868, craft.sctp_init(0x1234, 1))))
    add(
        craft.ipv4(
            C4,
            S4,
            IPPROTO_SCTP,
            craft.sctp(3868, 3868, craft.sctp_data(1, 0, 0, 46, b"hello"), vtag=0x1234),
        )
    )
    # Negative control: a wrong TCP checksum must be caught by the same filter.
    add(
        craft.ipv4(
            C4, S4, IPPROTO_TCP, craft.tcp(1, 2, 3, 0, "S", src_ip=C4, dst_ip=S4, checksum=0x1234)
        )
    )
    path = tmp_path / "variety.pcapng"
    craft.write_pcapng(path, [(ts, f, i % 2) for i, (ts, f) in enumerate(frames)], [(1, 6), (1, 9)])
    assert tshark_problems(path) == [len(frames)]
    fields = tshark(
        "-n",
        "-r",
        path,
        *_VALIDATE,
        "-T",
        "fields",
        "-e",
        "frame.protocols",
        "-e",
        "sctp.checksum.status",
    )
    lines = fields.splitlines()
    assert len(lines) == len(frames)
    assert sum(":udp" in line for line in lines) == 2  # both datagrams reassembled
    assert [line.split("\t")[1] for line in lines if ":sctp" in line] == ["1", "1"]  # CRC-32C good


_CONV = re.compile(
    r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+)\s+\S+\s+(?:bytes|kB|MB)\s+(\d+)\s+\S+\s+(?:bytes|kB|MB)\s+(\d+)"
)


@needs_tshark
def test_tshark_sees_tcp_conversations(tmp_path: Path) -> None:
    sessions = [
        _http_session(C4, S4, start=100.0),
        _http_session(C6, S6, start=100.5, rtt=0.08),
        TcpSession("10.0.0.9", S4, 41000, 8080, start=100.2).refused(),
    ]
    big = TcpSession(C4, S4, 40500, 443, start=100.1)
    big.handshake().client_send(bytes(20000), retransmit=True).server_send(
        bytes(9000), reorder=True
    ).close()
    sessions.append(big)
    path = tmp_path / "conv.pcap"
    craft.write_pcap(path, craft.merge_frames(*(s.frames for s in sessions)))
    seen = {}
    for line in tshark("-n", "-q", "-r", path, "-z", "conv,tcp").splitlines():
        match = _CONV.match(line.strip())
        if match:
            a, pa, b, pb, b_to_a, a_to_b, total = match.groups()
            ends = {(a, int(pa)): int(a_to_b), (b, int(pb)): int(b_to_a)}
            seen[frozenset(ends)] = (ends, int(total))
    assert len(seen) == len(sessions)
    for s in sessions:
        client = (str(ipaddress.ip_address(s.client)), s.sport)
        server = (str(ipaddress.ip_address(s.server)), s.dport)
        ends, total = seen[frozenset({client, server})]
        from_client = sum(1 for _, f in s.frames if _frame_from(f, s.client))
        assert total == len(s.frames)
        assert ends[client] == from_client and ends[server] == len(s.frames) - from_client


def _frame_from(frame: bytes, src: bytes) -> bool:
    return parse_ip(strip_link(frame))[2] == src


@needs_tshark
@pytest.mark.slow
def test_tshark_reads_demo_capture_cleanly(demo: tuple[Path, dict, float]) -> None:
    path, _, _ = demo
    assert tshark_problems(path) == []
    hierarchy = tshark("-n", "-q", "-r", path, "-z", "io,phs")
    for proto in (
        "http",
        "dns",
        "tls",
        "smtp",
        "ssh",
        "sip",
        "rtp",
        "ftp",
        "ftp-data",
        "gtp",
        "gre",
        "vlan",
        "icmp",
        "ipv6",
    ):
        assert re.search(rf"^\s*{re.escape(proto)}\s+frames:", hierarchy, re.M), proto
    sni = set(
        tshark(
            "-n",
            "-r",
            path,
            "-Y",
            "tls.handshake.type == 1",
            "-T",
            "fields",
            "-e",
            "tls.handshake.extensions_server_name",
        ).split()
    )
    assert sni and all(
        name.endswith((".example", ".com", ".org", ".net")) and "example" in name for name in sni
    )
