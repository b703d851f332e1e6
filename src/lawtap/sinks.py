"""Writing a case directory: one Parquet file (and optionally one Zeek-style JSON log) per type.

Layout of ``CASE_DIR`` (read back by :mod:`lawtap.case`, :mod:`lawtap.summary`,
:mod:`lawtap.export`):

* ``<type>.parquet`` for every type in :data:`lawtap.records.SCHEMAS`, schema exactly
  ``SCHEMAS[type]``. Types that got no rows still get an empty file, so every query view exists.
* ``<type>.log`` JSON lines (one object per row, Zeek field names, timestamps as float epoch
  seconds, nulls omitted) when JSON logs are on.
* ``case.json``: provenance (version, command, sources, stats) and whether the run completed.

Why the care around interruption: analysts stop live captures and long runs with Ctrl-C, and
the evidence gathered up to then must stay readable. Parquet is only readable once its footer
is written, so rows go to ``<type>.parquet.partial`` in whole row groups, SIGINT is held off
while a row group or the closing sequence is being written, and :meth:`CaseWriter.close` (which
callers run in ``finally``) closes every file and renames it into place.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, Union

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lawtap import __version__
from lawtap.errors import LawtapError
from lawtap.records import SCHEMAS
from lawtap.signals import sigint_deferred
from lawtap.threads import lower_priority



class _LazyCompute:
    """``pyarrow.compute``, imported on first use: it takes ~50 ms to import (it builds a Python
    wrapper per compute function), and a flows-only run without ``--json`` never needs it."""

    def __getattr__(self, name: str) -> Any:
        import pyarrow.compute

        globals()["pc"] = pyarrow.compute
        return getattr(pyarrow.compute, name)


pc: Any = _LazyCompute()

CASE_META = "case.json"
PARQUET_COMPRESSION = "zstd"
PARQUET_COMPRESSION_LEVEL = 1  # same size as the default level on our data, noticeably faster
# Per-type Parquet options. The packets index is the largest table (one row per packet): its
# frame numbers, timestamps and offsets only grow, which delta encoding stores in a few bits
# without the (futile) dictionary attempt — half the write time and a third smaller.
WRITER_OPTIONS: dict[str, dict[str, Any]] = {
    "packets": {
        "use_dictionary": False,
        "column_encoding": {"frame": "DELTA_BINARY_PACKED", "ts_ns": "DELTA_BINARY_PACKED", "file_offset": "DELTA_BINARY_PACKED"},
    },
    # Dictionaries only where values repeat: for uids, times and counters the attempt costs a
    # quarter of the write and the file is smaller without it.
    "conn": {
        "use_dictionary": ["id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "conn_state",
                           "history", "tunnel_parents", "vlan", "inner_vlan", "ip_proto", "missed_bytes"],
    },
}
PARTIAL_SUFFIX = ".partial"
# Rows buffered per type before a row group is written: big enough for efficient Parquet and
# vectorised JSON formatting, small enough that memory stays bounded (~tens of MB per type).
DEFAULT_ROW_GROUP_ROWS = 128 * 1024
# ...or this many bytes of Arrow data, whichever comes first: wide records (conn, http, dns)
# then leave in several groups written during the run, instead of one big group written by
# close() while everything else waits.
DEFAULT_ROW_GROUP_BYTES = 8 << 20
MAX_INFLIGHT = 4  # row groups queued for the writer threads before write() waits
SEPARATE_WRITERS = frozenset({"packets"})  # types written by a thread of their own

SourceFormat = Literal["pcap", "pcapng", "live"]
RecordInput = Union[pa.RecordBatch, pa.Table, Mapping[str, Any]]


class RecordSchemaError(ValueError):
    """Rows handed to :meth:`CaseWriter.write` do not fit the record type's schema.

    A programming error in the pipeline, not a user error, so it is not a LawtapError: it should
    surface with a traceback.
    """


@dataclass
class SourceInfo:
    """One input of the run, as recorded in ``case.json`` (export reads packets back from it)."""

    file_id: int
    path: str
    size: int
    format: SourceFormat
    compressed: bool


# --------------------------------------------------------------------------------------------
# Paths and reading case metadata


def parquet_path(case_dir: str | os.PathLike[str], type_name: str) -> Path:
    """Where the Parquet file of ``type_name`` lives in a case."""
    return Path(case_dir) / f"{type_name}.parquet"


def log_path(case_dir: str | os.PathLike[str], type_name: str) -> Path:
    """Where the JSON log of ``type_name`` lives in a case."""
    return Path(case_dir) / f"{type_name}.log"


@dataclass(frozen=True)
class Case:
    """An existing case directory and its ``case.json`` contents."""

    path: Path
    meta: dict[str, Any]

    def parquet(self, type_name: str) -> Path:
        return parquet_path(self.path, type_name)

    def log(self, type_name: str) -> Path:
        return log_path(self.path, type_name)

    @property
    def sources(self) -> list[dict[str, Any]]:
        return list(self.meta.get("sources") or [])

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete"))


def read_case_meta(case_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse ``CASE_DIR/case.json``; a LawtapError naming the directory if it is not a case."""
    root = Path(case_dir)
    if not root.is_dir():
        raise LawtapError(f"{root}: no such case directory")
    meta_file = root / CASE_META
    if not meta_file.is_file():
        raise LawtapError(f"{root}: not a lawtap case directory (no {CASE_META})")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LawtapError(f"{meta_file}: unreadable case metadata: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("sources", []), list):
        raise LawtapError(f"{meta_file}: not lawtap case metadata")
    return meta


def open_case(case_dir: str | os.PathLike[str]) -> Case:
    """Validate ``case_dir`` as a case and return it with its metadata."""
    return Case(Path(case_dir), read_case_meta(case_dir))


# --------------------------------------------------------------------------------------------
# Validating rows against a schema


def _schema_for(type_name: str) -> pa.Schema:
    try:
        return SCHEMAS[type_name]
    except KeyError:
        known = ", ".join(sorted(SCHEMAS))
        raise RecordSchemaError(f"unknown record type {type_name!r} (known: {known})") from None


def _columns_of(data: RecordInput) -> dict[str, Any]:
    """Name -> column for any accepted input shape, rejecting duplicate names."""
    if isinstance(data, (pa.RecordBatch, pa.Table)):
        names = data.schema.names
        if len(set(names)) != len(names):
            raise RecordSchemaError(f"duplicate column names in {names}")
        return {name: data.column(i) for i, name in enumerate(names)}
    if isinstance(data, Mapping):
        return dict(data)
    raise RecordSchemaError(
        f"expected a pyarrow Table/RecordBatch or a dict of columns, got {type(data).__name__}"
    )


def _cast_column(type_name: str, field: pa.Field, value: Any) -> pa.ChunkedArray | pa.Array:
    """Convert one column to ``field.type`` without silent loss.

    Casts are *safe* (overflow raises) except that finer timestamps are truncated to the
    schema's unit, which is intended (the pipeline keeps nanoseconds, logs carry µs). Integers
    are refused for timestamp fields because their unit would be a guess.
    """
    where = f"{type_name}.{field.name}"
    try:
        arr = value if isinstance(value, (pa.Array, pa.ChunkedArray)) else pa.array(value)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise RecordSchemaError(f"{where}: cannot convert to Arrow: {exc}") from None
    if arr.type == field.type:
        return arr
    target = field.type
    if pa.types.is_timestamp(target) and not (
        pa.types.is_timestamp(arr.type) or pa.types.is_null(arr.type)
    ):
        raise RecordSchemaError(
            f"{where}: expected {target}, got {arr.type} (pass timestamps, e.g. "
            "pa.array(ts_ns, pa.timestamp('ns', tz='UTC')), not bare integers)"
        )
    try:
        if pa.types.is_timestamp(target) and pa.types.is_timestamp(arr.type):
            options = pc.CastOptions(target, allow_time_truncate=True)
            return pc.cast(arr, options=options)
        return pc.cast(arr, target, safe=True)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise RecordSchemaError(f"{where}: cannot cast {arr.type} to {target}: {exc}") from None


def conform(type_name: str, data: RecordInput) -> pa.Table:
    """Return ``data`` as a Table with exactly ``SCHEMAS[type_name]``, or raise RecordSchemaError.

    Columns are matched by name (order does not matter); nullable columns may be omitted and
    become all-null; unknown columns, missing required columns, nulls in non-nullable columns
    and lossy casts are errors, so a bad record never reaches the evidence files.
    """
    schema = _schema_for(type_name)
    columns = _columns_of(data)
    extra = sorted(set(columns) - set(schema.names))
    if extra:
        raise RecordSchemaError(f"{type_name}: unknown column(s) {extra}")
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise RecordSchemaError(f"{type_name}: columns have different lengths {sorted(lengths)}")
    n_rows = lengths.pop() if lengths else 0
    arrays = []
    for field in schema:
        if field.name not in columns:
            if not field.nullable:
                raise RecordSchemaError(f"{type_name}: missing required column {field.name!r}")
            arrays.append(pa.nulls(n_rows, field.type))
            continue
        arr = _cast_column(type_name, field, columns[field.name])
        if not field.nullable and arr.null_count:
            raise RecordSchemaError(
                f"{type_name}.{field.name}: {arr.null_count} null(s) in a non-nullable column"
            )
        arrays.append(arr)
    if any(isinstance(a, pa.ChunkedArray) for a in arrays):
        arrays = [a if isinstance(a, pa.ChunkedArray) else pa.chunked_array([a]) for a in arrays]
    return pa.Table.from_arrays(arrays, schema=schema)


# --------------------------------------------------------------------------------------------
# Zeek-style JSON lines
#
# Why not json.dumps per row: building a dict per row runs at ~20K rows/s, far below what the
# pipeline produces. Instead each column is prepared with Arrow/numpy (int64 for integers and
# timestamps, raw UTF-8 for strings, JSON text for floats/lists/the rest) and one numba kernel
# stitches the lines together: it skips nulls, prefixes keys, quotes and escapes strings and
# prints integers and epoch seconds. Measured: ~450K conn rows/s (23 columns) and ~550K
# packets rows/s including the Parquet write, vs ~20K rows/s for json.dumps per row.

_TICKS_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_STRING = pa.string()
# How the kernel emits a column's values: JSON text as is, UTF-8 to quote (no byte needs an
# escape), UTF-8 to quote and escape, int64 printed as a fixed-point decimal (integers with 0
# decimals, timestamps as epoch seconds with the unit's decimals).
_KIND_RAW, _KIND_QUOTE, _KIND_ESCAPE, _KIND_FIXED = 0, 1, 2, 3
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _null_strings(n: int) -> pa.Array:
    return pa.nulls(n, _STRING)


def _json_string_values(arr: pa.Array) -> pa.Array:
    """JSON string literals with Arrow compute (nested values; top-level strings use the kernel)."""
    text = arr.cast(_STRING)
    escaped = pc.replace_substring(pc.replace_substring(text, "\\", "\\\\"), '"', '\\"')
    quoted = pc.binary_join_element_wise('"', escaped, '"', "")
    needs_escape = pc.fill_null(pc.match_substring_regex(text, r"[\x00-\x1f]"), False)
    if pc.any(needs_escape).as_py():
        fixed = [json.dumps(v, ensure_ascii=False) for v in text.filter(needs_escape).to_pylist()]
        quoted = pc.replace_with_mask(quoted, needs_escape, pa.array(fixed, _STRING))
    return quoted


def _json_epoch_values(arr: pa.Array) -> pa.Array:
    """Timestamps/durations as decimal seconds (nested values; top level uses the kernel)."""
    per_second = _TICKS_PER_SECOND[arr.type.unit]
    ticks = arr.cast(pa.int64())
    if per_second == 1:
        return ticks.cast(_STRING)
    magnitude = pc.abs(ticks)
    seconds = pc.divide(magnitude, per_second)
    fraction = pc.subtract(magnitude, pc.multiply(seconds, per_second))
    digits = len(str(per_second)) - 1
    text = pc.binary_join_element_wise(
        seconds.cast(_STRING), pc.utf8_lpad(fraction.cast(_STRING), digits, "0"), "."
    )
    return pc.if_else(pc.less(ticks, 0), pc.binary_join_element_wise("-", text, ""), text)


def _json_list_values(arr: pa.Array) -> pa.Array:
    """Lists as JSON arrays (Zeek writes sets and vectors that way), null elements as null."""
    items = pc.fill_null(_json_values(arr.values), "null")
    joined = pc.binary_join(pa.ListArray.from_arrays(arr.offsets, items), ",")
    wrapped = pc.binary_join_element_wise("[", joined, "]", "")
    return pc.if_else(arr.is_valid(), wrapped, _null_strings(len(arr)))


def _json_fallback_values(arr: pa.Array) -> pa.Array:
    """Per-value json.dumps for types without a vectorised path (structs, maps, binary...)."""

    def default(value: Any) -> Any:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value).decode("utf-8", "backslashreplace")
        return str(value)

    return pa.array(
        [
            None if v is None else json.dumps(v, ensure_ascii=False, default=default)
            for v in arr.to_pylist()
        ],
        _STRING,
    )


