"""Delivery: durable queue, sequence numbers, LEMF checks, and the end-to-end promise —
every PDU arrives, in order, exactly once, with contiguous sequence numbers, even when the LEMF
and the mediator are killed mid-stream. Everything listens on 127.0.0.1 (ephemeral ports)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lawtap.errors import LawtapError
from lawtap.etsi import lemf, mediator, pdu
from lawtap.etsi.queue import DurableQueue, QueueError

PY = sys.executable
LIID = b"LIID-E2E"
TS0 = 1_700_000_000_000_000_000


def udp_packet(marker: bytes, src: str = "10.0.0.7", dst: str = "192.0.2.9") -> bytes:
    from lawtap.craft import ipv4, udp

    return ipv4(src, dst, 17, udp(40000, 5000, marker, src_ip=src, dst_ip=dst))


# ---------------------------------------------------------------------------------------------
# Durable queue
# ---------------------------------------------------------------------------------------------


def test_queue_roundtrip_commit_and_segment_deletion(tmp_path: Path) -> None:
    q = DurableQueue(tmp_path, segment_bytes=2000, fsync=False)
    q.set_checkpoint(lambda: b"state")
    recs = [b"r%04d" % i * (i % 7 + 1) for i in range(400)]
    for i, r in enumerate(recs):
        q.append(r)
        if i % 37 == 0:
            q.flush()
    q.flush()
    assert list(q.records()) == recs
    data, n, nxt = q.read(q.committed, 500)
    assert n > 0 and data.tobytes() == b"".join(recs[:n])
    q.commit(nxt)
    assert list(q.records(q.committed)) == recs[n:]
    segments_before = len(list(tmp_path.glob("seg-*.q")))
    q.commit(q.end)
    assert len(list(tmp_path.glob("seg-*.q"))) < segments_before
    assert q.checkpoint() == b"state"
    end = q.end
    q.close()
    q = DurableQueue(tmp_path, segment_bytes=2000, fsync=False)
    assert q.committed == q.end == end and list(q.records(q.committed)) == []
    with pytest.raises(QueueError):
        q.read(end + 1)
    q.close()


def test_queue_survives_a_crash_and_a_new_process_delivers_the_rest(tmp_path: Path) -> None:
    """A child appends, flushes, commits part, appends more without flushing, then dies by
    SIGKILL; a new process reopens: exactly the flushed, uncommitted records remain, in order."""
    code = textwrap.dedent(f"""
        import os, signal
        from lawtap.etsi.queue import DurableQueue
        q = DurableQueue({str(tmp_path)!r}, segment_bytes=4096)
        for i in range(1000):
            q.append(b"rec-%d" % i)
            if i % 100 == 99:
                q.flush()
                if i == 399:
                    q.commit(q.end)
        for i in range(1000, 1100):
            q.append(b"rec-%d" % i)  # never flushed: lost with the process
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([PY, "-c", code], capture_output=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr
    # Simulate a torn write too: half a block at the end of the last segment.
    last = sorted(tmp_path.glob("seg-*.q"))[-1]
    with open(last, "ab") as f:
        f.write(b"LTQ1\xff\x00\x00\x00garbage")
    deliver = textwrap.dedent(f"""
        from lawtap.etsi.queue import DurableQueue
        q = DurableQueue({str(tmp_path)!r}, segment_bytes=4096)
        got = list(q.records(q.committed))
        q.commit(q.end)
        print(len(got), got[0].decode(), got[-1].decode())
    """)
    r = subprocess.run([PY, "-c", deliver], capture_output=True, text=True, timeout=60)
    assert r.stdout.split() == ["600", "rec-400", "rec-999"], r.stderr
    q = DurableQueue(tmp_path, segment_bytes=4096)
    assert list(q.records(q.committed)) == []
    q.close()


@settings(max_examples=40, deadline=None)
@given(garbage=st.binary(min_size=1, max_size=64), flip=st.integers(0, 10_000))
def test_queue_cuts_any_damaged_tail_and_keeps_the_rest(tmp_path_factory, garbage: bytes, flip: int) -> None:  # noqa: ANN001
    d = tmp_path_factory.mktemp("q")
    q = DurableQueue(d, fsync=False)
    for i in range(10):
        q.append(b"x%d" % i)
        q.flush()
    end = q.end
    q.close()
    seg = sorted(d.glob("seg-*.q"))[-1]
    raw = bytearray(seg.read_bytes())
    last_block = end - 20  # the last block: 16-byte header + 4-byte record prefix + "x9"
    pos = last_block + flip % (len(raw) - last_block)
    raw[pos] ^= 0xFF
    seg.write_bytes(bytes(raw) + garbage)
    q = DurableQueue(d, fsync=False)
    recs = list(q.records())
    assert recs[:9] == [b"x%d" % i for i in range(9)] and len(recs) in (9, 10)
    q.close()


# ---------------------------------------------------------------------------------------------
# Sequence numbers
# ---------------------------------------------------------------------------------------------


def test_sequence_numbers_resume_from_disk_and_checkpoint(tmp_path: Path) -> None:
    agency = mediator.agency_for("lea", "127.0.0.1:9")
    m = mediator.Mediator(tmp_path, [agency], fsync=False, start=False, segment_bytes=1500)
    seqs = [m.submit_ipcc("lea", LIID, 5, TS0, udp_packet(b"a%d" % i), 0) for i in range(30)]
    seqs += [m.submit_ipcc("lea", LIID, 6, TS0, udp_packet(b"b"), 1)]
    assert seqs == list(range(30)) + [0]
    h = m.handover("lea", mediator.HI3)
    h.flush()
    h.queue.commit(h.queue.end)  # acknowledged: old segments go, the checkpoint keeps the counters
    assert len(list((tmp_path / "lea" / "hi3").glob("seg-*.q"))) == 1
    first = m.submit_ipcc_batch("lea", LIID, 5, np.full(3, TS0), np.frombuffer(b"abcdef", np.uint8),
                                np.array([0, 2, 4]), np.array([2, 2, 2]))
    assert first == 30
    m.stop()
    m = mediator.Mediator(tmp_path, [agency], fsync=False, start=False, segment_bytes=1500)
    assert m.submit_ipcc("lea", LIID, 5, TS0, b"\x45", 0) == 33
    assert m.submit_ipcc("lea", LIID, 6, TS0, b"\x45", 0) == 1
    assert m.submit_iri("lea", pdu.ps_pdu_ipiri, LIID, 5, TS0, event="accessAccept", username="u") == 0
    with pytest.raises(LawtapError):  # a builder error consumes no number
        m.submit_iri("lea", pdu.ps_pdu_ipiri, LIID, 5, TS0, event="bogus", username="u")
    assert m.submit_iri("lea", pdu.ps_pdu_ipiri, LIID, 5, TS0, event="accessEnd", username="u") == 1
    m.stop()


def test_sequence_numbers_wrap_at_2_32() -> None:
    a = mediator.SequenceAllocator()
    a.observe((b"L", 1), (1 << 32) - 1)
    assert a.take((b"L", 1)) == 0
    assert mediator.SequenceAllocator.from_bytes(a.to_bytes()).peek((b"L", 1)) == 1
    with pytest.raises(LawtapError):
        mediator.SequenceAllocator.from_bytes(b"{not json")


# ---------------------------------------------------------------------------------------------
# LEMF store (sans-IO)
# ---------------------------------------------------------------------------------------------


def _ipcc(cin: int, seq: int, marker: bytes = b"m") -> bytes:
    return pdu.ps_pdu_ipcc(LIID, cin, seq, TS0 + seq * 1000, udp_packet(marker), 0)


def test_lemf_drops_duplicates_reports_gaps_and_answers(tmp_path: Path) -> None:
    store = lemf.LemfStore(tmp_path, fsync=False)
    conn = lemf.Connection("test")
    stream = b"".join(_ipcc(1, s, b"%d" % s) for s in (0, 1, 2, 1, 2, 3, 6, 7))
    iri = pdu.ps_pdu_ipiri(LIID, 1, 0, TS0, event="accessAccept", username="alice", target_ip="10.0.0.7")
    out = store.feed(conn, stream[:100])
    out += store.feed(conn, stream[100:] + iri + pdu.ps_pdu_keepalive(b"med", 41, TS0)
                      + pdu.ps_pdu_tri(pdu.TRI_ACK_REQUEST, b"med", 42, TS0))
    replies = [pdu.peek(o) for o in out]
    assert [(r.sub, r.seq, r.liid) for r in replies] == [
        (pdu.TRI_KEEPALIVE_RESPONSE, 41, b"med"), (pdu.TRI_ACK_RESPONSE, 42, b"med")]
    rep = store.report()
    cc = next(s for s in rep["streams"] if s["kind"] == "CC")
    assert cc["received"] == 6 and cc["duplicates"] == 2 and cc["gaps"] == [[4, 5]] and cc["next_seq"] == 8
    assert rep["counts"]["iri"] == 1 and rep["counts"]["keepalives"] == 1
    assert store.iri_records[0]["username"] == "alice" and store.iri_records[0]["iri_type"] == "iRI-Begin"
    assert store.iri_table().schema == lemf.IRI_SCHEMA
    store.close()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert {"gap", "duplicates", "keepalive"} <= {e["event"] for e in events}
    # A restarted LEMF replays its log: same state, and a resend is still a duplicate.
    store = lemf.LemfStore(tmp_path, fsync=False)
    by_kind = {s["kind"]: s for s in store.report()["streams"]}
    assert by_kind["CC"]["next_seq"] == 8 and by_kind["IRI"]["next_seq"] == 1
    store.feed(lemf.Connection("again"), _ipcc(1, 7) + _ipcc(1, 8))
    assert {s["kind"]: s for s in store.report()["streams"]}["CC"]["received"] == 7
    store.close()
    from lawtap.sources import open_capture

    src = open_capture(tmp_path / "cc" / "LIID-E2E.pcap")
    assert sum(len(b) for b in src.batches(1 << 20)) == 7


def test_lemf_handles_slow_and_malformed_pdus(tmp_path: Path) -> None:
    store = lemf.LemfStore(tmp_path, fsync=False)
    conn = lemf.Connection("t")
    definite = _ipcc(2, 0)
    indefinite = b"\x30\x80" + definite[2:] + b"\x00\x00" if definite[1] < 0x80 else None
    if indefinite is None:  # long-form outer length: rebuild the header
        n = definite[1] & 0x7F
        indefinite = b"\x30\x80" + definite[2 + n:] + b"\x00\x00"
    broken = bytearray(_ipcc(2, 1))
    broken[4] = 0x7F  # the PSHeader claims more bytes than the PDU holds
    store.feed(conn, indefinite + bytes(broken) + _ipcc(2, 1) + pdu.ps_pdu_ipmm_iri(
        LIID, 3, 0, TS0, sip=b"BYE sip:x SIP/2.0\r\n\r\n", src_ip="10.0.0.7", dst_ip="192.0.2.9"))
    rep = store.report()
    assert rep["counts"]["malformed"] >= 1
    cc = next(s for s in rep["streams"] if s["kind"] == "CC")
    assert cc["received"] == 2 and cc["gaps"] == []
    assert store.iri_records[-1]["event"] == "BYE" and store.iri_records[-1]["service"] == "ip-multimedia"
    with pytest.raises(LawtapError):
        store.feed(conn, b"\x04\x01\x00")
    store.close()


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.binary(max_size=300), max_size=5))
def test_lemf_fuzz_only_raises_lemf_errors(tmp_path_factory, chunks: list[bytes]) -> None:  # noqa: ANN001
    store = lemf.LemfStore(tmp_path_factory.mktemp("lemf"), fsync=False)
    conn = lemf.Connection("fuzz")
    good = _ipcc(1, 0)
    for c in chunks:
        try:
            store.feed(conn, good[: len(c) % len(good)] + c)
        except LawtapError:
            conn = lemf.Connection("fuzz")
    store.close()


