"""SDP (RFC 4566) bodies: where each party wants its media and with which codecs.

Only what ties RTP flows to calls is parsed: the session- and media-level ``c=`` addresses, the
``m=`` lines (media, port, protocol, payload-type list), ``a=rtpmap`` / ``a=fmtp``, ``a=rtcp`` and
the direction attributes. :func:`parse_sdp` never raises: a body that is not SDP yields ``None``;
malformed lines are skipped.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

# RFC 3551 static payload types: pt -> (encoding name, RTP clock rate, channels).
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),  # 16 kHz audio, but an 8000 Hz RTP clock (RFC 3551 4.5.2)
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

# Dynamic encodings commonly seen without a rtpmap we could read (clock rates by name).
KNOWN_CLOCK_RATES: dict[str, int] = {
    "PCMU": 8000, "PCMA": 8000, "G722": 8000, "G729": 8000, "G723": 8000, "GSM": 8000, "CN": 8000,
    "TELEPHONE-EVENT": 8000, "ILBC": 8000, "SPEEX": 8000, "AMR": 8000, "AMR-WB": 16000,
    "OPUS": 48000, "G726-32": 8000, "H264": 90000, "VP8": 90000, "VP9": 90000, "H263-1998": 90000,
}

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


def _isnum(s: str) -> bool:
    """ASCII digits only (str.isdigit() also accepts e.g. superscripts, which int() rejects)."""
    return s.isascii() and s.isdigit()


@dataclass
class MediaDesc:
    """One ``m=`` section."""

    media: str  # audio, video, application, ...
    port: int
    nports: int = 1
    proto: str = ""  # RTP/AVP, RTP/SAVP, ...
    formats: list[str] = field(default_factory=list)  # raw fmt tokens (payload types for RTP)
    rtpmap: dict[int, tuple[str, int, int | None]] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)
    connection: str | None = None  # media-level c= address
    rtcp_port: int | None = None  # a=rtcp:<port>
    direction: str | None = None

    @property
    def payload_types(self) -> list[int]:
        out = []
        for f in self.formats:
            if _isnum(f) and int(f) < 128:
                out.append(int(f))
        return out

    def codec(self, pt: int) -> str | None:
        return codec_name(pt, self.rtpmap)

    def clock_rate(self, pt: int) -> int | None:
        return clock_rate(pt, self.rtpmap)

    @property
    def main_codec(self) -> str | None:
        """The preferred (first listed) codec of the section."""
        for pt in self.payload_types:
            c = self.codec(pt)
            if c is not None:
                return c
        return None


@dataclass
class SdpSession:
    origin: str | None = None  # o= line, verbatim
    session_name: str | None = None
    connection: str | None = None  # session-level c= address
    direction: str | None = None
    media: list[MediaDesc] = field(default_factory=list)

    def address(self, m: MediaDesc) -> str | None:
        return m.connection or self.connection

    def endpoints(self) -> list[tuple[str, int, MediaDesc]]:
        """(ip, port, media) for every media section with an address and a non-zero port."""
        out = []
        for m in self.media:
            ip = self.address(m)
            if ip and 0 < m.port < 65536:
                out.append((ip, m.port, m))
        return out


def codec_name(pt: int, rtpmap: dict[int, tuple[str, int, int | None]] | None = None) -> str | None:
    """Encoding name of ``pt``: the rtpmap when given, else RFC 3551's static table."""
    if rtpmap and pt in rtpmap:
        return _canon(rtpmap[pt][0])
    st = STATIC_PAYLOAD_TYPES.get(pt)
    return st[0] if st else None


def clock_rate(pt: int, rtpmap: dict[int, tuple[str, int, int | None]] | None = None) -> int | None:
    if rtpmap and pt in rtpmap and rtpmap[pt][1] > 0:
        return rtpmap[pt][1]
    st = STATIC_PAYLOAD_TYPES.get(pt)
    if st:
        return st[1]
    if rtpmap and pt in rtpmap:
        return KNOWN_CLOCK_RATES.get(rtpmap[pt][0].upper())
    return None


