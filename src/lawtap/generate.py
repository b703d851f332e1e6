"""Deterministic demo traffic: ``lawtap generate --seed 7 --sessions 300 -o samples/demo.pcap``.

Why lawtap ships its own generator: the demo and the end-to-end tests need a capture that
exercises every decoder path (IPv4/IPv6, VLAN, GTP-U, GRE, fragments, RST, half-open
connections) and every DPI parser (HTTP, DNS, TLS, SMTP, SSH, SIP/RTP, FTP), with a ground
truth to compare the analysis against. Real captures cannot be redistributed (they hold
personal data, which is the very thing lawtap is accountable for), and third-party
generators are not byte-for-byte reproducible. So this module builds the traffic with
:mod:`lawtap.craft` and returns a manifest of exactly what it wrote.

Determinism: everything flows from one ``random.Random(seed)`` and a fixed base timestamp;
no wall clock, no ``hash()``, no set iteration. The same seed gives the same bytes on every
platform and Python version that keeps ``random.Random``'s documented reproducibility.

All addresses are from documentation ranges (RFC 5737 / RFC 3849 / RFC 7042) or private
space, and all names are under ``example.*``, so the demo never points at a real party.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import random
import struct
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

from lawtap.craft import (
    LINKTYPE_ETHERNET,
    Conversation,
    EthernetLink,
    Frame,
    GreTunnel,
    GtpuTunnel,
    PingExchange,
    TcpSession,
    UdpExchange,
    VlanSpec,
    merge_frames,
    write_pcap,
)

BASE_TS = 1_710_406_800.0
"""2024-03-14T09:00:00Z: the fixed start of every generated capture."""

GATEWAY_MAC = "00:00:5e:00:53:01"

# --------------------------------------------------------------------------------------------
# Application payload builders (public: tests use them to build protocol-exact payloads)
# --------------------------------------------------------------------------------------------

DNS_A = 1
DNS_CNAME = 5
DNS_TXT = 16
DNS_AAAA = 28
DNS_OPT = 41

DnsRecord = tuple[str | None, int, int, bytes]
"""(owner name or None for "the question name", type, TTL, RDATA)."""


def dns_name(name: str) -> bytes:
    """A domain name in DNS wire format (uncompressed labels, root terminated)."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        if label:
            encoded = label.encode("ascii")
            if len(encoded) > 63:
                raise ValueError(f"DNS label too long: {label!r}")
            out += bytes([len(encoded)]) + encoded
    return bytes(out) + b"\x00"


def dns_message(
    ident: int,
    qname: str,
    qtype: int,
    *,
    response: bool = False,
    answers: Sequence[DnsRecord] = (),
    rcode: int = 0,
    edns_payload: int | None = None,
) -> bytes:
    """A DNS query or response with one question (class IN).

    Answers whose owner is None point at the question name with a compression pointer
    (offset 12), as servers do. ``edns_payload`` adds an OPT record advertising that UDP size.
    """
    flags = (0x8180 | (rcode & 0xF)) if response else 0x0100
    additional = 1 if edns_payload is not None else 0
    out = bytearray(struct.pack("!HHHHHH", ident, flags, 1, len(answers), 0, additional))
    out += dns_name(qname) + struct.pack("!HH", qtype, 1)
    for owner, rtype, ttl, rdata in answers:
        out += b"\xc0\x0c" if owner is None else dns_name(owner)
        out += struct.pack("!HHIH", rtype, 1, ttl, len(rdata)) + rdata
    if edns_payload is not None:
        out += b"\x00" + struct.pack("!HHIH", DNS_OPT, edns_payload, 0, 0)
    return bytes(out)


def dns_txt(text: str) -> bytes:
    """TXT RDATA: the text cut into <=255-byte character-strings."""
    raw = text.encode()
    return b"".join(
        bytes([len(raw[i : i + 255])]) + raw[i : i + 255] for i in range(0, len(raw), 255)
    )


def http_request(
    method: str, host: str, path: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
) -> bytes:
    """HTTP/1.1 request; a body gets a Content-Length header."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"] + [f"{k}: {v}" for k, v in headers]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def http_response(
    status: int, reason: str, headers: Sequence[tuple[str, str]] = (), body: bytes = b""
) -> bytes:
    """HTTP/1.1 response framed with Content-Length (never chunked: the demo stays simple)."""
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def png_image(rng: random.Random, size: int) -> bytes:
    """A structurally valid PNG (signature, IHDR, IDAT, IEND with correct CRCs) of roughly
    ``size`` bytes; the IDAT content is random, so it is an image only to a parser."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack("!I", len(data)) + kind + data + struct.pack("!I", zlib.crc32(kind + data))
        )

    side = rng.randint(16, 512)
    ihdr = struct.pack("!IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", rng.randbytes(max(0, size - 57)))
        + chunk(b"IEND", b"")
    )


def _u8(data: bytes) -> bytes:
    return bytes([len(data)]) + data


