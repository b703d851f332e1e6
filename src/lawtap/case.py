"""Querying a case directory with SQL (``lawtap query``).

Every record type is a DuckDB view over its Parquet file, named after the type and holding
Zeek's field names, so ``SELECT "id.orig_h", count(*) FROM conn GROUP BY 1`` works as analysts
expect. Views are created for every type in :data:`lawtap.records.SCHEMAS` even when a case
predates that type (an empty view with the current schema), so queries written for newer
cases still run on older ones.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal, TextIO

import duckdb
import pyarrow as pa
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from lawtap.errors import LawtapError
from lawtap.records import SCHEMAS
from lawtap.sinks import Case, open_case

OutputFormat = Literal["table", "csv", "json"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("table", "csv", "json")
_RESULT_VIEW = "__lawtap_result"
_PLAIN_WIDTH = 100_000  # no wrapping when piped: the table is as wide as its content
_NULL_CELL = "-"  # Zeek's marker for an unset field


def quote_ident(name: str) -> str:
    """SQL identifier quoting, so names like ``id.orig_h`` or odd file names are safe."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_message(exc: BaseException) -> str:
    """DuckDB's error as one line: the message without its caret diagram.

    DuckDB messages look like ``Parser Error: ...\\n\\nLINE 1: ...\\n   ^`` or
    ``Catalog Error: ...\\nDid you mean "conn"?``; the hint is kept, the diagram dropped.
    """
    lines: list[str] = []
    for line in str(exc).splitlines():
        if not line.strip():
            if lines:
                break
            continue
        if line.startswith("LINE "):
            break
        lines.append(line.strip())
    return " ".join(lines) or type(exc).__name__


def _view_names(case: Case) -> list[str]:
    """Types from SCHEMAS first, then any other Parquet file in the case (newer writers)."""
    names = list(SCHEMAS)
    extra = sorted(p.stem for p in case.path.glob("*.parquet") if p.stem not in SCHEMAS)
    return names + extra


def _create_view(con: duckdb.DuckDBPyConnection, case: Case, name: str) -> None:
    path = case.parquet(name)
    if path.exists():
        source = f"read_parquet({quote_literal(str(path))})"
        sql = f"CREATE VIEW {quote_ident(name)} AS SELECT * FROM {source}"
        try:
            con.execute(sql)
        except duckdb.Error as exc:
            raise LawtapError(f"{path}: unreadable: {duckdb_message(exc)}") from None
    elif name in SCHEMAS:
        con.register(name, SCHEMAS[name].empty_table())


def connect(case_dir: str | os.PathLike[str]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per record type of the case.

    Times are shown in UTC so every analyst sees the same values regardless of locale.
    """
    case = open_case(case_dir)
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        for name in _view_names(case):
            _create_view(con, case, name)
    except BaseException:
        con.close()
        raise
    return con


# --------------------------------------------------------------------------------------------
# Output


def _cell(value: Any) -> str:
    """Display text of one value; deliberately simple, the csv/json formats are for machines."""
    if value is None:
        return _NULL_CELL
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="microseconds")  # fixed width: columns align
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _is_numeric(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def print_table(table: pa.Table, out: TextIO) -> None:
    """Print with rich: boxed and coloured on a terminal, plain aligned columns when piped."""
    console = Console(file=out, highlight=False, markup=False, emoji=False)
    plain = not console.is_terminal
    if plain:
        console = Console(
            file=out, highlight=False, markup=False, emoji=False,
            color_system=None, width=_PLAIN_WIDTH, soft_wrap=True,
        )
    grid = Table(
        box=None if plain else box.SIMPLE_HEAVY,
        show_edge=not plain,
        pad_edge=not plain,
        header_style="" if plain else "bold",
    )
    for field in table.schema:
        grid.add_column(field.name, justify="right" if _is_numeric(field.type) else "left",
                        no_wrap=plain, overflow="fold")
    for row in zip(*(col.to_pylist() for col in table.columns)):
        grid.add_row(*(Text(_cell(v)) for v in row))
    if plain:
        with console.capture() as captured:
            console.print(grid)
        out.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    else:
        console.print(grid)
        console.print(f"{table.num_rows} row{'s' if table.num_rows != 1 else ''}", style="dim")


def _copy_file(path: Path, out: TextIO) -> None:
    """Stream a result file to ``out``: bytes straight to the buffer when it has one."""
    buffer = getattr(out, "buffer", None)
    with open(path, "rb") as fh:
        if buffer is not None:
            out.flush()
            shutil.copyfileobj(fh, buffer)
            buffer.flush()
            return
        while chunk := fh.read(1 << 20):
            out.write(chunk.decode("utf-8"))


def _copy_result(con: duckdb.DuckDBPyConnection, fmt: OutputFormat, out: TextIO) -> None:
    """CSV/JSON lines written by DuckDB itself (handles every type, lists included)."""
    options = "FORMAT CSV, HEADER" if fmt == "csv" else "FORMAT JSON"
    with tempfile.TemporaryDirectory(prefix="lawtap-query-") as tmp:
        path = Path(tmp) / f"result.{fmt}"
        target = quote_literal(str(path))
        con.execute(f"COPY (SELECT * FROM {quote_ident(_RESULT_VIEW)}) TO {target} ({options})")
        _copy_file(path, out)


def run_query(
    case_dir: str | os.PathLike[str],
    sql: str,
    fmt: OutputFormat = "table",
    out: TextIO | None = None,
) -> None:
    """Run ``sql`` against the case and print the result of its last statement.

    ``out`` defaults to the current ``sys.stdout`` (looked up at call time, so redirection and
    test capture work). SQL errors become a one-line LawtapError.
    """
    if fmt not in OUTPUT_FORMATS:
        choices = ", ".join(OUTPUT_FORMATS)
        raise LawtapError(f"unknown output format {fmt!r} (choose from {choices})")
    stream = sys.stdout if out is None else out
    con = connect(case_dir)
    try:
        result = con.sql(sql)
        if result is None or not result.columns:
            return
        if fmt == "table":
            print_table(result.to_arrow_table(), stream)
            return
        con.register(_RESULT_VIEW, result)
        _copy_result(con, fmt, stream)
    except duckdb.Error as exc:
        raise LawtapError(duckdb_message(exc)) from None
    finally:
        con.close()


def query_table(case_dir: str | os.PathLike[str], sql: str) -> pa.Table:
    """The result of ``sql`` as an Arrow table (for callers that compute rather than print)."""
    con = connect(case_dir)
    try:
        result = con.sql(sql)
        return result.to_arrow_table() if result is not None else pa.table({})
    except duckdb.Error as exc:
        raise LawtapError(duckdb_message(exc)) from None
    finally:
        con.close()


__all__ = [
    "OUTPUT_FORMATS",
    "OutputFormat",
    "connect",
    "duckdb_message",
    "print_table",
    "query_table",
    "quote_ident",
    "quote_literal",
    "run_query",
]