def _json_values(arr: pa.Array) -> pa.Array:
    """Each value as JSON text; null where the value is null or not representable (NaN)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _json_values(arr.dictionary_decode())
    if pa.types.is_null(t):
        return _null_strings(len(arr))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _json_string_values(arr)
    if pa.types.is_timestamp(t) or pa.types.is_duration(t):
        return _json_epoch_values(arr)
    if pa.types.is_floating(t):
        return pc.if_else(pc.is_finite(arr), arr.cast(_STRING), _null_strings(len(arr)))
    if pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
        return arr.cast(_STRING)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _json_list_values(arr)
    return _json_fallback_values(arr)


def _escaped_len(text: np.ndarray, start: int, end: int) -> int:
    n = 0
    for j in range(start, end):
        b = text[j]
        if b == 34 or b == 92:
            n += 2
        elif b < 32:
            n += 2 if (b == 8 or b == 9 or b == 10 or b == 12 or b == 13) else 6
        else:
            n += 1
    return n


def _put_escaped(out: np.ndarray, pos: int, text: np.ndarray, start: int, end: int) -> int:
    out[pos] = 34
    pos += 1
    for j in range(start, end):
        b = text[j]
        if b == 34 or b == 92:
            out[pos] = 92
            out[pos + 1] = b
            pos += 2
        elif b >= 32:
            out[pos] = b
            pos += 1
        else:
            out[pos] = 92
            if b == 8:
                out[pos + 1] = 98  # \b
            elif b == 9:
                out[pos + 1] = 116  # \t
            elif b == 10:
                out[pos + 1] = 110  # \n
            elif b == 12:
                out[pos + 1] = 102  # \f
            elif b == 13:
                out[pos + 1] = 114  # \r
            else:
                out[pos + 1] = 117  # \u00XX
                out[pos + 2] = 48
                out[pos + 3] = 48
                out[pos + 4] = _HEX[b >> 4]
                out[pos + 5] = _HEX[b & 15]
                pos += 4
            pos += 2
    out[pos] = 34
    return pos + 1


def _count_digits(v: int) -> int:
    n = 1
    while v >= 10:
        v //= 10
        n += 1
    return n


def _fixed_len(ticks: int, digits: int, per_second: int) -> int:
    """Printed length of ``ticks / per_second`` with ``digits`` decimals."""
    magnitude = -ticks if ticks < 0 else ticks
    n = _count_digits(magnitude // per_second) + (1 if ticks < 0 else 0)
    return n + (digits + 1 if digits > 0 else 0)


def _put_fixed(out: np.ndarray, pos: int, ticks: int, digits: int, per_second: int) -> int:
    """Seconds with exactly ``digits`` decimals (integer maths: no rounding, no exponent)."""
    magnitude = ticks
    if ticks < 0:
        out[pos] = 45
        pos += 1
        magnitude = -ticks
    seconds = magnitude // per_second
    fraction = magnitude - seconds * per_second
    width = _count_digits(seconds)
    for i in range(width - 1, -1, -1):
        out[pos + i] = 48 + seconds % 10
        seconds //= 10
    pos += width
    if digits > 0:
        out[pos] = 46
        pos += 1
        for i in range(digits - 1, -1, -1):
            out[pos + i] = 48 + fraction % 10
            fraction //= 10
        pos += digits
    return pos


def _assemble_lines(kinds: np.ndarray, slots: np.ndarray, digits: np.ndarray,
                    per_second: np.ndarray, keys: np.ndarray, key_offsets: np.ndarray,
                    text: np.ndarray, text_offsets: np.ndarray, ticks: np.ndarray,
                    valid: np.ndarray) -> np.ndarray:
    """Two passes over the rows: measure every line, then write it into one buffer.

    Performance notes, measured: ``text_offsets`` (rows+1 x text columns), ``ticks`` (rows x
    epoch columns) and ``valid`` (rows x columns) are row-major so a row's fields sit together
    in memory (10x faster than one distant array per column); the hot copies are written out
    here rather than in helpers, because every call that passes arrays pays reference-count
    updates (2-10x slower); byte loops beat slice assignment for fields this short.
    """
    n_rows, n_cols = valid.shape
    line_offsets = np.zeros(n_rows + 1, dtype=np.int64)
    for i in range(n_rows):
        # "{" + "}\n" is 3 bytes and f fields need f-1 commas: start at 2, count a comma per
        # field, and give a row with no fields its 3 bytes back with max() below.
        length = 2
        for k in range(n_cols):
            if not valid[i, k]:
                continue
            length += 1 + key_offsets[k + 1] - key_offsets[k]
            kind, slot = kinds[k], slots[k]
            if kind == _KIND_FIXED:
                length += _fixed_len(ticks[i, slot], digits[k], per_second[k])
            elif kind == _KIND_ESCAPE:
                start, end = text_offsets[i, slot], text_offsets[i + 1, slot]
                length += 2 + _escaped_len(text, start, end)
            else:
                length += text_offsets[i + 1, slot] - text_offsets[i, slot]
                length += 2 if kind == _KIND_QUOTE else 0
        line_offsets[i + 1] = line_offsets[i] + max(length, 3)
    out = np.empty(line_offsets[n_rows], dtype=np.uint8)
    for i in range(n_rows):
        pos = line_offsets[i]
        out[pos] = 123  # {
        pos += 1
        first = True
        for k in range(n_cols):
            if not valid[i, k]:
                continue
            if not first:
                out[pos] = 44  # ,
                pos += 1
            first = False
            for j in range(key_offsets[k], key_offsets[k + 1]):
                out[pos] = keys[j]
                pos += 1
            kind, slot = kinds[k], slots[k]
            if kind == _KIND_FIXED:
                pos = _put_fixed(out, pos, ticks[i, slot], digits[k], per_second[k])
                continue
            start, end = text_offsets[i, slot], text_offsets[i + 1, slot]
            if kind == _KIND_ESCAPE:
                pos = _put_escaped(out, pos, text, start, end)
                continue
            if kind == _KIND_QUOTE:
                out[pos] = 34
                pos += 1
            for j in range(start, end):
                out[pos] = text[j]
                pos += 1
            if kind == _KIND_QUOTE:
                out[pos] = 34
                pos += 1
        out[pos] = 125  # }
        out[pos + 1] = 10  # \n
    return out


_JIT_HELPERS = ("_escaped_len", "_put_escaped", "_count_digits", "_fixed_len", "_put_fixed")


@functools.cache
def _line_kernel() -> Callable[..., np.ndarray]:
    """Compile the line assembler on first use (numba caches the machine code on disk).

    Why lazily: importing numba costs ~0.25 s that ``lawtap query``, ``summary`` and
    ``export`` (which import this module for :func:`open_case`) never need. The helpers are
    swapped for their jitted versions in the module namespace first, because numba resolves
    the kernel's calls through these globals when it compiles.
    """
    import numba

    jit = numba.njit(cache=True, nogil=True)
    namespace = globals()
    for name in _JIT_HELPERS:
        namespace[name] = jit(namespace[name])
    return jit(_assemble_lines)  # type: ignore[no-any-return]


def _string_payload(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """A string array's offsets (rebased to 0, int64) and the UTF-8 bytes they index."""
    if pa.types.is_large_string(arr.type):
        offset_dtype: type[np.integer[Any]] = np.int64
    else:
        arr = arr.cast(_STRING)
        offset_dtype = np.int32
    _, offsets_buf, data_buf = arr.buffers()
    n = len(arr)
    offsets = np.frombuffer(offsets_buf, dtype=offset_dtype)[arr.offset : arr.offset + n + 1]
    offsets = offsets.astype(np.int64)
    data = np.empty(0, np.uint8) if data_buf is None else np.frombuffer(data_buf, dtype=np.uint8)
    start, end = int(offsets[0]), int(offsets[-1])
    return offsets - start, data[start:end]


