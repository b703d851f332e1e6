"""Content store and ``files`` records: every recovered object is hashed, stored once, logged.

Artifacts live under ``CASE_DIR/artifacts/<first two hex digits>/<sha256>``: content-addressed,
so an attachment seen in ten emails is stored once, and any record can point at it by hash.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa

from lawtap.analyzers.base import ConnInfo, FileObject
from lawtap.records import FILES, as_timestamps
from lawtap.threads import lower_priority


class ArtifactStore:
    """Writes each distinct object once (atomically); ``root=None`` means hash but don't store.

    Writes happen on a background thread (file writes release the GIL, so they overlap with
    the analyzers): :meth:`put` returns the artifact's path at once, and at most
    ``MAX_PENDING_BYTES`` wait to be written. :meth:`close` waits for every write and re-raises
    the first failure; the pipeline calls it before the case is closed.
    """

    MAX_PENDING_BYTES = 64 << 20

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.stored = 0
        self.stored_bytes = 0
        self._queued: set[str] = set()
        self._pending: deque[tuple[Future, int]] = deque()
        self._pending_bytes = 0
        self._pool: ThreadPoolExecutor | None = None

    def put(self, sha256: str, data: bytes) -> str | None:
        """Store ``data`` under its SHA-256 (once) and return its path relative to the case."""
        if self.root is None:
            return None
        rel = f"artifacts/{sha256[:2]}/{sha256}"
        if sha256 not in self._queued:
            self._queued.add(sha256)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lawtap-artifacts",
                                               initializer=lower_priority)
            while self._pending and (self._pending[0][0].done() or self._pending_bytes + len(data) > self.MAX_PENDING_BYTES):
                self._reap_one()
            self._pending.append((self._pool.submit(self._write, os.path.join(self.root, rel), data), len(data)))
            self._pending_bytes += len(data)
        return rel

    def _write(self, path: str, data: bytes) -> None:
        if os.path.exists(path):
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"  # the lane's process may write the same object
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        self.stored += 1
        self.stored_bytes += len(data)

    def _reap_one(self) -> None:
        future, size = self._pending.popleft()
        self._pending_bytes -= size
        future.result()

    def close(self) -> None:
        """Wait for every queued write; the first failure is raised (after all were tried)."""
        error: BaseException | None = None
        while self._pending:
            try:
                self._reap_one()
            except Exception as exc:  # noqa: BLE001 - the first is re-raised below
                error = error or exc
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if error is not None:
            raise error


PARALLEL_BYTES = 1 << 16  # objects at least this big are hashed on the worker threads
_pool: ThreadPoolExecutor | None = None


def _digests(data: bytes, sha256: str | None = None, derived: bool = False) -> tuple[str | None, str | None, str]:
    """(md5, sha1, sha256); an object lawtap made itself (``FileObject.derived``) gets its SHA-256 only."""
    sha256 = sha256 or hashlib.sha256(data).hexdigest()
    if derived:
        return None, None, sha256
    return hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest(), sha256


def digests(objects: list[bytes]) -> list[tuple[str, str, str]]:
    """(md5, sha1, sha256) of each object; big objects are hashed on two worker threads.

    Why: hashing is most of the cost of recovered files (three digests of hundreds of MB on the
    benchmark workload) and ``hashlib`` releases the GIL on large inputs, so the digests of
    different objects run in parallel with each other.
    """
    return PendingDigests(objects).result()


class PendingDigests:
    """Digests of some objects, the big ones still being computed on the hashing threads.

    Why: the pipeline need not wait for them. It starts the digests of a batch's recovered
    objects, goes on with the next batches, and writes their ``files`` records once
    :meth:`done` (in the order they were found).
    """

    def __init__(self, objects: list[bytes], known: list[str | None] | None = None,
                 derived: list[bool] | None = None) -> None:
        """``known``: each object's SHA-256 where its analyzer computed it already (or None);
        ``derived``: which objects lawtap made itself (SHA-256 only, see ``FileObject.derived``)."""
        global _pool
        known = known or [None] * len(objects)
        derived = derived or [False] * len(objects)
        big = [i for i, d in enumerate(objects) if len(d) >= PARALLEL_BYTES]
        if big and _pool is None:
            _pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lawtap-hash",
                                       initializer=lower_priority)
        self._futures = {i: _pool.submit(_digests, objects[i], known[i], derived[i]) for i in big} if big else {}
        self._small = {i: _digests(d, known[i], derived[i]) for i, d in enumerate(objects) if i not in self._futures}
        self._n = len(objects)

    def done(self) -> bool:
        return all(f.done() for f in self._futures.values())

    def result(self) -> list[tuple[str | None, str | None, str]]:
        """(md5, sha1, sha256) of each object, in order (waits for the big ones)."""
        return [self._futures[i].result() if i in self._futures else self._small[i] for i in range(self._n)]


def files_batch(items: list[tuple[int, ConnInfo, FileObject]], uids: list[str], fuids: list[str], store: ArtifactStore,
                hashes: list[tuple[str, str, str]] | None = None) -> pa.RecordBatch:
    """``files`` records for recovered objects (artifacts stored; ``hashes`` computed here unless
    given, e.g. by :class:`PendingDigests`)."""
    rows: list[dict[str, Any]] = []
    if hashes is None:
        hashes = PendingDigests([f.data for _, _, f in items], [f.sha256 for _, _, f in items],
                                [f.derived for _, _, f in items]).result()
    for (fid, conn, f), uid, fuid, (md5, sha1, sha256) in zip(items, uids, fuids, hashes):
        data = f.data
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
                "md5": md5,
                "sha1": sha1,
                "sha256": sha256,
                "extracted": store.put(sha256, data),
            }
        )
    table = pa.Table.from_pylist(rows, schema=FILES.set(0, pa.field("ts", pa.int64())))
    ts = as_timestamps(table.column("ts").combine_chunks(), FILES.field("ts").type)
    return table.set_column(0, FILES.field("ts"), ts).to_batches()[0] if rows else pa.RecordBatch.from_pylist([], schema=FILES)


