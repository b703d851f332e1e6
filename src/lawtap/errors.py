"""Errors that reach the user as one clear line (never a traceback)."""

from __future__ import annotations


class LawtapError(Exception):
    """Base class: the CLI prints ``lawtap: <message>`` and exits non-zero."""


class CaptureError(LawtapError):
    """A capture file cannot be read at all (not a capture, truncated header, I/O error).

    Damage *inside* an otherwise readable capture is not an error: readers report it as a
    weird record (see :class:`lawtap.sources.batch.ReaderWeird`) and carry on.
    """

    def __init__(self, path: str, offset: int, message: str) -> None:
        self.path = str(path)
        self.offset = int(offset)
        self.message = message
        super().__init__(f"{self.path}: at offset {self.offset}: {message}")
