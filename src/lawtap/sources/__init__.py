"""Capture sources: files (pcap, pcapng, gzip), merges of several files, live interfaces.

Every source yields :class:`~lawtap.sources.batch.PacketBatch` es from ``batches(max_bytes)``.
File batches may share one reusable buffer: finish with a batch before asking for the next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lawtap.sources.batch import PacketBatch, ReaderWeird
from lawtap.sources.merge import merge_batches
from lawtap.sources.open import CaptureSource, detect_format, expand_inputs, open_capture
from lawtap.sources.writer import PcapngWriter, PcapWriter

__all__ = [
    "CaptureSource",
    "LiveSource",
    "PacketBatch",
    "PcapWriter",
    "PcapngWriter",
    "ReaderWeird",
    "detect_format",
    "expand_inputs",
    "merge_batches",
    "open_capture",
]

if TYPE_CHECKING:
    from lawtap.sources.live import LiveSource


def __getattr__(name: str) -> Any:
    """``LiveSource`` is imported on first use: file analysis never needs libpcap's bindings."""
    if name == "LiveSource":
        from lawtap.sources.live import LiveSource

        return LiveSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
