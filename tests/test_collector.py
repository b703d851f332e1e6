"""The collector intercepts exactly the targets' packets inside active warrants' windows."""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from conftest import corpus_root
from lawtap import craft
from lawtap.decode import kernel as dk
from lawtap.intercept.collector import intercept_capture
from lawtap.intercept.warrants import WarrantStore
from lawtap.sources import open_capture

WARRANT = """
liid: {liid}
authority: Test Court
legal_reference: "test 1/26"
agency: {{name: Test LEA, hi2: "127.0.0.1:6001", hi3: "127.0.0.1:6002"}}
scope: {scope}
valid_from: {start}
valid_until: {end}
targets:
{targets}
"""


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def store(tmp_path: Path, monkeypatch) -> WarrantStore:
    monkeypatch.setenv("LAWTAP_HOME", str(tmp_path / "home"))
    return WarrantStore(f"sqlite:///{tmp_path / 'w.db'}", clock=lambda: datetime(2000, 1, 1, tzinfo=timezone.utc))


def warrant(store: WarrantStore, liid: str, targets: str, start: float, end: float, scope: str = "iri+cc",
            approve: bool = True) -> None:
    store.create_from_yaml(WARRANT.format(liid=liid, scope=scope, start=iso(start), end=iso(end), targets=targets), "alice")
    if approve:
        store.approve(liid, "bob")


def packets_of(path: Path, ip: str, start: float, end: float) -> list[bytes]:
    """Reference: the IP packets of a capture to or from ``ip`` inside [start, end)."""
    import ipaddress

    want = int(ipaddress.ip_address(ip))
    out = []
    for b in open_capture(path).batches():
        A, D = dk.new_columns(len(b))
        dk.decode_batch(b.data, b.offset, b.caplen, b.linktype, A, D)
        for i in range(len(b)):
            if D[i, dk.C_STATUS] != dk.ST_FLOW or not (start <= b.ts[i] / 1e9 < end):
                continue
            if want in (int(A[i, 1]) & 0xFFFFFFFF, int(A[i, 3]) & 0xFFFFFFFF) and A[i, 0] == 0:
                off = int(D[i, dk.C_L3_OFF])
                out.append(b.data[off : off + min(int(D[i, dk.C_IP_LEN]), int(D[i, dk.C_L3_LEN]))].tobytes())
    return out


def capture_span(path: Path) -> tuple[float, float]:
    ts = np.concatenate([b.ts for b in open_capture(path).batches()]) / 1e9
    return float(ts.min()), float(ts.max())


@pytest.mark.skipif(corpus_root() is None, reason="shared corpus not present")
def test_only_the_target_inside_the_window(store: WarrantStore) -> None:
    cap = corpus_root() / "http" / "markofu__http" / "http.cap"
    t0, t1 = capture_span(cap)
    mid = (t0 + t1) / 2
    target = "145.254.160.237"
    warrant(store, "LIID-A", f"  - {{kind: ipv4, value: {target}}}", t0 - 1, mid)
    events = []
    stats = intercept_capture([str(cap)], store.target_set(datetime.fromtimestamp(t0, timezone.utc), timedelta(days=1)), events.append)
    cc = [e.packet for e in events if e.kind == "cc"]
    assert cc == packets_of(cap, target, t0 - 1, mid)
    assert 0 < len(cc) < len(packets_of(cap, target, t0 - 1, t1 + 1))  # the window cut a flow
    assert any(e.kind == "iri-begin" for e in events) and any(e.kind == "iri-end" for e in events)
    assert stats.dropped > 0 and stats.per_liid == {"LIID-A": len(cc)}


