"""Lawtap's background threads: hashing, artifact writing, Parquet encoding.

Their work has slack: each has a bounded queue, and the run only needs it done by the end. The
main thread's does not: it runs the flow table, the dispatcher and the analyzers, and every
batch waits for it. On a busy machine (a run with a lane keeps both cores of this one busy),
the scheduler shares the cores fairly among runnable threads; the background threads therefore
run at a lower priority, so the main thread gets a core first. (On the 1 GB workload the
gain is within this machine's run-to-run noise: 0.06-0.25 s of a 7.2-7.5 s run in A/B rounds.)
"""

from __future__ import annotations

import os
import sys
import threading

BACKGROUND_NICENESS = 10  # added to the niceness the thread started with


def lower_priority() -> None:
    """ThreadPoolExecutor ``initializer``: lower the calling thread's priority (Linux, where
    ``setpriority`` on a thread id applies to that thread alone; elsewhere, nothing)."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICENESS, 19))
    except OSError:
        pass
