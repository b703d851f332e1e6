#!/usr/bin/env python3
"""Peer: dpkt parse to L4 plus a bidirectional 5-tuple flow table.

Reads a classic pcap with dpkt.pcap.Reader, parses Ethernet -> IPv4/IPv6 -> TCP/UDP
(other L4 protocols are counted as flows with ports 0), and keeps per-flow packet and
byte counts keyed by a direction-independent 5-tuple. Prints one JSON line with the
totals, so the harness can check that every tool saw the same capture.

    python bench/peers/dpkt_flows.py FILE
"""

from __future__ import annotations

import json
import sys

import dpkt


def main(path: str) -> int:
    flows: dict[tuple, list[int]] = {}
    packets = 0
    l4 = 0
    non_ip = 0
    errors = 0
    ETH = dpkt.ethernet.Ethernet
    IP4 = dpkt.ip.IP
    IP6 = dpkt.ip6.IP6
    TCP = dpkt.tcp.TCP
    UDP = dpkt.udp.UDP
    with open(path, "rb") as f:
        for _ts, buf in dpkt.pcap.Reader(f):
            packets += 1
            try:
                eth = ETH(buf)
            except (dpkt.UnpackError, dpkt.NeedData):
                errors += 1
                continue
            ip = eth.data
            if isinstance(ip, IP4):
                proto = ip.p
            elif isinstance(ip, IP6):
                proto = ip.nxt
            else:
                non_ip += 1
                continue
            seg = ip.data
            if isinstance(seg, (TCP, UDP)):
                sport, dport = seg.sport, seg.dport
                l4 += 1
            else:
                sport = dport = 0
            a = (ip.src, sport)
            b = (ip.dst, dport)
            key = (proto, a, b) if a <= b else (proto, b, a)
            entry = flows.get(key)
            if entry is None:
                flows[key] = [1, len(buf)]
            else:
                entry[0] += 1
                entry[1] += len(buf)
    print(
        json.dumps(
            {
                "tool": "dpkt",
                "dpkt_version": dpkt.__version__,
                "packets": packets,
                "l4_packets": l4,
                "non_ip": non_ip,
                "errors": errors,
                "flows": len(flows),
                "bytes": sum(v[1] for v in flows.values()),
            }
        )
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
