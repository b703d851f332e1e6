"""``njit`` that imports numba only when a kernel is first called.

Why: importing numba and loading cached kernels costs about a second, which every command
paid even when it decodes nothing (``--help``, an empty capture, a query). A stub first asks
:mod:`lawtap.aot` for an ahead-of-time compiled copy of its kernel (the packet path), which
needs no numba at all. Kernels decorated
with :func:`njit` stay plain Python functions wrapped in a :class:`_Lazy` stub until one of
them is called; then numba is imported and *every* registered function is swapped, in the
namespace of each module that defined or imported it, for its numba dispatcher — numba
resolves the globals a kernel calls when it compiles, so they must be real dispatchers by then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_registry: list[tuple[dict[str, Any], str, Callable[..., Any], dict[str, Any]]] = []
_compiled: dict[int, Any] = {}  # id(python function) -> dispatcher
_numba: Any = None


_UNSET = object()


class _Lazy:
    """Stands in for a kernel until numba is loaded."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.py_func = fn
        self._compiled: Any = _UNSET  # its ahead-of-time copy (lawtap.aot), looked up on first call
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__wrapped__ = fn

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        compiled = self._compiled
        if compiled is _UNSET:
            from lawtap.aot import lookup

            compiled = self._compiled = lookup(self.py_func.__module__, self.py_func.__name__)
        if compiled is not None and not kwargs and compiled.accepts(args):
            return compiled.fn(*args)
        return materialize(id(self.py_func))(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<lazy kernel {self.py_func.__module__}.{self.py_func.__name__}>"


def njit(*dargs: Any, **options: Any) -> Any:
    """Drop-in for ``numba.njit`` (with or without options)."""
    if dargs and callable(dargs[0]) and not options:
        return njit()(dargs[0])

    def deco(fn: Callable[..., Any]) -> Any:
        if _numba is not None:
            d = _numba.njit(**options)(fn)
            _compiled[id(fn)] = d
            return d
        _registry.append((fn.__globals__, fn.__name__, fn, options))
        return _Lazy(fn)

    return deco


def materialize(key: int | None = None) -> Any:
    """Import numba, turn every registered kernel into a dispatcher; return the one asked for."""
    global _numba
    if _numba is None:
        import sys

        import numba

        _numba = numba
        for _globals, _name, fn, options in _registry:
            _compiled[id(fn)] = numba.njit(**options)(fn)
        # Replace the stubs wherever they are bound at module level (defining modules and
        # modules that imported them by name).
        for mod in list(sys.modules.values()):
            if mod is None:
                continue
            name = getattr(mod, "__name__", "")
            if not name.startswith("lawtap") and mod.__dict__.get("__name__") != "__main__":
                if not name.startswith("tests") and not name.startswith("test_"):
                    continue
            g = mod.__dict__
            for attr, value in list(g.items()):
                if isinstance(value, _Lazy):
                    g[attr] = _compiled[id(value.py_func)]
        _registry.clear()
    return _compiled.get(key) if key is not None else None
