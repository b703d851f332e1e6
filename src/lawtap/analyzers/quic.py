"""QUIC (RFC 9000/9001, v2 RFC 9369, drafts 23-34): Initial packets decrypted to reach the TLS
ClientHello/ServerHello.

Sans-IO: :class:`QUICAnalyzer` takes UDP datagrams. For each long-header packet (coalesced
packets are split on their Length field) it records Zeek's quic.log history; Initial packets are
unprotected with the keys every observer can derive from the client's first Destination
Connection ID (HKDF with the version's salt and labels, AES-128-ECB header protection,
AES-128-GCM payload), their CRYPTO frames are reassembled per direction (frames may arrive out of
order and span packets), and the TLS handshake messages are handed to
:class:`lawtap.analyzers.tls.Handshake` (JA3/JA4 with JA4 protocol ``q``).

Records: ``quic`` (Zeek's quic.log: version, client_initial_dcid, client_scid, server_scid,
server_name, client_protocol, history) and ``tls`` (as for TLS over TCP; ``established`` stays
false since the rest of the handshake is encrypted with keys an observer does not have).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import COMMON_FIELDS

from .base import ConnInfo, StreamAnalyzer
from .tls import HRR_RANDOM, TLS_SCHEMA, Handshake
from .x509 import X509_SCHEMA

_COMMON = COMMON_FIELDS  # lawtap.analyzers.base

QUIC_SCHEMA = pa.schema(
    _COMMON
    + [
        pa.field("version", pa.string()),
        pa.field("client_initial_dcid", pa.string()),
        pa.field("client_scid", pa.string()),
        pa.field("server_scid", pa.string()),
        pa.field("server_name", pa.string()),
        pa.field("client_protocol", pa.string()),
        pa.field("history", pa.string()),
    ]
)

RECORD_SCHEMAS = {"quic": QUIC_SCHEMA, "tls": TLS_SCHEMA, "x509": X509_SCHEMA}

# --------------------------------------------------------------------------------------------
# Versions, salts, labels

SALT_V1 = bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a")
SALT_V2 = bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")
SALT_D29 = bytes.fromhex("afbfec289993d24c9e9786f19c6111e04390a899")
SALT_D23 = bytes.fromhex("c3eef712c72ebb5a11a7d2432bb46365bef9f502")

V1, V2 = 0x00000001, 0x6B3343CF


def version_params(version: int) -> tuple[bytes, str, bool] | None:
    """(initial salt, HKDF label prefix, is-v2 packet-type coding) or None when unsupported."""
    if version == V1:
        return SALT_V1, "quic ", False
    if version == V2:
        return SALT_V2, "quicv2 ", True
    if version >> 8 == 0xFF0000:
        d = version & 0xFF
        if 33 <= d <= 34:
            return SALT_V1, "quic ", False
        if 29 <= d <= 32:
            return SALT_D29, "quic ", False
        if 23 <= d <= 28:
            return SALT_D23, "quic ", False
    return None


def version_name(version: int) -> str:
    if version == V1:
        return "1"
    if version == V2:
        return "quicv2"
    if version >> 8 == 0xFF0000:
        return f"draft-{version & 0xFF}"
    if version >> 4 == 0xFACEB00:
        return f"mvfst ({version:x})"
    return f"unknown-{version:x}"


# long-header packet types by (v2 coding?, two type bits)
INITIAL, ZERO_RTT, HANDSHAKE, RETRY = "initial", "0rtt", "handshake", "retry"
_TYPES_V1 = {0: INITIAL, 1: ZERO_RTT, 2: HANDSHAKE, 3: RETRY}
_TYPES_V2 = {1: INITIAL, 2: ZERO_RTT, 3: HANDSHAKE, 0: RETRY}


def _hkdf_expand_label(secret: bytes, label: str, length: int) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    full = b"tls13 " + label.encode()
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    return HKDFExpand(algorithm=hashes.SHA256(), length=length, info=info).derive(secret)


@lru_cache(maxsize=256)
def initial_keys(version: int, dcid: bytes, is_client: bool) -> tuple[bytes, bytes, bytes] | None:
    """(key, iv, hp) protecting the Initial packets of one side (RFC 9001 section 5.2)."""
    params = version_params(version)
    if params is None:
        return None
    salt, prefix, _ = params
    from cryptography.hazmat.primitives import hashes, hmac

    h = hmac.HMAC(salt, hashes.SHA256())
    h.update(dcid)
    initial_secret = h.finalize()
    secret = _hkdf_expand_label(initial_secret, "client in" if is_client else "server in", 32)
    return (
        _hkdf_expand_label(secret, prefix + "key", 16),
        _hkdf_expand_label(secret, prefix + "iv", 12),
        _hkdf_expand_label(secret, prefix + "hp", 16),
    )


def read_varint(b: bytes, o: int) -> tuple[int, int]:
    if o >= len(b):
        raise ValueError("varint truncated")
    first = b[o]
    n = 1 << (first >> 6)
    if o + n > len(b):
        raise ValueError("varint truncated")
    v = first & 0x3F
    for i in range(1, n):
        v = (v << 8) | b[o + i]
    return v, o + n


def unprotect(packet: bytes, pn_offset: int, keys: tuple[bytes, bytes, bytes]) -> tuple[int, bytes] | None:
    """Remove header protection and decrypt one Initial packet (``packet`` spans exactly the
    packet, ``pn_offset`` is where the packet number starts). None when it does not verify."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, iv, hp = keys
    sample_at = pn_offset + 4
    if sample_at + 16 > len(packet):
        return None
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(packet[sample_at : sample_at + 16]) + enc.finalize()
    first = packet[0] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    pn_bytes = bytes(packet[pn_offset + i] ^ mask[1 + i] for i in range(pn_len))
    pn = int.from_bytes(pn_bytes, "big")
    header = bytes([first]) + packet[1:pn_offset] + pn_bytes
    nonce = (int.from_bytes(iv, "big") ^ pn).to_bytes(12, "big")
    try:
        return pn, AESGCM(key).decrypt(nonce, bytes(packet[pn_offset + pn_len :]), header)
    except (InvalidTag, ValueError):
        return None


