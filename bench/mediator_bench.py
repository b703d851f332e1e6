"""Mediator throughput: IP CC PDUs encoded, queued durably, delivered to a local LEMF and
acknowledged by it, per second.

    .venv/bin/python bench/mediator_bench.py                 # 1,000,000 PDUs, IMIX sizes
    .venv/bin/python bench/mediator_bench.py --pdus 200000 --size 200 --fsync

The LEMF is `python -m lawtap.etsi.lemf` in its own process on 127.0.0.1 (an ephemeral port), as
a real agency would be: it frames, scans, checks sequence numbers, stores every PDU and writes the
pcap. The clock runs from the first submit until the mediator holds an acknowledgement for the
last PDU, so the figure counts encoding, the on-disk queue, TCP and the LEMF's work, not just
encoding. The target from the issue is >= 200,000 PDUs/s (OpenLI's sizing: one thread per
2 Gb/s). It also prints the encoder alone (numba batch template) for reference.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def packets(n: int, size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` IPv4/UDP packets: fixed ``size`` or simple IMIX (7:4:1 of 64/576/1500 bytes)."""
    rng = np.random.default_rng(seed)
    if size:
        lens = np.full(n, size, np.int64)
    else:
        lens = rng.choice(np.array([64, 576, 1500]), size=n, p=[7 / 12, 4 / 12, 1 / 12]).astype(np.int64)
    offs = np.zeros(n, np.int64)
    offs[1:] = np.cumsum(lens)[:-1]
    data = rng.integers(0, 256, int(lens.sum()), dtype=np.uint8)
    data[offs] = 0x45  # looks like IPv4 to anyone who peeks
    return data, offs, lens


def cpu_seconds(pid: int | None = None) -> float:
    """User+system CPU of this process (``pid`` None) or of a child still running (/proc)."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pdus", type=int, default=1_000_000)
    ap.add_argument("--size", type=int, default=0, help="packet size (default: IMIX mix)")
    ap.add_argument("--batch", type=int, default=8192, help="PDUs per submit_ipcc_batch call")
    ap.add_argument("--cins", type=int, default=16, help="communications (CINs) the packets are spread over")
    ap.add_argument("--fsync", action="store_true", help="fsync the queue and the LEMF log (default: off)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    from lawtap.etsi import mediator, pdu

    data, offs, lens = packets(args.pdus, args.size or None, args.seed)
    ts = 1_700_000_000_000_000_000 + np.arange(args.pdus, dtype=np.int64) * 1000
    dirs = (np.arange(args.pdus) % 2).astype(np.int8)

    # Warm numba kernels (compiled once per checkout, then cached).
    t = pdu.IpccTemplate("BENCH-LIID", 1)
    t.encode_batch(0, ts[:10], data, offs[:10], lens[:10], dirs[:10], length_prefix=True)
    pdu.scan(t.encode(0, 0, b"x", 0))
    t0 = time.perf_counter()
    for s in range(0, args.pdus, args.batch):
        e = min(s + args.batch, args.pdus)
        t.encode_batch(s, ts[s:e], data, offs[s:e], lens[s:e], dirs[s:e], length_prefix=True)
    enc = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="lawtap-medbench-") as tmp:
        cmd = [sys.executable, "-m", "lawtap.etsi.lemf", "--listen", "127.0.0.1:0", "--store", f"{tmp}/lemf"]
        if not args.fsync:
            cmd.append("--no-fsync")
        lemf = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            line = lemf.stdout.readline() if lemf.stdout else ""
            if not line.startswith("listening "):
                raise SystemExit(f"LEMF did not start: {line!r}")
            port = int(line.split()[1])
            agency = mediator.agency_for("bench", f"127.0.0.1:{port}", keepalive_interval=0, ack_wait=120)
            m = mediator.Mediator(f"{tmp}/med", [agency], fsync=args.fsync)
            per = max(1, args.batch)
            cpu_m0, cpu_l0 = cpu_seconds(), cpu_seconds(lemf.pid)
            t0 = time.perf_counter()
            k = 0
            for s in range(0, args.pdus, per):
                e = min(s + per, args.pdus)
                m.submit_ipcc_batch("bench", "BENCH-LIID", k % args.cins, ts[s:e], data, offs[s:e], lens[s:e], dirs[s:e])
                k += 1
            submitted = time.perf_counter() - t0
            if not m.wait_delivered(600):
                raise SystemExit(f"not delivered: {json.dumps(m.status())}")
            took = time.perf_counter() - t0
            cpu_m, cpu_l = cpu_seconds() - cpu_m0, cpu_seconds(lemf.pid) - cpu_l0
            status = m.status()["bench/hi3"]
            m.stop()
        finally:
            lemf.terminate()
            out, _ = lemf.communicate(timeout=60)
        counts = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        wire = os.path.getsize(Path(tmp) / "lemf" / "received.ber")

    rate = args.pdus / took
    print(f"pdus            {args.pdus:,} ({'fixed %d B' % args.size if args.size else 'IMIX 64/576/1500'}, "
          f"{lens.mean():.0f} B mean), {args.cins} CINs, fsync={'on' if args.fsync else 'off'}")
    print(f"encoder only    {args.pdus / enc:,.0f} PDUs/s (numba batch template)")
    print(f"submit          {submitted:.2f} s")
    print(f"delivered+acked {took:.2f} s  ->  {rate:,.0f} IP CC PDUs/s, {wire * 8 / took / 1e9:.2f} Gb/s of PDUs")
    print(f"CPU             mediator {cpu_m:.2f} s ({args.pdus / cpu_m:,.0f} PDUs per CPU-second), "
          f"LEMF {cpu_l:.2f} s ({args.pdus / cpu_l:,.0f} PDUs per CPU-second); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"LEMF            accepted {counts.get('accepted')}, duplicates {counts.get('duplicates')}, "
          f"gaps {counts.get('gaps')}, pcap packets {counts.get('cc_packets')}")
    print(f"mediator        sent {status['sent_pdus']}, connects {status['connects']}, acks {status['acks_received']}")
    print(f"target 200,000 PDUs/s: {'met' if rate >= 200_000 else 'NOT met'}")


if __name__ == "__main__":
    main()
