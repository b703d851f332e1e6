"""``lawtap summary``: the first screen an analyst reads about a case.

All numbers come from SQL over the case views (:func:`lawtap.case.connect`), so they agree with
what ``lawtap query`` shows. :func:`summarize` returns them as plain data (tests and other tools
use that) and prints them with rich.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

import duckdb
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from lawtap.case import connect, duckdb_message
from lawtap.errors import LawtapError
from lawtap.sinks import open_case

TOP_N = 10
UNKNOWN = "(unknown)"
# A conn's size on the wire in both directions; missing counters count as 0.
_CONN_BYTES = "coalesce(orig_ip_bytes, 0) + coalesce(resp_ip_bytes, 0)"


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _iso(ts_ns: int | None) -> str | None:
    if ts_ns is None:
        return None
    moment = datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{ts_ns % 1_000_000_000 // 1000:06d}Z"


def _scalars(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    row = con.execute(sql).fetchone()
    assert row is not None  # aggregate queries always return one row
    return tuple(row)


def _time_span(con: duckdb.DuckDBPyConnection) -> tuple[int | None, int | None]:
    """First/last packet time in ns; from conn records when the packet index is empty."""
    first, last = _scalars(con, "SELECT min(ts_ns), max(ts_ns) FROM packets")
    if first is None:
        first, last = _scalars(con, """
            SELECT min(epoch_ns(ts)),
                   max(epoch_ns(ts) + CAST(coalesce(duration, 0) * 1e9 AS BIGINT)) FROM conn""")
    return (None if first is None else int(first)), (None if last is None else int(last))


def _counter(stats: dict[str, Any], key: str, fallback: int) -> int:
    value = stats.get(key)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    return fallback


def _overview(con: duckdb.DuckDBPyConnection, meta: dict[str, Any]) -> dict[str, Any]:
    """Capture totals. Packet/byte totals prefer the run's own counters in case.json, because
    the packet index only lists packets that belong to a flow (ARP etc. are not in it)."""
    indexed_packets, indexed_bytes = _scalars(
        con,
        "SELECT count(*), coalesce(sum(wirelen), 0) FROM "
        "(SELECT frame, any_value(wirelen) AS wirelen FROM packets GROUP BY frame)",
    )
    stats = meta.get("stats") or {}
    first, last = _time_span(con)
    counts = {name: int(_scalars(con, f'SELECT count(*) FROM "{name}"')[0])
              for name in ("conn", "tunnel", "weird")}
    return {
        "packets": _counter(stats, "packets", int(indexed_packets)),
        "bytes": _counter(stats, "bytes", int(indexed_bytes)),
        "indexed_packets": int(indexed_packets),
        "indexed_bytes": int(indexed_bytes),
        "first_ts_ns": first,
        "last_ts_ns": last,
        "first": _iso(first),
        "last": _iso(last),
        "duration_s": None if first is None or last is None else (last - first) / 1e9,
        "connections": counts["conn"],
        "tunnels": counts["tunnel"],
        "weirds": counts["weird"],
        "sources": [dict(s) for s in meta.get("sources") or []],
        "complete": bool(meta.get("complete")),
        "interrupted": bool(meta.get("interrupted")),
    }


def _top_talkers(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Hosts by the IP bytes of every conn they took part in, as originator or responder."""
    return _rows(con, f"""
        WITH c AS (SELECT "id.orig_h" AS o, "id.resp_h" AS r, {_CONN_BYTES} AS b FROM conn),
             h AS (SELECT o AS host, b FROM c UNION ALL SELECT r AS host, b FROM c WHERE r <> o)
        SELECT host, CAST(sum(b) AS BIGINT) AS bytes, count(*) AS conns
        FROM h GROUP BY host ORDER BY bytes DESC, host LIMIT {TOP_N}""")


