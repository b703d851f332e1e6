"""Ahead-of-time kernels (lawtap.aot): argument checks, and identical results to numba's JIT."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from lawtap import aot
from conftest import corpus_captures


def test_argument_checks_follow_the_signature():
    sig = "void(u1[::1], i8, b1, u8[:,::1], i4[::1])"
    checks = aot._arg_checks(sig)
    assert len(checks) == 5
    good = (np.zeros(4, np.uint8), 3, True, np.zeros((2, 3), np.uint64), np.zeros(2, np.int32))
    assert all(ok(x) for ok, x in zip(checks, good))
    c = aot._Compiled(lambda *a: None, sig)
    assert c.accepts(good)
    bad_cases = [
        (np.zeros(4, np.int8),) + good[1:],  # dtype
        (np.zeros(8, np.uint8)[::2],) + good[1:],  # not contiguous
        (np.frombuffer(b"abcd", np.uint8),) + good[1:],  # read-only
        good[:3] + (np.zeros(6, np.uint64),) + good[4:],  # dimensions
        good[:3] + (np.zeros((3, 2), np.uint64).T,) + good[4:],  # Fortran order
        good[:1] + (1 << 70,) + good[2:],  # int64 overflow
        good[:1] + ("3",) + good[2:],  # not a number
        good[:4],  # arity
    ]
    for args in bad_cases:
        assert not c.accepts(args)


def test_uni_tuple_return_signature_parses():
    sig = next(s for m, f, s in aot.EXPORTS if f == "process")
    assert len(aot._arg_checks(sig)) == 21


def test_every_export_exists_with_matching_arity():
    import importlib
    import inspect

    for module, function, signature in aot.EXPORTS:
        fn = getattr(importlib.import_module(module), function)
        params = inspect.signature(fn.py_func).parameters
        assert len(params) == len(aot._arg_checks(signature)), function


def test_missing_module_means_numba(tmp_path, monkeypatch):
    monkeypatch.setenv("LAWTAP_KERNEL_DIR", str(tmp_path))
    monkeypatch.setattr(aot, "_loaded", None)
    assert aot.lookup("lawtap.decode.kernel", "decode_batch") is None
    monkeypatch.setattr(aot, "_loaded", None)


@pytest.mark.slow
def test_compiled_kernels_give_the_same_case_as_numba(tmp_path):
    """Build the module into a fresh directory, then analyze the same captures with and
    without it (separate processes): every conn and packets row must be equal, and with every
    analyzer on, every record table."""
    kernel_dir = tmp_path / "kernels"
    env = dict(os.environ, LAWTAP_KERNEL_DIR=str(kernel_dir))
    res = subprocess.run([sys.executable, "-m", "lawtap.aot", "build"], env=env, capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr
    built = list(kernel_dir.glob("lawtap_kernels_*"))
    if not built:
        pytest.skip(f"no C compiler for numba.pycc here: {res.stderr.strip()}")
    captures = [p for p in corpus_captures() if p.stat().st_size < 3_000_000][:12]
    if not captures:
        pytest.skip("corpus not available")
    from lawtap.generate import generate_capture

    mix = tmp_path / "mix.pcap"  # DNS, RTP, merged TCP runs: the analyzers' kernels
    generate_capture(mix, 4, 300)
    for options, inputs in ((["--no-analyzers"], captures), ([], [*captures, mix])):
        cases = {}
        for mode in ("1", "0"):
            case = tmp_path / f"case-{mode}{''.join(options)}"
            res = subprocess.run(
                [sys.executable, "-m", "lawtap.cli", "analyze", *options, *map(str, inputs), "-o", str(case)],
                env=dict(env, LAWTAP_AOT=mode), capture_output=True, text=True, timeout=900,
            )
            assert res.returncode == 0, res.stderr
            cases[mode] = case
        names = ("conn", "packets", "weird", "tunnel") if options else sorted(p.stem for p in cases["1"].glob("*.parquet"))
        for name in names:
            a = pq.read_table(cases["1"] / f"{name}.parquet")
            b = pq.read_table(cases["0"] / f"{name}.parquet")
            assert a.equals(b), name
    # And the compiled module really served the runs: numba was never imported.
    for options in (["--no-analyzers"], []):
        res = subprocess.run(
            [sys.executable, "-c",
             f"import sys; from lawtap.cli import main; sys.argv=['lawtap','analyze',*{options!r},"
             f"{str(mix)!r},'-o',{str(tmp_path / ('case-probe' + ''.join(options)))!r}]\n"
             "try:\n    main()\nexcept SystemExit:\n    pass\nprint('numba' in sys.modules)"],
            env=dict(env, LAWTAP_AOT="1"), capture_output=True, text=True, timeout=300,
        )
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip().splitlines()[-1] == "False", options

