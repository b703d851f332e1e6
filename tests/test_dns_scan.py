"""The DNS kernel (``lawtap.analyzers.dns_scan``) and DnsFlows, against the Python parser and
the per-connection analyzer they stand in for.

For every message the kernel accepts, what it gives must be exactly what ``_parse(data, False)``
gives; messages it leaves out go through that parser anyway, so DnsFlows must make the very
records a DNSAnalyzer per connection makes. Inputs: the hand-built message soup of
``test_dns``, messages of the generated workload and of the corpus DNS captures, and random or
mutated bytes (hypothesis).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from conftest import corpus_root, needs_corpus
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_dns import PTR_Q, header, qname, query, rr, soup_message

from lawtap.analyzers import dns as D
from lawtap.analyzers.base import ConnInfo
from lawtap.analyzers.dns_scan import (K_AN, K_ANS0, K_ANS1, K_AR, K_FLAGS, K_ID, K_NAME0, K_NAME1, K_NS, K_OK,
                                       K_QCLASS, K_QD, K_QTYPE, scan_messages)


def scan(messages: list[bytes]):
    data = np.frombuffer(b"".join(messages) or b"\0", dtype=np.uint8)
    lens = np.array([len(m) for m in messages], dtype=np.int64)
    offs = np.zeros(len(messages), dtype=np.int64)
    if len(messages):
        offs[1:] = np.cumsum(lens)[:-1]
    return scan_messages(data, offs, lens)


def check_against_parser(messages: list[bytes]) -> int:
    """Every accepted message matches the parser; returns how many were accepted."""
    from lawtap.analyzers.dns import _spans_as_strings

    out, names, answers, answer_offs, ttls, name_bytes, answer_bytes = scan(messages)
    texts_array = _spans_as_strings(answer_bytes, answer_offs[:-1], answer_offs[1:])  # (the answers column's way)
    assert texts_array.to_pylist() == [answers[answer_offs[j]:answer_offs[j + 1]] for j in range(len(ttls))]
    assert name_bytes.tobytes().decode("ascii") == names
    accepted = 0
    for msg, row in zip(messages, out.tolist()):
        if not row[K_OK]:
            continue
        accepted += 1
        p = D._parse(msg, False)
        assert p is not None
        mid, flags, rcode, qd, an, ns, ar, questions, (_, texts, ttl_list, auth, addl), edns, problems, truncated = p
        assert (row[K_ID], row[K_FLAGS], row[K_FLAGS] & 0xF, row[K_QD], row[K_AN], row[K_NS], row[K_AR]) == (
            mid, flags, rcode, qd, an, ns, ar), msg.hex()
        assert [(names[row[K_NAME0]:row[K_NAME1]], row[K_QTYPE], row[K_QCLASS])] == [
            (q.lower(), t, c) for q, t, c in questions], msg.hex()
        got = [answers[answer_offs[j]:answer_offs[j + 1]] for j in range(row[K_ANS0], row[K_ANS1])]
        assert got == texts, msg.hex()
        assert [float(t) for t in ttls[row[K_ANS0]:row[K_ANS1]]] == ttl_list
        assert (problems, truncated, auth, addl, edns) == ([], False, None, None, None), msg.hex()
    return accepted


def test_usual_messages_are_accepted_and_match() -> None:
    a = bytes([93, 184, 216, 34])
    six = bytes.fromhex("2a001450400108060000000000002004")
    usual = [
        query(1, "www.example.com"),
        query(2, "WWW.Example.COM", 28),
        query(3, "x.y") + rr(b"\x00", 41, b"", rclass=4096, ttl=0)[:0],  # (no OPT counted: same as plain)
        header(4, 0x0100, ar=1) + qname("edns.example") + b"\x00\x01\x00\x01" + rr(b"\x00", 41, b"", rclass=4096, ttl=0),
        header(5, 0x8180, an=2) + qname("www.example.com") + b"\x00\x01\x00\x01"
        + rr(PTR_Q, 5, b"\x03cdn\xc0\x10") + rr(b"\xc0\x2d", 1, a),
        header(6, 0x8180, an=1) + qname("v6.example") + b"\x00\x1c\x00\x01" + rr(PTR_Q, 28, six, ttl=7),
        header(7, 0x8183) + qname("nx.example") + b"\x00\x01\x00\x01",
        header(8, 0x8180, an=1, ar=1) + qname("a.example") + b"\x00\x01\x00\x01" + rr(PTR_Q, 1, a)
        + rr(b"\x00", 41, b"", rclass=1232, ttl=0),
    ]
    assert check_against_parser(usual) == len(usual)


def test_other_shapes_are_left_to_the_parser() -> None:
    a = bytes([10, 0, 0, 1])
    others = [
        b"\x00" * 11,  # no header
        header(1, 0x8400, qd=0, an=1) + rr(qname("mdns.local"), 1, a),  # no question (mDNS)
        header(2, 0x8180, an=1, ns=1) + qname("a.b") + b"\x00\x01\x00\x01" + rr(PTR_Q, 1, a) + rr(PTR_Q, 6, b"\0" * 22),
        header(3, 0x8180, an=1) + qname("a.b") + b"\x00\x10\x00\x01" + rr(PTR_Q, 16, b"\x02hi"),  # TXT
        header(4, 0x8180, an=1) + qname("a.b") + b"\x00\x1c\x00\x01" + rr(PTR_Q, 28, bytes(15) + b"\x01"),  # ::1
        header(5, 0x0100) + b"\x03a\\b\x00" + b"\x00\x01\x00\x01",  # a label to escape
        header(6, 0x0100, ar=1) + qname("e.x") + b"\x00\x01\x00\x01"
        + rr(b"\x00", 41, b"\x00\x08\x00\x07\x00\x01\x18\x00\x01\x02\x03", rclass=4096),  # ECS option
        header(7, 0x8180, an=1) + qname("a.b") + b"\x00\x01\x00\x01" + rr(b"\xc0\x20", 1, a),  # bad pointer
        header(8, 0x8180, an=2) + qname("a.b") + b"\x00\x01\x00\x01" + rr(PTR_Q, 1, a),  # one answer short
    ]
    out, *_ = scan(others)
    assert out[:, K_OK].tolist() == [0] * len(others)
    check_against_parser(others)


def test_message_soup_matches_the_parser() -> None:
    rng = random.Random(11)
    messages = [soup_message(rng) for _ in range(3000)]
    assert check_against_parser(messages) > 200  # the soup has usual messages too


def test_generated_workload_messages_are_nearly_all_accepted(tmp_path: Path) -> None:
    """The fast path is the one taken: on the generator's DNS traffic (queries with and without
    EDNS, A/AAAA/CNAME answers, NXDOMAIN) nearly every message is the kernel's."""
    from lawtap.generate import generate_capture

    cap = tmp_path / "mix.pcap"
    generate_capture(cap, 5, 400)
    messages = _udp53_payloads(cap)
    assert len(messages) > 100
    assert check_against_parser(messages) >= 0.9 * len(messages)


