"""Ahead-of-time compiled copies of the packet-path kernels (reader, decoder, flow table) and
of the analyzers' hot kernels (merged TCP runs, DNS messages, RTP streams).

Why: a ``lawtap analyze`` run spends about a second before its first packet importing numba
and loading its cached kernels (numba re-installs its typing and lowering registries even for
a cache hit); with every analyzer on, both processes of a run with a lane paid it. These
kernels are few and their argument types fixed, so they are also compiled ahead of time
(``numba.pycc``) into one extension module that loads in milliseconds without numba. The
rest (export, JSON logs, the ETSI encoder) stays JIT.

* ``python -m lawtap.aot build [--if-stale]`` (run by ``make``) compiles :data:`EXPORTS` into
  ``<cache>/lawtap_kernels_<key>.so``; ``<key>`` hashes the kernels' source files and the
  numba/numpy/Python versions, so an edited kernel is never served stale: it simply falls back
  to numba until the module is rebuilt.
* :func:`lawtap.jit.njit` stubs ask :func:`lookup` for their function before importing numba.
  An exported function does not check its arguments, so the stub checks them against the
  signature (dtype, dimensions, C order, writable) and uses numba whenever they differ.

The cache directory is ``$LAWTAP_KERNEL_DIR``, else ``$XDG_CACHE_HOME/lawtap`` (``~/.cache/lawtap``).
``LAWTAP_AOT=0`` disables the compiled copies (tests compare both paths).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# (module, function, numba signature): the packet-path entry kernels, called from Python only.
EXPORTS: tuple[tuple[str, str, str], ...] = (
    ("lawtap.sources.pcap", "index_pcap",
     "void(u1[::1], i8, b1, i8, b1, i8, i8, i8, i8[::1], i8[::1], i4[::1], i4[::1], i8[::1], i4[::1], i8[::1], i8)"),
    ("lawtap.sources.pcapng", "index_pcapng",
     "void(u1[::1], i8, b1, i8, b1, i8[:,::1], i8, i8[::1], i8[::1], i4[::1], i4[::1], i8[::1], i4[::1], i8[::1], i8)"),
    ("lawtap.decode.kernel", "decode_batch", "void(u1[::1], i8[::1], i4[::1], i4[::1], u8[:,::1], i8[:,::1])"),
    ("lawtap.flows.table", "process",
     "UniTuple(i8, 2)(u1[::1], u8[:,::1], i8[:,::1], i8[::1], i8, i8, u8[:,::1], i8[:,::1], u1[:,::1], u1[::1],"
     " i8[::1], b1[::1], u8[:,::1], i8[:,::1], u1[:,::1], i8[:,::1], u1[::1], i8[::1], i8[::1], i1[::1], i1[::1])"),
    ("lawtap.flows.table", "flush_all", "b1(u8[:,::1], i8[:,::1], u1[:,::1], u1[::1], i8[::1], u8[:,::1], i8[:,::1], u1[:,::1])"),
    ("lawtap.flows.table", "rehash", "void(u8[:,::1], i8[:,::1], u1[:,::1], u1[::1], u8[:,::1], i8[:,::1], u1[:,::1], u1[::1])"),
    ("lawtap.flows.table", "uid_chars", "void(i8[::1], u8, u8, u1, u1[::1], u1[:,::1])"),
    ("lawtap.flows.table", "address_chars", "i8(u8[::1], u8[::1], i4[::1], u1[::1])"),
    # With every analyzer on: the analyzers' hot kernels, so that a run imports no numba at all.
    ("lawtap.streams.gather", "gather_payloads", "void(u1[::1], i8[::1], i8[::1], u1[::1])"),
    ("lawtap.streams.gather", "flow_groups", "i8(i8[::1], i8[::1], i8[::1], i8[::1])"),
    ("lawtap.analyzers.dns_scan", "scan",
     "UniTuple(i8, 3)(u1[::1], i8[::1], i8[::1], i8[:,::1], u1[::1], u1[::1], i8[::1], i8[::1], u1[::1])"),
    ("lawtap.analyzers.rtp", "_rtp_headers", "b1(u1[::1], i8[::1], i8[::1], i8[:,::1])"),
    ("lawtap.analyzers.rtp", "_assign_streams", "void(i8[:,::1], i8[::1], i8, i8[::1], i8[::1])"),
    ("lawtap.analyzers.rtp", "_stream_run",
     "Tuple((i8[:,::1], u1[::1]))(u1[::1], i8[:,::1], f8[::1], i8[::1], i8[::1], i8[::1], i8[::1], i8[::1], f8[::1],"
     " i8[::1], i8[::1], i8)"),
    ("lawtap.analyzers.rtp", "_place_packets", "i8(i8[::1], i8[::1], i8, i8, i8[::1])"),
    ("lawtap.analyzers.rtp", "_scatter_samples", "void(i2[::1], i8[::1], i8[::1], i2[::1])"),
    ("lawtap.analyzers.g711", "expand_codes", "void(u1[::1], i2[::1], i2[::1])"),
    ("lawtap.analyzers.base64_lines", "decode_lines", "i8(u1[::1], u1[::1], u1[::1])"),
)
# Sources the compiled module depends on (the kernels, their helpers and constants).
SOURCES = ("jit.py", "aot.py", "decode/kernel.py", "flows/table.py", "sources/pcap.py", "sources/pcapng.py",
           "streams/gather.py", "analyzers/dns_scan.py", "analyzers/rtp.py",
           "analyzers/g711.py", "analyzers/base64_lines.py")

_DTYPES = {"u1": np.uint8, "i1": np.int8, "i2": np.int16, "i4": np.int32, "i8": np.int64, "u8": np.uint64, "b1": np.bool_, "f8": np.float64}
_ARRAY = re.compile(r"^(\w\w)\[([:, ]*)(::1)?\]$")


def cache_dir() -> Path:
    env = os.environ.get("LAWTAP_KERNEL_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lawtap"


def module_key() -> str:
    """Hash of everything the compiled code depends on."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for rel in SOURCES:
        h.update(rel.encode())
        h.update((root / rel).read_bytes())
    # numba's version without importing numba (or scanning every installed distribution).
    spec = importlib.util.find_spec("numba")
    version_file = Path(spec.origin).with_name("_version.py") if spec and spec.origin else None
    h.update(version_file.read_bytes() if version_file and version_file.is_file() else b"numba=?")
    h.update(f"numpy={np.__version__}".encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def module_name(key: str) -> str:
    return f"lawtap_kernels_{key}"


def exported_name(module: str, function: str) -> str:
    return f"{module.rsplit('.', 1)[-1]}__{function}"


# ---- runtime: argument checks and lookup ----

def _arg_checks(signature: str) -> list[Callable[[Any], bool]]:
    """One predicate per argument of ``signature`` (a numba signature string, flat types only)."""
    depth = 0
    for start in range(len(signature) - 1, -1, -1):  # the last parenthesized group: the arguments
        depth += {")": 1, "(": -1}.get(signature[start], 0)
        if depth == 0:
            break
    inner = signature[start + 1 : -1]
    args = [a.strip() for a in re.split(r",(?![^\[]*\])", inner)]
    checks: list[Callable[[Any], bool]] = []
    for a in args:
        m = _ARRAY.match(a)
        if m:
            dtype = np.dtype(_DTYPES[m.group(1)])
            ndim = m.group(2).count(":") + (1 if m.group(3) else 0)

            def is_array(x: Any, dtype: np.dtype = dtype, ndim: int = ndim) -> bool:
                return (type(x) is np.ndarray and x.dtype == dtype and x.ndim == ndim
                        and x.flags.c_contiguous and x.flags.writeable)

            checks.append(is_array)
        elif a == "b1":
            checks.append(lambda x: isinstance(x, (bool, np.bool_, int, np.integer)))
        else:  # integer scalars: i8, u8, u1
            lo, hi = {"i8": (-(1 << 63), 1 << 63), "u8": (0, 1 << 64), "u1": (0, 256)}[a]
            checks.append(lambda x, lo=lo, hi=hi: isinstance(x, (int, np.integer)) and lo <= int(x) < hi)
    return checks


class _Compiled:
    """A compiled kernel and the checks that make calling it safe."""

    def __init__(self, fn: Callable[..., Any], signature: str) -> None:
        self.fn = fn
        self.checks = _arg_checks(signature)

    def accepts(self, args: tuple[Any, ...]) -> bool:
        checks = self.checks
        return len(args) == len(checks) and all(ok(x) for ok, x in zip(checks, args))


_loaded: dict[str, _Compiled] | None = None


def _load() -> dict[str, _Compiled]:
    global _loaded
    if _loaded is not None:
        return _loaded
    _loaded = {}
    if os.environ.get("LAWTAP_AOT", "1") == "0":
        return _loaded
    try:
        key = module_key()
        name = module_name(key)
        found = [p for p in cache_dir().glob(f"{name}.*") if p.suffix in (".so", ".pyd")]
        if not found:
            return _loaded
        spec = importlib.util.spec_from_file_location(name, found[0])
        if spec is None or spec.loader is None:
            return _loaded
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except Exception:  # noqa: BLE001 - a broken or foreign file means "not built": numba runs
        return _loaded
    for module, function, signature in EXPORTS:
        fn = getattr(mod, exported_name(module, function), None)
        if fn is not None:
            _loaded[f"{module}.{function}"] = _Compiled(fn, signature)
    return _loaded


def lookup(module: str, function: str) -> _Compiled | None:
    """The compiled copy of ``module.function``, if built for the current sources."""
    return _load().get(f"{module}.{function}")


# ---- build ----

def build(out_dir: Path | None = None, verbose: bool = True) -> Path:
    """Compile :data:`EXPORTS` into ``out_dir`` (default :func:`cache_dir`); returns the file."""
    import importlib
    import tempfile
    import warnings

    from lawtap import jit

    jit.materialize()  # kernels' globals must be numba dispatchers for pycc to resolve callees
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from numba.pycc import CC

    out = Path(out_dir) if out_dir is not None else cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    key = module_key()
    name = module_name(key)
    t0 = time.perf_counter()
    import numba.pycc.compiler as pycc_compiler

    class _GilFreeFlags(pycc_compiler.Flags):
        """pycc's compile flags plus ``release_gil``: the exported wrappers drop the GIL while
        the kernel runs (like ``nogil=True``), so the reader thread's decoding overlaps the
        flow table and the writer (pycc has no option for it)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.release_gil = True

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        cc = CC(name)
        cc.output_dir = tmp
        cc.verbose = False
        for module, function, signature in EXPORTS:
            kernel = getattr(importlib.import_module(module), function)
            cc.export(exported_name(module, function), signature)(kernel.py_func)
        plain_flags = pycc_compiler.Flags
        pycc_compiler.Flags = _GilFreeFlags
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cc.compile()
        finally:
            pycc_compiler.Flags = plain_flags
        built = next(Path(tmp).glob(f"{name}*"))
        target = out / f"{name}{importlib.machinery.EXTENSION_SUFFIXES[0]}"
        os.replace(built, target)
    for old in out.glob("lawtap_kernels_*"):
        if old != target:
            old.unlink(missing_ok=True)
    if verbose:
        print(f"lawtap: compiled {len(EXPORTS)} kernels in {time.perf_counter() - t0:.0f} s -> {target}")
    return target


def is_current() -> bool:
    """A module for the current sources is in the cache directory."""
    name = module_name(module_key())
    return any(p.suffix in (".so", ".pyd") for p in cache_dir().glob(f"{name}.*"))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["build"] or not set(args[1:]) <= {"--if-stale"}:
        print("usage: python -m lawtap.aot build [--if-stale]", file=sys.stderr)
        return 2
    if "--if-stale" in args and is_current():
        return 0
    try:
        build()
    except Exception as e:  # noqa: BLE001 - no compiler etc.: lawtap still works through numba
        print(f"lawtap: ahead-of-time kernels not built ({type(e).__name__}: {e}); numba JIT will be used", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
