"""Shared fixtures: where the oracle corpus is, and analyzing a capture once per test session."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def corpus_root() -> Path | None:
    """The shared capture corpus: $LAWTAP_CORPUS, else ../shared/corpus beside the repo."""
    env = os.environ.get("LAWTAP_CORPUS")
    root = Path(env) if env else REPO.parent / "shared" / "corpus"
    return root if root.is_dir() else None


def corpus_captures() -> list[Path]:
    root = corpus_root()
    if root is None:
        return []
    caps = []
    for d in sorted(p for p in root.glob("*/*") if p.is_dir()):
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix in (".pcap", ".pcapng", ".cap"):
                caps.append(f)
    return caps


def capture_id(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.parent.name}"


@lru_cache(maxsize=None)
def analyzed(path: str) -> dict:
    """Run the real pipeline over one capture (in memory) and return its tables by type."""
    import pyarrow as pa

    from lawtap.dpi import classify
    from lawtap.pipeline import Analyzer, run_salt
    from lawtap.sources import open_capture

    src = open_capture(path)
    an = Analyzer(run_salt([Path(path)]), [path], classify=classify)
    out: dict[str, list] = {}
    for batch in src.batches():
        for t, rb in an.process(batch):
            out.setdefault(t, []).append(rb)
    for t, rb in an.finish():
        out.setdefault(t, []).append(rb)
    tables = {k: pa.Table.from_batches(v) for k, v in out.items()}
    tables["_stats"] = an.stats
    return tables


needs_corpus = pytest.mark.skipif(corpus_root() is None, reason="shared corpus not present")
