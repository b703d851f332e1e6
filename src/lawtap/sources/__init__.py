"""Capture sources: files (pcap, pcapng, gzip), merges of several files, live interfaces.

Every source yields :class:`~lawtap.sources.batch.PacketBatch` es from ``batches(max_bytes)``.
File batches may share one reusable buffer: finish with a batch before asking for the next.
"""

from lawtap.sources.batch import PacketBatch, ReaderWeird
from lawtap.sources.live import LiveSource
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