def parse_frames(payload: bytes) -> tuple[list[tuple[int, bytes]], bool, str | None]:
    """CRYPTO chunks (offset, data), whether a CONNECTION_CLOSE was seen, and an error (the
    frames after an unknown/malformed frame are not parsed)."""
    chunks: list[tuple[int, bytes]] = []
    close = False
    o = 0
    n = len(payload)
    try:
        while o < n:
            t = payload[o]
            if t == 0x00:  # PADDING: skip the run
                while o < n and payload[o] == 0:
                    o += 1
                continue
            t, o = read_varint(payload, o)
            if t == 0x01:  # PING
                continue
            if t in (0x02, 0x03):  # ACK
                _, o = read_varint(payload, o)  # largest acknowledged
                _, o = read_varint(payload, o)  # delay
                count, o = read_varint(payload, o)
                _, o = read_varint(payload, o)  # first range
                if count > n:
                    return chunks, close, "QUIC_bad_ack_range_count"
                for _ in range(count):
                    _, o = read_varint(payload, o)
                    _, o = read_varint(payload, o)
                if t == 0x03:
                    for _ in range(3):
                        _, o = read_varint(payload, o)
            elif t == 0x06:  # CRYPTO
                off, o = read_varint(payload, o)
                ln, o = read_varint(payload, o)
                if o + ln > n:
                    return chunks, close, "QUIC_crypto_frame_truncated"
                chunks.append((off, payload[o : o + ln]))
                o += ln
            elif t in (0x1C, 0x1D):  # CONNECTION_CLOSE
                close = True
                _, o = read_varint(payload, o)
                if t == 0x1C:
                    _, o = read_varint(payload, o)
                ln, o = read_varint(payload, o)
                o += ln
            else:
                return chunks, close, f"QUIC_unexpected_frame_type_{t}"
    except ValueError:
        return chunks, close, "QUIC_frame_truncated"
    return chunks, close, None


