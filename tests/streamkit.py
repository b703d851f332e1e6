"""Test scaffolding: a capture's TCP streams and UDP datagrams, per connection, for analyzer tests.

This uses lawtap's readers and decode kernel, and a simple offline reassembly (sort each
direction's segments by sequence number, first copy wins, holes reported as gaps). The product's
streaming reassembler lives in ``lawtap.streams``; this module only gives analyzer tests real
bytes from the corpus without depending on the pipeline's integration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lawtap.decode import kernel as dk
from lawtap.sources import open_capture


@dataclass
class Conn:
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str
    # TCP: in-order events per connection: ("data", is_orig, bytes, ts) or ("gap", is_orig, n, ts)
    # UDP: ("datagram", is_orig, bytes, ts)
    events: list[tuple] = field(default_factory=list)

    def stream(self, is_orig: bool) -> bytes:
        """All bytes of one direction (gaps dropped)."""
        return b"".join(e[2] for e in self.events if e[0] in ("data", "datagram") and e[1] == is_orig)


def _addr(hi: int, lo: int) -> str:
    import ipaddress

    if hi == 0 and (lo >> 32) == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address((hi << 64) | lo))


def connections(path: str | Path) -> list[Conn]:
    """Every TCP/UDP connection of a capture, in order of first packet."""
    pkts: dict[tuple, list] = {}
    order: list[tuple] = []
    for batch in open_capture(path).batches():
        A, D = dk.new_columns(len(batch))
        dk.decode_batch(batch.data, batch.offset, batch.caplen, batch.linktype, A, D)
        for i in np.nonzero(D[:, dk.C_STATUS] == dk.ST_FLOW)[0].tolist():
            proto = int(D[i, dk.C_PROTO])
            if proto not in (6, 17):
                continue
            src = (_addr(int(A[i, 0]), int(A[i, 1])), int(D[i, dk.C_SPORT]))
            dst = (_addr(int(A[i, 2]), int(A[i, 3])), int(D[i, dk.C_DPORT]))
            key = (min(src, dst), max(src, dst), proto)
            off, ln = int(D[i, dk.C_PAY_OFF]), int(D[i, dk.C_PAY_LEN])
            payload = batch.data[off : off + ln].tobytes()
            rec = (src, int(D[i, dk.C_FLAGS]), int(D[i, dk.C_SEQ]), payload, int(batch.ts[i]) / 1e9)
            if key not in pkts:
                pkts[key] = []
                order.append(key)
            pkts[key].append(rec)
    out = []
    for key in order:
        recs = pkts[key]
        proto = key[2]
        first_src, first_flags = recs[0][0], recs[0][1]
        orig = first_src
        if proto == 6:
            syn = [r for r in recs if r[1] & 0x02 and not r[1] & 0x10]
            if syn:
                orig = syn[0][0]
            elif first_flags & 0x12 == 0x12:
                orig = key[0] if first_src == key[1] else key[1]
        elif first_src[1] < 1024 and (key[0] if first_src == key[1] else key[1])[1] >= 1024:
            orig = key[0] if first_src == key[1] else key[1]
        resp = key[1] if orig == key[0] else key[0]
        conn = Conn(orig[0], orig[1], resp[0], resp[1], "tcp" if proto == 6 else "udp")
        if proto == 17:
            conn.events = [("datagram", r[0] == orig, r[3], r[4]) for r in recs]
        else:
            conn.events = _reassemble(recs, orig)
        out.append(conn)
    return out


def _reassemble(recs: list, orig: tuple) -> list[tuple]:
    """Offline reassembly of both directions, interleaved by the time each piece completed."""
    events = []
    for is_orig in (True, False):
        side = [r for r in recs if (r[0] == orig) == is_orig]
        if not side:
            continue
        syn = [r for r in side if r[1] & 0x02]
        base = (syn[0][2] + 1) if syn else side[0][2]
        segs = []
        for _, flags, seq, payload, ts in side:
            if payload:
                rel = (seq - base) & 0xFFFFFFFF
                if rel > 0x7FFFFFFF:
                    continue  # before the start
                segs.append((rel, payload, ts))
        segs.sort(key=lambda s: s[0])
        pos = 0
        for rel, payload, ts in segs:
            if rel + len(payload) <= pos:
                continue  # retransmission: first copy wins
            if rel > pos:
                events.append(("gap", is_orig, rel - pos, ts))
                pos = rel
            piece = payload[pos - rel :]
            events.append(("data", is_orig, piece, ts))
            pos += len(piece)
    # Interleave the directions by time without reordering bytes within one direction: a piece
    # is available once every earlier piece of its direction has arrived.
    ready = []
    for is_orig in (True, False):
        latest = 0.0
        for k, e in enumerate(ev for ev in events if ev[1] == is_orig):
            latest = max(latest, e[3])
            ready.append((latest, 0 if is_orig else 1, k, e))
    ready.sort(key=lambda r: r[:3])
    return [r[3] for r in ready]