@needs_corpus
def test_corpus_dns_messages_match_the_parser() -> None:
    messages = []
    for path in sorted((corpus_root() / "dns").glob("*/*")):
        if path.suffix in (".pcap", ".pcapng", ".cap"):
            messages += _udp53_payloads(path)
    assert len(messages) > 100
    assert check_against_parser(messages) > 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=8))
@example([b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"])  # question is a pointer
def test_random_bytes_never_crash_and_match(messages: list[bytes]) -> None:
    check_against_parser(messages)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.data())
def test_mutated_usual_messages_match(seed: int, data) -> None:
    rng = random.Random(seed)
    msg = bytearray(soup_message(rng))
    for _ in range(data.draw(st.integers(1, 4))):
        if msg:
            msg[data.draw(st.integers(0, len(msg) - 1))] = data.draw(st.integers(0, 255))
    check_against_parser([bytes(msg)])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dns_flows_make_the_records_of_an_analyzer_per_connection(seed: int) -> None:
    """Interleaved connections, queries and responses of every shape (some answered in a later
    batch, some twice, some never), connections ending and new ones taking their number:
    DnsFlows' rows equal the per-connection analyzers', connection by connection and in order,
    and so do the weirds."""
    from lawtap.pipeline import _record_table

    rng = random.Random(seed)
    N = 40  # connections: many get one or two messages per batch (the bulk path), some more
    generation = dict.fromkeys(range(N), 0)
    flows = D.DnsFlows(lambda fids: [f"C{f}g{generation[f] - 1}" for f in fids.tolist()])
    analyzers: dict[int, D.DNSAnalyzer] = {}
    expected: list[tuple[int, ConnInfo, dict]] = []
    expected_weirds: list[tuple[int, str, str]] = []

    def start(fid: int) -> None:
        conn = ConnInfo(f"C{fid}g{generation[fid]}", "10.0.0.1", 1000 + fid, "10.0.0.53", 53, "udp")
        generation[fid] += 1
        analyzers[fid] = D.DNSAnalyzer(conn)

    def finish(fid: int, ts: float) -> None:
        an = analyzers[fid]
        an.finish(ts)
        records, _, weirds = an.drain()
        expected.extend((fid, an.conn, rec) for _, rec in records)
        expected_weirds.extend((fid, name, detail) for name, detail in weirds)

    for fid in range(N):
        start(fid)
    rows = []
    t = 1000.0
    for _ in range(14):  # batches
        batch = []
        for _ in range(rng.randint(1, 80)):
            fid = rng.randrange(N)
            tid = rng.randrange(4)
            name = rng.choice(["a.example", "B.example", "c.example"])
            k = rng.random()
            if k < 0.4:
                msg = query(tid, name)
            elif k < 0.75:
                msg = header(tid, 0x8180, an=1) + qname(name.lower()) + b"\x00\x01\x00\x01" + rr(PTR_Q, 1, rng.randbytes(4))
            else:
                msg = soup_message(rng)
            t += 0.001
            batch.append((fid, msg, t))
        for fid, msg, ts in sorted(batch, key=lambda m: m[0]):
            an = analyzers[fid]
            an.datagram(True, msg, ts)
            records, _, weirds = an.drain()  # (the dispatcher drains after every flow's datagrams)
            expected.extend((fid, an.conn, rec) for _, rec in records)
            expected_weirds.extend((fid, name, detail) for name, detail in weirds)
        data = np.frombuffer(b"".join(m for _, m, _ in batch), dtype=np.uint8)
        lens = np.array([len(m) for _, m, _ in batch], dtype=np.int64)
        offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        fids = np.array([f for f, _, _ in batch], dtype=np.int64)
        order = np.argsort(fids, kind="stable")  # grouped by connection, as the dispatcher hands them
        addrs = np.tile(np.array([0, 0xFFFF0A000001, 0, 0xFFFF0A000035], dtype=np.uint64), (len(batch), 1))
        flows.messages_of(data, fids[order], offs[order], lens[order], np.array([x for _, _, x in batch])[order],
                          addrs, 1000 + fids[order], np.full(len(batch), 53), np.ones(len(batch), dtype=np.int8))
        ended = rng.sample(range(N), 9) if rng.random() < 0.5 else []
        flows.end(ended)
        for fid in ended:
            finish(fid, t)
            start(fid)
        for table in flows.take():
            rows += table.to_pylist()
    flows.end(list(range(N)))
    for fid in range(N):
        finish(fid, t)
    for table in flows.take():
        rows += table.to_pylist()
    reference = _record_table(D.DNS_SCHEMA, expected, t).to_pylist()
    assert len(reference) > 100

    def by_uid(items: list[dict]) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for r in items:
            out.setdefault(r["uid"], []).append(r)
        return out

    assert by_uid(rows) == by_uid(reference)
    assert flows.whole > 10  # both paths were taken
    assert sorted((f, n, d) for f, n, d, _ in flows.weirds) == sorted(expected_weirds)


def _udp53_payloads(path: Path) -> list[bytes]:
    from lawtap.decode import kernel as dk
    from lawtap.sources import open_capture

    out = []
    for b in open_capture(path).batches():
        A, Dc = dk.new_columns(len(b))
        dk.decode_batch(b.data, b.offset, b.caplen, b.linktype, A, Dc)
        m = (Dc[:, dk.C_PROTO] == 17) & ((Dc[:, dk.C_SPORT] == 53) | (Dc[:, dk.C_DPORT] == 53)) & (Dc[:, dk.C_PAY_LEN] > 0)
        for i in np.nonzero(m)[0]:
            o, n = int(Dc[i, dk.C_PAY_OFF]), int(Dc[i, dk.C_PAY_LEN])
            out.append(bytes(b.data[o:o + n]))
    return out


@given(st.text(alphabet="ab.-", max_size=60), st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60),
                                                                  st.integers(0, 60), st.integers(0, 60)), max_size=20))
