"""The unit every source hands to the decoder: a batch of packets in one byte buffer.

Why columns: the decoder and flow table are numba kernels that walk many packets per call, so a
source never builds a Python object per packet. It fills one ``uint8`` buffer and a few parallel
columns; ``data[offset[i] : offset[i] + caplen[i]]`` is packet ``i``'s captured bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# libpcap LINKTYPE_* values the decoder understands.
LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276


@dataclass(frozen=True)
class ReaderWeird:
    """Damage found inside a readable capture (becomes a ``weird`` record, never an exception)."""

    name: str  # e.g. "truncated_record", "pcapng_bad_block_length"
    file_offset: int
    detail: str


@dataclass
class PacketBatch:
    """Packets in capture order (or time order when several sources are merged).

    Columns all have length ``n``:
      * ``offset``  int64  start of packet bytes in ``data``
      * ``caplen``  int32  captured length
      * ``wirelen`` int32  original length on the wire
      * ``ts``      int64  nanoseconds since the Unix epoch
      * ``linktype`` int32 libpcap LINKTYPE of the packet's interface
      * ``file_id`` int16  index of the source file in the run's input list
      * ``file_offset`` int64 offset of the packet's bytes in that (decompressed) file, so a
        packet can be read back later for export
    """

    data: np.ndarray
    offset: np.ndarray
    caplen: np.ndarray
    wirelen: np.ndarray
    ts: np.ndarray
    linktype: np.ndarray
    file_id: np.ndarray
    file_offset: np.ndarray
    weirds: list[ReaderWeird] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.offset.shape[0])

    def packet(self, i: int) -> bytes:
        """Packet ``i``'s captured bytes (for tests and slow paths, not the hot loop)."""
        start = int(self.offset[i])
        return self.data[start : start + int(self.caplen[i])].tobytes()
