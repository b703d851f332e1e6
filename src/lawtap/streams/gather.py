"""The dispatcher's kernel, in a module of its own so that editing the dispatcher does not make
the ahead-of-time module (:mod:`lawtap.aot`) stale."""

from __future__ import annotations

from lawtap.jit import njit


@njit(cache=True, nogil=True)
def gather_payloads(data, offs, lens, out):
    """Copy ``data[offs[k]:offs[k] + lens[k]]`` for every k, back to back, into ``out``."""
    p = 0
    for k in range(offs.shape[0]):
        n = lens[k]
        o = offs[k]
        for j in range(n):
            out[p + j] = data[o + j]
        p += n
