"""The standard benchmark workload: everything its manifest says it holds is recovered.

The shared generator (../shared/bench/gen_pcap.py) writes a deterministic capture and a JSON
manifest counting its HTTP requests and bodies, emails, calls, RTP packets, DNS queries and TLS
connections; the whole pipeline must find every one of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, analyzed

GENERATOR = Path((__import__("os").environ.get("LAWTAP_SHARED") or REPO.parent / "shared")) / "bench" / "gen_pcap.py"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not GENERATOR.exists(), reason="shared benchmark generator not present")]


@pytest.fixture(scope="module")
def workload(tmp_path_factory) -> tuple[dict, dict]:
    d = tmp_path_factory.mktemp("workload")
    pcap, manifest = d / "w.pcap", d / "w.json"
    subprocess.run([sys.executable, str(GENERATOR), "--size", "10M", "--seed", "3", "-o", str(pcap), "--manifest", str(manifest)],
                   check=True, capture_output=True)
    return json.loads(manifest.read_text()), analyzed(str(pcap))


def rows(tables: dict, name: str) -> list[dict]:
    t = tables.get(name)
    return t.to_pylist() if t is not None else []


def test_every_flow_and_packet(workload) -> None:
    m, t = workload
    assert t["_stats"].packets == m["packets"]
    conn = rows(t, "conn")
    assert sum(r["orig_pkts"] + r["resp_pkts"] for r in conn) == m["packets"]
    assert sum(1 for r in conn if r["proto"] == "tcp") == m["tcp_connections"]


def test_http_requests_and_bodies(workload) -> None:
    m, t = workload
    http = rows(t, "http")
    assert len(http) == m["http_requests"]
    assert sum(1 for r in http if r["request_body_len"]) == m["http_post_bodies"]
    assert sum(1 for r in http if r["response_body_len"]) == m["http_response_bodies"]
    body_hashes = {r["response_body_sha256"] for r in http if r["response_body_len"]}
    files = {r["sha256"] for r in rows(t, "files") if r["source"] == "HTTP"}
    assert body_hashes <= files


def test_emails_and_attachments(workload) -> None:
    m, t = workload
    email = rows(t, "email")
    assert len(email) == m["emails"]
    attachments = sum(len(r["attachments"] or []) for r in email)
    smtp_files = [r for r in rows(t, "files") if r["source"] == "SMTP"]
    assert len(smtp_files) == len(email) + attachments  # each message (.eml) and each attachment


def test_calls_rtp_dns_tls(workload) -> None:
    m, t = workload
    assert len(rows(t, "call")) == m["sip_calls"]
    assert sum(r["packets"] for r in rows(t, "rtp")) == m["rtp_packets"]
    assert len(rows(t, "dns")) == m["dns_queries"]
    assert len(rows(t, "tls")) == m["tls_connections"]