def _valid_mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)


@dataclass
class _ColumnPlan:
    """What the kernel needs for one column: its kind, validity and either text or ticks."""

    kind: int
    valid: np.ndarray
    digits: int = 0
    offsets: np.ndarray | None = None  # int64, n+1, rebased to 0
    data: np.ndarray | None = None  # uint8 text the offsets index
    ticks: np.ndarray | None = None  # int64, n


_INT64_MIN = -(2**63)


def _fixed_ticks(arr: pa.Array) -> np.ndarray | None:
    """Integer-like values as int64 for the kernel, or None when they do not fit.

    uint64 above 2**63-1 and int64's minimum (whose magnitude overflows) take the text path.
    """
    if pa.types.is_uint64(arr.type):
        top = pc.max(arr).as_py()
        if top is not None and top > 2**63 - 1:
            return None
    ticks = arr.cast(pa.int64())
    if pa.types.is_int64(ticks.type) and pc.min(ticks).as_py() == _INT64_MIN:
        return None
    return pc.fill_null(ticks, 0).to_numpy().astype(np.int64, copy=False)


def _column_plan(arr: pa.Array) -> _ColumnPlan:
    """How the kernel emits one top-level column (vectorised preparation, no per-row Python)."""
    t = arr.type
    if pa.types.is_dictionary(t):
        return _column_plan(arr.dictionary_decode())
    if pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_integer(t):
        per_second = _TICKS_PER_SECOND[t.unit] if not pa.types.is_integer(t) else 1
        ticks = _fixed_ticks(arr)
        if ticks is not None:
            digits = len(str(per_second)) - 1
            return _ColumnPlan(_KIND_FIXED, _valid_mask(arr), digits=digits, ticks=ticks)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        offsets, data = _string_payload(arr)
        special = (data < 32) | (data == 34) | (data == 92)  # control, '"', '\\'
        kind = _KIND_ESCAPE if special.any() else _KIND_QUOTE
        return _ColumnPlan(kind, _valid_mask(arr), offsets=offsets, data=data)
    text = _json_values(arr)
    offsets, data = _string_payload(text)
    return _ColumnPlan(_KIND_RAW, _valid_mask(text), offsets=offsets, data=data)