def test_unapproved_revoked_and_iri_only(store: WarrantStore, tmp_path: Path) -> None:
    s = craft.TcpSession("10.1.1.1", "10.2.2.2", 1111, 80, start=1_700_000_000.0)
    s.handshake().client_send(b"GET /secret HTTP/1.0\r\n\r\n").close()
    cap = tmp_path / "t.pcap"
    craft.write_pcap(cap, s.frames)
    at = datetime.fromtimestamp(1_700_000_000.0, timezone.utc)
    warrant(store, "DRAFT", "  - {kind: ipv4, value: 10.1.1.1}", 1_699_999_000, 1_700_001_000, approve=False)
    warrant(store, "GONE", "  - {kind: ipv4, value: 10.1.1.1}", 1_699_999_000, 1_700_001_000)
    store.revoke("GONE", "carol", "quashed")
    events = []
    intercept_capture([str(cap)], store.target_set(at, timedelta(days=1)), events.append)
    assert events == []
    warrant(store, "IRIONLY", "  - {kind: ipv4, value: 10.2.2.2}", 1_699_999_000, 1_700_001_000, scope="iri")
    intercept_capture([str(cap)], store.target_set(at, timedelta(days=1)), events.append)
    assert {e.kind for e in events} == {"iri-begin", "iri-end"}


def radius_start(user: str, ip: str, ident: int = 1) -> bytes:
    import ipaddress

    attrs = bytes([1, 2 + len(user)]) + user.encode() + bytes([8, 6]) + ipaddress.IPv4Address(ip).packed
    attrs += bytes([40, 6]) + struct.pack("!I", 1) + bytes([44, 6]) + b"S001"
    return struct.pack("!BBH", 4, ident, 20 + len(attrs)) + b"\x00" * 16 + attrs


def test_username_target_follows_its_address(store: WarrantStore, tmp_path: Path) -> None:
    t = 1_700_100_000.0
    acct = craft.UdpExchange("10.0.0.1", "10.0.0.2", 40000, 1813, start=t)
    acct.send(radius_start("suspect", "100.64.0.9"))
    target = craft.TcpSession("100.64.0.9", "198.51.100.1", 5555, 80, start=t + 1)
    target.handshake().client_send(b"GET /target HTTP/1.0\r\n\r\n").close()
    other = craft.TcpSession("100.64.0.10", "198.51.100.1", 5556, 80, start=t + 1)
    other.handshake().client_send(b"GET /NOT-A-TARGET HTTP/1.0\r\n\r\n").close()
    cap = tmp_path / "id.pcap"
    craft.write_pcap(cap, craft.merge_frames(acct.frames, target.frames, other.frames))
    warrant(store, "USER", "  - {kind: username, value: suspect}", t - 10, t + 100)
    events = []
    intercept_capture([str(cap)], store.target_set(datetime.fromtimestamp(t, timezone.utc), timedelta(days=1)), events.append)
    cc = b"".join(e.packet for e in events if e.kind == "cc")
    assert b"GET /target" in cc and b"NOT-A-TARGET" not in cc
    assert len([e for e in events if e.kind == "cc"]) == len(target.frames)


def test_fragmented_target_datagram_is_reassembled(store: WarrantStore, tmp_path: Path) -> None:
    t = 1_700_300_000.0
    data = bytes(range(256)) * 10
    dgram = craft.ip("10.3.3.3", "10.4.4.4", 17, craft.udp(4000, 4001, data, src_ip="10.3.3.3", dst_ip="10.4.4.4"), ident=9)
    frames = [(t + k * 0.001, craft.ethernet("02:00:00:00:00:01", "02:00:00:00:00:02", 0x0800, f))
              for k, f in enumerate(craft.ipv4_fragments(dgram, 600))]
    cap = tmp_path / "frag.pcap"
    craft.write_pcap(cap, frames)
    warrant(store, "FRAG", "  - {kind: ipv4, value: 10.3.3.3}", t - 10, t + 100)
    events = []
    intercept_capture([str(cap)], store.target_set(datetime.fromtimestamp(t, timezone.utc), timedelta(days=1)), events.append)
    assert [e.packet for e in events if e.kind == "cc"] == [dgram]