@settings(max_examples=300, deadline=None)
def test_same_spans_is_slice_equality(text, spans) -> None:
    """The vectorized name comparison (a query's against its response's) is str slicing's."""
    from lawtap.analyzers.dns import _same_spans

    spans = [(min(a, len(text)), min(max(a, b), len(text)), min(c, len(text)), min(max(c, d), len(text)))
             for a, b, c, d in spans]
    cols = [np.array([s[i] for s in spans], dtype=np.int64) for i in range(4)]
    assert _same_spans(text, *cols).tolist() == [text[a:b] == text[c:d] for a, b, c, d in spans]
    buf = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    assert _same_spans(buf, *cols).tolist() == [text[a:b] == text[c:d] for a, b, c, d in spans]


@given(st.text(alphabet="ab.-", max_size=60), st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=20))
@settings(max_examples=300, deadline=None)
def test_spans_as_strings_is_str_slicing(text, spans) -> None:
    """The query column, copied by a kernel from the batch's names, is str slicing's."""
    from lawtap.analyzers.dns import _spans_as_strings

    spans = [(min(a, len(text)), min(max(a, b), len(text))) for a, b in spans]
    starts = np.array([a for a, _ in spans], dtype=np.int64)
    ends = np.array([b for _, b in spans], dtype=np.int64)
    buf = np.frombuffer(text.encode("ascii"), dtype=np.uint8).copy()
    assert _spans_as_strings(buf, starts, ends).to_pylist() == [text[a:b] for a, b in spans]


@given(st.lists(st.text(max_size=12), max_size=8), st.lists(st.integers(-3, 10), max_size=40))
@settings(max_examples=300, deadline=None)
def test_strings_by_code_is_indexing(names, codes) -> None:
    """The conn columns' name lookup: ``names[code]``, null for a negative code."""
    from lawtap.flows.engine import strings_by_code

    codes = [c for c in codes if c < len(names)]
    got = strings_by_code(names, np.array(codes, dtype=np.int64)).to_pylist()
    assert got == [names[c] if c >= 0 else None for c in codes]