def _top_services(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _rows(con, f"""
        SELECT coalesce(nullif(service, ''), '{UNKNOWN}') AS service, count(*) AS conns,
               CAST(sum({_CONN_BYTES}) AS BIGINT) AS bytes
        FROM conn GROUP BY 1 ORDER BY conns DESC, bytes DESC, service LIMIT {TOP_N}""")


def _conn_states(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return _rows(con, f"""
        SELECT coalesce(nullif(conn_state, ''), '{UNKNOWN}') AS conn_state, count(*) AS conns
        FROM conn GROUP BY 1 ORDER BY conns DESC, conn_state LIMIT {TOP_N}""")


def _counts_by(con: duckdb.DuckDBPyConnection, view: str, column: str) -> dict[str, int]:
    rows = con.execute(
        f'SELECT "{column}", count(*) AS n FROM "{view}" GROUP BY 1 ORDER BY n DESC, 1'
    ).fetchall()
    return {str(key): int(n) for key, n in rows}


def collect(case_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Every summary number, without printing."""
    case = open_case(case_dir)
    con = connect(case_dir)
    try:
        return {
            "case": str(case.path),
            "overview": _overview(con, case.meta),
            "top_talkers": _top_talkers(con),
            "services": _top_services(con),
            "conn_states": _conn_states(con),
            "tunnels": _counts_by(con, "tunnel", "tunnel_type"),
            "weirds": _counts_by(con, "weird", "name"),
        }
    except duckdb.Error as exc:
        raise LawtapError(f"{case.path}: {duckdb_message(exc)}") from None
    finally:
        con.close()


# --------------------------------------------------------------------------------------------
# Printing


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"  # pragma: no cover - loop always returns


def _overview_panel(ov: dict[str, Any]) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("packets", f"{ov['packets']:,}")
    grid.add_row("bytes", f"{human_bytes(ov['bytes'])} ({ov['bytes']:,})")
    if ov["first"] is not None:
        grid.add_row("time span", f"{ov['first']} .. {ov['last']} ({ov['duration_s']:,.3f} s)")
    grid.add_row("connections", f"{ov['connections']:,}")
    grid.add_row("tunnels", f"{ov['tunnels']:,}")
    grid.add_row("weirds", f"{ov['weirds']:,}")
    for src in ov["sources"]:
        kind = src.get("format", "?") + (" (compressed)" if src.get("compressed") else "")
        grid.add_row(f"source {src.get('file_id')}", f"{src.get('path')}  {kind}, "
                     f"{human_bytes(int(src.get('size') or 0))}")
    if ov["interrupted"]:
        grid.add_row("status", "[yellow]interrupted: records cover only part of the input[/]")
    elif not ov["complete"]:
        grid.add_row("status", "[red]incomplete: the run did not finish[/]")
    return Panel(grid, title="capture", title_align="left")


def _table(title: str, headers: list[str], rows: list[list[Any]]) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row))
    if not rows:
        table.add_row("(none)", *[""] * (len(headers) - 1))
    return table


def render(summary: dict[str, Any]) -> Group:
    """The rich renderable of a summary (exposed so the CLI can print it where it likes)."""
    talkers = [[r["host"], human_bytes(r["bytes"]), r["conns"]] for r in summary["top_talkers"]]
    services = [[r["service"], r["conns"], human_bytes(r["bytes"])] for r in summary["services"]]
    states = [[r["conn_state"], r["conns"]] for r in summary["conn_states"]]
    tunnels = [list(kv) for kv in summary["tunnels"].items()]
    weirds = [list(kv) for kv in summary["weirds"].items()]
    return Group(
        _overview_panel(summary["overview"]),
        _table("top talkers", ["host", "bytes", "conns"], talkers),
        _table("services", ["service", "conns", "bytes"], services),
        _table("connection states", ["conn_state", "conns"], states),
        _table("tunnels", ["tunnel_type", "count"], tunnels),
        _table("anomalies (weird)", ["name", "count"], weirds),
    )


def summarize(case_dir: str | os.PathLike[str], console: Console | None = None) -> dict[str, Any]:
    """Print the case summary on ``console`` (stdout when None) and return its numbers."""
    summary = collect(case_dir)
    (console or Console()).print(render(summary))
    return summary