def smtp_session(sender: str, rcpt: str, body: bytes, sport: int, start: float) -> craft.TcpSession:
    s = craft.TcpSession("10.5.5.5", "192.0.2.25", sport, 25, start=start)
    s.handshake().server_send(b"220 mx ESMTP\r\n").client_send(b"EHLO c\r\n").server_send(b"250 mx\r\n")
    s.client_send(f"MAIL FROM:<{sender}>\r\n".encode()).server_send(b"250 ok\r\n")
    s.client_send(f"RCPT TO:<{rcpt}>\r\n".encode()).server_send(b"250 ok\r\n")
    s.client_send(b"DATA\r\n").server_send(b"354 go\r\n")
    s.client_send(b"From: <" + sender.encode() + b">\r\nSubject: hi\r\nMessage-ID: <m" + str(sport).encode() + b"@x>\r\n\r\n" + body + b"\r\n.\r\n")
    s.server_send(b"250 queued\r\n").client_send(b"QUIT\r\n").server_send(b"221 bye\r\n").close()
    return s


def test_email_target_gets_its_messages_only(store: WarrantStore, tmp_path: Path) -> None:
    t = 1_700_400_000.0
    mine = smtp_session("suspect@example.org", "friend@example.net", b"TARGET MESSAGE", 41000, t)
    other = smtp_session("someone@example.org", "friend@example.net", b"OTHER MESSAGE", 41001, t + 0.5)
    cap = tmp_path / "mail.pcap"
    craft.write_pcap(cap, craft.merge_frames(mine.frames, other.frames))
    warrant(store, "MAIL", "  - {kind: email, value: suspect@example.org}", t - 10, t + 100)
    events = []
    intercept_capture([str(cap)], store.target_set(datetime.fromtimestamp(t, timezone.utc), timedelta(days=1)), events.append)
    kinds = [e.kind for e in events]
    assert kinds.count("email-iri") == 1 and kinds.count("email-cc") == 1
    msg = next(e.packet for e in events if e.kind == "email-cc")
    assert b"TARGET MESSAGE" in msg and b"OTHER MESSAGE" not in b"".join(e.packet for e in events)
    iri = next(e for e in events if e.kind == "email-iri")
    assert iri.details["sender"] == "suspect@example.org" and iri.details["protocol"] == "smtp"


def test_sip_target_call_and_its_media(store: WarrantStore, tmp_path: Path) -> None:
    from lawtap.generate import rtp_packet, sdp_offer, sip_message

    t = 1_700_500_000.0
    caller, callee = "10.6.6.6", "10.6.6.7"

    def invite(user: str, call_id: str, rtp_port: int, sport: int) -> list:
        u = craft.UdpExchange(caller, callee, sport, 5060, start=t)
        hdr = [("Via", f"SIP/2.0/UDP {caller}:{sport};branch=z9hG4bK{call_id}"), ("From", f"<sip:{user}@example.com>;tag=1"),
               ("To", "<sip:bob@example.com>"), ("Call-ID", call_id), ("CSeq", "1 INVITE"),
               ("Contact", f"<sip:{user}@{caller}:{sport}>")]
        u.send(sip_message("INVITE sip:bob@example.com SIP/2.0", hdr, sdp_offer(user, 1, caller, rtp_port)))
        u.send(sip_message("SIP/2.0 200 OK", hdr, sdp_offer("bob", 2, callee, rtp_port + 1000)), from_client=False)
        media = craft.UdpExchange(caller, callee, rtp_port, rtp_port + 1000, start=t + 1)
        for k in range(5):
            media.send(rtp_packet(k, k * 160, 0x1234 + sport, bytes([k]) * 160))
        return craft.merge_frames(u.frames, media.frames)

    frames = craft.merge_frames(invite("alice", "call-target", 20000, 5070), invite("carol", "call-other", 30000, 5080))
    cap = tmp_path / "sip.pcap"
    craft.write_pcap(cap, frames)
    warrant(store, "VOIP", "  - {kind: sip_uri, value: 'sip:alice@example.com'}", t - 10, t + 100)
    events = []
    intercept_capture([str(cap)], store.target_set(datetime.fromtimestamp(t, timezone.utc), timedelta(days=1)), events.append)
    iri = [e.packet for e in events if e.kind == "ipmm-iri"]
    cc = [e.packet for e in events if e.kind == "ipmm-cc"]
    assert [p.split(b"\r\n")[0] for p in iri] == [b"INVITE sip:bob@example.com SIP/2.0", b"SIP/2.0 200 OK"]
    assert len(cc) == 5  # the target call's RTP, as IP multimedia CC
    assert all(b"carol" not in p and b"call-other" not in p for p in iri + cc)
    # the IRI and CC encode as ETSI TS 102 232-5 PDUs
    from lawtap.etsi.pdu import decode_pdu, ps_pdu_ipmm_cc, ps_pdu_ipmm_iri

    ev = next(e for e in events if e.kind == "ipmm-iri")
    assert decode_pdu(ps_pdu_ipmm_iri("VOIP", 1, 0, int(t * 1e9), sip=iri[0], src_ip=ev.details["src_ip"], dst_ip=ev.details["dst_ip"]))
    assert decode_pdu(ps_pdu_ipmm_cc("VOIP", 1, 1, int(t * 1e9), cc[0], 0))


