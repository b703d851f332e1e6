"""Fuzzing the readers: damaged input may only ever raise CaptureError, and only at open time.

Once ``open_capture`` accepted a file (its header is valid), reading it must never raise:
any damage after that point is reported as a ReaderWeird.
"""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lawtap.errors import CaptureError
from lawtap.sources import merge_batches, open_capture

T0 = 1_700_000_000 * 10**6  # µs

FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)


def _pcap(big: bool, ns: bool, n: int = 12) -> bytes:
    e = ">" if big else "<"
    out = [struct.pack(e + "IHHiIII", 0xA1B23C4D if ns else 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(n):
        data = bytes((i + k) & 0xFF for k in range(14 + 9 * i))
        out.append(struct.pack(e + "IIII", 1_700_000_000 + i, i * 1000, len(data), len(data)))
        out.append(data)
    return b"".join(out)


def _blk(e: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * ((-len(body)) % 4)
    return (
        struct.pack(e + "II", btype, 12 + len(body)) + body + struct.pack(e + "I", 12 + len(body))
    )


def _pcapng(n: int = 10) -> bytes:
    out = []
    for big in (False, True):  # two sections, both byte orders
        e = ">" if big else "<"
        out.append(_blk(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)))
        tsres = struct.pack(e + "HH", 9, 1) + b"\x09\0\0\0" + b"\0" * 4
        out.append(_blk(e, 1, struct.pack(e + "HHI", 1, 0, 0)))
        out.append(_blk(e, 1, struct.pack(e + "HHI", 113, 0, 0) + tsres))
        for i in range(n):
            data = bytes((i * 3 + k) & 0xFF for k in range(10 + 7 * i))
            units = T0 + i if i % 2 == 0 else (T0 + i) * 1000
            head = struct.pack(
                e + "IIIII", i % 2, units >> 32, units & 0xFFFFFFFF, len(data), len(data)
            )
            out.append(_blk(e, 6, head + data))
            if i == 4:
                out.append(_blk(e, 3, struct.pack(e + "I", 5) + b"spb!!"))
                out.append(_blk(e, 0x4242, b"unknown"))
    return b"".join(out)


VALID = {
    "pcap-le-us": _pcap(False, False),
    "pcap-be-ns": _pcap(True, True),
    "pcapng": _pcapng(),
}
VALID["pcap.gz"] = gzip.compress(VALID["pcap-le-us"])
VALID["pcapng.gz"] = gzip.compress(VALID["pcapng"])

_TMP = Path(tempfile.mkdtemp(prefix="lawtap-fuzz-"))


def _read(content: bytes, max_bytes: int = 32 << 20) -> tuple[bool, int]:
    """(opened, packets); asserts nothing but CaptureError escapes and only from open."""
    path = _TMP / "f.bin"
    path.write_bytes(content)
    try:
        src = open_capture(path)
    except CaptureError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        return False, 0
    # Both read paths (mmap windows for plain files, read() into a buffer) must agree exactly,
    # damage included.
    seen = []
    for mapped in (True, False):
        src.mapped = mapped and not src.compressed
        n = 0
        packets, weirds = [], []
        for b in src.batches(max_bytes):  # must not raise anything at all
            assert b.offset.shape == b.caplen.shape == b.ts.shape == (len(b),)
            if len(b):
                assert (b.caplen >= 0).all()
                assert int((b.offset + b.caplen).max()) <= b.data.shape[0]
            n += len(b)
            packets += [(int(b.file_offset[i]), int(b.ts[i]), b.packet(i)) for i in range(len(b))]
            weirds += [(w.name, w.file_offset) for w in b.weirds]
        seen.append((packets, weirds))
    assert seen[0] == seen[1]
    return True, n


@FUZZ
@given(st.binary(max_size=2000))
def test_random_bytes(content):
    _read(content)


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.binary(max_size=600))
def test_valid_header_then_random_bytes(kind, tail):
    raw = VALID[kind]
    if kind.endswith(".gz"):
        raw = gzip.compress(gzip.decompress(raw)[:40] + tail)
    else:
        raw = raw[:40] + tail
    _read(raw, max_bytes=256)


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.data())
def test_truncated(kind, data):
    raw = VALID[kind]
    cut = data.draw(st.integers(0, len(raw)))
    opened, n = _read(raw[:cut], max_bytes=data.draw(st.sampled_from([64, 500, 1 << 20])))
    if opened and not kind.endswith(".gz"):
        _, full = _read(raw)
        assert n <= full


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.data())
def test_bit_flips(kind, data):
    raw = bytearray(VALID[kind])
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= 1 << data.draw(st.integers(0, 7))
    _read(bytes(raw), max_bytes=data.draw(st.sampled_from([64, 500, 1 << 20])))


@FUZZ
@given(st.sampled_from(["pcap-le-us", "pcapng"]), st.data())
def test_overwritten_lengths(kind, data):
    """Stamp absurd 32-bit values at random offsets, where lengths are most harmful."""
    raw = bytearray(VALID[kind])
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(24, len(raw) - 4))
        v = data.draw(st.sampled_from([0, 1, 3, 0xFFFFFFFF, 0x7FFFFFFC, 1 << 20, 300000]))
        raw[i : i + 4] = struct.pack("<I", v)
    _read(bytes(raw), max_bytes=data.draw(st.sampled_from([64, 1 << 20])))


def test_valid_inputs_read_fully():
    for kind, raw in VALID.items():
        opened, n = _read(raw)
        assert opened
        assert n == (12 if kind.startswith("pcap-") or kind == "pcap.gz" else 22), kind


@FUZZ
@given(st.lists(st.sampled_from(sorted(VALID)), min_size=2, max_size=3), st.data())
def test_merge_of_damaged_files_never_raises(kinds, data):
    paths = []
    for k, kind in enumerate(kinds):
        raw = VALID[kind]
        cut = data.draw(st.integers(40, len(raw)))
        p = _TMP / f"m{k}.bin"
        p.write_bytes(raw[:cut] if not kind.endswith(".gz") else raw)
        paths.append(p)
    merged = sum(len(b) for b in merge_batches(paths, max_bytes=300))
    alone = sum(sum(len(b) for b in open_capture(p).batches()) for p in paths)
    assert merged == alone


@pytest.fixture(scope="module", autouse=True)
def _cleanup():
    yield
    for p in _TMP.iterdir():
        p.unlink()
    _TMP.rmdir()
