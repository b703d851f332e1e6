"""The conn record's vectorized columns agree with their one-value definitions.

Addresses are formatted in a kernel (``address_strings``) and must print exactly what
:mod:`ipaddress` prints (``address_text``); uids, histories and other fixed-width character
columns become Arrow strings without per-row Python (``fixed_width_strings``).
"""

from __future__ import annotations

import ipaddress

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lawtap.flows.engine import address_strings, address_text, fixed_width_strings, make_uid, make_uids

_MAPPED = 0xFFFF << 32


def _halves(addr: int) -> tuple[int, int]:
    return addr >> 64, addr & ((1 << 64) - 1)


def _expected(addr: int) -> str:
    hi, lo = _halves(addr)
    if hi == 0 and lo >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(lo & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address(addr))


# Zero runs are what RFC 5952 compression is about: build addresses from groups that are often 0.
_group = st.one_of(st.just(0), st.just(0), st.integers(0, 0xFFFF), st.sampled_from([1, 0xF, 0x10, 0xFF, 0x100, 0xFFF, 0x1000]))
_v6 = st.lists(_group, min_size=8, max_size=8).map(lambda gs: sum(g << (16 * (7 - i)) for i, g in enumerate(gs)))
_v4 = st.integers(0, 0xFFFFFFFF).map(lambda q: _MAPPED | q)
_SPECIAL = [0, 1, _MAPPED, _MAPPED | 0xFFFFFFFF, 0x0A000001, (1 << 128) - 1, 1 << 112, 0x20010DB8 << 96,
            0x20010DB8_00000000_00000000_00000001, 0xFE800000_00000000_00000000_00000001,
            0x00010000_00000000_00000000_00000000, 0x00000001_00000000_00000000_00000000]


def _format(addrs: list[int]) -> list[str]:
    hi = np.array([_halves(a)[0] for a in addrs], dtype=np.uint64)
    lo = np.array([_halves(a)[1] for a in addrs], dtype=np.uint64)
    return address_strings(hi, lo).to_pylist()


def test_special_addresses_print_like_ipaddress() -> None:
    assert _format(_SPECIAL) == [_expected(a) for a in _SPECIAL]
    assert [address_text(*_halves(a)) for a in _SPECIAL] == [_expected(a) for a in _SPECIAL]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_v6, _v4, st.integers(0, (1 << 128) - 1)), min_size=1, max_size=60))
def test_address_kernel_prints_like_ipaddress(addrs: list[int]) -> None:
    assert _format(addrs) == [_expected(a) for a in addrs]


def test_empty_address_column() -> None:
    assert _format([]) == []


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127), max_size=12), max_size=40))
def test_fixed_width_rows_end_at_their_first_nul(texts: list[str]) -> None:
    """(History letters and uids are ASCII, NUL-padded to the row width.)"""
    chars = np.zeros((len(texts), 12), dtype=np.uint8)
    for i, t in enumerate(texts):
        chars[i, : len(t)] = np.frombuffer(t.encode("ascii"), dtype=np.uint8)
    assert fixed_width_strings(chars).to_pylist() == texts


def test_vectorized_uids_equal_single_uids() -> None:
    salt = bytes(range(32))
    for n in (3, 600):  # below and above the kernel threshold
        fids = np.arange(1000, 1000 + n, dtype=np.int64)
        assert make_uids(salt, fids).to_pylist() == [make_uid(salt, int(f)) for f in fids]