_CANON = {n.upper(): n for n in (
    "PCMU", "PCMA", "G722", "G729", "G723", "G728", "GSM", "CN", "telephone-event", "iLBC", "opus",
    "AMR", "AMR-WB", "speex", "H264", "VP8", "VP9",
)}


def _canon(name: str) -> str:
    """Canonical spelling of well-known encoding names (rtpmap case varies between stacks)."""
    return _CANON.get(name.upper(), name)


def _conn_addr(value: str) -> str | None:
    # c=<nettype> <addrtype> <connection-address>[/ttl][/count]
    parts = value.split()
    if len(parts) < 3 or parts[0].upper() != "IN":
        return None
    addr = parts[2].split("/", 1)[0].strip()
    if not addr or len(addr) > 255:
        return None
    if addr.startswith("[") and addr.endswith("]"):
        addr = addr[1:-1]
    try:
        return str(ipaddress.ip_address(addr))  # canonical spelling, as flows print addresses
    except ValueError:
        return addr  # an FQDN


def looks_like_sdp(body: bytes | str) -> bool:
    head = body[:64] if isinstance(body, (bytes, str)) else b""
    if isinstance(head, bytes):
        head = head.decode("latin-1")
    return head.lstrip().startswith("v=")


def parse_sdp(body: bytes | str, max_media: int = 64) -> SdpSession | None:
    """Parse an SDP body (bytes or text). ``None`` when it has no ``v=`` or ``m=``/``c=`` at all."""
    try:
        text = body.decode("utf-8", "replace") if isinstance(body, (bytes, bytearray, memoryview)) else str(body)
    except Exception:  # pragma: no cover - bytes decode with "replace" cannot fail
        return None
    sess = SdpSession()
    cur: MediaDesc | None = None
    seen_v = False
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        k, v = line[0], line[2:].strip()
        if k == "v":
            seen_v = True
        elif k == "o" and cur is None:
            sess.origin = v
        elif k == "s" and cur is None:
            sess.session_name = v
        elif k == "c":
            addr = _conn_addr(v)
            if cur is None:
                sess.connection = addr
            else:
                cur.connection = addr
        elif k == "m":
            if len(sess.media) >= max_media:
                cur = None
                continue
            parts = v.split()
            if len(parts) < 3:
                cur = None
                continue
            port_s, _, n_s = parts[1].partition("/")
            if not _isnum(port_s) or len(port_s) > 5:
                cur = None
                continue
            nports = int(n_s) if _isnum(n_s) and len(n_s) < 6 else 1
            cur = MediaDesc(media=parts[0].lower(), port=int(port_s), nports=nports, proto=parts[2], formats=parts[3:64])
            sess.media.append(cur)
        elif k == "a":
            name, _, val = v.partition(":")
            name = name.strip().lower()
            if name in DIRECTIONS:
                if cur is None:
                    sess.direction = name
                else:
                    cur.direction = name
            elif cur is None:
                continue
            elif name == "rtpmap":
                pt_s, _, enc = val.strip().partition(" ")
                if not _isnum(pt_s) or int(pt_s) > 127:
                    continue
                bits = enc.strip().split("/")
                if not bits or not bits[0]:
                    continue
                rate = int(bits[1]) if len(bits) > 1 and _isnum(bits[1]) and len(bits[1]) < 10 else 0
                ch = int(bits[2]) if len(bits) > 2 and _isnum(bits[2]) and len(bits[2]) < 4 else None
                cur.rtpmap[int(pt_s)] = (bits[0], rate, ch)
            elif name == "fmtp":
                pt_s, _, params = val.strip().partition(" ")
                if _isnum(pt_s) and int(pt_s) < 128:
                    cur.fmtp[int(pt_s)] = params.strip()
            elif name == "rtcp":
                p = val.strip().split(" ", 1)[0]
                if _isnum(p) and 0 < int(p) < 65536:
                    cur.rtcp_port = int(p)
    if not seen_v and not sess.media:
        return None
    return sess


__all__ = [
    "MediaDesc",
    "SdpSession",
    "STATIC_PAYLOAD_TYPES",
    "clock_rate",
    "codec_name",
    "looks_like_sdp",
    "parse_sdp",
]
