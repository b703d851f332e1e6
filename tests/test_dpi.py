"""DPI classifier: every protocol on hand-built messages, negatives, port independence,
the detector table, speed, and agreement with nDPI on the shared corpus.

The corpus check at the bottom reads captures with dpkt (temporary test scaffolding until the
end-to-end test through the real flow engine covers the same ground).
"""

from __future__ import annotations

import csv
import os
import random
import re
import socket
import struct
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from lawtap.dpi import classify, detectors, services
from lawtap.dpi._core import DEFINITE, EXIT, HINT_BONUS, THRESHOLD, TRUNC

REPO = Path(__file__).resolve().parents[1]

REQUIRED = [
    "http", "tls", "quic", "dns", "mdns", "ssh", "smtp", "pop3", "imap", "ftp", "tftp", "sip", "rtp", "rtcp",
    "stun", "irc", "xmpp", "radius", "dhcp", "dhcpv6", "gtp-c", "gtp-u", "bittorrent", "smb", "rdp", "telnet",
    "snmp", "ntp", "syslog", "kerberos", "ldap", "mysql", "postgresql", "redis", "mqtt", "openvpn", "wireguard",
    "socks", "netbios", "ssdp",
]


# ---------------------------------------------------------------------------------------------
# message builders (real wire formats, written out field by field)


def u8(x):
    return struct.pack("!B", x)


def u16(x):
    return struct.pack("!H", x)


def u32(x):
    return struct.pack("!I", x)


def dns_name(name: str) -> bytes:
    out = b""
    for label in name.strip(".").split("."):
        out += u8(len(label)) + label.encode()
    return out + b"\x00"


def dns_query(name="www.example.com", qtype=1, qid=0x1A2B, flags=0x0100, qclass=1) -> bytes:
    return u16(qid) + u16(flags) + u16(1) + u16(0) + u16(0) + u16(0) + dns_name(name) + u16(qtype) + u16(qclass)


def dns_response(name="www.example.com", qid=0x1A2B, ips=("93.184.216.34",)) -> bytes:
    msg = u16(qid) + u16(0x8180) + u16(1) + u16(len(ips)) + u16(0) + u16(0) + dns_name(name) + u16(1) + u16(1)
    for ip in ips:
        msg += b"\xc0\x0c" + u16(1) + u16(1) + u32(300) + u16(4) + socket.inet_aton(ip)
    return msg


def tls_client_hello(sni="example.com", version=0x0301) -> bytes:
    host = sni.encode()
    sni_ext = u16(0) + u16(len(host) + 5) + u16(len(host) + 3) + b"\x00" + u16(len(host)) + host
    alpn = b"\x02h2\x08http/1.1"
    alpn_ext = u16(16) + u16(len(alpn) + 2) + u16(len(alpn)) + alpn
    exts = sni_ext + alpn_ext
    body = (
        u16(0x0303) + bytes(range(32)) + b"\x20" + bytes(32)
        + u16(6) + b"\x13\x01\x13\x02\xc0\x2f" + b"\x01\x00" + u16(len(exts)) + exts
    )
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16" + u16(version) + u16(len(hs)) + hs


def tls_server_hello() -> bytes:
    body = u16(0x0303) + bytes(range(32, 64)) + b"\x00" + b"\xc0\x2f" + b"\x00" + u16(0)
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + u16(len(hs)) + hs


def quic_initial(version=1, first=0xC3) -> bytes:
    dcid = bytes.fromhex("8394c8f03e515708")
    hdr = u8(first) + u32(version) + u8(len(dcid)) + dcid + u8(0) + b"\x00" + b"\x44\x9e" + b"\x00\x00\x00\x02"
    return (hdr + os.urandom(1200 - len(hdr)))[:TRUNC]


def radius_packet(code=1, ident=5, attrs=((1, b"alice"), (4, socket.inet_aton("10.0.0.1")), (5, u32(0)))) -> bytes:
    body = b"".join(u8(t) + u8(len(v) + 2) + v for t, v in attrs)
    return u8(code) + u8(ident) + u16(20 + len(body)) + bytes(range(16)) + body


def dhcp_discover(xid=0x3903F326) -> bytes:
    mac = bytes.fromhex("001122334455")
    opts = b"\x35\x01\x01" + b"\x3d\x07\x01" + mac + b"\x37\x03\x01\x03\x06" + b"\xff"
    return (
        b"\x01\x01\x06\x00" + u32(xid) + u16(0) + u16(0x8000) + bytes(16) + mac + bytes(10) + bytes(64) + bytes(128)
        + b"\x63\x82\x53\x63" + opts
    )


def gtpv1(mtype: int, payload: bytes, teid=0x11223344, flags=0x32) -> bytes:
    extra = b"\x12\x34\x00\x00" if flags & 0x07 else b""
    return u8(flags) + u8(mtype) + u16(len(extra) + len(payload)) + u32(teid) + extra + payload


def ipv4_header(proto=1, payload_len=64) -> bytes:
    return (
        b"\x45\x00" + u16(20 + payload_len) + b"\x00\x01\x00\x00\x40" + u8(proto) + b"\x00\x00"
        + socket.inet_aton("10.1.1.1") + socket.inet_aton("8.8.8.8")
    )