def test_imsi_target_through_gtp_teids(store: WarrantStore, tmp_path: Path) -> None:
    """GTP-U packets are tied to the subscriber by their tunnel, even when no PDN address is known."""
    from test_identity import fteid, gtp2, ie2, tbcd_enc

    t = 1_700_600_000.0
    imsi = "262019876543210"
    req = gtp2(32, 0, 7, ie2(1, tbcd_enc(imsi)), fteid(6, 0xA1, "10.1.0.1"), ie2(93, ie2(73, b"\x05") + fteid(4, 0xA2, "10.1.0.11")))
    resp = gtp2(33, 0xA1, 7, ie2(2, b"\x10\x00"), fteid(7, 0xB1, "10.2.0.1", inst=1),
                ie2(93, ie2(73, b"\x05") + ie2(2, b"\x10\x00") + fteid(5, 0xB2, "10.2.0.11", inst=2)))
    ctl = craft.UdpExchange("10.1.0.1", "10.2.0.1", 2123, 2123, start=t)
    ctl.send(req)
    ctl.send(resp, from_client=False)
    up = craft.TcpSession("100.70.9.9", "198.51.100.7", 4444, 80, start=t + 1,
                          tunnel=craft.GtpuTunnel("10.1.0.11", "10.2.0.11", teid_up=0xB2, teid_down=0xA2))
    up.handshake().client_send(b"GET /mobile HTTP/1.1\r\n\r\n").close()
    other = craft.TcpSession("100.70.9.8", "198.51.100.7", 4445, 80, start=t + 1,
                             tunnel=craft.GtpuTunnel("10.1.0.11", "10.2.0.11", teid_up=0xC2, teid_down=0xC3))
    other.handshake().client_send(b"GET /NOT-THIS-ONE HTTP/1.1\r\n\r\n").close()
    cap = tmp_path / "gtp.pcap"
    craft.write_pcap(cap, craft.merge_frames(ctl.frames, up.frames, other.frames))
    warrant(store, "MOBILE", f"  - {{kind: imsi, value: '{imsi}'}}", t - 10, t + 100)
    events = []
    intercept_capture([str(cap)], store.target_set(datetime.fromtimestamp(t, timezone.utc), timedelta(days=1)), events.append)
    cc = [e.packet for e in events if e.kind == "cc"]
    assert len(cc) == len(up.frames) and b"GET /mobile" in b"".join(cc)
    assert b"NOT-THIS-ONE" not in b"".join(cc)