MAX_CRYPTO = 1 << 16  # bytes of Initial CRYPTO data kept per direction
MAX_DECRYPT_FAILURES = 16


class _CryptoStream:
    """Out-of-order CRYPTO reassembly feeding whole handshake messages."""

    def __init__(self) -> None:
        self.chunks: dict[int, bytes] = {}
        self.contig = bytearray()
        self.consumed = 0  # bytes of contig already handed out as messages

    def add(self, off: int, data: bytes) -> bool:
        if off + len(data) > MAX_CRYPTO:
            return False
        end = len(self.contig)
        if off + len(data) <= end:
            return True
        if off <= end:
            self.contig += data[end - off :]
        else:
            prev = self.chunks.get(off)
            if prev is None or len(prev) < len(data):
                self.chunks[off] = data
        progressed = True
        while progressed:
            progressed = False
            end = len(self.contig)
            for o in sorted(self.chunks):
                d = self.chunks[o]
                if o <= end:
                    del self.chunks[o]
                    if o + len(d) > end:
                        self.contig += d[end - o :]
                    progressed = True
                    break
        return True

    def messages(self) -> list[tuple[int, bytes]]:
        out = []
        buf = self.contig
        while len(buf) - self.consumed >= 4:
            c = self.consumed
            ln = (buf[c + 1] << 16) | (buf[c + 2] << 8) | buf[c + 3]
            if len(buf) - c - 4 < ln:
                break
            out.append((buf[c], bytes(buf[c + 4 : c + 4 + ln])))
            self.consumed = c + 4 + ln
        return out


