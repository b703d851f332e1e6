"""``lawtap audit ...``: verify the chain, oversight report, and the tail of the log.

``verify`` exits 0 when the log is intact and 1 when it found tampering (each finding on its
own line, naming the entry and the kind); errors (no key, no database) exit 2 through
``lawtap.cli.main`` like every other lawtap error.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import click

from lawtap.errors import LawtapError
from lawtap.intercept.audit import AuditLog, format_ts

__all__ = ["group", "parse_when"]

EXIT_TAMPERED = 1


def parse_when(text: str, name: str) -> datetime:
    """``2024-05-01`` (midnight UTC), ``2024-05-01T12:00`` (UTC) or with an explicit zone."""
    t = text.strip()
    if t.endswith(("Z", "z")):
        t = t[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        try:
            d = date.fromisoformat(t)
        except ValueError:
            raise LawtapError(f"{name} {text!r}: expected a date or ISO-8601 time (2024-05-01T00:00:00Z)") from None
        dt = datetime(d.year, d.month, d.day)
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _log(ctx: click.Context) -> AuditLog:
    return AuditLog(ctx.obj.get("db") if ctx.obj else None)


@click.group("audit")
@click.option("--db", "db_url", metavar="URL",
              help="Database URL (default: $LAWTAP_DB_URL or <LAWTAP_HOME>/lawtap.db).")
@click.pass_context
def group(ctx: click.Context, db_url: str | None) -> None:
    """The audit trail: hash-chained, HMAC-sealed record of every accountable action."""
    ctx.ensure_object(dict)
    ctx.obj["db"] = db_url


@group.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Findings as JSON.")
@click.pass_context
def verify(ctx: click.Context, as_json: bool) -> None:
    """Check every entry, the chain and the anchor; exit 1 on any tampering."""
    log = _log(ctx)
    findings = log.verify()
    head = log.head()
    if as_json:
        click.echo(json.dumps({"ok": not findings, "entries": log.count(),
                               "head": {"seq": head.seq, "hash": head.entry_hash} if head else None,
                               "findings": [f.to_dict() for f in findings]}, indent=1))
    else:
        for f in findings:
            click.echo(str(f))
        if not findings:
            where = f"head seq {head.seq} {head.entry_hash}" if head else "empty"
            click.echo(f"audit log OK: {log.count()} entries, {where}")
        else:
            click.echo(f"audit log TAMPERED: {len(findings)} finding(s)", err=True)
    if findings:
        ctx.exit(EXIT_TAMPERED)


@group.command("report")
@click.option("--from", "start", required=True, metavar="WHEN", help="Start (inclusive), e.g. 2024-01-01.")
@click.option("--to", "end", required=True, metavar="WHEN", help="End (exclusive), e.g. 2024-07-01.")
@click.option("--json", "as_json", is_flag=True, help="Report as JSON.")
@click.pass_context
def report(ctx: click.Context, start: str, end: str, as_json: bool) -> None:
    """Oversight summary: warrants by authority, targets by kind, deliveries, violations."""
    r = _log(ctx).report(parse_when(start, "--from"), parse_when(end, "--to"))
    if as_json:
        click.echo(json.dumps(r.to_dict(), indent=1, ensure_ascii=False))
    else:
        click.echo(r.to_text())


@group.command("log")
@click.option("-n", "--lines", "count", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the newest entries.")
@click.option("--action", help="Only entries with this action.")
@click.option("--object", "obj", metavar="LIID", help="Only entries about this object.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def log_(ctx: click.Context, count: int, action: str | None, obj: str | None, as_json: bool) -> None:
    """Show the newest entries (oldest first)."""
    for e in _log(ctx).entries(action=action, obj=obj, last=count):
        if as_json:
            click.echo(json.dumps(e.to_dict(), ensure_ascii=False))
        else:
            details = json.dumps(e.details, ensure_ascii=False, sort_keys=True) if e.details else ""
            click.echo(f"{e.seq:>6}  {format_ts(e.ts)}  {e.actor}  {e.action}  {e.object or '-'}  {details}".rstrip())