def ber(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return u8(tag) + u8(n) + content
    if n < 0x100:
        return u8(tag) + b"\x81" + u8(n) + content
    return u8(tag) + b"\x82" + u16(n) + content


def ber_int(v: int) -> bytes:
    return ber(0x02, v.to_bytes(max(1, (v.bit_length() + 8) // 8), "big"))


def snmp_get(community=b"public", version=1) -> bytes:
    oid = ber(0x06, bytes.fromhex("2b06010201010100"))  # 1.3.6.1.2.1.1.1.0
    varbind = ber(0x30, ber(0x30, oid + b"\x05\x00"))
    pdu = ber(0xA0, ber_int(0x1234) + ber_int(0) + ber_int(0) + varbind)
    return ber(0x30, ber_int(version) + ber(0x04, community) + pdu)


def krb_as_req() -> bytes:
    realm = ber(0x1B, b"EXAMPLE.COM")
    cname = ber(0x30, ber(0xA0, ber_int(1)) + ber(0xA1, ber(0x30, ber(0x1B, b"alice"))))
    sname = ber(0x30, ber(0xA0, ber_int(2)) + ber(0xA1, ber(0x30, ber(0x1B, b"krbtgt") + ber(0x1B, b"EXAMPLE.COM"))))
    body = ber(
        0x30,
        ber(0xA0, ber(0x03, b"\x00\x40\x81\x00\x10"))
        + ber(0xA1, cname) + ber(0xA2, realm) + ber(0xA3, sname)
        + ber(0xA5, ber(0x18, b"20370913024805Z")) + ber(0xA7, ber_int(0x5DDBFC6F))
        + ber(0xA8, ber(0x30, ber_int(18) + ber_int(17) + ber_int(23))),
    )
    req = ber(0x30, ber(0xA1, ber_int(5)) + ber(0xA2, ber_int(10)) + ber(0xA4, body))
    return ber(0x6A, req)


def ldap_bind(msgid=1) -> bytes:
    bind = ber(0x60, ber_int(3) + ber(0x04, b"cn=admin,dc=example,dc=com") + ber(0x80, b"secret"))
    return ber(0x30, ber_int(msgid) + bind)


def ldap_bind_response(msgid=1) -> bytes:
    return ber(0x30, ber_int(msgid) + ber(0x61, b"\x0a\x01\x00" + ber(0x04, b"") + ber(0x04, b"")))


def mysql_greeting(version=b"8.0.36") -> bytes:
    body = (
        b"\x0a" + version + b"\x00" + struct.pack("<I", 11) + b"abcdefgh" + b"\x00" + struct.pack("<H", 0xFFFF)
        + b"\xff" + struct.pack("<H", 2) + struct.pack("<H", 0xDFFF) + b"\x15" + bytes(10) + b"ijklmnopqrst\x00"
        + b"caching_sha2_password\x00"
    )
    return len(body).to_bytes(3, "little") + b"\x00" + body


def pg_startup(user=b"postgres", db=b"app") -> bytes:
    params = b"user\x00" + user + b"\x00database\x00" + db + b"\x00\x00"
    return u32(8 + len(params)) + u32(0x00030000) + params


def mqtt_connect(client=b"sensor-1", level=4) -> bytes:
    var = u16(4) + b"MQTT" + u8(level) + b"\x02" + u16(60)
    pay = u16(len(client)) + client
    rem = var + pay
    return b"\x10" + u8(len(rem)) + rem


def ovpn_client_reset(sid=b"\x11\x22\x33\x44\x55\x66\x77\x88") -> bytes:
    return u8(7 << 3) + sid + b"\x00" + u32(0)  # P_CONTROL_HARD_RESET_CLIENT_V2, no acks, packet-id 0


def ovpn_server_reset(client_sid=b"\x11\x22\x33\x44\x55\x66\x77\x88") -> bytes:
    return u8(8 << 3) + b"\x99\x88\x77\x66\x55\x44\x33\x22" + b"\x01" + u32(0) + client_sid + u32(0)


def nb_encode(name: str) -> bytes:
    name = name.upper().ljust(15)[:15] + "\x00"
    enc = b"".join(bytes([0x41 + (ord(c) >> 4), 0x41 + (ord(c) & 0x0F)]) for c in name)
    return b"\x20" + enc + b"\x00"


def rtp_stream(n=5, pt=0, ssrc=0xDEADBEEF, seq=1000, ts=160000, size=160) -> list[bytes]:
    return [u8(0x80) + u8(pt) + u16(seq + i) + u32(ts + 160 * i) + u32(ssrc) + b"\xd5" * size for i in range(n)]


def rtcp_sr_sdes(ssrc=0xDEADBEEF) -> bytes:
    sr = u8(0x80) + u8(200) + u16(6) + u32(ssrc) + u32(0xE5F1A2B3) + u32(0x12345678) + u32(160000) + u32(10) + u32(1600)
    cname = b"user@host"
    chunk = u32(ssrc) + b"\x01" + u8(len(cname)) + cname + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    sdes = u8(0x81) + u8(202) + u16((4 + len(chunk)) // 4 - 1) + chunk
    return sr + sdes


def stun_binding(tid=b"\x01" * 12) -> bytes:
    attrs = u16(0x8022) + u16(8) + b"test-ua\x00" + u16(0x8028) + u16(4) + u32(0x12345678)
    return u16(0x0001) + u16(len(attrs)) + b"\x21\x12\xa4\x42" + tid + attrs


def tpkt(payload: bytes) -> bytes:
    return b"\x03\x00" + u16(4 + len(payload)) + payload


def rdp_cr(cookie=b"Cookie: mstshash=alice\r\n") -> bytes:
    neg = b"\x01\x00\x08\x00" + struct.pack("<I", 3)
    x224 = b"\xe0\x00\x00\x00\x00\x00" + cookie + neg
    return tpkt(u8(len(x224)) + x224)


def smb2_negotiate() -> bytes:
    hdr = b"\xfeSMB" + u16(64)[::-1] + bytes(2) + bytes(4) + b"\x00\x00" + b"\x00\x00" + bytes(4) + bytes(4) + bytes(8)
    hdr += bytes(4) + bytes(4) + bytes(8) + bytes(16)
    body = struct.pack("<HHHHI", 36, 2, 1, 0, 0) + bytes(16) + bytes(8) + struct.pack("<HH", 0x0202, 0x0210)
    msg = hdr + body
    return b"\x00" + len(msg).to_bytes(3, "big") + msg


def wg_init() -> bytes:
    return b"\x01\x00\x00\x00" + os.urandom(4) + os.urandom(32) + os.urandom(48) + os.urandom(28) + os.urandom(32)


def wg_resp() -> bytes:
    return b"\x02\x00\x00\x00" + os.urandom(8) + os.urandom(32) + os.urandom(16) + os.urandom(32)


def ntp_packet(mode=3, stratum=0) -> bytes:
    return u8((0 << 6) | (4 << 3) | mode) + u8(stratum) + u8(6) + u8(0xE9) + bytes(8) + bytes(4) + bytes(24) + os.urandom(8)


def dnp3_frame() -> bytes:
    hdr = b"\x05\x64\x05\xc9\x01\x00\x00\x04"
    crc = 0
    for b in hdr:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1
    return hdr + struct.pack("<H", ~crc & 0xFFFF)


def iax2_new() -> bytes:
    ies = b"\x0b\x02\x00\x02" + b"\x01\x04" + b"1000"
    return u16(0x8000 | 3) + u16(0) + u32(3) + b"\x00\x00" + b"\x06\x01" + ies


def q931_setup() -> bytes:
    uuie = b"\x7e" + u16(24) + b"\x05" + b"\x20\xa8\x06\x00\x08\x91\x4a\x00\x04" + bytes(14)
    return tpkt(b"\x08\x02\x12\x34\x05" + b"\x04\x03\x80\x90\xa5" + uuie)


def ike_sa_init() -> bytes:
    body = os.urandom(40)
    return os.urandom(8) + bytes(8) + b"\x21\x20\x22\x08" + u32(0) + u32(28 + len(body)) + body


def diameter_cer() -> bytes:
    avp = u32(264) + b"\x40" + (8 + 12).to_bytes(3, "big") + b"host.example"
    ln = 20 + len(avp)
    return b"\x01" + ln.to_bytes(3, "big") + b"\x80" + (257).to_bytes(3, "big") + u32(0) + u32(1) + u32(2) + avp


# ---------------------------------------------------------------------------------------------
# positives: (id, transport, orig_p, resp_p, orig payloads, resp payloads, expected)

CASES = [
    ("http", "tcp", 51000, 80, [b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5\r\n\r\n"],
     [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"], "http"),
    ("http-post-8080", "tcp", 51000, 8080, [b"POST /api HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"], [], "http"),
    ("http-response-only", "tcp", 80, 51000, [b"HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\n"], [], "http"),
    ("tls", "tcp", 51000, 443, [tls_client_hello()], [tls_server_hello()], "tls"),
    ("tls-appdata-midflow", "tcp", 443, 51000, [b"\x17\x03\x03\x00\x20" + os.urandom(32)], [], "tls"),
    ("dtls", "udp", 51000, 4433,
     [b"\x16\xfe\xfd" + bytes(8) + u16(60) + b"\x01" + (48).to_bytes(3, "big") + bytes(56)], [], "tls"),
    ("quic-v1", "udp", 51000, 443, [quic_initial(1)], [], "quic"),
    ("quic-v2", "udp", 51000, 443, [quic_initial(0x6B3343CF, 0xD3)], [], "quic"),
    ("quic-draft29", "udp", 51000, 8443, [quic_initial(0xFF00001D)], [], "quic"),
    ("gquic-q043", "udp", 51000, 443, [b"\x0d" + os.urandom(8) + b"Q043" + b"\x01" + os.urandom(1000)], [], "quic"),
    ("dns", "udp", 53000, 53, [dns_query()], [dns_response()], "dns"),
    ("dns-odd-port", "udp", 53000, 5300, [dns_query("mail.example.org", 15)], [], "dns"),
    ("dns-tcp", "tcp", 53000, 53, [u16(len(dns_query())) + dns_query()], [u16(len(dns_response())) + dns_response()],
     "dns"),
    ("mdns", "udp", 5353, 5353, [dns_query("_ipp._tcp.local", 12, 0, 0)], [], "mdns"),
    ("ssh", "tcp", 51000, 22, [b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n"], [b"SSH-2.0-OpenSSH_8.9\r\n"], "ssh"),
    ("ssh-server-first", "tcp", 51000, 22, [], [b"SSH-2.0-dropbear_2022.83\r\n"], "ssh"),
    ("smtp", "tcp", 51000, 25, [b"EHLO client.example.org\r\n"], [b"220 mx.example.com ESMTP Postfix\r\n"], "smtp"),
    ("smtp-banner-only", "tcp", 51000, 587, [], [b"220 mail.example.com ESMTP ready\r\n"], "smtp"),
    ("pop3", "tcp", 51000, 110, [b"CAPA\r\n"], [b"+OK Dovecot ready.\r\n"], "pop3"),
    ("imap", "tcp", 51000, 143, [b"a001 CAPABILITY\r\n"], [b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n"], "imap"),
    ("ftp", "tcp", 51000, 21, [b"USER anonymous\r\n", b"PASS guest\r\n"], [b"220 (vsFTPd 3.0.3)\r\n"], "ftp"),
    ("tftp-rrq", "udp", 51000, 69, [b"\x00\x01rfc1350.txt\x00octet\x00"], [], "tftp"),
    ("tftp-data-ack", "udp", 3445, 51000, [b"\x00\x03\x00\x01" + b"x" * 512], [b"\x00\x04\x00\x01"], "tftp"),
    ("sip-udp", "udp", 5060, 5060,
     [b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060\r\nCall-ID: a@b\r\n\r\n"],
     [b"SIP/2.0 100 Trying\r\nVia: SIP/2.0/UDP 10.0.0.1:5060\r\n\r\n"], "sip"),
    ("sip-tcp", "tcp", 51000, 5060, [b"REGISTER sip:example.com SIP/2.0\r\nCSeq: 1 REGISTER\r\n\r\n"], [], "sip"),
    ("rtp", "udp", 30000, 40392, rtp_stream(), [], "rtp"),
    ("rtcp", "udp", 30001, 40393, [rtcp_sr_sdes()], [], "rtcp"),
    ("stun", "udp", 51000, 3478, [stun_binding()], [], "stun"),
    ("irc", "tcp", 51000, 6667, [b"NICK alice\r\nUSER alice 0 * :Alice Liddell\r\n"],
     [b":irc.example.net NOTICE * :*** Looking up your hostname...\r\n"], "irc"),
    ("xmpp", "tcp", 51000, 5222,
     [b"<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client' "
      b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"], [], "xmpp"),
    ("radius", "udp", 51000, 1812, [radius_packet()], [radius_packet(2, 5, ((18, b"Welcome"),))], "radius"),
    ("dhcp", "udp", 68, 67, [dhcp_discover()], [], "dhcp"),
    ("dhcpv6", "udp", 546, 547,
     [b"\x01\xab\xcd\xef" + u16(1) + u16(10) + b"\x00\x03\x00\x01" + bytes.fromhex("001122334455")
      + u16(8) + u16(2) + u16(0)], [], "dhcpv6"),
    ("gtp-c-v1", "udp", 2123, 2123,
     [gtpv1(16, b"\x02" + bytes.fromhex("2143658709214365") + b"\x0e\x04" + b"\x0f\x01", teid=0)], [], "gtp-c"),
    ("gtp-c-v2", "udp", 51000, 2123,
     [b"\x48\x20" + u16(8 + 12) + u32(0) + b"\x00\x00\x01\x00" + b"\x01\x00\x08\x00" + bytes.fromhex("2143658709214365")],
     [], "gtp-c"),
    ("gtp-u", "udp", 2152, 2152, [gtpv1(0xFF, ipv4_header(1, 64) + bytes(64), flags=0x30)], [], "gtp-u"),
    ("gtp-u-seq", "udp", 2152, 2152, [gtpv1(0xFF, ipv4_header(17, 40) + bytes(40), flags=0x32)], [], "gtp-u"),
    ("gtp-prime", "udp", 51000, 3386, [b"\x2e\xf0" + u16(10) + u16(1) + bytes(10)], [], "gtp-prime"),
    ("bittorrent", "tcp", 51000, 51413,
     [b"\x13BitTorrent protocol" + bytes(8) + os.urandom(20) + b"-qB4500-" + os.urandom(12)], [], "bittorrent"),
    ("bittorrent-dht", "udp", 51000, 6881,
     [b"d1:ad2:id20:" + b"abcdefghij0123456789" + b"e1:q4:ping1:t2:aa1:y1:qe"], [], "bittorrent"),
    ("smb2", "tcp", 51000, 445, [smb2_negotiate()], [], "smb"),
    ("rdp", "tcp", 51000, 3389, [rdp_cr()], [], "rdp"),
    ("telnet", "tcp", 51000, 23, [b"\xff\xfd\x03\xff\xfb\x18\xff\xfb\x1f"], [b"\xff\xfd\x18\xff\xfd\x20"], "telnet"),
    ("snmp", "udp", 51000, 161, [snmp_get()], [], "snmp"),
    ("snmp-v1", "udp", 51000, 161, [snmp_get(b"private", 0)], [], "snmp"),
    ("ntp", "udp", 123, 123, [ntp_packet(3)], [ntp_packet(4, 2)], "ntp"),
    ("syslog", "udp", 51000, 514, [b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8"], [],
     "syslog"),
    ("kerberos-udp", "udp", 51000, 88, [krb_as_req()], [], "kerberos"),
    ("kerberos-tcp", "tcp", 51000, 88, [u32(len(krb_as_req())) + krb_as_req()], [], "kerberos"),
    ("ldap", "tcp", 51000, 389, [ldap_bind()], [ldap_bind_response()], "ldap"),
    ("mysql", "tcp", 51000, 3306, [], [mysql_greeting()], "mysql"),
    ("mariadb", "tcp", 51000, 3307, [], [mysql_greeting(b"5.5.5-10.11.6-MariaDB")], "mysql"),
    ("postgresql", "tcp", 51000, 5432, [pg_startup()], [b"R\x00\x00\x00\x08\x00\x00\x00\x00"], "postgresql"),
    ("postgresql-ssl", "tcp", 51000, 5432, [u32(8) + u32(80877103)], [b"S"], "postgresql"),
    ("redis", "tcp", 51000, 6379, [b"*1\r\n$4\r\nPING\r\n"], [b"+PONG\r\n"], "redis"),
    ("mqtt", "tcp", 51000, 1883, [mqtt_connect()], [b"\x20\x02\x00\x00"], "mqtt"),
    ("mqtt-3.1", "tcp", 51000, 1883, [b"\x10\x14" + u16(6) + b"MQIsdp\x03\x02" + u16(60) + u16(4) + b"abcd"], [],
     "mqtt"),
    ("openvpn-udp", "udp", 51000, 1194, [ovpn_client_reset()], [ovpn_server_reset()], "openvpn"),
    ("openvpn-tcp", "tcp", 51000, 443, [u16(14) + ovpn_client_reset()], [u16(26) + ovpn_server_reset()], "openvpn"),
    ("wireguard", "udp", 51000, 51820, [wg_init()], [wg_resp()], "wireguard"),
    ("socks5", "tcp", 51000, 1080, [b"\x05\x01\x00", b"\x05\x01\x00\x03\x0bexample.com\x01\xbb"],
     [b"\x05\x00"], "socks"),
    ("socks4", "tcp", 51000, 1080, [b"\x04\x01\x00\x50" + socket.inet_aton("93.184.216.34") + b"alice\x00"],
     [b"\x00\x5a" + bytes(6)], "socks"),
    ("netbios-ns", "udp", 137, 137, [u16(0x82A8) + u16(0x0110) + u16(1) + bytes(6) + nb_encode("WORKGROUP")
                                     + u16(0x20) + u16(1)], [], "netbios"),
    ("netbios-dgm", "udp", 138, 138, [b"\x11\x02" + u16(0x8d4f) + socket.inet_aton("192.168.1.5") + u16(138)
                                      + u16(200) + u16(0) + nb_encode("HOST1")[:-1] + b"\x00"
                                      + nb_encode("WORKGROUP")[:-1] + b"\x00" + b"\xffSMB" + bytes(40)], [],
     "netbios"),
    ("netbios-ssn", "tcp", 51000, 139, [b"\x81\x00" + u16(68) + nb_encode("SERVER") + nb_encode("CLIENT")],
     [b"\x82\x00\x00\x00"], "netbios"),
    ("ssdp", "udp", 51000, 1900,
     [b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\nST: ssdp:all\r\n\r\n"],
     [], "ssdp"),
    # extras
    ("llmnr", "udp", 51000, 5355, [dns_query("wpad", 1, 0x4242, 0)], [], "llmnr"),
    ("nntp", "tcp", 51000, 119, [b"MODE READER\r\n"], [b"200 news.example.com InterNetNews NNRP server ready\r\n"],
     "nntp"),
    ("rtsp", "tcp", 51000, 554, [b"OPTIONS rtsp://cam.local/stream RTSP/1.0\r\nCSeq: 1\r\n\r\n"],
     [b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"], "rtsp"),
    ("memcached", "tcp", 51000, 11211, [b"get user:1\r\n"], [b"VALUE user:1 0 5\r\nalice\r\nEND\r\n"], "memcached"),
    ("vnc", "tcp", 51000, 5900, [b"RFB 003.008\n"], [b"RFB 003.008\n"], "vnc"),
    ("dnp3", "tcp", 51000, 20000, [dnp3_frame()], [], "dnp3"),
    ("modbus", "tcp", 51000, 502, [b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x0a"],
     [b"\x00\x01\x00\x00\x00\x17\x01\x03\x14" + bytes(20)], "modbus"),
    ("mgcp", "udp", 2427, 2427, [b"RQNT 1201 aaln/1@rgw-2567.whatever.net MGCP 1.0\r\nX: 0123456789AC\r\n"],
     [b"200 1201 OK\r\n"], "mgcp"),
    ("iax2", "udp", 4569, 4569, [iax2_new()], [], "iax2"),
    ("h323", "tcp", 51000, 1720, [q931_setup()], [], "h323"),
    ("skinny", "tcp", 51000, 2000, [struct.pack("<III", 4, 0x14, 0x0000)], [struct.pack("<III", 4, 0x14, 0x0100)],
     "skinny"),
    ("dce_rpc", "tcp", 51000, 135, [b"\x05\x00\x0b\x03\x10\x00\x00\x00" + struct.pack("<HHI", 72, 0, 1) + bytes(56)],
     [], "dce_rpc"),
    ("bgp", "tcp", 51000, 179, [b"\xff" * 16 + u16(29) + b"\x01\x04" + u16(65001) + u16(180) + bytes(4) + b"\x00"],
     [], "bgp"),
    ("ike", "udp", 500, 500, [ike_sa_init()], [], "ike"),
    ("pptp", "tcp", 51000, 1723, [u16(156) + u16(1) + u32(0x1A2B3C4D) + u16(1) + bytes(146)], [], "pptp"),
    ("vxlan", "udp", 51000, 4789, [b"\x08\x00\x00\x00\x00\x01\x00\x00" + bytes(12) + b"\x08\x00" + ipv4_header()],
     [], "vxlan"),
    ("diameter", "tcp", 51000, 3868, [diameter_cer()], [], "diameter"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_positive(case) -> None:
    _id, transport, op, rp, orig, resp, want = case
    assert classify(transport, op, rp, orig, resp) == want


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_positive_with_roles_swapped(case) -> None:
    # the flow engine may pick the server as originator (mid-stream capture, UDP sent from a
    # well-known port): the answer must not depend on which side is called the originator
    _id, transport, op, rp, orig, resp, want = case
    assert classify(transport, rp, op, resp, orig) == want


def test_every_required_protocol_has_a_positive_case() -> None:
    covered = {c[6] for c in CASES}
    assert set(REQUIRED) <= covered
    assert covered <= set(services())
    assert len(services()) >= 41


# ---------------------------------------------------------------------------------------------
# ports are hints only


@pytest.mark.parametrize(
    "transport,op,rp,orig,resp,want",
    [
        ("tcp", 51000, 443, [b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"], [], "http"),
        ("tcp", 51000, 80, [tls_client_hello()], [tls_server_hello()], "tls"),
        ("tcp", 51000, 2222, [b"SSH-2.0-OpenSSH_9.6\r\n"], [b"SSH-2.0-OpenSSH_9.6\r\n"], "ssh"),
        ("tcp", 51000, 22, [b"GET / HTTP/1.1\r\n\r\n"], [], "http"),
        ("tcp", 51000, 53, [tls_client_hello()], [], "tls"),
        ("udp", 51000, 53, [quic_initial()], [], "quic"),
        ("udp", 51000, 123, [dns_query()], [], "dns"),
        ("tcp", 51000, 8443, [b"\x13BitTorrent protocol" + bytes(48)], [], "bittorrent"),
        ("tcp", 51000, 25, [b"a1 LOGIN alice secret\r\n"], [b"* OK IMAP ready\r\n"], "imap"),
        ("udp", 51000, 9999, [b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"], [], "sip"),
        ("tcp", 51000, 80, [mqtt_connect()], [], "mqtt"),
        ("udp", 51000, 5060, [stun_binding()], [], "stun"),
        ("tcp", 40000, 40001, [pg_startup()], [], "postgresql"),
        ("udp", 40000, 40001, [wg_init()], [wg_resp()], "wireguard"),
        ("udp", 40000, 40001, [krb_as_req()], [], "kerberos"),
        ("tcp", 40000, 40001, [], [mysql_greeting()], "mysql"),
    ],
)
def test_payload_beats_port(transport, op, rp, orig, resp, want) -> None:
    assert classify(transport, op, rp, orig, resp) == want


def test_port_breaks_ties_for_weak_evidence() -> None:
    one_rtp = rtp_stream(1)
    assert classify("udp", 40000, 40002, one_rtp, []) == ""  # a lone RTP-shaped datagram is not enough...
    assert classify("udp", 40000, 5004, one_rtp, []) == "rtp"  # ...unless on an RTP port
    banner = [b"220 service ready\r\n"]
    assert classify("tcp", 51000, 21, [], banner) == "ftp"
    assert classify("tcp", 51000, 25, [], banner) == "smtp"
    assert classify("tcp", 51000, 4444, [], banner) == ""
    text = [b"login: "]
    assert classify("tcp", 23, 51000, text, []) == "telnet"
    assert classify("tcp", 2300, 51000, text, []) == ""


def test_mdns_vs_dns_vs_netbios() -> None:
    q = dns_query("printer.local", 1, 0, 0)
    assert classify("udp", 5353, 5353, [q], []) == "mdns"
    assert classify("udp", 40000, 53, [q], []) == "dns"
    nbns = u16(1) + u16(0x0110) + u16(1) + bytes(6) + nb_encode("FILESRV") + u16(0x20) + u16(1)
    assert classify("udp", 137, 137, [nbns], []) == "netbios"


def test_gtp_control_vs_user_plane() -> None:
    echo = gtpv1(1, b"", teid=0, flags=0x32)
    assert classify("udp", 2123, 2123, [echo], []) == "gtp-c"
    assert classify("udp", 2152, 2152, [echo], []) == "gtp-u"
    gpdu = gtpv1(0xFF, ipv4_header(6, 40) + bytes(40), flags=0x30)
    assert classify("udp", 40000, 40001, [gpdu], []) == "gtp-u"  # G-PDU with an inner IPv4 header


def test_truncated_payloads() -> None:
    # 1024-byte truncation must not break length-consistency checks
    big = dns_response(ips=tuple(f"10.0.{i // 250}.{i % 250}" for i in range(200)))
    assert len(big) > TRUNC
    assert classify("udp", 51000, 53, [dns_query()], [big[:TRUNC]]) == "dns"
    long_uri = b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\n\r\n"
    assert classify("tcp", 51000, 8081, [long_uri[:TRUNC]], []) == "http"
    assert classify("udp", 51000, 443, [quic_initial()[:TRUNC]], []) == "quic"


# ---------------------------------------------------------------------------------------------
# negatives


def _random_flows(rng: random.Random, n: int, ports) -> list[tuple]:
    flows = []
    for _ in range(n):
        tr = rng.choice(("tcp", "udp"))
        orig = [rng.randbytes(rng.randint(1, 1024)) for _ in range(rng.randint(0, 6))]
        resp = [rng.randbytes(rng.randint(1, 1024)) for _ in range(rng.randint(0, 6))]
        flows.append((tr, rng.choice(ports), rng.choice(ports), orig, resp))
    return flows


def test_random_bytes_are_mostly_unknown() -> None:
    rng = random.Random(1234)
    ephemeral = [p for p in range(20000, 60000, 7)]
    hits = Counter(classify(*f) for f in _random_flows(rng, 3000, ephemeral))
    assert hits[""] / 3000 >= 0.99, hits


def test_random_bytes_on_well_known_ports_are_mostly_unknown() -> None:
    rng = random.Random(99)
    ports = sorted({p for d in detectors() for p in d.ports})
    hits = Counter(classify(*f) for f in _random_flows(rng, 3000, ports))
    assert hits[""] / 3000 >= 0.97, hits


def test_text_and_degenerate_inputs() -> None:
    assert classify("tcp", 1, 2, [], []) == ""
    assert classify("tcp", 1, 2, [b"a"], [b"a"]) == ""
    assert classify("tcp", 1, 2, [b"hello, are you there?"], [b"yes i am!"]) == ""
    assert classify("udp", 1, 2, [b"\x00" * 64], []) == ""
    assert classify("udp", 1, 2, [b"\xff" * 64], [b"\xff" * 64]) == ""
    assert classify("icmp", 1, 2, [b"GET / HTTP/1.1\r\n\r\n"], []) == ""
    assert classify("TCP", 1, 2, [b"GET / HTTP/1.1\r\n\r\n"], []) == "http"
    assert classify("tcp", 1, 2, [bytearray(b"SSH-2.0-x\r\n")], []) == "ssh"
    assert classify("tcp", None, "x", ([b"SSH-2.0-x\r\n"]), []) == "ssh"


# ---------------------------------------------------------------------------------------------
# the detector table


def test_detector_table_is_well_formed() -> None:
    names = set()
    for d in detectors():
        assert d.name == d.name.lower() and d.name.strip() == d.name
        assert d.transports <= {"tcp", "udp", "sctp"} and d.transports
        assert all(0 < p < 65536 for p in d.ports)
        assert not (d.port_only and not d.ports)
        names.add(d.name)
    assert set(REQUIRED) <= names
    assert HINT_BONUS + 40 >= THRESHOLD  # weak evidence + hint port passes
    assert DEFINITE >= EXIT  # a definite signature stops the scan


def test_docs_list_every_service() -> None:
    doc = (REPO / "docs" / "dpi.md").read_text()
    for name in services():
        assert f"`{name}`" in doc, name


# ---------------------------------------------------------------------------------------------
# speed


def test_speed_100k_flows() -> None:
    rng = random.Random(7)
    mix = [c[1:6] for c in CASES] + _random_flows(rng, 40, list(range(20000, 20100)))
    flows = [mix[i % len(mix)] for i in range(100_000)]
    t = time.process_time()
    for f in flows:
        classify(*f)
    dt = time.process_time() - t
    print(f"\n100k flows classified in {dt:.2f} s CPU")
    # generous bound (shared, slow CI machines); typically well under a second
    assert dt < 10


# ---------------------------------------------------------------------------------------------
# corpus: agreement with nDPI (temporary dpkt-based reader; the end-to-end test replaces it)


def _corpus_root() -> Path | None:
    env = os.environ.get("LAWTAP_CORPUS")
    root = Path(env) if env else REPO.parent / "shared" / "corpus"
    return root if root.is_dir() else None


# nDPI protocol (first component of application_name) -> accepted lawtap services.
# The STARTTLS / implicit-TLS variants accept both the clear-text protocol and tls.
NDPI_MAP: dict[str, set[str]] = {
    "HTTP": {"http"}, "HTTP_Proxy": {"http"}, "HTTP_Connect": {"http"}, "TLS": {"tls"}, "DTLS": {"tls"},
    "QUIC": {"quic"}, "DNS": {"dns"}, "MDNS": {"mdns"}, "LLMNR": {"llmnr"}, "SSH": {"ssh"}, "SMTP": {"smtp"},
    "SMTPS": {"smtp", "tls"}, "POP3": {"pop3"}, "POPS": {"pop3", "tls"}, "IMAP": {"imap"}, "IMAPS": {"imap", "tls"},
    "FTP_CONTROL": {"ftp"}, "FTPS": {"ftp", "tls"}, "TFTP": {"tftp"}, "SIP": {"sip"}, "RTP": {"rtp"},
    "RTCP": {"rtcp"}, "STUN": {"stun"}, "IRC": {"irc"}, "Jabber": {"xmpp"}, "Radius": {"radius"},
    "RADIUS": {"radius"}, "DHCP": {"dhcp"}, "DHCPV6": {"dhcpv6"}, "BitTorrent": {"bittorrent"}, "SMBv1": {"smb"},
    "SMBv23": {"smb"}, "RDP": {"rdp"}, "Telnet": {"telnet"}, "SNMP": {"snmp"}, "NTP": {"ntp"},
    "Syslog": {"syslog"}, "Kerberos": {"kerberos"}, "LDAP": {"ldap"}, "MySQL": {"mysql"},
    "PostgreSQL": {"postgresql"}, "Redis": {"redis"}, "MQTT": {"mqtt"}, "OpenVPN": {"openvpn"},
    "WireGuard": {"wireguard"}, "SOCKS": {"socks"}, "NetBIOS": {"netbios"}, "SSDP": {"ssdp"}, "NNTP": {"nntp"},
    "RTSP": {"rtsp"}, "Memcached": {"memcached"}, "VNC": {"vnc"}, "DNP3": {"dnp3"}, "Modbus": {"modbus"},
    "MGCP": {"mgcp"}, "IAX": {"iax2"}, "H323": {"h323"}, "CiscoSkinny": {"skinny"}, "DCERPC": {"dce_rpc"},
    "BGP": {"bgp"}, "IPsec": {"ike"}, "PPTP": {"pptp"}, "L2TP": {"l2tp"}, "VXLAN": {"vxlan"},
    "Diameter": {"diameter"},
}
_GTP_SUB = {"GTP_C": {"gtp-c"}, "GTP_U": {"gtp-u"}, "GTP_PRIME": {"gtp-prime"}}


def expected_services(label: str) -> set[str] | None:
    parts = label.split(".")
    if parts[0] == "GTP":
        return _GTP_SUB.get(parts[1] if len(parts) > 1 else "", {"gtp-c", "gtp-u", "gtp-prime"})
    return NDPI_MAP.get(parts[0])


def _ip(b: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(b) == 16 else socket.AF_INET, b)


def _read_flows(path: Path, maxp: int = 6, trunc: int = TRUNC) -> list[tuple]:
    """Group TCP/UDP payloads of a capture by bidirectional 5-tuple: (proto, orig ip, orig port,
    resp ip, resp port, orig payloads, resp payloads).  The originator is the SYN sender, else
    the sender of the first packet.  GTP-U tunnels also yield their inner flows."""
    dpkt = pytest.importorskip("dpkt")

    def l3(lt, buf):
        if lt == 1:
            d = dpkt.ethernet.Ethernet(buf).data
            if isinstance(d, dpkt.pppoe.PPPoE):
                d = d.data.data if isinstance(d.data, dpkt.ppp.PPP) else d.data
            return d
        if lt == 113:
            return dpkt.sll.SLL(buf).data
        if lt == 276:
            return dpkt.sll2.SLL2(buf).data
        off = 4 if lt in (0, 108) else 0 if lt in (101, 12, 14) else None
        if off is None or len(buf) <= off:
            return None
        v = buf[off] >> 4
        return dpkt.ip.IP(buf[off:]) if v == 4 else dpkt.ip6.IP6(buf[off:]) if v == 6 else None

    def transport(ip, depth):
        if isinstance(ip, dpkt.ip.IP):
            if ip.offset:  # non-first fragment
                return
        elif not isinstance(ip, dpkt.ip6.IP6):
            return
        l4 = ip.data
        if isinstance(l4, dpkt.tcp.TCP):
            yield "tcp", _ip(ip.src), l4.sport, _ip(ip.dst), l4.dport, l4.flags, l4.seq, bytes(l4.data)
        elif isinstance(l4, dpkt.udp.UDP):
            data = bytes(l4.data)
            yield "udp", _ip(ip.src), l4.sport, _ip(ip.dst), l4.dport, 0, 0, data
            if depth == 0 and 2152 in (l4.sport, l4.dport) and len(data) > 8 and data[0] & 0xE0 == 0x20 and data[1] == 0xFF:
                off = 12 if data[0] & 0x07 else 8
                nxt = data[11] if data[0] & 0x04 and len(data) > 11 else 0
                while nxt and off < len(data) and data[off]:
                    off += data[off] * 4
                    nxt = data[off - 1] if off <= len(data) else 0
                inner = data[off:]
                if inner:
                    try:
                        v = inner[0] >> 4
                        iip = dpkt.ip.IP(inner) if v == 4 else dpkt.ip6.IP6(inner) if v == 6 else None
                    except Exception:
                        iip = None
                    if iip is not None:
                        yield from transport(iip, 1)

    flows: dict[tuple, dict] = {}
    with open(path, "rb") as f:
        magic = f.read(4)
        f.seek(0)
        rd = dpkt.pcapng.Reader(f) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(f)
        lt = rd.datalink()
        for _ts, buf in rd:
            try:
                pkts = list(transport(l3(lt, buf), 0))
            except Exception:
                continue
            for proto, sip, sp, dip, dp, flags, seq, data in pkts:
                a, b = (sip, sp), (dip, dp)
                key = (proto,) + tuple(sorted([a, b]))
                fl = flows.get(key)
                if fl is None:
                    fl = flows[key] = {"orig": a, "o": [], "r": [], "seen": set(), "syn": False}
                if proto == "tcp" and flags & dpkt.tcp.TH_SYN and not flags & dpkt.tcp.TH_ACK and not fl["syn"]:
                    fl["syn"] = True
                    if fl["orig"] != a:  # SYN sender is the originator
                        fl["orig"] = a
                        fl["o"], fl["r"] = fl["r"], fl["o"]
                if not data:
                    continue
                d = "o" if a == fl["orig"] else "r"
                if proto == "tcp":  # skip retransmissions
                    k = (d, seq, len(data))
                    if k in fl["seen"]:
                        continue
                    fl["seen"].add(k)
                if len(fl[d]) < maxp:
                    fl[d].append(data[:trunc])
    out = []
    for key, fl in flows.items():
        if fl["o"] or fl["r"]:
            o = fl["orig"]
            r = key[1] if key[2] == o else key[2]
            out.append((key[0], o[0], o[1], r[0], r[1], fl["o"], fl["r"]))
    return out


_OUT_LINE = re.compile(
    r"\s*\d+\s+(TCP|UDP)\s+(\S+):(\d+) <-> (\S+):(\d+) \[proto: [\d.]+/([^\]]+)\].*?\[Confidence: ([^\]]+)\]"
)


def _ndpi_labels(capdir: Path) -> dict[tuple, tuple[str, str | None]]:
    """{(proto, endpoint, endpoint): (nDPI label, confidence or None)}; nDPI's own published .out
    is preferred over the locally computed flows.tsv (which has no confidence)."""
    labels: dict[tuple, tuple[str, str | None]] = {}
    tsv = capdir / "oracle" / "ndpi-local" / "flows.tsv"
    if tsv.exists():
        with open(tsv, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                proto = {"6": "tcp", "17": "udp"}.get(row["proto"], row["proto"])
                k = (proto,) + tuple(sorted([(row["src_ip"], int(row["src_port"])), (row["dst_ip"], int(row["dst_port"]))]))
                labels.setdefault(k, (row["application_name"], None))
    for out in sorted((capdir / "oracle" / "upstream" / "ndpi").glob("*.out")):
        for line in out.read_text(errors="replace").splitlines():
            m = _OUT_LINE.match(line)
            if m:
                pr, a, ap, b, bp, lab, conf = m.groups()
                k = (pr.lower(),) + tuple(sorted([(a.strip("[]"), int(ap)), (b.strip("[]"), int(bp))]))
                labels[k] = (lab, conf)
    return labels


def corpus_agreement(root: Path):
    per = defaultdict(lambda: [0, 0])  # nDPI protocol -> [agree, total]
    per_dpi = defaultdict(lambda: [0, 0])  # the same, without nDPI's port/IP guesses
    misses = []
    for capdir in sorted(p for p in root.glob("*/*") if p.is_dir()):
        caps = [f for f in sorted(capdir.iterdir()) if f.suffix in (".pcap", ".pcapng", ".cap")]
        if not caps:
            continue
        labels = _ndpi_labels(capdir)
        for cap in caps:
            for proto, oi, op, ri, rp, o, r in _read_flows(cap):
                k = (proto,) + tuple(sorted([(oi, op), (ri, rp)]))
                if k not in labels:
                    continue
                label, conf = labels[k]
                want = expected_services(label)
                if want is None:
                    continue
                got = classify(proto, op, rp, o, r)
                name = label.split(".")[0]
                ok = got in want
                per[name][0] += ok
                per[name][1] += 1
                if conf is None or conf.startswith("DPI"):
                    per_dpi[name][0] += ok
                    per_dpi[name][1] += 1
                if not ok:
                    misses.append((f"{capdir.parent.name}/{capdir.name}", proto, f"{oi}:{op}", f"{ri}:{rp}", label,
                                   conf, got))
    return per, per_dpi, misses


def format_table(per, per_dpi) -> str:
    lines = [f"{'nDPI protocol':16s} {'agree':>9s} {'%':>6s}   {'DPI-confidence only':>20s}"]
    for name in sorted(per, key=lambda k: (-per[k][1], k)):
        a, n = per[name]
        ad, nd = per_dpi.get(name, (0, 0))
        lines.append(f"{name:16s} {a:4d}/{n:<4d} {100 * a / n:6.1f}   {ad:4d}/{nd:<4d}")
    a, n = sum(v[0] for v in per.values()), sum(v[1] for v in per.values())
    ad, nd = sum(v[0] for v in per_dpi.values()), sum(v[1] for v in per_dpi.values())
    lines.append(f"{'TOTAL':16s} {a:4d}/{n:<4d} {100 * a / max(n, 1):6.1f}   {ad:4d}/{nd:<4d} "
                 f"({100 * ad / max(nd, 1):.1f} %)")
    return "\n".join(lines)


def test_corpus_agreement_with_ndpi() -> None:
    root = _corpus_root()
    if root is None:
        pytest.skip("shared corpus not present (set LAWTAP_CORPUS)")
    pytest.importorskip("dpkt")
    per, per_dpi, misses = corpus_agreement(root)
    table = format_table(per, per_dpi)
    print("\n" + table)
    agree, total = sum(v[0] for v in per.values()), sum(v[1] for v in per.values())
    agree_d, total_d = sum(v[0] for v in per_dpi.values()), sum(v[1] for v in per_dpi.values())
    assert total >= 500, table
    detail = "\n".join(map(str, misses[:40]))
    assert agree / total >= 0.95, f"{table}\n{detail}"
    assert agree_d / total_d >= 0.97, f"{table}\n{detail}"
