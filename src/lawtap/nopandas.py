"""An import hook that keeps pandas out of lawtap's own processes.

Why: pyarrow imports pandas (~0.3 s) on its first array conversion whenever pandas is
installed, and no lawtap command uses pandas; pyarrow treats the ImportError as "no pandas".
A module of its own, so that the lane's process installs it without importing the CLI (click).
"""

from __future__ import annotations

import sys


class NoPandas:
    """Meta-path finder that makes ``import pandas`` fail."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not used by the lawtap command", name=name)


def keep_pandas_out() -> None:
    """Install :class:`NoPandas` unless pandas is already imported (e.g. by a host program)."""
    if "pandas" not in sys.modules and not any(isinstance(f, NoPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, NoPandas())