# ---------------------------------------------------------------------------------------------
# End to end, with processes killed mid-stream
# ---------------------------------------------------------------------------------------------

MEDIATOR_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from lawtap.craft import ipv4, udp
    from lawtap.etsi import mediator, pdu
    state, port, total, progress = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    LIID, CINS = b"LIID-E2E", (11, 12, 13)
    per = total // len(CINS)
    agency = mediator.agency_for("lea", f"127.0.0.1:{port}", keepalive_interval=0.3, keepalive_wait=10,
                                 retry_initial=0.05, retry_max=0.4, ack_interval=0.05, ack_wait=20)
    m = mediator.Mediator(state, [agency])
    hi2, hi3 = m.handover("lea", "hi2"), m.handover("lea", "hi3")
    for cin in CINS:
        if hi2.sequences.peek((LIID, cin)) == 0:
            m.submit_iri("lea", pdu.ps_pdu_ipiri, LIID, cin, 1_700_000_000_000_000_000,
                         event="accessAccept", username="user%d" % cin, target_ip="10.0.0.%d" % cin)
    def packet(cin, i):
        return ipv4("10.0.0.%d" % cin, "192.0.2.9", 17, udp(40000, 5000, b"%d:%d" % (cin, i)))
    chunk = 0
    while True:
        nxt = {cin: hi3.sequences.peek((LIID, cin)) for cin in CINS}
        if all(n >= per for n in nxt.values()):
            break
        for cin in CINS:
            start = nxt[cin]
            stop = min(per, start + 40)
            if start >= stop:
                continue
            ts = 1_700_000_000_000_000_000 + np.arange(start, stop, dtype=np.int64) * 1000
            if chunk % 2:
                for i in range(start, stop):
                    m.submit_ipcc("lea", LIID, cin, int(ts[i - start]), packet(cin, i), i % 2)
            else:
                pkts = [packet(cin, i) for i in range(start, stop)]
                lens = np.array([len(p) for p in pkts])
                offs = np.concatenate([[0], np.cumsum(lens)[:-1]])
                m.submit_ipcc_batch("lea", LIID, cin, ts, np.frombuffer(b"".join(pkts), np.uint8), offs, lens,
                                    (np.arange(start, stop) % 2).astype(np.int8))
            chunk += 1
        with open(progress + ".tmp", "w") as f:
            f.write(str(sum(hi3.sequences.peek((LIID, c)) for c in CINS)))
        os.replace(progress + ".tmp", progress)
        time.sleep(0.01)
    ok = m.wait_delivered(60)
    with open(progress + ".tmp", "w") as f:
        f.write("delivered")
    os.replace(progress + ".tmp", progress)
    time.sleep(1.0)  # idle: keep-alives flow
    print(json.dumps({"delivered": ok, "status": m.status()}))
    m.stop()
