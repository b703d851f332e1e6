"""Content store and ``files`` records: every recovered object is hashed, stored once, logged.

Artifacts live under ``CASE_DIR/artifacts/<first two hex digits>/<sha256>``: content-addressed,
so an attachment seen in ten emails is stored once, and any record can point at it by hash.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import ConnInfo, FileObject
from lawtap.records import FILES


class ArtifactStore:
    """Writes each distinct object once (atomically); ``root=None`` means hash but don't store."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.stored = 0
        self.stored_bytes = 0

    def put(self, sha256: str, data: bytes) -> str | None:
        if self.root is None:
            return None
        rel = Path("artifacts") / sha256[:2] / sha256
        path = self.root / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            self.stored += 1
            self.stored_bytes += len(data)
        return str(rel)


def files_batch(items: list[tuple[int, ConnInfo, FileObject]], uids: list[str], fuids: list[str], store: ArtifactStore) -> pa.RecordBatch:
    """``files`` records for recovered objects (hashes computed here, artifacts stored)."""
    rows: list[dict[str, Any]] = []
    for (fid, conn, f), uid, fuid in zip(items, uids, fuids):
        data = f.data
        sha256 = hashlib.sha256(data).hexdigest()
        rows.append(
            {
                "ts": int(f.ts * 1e6),
                "fuid": fuid,
                "uid": uid,
                "id.orig_h": conn.orig_h,
                "id.orig_p": conn.orig_p,
                "id.resp_h": conn.resp_h,
                "id.resp_p": conn.resp_p,
                "source": f.source,
                "is_orig": f.is_orig,
                "filename": f.filename,
                "mime_type": f.mime_type,
                "total_bytes": f.total_bytes,
                "seen_bytes": len(data),
                "missing_bytes": f.missing_bytes,
                "md5": hashlib.md5(data).hexdigest(),
                "sha1": hashlib.sha1(data).hexdigest(),
                "sha256": sha256,
                "extracted": store.put(sha256, data),
            }
        )
    table = pa.Table.from_pylist(rows, schema=FILES.set(0, pa.field("ts", pa.int64())))
    ts = table.column("ts").cast(pa.timestamp("us", tz="UTC"))
    return table.set_column(0, FILES.field("ts"), ts).to_batches()[0] if rows else pa.RecordBatch.from_pylist([], schema=FILES)


