#!/usr/bin/env python3
"""lawtap benchmark harness: lawtap against its peers, on the same capture, in the same run.

    .venv/bin/python bench/run.py [--size 50M|1G] [--peers tshark,nfstream,dpkt,lawtap] [--repeat N]
    .venv/bin/python bench/run.py --startup [--repeat N]

1. Generates the standard workload with the shared generator (``shared/bench/gen_pcap.py``,
   seed 1) into bench/work/small.pcap (50M) or bench/work/large.pcap (1G), with its manifest.
   A sidecar (``<pcap>.meta.json``) records the file's size, SHA-256 and the generator's
   arguments and hash; generation is skipped while they all match.
2. Locates or installs the peers: tshark (apt), dpkt and nfstream (pip, from the project's
   ``bench`` extra), GNU time (apt). A peer that can't be had is reported and skipped.
3. Runs every tool as its own process on the same file, the tools interleaved round-robin
   for each repetition, page cache warm; wall time is time.perf_counter() around the
   process, peak RSS comes from ``/usr/bin/time -v`` (or os.wait4's rusage without it).
   Prints a table and a Markdown version for bench/RESULTS.md, and writes
   bench/work/results-<size>.json (and .md).

``--startup`` instead times ``lawtap analyze`` on an empty capture (the 24-byte pcap
header alone): the target is under one second.

See bench/README.md for what each peer does and how to read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
WORK = BENCH / "work"
PEERS_DIR = BENCH / "peers"
GNU_TIME = "/usr/bin/time"
STARTUP_TARGET_S = 1.0
DEFAULT_TOOLS = ("tshark", "nfstream", "dpkt", "lawtap")
# Issue 3's comparison: object extraction and plain reassembly against lawtap with every analyzer.
RECONSTRUCT_TOOLS = ("tshark-export", "tcpflow", "lawtap-full")
# What lawtap-full's outputs cost with no analysis at all (bench/floor.py): after lawtap-full.
FLOOR_TOOL = "output-floor"
KNOWN_TOOLS = DEFAULT_TOOLS + RECONSTRUCT_TOOLS + (FLOOR_TOOL,)
# Standard workload names: the shared README quotes its peers' figures on these two files.
WORKLOAD_NAMES = {"50M": "small", "1G": "large"}
RUN_TIMEOUT_S = 3 * 3600

TASKS = {
    "tshark": "TCP conversation table (-q -z conv,tcp)",
    "nfstream": "flows + nDPI (20 packets), {meters}",
    "dpkt": "parse to L4 + 5-tuple flow table",
    "lawtap": "analyze --no-analyzers: flows + DPI -> Parquet",
    "tshark-export": "export http+imf objects (out-of-order reassembly on)",
    "tcpflow": "TCP reassembly to files",
    "lawtap-full": "analyze: flows, DPI, reassembly, every analyzer, artifacts",
    FLOOR_TOOL: "no analysis: read the capture, hash and store lawtap-full's objects (bench/floor.py)",
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def run_quiet(cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


# ----------------------------------------------------------------------------- workload


def shared_dir() -> Path:
    env = os.environ.get("LAWTAP_SHARED")
    return Path(env).resolve() if env else (ROOT.parent / "shared").resolve()


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def size_label(text: str) -> str:
    t = text.strip().upper().removesuffix("B")
    if not re.fullmatch(r"\d+(\.\d+)?[KMG]?", t):
        raise argparse.ArgumentTypeError(f"bad size {text!r}: use e.g. 50M or 1G")
    return t


@dataclass
class Workload:
    size: str
    pcap: Path
    manifest: Path
    sha256: str
    bytes: int
    packets: int
    packets_source: str
    generated: bool
    gen_seconds: float | None
    manifest_data: dict = field(default_factory=dict)


def ensure_workload(size: str, seed: int = 1) -> Workload:
    """Generate (or reuse) the standard capture of this size; return it with its packet count."""
    gen = shared_dir() / "bench" / "gen_pcap.py"
    if not gen.is_file():
        raise SystemExit(
            f"error: shared generator not found at {gen}; set LAWTAP_SHARED to the shared directory"
        )
    name = WORKLOAD_NAMES.get(size, f"gen-{size}")
    WORK.mkdir(parents=True, exist_ok=True)
    pcap, manifest = WORK / f"{name}.pcap", WORK / f"{name}.json"
    sidecar = WORK / f"{name}.pcap.meta.json"
    args = ["--size", size, "--seed", str(seed)]
    gen_sha = sha256_file(gen)

    def cached() -> str | None:
        if not (pcap.is_file() and manifest.is_file() and sidecar.is_file()):
            return None
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return None
        if meta.get("args") != args or meta.get("generator_sha256") != gen_sha:
            return None
        if meta.get("size") != pcap.stat().st_size:
            return None
        digest = sha256_file(pcap)
        return digest if digest == meta.get("sha256") else None

    digest = cached()
    gen_seconds = None
    if digest is None:
        log(f"generating {rel(pcap)} ({size}, seed {seed}) with {gen} ...")
        tmp_pcap, tmp_manifest = pcap.with_suffix(".pcap.tmp"), manifest.with_suffix(".json.tmp")
        sidecar.unlink(missing_ok=True)
        cmd = [sys.executable, str(gen), *args, "-o", str(tmp_pcap), "--manifest", str(tmp_manifest)]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL)
        gen_seconds = time.perf_counter() - t0
        if r.returncode != 0:
            tmp_pcap.unlink(missing_ok=True)
            tmp_manifest.unlink(missing_ok=True)
            raise SystemExit(f"error: workload generation failed (exit {r.returncode}): {' '.join(cmd)}")
        tmp_pcap.replace(pcap)
        tmp_manifest.replace(manifest)
        digest = sha256_file(pcap)
        import numpy  # the generator's bytes depend on the NumPy version: record it

        sidecar.write_text(
            json.dumps(
                {
                    "file": pcap.name,
                    "size": pcap.stat().st_size,
                    "sha256": digest,
                    "args": args,
                    "generator": str(gen),
                    "generator_sha256": gen_sha,
                    "python": platform.python_version(),
                    "numpy": numpy.__version__,
                    "generated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "generator_seconds": round(gen_seconds, 2),
                },
                indent=2,
            )
            + "\n"
        )
    else:
        log(f"workload {rel(pcap)} is cached (sha256 {digest[:12]}..., matches {rel(sidecar)})")

    mdata: dict = {}
    packets, source = 0, "manifest"
    try:
        mdata = json.loads(manifest.read_text())
        packets = int(mdata["packets"])
    except (OSError, ValueError, KeyError):
        packets, source = capinfos_packets(pcap), "capinfos"
    return Workload(
        size, pcap, manifest, digest, pcap.stat().st_size, packets, source, gen_seconds is not None, gen_seconds, mdata
    )


def capinfos_packets(pcap: Path) -> int:
    exe = shutil.which("capinfos")
    if not exe:
        raise SystemExit("error: no manifest packet count and no capinfos to count packets")
    out = run_quiet([exe, "-c", "-M", "-T", "-r", str(pcap)], timeout=600).stdout.strip().split("\t")
    return int(out[-1])


def empty_pcap() -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    p = WORK / "empty.pcap"
    p.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    return p


def warm_cache(path: Path) -> None:
    """Read the file once so every tool starts from the same (warm) page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


