"""Live capture on loopback: we send known UDP datagrams to ourselves and must see exactly them.

Loopback only. Skips cleanly when libpcap or the capture permission is missing.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from lawtap.errors import LawtapError
from lawtap.sources import LiveSource, open_capture
from lawtap.sources.live import load_libpcap

pytestmark = pytest.mark.live


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lo_ok() -> None:
    """Skip unless we can open a capture on ``lo``."""
    try:
        load_libpcap()
    except LawtapError as e:
        pytest.skip(str(e))
    src = LiveSource("lo", "udp and port 9", duration=0.01)
    try:
        for _ in src.batches():
            pass
    except LawtapError as e:
        pytest.skip(f"cannot capture on lo: {e}")


def _send_when_ready(src: LiveSource, port: int, payloads: list[bytes]) -> threading.Thread:
    def run() -> None:
        assert src.ready.wait(5)
        time.sleep(0.05)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for p in payloads:
                s.sendto(p, ("127.0.0.1", port))
                time.sleep(0.001)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _udp_payload(pkt: bytes) -> bytes:
    """Payload of an Ethernet/IPv4/UDP frame (loopback is DLT_EN10MB on Linux)."""
    ihl = (pkt[14] & 0x0F) * 4
    return pkt[14 + ihl + 8 :]


def test_capture_counts_and_payloads(lo_ok, tmp_path):
    port = _free_udp_port()
    payloads = [b"lawtap-live-%03d-" % i + bytes(i) for i in range(40)]
    save = tmp_path / "live.pcap"
    src = LiveSource("lo", f"udp and dst port {port}", max_packets=40, duration=10, save_to=save)
    sender = _send_when_ready(src, port, payloads)
    got, stamps, weirds = [], [], []
    for b in src.batches():
        weirds.extend(b.weirds)
        for i in range(len(b)):
            got.append(_udp_payload(b.packet(i)))
            stamps.append(int(b.ts[i]))
            assert int(b.wirelen[i]) == int(b.caplen[i])
        assert set(b.linktype.tolist()) <= {1}
    sender.join(5)
    assert got == payloads
    assert not weirds
    assert stamps == sorted(stamps) and abs(stamps[0] / 1e9 - time.time()) < 60
    # the evidence copy holds the same packets, and file_offset points into it
    saved = [b.packet(i) for b in open_capture(save).batches() for i in range(len(b))]
    assert [_udp_payload(p) for p in saved] == payloads


def test_stop_from_another_thread_and_snaplen(lo_ok):
    port = _free_udp_port()
    src = LiveSource("lo", f"udp and dst port {port}", snaplen=64, duration=10)
    payloads = [bytes([i]) * 200 for i in range(5)]
    sender = _send_when_ready(src, port, payloads)

    def stopper() -> None:
        sender.join(5)
        time.sleep(0.3)
        src.stop()

    threading.Thread(target=stopper, daemon=True).start()
    t0 = time.monotonic()
    batches = list(src.batches())
    assert time.monotonic() - t0 < 5
    caplens = [int(c) for b in batches for c in b.caplen]
    wirelens = [int(w) for b in batches for w in b.wirelen]
    assert caplens == [64] * 5
    assert wirelens == [14 + 20 + 8 + 200] * 5


def test_duration_ends_capture(lo_ok):
    src = LiveSource("lo", f"udp and port {_free_udp_port()}", duration=0.3)
    t0 = time.monotonic()
    assert sum(len(b) for b in src.batches()) == 0
    assert 0.25 < time.monotonic() - t0 < 3


def test_errors_are_one_line(lo_ok):
    with pytest.raises(LawtapError, match="no such interface") as ei:
        list(LiveSource("lawtap-nonexistent0").batches())
    assert "\n" not in str(ei.value)
    with pytest.raises(LawtapError, match="bad capture filter"):
        list(LiveSource("lo", "udp and and port").batches())


def test_flushes_batches_while_running(lo_ok):
    """A slow trickle must still arrive batch by batch, not only at the end."""
    port = _free_udp_port()
    src = LiveSource("lo", f"udp and dst port {port}", duration=10)

    def trickle() -> None:
        assert src.ready.wait(5)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i in range(3):
                s.sendto(struct.pack("!I", i), ("127.0.0.1", port))
                time.sleep(0.4)

    threading.Thread(target=trickle, daemon=True).start()
    seen = 0
    sizes = []
    for b in src.batches():
        sizes.append(len(b))
        seen += len(b)
        if seen == 3:
            src.stop()
    assert seen == 3 and len([s for s in sizes if s]) >= 2
