"""Progress display for long runs: bytes read of total, packets, packets/s and ETA on stderr.

Why stderr and why auto-off: stdout may carry query output or be piped, and a progress bar in a
log file or CI output is noise, so the display only appears when stderr is a terminal unless
the caller forces it. :meth:`Progress.update` is throttled so calling it once per batch costs
next to nothing even with tiny batches.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported only when a bar is shown (it costs ~50 ms at start-up)
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

REFRESH_INTERVAL_S = 0.1


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


class Progress:
    """``with Progress(total_bytes) as p: ... p.update(bytes_read, packets)``.

    ``bytes_read`` and ``packets`` are running totals (not increments), so a caller can pass
    whatever its reader reports. ``total_bytes`` of None or 0 (live capture, unknown size)
    shows an open-ended bar without ETA. ``enabled=None`` means "only if stderr is a TTY".
    """

    def __init__(
        self,
        total_bytes: int | None,
        enabled: bool | None = None,
        *,
        description: str = "reading",
        console: Console | None = None,
        transient: bool = False,
    ) -> None:
        self.total_bytes = int(total_bytes) if total_bytes else None
        self.enabled = _stderr_is_tty() if enabled is None else bool(enabled)
        self.description = description
        self.bytes_read = 0
        self.packets = 0
        self._console = console
        self._transient = transient
        self._rich: RichProgress | None = None
        self._task: TaskID | None = None
        self._started = 0.0
        self._last_refresh = 0.0

    def _make(self) -> RichProgress:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as RichProgress

        return RichProgress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TextColumn("{task.fields[packets]:>12,} pkts"),
            TextColumn("{task.fields[rate]:>10,.0f} pkt/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self._console or Console(stderr=True),
            transient=self._transient,
        )

    def __enter__(self) -> Progress:
        self._started = time.monotonic()
        if self.enabled:
            self._rich = self._make()
            self._rich.start()
            self._task = self._rich.add_task(
                self.description, total=self.total_bytes, packets=0, rate=0.0
            )
        return self

    def update(self, bytes_read: int, packets: int) -> None:
        """Record running totals; redraws at most every REFRESH_INTERVAL_S."""
        self.bytes_read = int(bytes_read)
        self.packets = int(packets)
        if self._rich is None:
            return
        now = time.monotonic()
        if now - self._last_refresh >= REFRESH_INTERVAL_S:
            self._last_refresh = now
            self._push(now)

    def _push(self, now: float) -> None:
        assert self._rich is not None and self._task is not None
        elapsed = max(now - self._started, 1e-9)
        self._rich.update(
            self._task, completed=self.bytes_read, packets=self.packets,
            rate=self.packets / elapsed,
        )

    @property
    def packets_per_second(self) -> float:
        return self.packets / max(time.monotonic() - self._started, 1e-9) if self._started else 0.0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._rich is None:
            return
        try:
            self._push(time.monotonic())  # the final totals, even if throttled away
        finally:
            self._rich.stop()
            self._rich = None
