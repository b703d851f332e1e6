"""Holding Ctrl-C for the length of a block that must not be cut in half."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Delay SIGINT until the block is done, then deliver it to the previous handler.

    Why: a KeyboardInterrupt between writing a Parquet row group and its JSON lines (or half
    way through closing) would leave files that disagree or lack a footer, and one half way
    through a message to the lane's process would break its framing for good. Only the main
    thread can install signal handlers; elsewhere the block simply runs.
    """
    in_main = threading.current_thread() is threading.main_thread()
    if not in_main or signal.getsignal(signal.SIGINT) is None:  # None: set from C, can't restore
        yield
        return
    pending: list[tuple[int, FrameType | None]] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        pending.append((signum, frame))

    previous = signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            if callable(previous):
                previous(*pending[0])
            elif previous != signal.SIG_IGN:
                raise KeyboardInterrupt