class QUICAnalyzer(StreamAnalyzer):
    """QUIC over UDP datagrams."""

    service = "quic"

    def __init__(self, conn: ConnInfo) -> None:
        super().__init__(conn)
        self._reset()
        self.decrypt_failures = 0

    def _reset(self) -> None:
        self.ts: float | None = None
        self.version: int | None = None
        self.dcid: bytes | None = None
        self.client_scid: bytes | None = None
        self.server_scid: bytes | None = None
        self.history: list[str] = []
        self.short = {True: 0, False: 0}
        self.crypto = {True: _CryptoStream(), False: _CryptoStream()}
        self.hello = {True: False, False: False}
        self.hs = Handshake(self, "q")
        self.dead = False

    # -- StreamAnalyzer hooks

    def datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        if self.dead or not data:
            return
        try:
            self._datagram(is_orig, bytes(data), ts)
        except Exception as e:  # noqa: BLE001 - never raise on input
            self.weirds.append(("QUIC_internal_error", f"{type(e).__name__}: {e}"[:200]))
            self.dead = True

    def feed(self, is_orig: bool, data: bytes, ts: float) -> None:
        """QUIC is UDP-only; a TCP stream handed here is ignored."""

    def finish(self, ts: float) -> None:
        self._log()

    # -- internals

    def _add_history(self, is_orig: bool, letter: str) -> None:
        if len(self.history) < 100:
            self.history.append(letter.upper() if is_orig else letter.lower())
            if len(self.history) == 100:
                self.weirds.append(("QUIC_max_history_length_reached", ""))

    def _log(self) -> None:
        if self.ts is None:
            return
        f = self.hs.fields
        rec: dict[str, Any] = {
            "ts": self.ts,
            "version": version_name(self.version) if self.version is not None else None,
            "client_initial_dcid": self.dcid.hex() if self.dcid else None,
            "client_scid": self.client_scid.hex() if self.client_scid is not None else None,
            "server_scid": self.server_scid.hex() if self.server_scid is not None else None,
            "server_name": f["server_name"],
            "client_protocol": (f["alpn"] or [None])[0],
            "history": "".join(self.history),
        }
        self.records.append(("quic", rec))
        self.hs.emit()
        self.ts = None

    def _datagram(self, is_orig: bool, data: bytes, ts: float) -> None:
        o = 0
        while o < len(data):
            first = data[o]
            if not first & 0x80:
                if o > 0 and not first & 0x40:
                    return  # zero bytes padding the datagram after coalesced long-header packets
                # Short header: runs to the end of the datagram.
                if self.ts is None:
                    return  # no connection state: not a QUIC connection we follow
                self.short[is_orig] += 1
                n = self.short[is_orig]
                if n & (n - 1) == 0:  # 1, 2, 4, 8 ...: binary logarithmic, as Zeek's history
                    self._add_history(is_orig, "o")
                return
            if o + 7 > len(data):
                self.weirds.append(("QUIC_truncated_header", ""))
                return
            version = struct.unpack_from("!I", data, o + 1)[0]
            p = o + 5
            dlen = data[p]
            dcid = data[p + 1 : p + 1 + dlen]
            p += 1 + dlen
            if p >= len(data) or dlen > 20:
                self.weirds.append(("QUIC_bad_connection_id", str(dlen)))
                return
            slen = data[p]
            scid = data[p + 1 : p + 1 + slen]
            p += 1 + slen
            if p > len(data) or slen > 20:
                self.weirds.append(("QUIC_bad_connection_id", str(slen)))
                return
            if version == 0:
                return  # version negotiation
            params = version_params(version)
            if self.ts is None:
                self.ts = ts
                self.version = version
            if params is None:
                self._add_history(is_orig, "u")
                self.weirds.append(("QUIC_unhandled_version", f"{version:08x}"))
                self._log()
                self.dead = True
                return
            ptype = (_TYPES_V2 if params[2] else _TYPES_V1)[(first >> 4) & 0x03]
            if is_orig:
                self.client_scid = scid
            else:
                self.server_scid = scid
            if ptype == RETRY:
                self._add_history(is_orig, "r")
                self._log()
                self._reset()
                return
            if ptype == INITIAL:
                tlen, p = read_varint(data, p)
                p += tlen
            length, p = read_varint(data, p)
            end = p + length
            if end > len(data) or length < 20:
                self.weirds.append(("QUIC_bad_packet_length", str(length)))
                return
            if ptype == INITIAL:
                self._add_history(is_orig, "i")
                if is_orig and self.dcid is None:
                    self.dcid = dcid
                self._initial(is_orig, version, dcid, data[o:end], p - o, ts)
            elif ptype == HANDSHAKE:
                self._add_history(is_orig, "h")
            else:
                self._add_history(is_orig, "z")
            o = end

    def _initial(self, is_orig: bool, version: int, dcid: bytes, packet: bytes, pn_offset: int, ts: float) -> None:
        if self.hello[True] and self.hello[False]:
            return  # nothing more to learn from Initial packets
        if self.decrypt_failures >= MAX_DECRYPT_FAILURES:
            return
        candidates = [self.dcid] if self.dcid else []
        if is_orig and dcid not in candidates:
            candidates.append(dcid)
        res = None
        for cand in candidates:
            keys = initial_keys(version, bytes(cand), is_orig)
            if keys is None:
                continue
            res = unprotect(packet, pn_offset, keys)
            if res is not None:
                break
        if res is None:
            self.decrypt_failures += 1
            self.weirds.append(("QUIC_initial_decryption_failed", "orig" if is_orig else "resp"))
            return
        chunks, close, err = parse_frames(res[1])
        if err:
            self.weirds.append((err, ""))
        cs = self.crypto[is_orig]
        for off, chunk in chunks:
            if not cs.add(off, chunk):
                self.weirds.append(("QUIC_crypto_data_too_large", str(off + len(chunk))))
        for mtype, body in cs.messages():
            if mtype in (1, 2):
                self._add_history(is_orig, "s")
                # done with this side after a ClientHello / a ServerHello that is no HelloRetryRequest
                self.hello[is_orig] = mtype == 1 or body[2:34] != HRR_RANDOM
            self.hs.message(is_orig, mtype, body, ts)
        if close:
            self._add_history(is_orig, "c")
            self._log()
            self._reset()


ANALYZERS = {"quic": QUICAnalyzer}
