"""Deep packet inspection: decide a flow's service from its first payloads.

Ports are only a hint (like Zeek's DPD and nDPI): every protocol is
recognised by a payload signature; a hint port adds a bonus that lets weak
evidence pass and breaks ties.  See docs/dpi.md for the protocol table.

    >>> from lawtap.dpi import classify
    >>> classify("tcp", 51000, 2222, [b"SSH-2.0-OpenSSH_9.6\\r\\n"], [])
    'ssh'
"""

from __future__ import annotations

# importing the family modules registers their detectors (order = tie-break)
from . import web, infra, mail, files, remote, voip, mobile, vpn, chat, db, iot  # noqa: F401
from ._core import REGISTRY, Ctx, Detector, candidates, classify, detector

__all__ = ["classify", "services", "detectors", "detector", "Ctx", "Detector", "candidates"]


def services() -> list[str]:
    """Sorted list of every service name classify() can return."""
    return sorted({d.name for d in REGISTRY})


def detectors() -> list[Detector]:
    """The registered detector table (name, transports, hint ports, ...)."""
    return list(REGISTRY)