def _row_major(columns: list[np.ndarray], n: int, dtype: type[np.generic]) -> np.ndarray:
    """Columns side by side as an (n, len(columns)) C-contiguous array (see _assemble_lines)."""
    out = np.empty((n, len(columns)), dtype=dtype)
    for k, column in enumerate(columns):
        out[:, k] = column
    return out


def format_json_lines(table: pa.Table) -> np.ndarray:
    """All rows as Zeek-style JSON lines in one ``uint8`` buffer (each line ends in ``\\n``).

    Keys are the field names in schema order (``"id.orig_h"``), null fields are omitted,
    timestamps are epoch seconds with the unit's decimals (``1700000000.123456``), lists are
    JSON arrays and NaN/inf floats are omitted (JSON cannot express them).
    """
    n_rows = table.num_rows
    if n_rows == 0:
        return np.empty(0, dtype=np.uint8)
    plans = [_column_plan(column.combine_chunks()) for column in table.columns]
    texts: list[np.ndarray] = []
    text_offsets: list[np.ndarray] = []
    ticks: list[np.ndarray] = []
    slots: list[int] = []
    base = 0
    for plan in plans:
        if plan.ticks is not None:
            slots.append(len(ticks))
            ticks.append(plan.ticks)
        else:
            assert plan.offsets is not None and plan.data is not None
            slots.append(len(text_offsets))
            text_offsets.append(plan.offsets + base)
            texts.append(plan.data)
            base += len(plan.data)
    keys = [(json.dumps(name, ensure_ascii=False) + ":").encode() for name in table.schema.names]
    return _line_kernel()(
        np.array([p.kind for p in plans], dtype=np.int64),
        np.array(slots, dtype=np.int64),
        np.array([p.digits for p in plans], dtype=np.int64),
        np.array([10**p.digits for p in plans], dtype=np.int64),
        np.frombuffer(b"".join(keys), dtype=np.uint8),
        np.cumsum([0] + [len(k) for k in keys], dtype=np.int64),
        np.concatenate(texts) if texts else np.empty(0, np.uint8),
        _row_major(text_offsets, n_rows + 1, np.int64),
        _row_major(ticks, n_rows, np.int64),
        _row_major([p.valid for p in plans], n_rows, np.bool_),
    )


