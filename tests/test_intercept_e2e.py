"""End to end on loopback: warrant (two people) -> collector -> mediator -> LEMF -> case.

The LEMF runs as its own process on 127.0.0.1. The LEMF's decoded CC must be exactly the
target's packets inside the window, and no byte of any other flow may appear in any file the
run wrote (mediator state, LEMF store, case, audit database).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from lawtap import craft
from lawtap.sources import open_capture

T0 = float(int(time.time()))  # warrants cannot be created for windows already over
LAWTAP = [sys.executable, "-m", "lawtap.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_warrant_to_lemf_case(tmp_path: Path) -> None:
    env = dict(os.environ, LAWTAP_HOME=str(tmp_path / "home"), LAWTAP_DB_URL=f"sqlite:///{tmp_path / 'lawtap.db'}")
    # Traffic: the target's web session, and a non-target's session in the same capture.
    target = craft.TcpSession("10.7.0.7", "198.51.100.80", 40000, 80, start=T0)
    target.handshake().client_send(b"GET /target-page HTTP/1.1\r\nHost: t\r\n\r\n")
    target.server_send(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nTARGET-BODY").close()
    bystander = craft.TcpSession("10.7.0.8", "198.51.100.80", 40001, 80, start=T0)
    bystander.handshake().client_send(b"GET /BYSTANDER-SECRET HTTP/1.1\r\nHost: b\r\n\r\n")
    bystander.server_send(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nBYSTANDER-BODY").close()
    cap = tmp_path / "traffic.pcap"
    craft.write_pcap(cap, craft.merge_frames(target.frames, bystander.frames))

    port = free_port()
    yaml = tmp_path / "w.yaml"
    yaml.write_text(
        f"liid: LI-E2E-1\nauthority: Test Court\nlegal_reference: 'test 2/26'\n"
        f"agency: {{name: Test LEA, hi2: '127.0.0.1:{port}', hi3: '127.0.0.1:{port}'}}\n"
        f"scope: iri+cc\nvalid_from: {iso(T0 - 60)}\nvalid_until: {iso(T0 + 3600)}\n"
        f"targets:\n  - {{kind: ipv4, value: 10.7.0.7}}\n")
    run = lambda *a: subprocess.run([*LAWTAP, *a], env=env, capture_output=True, text=True, timeout=300)  # noqa: E731
    assert run("warrant", "create", str(yaml), "--user", "alice").returncode == 0
    selfie = run("warrant", "approve", "LI-E2E-1", "--user", "alice")
    assert selfie.returncode != 0 and "Traceback" not in selfie.stderr  # the creator may not approve
    # Before approval nothing may be intercepted.
    early = run("intercept", str(cap), "--state-dir", str(tmp_path / "m0"), "--wait", "1")
    assert early.returncode != 0 and "no approved warrant" in early.stderr
    assert run("warrant", "approve", "LI-E2E-1", "--user", "bob").returncode == 0

    case = tmp_path / "case"
    lemf = subprocess.Popen([*LAWTAP, "lemf", "--listen", f"127.0.0.1:{port}", "-o", str(case), "--no-fsync"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        res = run("intercept", str(cap), "--state-dir", str(tmp_path / "mediator"), "--wait", "60")
        assert res.returncode == 0, res.stderr
        assert "delivered" in res.stderr
    finally:
        lemf.send_signal(signal.SIGINT)
        _, err = lemf.communicate(timeout=300)
    assert lemf.returncode in (0, 130), err

    # The LEMF's CC equals the target's packets (in order), and the case shows the session.
    want = [p for _, p in target.frames]
    ccs = sorted((case / "lemf").rglob("*.pcap"))
    got = [b.packet(i) for c in ccs for b in open_capture(c).batches() for i in range(len(b))]
    assert [g for g in got] == [w[14:] for w in want]  # raw IP packets (Ethernet stripped)
    conn = pq.read_table(case / "conn.parquet").to_pylist()
    assert [(r["id.orig_h"], r["id.resp_p"], r["service"]) for r in conn] == [("10.7.0.7", 80, "http")]
    http = pq.read_table(case / "http.parquet").to_pylist()
    assert [r["uri"] for r in http] == ["/target-page"]

    # Not one byte of the bystander's traffic anywhere the run wrote.
    for root in (tmp_path / "mediator", case, tmp_path / "home"):
        for f in root.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert b"BYSTANDER" not in data, f
    assert b"BYSTANDER" not in (tmp_path / "lawtap.db").read_bytes()

    # Looking at intercepted content is audited too.
    assert run("query", str(case), "SELECT uri FROM http").returncode == 0
    # The audit trail holds the run and verifies.
    report = run("audit", "verify")
    assert report.returncode == 0, report.stdout + report.stderr
    log = run("audit", "log")
    assert "intercept_start" in log.stdout and "delivery" in log.stdout, log.stdout
    assert "view" in log.stdout, log.stdout
