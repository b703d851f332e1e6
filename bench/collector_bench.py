#!/usr/bin/env python3
"""The collector with N active warrants on a workload, against the flows-only engine.

    .venv/bin/python bench/collector_bench.py [--warrants 1000] [--size 1G]

Creates N approved IPv4 warrants (one of them on a host of the workload, 10.20.1.105, the rest on addresses
that never appear) in a temporary warrant database, runs the collector over the workload with a
sink that only counts, and compares its time with `lawtap analyze --no-analyzers` on the same
file in the same run. Target (issue 4): within 20 % of the core engine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--warrants", type=int, default=1000)
    ap.add_argument("--size", default="1G")
    a = ap.parse_args()
    pcap = ROOT / "bench" / "work" / ("large.pcap" if a.size == "1G" else "small.pcap")
    if not pcap.exists():
        subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--size", a.size, "--peers", "lawtap", "--repeat", "1"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LAWTAP_HOME"] = tmp
        from lawtap.intercept.collector import intercept_capture
        from lawtap.intercept.warrants import Target, WarrantSpec, WarrantStore
        from lawtap.sources import open_capture

        first = next(b for b in open_capture(pcap).batches() if len(b))
        t0 = datetime.fromtimestamp(int(first.ts[0]) / 1e9, timezone.utc)
        store = WarrantStore(f"sqlite:///{tmp}/w.db", clock=lambda: t0 - timedelta(days=1))
        t = time.perf_counter()
        for k in range(a.warrants):
            ip = "10.20.1.105" if k == 0 else f"172.{16 + k // 65536 % 16}.{k // 256 % 256}.{k % 256}"
            spec = WarrantSpec(liid=f"BENCH-{k}", authority="bench", legal_reference="bench", agency="LEA",
                               hi2="127.0.0.1:1", hi3="127.0.0.1:2", scope="iri+cc", valid_from=t0 - timedelta(hours=1),
                               valid_until=t0 + timedelta(days=1), targets=(Target.of("ipv4", ip),))
            store.create(spec, "alice")
            store.approve(spec.liid, "bob")
        setup = time.perf_counter() - t
        targets = store.target_set(t0, timedelta(days=1))
        counts = {"cc": 0, "iri": 0}
        sink = lambda ev: counts.__setitem__("cc" if ev.kind == "cc" else "iri", counts["cc" if ev.kind == "cc" else "iri"] + 1)  # noqa: E731
        t = time.perf_counter()
        stats = intercept_capture([str(pcap)], targets, sink)
        collector_s = time.perf_counter() - t
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "lawtap"), "analyze", str(pcap), "-o", str(ROOT / "bench" / "work" / "case-collector-ref"),
                    "--force", "--no-analyzers", "--no-progress"], check=True, env=env, capture_output=True)
    engine_s = time.perf_counter() - t
    print(f"warrants        {a.warrants} (created and approved in {setup:.1f} s)")
    print(f"collector       {collector_s:.2f} s for {stats.packets_seen:,} packets ({stats.packets_seen / collector_s:,.0f}/s), "
          f"{stats.packets_intercepted:,} intercepted, {counts['cc']:,} CC + {counts['iri']:,} IRI events")
    print(f"core engine     {engine_s:.2f} s (lawtap analyze --no-analyzers, whole process)")
    print(f"ratio           collector / engine = {collector_s / engine_s:.2f} (target <= 1.20)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
