"""Random, truncated and bit-flipped packets never crash the decoder or the flow table.

numba does not check array bounds, so a decoding bug would read past a packet silently (or
crash the process). The in-process properties check that every offset the decoder reports
stays inside its packet; the slow test re-runs the kernels in a subprocess compiled with
NUMBA_BOUNDSCHECK=1, where any out-of-bounds access raises.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawtap import craft
from lawtap.decode import kernel as dk
from lawtap.flows.engine import FlowEngine

LINKTYPES = [0, 1, 101, 108, 113, 228, 229, 276, 999]


def _seed_packets() -> list[bytes]:
    """Valid packets of every shape the decoder knows, to mutate."""
    s = craft.TcpSession("10.0.0.1", "192.0.2.1", 1000, 80,
                         tunnel=craft.GtpuTunnel("172.16.0.1", "172.16.0.2", teid_up=1, teid_down=2))
    s.handshake().client_send(b"GET / HTTP/1.0\r\n\r\n")
    g = craft.TcpSession("2001:db8::1", "2001:db8::2", 1000, 80, tunnel=craft.GreTunnel("172.16.0.1", "172.16.0.2", key=3))
    g.handshake()
    v = craft.TcpSession("10.0.0.1", "192.0.2.1", 1000, 80, link=craft.EthernetLink("02:00:00:00:00:01", "02:00:00:00:00:02", vlans=(1, 2), mpls_labels=(5,)),
                         tunnel=craft.VxlanTunnel("172.16.0.1", "172.16.0.2", vni=1))
    v.handshake()
    return [f for _, f in s.frames + g.frames + v.frames]


SEEDS = _seed_packets()


def _run(packets: list[bytes], linktypes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    data = np.frombuffer(b"".join(packets) or b"\x00", dtype=np.uint8)
    lens = np.array([len(p) for p in packets], dtype=np.int32)
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64) if packets else np.zeros(0, np.int64)
    A, D = dk.new_columns(len(packets))
    dk.decode_batch(data, offs, lens, np.array(linktypes, dtype=np.int32), A, D)
    FlowEngine(b"s" * 32).run(data, A, D, np.arange(len(packets), dtype=np.int64) * 1000)
    return offs, lens, D


def _check_bounds(offs: np.ndarray, lens: np.ndarray, D: np.ndarray) -> None:
    flow = D[:, dk.C_STATUS] == dk.ST_FLOW
    start = D[flow, dk.C_PAY_OFF]
    end = start + D[flow, dk.C_PAY_LEN]
    assert (D[flow, dk.C_PAY_LEN] >= 0).all()
    assert (start >= offs[flow]).all() and (end <= offs[flow] + lens[flow]).all()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.binary(max_size=200), st.sampled_from(LINKTYPES)), max_size=40))
def test_random_packets(packets) -> None:
    offs, lens, D = _run([p for p, _ in packets], [lt for _, lt in packets])
    _check_bounds(offs, lens, D)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_truncated_and_bitflipped_packets(data) -> None:
    out = []
    for seed in SEEDS:
        p = bytearray(seed[: data.draw(st.integers(0, len(seed)))])
        for _ in range(data.draw(st.integers(0, 4))):
            if p:
                i = data.draw(st.integers(0, len(p) - 1))
                p[i] ^= 1 << data.draw(st.integers(0, 7))
        out.append(bytes(p))
    offs, lens, D = _run(out, [1] * len(out))
    _check_bounds(offs, lens, D)


@pytest.mark.slow
def test_kernels_under_numba_boundscheck(tmp_path) -> None:
    script = textwrap.dedent(
        """
        import random, numpy as np
        from tests_fuzz_driver import SEEDS, _run
        rng = random.Random(1)
        for round_ in range(300):
            pkts, lts = [], []
            for seed in SEEDS:
                p = bytearray(seed[: rng.randrange(len(seed) + 1)])
                for _ in range(rng.randrange(4)):
                    if p:
                        p[rng.randrange(len(p))] ^= 1 << rng.randrange(8)
                pkts.append(bytes(p)); lts.append(rng.choice([1, 1, 1, 101, 113, 276, 0]))
            pkts.append(bytes(rng.randrange(256) for _ in range(rng.randrange(80)))); lts.append(1)
            _run(pkts, lts)
        print("ok")
        """
    )
    (tmp_path / "tests_fuzz_driver.py").write_text(open(__file__).read())
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", LAWTAP_AOT="0", NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"),
               PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-3000:]