def _u16(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _u24(data: bytes) -> bytes:
    return struct.pack("!I", len(data))[1:] + data


def _tls_ext(ext_type: int, data: bytes) -> bytes:
    return struct.pack("!H", ext_type) + _u16(data)


def tls_record(content_type: int, payload: bytes, version: int = 0x0303) -> bytes:
    """One TLS record (22 handshake, 20 change_cipher_spec, 21 alert, 23 application data)."""
    return struct.pack("!BH", content_type, version) + _u16(payload)


def tls_client_hello(
    rng: random.Random, sni: str, alpn: Sequence[str] = ("h2", "http/1.1")
) -> bytes:
    """A TLS 1.3 ClientHello record shaped like a current browser's, with SNI and ALPN.

    Only the fields a passive analyser reads (SNI, ALPN, versions, cipher list) carry
    meaning; keys and randoms are random bytes from ``rng``.
    """
    ciphers = [
        0x1301,
        0x1302,
        0x1303,
        0xC02B,
        0xC02F,
        0xC02C,
        0xC030,
        0xCCA9,
        0xCCA8,
        0xC013,
        0xC014,
        0x009C,
        0x009D,
    ]
    sni_entry = b"\x00" + _u16(sni.encode())
    extensions = b"".join(
        [
            _tls_ext(0x0000, _u16(sni_entry)),
            _tls_ext(0x0017, b""),  # extended_master_secret
            _tls_ext(0xFF01, b"\x00"),  # renegotiation_info
            _tls_ext(0x000A, _u16(struct.pack("!3H", 0x001D, 0x0017, 0x0018))),  # supported_groups
            _tls_ext(0x000B, b"\x01\x00"),  # ec_point_formats
            _tls_ext(0x0023, b""),  # session_ticket
            _tls_ext(0x0010, _u16(b"".join(_u8(p.encode()) for p in alpn))),
            _tls_ext(0x0005, b"\x01\x00\x00\x00\x00"),  # status_request
            _tls_ext(
                0x000D,
                _u16(
                    struct.pack(
                        "!8H", 0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601
                    )
                ),
            ),
            _tls_ext(0x0012, b""),  # signed_certificate_timestamp
            _tls_ext(
                0x0033, _u16(struct.pack("!H", 0x001D) + _u16(rng.randbytes(32)))
            ),  # key_share
            _tls_ext(0x002D, b"\x01\x01"),  # psk_key_exchange_modes
            _tls_ext(0x002B, _u8(struct.pack("!2H", 0x0304, 0x0303))),  # supported_versions
        ]
    )
    body = (
        struct.pack("!H", 0x0303)
        + rng.randbytes(32)
        + _u8(rng.randbytes(32))
        + _u16(struct.pack(f"!{len(ciphers)}H", *ciphers))
        + b"\x01\x00"
        + _u16(extensions)
    )
    return tls_record(22, b"\x01" + _u24(body), version=0x0301)


def tls_server_hello(rng: random.Random, session_id: bytes) -> bytes:
    """A TLS 1.3 ServerHello record (TLS_AES_128_GCM_SHA256, x25519) echoing the session id."""
    extensions = _tls_ext(0x002B, struct.pack("!H", 0x0304)) + _tls_ext(
        0x0033, struct.pack("!H", 0x001D) + _u16(rng.randbytes(32))
    )
    body = (
        struct.pack("!H", 0x0303)
        + rng.randbytes(32)
        + _u8(session_id)
        + struct.pack("!HB", 0x1301, 0)
        + _u16(extensions)
    )
    return tls_record(22, b"\x02" + _u24(body))


def tls_app_data(rng: random.Random, size: int) -> bytes:
    """Opaque TLS 1.3 application-data records carrying ``size`` plaintext bytes in total
    (each record adds the inner content type and a 16-byte tag)."""
    out = bytearray()
    while size > 0:
        chunk = min(size, 16384)
        out += tls_record(23, rng.randbytes(chunk + 17))
        size -= chunk
    return bytes(out)


def ssh_packet(payload: bytes, rng: random.Random) -> bytes:
    """An unencrypted SSH binary packet (RFC 4253 §6) padded to the 8-byte block size."""
    padding = 4 + (-(len(payload) + 9) % 8)
    return (
        struct.pack("!IB", len(payload) + padding + 1, padding) + payload + rng.randbytes(padding)
    )


def _ssh_string(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def ssh_kexinit(rng: random.Random, *, server: bool) -> bytes:
    """SSH_MSG_KEXINIT offering what OpenSSH 9 offers (trimmed)."""
    kex = b"curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ext-info-c"
    if server:
        kex = (
            b"curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,"
            b"kex-strict-s-v00@openssh.com"
        )
    hostkey = b"ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256"
    cipher = (
        b"chacha20-poly1305@openssh.com,aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes128-ctr"
    )
    mac = b"umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-256"
    comp = b"none,zlib@openssh.com"
    lists = [kex, hostkey, cipher, cipher, mac, mac, comp, comp, b"", b""]
    payload = (
        b"\x14" + rng.randbytes(16) + b"".join(_ssh_string(x) for x in lists) + b"\x00" + bytes(4)
    )
    return ssh_packet(payload, rng)


def ssh_encrypted(rng: random.Random, size: int) -> bytes:
    """A chacha20-poly1305 SSH packet (the cipher the KEXINITs above negotiate) as it looks on
    the wire: encrypted length, encrypted padded payload, 16-byte tag; all opaque."""
    body = 8 * max(2, (size + 5 + 4 + 7) // 8)
    return rng.randbytes(4 + body + 16)


def rtp_packet(
    seq: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    *,
    payload_type: int = 0,
    marker: bool = False,
) -> bytes:
    """RTP (RFC 3550) fixed header plus payload; payload type 0 is PCMU."""
    return (
        struct.pack(
            "!BBHII",
            0x80,
            payload_type | (0x80 if marker else 0),
            seq & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc,
        )
        + payload
    )


def sdp_offer(user: str, session_id: int, address: str, port: int) -> bytes:
    """Minimal audio SDP offering PCMU and telephone events, like a softphone sends."""
    lines = [
        "v=0",
        f"o={user} {session_id} {session_id} IN IP4 {address}",
        "s=Talk",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def sip_message(
    start_line: str,
    headers: Sequence[tuple[str, str]],
    body: bytes = b"",
    content_type: str = "application/sdp",
) -> bytes:
    """A SIP request or response with Content-Length (and Content-Type when there is a body)."""
    lines = [start_line] + [f"{k}: {v}" for k, v in headers]
    if body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua network packet record flow evidence warrant interception "
    "capture analysis session report window buffer stream protocol address server client "
    "river mountain harbour garden market station library theatre museum bridge"
).split()


def lorem(rng: random.Random, size: int) -> str:
    """About ``size`` characters of filler prose (exactly ``size`` long)."""
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:size]


def html_page(rng: random.Random, title: str, size: int) -> bytes:
    """An HTML document of exactly ``size`` bytes (or the skeleton, if larger)."""
    head = (
        '<!DOCTYPE html>\n<html lang="en">\n'
        f'<head><meta charset="utf-8"><title>{title}</title></head>\n'
        f"<body>\n<h1>{title}</h1>\n<p>"
    )
    tail = "</p>\n</body>\n</html>\n"
    return (head + lorem(rng, max(0, size - len(head) - len(tail))) + tail).encode()


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Host:
    """A client machine on the captured LAN."""

    v4: str
    v6: str
    mac: str
    name: str


@dataclass(frozen=True)
class Server:
    """A server reached through the gateway."""

    name: str
    v4: str
    v6: str


WEB_SERVERS = (
    Server("www.example.com", "203.0.113.10", "2001:db8:2::10"),
    Server("www.example.org", "203.0.113.11", "2001:db8:2::11"),
    Server("api.example.net", "203.0.113.12", "2001:db8:2::12"),
    Server("cdn.example.com", "203.0.113.13", "2001:db8:2::13"),
    Server("static.example.org", "203.0.113.14", "2001:db8:2::14"),
    Server("news.example", "203.0.113.15", "2001:db8:2::15"),
    Server("shop.example.net", "203.0.113.16", "2001:db8:2::16"),
    Server("login.example.com", "203.0.113.17", "2001:db8:2::17"),
)
RESOLVER = Server("resolver.example.net", "198.51.100.53", "2001:db8:53::53")
MAIL = Server("mail.example.org", "198.51.100.25", "2001:db8:3::25")
SSH_HOST = Server("git.example.com", "198.51.100.22", "2001:db8:3::22")
FTP_HOST = Server("ftp.example.net", "198.51.100.21", "2001:db8:3::21")
SIP_PROXY = Server("sip.example.com", "198.51.100.60", "2001:db8:3::60")
MEDIA_GW = Server("media.example.com", "198.51.100.61", "2001:db8:3::61")
OTHER_NAMES = (
    "ntp.example.org",
    "updates.example.com",
    "telemetry.example.net",
    "images.example.org",
    "fonts.example.com",
    "mx.example.org",
    "vpn.example.net",
    "wiki.example",
)

GUARANTEED: tuple[tuple[str, dict[str, Any]], ...] = (
    ("http_get", {}),
    ("http_post", {}),
    ("dns", {"family": 4}),
    ("dns", {"family": 6}),
    ("dns_tcp", {}),
    ("tls", {}),
    ("tls", {"family": 6}),
    ("smtp", {}),
    ("ssh", {}),
    ("sip", {}),
    ("ftp", {}),
    ("icmp", {}),
    ("gtpu_http", {}),
    ("gre_dns", {}),
    ("udp_fragmented", {}),
    ("tcp_refused", {}),
    ("tcp_syn_unanswered", {}),
    ("http_get", {"vlans": [100]}),
    ("dns", {"vlans": [100]}),
    ("tls", {"vlans": [200]}),
)
"""One of each interesting case, emitted first so even a small run shows every path."""

MIX: tuple[tuple[str, int], ...] = (
    ("dns", 28),
    ("tls", 22),
    ("http_get", 18),
    ("http_post", 5),
    ("icmp", 6),
    ("ssh", 4),
    ("smtp", 3),
    ("sip", 2),
    ("ftp", 2),
    ("tcp_refused", 1),
    ("tcp_syn_unanswered", 1),
)
"""Relative weights for the remaining sessions: roughly an office uplink's flow mix."""

_VLAN_CAPABLE = {"dns", "tls", "http_get", "http_post", "icmp", "ssh"}


@dataclass
class FlowRecord:
    """Ground truth for one flow in the capture (one 5-tuple, both directions).

    ``app`` is the application protocol ("" for connections that never carried data);
    ``encap`` names what wraps the flow ("vlan:100", "gtpu:<up>/<down>", "gre:<key>",
    "fragmented", or ""). For ICMP flows ``client_port`` is the echo identifier.
    Addresses are the inner (end-host) ones.
    """

    scenario: int
    kind: str
    app: str
    transport: str
    family: int
    client: str
    client_port: int
    server: str
    server_port: int
    encap: str
    packets: int
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class DemoGenerator:
    """Builds the scenarios, each as one or more conversations with its own child RNG, and
    interleaves them by time; :func:`generate_frames` is the entry point."""

    def __init__(self, seed: int, sessions: int) -> None:
        if sessions < 0:
            raise ValueError("sessions must be >= 0")
        self.seed = seed
        self.sessions = sessions
        self.rng = random.Random(seed)
        self.hosts = [
            Host(
                f"10.1.0.{20 + i}",
                f"2001:db8:1::{20 + i:x}",
                f"00:00:5e:00:53:{20 + i:02x}",
                f"pc{i:02d}.corp.example",
            )
            for i in range(40)
        ]
        self.streams: list[list[Frame]] = []
        self.flows: list[FlowRecord] = []
        self.scenarios: Counter[str] = Counter()
        self._ports_in_use: set[tuple[str, int]] = set()
        self._scenario = 0

    # -- helpers ---------------------------------------------------------------------------

    def _child_rng(self) -> random.Random:
        return random.Random(self.rng.getrandbits(64))

    def _port(self, address: str) -> int:
        """An ephemeral port not yet used by this address (so flows never collide)."""
        while True:
            port = self.rng.randint(32768, 60999)
            if (address, port) not in self._ports_in_use:
                self._ports_in_use.add((address, port))
                return port

    def _family(self, opts: dict[str, Any], v6_share: float = 0.3) -> int:
        if "family" in opts:
            return int(opts["family"])
        return 6 if self.rng.random() < v6_share else 4

    @staticmethod
    def _addr(obj: Host | Server, family: int) -> str:
        return obj.v4 if family == 4 else obj.v6

    def _link(self, host: Host, opts: dict[str, Any]) -> EthernetLink:
        vlans: list[VlanSpec] = list(opts.get("vlans", ()))
        return EthernetLink(host.mac, GATEWAY_MAC, vlans=vlans)

    @staticmethod
    def _encap_name(opts: dict[str, Any], default: str = "") -> str:
        vlans = opts.get("vlans")
        return "vlan:" + ".".join(str(v) for v in vlans) if vlans else default

    def _record(
        self,
        conv: Conversation,
        kind: str,
        app: str,
        transport: str,
        client_port: int,
        server_port: int,
        encap: str = "",
    ) -> None:
        frames = conv.frames
        self.streams.append(frames)
        self.flows.append(
            FlowRecord(
                scenario=self._scenario,
                kind=kind,
                app=app,
                transport=transport,
                family=conv.version,
                client=_ntop(conv.client),
                client_port=client_port,
                server=_ntop(conv.server),
                server_port=server_port,
                encap=encap,
                packets=len(frames),
                bytes=sum(len(f) for _, f in frames),
            )
        )

    def _tcp(
        self,
        host: Host,
        server_addr: str,
        dport: int,
        start: float,
        opts: dict[str, Any],
        rtt: float | None = None,
    ) -> TcpSession:
        family = 4 if "." in server_addr else 6
        client = self._addr(host, family)
        return TcpSession(
            client,
            server_addr,
            self._port(client),
            dport,
            start=start,
            rtt=rtt if rtt is not None else self.rng.uniform(0.008, 0.09),
            link=self._link(host, opts),
            rng=self._child_rng(),
        )

    def _udp(
        self,
        host: Host,
        server_addr: str,
        dport: int,
        start: float,
        opts: dict[str, Any],
        sport: int | None = None,
    ) -> UdpExchange:
        family = 4 if "." in server_addr else 6
        client = self._addr(host, family)
        return UdpExchange(
            client,
            server_addr,
            self._port(client) if sport is None else sport,
            dport,
            start=start,
            rtt=self.rng.uniform(0.004, 0.04),
            link=self._link(host, opts),
            rng=self._child_rng(),
        )

    def _http_date(self, ts: float) -> str:
        return formatdate(ts, usegmt=True)

    # -- scenario: HTTP --------------------------------------------------------------------

    def _body_size(self) -> int:
        """Response sizes: mostly small, a few larger objects (300 sessions stay ~1.5 MB)."""
        bucket = self.rng.random()
        if bucket < 0.5:
            return self.rng.randint(200, 1500)
        if bucket < 0.94:
            return self.rng.randint(1500, 8000)
        return self.rng.randint(8000, 18000)

    def _http_exchange(self, s: TcpSession, server: Server, post: bool) -> None:
        """One request/response on an open connection."""
        rng = s.rng
        ua = rng.choice(
            [
                "Mozilla/5.0 (X11; Linux x86_64; rv:123.0) Gecko/20100101 Firefox/123.0",
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                "(KHTML, like Gecko) Chrome/122.0 Safari/537.36",
                "curl/8.5.0",
            ]
        )
        if post:
            payload = json.dumps(
                {
                    "item": lorem(rng, rng.randint(10, 40)),
                    "qty": rng.randint(1, 9),
                    "ref": rng.getrandbits(32),
                },
                separators=(",", ":"),
            ).encode()
            path = rng.choice(["/api/v1/items", "/api/v1/orders", "/login", "/upload"])
            request = http_request(
                "POST",
                server.name,
                path,
                [
                    ("User-Agent", ua),
                    ("Accept", "application/json"),
                    ("Content-Type", "application/json"),
                ],
                payload,
            )
            body = json.dumps({"status": "created", "id": rng.getrandbits(40)}).encode()
            response = http_response(
                201,
                "Created",
                [
                    ("Date", self._http_date(s.now)),
                    ("Server", "nginx/1.24.0"),
                    ("Content-Type", "application/json"),
                ],
                body,
            )
        else:
            path = rng.choice(
                [
                    "/",
                    "/index.html",
                    "/news/today",
                    "/img/logo.png",
                    "/assets/app.js",
                    "/about",
                    "/missing",
                ]
            )
            request = http_request(
                "GET",
                server.name,
                path,
                [
                    ("User-Agent", ua),
                    ("Accept", "*/*"),
                    ("Accept-Language", "en-GB,en;q=0.8"),
                    ("Connection", "keep-alive"),
                ],
            )
            if path == "/missing":
                status, reason, ctype = 404, "Not Found", "text/html; charset=utf-8"
                body = html_page(rng, "404 Not Found", 153)
            elif path.endswith(".png"):
                status, reason, ctype = 200, "OK", "image/png"
                body = png_image(rng, self._body_size())
            elif path.endswith(".js"):
                status, reason, ctype = 200, "OK", "application/javascript"
                body = ("/* app */\n" + lorem(rng, self._body_size())).encode()
            else:
                status, reason, ctype = 200, "OK", "text/html; charset=utf-8"
                body = html_page(rng, server.name, self._body_size())
            response = http_response(
                status,
                reason,
                [
                    ("Date", self._http_date(s.now)),
                    ("Server", "nginx/1.24.0"),
                    ("Content-Type", ctype),
                    ("Connection", "keep-alive"),
                ],
                body,
            )
        s.client_send(request, ack=False)
        s.server_send(response, think=rng.uniform(0.0005, 0.02))

    def http(self, start: float, opts: dict[str, Any], *, post: bool) -> None:
        """HTTP/1.1 keep-alive connection with one to three requests."""
        host = self.rng.choice(self.hosts)
        server = self.rng.choice(WEB_SERVERS)
        family = self._family(opts)
        s = self._tcp(host, self._addr(server, family), 80, start, opts)
        s.handshake()
        for n in range(1 if post else self.rng.choice([1, 1, 2, 3])):
            if n:
                s.wait(self.rng.uniform(0.05, 1.5))
            self._http_exchange(s, server, post and n == 0)
        s.wait(self.rng.uniform(0.1, 2.0)).close(from_client=self.rng.random() < 0.7)
        self._record(
            s,
            "http_post" if post else "http_get",
            "http",
            "tcp",
            s.sport,
            80,
            self._encap_name(opts),
        )

    def gtpu_http(self, start: float, opts: dict[str, Any]) -> None:
        """An HTTP session of a mobile subscriber, seen on the S1-U interface inside GTP-U."""
        server = self.rng.choice(WEB_SERVERS)
        ue = f"100.64.{self.rng.randint(0, 255)}.{self.rng.randint(2, 254)}"
        tunnel = GtpuTunnel(
            "10.200.0.1",
            "10.200.0.2",
            teid_up=self.rng.getrandbits(32),
            teid_down=self.rng.getrandbits(32),
        )
        s = TcpSession(
            ue,
            server.v4,
            self._port(ue),
            80,
            start=start,
            rtt=self.rng.uniform(0.03, 0.08),
            link=EthernetLink("00:00:5e:00:53:a1", "00:00:5e:00:53:a2"),
            tunnel=tunnel,
            rng=self._child_rng(),
            client_ttl=64,
            server_ttl=50,
        )
        s.handshake()
        self._http_exchange(s, server, post=False)
        s.close()
        self._record(
            s,
            "gtpu_http",
            "http",
            "tcp",
            s.sport,
            80,
            f"gtpu:{tunnel.teid_up:#x}/{tunnel.teid_down:#x}",
        )

    # -- scenario: DNS ---------------------------------------------------------------------

    def _dns_answer(
        self, rng: random.Random, qname: str, qtype: int
    ) -> tuple[int, list[DnsRecord]]:
        if qname.startswith("nonexistent"):
            return 3, []
        servers = {s.name: s for s in (*WEB_SERVERS, MAIL, SSH_HOST, FTP_HOST, SIP_PROXY)}
        known = servers.get(qname)
        records: list[DnsRecord] = []
        owner: str | None = None
        if rng.random() < 0.2:
            target = f"edge{rng.randint(1, 9)}.cdn.example.net"
            records.append((None, DNS_CNAME, 300, dns_name(target)))
            owner = target
        ttl = rng.choice([60, 300, 3600])
        if qtype == DNS_A:
            addrs = (
                [known.v4]
                if known
                else [f"203.0.113.{rng.randint(100, 250)}" for _ in range(rng.randint(1, 2))]
            )
            records += [(owner, DNS_A, ttl, _pton(a)) for a in addrs]
        else:
            addrs = [known.v6] if known else [f"2001:db8:2::{rng.randint(0x100, 0xFFF):x}"]
            records += [(owner, DNS_AAAA, ttl, _pton(a)) for a in addrs]
        return 0, records

    def _qname(self) -> str:
        r = self.rng.random()
        if r < 0.08:
            return f"nonexistent-{self.rng.getrandbits(24):06x}.example"
        if r < 0.6:
            return self.rng.choice(WEB_SERVERS).name
        return self.rng.choice(OTHER_NAMES)

    def dns(self, start: float, opts: dict[str, Any]) -> None:
        """A stub-resolver lookup: A (and often AAAA in parallel from the same socket)."""
        host = self.rng.choice(self.hosts)
        family = self._family(opts)
        u = self._udp(host, self._addr(RESOLVER, family), 53, start, opts)
        qname = self._qname()
        qtypes = (
            [DNS_A, DNS_AAAA]
            if self.rng.random() < 0.5
            else [self.rng.choice([DNS_A, DNS_A, DNS_AAAA])]
        )
        ids = [u.rng.getrandbits(16) for _ in qtypes]
        for ident, qtype in zip(ids, qtypes, strict=True):
            u.request(dns_message(ident, qname, qtype))
        for ident, qtype in zip(ids, qtypes, strict=True):
            rcode, answers = self._dns_answer(u.rng, qname, qtype)
            u.response(
                dns_message(ident, qname, qtype, response=True, answers=answers, rcode=rcode)
            )
        self._record(u, "dns", "dns", "udp", u.sport, 53, self._encap_name(opts))

    def dns_tcp(self, start: float, opts: dict[str, Any]) -> None:
        """A TXT lookup over TCP (as after a truncated UDP answer): two-byte length prefixes."""
        host = self.rng.choice(self.hosts)
        s = self._tcp(host, RESOLVER.v4, 53, start, opts, rtt=self.rng.uniform(0.004, 0.03))
        ident = s.rng.getrandbits(16)
        qname = "example.com"
        query = dns_message(ident, qname, DNS_TXT, edns_payload=1232)
        answers: list[DnsRecord] = [
            (None, DNS_TXT, 3600, dns_txt(f"v=verify{i} " + lorem(s.rng, s.rng.randint(80, 240))))
            for i in range(8)
        ]
        response = dns_message(
            ident, qname, DNS_TXT, response=True, answers=answers, edns_payload=1232
        )
        s.handshake()
        s.client_send(struct.pack("!H", len(query)) + query, ack=False)
        s.server_send(struct.pack("!H", len(response)) + response)
        s.close()
        self._record(s, "dns_tcp", "dns", "tcp", s.sport, 53)

    def gre_dns(self, start: float, opts: dict[str, Any]) -> None:
        """A branch office's DNS lookup crossing a keyed GRE site-to-site tunnel."""
        client = f"172.16.5.{self.rng.randint(10, 200)}"
        tunnel = GreTunnel("192.0.2.1", "192.0.2.2", key=1001)
        u = UdpExchange(
            client,
            "172.16.0.53",
            self._port(client),
            53,
            start=start,
            rtt=self.rng.uniform(0.01, 0.03),
            link=EthernetLink("00:00:5e:00:53:b1", "00:00:5e:00:53:b2"),
            tunnel=tunnel,
            rng=self._child_rng(),
        )
        ident = u.rng.getrandbits(16)
        qname = self.rng.choice(WEB_SERVERS).name
        u.request(dns_message(ident, qname, DNS_A))
        rcode, answers = self._dns_answer(u.rng, qname, DNS_A)
        u.response(dns_message(ident, qname, DNS_A, response=True, answers=answers, rcode=rcode))
        self._record(u, "gre_dns", "dns", "udp", u.sport, 53, "gre:1001")

    def udp_fragmented(self, start: float, opts: dict[str, Any]) -> None:
        """An EDNS0 answer too big for one packet, so the server's IP layer fragments it."""
        host = self.rng.choice(self.hosts)
        u = self._udp(host, RESOLVER.v4, 53, start, opts)
        ident = u.rng.getrandbits(16)
        qname = "keys.example.org"
        answers: list[DnsRecord] = [
            (None, DNS_TXT, 3600, dns_txt(lorem(u.rng, 230))) for _ in range(16)
        ]
        u.request(dns_message(ident, qname, DNS_TXT, edns_payload=4096))
        u.response(
            dns_message(ident, qname, DNS_TXT, response=True, answers=answers, edns_payload=4096),
            fragment_mtu=1500,
        )
        self._record(u, "udp_fragmented", "dns", "udp", u.sport, 53, "fragmented")

    # -- scenario: TLS ---------------------------------------------------------------------

    def tls(self, start: float, opts: dict[str, Any]) -> None:
        """A TLS 1.3 connection: ClientHello (SNI, ALPN), ServerHello, then opaque records."""
        host = self.rng.choice(self.hosts)
        server = self.rng.choice(WEB_SERVERS)
        family = self._family(opts, v6_share=0.35)
        s = self._tcp(host, self._addr(server, family), 443, start, opts)
        rng = s.rng
        s.handshake()
        hello = tls_client_hello(
            rng, server.name, alpn=rng.choice([("h2", "http/1.1"), ("http/1.1",)])
        )
        session_id = hello[
            44:76
        ]  # record(5) + handshake header(4) + version(2) + random(32) + len(1)
        s.client_send(hello, ack=False)
        server_flight = (
            tls_server_hello(rng, session_id)
            + tls_record(20, b"\x01")
            + tls_app_data(
                rng, rng.randint(2000, 3500)
            )  # EncryptedExtensions, Certificate, Verify, Finished
        )
        s.server_send(server_flight, think=rng.uniform(0.001, 0.01))
        s.client_send(tls_record(20, b"\x01") + tls_app_data(rng, 36), ack=False)
        for n in range(rng.choice([1, 1, 1, 2])):
            if n:
                s.wait(rng.uniform(0.1, 3.0))
            s.client_send(tls_app_data(rng, rng.randint(90, 700)), ack=False)
            s.server_send(tls_app_data(rng, self._body_size()), think=rng.uniform(0.001, 0.03))
        s.wait(rng.uniform(0.2, 5.0)).client_send(tls_app_data(rng, 2), ack=False)  # close_notify
        s.close()
        self._record(s, "tls", "tls", "tcp", s.sport, 443, self._encap_name(opts))

    # -- scenario: SMTP --------------------------------------------------------------------

    def smtp(self, start: float, opts: dict[str, Any]) -> None:
        """Mail submission: EHLO, MAIL FROM, RCPT TO, DATA with a small MIME message, QUIT."""
        host = self.rng.choice(self.hosts)
        family = self._family(opts, v6_share=0.2)
        s = self._tcp(host, self._addr(MAIL, family), 25, start, opts)
        rng = s.rng
        sender = rng.choice(["alice", "bob", "carol", "dave"]) + "@corp.example"
        rcpt = rng.choice(["erin", "frank", "grace"]) + "@example.org"
        msg_id = f"{rng.getrandbits(48):012x}@corp.example"
        boundary = f"=_{rng.getrandbits(64):016x}"
        attachment = _b64_lines(rng.randbytes(rng.randint(300, 1500)))
        text = _wrap(lorem(rng, rng.randint(200, 900)))
        message = (
            f"From: <{sender}>\r\nTo: <{rcpt}>\r\nSubject: {lorem(rng, 30).capitalize()}\r\n"
            f"Date: {formatdate(start, usegmt=True)}\r\nMessage-ID: <{msg_id}>\r\n"
            "MIME-Version: 1.0\r\n"
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
            f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="notes.bin"\r\n'
            f"Content-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--{boundary}--\r\n"
        )
        dialogue = [
            (False, "220 mail.example.org ESMTP Postfix\r\n"),
            (True, f"EHLO {host.name}\r\n"),
            (
                False,
                "250-mail.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
                "250-8BITMIME\r\n250 SMTPUTF8\r\n",
            ),
            (True, f"MAIL FROM:<{sender}>\r\n"),
            (False, "250 2.1.0 Ok\r\n"),
            (True, f"RCPT TO:<{rcpt}>\r\n"),
            (False, "250 2.1.5 Ok\r\n"),
            (True, "DATA\r\n"),
            (False, "354 End data with <CR><LF>.<CR><LF>\r\n"),
            (True, message + ".\r\n"),
            (False, f"250 2.0.0 Ok: queued as {rng.getrandbits(40):010X}\r\n"),
            (True, "QUIT\r\n"),
            (False, "221 2.0.0 Bye\r\n"),
        ]
        s.handshake()
        _talk(s, dialogue)
        s.close(from_client=False)
        self._record(s, "smtp", "smtp", "tcp", s.sport, 25, self._encap_name(opts))

    # -- scenario: SSH ---------------------------------------------------------------------

    def ssh(self, start: float, opts: dict[str, Any]) -> None:
        """SSH: banners, key exchange in clear, then an interactive encrypted session."""
        host = self.rng.choice(self.hosts)
        family = self._family(opts, v6_share=0.3)
        s = self._tcp(host, self._addr(SSH_HOST, family), 22, start, opts)
        rng = s.rng
        s.handshake()
        s.server_send(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n", ack=False)
        s.client_send(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u2\r\n", ack=False)
        s.client_send(ssh_kexinit(rng, server=False), ack=False)
        s.server_send(ssh_kexinit(rng, server=True), ack=False)
        s.client_send(
            ssh_packet(b"\x1e" + _ssh_string(rng.randbytes(32)), rng), ack=False
        )  # KEX_ECDH_INIT
        host_key = _ssh_string(b"ssh-ed25519") + _ssh_string(rng.randbytes(32))
        signature = _ssh_string(b"ssh-ed25519") + _ssh_string(rng.randbytes(64))
        reply = (
            b"\x1f"
            + _ssh_string(host_key)
            + _ssh_string(rng.randbytes(32))
            + _ssh_string(signature)
        )
        s.server_send(ssh_packet(reply, rng) + ssh_packet(b"\x15", rng), ack=False)  # + NEWKEYS
        s.client_send(ssh_packet(b"\x15", rng), ack=False)
        for _ in range(rng.randint(3, 10)):
            s.wait(rng.uniform(0.1, 1.5))
            s.client_send(ssh_encrypted(rng, rng.choice([20, 36, 52, 100])), ack=False)
            s.server_send(ssh_encrypted(rng, rng.choice([20, 36, 120, 600, 2400])))
        s.close()
        self._record(s, "ssh", "ssh", "tcp", s.sport, 22, self._encap_name(opts))

    # -- scenario: SIP + RTP ---------------------------------------------------------------

    def sip(self, start: float, opts: dict[str, Any]) -> None:
        """A short call: INVITE/100/180/200/ACK with SDP, PCMU RTP both ways, BYE/200."""
        host = self.rng.choice(self.hosts)
        # A softphone binds 5060 once; a second call from the same host uses another port.
        sip_port = 5060 if (host.v4, 5060) not in self._ports_in_use else self._port(host.v4)
        self._ports_in_use.add((host.v4, sip_port))
        sig = self._udp(host, SIP_PROXY.v4, 5060, start, opts, sport=sip_port)
        rng = sig.rng
        rtp_port = 2 * rng.randint(8000, 16000)
        self._ports_in_use.add((host.v4, rtp_port))
        gw_port = 2 * rng.randint(10000, 15000)
        call_id = f"{rng.getrandbits(64):016x}@{host.v4}"
        from_tag, to_tag = f"{rng.getrandbits(32):08x}", f"{rng.getrandbits(32):08x}"
        branch = f"z9hG4bK{rng.getrandbits(40):010x}"
        callee = rng.choice(["bob", "helpdesk", "1001"])
        via = ("Via", f"SIP/2.0/UDP {host.v4}:{sip_port};branch={branch};rport")
        frm = ("From", f'"Alice" <sip:alice@example.com>;tag={from_tag}')
        to = ("To", f"<sip:{callee}@example.com>")
        to_tagged = ("To", f"<sip:{callee}@example.com>;tag={to_tag}")
        cid = ("Call-ID", call_id)
        offer = sdp_offer("alice", rng.getrandbits(31), host.v4, rtp_port)
        answer = sdp_offer("gw", rng.getrandbits(31), MEDIA_GW.v4, gw_port)
        uri = f"sip:{callee}@example.com"
        sig.request(
            sip_message(
                f"INVITE {uri} SIP/2.0",
                [
                    via,
                    ("Max-Forwards", "70"),
                    frm,
                    to,
                    cid,
                    ("CSeq", "1 INVITE"),
                    ("Contact", f"<sip:alice@{host.v4}:{sip_port}>"),
                    ("User-Agent", "Linphone/5.2.0"),
                ],
                offer,
            )
        )
        sig.response(sip_message("SIP/2.0 100 Trying", [via, frm, to, cid, ("CSeq", "1 INVITE")]))
        sig.response(
            sip_message("SIP/2.0 180 Ringing", [via, frm, to_tagged, cid, ("CSeq", "1 INVITE")]),
            think=rng.uniform(0.2, 1.0),
        )
        sig.response(
            sip_message(
                "SIP/2.0 200 OK",
                [
                    via,
                    frm,
                    to_tagged,
                    cid,
                    ("CSeq", "1 INVITE"),
                    ("Contact", f"<sip:{callee}@{SIP_PROXY.v4}:5060>"),
                ],
                answer,
            ),
            think=rng.uniform(1.0, 4.0),
        )
        ack_via = (
            "Via",
            f"SIP/2.0/UDP {host.v4}:{sip_port};branch=z9hG4bK{rng.getrandbits(40):010x};rport",
        )
        sig.request(
            sip_message(
                f"ACK sip:{callee}@{SIP_PROXY.v4}:5060 SIP/2.0",
                [ack_via, ("Max-Forwards", "70"), frm, to_tagged, cid, ("CSeq", "1 ACK")],
            )
        )
        # Media: 20 ms PCMU frames from both ends, starting right after the ACK.
        media = UdpExchange(
            host.v4,
            MEDIA_GW.v4,
            rtp_port,
            gw_port,
            start=sig.now,
            rtt=0.02,
            link=self._link(host, opts),
            rng=self._child_rng(),
        )
        ssrc_out, ssrc_in = rng.getrandbits(32), rng.getrandbits(32)
        seq_out, seq_in = rng.getrandbits(16), rng.getrandbits(16)
        ts_out, ts_in = rng.getrandbits(32), rng.getrandbits(32)
        t0 = sig.now + 0.01
        offset_in = rng.uniform(0.002, 0.018)
        for n in range(rng.randint(20, 40)):
            media.send(
                rtp_packet(
                    seq_out + n, ts_out + 160 * n, ssrc_out, rng.randbytes(160), marker=n == 0
                ),
                True,
                at=t0 + 0.02 * n,
            )
            media.send(
                rtp_packet(seq_in + n, ts_in + 160 * n, ssrc_in, rng.randbytes(160), marker=n == 0),
                False,
                at=t0 + offset_in + 0.02 * n,
            )
        sig.wait_until(media.now)
        bye_via = (
            "Via",
            f"SIP/2.0/UDP {host.v4}:{sip_port};branch=z9hG4bK{rng.getrandbits(40):010x};rport",
        )
        sig.request(
            sip_message(
                f"BYE sip:{callee}@{SIP_PROXY.v4}:5060 SIP/2.0",
                [bye_via, ("Max-Forwards", "70"), frm, to_tagged, cid, ("CSeq", "2 BYE")],
            ),
            think=0.01,
        )
        sig.response(
            sip_message("SIP/2.0 200 OK", [bye_via, frm, to_tagged, cid, ("CSeq", "2 BYE")])
        )
        self._record(sig, "sip", "sip", "udp", sip_port, 5060, self._encap_name(opts))
        self._record(media, "sip", "rtp", "udp", rtp_port, gw_port, self._encap_name(opts))

    # -- scenario: FTP ---------------------------------------------------------------------

    def ftp(self, start: float, opts: dict[str, Any]) -> None:
        """Anonymous FTP: login, PASV, RETR of one file over a data connection, QUIT."""
        host = self.rng.choice(self.hosts)
        ctl = self._tcp(host, FTP_HOST.v4, 21, start, opts)
        rng = ctl.rng
        data_port = rng.randint(50000, 50999)
        pasv_address = f"{FTP_HOST.v4.replace('.', ',')},{data_port >> 8},{data_port & 0xFF}"
        filename = rng.choice(["README.txt", "pub/release-notes.txt", "pub/firmware.bin"])
        ctl.handshake()
        _talk(
            ctl,
            [
                (False, "220 (vsFTPd 3.0.3)\r\n"),
                (True, "USER anonymous\r\n"),
                (False, "331 Please specify the password.\r\n"),
                (True, "PASS guest@corp.example\r\n"),
                (False, "230 Login successful.\r\n"),
                (True, "SYST\r\n"),
                (False, "215 UNIX Type: L8\r\n"),
                (True, "PWD\r\n"),
                (False, '257 "/" is the current directory\r\n'),
                (True, "TYPE I\r\n"),
                (False, "200 Switching to Binary mode.\r\n"),
                (True, "PASV\r\n"),
                (False, f"227 Entering Passive Mode ({pasv_address}).\r\n"),
            ],
        )
        data = TcpSession(
            host.v4,
            FTP_HOST.v4,
            self._port(host.v4),
            data_port,
            start=ctl.now + 0.0005,
            rtt=ctl.rtt,
            link=self._link(host, opts),
            rng=self._child_rng(),
        )
        data.handshake()
        ctl.wait_until(data.now)
        content = (
            rng.randbytes(rng.randint(3000, 15000))
            if filename.endswith(".bin")
            else _wrap(lorem(rng, rng.randint(1500, 8000))).encode()
        )
        _talk(
            ctl,
            [
                (True, f"RETR {filename}\r\n"),
                (
                    False,
                    f"150 Opening BINARY mode data connection for {filename} "
                    f"({len(content)} bytes).\r\n",
                ),
            ],
        )
        data.wait_until(ctl.now).server_send(content).close(from_client=False)
        ctl.wait_until(data.now)
        _talk(
            ctl,
            [
                (False, "226 Transfer complete.\r\n"),
                (True, "QUIT\r\n"),
                (False, "221 Goodbye.\r\n"),
            ],
        )
        ctl.close(from_client=False)
        self._record(ctl, "ftp", "ftp", "tcp", ctl.sport, 21, self._encap_name(opts))
        self._record(data, "ftp", "ftp-data", "tcp", data.sport, data_port, self._encap_name(opts))

    # -- scenario: ICMP and failed TCP -----------------------------------------------------

    def icmp(self, start: float, opts: dict[str, Any]) -> None:
        """A few pings to a server (ICMP or ICMPv6), now and then with a lost reply."""
        host = self.rng.choice(self.hosts)
        family = self._family(opts)
        server = self.rng.choice((*WEB_SERVERS, RESOLVER))
        p = PingExchange(
            self._addr(host, family),
            self._addr(server, family),
            start=start,
            rtt=self.rng.uniform(0.005, 0.06),
            link=self._link(host, opts),
            rng=self._child_rng(),
        )
        count = self.rng.randint(3, 5)
        lost = [self.rng.randrange(count)] if self.rng.random() < 0.2 else []
        p.ping(count, lost=lost)
        self._record(
            p,
            "icmp",
            "icmp",
            "icmp" if family == 4 else "icmpv6",
            p.ident,
            0,
            self._encap_name(opts),
        )

    def tcp_refused(self, start: float, opts: dict[str, Any]) -> None:
        """A connection attempt to a closed port, rejected with RST."""
        host = self.rng.choice(self.hosts)
        server = self.rng.choice(WEB_SERVERS)
        port = self.rng.choice([8080, 8443, 23, 3306])
        s = self._tcp(host, self._addr(server, self._family(opts)), port, start, opts)
        s.refused()
        self._record(s, "tcp_refused", "", "tcp", s.sport, port, self._encap_name(opts))

    def tcp_syn_unanswered(self, start: float, opts: dict[str, Any]) -> None:
        """A SYN into a black hole (filtered port): the client retries and gives up."""
        host = self.rng.choice(self.hosts)
        port = self.rng.choice([445, 3389, 5900])
        s = self._tcp(host, "203.0.113.99", port, start, opts)
        s.syn_timeout(retries=2)
        self._record(s, "tcp_syn_unanswered", "", "tcp", s.sport, port, self._encap_name(opts))

    # -- driver ----------------------------------------------------------------------------

    def plan(self) -> list[tuple[str, dict[str, Any]]]:
        """Which scenarios to run: the guaranteed ones first, then a weighted random mix."""
        chosen = list(GUARANTEED[: self.sessions])
        kinds = [k for k, _ in MIX]
        weights = [w for _, w in MIX]
        for _ in range(self.sessions - len(chosen)):
            kind = self.rng.choices(kinds, weights)[0]
            opts: dict[str, Any] = {}
            if kind in _VLAN_CAPABLE and self.rng.random() < 0.02:
                opts["vlans"] = [self.rng.choice([100, 200])]
            chosen.append((kind, opts))
        return chosen

    def run(self) -> list[Frame]:
        """Build every scenario and return all frames interleaved in time order."""
        span = max(20.0, self.sessions * 0.25)
        handlers: dict[str, Callable[[float, dict[str, Any]], None]] = {
            "http_get": lambda t, o: self.http(t, o, post=False),
            "http_post": lambda t, o: self.http(t, o, post=True),
            "dns": self.dns,
            "dns_tcp": self.dns_tcp,
            "tls": self.tls,
            "smtp": self.smtp,
            "ssh": self.ssh,
            "sip": self.sip,
            "ftp": self.ftp,
            "icmp": self.icmp,
            "gtpu_http": self.gtpu_http,
            "gre_dns": self.gre_dns,
            "udp_fragmented": self.udp_fragmented,
            "tcp_refused": self.tcp_refused,
            "tcp_syn_unanswered": self.tcp_syn_unanswered,
        }
        for index, (kind, opts) in enumerate(self.plan()):
            self._scenario = index
            start = round(BASE_TS + self.rng.uniform(0.0, span), 6)
            handlers[kind](start, opts)
            self.scenarios[kind] += 1
        return merge_frames(*self.streams)

    def manifest(self, frames: Sequence[Frame]) -> dict[str, Any]:
        """What was generated: counts per scenario and protocol, totals, and every flow."""
        protocols: Counter[str] = Counter()
        packets_by_protocol: Counter[str] = Counter()
        for flow in self.flows:
            label = flow.app or flow.transport
            protocols[label] += 1
            packets_by_protocol[label] += flow.packets
        encaps: Counter[str] = Counter(f.encap.split(":")[0] for f in self.flows if f.encap)
        return {
            "seed": self.seed,
            "sessions": sum(self.scenarios.values()),
            "linktype": LINKTYPE_ETHERNET,
            "packets": len(frames),
            "bytes": sum(len(f) for _, f in frames),
            "start_ts": frames[0][0] if frames else BASE_TS,
            "end_ts": frames[-1][0] if frames else BASE_TS,
            "scenarios": dict(sorted(self.scenarios.items())),
            "protocols": dict(sorted(protocols.items())),
            "packets_by_protocol": dict(sorted(packets_by_protocol.items())),
            "encapsulations": dict(sorted(encaps.items())),
            "families": dict(sorted(Counter(f"ipv{f.family}" for f in self.flows).items())),
            "flow_count": len(self.flows),
            "flows": [f.as_dict() for f in self.flows],
        }


def _ntop(packed: bytes) -> str:
    return str(ipaddress.ip_address(packed))


def _pton(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def _wrap(text: str, width: int = 72) -> str:
    """Break prose into CRLF lines (mail and FTP text files have short lines)."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n".join(lines)


def _b64_lines(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return "\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def _talk(session: TcpSession, dialogue: Sequence[tuple[bool, str]]) -> None:
    """Play a line-based dialogue; each turn acknowledges the previous one by answering."""
    for from_client, text in dialogue:
        think = (
            session.rng.uniform(0.0002, 0.003)
            if not from_client
            else session.rng.uniform(0.0005, 0.05)
        )
        session.send(text.encode(), from_client, think=think, ack=False)


def generate_frames(seed: int, sessions: int) -> tuple[list[Frame], dict[str, Any]]:
    """All frames of a demo capture (time ordered) and its manifest, without touching disk."""
    generator = DemoGenerator(seed, sessions)
    frames = generator.run()
    return frames, generator.manifest(frames)


def generate_capture(path: str | Path, seed: int, sessions: int) -> dict[str, Any]:
    """Write the demo capture to ``path`` (classic pcap, Ethernet, microseconds).

    Returns the manifest: ``sessions``, ``packets``, ``bytes`` (sum of frame lengths),
    ``file_bytes``, ``sha256``, per-``scenarios``/``protocols`` counts, and ``flows`` (ground
    truth per 5-tuple). It is JSON-serialisable.
    """
    frames, manifest = generate_frames(seed, sessions)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pcap(path, frames, LINKTYPE_ETHERNET)
    content = path.read_bytes()
    return {
        "path": str(path),
        **manifest,
        "file_bytes": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