""")


def _start_lemf(store: Path, port: int = 0) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([PY, "-m", "lawtap.etsi.lemf", "--listen", f"127.0.0.1:{port}", "--store", str(store)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.startswith("listening "), (line, p.stderr.read() if p.poll() is not None else "")
    return p, int(line.split()[1])


def _start_mediator(state: Path, port: int, total: int, progress: Path) -> subprocess.Popen:
    return subprocess.Popen([PY, "-c", MEDIATOR_SCRIPT, str(state), str(port), str(total), str(progress)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_progress(progress: Path, at_least: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            text = progress.read_text()
        except FileNotFoundError:
            text = "0"
        if text == "delivered" or int(text or 0) >= at_least:
            return
        if proc.poll() is not None:
            raise AssertionError(f"mediator exited early: {proc.stderr.read()[-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"mediator made no progress to {at_least}")


def test_end_to_end_kill_lemf_and_mediator_mid_stream(tmp_path: Path) -> None:
    total = 10_002  # 3 CINs x 3334 IP CC PDUs, plus one IRI per CIN on HI2
    store, state, progress = tmp_path / "lemf", tmp_path / "mediator", tmp_path / "progress"
    lemf_proc, port = _start_lemf(store)
    med = _start_mediator(state, port, total, progress)
    try:
        _wait_progress(progress, 2500, med)
        lemf_proc.kill()  # the agency goes down hard
        lemf_proc.wait()
        time.sleep(0.3)
        lemf_proc, port2 = _start_lemf(store, port)
        assert port2 == port
        _wait_progress(progress, 6000, med)
        med.kill()  # and so does the mediator
        med.wait()
        med = _start_mediator(state, port, total, progress)
        out, err = med.communicate(timeout=90)
        assert med.returncode == 0, err[-3000:]
        result = json.loads(out.strip().splitlines()[-1])
        assert result["delivered"], result
        assert result["status"]["lea/hi3"]["keepalives_sent"] >= 1
        assert result["status"]["lea/hi3"]["keepalive_responses"] >= 1
    finally:
        for p in (med, lemf_proc):
            if p.poll() is None:
                p.terminate()
                p.communicate(timeout=30)
    # What the LEMF holds: every PDU once, in order, sequence numbers contiguous.
    data = (store / "received.ber").read_bytes()
    res = pdu.scan(data, max_pdus=20_000)
    assert res.consumed == len(data) and not (res.info[:, pdu.F_STATUS] != pdu.STATUS_OK).any()
    seqs: dict[tuple[int, int], list[int]] = defaultdict(list)
    for row in res.info:
        h = pdu.header_from_row(np.frombuffer(data, np.uint8), row)
        assert h.liid == LIID
        seqs[(h.cin, h.kind)].append(h.seq)
        if h.kind == pdu.KIND_CC:
            assert h.data.endswith(b"%d:%d" % (h.cin, h.seq))  # the right packet under each number
            assert h.direction == h.seq % 2
    per = total // 3
    for cin in (11, 12, 13):
        assert seqs[(cin, pdu.KIND_CC)] == list(range(per)), cin
        assert seqs[(cin, pdu.KIND_IRI)] == [0]
    events = [json.loads(line) for line in (store / "events.jsonl").read_text().splitlines()]
    kinds = defaultdict(int)
    for e in events:
        kinds[e["event"]] += 1
    assert kinds["keepalive"] >= 2 and kinds["gap"] == 0, dict(kinds)
    print("LEMF events:", dict(kinds))  # duplicates > 0 when a resend overlapped what was stored
    report = lemf.LemfStore(store, fsync=False).report()
    assert report["counts"]["gaps"] == 0 and report["counts"]["accepted"] == total + 3  # + 3 IRI


# ---------------------------------------------------------------------------------------------
# TLS, and the `lawtap lemf` command
# ---------------------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lemf.test")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("lemf.test")]), critical=False)
            .sign(key, hashes.SHA256()))
    cp, kp = tmp / "cert.pem", tmp / "key.pem"
    cp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()))
    return cp, kp


def test_tls_handover(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    loop = asyncio.new_event_loop()
    box: list[int] = []
    stop = asyncio.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(lemf.serve(tmp_path / "lemf", "127.0.0.1", 0, tls=server_ctx, fsync=False,
                                           stop=stop, on_ready=box.append))

    th = threading.Thread(target=run, daemon=True)
    th.start()
    for _ in range(500):
        if box:
            break
        time.sleep(0.01)
    agency = mediator.agency_for("lea", f"127.0.0.1:{box[0]}", tls=client_ctx, tls_server_name="lemf.test")
    with mediator.Mediator(tmp_path / "med", [agency], fsync=False) as m:
        for i in range(200):
            m.submit_ipcc("lea", LIID, 1, TS0 + i, udp_packet(b"%d" % i), 0)
        assert m.wait_delivered(30), m.status()
    loop.call_soon_threadsafe(stop.set)
    th.join(10)
    store = lemf.LemfStore(tmp_path / "lemf", fsync=False)
    assert store.report()["streams"][0]["received"] == 200
    store.close()


def test_lemf_command_turns_intercepted_traffic_into_a_case(tmp_path: Path) -> None:
    from lawtap.craft import RawLink, TcpSession

    case = tmp_path / "case"
    code = "from lawtap.commands.lemf import command; command(['--listen', '127.0.0.1:0', '-o', %r, '--no-fsync'])" % str(case)
    proc = subprocess.Popen([PY, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "listening on" in line, line
        port = int(line.split("listening on ")[1].split(",")[0].rsplit(":", 1)[1])
        s = TcpSession("10.0.0.7", "192.0.2.80", 40001, 80, link=RawLink())
        s.handshake().client_send(b"GET /secret HTTP/1.1\r\nHost: example.org\r\n\r\n")
        s.server_send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").close()
        agency = mediator.agency_for("lea", f"127.0.0.1:{port}")
        with mediator.Mediator(tmp_path / "med", [agency], fsync=False) as m:
            m.submit_iri("lea", pdu.ps_pdu_ipiri, LIID, 1, TS0, event="accessAccept", username="alice",
                         target_ip="10.0.0.7")
            for ts, frame in s.frames:
                m.submit_ipcc("lea", LIID, 1, int(ts * 1e9), frame, 0 if frame[12:16] == bytes([10, 0, 0, 7]) else 1)
            assert m.wait_delivered(30), m.status()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    import pyarrow.parquet as pq

    conn = pq.read_table(case / "conn.parquet").to_pylist()
    assert any(c["id.orig_h"] == "10.0.0.7" and c["id.resp_p"] == 80 for c in conn)
    iri = pq.read_table(case / "lemf" / "iri.parquet").to_pylist()
    assert iri[0]["username"] == "alice" and iri[0]["target_ip"] == "10.0.0.7"
    if (case / "http.parquet").exists():
        assert any(r.get("uri") == "/secret" for r in pq.read_table(case / "http.parquet").to_pylist())


def test_generalized_time_agencies_use_the_schema_encoder(tmp_path: Path) -> None:
    params = pdu.HeaderParams(timestamp="generalized")
    agency = mediator.agency_for("lea", "127.0.0.1:9", params=params)
    m = mediator.Mediator(tmp_path, [agency], fsync=False, start=False)
    assert m.submit_ipcc("lea", LIID, 1, TS0, b"\x45\x00", 0) == 0
    assert m.submit_ipcc_batch("lea", LIID, 1, np.array([TS0, TS0]), np.frombuffer(b"\x45\x00\x45\x01", np.uint8),
                               np.array([0, 2]), np.array([2, 2])) == 1
    h = m.handover("lea", mediator.HI3)
    h.flush()
    recs = list(h.queue.records())
    assert recs[2] == pdu.ps_pdu_ipcc(LIID, 1, 2, TS0, b"\x45\x01", None, params)
    m.stop()