def json_lines(table: pa.Table) -> list[str]:
    """The JSON lines of ``table`` as Python strings (without newlines); for tests and tools."""
    # Split on "\n" only: str.splitlines would also split on U+2028 etc., valid inside strings.
    return format_json_lines(table).tobytes().decode("utf-8").split("\n")[:-1]


# --------------------------------------------------------------------------------------------
# Holding off Ctrl-C while files are in a half-written state


# --------------------------------------------------------------------------------------------
# The writer


def _json_default(value: Any) -> Any:
    """Let stats carry numpy scalars, paths and sets without the caller converting them; any
    other object is stored as its str() rather than losing case.json over a counter."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write a file so readers see either the old or the new contents, never a torn file."""
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    with open(tmp, "wb") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _write_empty_parquet(path: Path, schema: pa.Schema) -> None:
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    # ParquetWriter, not write_table: write_table imports pandas (0.3 s) whenever it is installed.
    pq.ParquetWriter(tmp, schema, compression=PARQUET_COMPRESSION, compression_level=PARQUET_COMPRESSION_LEVEL).close()
    os.replace(tmp, path)


def _as_source(item: SourceInfo | Mapping[str, Any], file_id: int) -> SourceInfo:
    if isinstance(item, SourceInfo):
        return item
    return SourceInfo(
        file_id=int(item.get("file_id", file_id)),
        path=str(item["path"]),
        size=int(item.get("size", 0)),
        format=item["format"],
        compressed=bool(item.get("compressed", False)),
    )