# ----------------------------------------------------------------------------- installs


def apt_install(pkg: str) -> bool:
    if not shutil.which("apt-get"):
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"installing {pkg} with apt-get ...")
    for attempt in range(2):
        r = subprocess.run(
            ["apt-get", "install", "-y", "-q", pkg], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
        )
        if r.returncode == 0:
            return True
        if attempt == 0:  # stale or missing package lists: update once and retry
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, stdin=subprocess.DEVNULL)
    log(f"  apt-get install {pkg} failed: {r.stderr.strip().splitlines()[-1:] or r.stdout[-200:]}")
    return False


def bench_requirements() -> dict[str, str]:
    """Package name -> requirement string, from pyproject's [project.optional-dependencies] bench."""
    reqs = {"dpkt": "dpkt", "nfstream": "nfstream"}
    try:
        data = tomllib.loads((ROOT / "pyproject.toml").read_text())
        for spec in data["project"]["optional-dependencies"]["bench"]:
            name = re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower()
            reqs[name] = spec
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    return reqs


def py_import_check(module: str) -> tuple[bool, str]:
    r = run_quiet([sys.executable, "-c", f"import {module}, importlib.metadata as m; print(m.version('{module}'))"])
    return r.returncode == 0, (r.stdout.strip() if r.returncode == 0 else (r.stderr.strip().splitlines() or ["?"])[-1])


def ensure_python_peer(module: str, allow_install: bool) -> tuple[bool, str]:
    ok, info = py_import_check(module)
    if ok or not allow_install:
        return ok, info
    spec = bench_requirements().get(module, module)
    log(f"installing {spec} into {sys.prefix} with pip ...")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", spec], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if r.returncode != 0:
        return False, f"pip install {spec} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}"
    ok, info = py_import_check(module)
    if not ok and "pcap" in info.lower():  # nfstream's engine links libpcap at import time
        apt_install("libpcap0.8") or apt_install("libpcap-dev")
        ok, info = py_import_check(module)
    return ok, info


