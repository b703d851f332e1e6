"""IPv4 and IPv6 fragment reassembly (the decoder's slow path).

Fragments are rare in real traffic, so this runs in Python, per fragment: the decode kernel
marks a fragment with ``ST_FRAGMENT`` and the offset of its IP header; :class:`Defragmenter`
collects the pieces and returns the whole datagram when the last hole is filled, which the
pipeline decodes again as a raw IP packet at the position of the completing fragment (what
Zeek and tshark do, so packet counts per flow agree with both).

Overlaps keep the first copy (the RFC 5722 stance for IPv6, and Zeek's); an overlap carrying
different bytes is reported as ``fragment_inconsistent_overlap``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

MAX_DATAGRAM = 65535 + 40
FRAGMENT_TIMEOUT_NS = 60 * 10**9
MAX_PENDING = 4096  # datagrams under reassembly at once; the oldest is dropped beyond that


@dataclass
class _Pending:
    header: bytes  # the first fragment's header (IPv4 header, or IPv6 fixed header)
    v6_next: int  # IPv6: next header carried by the fragment header
    pieces: dict[int, bytes] = field(default_factory=dict)
    total: int = -1  # payload length once the last fragment arrived
    first_ts: int = 0
    inconsistent: bool = False


def _ipv4_checksum(header: bytes | bytearray) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Defragmenter:
    """Sans-IO reassembler: feed IP packets (bytes), get datagrams back."""

    def __init__(self) -> None:
        self._pending: dict[tuple, _Pending] = {}
        self.weirds: list[tuple[str, str]] = []  # (name, detail) since last drained

    def feed(self, ip: bytes, ts: int) -> bytes | None:
        """Add one fragment (an IP packet starting at its IP header); return the datagram when whole."""
        if not ip:
            return None
        version = ip[0] >> 4
        if version == 4:
            return self._feed4(ip, ts)
        if version == 6:
            return self._feed6(ip, ts)
        return None

    def expire(self, now: int) -> None:
        """Forget datagrams whose first fragment is older than the timeout."""
        stale = [k for k, p in self._pending.items() if now - p.first_ts > FRAGMENT_TIMEOUT_NS]
        for k in stale:
            del self._pending[k]
            self.weirds.append(("incomplete_fragment", "timed out before reassembly"))

    # ---- IPv4 ----
    def _feed4(self, ip: bytes, ts: int) -> bytes | None:
        if len(ip) < 20:
            self.weirds.append(("truncated_IP", "fragment shorter than an IPv4 header"))
            return None
        hlen = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        if hlen < 20 or total < hlen or len(ip) < hlen:
            self.weirds.append(("bad_fragment", "invalid IPv4 header or length"))
            return None
        frag = struct.unpack_from("!H", ip, 6)[0]
        offset = (frag & 0x1FFF) * 8
        more = bool(frag & 0x2000)
        payload = ip[hlen:min(total, len(ip))]
        if len(payload) < total - hlen:
            self.weirds.append(("truncated_fragment", "fragment cut short by the snap length"))
            return None
        key = (4, ip[12:20], ip[4:6], ip[9])
        header = ip[:hlen]
        data = self._add(key, header, 0, offset, more, payload, ts)
        if data is None:
            return None
        head = bytearray(header[:20])  # options of the first fragment are not repeated
        struct.pack_into("!H", head, 2, 20 + len(data))
        head[0] = 0x45
        struct.pack_into("!H", head, 6, struct.unpack_from("!H", header, 6)[0] & 0x4000)  # keep DF
        struct.pack_into("!H", head, 10, 0)
        struct.pack_into("!H", head, 10, _ipv4_checksum(head))  # a valid header, as sent whole
        return bytes(head) + data

    # ---- IPv6 ----
    def _feed6(self, ip: bytes, ts: int) -> bytes | None:
        if len(ip) < 40:
            self.weirds.append(("truncated_IP", "fragment shorter than an IPv6 header"))
            return None
        nh = ip[6]
        p = 40
        end = min(len(ip), 40 + struct.unpack_from("!H", ip, 4)[0])
        while nh in (0, 43, 60) and p + 8 <= end:
            nh, p = ip[p], p + (ip[p + 1] + 1) * 8
        if nh != 44 or p + 8 > end:
            self.weirds.append(("bad_fragment", "IPv6 fragment header not found"))
            return None
        next_header = ip[p]
        offm = struct.unpack_from("!H", ip, p + 2)[0]
        ident = ip[p + 4 : p + 8]
        offset = offm & 0xFFF8
        more = bool(offm & 1)
        key = (6, ip[8:40], ident)
        data = self._add(key, ip[:40], next_header, offset, more, ip[p + 8 : end], ts)
        if data is None:
            return None
        pending_next = self._last_next
        head = bytearray(ip[:40])
        struct.pack_into("!H", head, 4, len(data))
        head[6] = pending_next
        return bytes(head) + data

    # ---- shared ----
    _last_next = 0

    def _add(self, key: tuple, header: bytes, v6_next: int, offset: int, more: bool, payload: bytes, ts: int) -> bytes | None:
        pend = self._pending.get(key)
        if pend is None:
            if len(self._pending) >= MAX_PENDING:
                oldest = min(self._pending, key=lambda k: self._pending[k].first_ts)
                del self._pending[oldest]
                self.weirds.append(("fragment_table_full", "dropped the oldest incomplete datagram"))
            pend = self._pending[key] = _Pending(header=header, v6_next=v6_next, first_ts=ts)
        if offset == 0:
            pend.header = header
            pend.v6_next = v6_next
        if offset + len(payload) > MAX_DATAGRAM:
            self.weirds.append(("fragment_size_overflow", "fragment extends past 65535 bytes"))
            del self._pending[key]
            return None
        if not more:
            pend.total = offset + len(payload)
        old = pend.pieces.get(offset)
        if old is not None and old != payload[: len(old)]:
            pend.inconsistent = True
        if old is None or len(payload) > len(old):
            pend.pieces[offset] = payload if old is None else old + payload[len(old):]
        if pend.total < 0:
            return None
        # Assemble when the pieces cover [0, total) with no hole; first copy wins on overlaps.
        buf = bytearray(pend.total)
        covered = 0
        for off in sorted(pend.pieces):
            piece = pend.pieces[off]
            if off > covered:
                return None
            end = min(off + len(piece), pend.total)
            if end > covered:
                start = covered - off
                if off < covered and piece[: covered - off] != bytes(buf[off:covered]):
                    pend.inconsistent = True
                buf[covered:end] = piece[start : end - off]
                covered = end
        if covered < pend.total:
            return None
        del self._pending[key]
        if pend.inconsistent:
            self.weirds.append(("fragment_inconsistent_overlap", "overlapping fragments carried different bytes"))
        self._last_next = pend.v6_next
        return bytes(buf)
