#!/usr/bin/env python3
"""Peer: nfstream flow metering with nDPI application detection.

Iterates NFStreamer(source=FILE, n_dissections=20, statistical_analysis=False) and
counts flows, packets and bytes (iterating rather than to_pandas(), so the figure is
the metering and DPI cost, not the DataFrame build). n_meters defaults to 1: one
metering process next to nfstream's own capture/parse process, which is the fairest
comparison with a single-process tool on this 2-core machine; pass --meters 0 to let
nfstream pick (it then uses every core). Prints one JSON line with the totals.

    python bench/peers/nfstream_flows.py FILE [--meters N]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import nfstream
from nfstream import NFStreamer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="nfstream flows + nDPI peer")
    p.add_argument("file")
    p.add_argument("--meters", type=int, default=1, help="nfstream n_meters (0 = nfstream's default, all cores)")
    p.add_argument("--dissections", type=int, default=20, help="nfstream n_dissections (0 turns nDPI off)")
    a = p.parse_args(argv)
    streamer = NFStreamer(
        source=a.file,
        n_dissections=a.dissections,
        statistical_analysis=False,
        n_meters=a.meters,
    )
    flows = packets = nbytes = 0
    apps: Counter[str] = Counter()
    for flow in streamer:
        flows += 1
        packets += flow.bidirectional_packets
        nbytes += flow.bidirectional_bytes
        apps[flow.application_name.split(".")[0]] += 1
    print(
        json.dumps(
            {
                "tool": "nfstream",
                "nfstream_version": nfstream.__version__,
                "n_meters": a.meters,
                "n_dissections": a.dissections,
                "flows": flows,
                "packets": packets,
                "bytes": nbytes,
                "top_apps": dict(apps.most_common(8)),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
