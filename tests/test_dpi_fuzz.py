"""classify() never raises and always returns a known service name or ''."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawtap.dpi import classify, detectors, services
from lawtap.dpi._core import Ctx

KNOWN = set(services()) | {""}
HINT_PORTS = sorted({p for d in detectors() for p in d.ports})

ports = st.one_of(st.integers(0, 65535), st.sampled_from(HINT_PORTS))
payload = st.binary(min_size=0, max_size=1100)
payloads = st.lists(payload, max_size=7)
transports = st.sampled_from(["tcp", "udp", "sctp", "TCP", "icmp", ""])

# payloads that start like real protocols, so detectors get past their first checks
PREFIXES = [
    b"\x16\x03\x01", b"\x17\x03\x03", b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200", b"SSH-2.0-", b"220 ", b"+OK ", b"* OK",
    b"\xc3\x00\x00\x00\x01", b"\x80\x00", b"\x81\xc8", b"\x00\x01\x00", b"\x30\x82", b"\x6a\x81", b"\x00\x00\x00\x10",
    b"\x32\xff", b"\x30\xff", b"\x48\x20", b"\x38", b"\x40", b"\x01\x00\x00\x00", b"\x04\x00\x00\x00", b"\x05\x01",
    b"\x03\x00", b"\xff\xfd", b"<34>", b"<?xml", b"d1:ad2:id20:", b"\x13BitTorrent protocol", b"\x10", b"*1\r\n$4\r\n",
    b"RFB 003.008\n", b"\x05\x64", b"\xff" * 16, b"INVITE sip:", b"SIP/2.0 ", b"M-SEARCH * HTTP/1.1", b"\x00\x01abc\x00",
    b"\x00\x03\x00\x01", b"\x1e\x10", b"\x2e\xf0", b"\x08\x00\x00\x00", b"\x01\x01\x06\x00", b"\x23\x00", b"NICK ",
]
structured = st.builds(lambda pre, rest: pre + rest, st.sampled_from(PREFIXES), st.binary(max_size=300))
mixed_payloads = st.lists(st.one_of(payload, structured), max_size=6)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(transports, ports, ports, payloads, payloads)
def test_classify_never_raises(transport, op, rp, orig, resp) -> None:
    assert classify(transport, op, rp, orig, resp) in KNOWN


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["tcp", "udp", "sctp"]), ports, ports, mixed_payloads, mixed_payloads)
def test_classify_never_raises_on_protocol_like_input(transport, op, rp, orig, resp) -> None:
    assert classify(transport, op, rp, orig, resp) in KNOWN


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["tcp", "udp", "sctp"]), ports, ports, mixed_payloads, mixed_payloads)
def test_no_detector_raises(transport, op, rp, orig, resp) -> None:
    # the engine swallows detector exceptions; check the detectors themselves are robust too
    ctx = Ctx(transport, op, rp, orig, resp)
    for d in detectors():
        if transport in d.transports:
            s = d.fn(ctx)
            assert isinstance(s, int) and 0 <= s <= 100, (d.name, d.fn.__name__, s)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.binary(max_size=5)),
    st.one_of(st.none(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5)),
    st.one_of(st.none(), st.integers(), st.text(max_size=5)),
    st.one_of(st.none(), st.binary(max_size=20), st.lists(st.one_of(st.binary(max_size=20), st.none(),
                                                                    st.integers(), st.text(max_size=5)), max_size=4)),
    st.one_of(st.none(), st.tuples(st.binary(max_size=20)), st.lists(st.binary(max_size=20), max_size=3)),
)
def test_classify_never_raises_on_wrong_types(transport, op, rp, orig, resp) -> None:
    assert classify(transport, op, rp, orig, resp) in KNOWN
