"""The dispatcher's kernel, in a module of its own so that editing the dispatcher does not make
the ahead-of-time module (:mod:`lawtap.aot`) stale."""

from __future__ import annotations

from lawtap.jit import njit


@njit(cache=True, nogil=True)
def gather_payloads(data, offs, lens, out):
    """Copy ``data[offs[k]:offs[k] + lens[k]]`` for every k, back to back, into ``out``.

    The copy loop indexes sub-slices with the non-negative ``range`` counter: with ``out[p + j]``
    numba must allow for negative indices, and that check kept LLVM from vectorizing the
    loop (0.8 GB/s against 6 GB/s here)."""
    p = 0
    for k in range(offs.shape[0]):
        n = lens[k]
        o = offs[k]
        src = data[o : o + n]
        dst = out[p : p + n]
        for j in range(n):
            dst[j] = src[j]
        p += n
