"""The output floor: what lawtap's recovered objects cost to hash and store, with no analysis.

Why: issue 3 asks the every-analyzer run to be at least as fast as tcpflow, which only
reassembles. This measures the part of lawtap's work that no analyzer design can remove,
because the outputs themselves require it:

* reading the capture once;
* the digests a ``files`` record carries: MD5, SHA-1 and SHA-256 of each object seen on the
  wire, SHA-256 of each object lawtap renders itself (the WAVs, ``FileObject.derived``);
* writing each distinct object once under ``artifacts/`` (as ``ArtifactStore`` does: a
  temporary file, then a rename).

The objects come from a finished case (``lawtap analyze`` with every analyzer) and are loaded
into memory before the clock starts. The timed part runs the digests and writes on two threads
(hashlib and file writes release the GIL) while the main thread reads the capture. Its CPU
seconds are a lower bound for any tool that makes these outputs on this machine; divided by
the usable cores, a lower bound for its wall time.

    python bench/floor.py --case bench/work/case-1G-lawtap-full --pcap bench/work/large.pcap

``bench/run.py --peers ...,lawtap-full,output-floor`` runs it in the suite, after lawtap-full.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

READ_CHUNK = 32 << 20


def load_objects(case: Path) -> list[tuple[bytes, bool, str]]:
    """(bytes, derived, sha256) of every ``files`` record with a stored artifact."""
    table = pq.read_table(case / "files.parquet", columns=["sha256", "md5", "extracted"]).to_pylist()
    objects = []
    for row in table:
        if not row["extracted"]:
            continue
        data = (case / row["extracted"]).read_bytes()
        objects.append((data, row["md5"] is None, row["sha256"]))
    return objects


def hash_and_store(data: bytes, derived: bool, sha256: str, out: Path, written: set[str]) -> int:
    """The digests of one object, and its artifact if no other record stored it first."""
    digest = hashlib.sha256(data).hexdigest()
    if not derived:
        hashlib.md5(data).hexdigest()
        hashlib.sha1(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"floor: artifact {sha256} does not hash to its name")
    if digest in written:
        return 0
    written.add(digest)
    path = out / digest[:2] / digest
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return len(data)


def read_capture(pcap: Path) -> int:
    buf = bytearray(READ_CHUNK)
    total = 0
    with open(pcap, "rb", buffering=0) as fh:
        while n := fh.readinto(buf):
            total += n
    return total


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", type=Path, required=True, help="a finished every-analyzer case")
    ap.add_argument("--pcap", type=Path, required=True, help="the capture it was made from")
    ap.add_argument("--out", type=Path, help="where to write the artifacts (default: floor-artifacts beside the case)")
    args = ap.parse_args()
    if not (args.case / "files.parquet").is_file():
        print(f"floor: {args.case} has no files.parquet", file=sys.stderr)
        return 2
    if not args.pcap.is_file():
        print(f"floor: no capture at {args.pcap}", file=sys.stderr)
        return 2
    out = args.out or args.case.parent / "floor-artifacts"
    if out.exists():  # (deleting it here would slow this run: see clear_outputs in bench/run.py)
        print(f"floor: {out} exists; move it away first", file=sys.stderr)
        return 2
    try:
        objects = load_objects(args.case)
    except (OSError, pa.ArrowException) as e:  # an unfinished case, a missing artifact
        print(f"floor: cannot read {args.case}: {e}", file=sys.stderr)
        return 2
    written: set[str] = set()
    try:
        out.mkdir(parents=True)
        for k in range(256):
            (out / f"{k:02x}").mkdir()
        os.sync()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            stored = pool.map(lambda o: hash_and_store(*o, out, written), objects)
            read = read_capture(args.pcap)
            stored_bytes = sum(stored)
    except OSError as e:  # (a full disk, say)
        print(f"floor: {e}", file=sys.stderr)
        return 2
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    cores = len(os.sched_getaffinity(0))
    wire = sum(len(d) for d, derived, _ in objects if not derived)
    rendered = sum(len(d) for d, derived, _ in objects if derived)
    print(json.dumps({
        "objects": len(objects),
        "wire_object_mb": round(wire / 1e6, 1),
        "rendered_object_mb": round(rendered / 1e6, 1),
        "stored_mb": round(stored_bytes / 1e6, 1),
        "capture_mb": round(read / 1e6, 1),
        "cpu_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "cores": cores,
        "wall_floor_s": round(cpu / cores, 3),
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