def lawtap_exe() -> Path | None:
    for cand in (ROOT / ".venv" / "bin" / "lawtap", Path(sys.executable).parent / "lawtap"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    found = shutil.which("lawtap")
    return Path(found) if found else None


def first_line(cmd: list[str]) -> str:
    try:
        r = run_quiet(cmd)
        return (r.stdout.strip() or r.stderr.strip()).splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


@dataclass
class Peer:
    name: str
    available: bool
    version: str
    problem: str = ""


def ensure_peers(names: list[str], allow_install: bool) -> dict[str, Peer]:
    peers: dict[str, Peer] = {}
    for name in names:
        if name == "tcpflow":
            if not shutil.which("tcpflow") and allow_install:
                apt_install("tcpflow")
            exe = shutil.which("tcpflow")
            peers[name] = Peer(name, bool(exe), first_line([exe, "-V"]) if exe else "", "" if exe else "tcpflow not found")
        elif name in ("tshark", "tshark-export"):
            if not shutil.which("tshark") and allow_install:
                apt_install("tshark")
            exe = shutil.which("tshark")
            if exe:
                ver = first_line([exe, "--version"])
                m = re.search(r"TShark \(Wireshark\) (\S+)", ver)
                peers[name] = Peer(name, True, m.group(1) if m else ver)
            else:  # noqa: PLR5501
                why = "apt-get install tshark failed" if allow_install else "--no-install"
                peers[name] = Peer(name, False, "", f"tshark not found ({why})")
        elif name == FLOOR_TOOL:
            peers[name] = Peer(name, "lawtap-full" in names, "",
                               "" if "lawtap-full" in names else "needs lawtap-full in the same suite (its case)")
        elif name in ("dpkt", "nfstream"):
            ok, info = ensure_python_peer(name, allow_install)
            peers[name] = Peer(name, ok, info if ok else "", "" if ok else info)
        elif name in ("lawtap", "lawtap-full"):
            exe = lawtap_exe()
            ver = ""
            if exe:
                r = run_quiet([sys.executable, "-c", "import importlib.metadata as m; print(m.version('lawtap'))"])
                ver = r.stdout.strip() if r.returncode == 0 else "?"
                rev = run_quiet(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
                if rev.returncode == 0:
                    dirty = run_quiet(  # --no-optional-locks: never touch the index
                        ["git", "--no-optional-locks", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]
                    )
                    ver += f" ({rev.stdout.strip()}{'+dirty' if dirty.stdout.strip() else ''})"
            # lawtap is not installed by the harness (make / pip install -e . does): a missing
            # command is reported as a failed run (exit 127), like any other failure.
            peers[name] = Peer(name, True, ver or "not installed")
    if not os.path.exists(GNU_TIME) and allow_install:
        apt_install("time")
    return peers


# ----------------------------------------------------------------------------- measuring


class TreeSampler(threading.Thread):
    """Samples the summed RSS of a process's descendants (psutil), for multi-process tools.

    ru_maxrss (what /usr/bin/time reports) is the peak of the largest single process;
    a tool that forks workers (nfstream's meters) uses more than that in total.
    """

    def __init__(self, pid: int, interval: float = 0.1, include_root: bool = False):
        super().__init__(daemon=True)
        self.pid, self.interval, self.include_root = pid, interval, include_root
        self.peak = 0
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._halt.is_set():
            total = 0
            try:
                procs = root.children(recursive=True) + ([root] if self.include_root else [])
            except psutil.Error:
                break
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self) -> int | None:
        self._halt.set()
        self.join(timeout=2)
        return self.peak if self.samples else None


@dataclass
class Run:
    exit: int
    wall: float
    peak_rss_kb: int | None
    tree_rss_kb: int | None
    user_s: float | None
    sys_s: float | None
    stdout: Path
    stderr: Path
    note: str = ""
    other_cores: float | None = None  # mean CPU used by everything else on the machine during the run
    steal_s: float | None = None  # CPU time the hypervisor took away (all cores) during the run


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_counters() -> tuple[float, float] | None:
    """(busy, steal) CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    busy = v[0] + v[1] + v[2] + v[5] + v[6]
    return busy / CLK_TCK, (v[7] if len(v) > 7 else 0) / CLK_TCK


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def background_cores(seconds: float = 1.0) -> float | None:
    """CPU cores busy with other work over a short window (the harness itself excluded)."""
    a, s0 = cpu_counters(), self_cpu()
    if a is None:
        return None
    time.sleep(seconds)
    b = cpu_counters()
    return max(0.0, (b[0] - a[0]) - (self_cpu() - s0)) / seconds


def wait_idle(limit_s: float, threshold: float = 0.25) -> float | None:
    """Wait (up to limit_s) until other work uses under `threshold` cores; return the last reading."""
    deadline = time.monotonic() + limit_s
    bg = background_cores()
    while bg is not None and bg >= threshold and time.monotonic() < deadline:
        bg = background_cores(2.0)
    return bg


def parse_gnu_time(text: str) -> dict:
    out: dict = {}
    for key, pat in (
        ("rss", r"Maximum resident set size \(kbytes\): (\d+)"),
        ("user", r"User time \(seconds\): ([\d.]+)"),
        ("sys", r"System time \(seconds\): ([\d.]+)"),
        ("exit", r"Exit status: (\d+)"),
        ("signal", r"Command terminated by signal (\d+)"),
    ):
        m = re.search(pat, text)
        if m:
            out[key] = float(m.group(1)) if key in ("user", "sys") else int(m.group(1))
    return out


def measure(cmd: list[str], tag: str, cwd: Path = ROOT) -> Run:
    """Run cmd as its own process; wall time around it, peak RSS via GNU time or wait4."""
    logs = WORK / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out_p, err_p = logs / f"{tag}.out", logs / f"{tag}.err"
    use_time = os.path.exists(GNU_TIME)
    tfd, tpath = tempfile.mkstemp(prefix="gnutime-", dir=logs)
    os.close(tfd)
    full = [GNU_TIME, "-v", "-o", tpath, *cmd] if use_time else cmd
    note = ""
    with open(out_p, "wb") as out, open(err_p, "wb") as err:
        c0, s0 = cpu_counters(), self_cpu()
        t0 = time.perf_counter()
        try:
            # Tools run as users run them: with byte-code caching (some shells here disable it).
            env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
            proc = subprocess.Popen(
                full, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True, env=env
            )
        except FileNotFoundError as e:
            os.unlink(tpath)
            return Run(127, time.perf_counter() - t0, None, None, None, None, out_p, err_p, f"not found: {e.filename}")
        sampler = TreeSampler(proc.pid, include_root=not use_time)
        sampler.start()
        timed_out = threading.Event()

        def kill_on_timeout() -> None:
            timed_out.set()
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # the whole group: tools that fork workers

        timer = threading.Timer(RUN_TIMEOUT_S, kill_on_timeout)
        timer.daemon = True
        timer.start()
        try:
            _pid, status, rusage = os.wait4(proc.pid, 0)
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            os.wait4(proc.pid, 0)
            raise
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        c1, s1 = cpu_counters(), self_cpu()
        if timed_out.is_set():
            note = f"timed out after {RUN_TIMEOUT_S} s"
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
        tree = sampler.stop()
    code = proc.returncode
    rss = int(rusage.ru_maxrss) if rusage else None
    user, sys_ = (rusage.ru_utime, rusage.ru_stime) if rusage else (None, None)
    if use_time:
        try:
            info = parse_gnu_time(Path(tpath).read_text())
        except OSError:
            info = {}
        rss = info.get("rss", rss)
        user, sys_ = info.get("user", user), info.get("sys", sys_)
        if "signal" in info:
            code = -info["signal"]
        elif "exit" in info:
            code = info["exit"]
        if code == 127 and b"No such file" in err_p.read_bytes()[-300:]:
            note = note or f"command not found: {cmd[0]}"
    os.unlink(tpath)
    other = steal = None
    if c0 and c1 and wall > 0:
        tool_cpu = (user or 0.0) + (sys_ or 0.0)
        other = max(0.0, (c1[0] - c0[0]) - tool_cpu - (s1 - s0)) / wall
        steal = c1[1] - c0[1]
    return Run(code, wall, rss, tree // 1024 if tree else None, user, sys_, out_p, err_p, note, other, steal)


def parse_result(tool: str, run: Run) -> dict:
    """What the tool itself reports (flow counts etc.), to check that all saw the same capture."""
    try:
        text = run.stdout.read_text(errors="replace")
    except OSError:
        return {}
    if tool in ("dpkt", "nfstream", FLOOR_TOOL):
        for line in reversed(text.strip().splitlines()):
            try:
                return json.loads(line)
            except ValueError:
                continue
        return {}
    if tool == "tshark":
        rows = [ln for ln in text.splitlines() if "<->" in ln]
        frames = 0
        for ln in rows:
            # peer address, then (frames, bytes, unit) for <-, -> and total, then start, duration
            toks = ln.split("<->", 1)[1].split()
            if len(toks) >= 8 and toks[7].isdigit():
                frames += int(toks[7])
        return {"tcp_conversations": len(rows), "tcp_frames": frames}
    if tool == "lawtap":
        return {}
    return {}


# Seconds to wait after syncing, before each measured run.
SETTLE_SECONDS = 2.0
TRASH = WORK / "trash"  # earlier runs' outputs, deleted once the whole suite is measured


def output_dir(tool: str, case_dir: Path) -> Path | None:
    """Where a tool writes what it extracts (None: it writes nothing but its report)."""
    if tool.startswith("lawtap"):
        return case_dir
    if tool == "tshark-export":
        return WORK / "tshark-objects"
    if tool == "tcpflow":
        return WORK / "tcpflow-out"
    if tool == FLOOR_TOOL:
        return WORK / "floor-out"
    return None


def clear_outputs(out: Path | None) -> None:
    """Move a tool's previous outputs aside (see :data:`TRASH`), sync, and let the disk settle,
    before a measured run. The same for every tool.

    Why not delete them here: each run writes thousands of files (lawtap's case: about 2,800
    on the 1 GB workload). On ext4 without a journal (as here), the inode allocator passes over
    inodes freed in the last 60 s (6 min while their table blocks are unwritten), reading each
    one's deletion time (``recently_deleted``): deleting the last run's case just before the
    next run cost that run about 0.8 CPU-s. And syncing first keeps the write-back of the
    previous tool's files out of the next one's time.
    """
    if out is not None and out.exists():
        TRASH.mkdir(parents=True, exist_ok=True)
        out.rename(TRASH / f"{out.name}-{time.monotonic_ns()}")
    os.sync()
    time.sleep(SETTLE_SECONDS)


def empty_trash() -> None:
    shutil.rmtree(TRASH, ignore_errors=True)


def floor_times(r: Run) -> None:
    """The floor's wall and CPU times are those of its timed part (bench/floor.py), not of
    its process, which also imports pyarrow and loads the objects from lawtap-full's case."""
    try:
        timed = json.loads(r.stdout.read_text().strip().splitlines()[-1])
        r.wall, r.user_s, r.sys_s = float(timed["wall_s"]), float(timed["cpu_s"]), 0.0
    except (OSError, IndexError, ValueError, KeyError) as e:
        r.note = f"no timing from bench/floor.py: {e}"


def tool_cmd(tool: str, pcap: Path, case_dir: Path, meters: int) -> list[str]:
    py = sys.executable
    if tool == "tshark":
        return [shutil.which("tshark") or "tshark", "-n", "-q", "-r", str(pcap), "-z", "conv,tcp"]
    if tool == "nfstream":
        return [py, str(PEERS_DIR / "nfstream_flows.py"), str(pcap), "--meters", str(meters)]
    if tool == "dpkt":
        return [py, str(PEERS_DIR / "dpkt_flows.py"), str(pcap)]
    if tool in ("lawtap", "lawtap-full"):
        exe = lawtap_exe()
        cmd = [str(exe) if exe else str(ROOT / ".venv" / "bin" / "lawtap"), "analyze", str(pcap), "-o", str(case_dir), "--force"]
        return cmd + (["--no-analyzers"] if tool == "lawtap" else [])
    if tool == "tshark-export":
        out = output_dir(tool, case_dir)
        out.mkdir(parents=True, exist_ok=True)
        return [shutil.which("tshark") or "tshark", "-n", "-q", "-r", str(pcap), "-o", "tcp.reassemble_out_of_order:TRUE",
                "--export-objects", f"http,{out}", "--export-objects", f"imf,{out}"]
    if tool == "tcpflow":
        out = output_dir(tool, case_dir)
        out.mkdir(parents=True, exist_ok=True)
        return [shutil.which("tcpflow") or "tcpflow", "-r", str(pcap), "-o", str(out)]
    if tool == FLOOR_TOOL:  # the objects of lawtap-full's case of the same suite
        full_case = case_dir.with_name(case_dir.name.replace(FLOOR_TOOL, "lawtap-full"))
        return [py, str(BENCH / "floor.py"), "--case", str(full_case), "--pcap", str(pcap),
                "--out", str(output_dir(tool, case_dir))]
    raise ValueError(tool)


def dir_size(path: Path) -> tuple[int, int]:
    files = total = 0
    for p in path.rglob("*"):
        if p.is_file():
            files += 1
            total += p.stat().st_size
    return files, total


# ----------------------------------------------------------------------------- reporting


def machine_info() -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        m = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        mem_kb = int(m.group(1)) if m else 0
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def fmt_rate(pps: float | None) -> str:
    if not pps:
        return "-"
    if pps >= 1e6:
        return f"{pps / 1e6:.2f} M"
    if pps >= 1e3:
        return f"{pps / 1e3:.0f} k"
    return f"{pps:.0f}"


def fmt_num(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def summarize(tool: str, task: str, cmd: list[str], runs: list[Run], packets: int, version: str) -> dict:
    ok = [r for r in runs if r.exit == 0]
    failed = [r for r in runs if r.exit != 0]
    entry: dict = {
        "task": task,
        "version": version,
        "cmd": [rel(Path(c)) if c.startswith(str(ROOT)) else c for c in cmd],
        "runs": [
            {
                "exit": r.exit,
                "wall_s": round(r.wall, 4),
                "peak_rss_mb": None if r.peak_rss_kb is None else round(r.peak_rss_kb / 1024, 1),
                "tree_rss_mb": None if r.tree_rss_kb is None else round(r.tree_rss_kb / 1024, 1),
                "user_s": r.user_s,
                "sys_s": r.sys_s,
                "other_cores": None if r.other_cores is None else round(r.other_cores, 2),
                "steal_s": None if r.steal_s is None else round(r.steal_s, 2),
                **({"note": r.note} if r.note else {}),
            }
            for r in runs
        ],
    }
    if failed or not ok:
        r = failed[0] if failed else None
        tail = ""
        if r is not None:
            try:
                tail = r.stderr.read_text(errors="replace").strip().splitlines()[-1][:200]
            except (OSError, IndexError):
                tail = ""
        entry.update(
            status="failed",
            exit=r.exit if r else None,
            error=(r.note if r and r.note else tail),
            stderr_log=rel(r.stderr) if r else None,
        )
        return entry
    wall = statistics.median(r.wall for r in ok)
    rss = [r.peak_rss_kb for r in ok if r.peak_rss_kb is not None]
    tree = [r.tree_rss_kb for r in ok if r.tree_rss_kb is not None]
    cpu = [r.user_s + r.sys_s for r in ok if r.user_s is not None and r.sys_s is not None]
    oth = [r.other_cores for r in ok if r.other_cores is not None]
    quiet = [r.wall for r in ok if r.other_cores is not None and r.other_cores < 0.25]
    entry.update(
        status="ok",
        exit=0,
        wall_s=round(wall, 4),
        wall_min_s=round(min(r.wall for r in ok), 4),
        wall_max_s=round(max(r.wall for r in ok), 4),
        pps=round(packets / wall, 1) if wall > 0 else None,
        peak_rss_mb=round(max(rss) / 1024, 1) if rss else None,
        # sampled, so it can miss a short peak: never below the single-process peak
        tree_rss_mb=round(max(tree + rss) / 1024, 1) if tree else None,
        cpu_s=round(statistics.median(cpu), 3) if cpu else None,
        pps_per_cpu_s=round(packets / statistics.median(cpu), 1) if cpu and packets and statistics.median(cpu) else None,
        other_cores=round(statistics.median(oth), 2) if oth else None,
        # the runs during which the rest of the machine stayed under 0.25 cores busy
        quiet_runs=len(quiet),
        wall_quiet_s=round(statistics.median(quiet), 4) if quiet else None,
        other_cores_max=round(max(oth), 2) if oth else None,
        result=parse_result(tool, ok[-1]),
    )
    return entry


def lawtap_mode_for(name: str) -> str:
    """The lawtap run a tool is compared with: every analyzer for the reconstruction peers (and
    the output floor), flows + DPI for the flow peers."""
    return "lawtap-full" if name in RECONSTRUCT_TOOLS or name == FLOOR_TOOL else "lawtap"


def ratios(tools: dict, key: str = "pps") -> dict:
    """lawtap's rate over each peer's (key "pps_per_cpu_s": per CPU-second, robust to a busy machine)."""
    out = {}
    for name, t in tools.items():
        if name.startswith("lawtap"):
            continue
        law = tools.get(lawtap_mode_for(name))
        if law and law.get("status") == "ok" and law.get(key) and t.get("status") == "ok" and t.get(key):
            out[name] = round(law[key] / t[key], 3)
        else:
            out[name] = None
    return out


def ratio_text(name: str, tools: dict, rat: dict | None) -> str:
    if rat is None:  # start-up mode: no packets, no speed ratio
        return "-"
    if name.startswith("lawtap"):
        return "1.00x" if tools[name].get("status") == "ok" else "-"
    law = tools.get(lawtap_mode_for(name))
    if law is None:
        return "n/a (lawtap not run)"
    if law.get("status") != "ok":
        return "n/a (lawtap failed)"
    r = rat.get(name)
    return f"{r:.2f}x" if r is not None else "n/a"


def table_rows(res: dict) -> list[list[str]]:
    tools, rat = res["tools"], res.get("ratios")
    rows = []
    for name, t in tools.items():
        if t.get("status") == "ok":
            rows.append(
                [
                    name,
                    t["task"],
                    fmt_num(t["wall_s"]),
                    fmt_rate(t["pps"]),
                    fmt_num(t["peak_rss_mb"], 0),
                    fmt_num(t.get("tree_rss_mb"), 0),
                    fmt_num(t.get("cpu_s")),
                    fmt_num(t.get("other_cores")),
                    ratio_text(name, tools, rat),
                ]
            )
        else:
            why = t.get("error") or t.get("status")
            state = f"failed (exit {t['exit']})" if t.get("exit") is not None else t.get("status", "failed")
            last = "-" if name.startswith("lawtap") or rat is None else f"({why})"[:60]
            rows.append([name, t["task"], state, "-", "-", "-", "-", "-", last])
    return rows


HEADERS = [
    "tool",
    "task",
    "wall s",
    "packets/s",
    "peak RSS MB",
    "tree RSS MB",
    "CPU s",
    "other load",
    "lawtap speed / peer",
]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEADERS)]
    right = set(range(2, len(HEADERS)))

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(HEADERS), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def markdown(res: dict) -> str:
    m, w, v = res["machine"], res.get("workload"), res["versions"]
    out = []
    if w:
        out.append(
            f"### {w['size']} workload: `{w['file']}` — {w['bytes'] / 1e6:,.1f} MB, {w['packets']:,} packets "
            f"(seed {w['seed']}, sha256 `{w['sha256'][:16]}…`)"
        )
    else:
        out.append("### Start-up: `lawtap analyze` on an empty capture (24-byte pcap header)")
    out.append("")
    out.append(
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['ram_gib']} GiB RAM, "
        f"Linux {m['kernel']}; Python {m['python']}; {m['date'][:10]}. "
        f"Median of {res['repeat']} run(s), page cache warm, each tool its own process, "
        "wall time around the whole process."
    )
    out.append("")
    out.append("Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + ".")
    out.append("")
    out.append("| " + " | ".join(HEADERS) + " |")
    out.append("|---|---|" + "---:|" * (len(HEADERS) - 2))
    for r in table_rows(res):
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    out.append("")
    out.append(
        "`lawtap speed / peer` = lawtap packets/s ÷ the peer's packets/s (above 1: lawtap is faster). "
        "Peak RSS: largest single process (ru_maxrss); tree RSS: sampled sum over the tool's processes. "
        "Other load: CPU cores busy with other work during the tool's runs (median; from /proc/stat) — "
        "above ~0.25 the machine was shared and the wall times are inflated."
    )
    if "startup" in res:
        s = res["startup"]
        out.append("")
        out.append(f"Start-up target < {STARTUP_TARGET_S:.0f} s: **{s['verdict']}**")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- main


def run_suite(
    tools: list[str],
    peers: dict[str, Peer],
    pcap: Path,
    packets: int,
    repeat: int,
    label: str,
    meters: int,
    idle_wait: float = 0,
) -> dict:
    runs: dict[str, list[Run]] = {t: [] for t in tools}
    cmds: dict[str, list[str]] = {}
    skip: set[str] = set()
    for t in tools:
        if not peers[t].available:
            log(f"{t}: unavailable ({peers[t].problem}); continuing with the others")
            skip.add(t)
    for i in range(repeat):
        for t in tools:
            if t in skip:
                continue
            case_dir = WORK / f"case-{label}-{t}"
            clear_outputs(output_dir(t, case_dir))
            cmd = tool_cmd(t, pcap, case_dir, meters)
            cmds[t] = cmd
            if idle_wait > 0:
                bg = wait_idle(idle_wait)
                if bg is not None and bg >= 0.25:
                    log(f"  machine still busy ({bg:.2f} cores of other work) after {idle_wait:.0f} s; running anyway")
            r = measure(cmd, f"{label}-{t}-{i + 1}")
            if t == FLOOR_TOOL and r.exit == 0:
                floor_times(r)
            runs[t].append(r)
            extra = f", peak RSS {r.peak_rss_kb / 1024:.0f} MB" if r.peak_rss_kb else ""
            if r.other_cores is not None:
                extra += f", other load {r.other_cores:.2f} cores"
            if r.exit == 0:
                rate = f", {packets / r.wall:,.0f} packets/s" if packets else ""
                log(f"  [{i + 1}/{repeat}] {t}: {r.wall:.2f} s{rate}{extra}")
            else:
                log(f"  [{i + 1}/{repeat}] {t}: failed (exit {r.exit}){' — ' + r.note if r.note else ''}"
                    f" — see {rel(r.stderr)}")
                skip.add(t)  # a failing tool keeps failing: don't spend the other repetitions on it
    empty_trash()
    result: dict = {}
    for t in tools:
        task = TASKS[t].format(meters=f"n_meters={meters}" if meters else "n_meters=auto")
        if t in skip and not runs[t]:
            result[t] = {"task": task, "status": "unavailable", "error": peers[t].problem, "exit": None}
            continue
        result[t] = summarize(t, task, cmds.get(t, []), runs[t], packets, peers[t].version)
        if t.startswith("lawtap") and result[t]["status"] == "ok":
            case_dir = WORK / f"case-{label}-{t}"
            if case_dir.exists():
                files, size = dir_size(case_dir)
                result[t]["result"] = {"case_dir": rel(case_dir), "files": files, "bytes": size}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Benchmark lawtap against tshark, nfstream and dpkt on the standard workload.")
    p.add_argument("--size", type=size_label, default="50M", help="workload size: 50M (small.pcap) or 1G (large.pcap)")
    p.add_argument(
        "--peers",
        default=",".join(DEFAULT_TOOLS),
        help=f"comma-separated tools to run, in this order (default: {','.join(DEFAULT_TOOLS)})",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per tool; the median wall time is reported (default 3)")
    p.add_argument(
        "--startup",
        action="store_true",
        help="time `lawtap analyze` on an empty capture instead (target < 1 s); --peers adds reference figures",
    )
    p.add_argument("--seed", type=int, default=1, help="generator seed (the standard workload uses 1)")
    p.add_argument(
        "--nfstream-meters", type=int, default=1, help="nfstream n_meters (default 1; 0 lets nfstream use every core)"
    )
    p.add_argument("--no-install", action="store_true", help="don't apt/pip install missing peers; skip them")
    p.add_argument("--no-warm", action="store_true", help="don't pre-read the capture into the page cache")
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="S",
        help="before each run, wait up to S seconds for other work on the machine to drop below 0.25 cores",
    )
    a = p.parse_args(argv)

    tools = [t.strip().lower() for t in a.peers.split(",") if t.strip()]
    unknown = [t for t in tools if t not in KNOWN_TOOLS]
    if unknown or not tools:
        p.error(f"unknown tool(s) {', '.join(unknown) or '(none)'}; known: {', '.join(KNOWN_TOOLS)}")
    if a.repeat < 1:
        p.error("--repeat must be at least 1")
    tools = list(dict.fromkeys(tools))
    if FLOOR_TOOL in tools and "lawtap-full" in tools:  # it reads lawtap-full's case
        tools.remove(FLOOR_TOOL)
        tools.insert(tools.index("lawtap-full") + 1, FLOOR_TOOL)
    WORK.mkdir(parents=True, exist_ok=True)

    peers = ensure_peers(tools, allow_install=not a.no_install)
    versions = {"python": platform.python_version()}
    versions.update({n: pr.version for n, pr in peers.items()})
    try:
        import numpy

        versions["numpy"] = numpy.__version__
    except ImportError:
        pass
    res: dict = {
        "machine": machine_info(),
        "versions": versions,
        "repeat": a.repeat,
        "rss_method": f"{GNU_TIME} -v (ru_maxrss)" if os.path.exists(GNU_TIME) else "os.wait4 rusage (ru_maxrss)",
        "nfstream_meters": a.nfstream_meters,
    }

    if a.startup:
        pcap = empty_pcap()
        if "lawtap" not in tools:
            tools.insert(0, "lawtap")
            peers.update(ensure_peers(["lawtap"], False))
            versions["lawtap"] = peers["lawtap"].version
        log(f"start-up: {', '.join(tools)} on {rel(pcap)} (24-byte pcap header), {a.repeat} run(s) each")
        res["tools"] = run_suite(tools, peers, pcap, 0, a.repeat, "empty", a.nfstream_meters, a.wait_idle)
        for t in res["tools"].values():  # packets/s means nothing on an empty file
            if "pps" in t:
                t["pps"] = None
        res["ratios"] = None
        law = res["tools"]["lawtap"]
        if law.get("status") == "ok":
            verdict = "PASS" if law["wall_s"] < STARTUP_TARGET_S else "FAIL"
            verdict_text = f"{verdict} ({law['wall_s']:.3f} s)"
        else:
            verdict_text = f"lawtap: failed (exit {law.get('exit')})"
        res["startup"] = {"target_s": STARTUP_TARGET_S, "verdict": verdict_text}
        out_json, out_md = WORK / "results-startup.json", WORK / "results-startup.md"
    else:
        wl = ensure_workload(a.size, a.seed)
        res["workload"] = {
            "size": a.size,
            "file": rel(wl.pcap),
            "bytes": wl.bytes,
            "sha256": wl.sha256,
            "packets": wl.packets,
            "packets_source": wl.packets_source,
            "seed": a.seed,
            "manifest": rel(wl.manifest),
            "generated_this_run": wl.generated,
            "generator_seconds": None if wl.gen_seconds is None else round(wl.gen_seconds, 2),
        }
        if not a.no_warm:
            warm_cache(wl.pcap)
        log(f"running {', '.join(tools)} on {rel(wl.pcap)} ({wl.packets:,} packets), {a.repeat} run(s) each")
        res["tools"] = run_suite(tools, peers, wl.pcap, wl.packets, a.repeat, a.size, a.nfstream_meters, a.wait_idle)
        res["ratios"] = ratios(res["tools"])
        res["ratios_cpu"] = ratios(res["tools"], key="pps_per_cpu_s")
        out_json, out_md = WORK / f"results-{a.size}.json", WORK / f"results-{a.size}.md"

    md = markdown(res)
    out_json.write_text(json.dumps(res, indent=2) + "\n")
    out_md.write_text(md)

    print()
    print(text_table(table_rows(res)))
    for name, t in res["tools"].items():
        if t.get("status") != "ok":
            exit_txt = f"exit {t['exit']}" if t.get("exit") is not None else t.get("status")
            print(f"{name}: failed ({exit_txt}){': ' + t['error'] if t.get('error') else ''}")
    if "startup" in res:
        print(f"\nstart-up (target < {STARTUP_TARGET_S:.0f} s): {res['startup']['verdict']}")
    if "workload" in res:
        checks = []
        for name, t in res["tools"].items():
            r = t.get("result") or {}
            if "packets" in r and r["packets"] != res["workload"]["packets"]:
                checks.append(f"{name} saw {r['packets']:,} packets, manifest says {res['workload']['packets']:,}")
            want = wl.manifest_data.get("tcp_connections")
            if "tcp_conversations" in r and want is not None and r["tcp_conversations"] != want:
                checks.append(f"{name} saw {r['tcp_conversations']:,} TCP conversations, manifest says {want:,}")
        for name, t in res["tools"].items():
            if (t.get("other_cores_max") or 0) >= 0.25:
                checks.append(
                    f"{name}: other work used up to {t['other_cores_max']:.2f} cores during its runs; "
                    "its wall time is inflated (rerun on a quiet machine, or with --wait-idle)"
                )
        for c in checks:
            print("warning: " + c)
    print(f"\nMarkdown for bench/RESULTS.md (also in {rel(out_md)}):\n")
    print(md)
    print(f"results: {rel(out_json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