class CaseWriter:
    """Appends records to a case directory; :meth:`close` must run (use ``finally`` or ``with``).

    ``write`` validates immediately (bad rows raise at the call site) but buffers rows per type
    and writes whole row groups of ``row_group_rows`` rows or ``row_group_bytes`` bytes,
    whichever is fewer, which keeps Parquet efficient when the pipeline hands over many small
    batches. ``flush`` (and ``close``) also write the last, partial group.
    """

    def __init__(
        self,
        case_dir: str | os.PathLike[str],
        json_logs: bool = False,
        *,
        sources: Sequence[SourceInfo | Mapping[str, Any]] = (),
        command: Sequence[str] | None = None,
        overwrite: bool = False,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    ) -> None:
        self.case_dir = Path(case_dir)
        self.json_logs = json_logs
        self.row_group_rows = max(1, int(row_group_rows))
        self.row_group_bytes = max(1, int(row_group_bytes))
        self.command = list(sys.argv if command is None else command)
        self.created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.sources: list[SourceInfo] = [_as_source(s, i) for i, s in enumerate(sources)]
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered_rows: dict[str, int] = {}
        self._buffered_bytes: dict[str, int] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._logs: dict[str, BinaryIO] = {}
        self._rows: dict[str, int] = {}  # rows accepted per type (types never written: absent)
        self._empty_written: set[str] = set()
        self._closed = False
        # Row groups are encoded and written by background threads (Parquet encoding and
        # compression release the GIL, so they overlap with the next batches' analysis); at most
        # MAX_INFLIGHT groups wait, which bounds memory. The packets index (by far the largest
        # table) has a thread of its own, every other type shares a second one, so the two
        # catch up side by side when the run ends. Each type always goes to the same single
        # thread, which keeps its row groups in order.
        self._pools: dict[bool, ThreadPoolExecutor] = {}
        self._inflight: deque[Future] = deque()
        self.stats: dict[str, Any] = {}  # counters for case.json when close() gets none
        self._prepare_dir(overwrite)
        # An incomplete case.json from the start marks a crashed run for what it is.
        self._write_meta(stats={}, complete=False, interrupted=False, final=False)
        # Every type gets a file even without rows (so every query view exists). Writing the
        # empty ones needs the whole schema registry, whose analyzer modules take ~0.1 s to
        # import: done by the writer thread now, not by close() at the end.
        self._inflight.append(self._pool_for("").submit(self._write_empty_types, True))

    # -- setup -------------------------------------------------------------------------------

    def _owned_files(self) -> list[Path]:
        """Files of an earlier case here: case.json, record files and interrupted partials."""
        patterns = ("*.parquet", "*.log", f"*.parquet{PARTIAL_SUFFIX}", f"*.log{PARTIAL_SUFFIX}")
        found = [self.case_dir / CASE_META] if (self.case_dir / CASE_META).exists() else []
        for pattern in patterns:
            found += sorted(p for p in self.case_dir.glob(pattern) if p.is_file())
        return found

    def _prepare_dir(self, overwrite: bool) -> None:
        """Create the directory; refuse to mix with an earlier case unless told to replace it."""
        if self.case_dir.exists() and not self.case_dir.is_dir():
            raise LawtapError(f"{self.case_dir}: exists and is not a directory")
        self.case_dir.mkdir(parents=True, exist_ok=True)
        owned = self._owned_files()
        existing = [p for p in owned if not p.name.endswith(PARTIAL_SUFFIX)]
        if existing and not overwrite:
            raise LawtapError(
                f"{self.case_dir}: already holds case files ({existing[0].name}, ...); "
                "use a new directory or overwrite"
            )
        for path in owned:
            path.unlink()

    def add_source(
        self,
        path: str | os.PathLike[str],
        format: SourceFormat,
        compressed: bool = False,
        size: int | None = None,
    ) -> int:
        """Record an input and return its ``file_id`` (its index, as in ``PacketBatch.file_id``)."""
        file_id = len(self.sources)
        if format == "live":
            where, nbytes = str(path), int(size or 0)
        else:
            resolved = Path(path).resolve()
            where = str(resolved)
            nbytes = int(size if size is not None else resolved.stat().st_size)
        self.sources.append(SourceInfo(file_id, where, nbytes, format, bool(compressed)))
        return file_id

    # -- writing -----------------------------------------------------------------------------

    @property
    def rows(self) -> dict[str, int]:
        """Rows accepted so far per type (including rows still buffered)."""
        return dict(self._rows)

    def write(self, type_name: str, data: RecordInput) -> None:
        """Validate ``data`` against ``SCHEMAS[type_name]`` and queue it for the case files."""
        if self._closed:
            raise RuntimeError("CaseWriter is closed")
        table = conform(type_name, data)
        if table.num_rows == 0:
            return
        self._buffers.setdefault(type_name, []).append(table)
        self._rows[type_name] = self._rows.get(type_name, 0) + table.num_rows
        self._buffered_rows[type_name] = self._buffered_rows.get(type_name, 0) + table.num_rows
        self._buffered_bytes[type_name] = self._buffered_bytes.get(type_name, 0) + table.nbytes
        if self._buffered_rows[type_name] >= self.row_group_rows or self._buffered_bytes[type_name] >= self.row_group_bytes:
            self._flush_type(type_name, whole_groups_only=True)

    def flush(self, wait: bool = True) -> None:
        """Write every buffered row now (e.g. periodically during a live capture); without
        ``wait``, only hand them to the writer threads."""
        for type_name in list(self._buffers):
            self._flush_type(type_name)
        self._reap(wait_all=wait)

    def _flush_type(self, type_name: str, whole_groups_only: bool = False) -> None:
        """Write buffered rows as row groups (the rows of a last, partial group stay buffered
        when ``whole_groups_only``).

        Rows leave the buffer in the same SIGINT-deferred block that writes them, so whenever
        Ctrl-C lands, every row is either in the files or still buffered for close(): never
        lost, never written twice.
        """
        tables = self._buffers.get(type_name)
        if not tables:
            return
        pending = pa.concat_tables(tables)
        row_bytes = max(pending.nbytes / max(pending.num_rows, 1), 1.0)
        group_rows = max(1, min(self.row_group_rows, int(self.row_group_bytes / row_bytes)))
        while pending.num_rows and (pending.num_rows >= group_rows or not whole_groups_only):
            group = pending.slice(0, group_rows)
            lines = format_json_lines(group) if self.json_logs else None  # before any file
            with sigint_deferred():
                self._submit(type_name, group, lines)
                pending = pending.slice(group.num_rows)
                self._buffers[type_name] = [pending] if pending.num_rows else []
                self._buffered_rows[type_name] = pending.num_rows
                self._buffered_bytes[type_name] = pending.nbytes if pending.num_rows else 0

    def _submit(self, type_name: str, group: pa.Table, lines: np.ndarray | None) -> None:
        """Hand a row group to the writer thread (a failed earlier write raises here)."""
        self._reap(wait_for_room=True)
        self._inflight.append(self._pool_for(type_name).submit(self._append_row_group, type_name, group, lines))

    def _pool_for(self, type_name: str) -> ThreadPoolExecutor:
        """The writer thread of a type (one per lane, started on first use)."""
        lane = type_name in SEPARATE_WRITERS
        pool = self._pools.get(lane)
        if pool is None:
            pool = self._pools[lane] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lawtap-writer",
                                                          initializer=lower_priority)
        return pool

    def _reap(self, wait_for_room: bool = False, wait_all: bool = False) -> None:
        inflight = self._inflight
        while inflight and (inflight[0].done() or wait_all or (wait_for_room and len(inflight) >= MAX_INFLIGHT)):
            inflight.popleft().result()

    def _append_row_group(self, type_name: str, group: pa.Table, lines: np.ndarray | None) -> None:
        writer = self._writers.get(type_name)
        if writer is None:
            partial = self.case_dir / f"{type_name}.parquet{PARTIAL_SUFFIX}"
            writer = pq.ParquetWriter(partial, SCHEMAS[type_name], compression=PARQUET_COMPRESSION,
                                      compression_level=PARQUET_COMPRESSION_LEVEL, **WRITER_OPTIONS.get(type_name, {}))
            self._writers[type_name] = writer
        writer.write_table(group, row_group_size=max(1, group.num_rows))
        if lines is not None:
            fh = self._logs.get(type_name)
            if fh is None:
                fh = open(log_path(self.case_dir, type_name), "wb")  # noqa: SIM115
                self._logs[type_name] = fh
            fh.write(memoryview(lines))

    # -- closing -----------------------------------------------------------------------------

    def close(
        self,
        stats: Mapping[str, Any] | None = None,
        interrupted: bool = False,
        *,
        complete: bool | None = None,
    ) -> None:
        """Finish every file and write ``case.json``. Idempotent; safe to call from ``finally``.

        Buffered rows are still written when ``interrupted`` (they are whole records). Every
        step is attempted even if an earlier one fails; the first failure is re-raised at the
        end. ``complete`` defaults to "not interrupted and nothing failed".
        """
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        with sigint_deferred():
            for step in (self._flush_all_quietly, self._wait_for_writes, self._finish_parquet, self._finish_logs):
                errors.extend(step())
            errors.extend(self._write_empty_types())
            done = (not interrupted and not errors) if complete is None else complete
            try:
                chosen = self.stats if stats is None else stats
                self._write_meta(dict(chosen), complete=done, interrupted=interrupted)
            except Exception as exc:  # noqa: BLE001 - collected, re-raised below
                errors.append(exc)
        if errors:
            raise errors[0]

    def _flush_all_quietly(self) -> list[BaseException]:
        errors: list[BaseException] = []
        for type_name in list(self._buffers):
            try:
                self._flush_type(type_name)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        return errors

    def _wait_for_writes(self) -> list[BaseException]:
        """Every submitted row group is written (or its error collected) before files close."""
        errors: list[BaseException] = []
        while self._inflight:
            try:
                self._inflight.popleft().result()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools.clear()
        return errors

    def _finish_parquet(self) -> list[BaseException]:
        errors: list[BaseException] = []
        for type_name, writer in self._writers.items():
            try:
                writer.close()
                partial = self.case_dir / f"{type_name}.parquet{PARTIAL_SUFFIX}"
                os.replace(partial, parquet_path(self.case_dir, type_name))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        return errors

    def _finish_logs(self) -> list[BaseException]:
        errors: list[BaseException] = []
        for fh in self._logs.values():
            try:
                fh.close()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
        return errors

    def _write_empty_types(self, early: bool = False) -> list[BaseException]:
        """Give every type without rows an empty file, so ``lawtap query`` views always exist.

        Runs twice: ``early`` in the writer thread when the case opens (errors then surface
        at close), and in close() for what is still missing. A type that gets rows later
        replaces its empty file with the real one when it closes.
        """
        errors: list[BaseException] = []
        for type_name, schema in SCHEMAS.items():
            if type_name in self._writers or type_name in self._empty_written:
                continue
            try:
                _write_empty_parquet(parquet_path(self.case_dir, type_name), schema)
                self._empty_written.add(type_name)
            except Exception as exc:  # noqa: BLE001
                if early:
                    raise
                errors.append(exc)
        return errors

    def _write_meta(self, stats: dict[str, Any], *, complete: bool, interrupted: bool, final: bool = True) -> None:
        meta = {
            "lawtap_version": __version__,
            "created": self.created,
            "command": self.command,
            "sources": [asdict(s) for s in self.sources],
            "stats": stats,
            "complete": bool(complete),
            "interrupted": bool(interrupted),
            # Every type once the case closes; only those with rows so far in the first version.
            "records": {name: self._rows.get(name, 0) for name in SCHEMAS} if final else dict(self._rows),
        }
        payload = json.dumps(meta, indent=2, default=_json_default) + "\n"
        _atomic_write_bytes(self.case_dir / CASE_META, payload.encode("utf-8"))

    # -- context manager ---------------------------------------------------------------------

    def __enter__(self) -> CaseWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        self.close(None, interrupted=interrupted, complete=exc_type is None)
