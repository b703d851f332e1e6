"""``lawtap warrant ...``: create, approve, revoke, list and show warrants.

Thin on purpose: every rule (second-person approval, terminal states, expiry, validation)
lives in :class:`lawtap.intercept.warrants.WarrantStore`, so X1 and the CLI cannot disagree.
Errors are :class:`~lawtap.errors.LawtapError`; ``lawtap.cli.main`` prints them as one line.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import click

from lawtap.intercept.warrants import STATES, Warrant, WarrantStore, default_user

__all__ = ["group"]


def _store(ctx: click.Context) -> WarrantStore:
    return WarrantStore(ctx.obj.get("db") if ctx.obj else None)


def _t(dt: datetime | None) -> str:
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if dt is not None else "-"


@click.group("warrant")
@click.option("--db", "db_url", metavar="URL",
              help="Database URL (default: $LAWTAP_DB_URL or <LAWTAP_HOME>/lawtap.db).")
@click.pass_context
def group(ctx: click.Context, db_url: str | None) -> None:
    """Warrants: create (draft), approve (by a second person), revoke, list, show.

    A warrant intercepts only while approved and inside its validity window; revoked and
    expired are final. Every action is written to the audit trail.
    """
    ctx.ensure_object(dict)
    ctx.obj["db"] = db_url


@group.command("create")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--user", "-u", required=True, help="Who is creating it (recorded in the audit trail).")
@click.pass_context
def create(ctx: click.Context, file: Path, user: str) -> None:
    """Create a draft warrant from a YAML FILE (format: docs/warrants.md)."""
    w = _store(ctx).create_from_yaml(file, user)
    click.echo(f"created warrant {w.liid} (draft, {len(w.targets)} target(s)); "
               f"it needs approval by someone other than {w.created_by}")


@group.command("approve")
@click.argument("liid")
@click.option("--user", "-u", required=True, help="Approver; must not be the creator.")
@click.pass_context
def approve(ctx: click.Context, liid: str, user: str) -> None:
    """Approve a draft warrant (a second person: the creator is refused)."""
    store = _store(ctx)
    w = store.approve(liid, user)
    click.echo(f"approved warrant {w.liid}: {w.status(store.clock())} "
               f"{_t(w.valid_from)} .. {_t(w.valid_until)}")


@group.command("revoke")
@click.argument("liid")
@click.option("--user", "-u", required=True, help="Who revokes it.")
@click.option("--reason", "-r", required=True, help="Why (recorded in the audit trail).")
@click.pass_context
def revoke(ctx: click.Context, liid: str, user: str, reason: str) -> None:
    """Revoke a warrant at once (final)."""
    w = _store(ctx).revoke(liid, user, reason)
    click.echo(f"revoked warrant {w.liid}")


@group.command("list")
@click.option("--state", type=click.Choice([*STATES, "active"]), help="Only warrants in this state.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.pass_context
def list_(ctx: click.Context, state: str | None, as_json: bool) -> None:
    """List warrants (status 'active' = effective now)."""
    store = _store(ctx)
    warrants = store.list(state)
    now = store.clock()
    if as_json:
        for w in warrants:
            click.echo(json.dumps({**w.to_dict(), "status": w.status(now)}, ensure_ascii=False))
        return
    head = ("LIID", "STATUS", "SCOPE", "VALID FROM", "VALID UNTIL", "TARGETS", "CREATED BY", "APPROVED BY", "AUTHORITY")
    rows = [(w.liid, w.status(now), w.scope, _t(w.valid_from), _t(w.valid_until), str(len(w.targets)),
             w.created_by, w.approved_by or "-", w.authority) for w in warrants]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head) - 1)]
    for r in (head, *rows):
        click.echo("  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:-1])) + "  " + r[-1])
    if not rows:
        click.echo("(no warrants)", err=True)


def _show_text(w: Warrant, now: datetime) -> str:
    lines = [
        f"LIID:            {w.liid}",
        f"status:          {w.status(now)} (stored state {w.state})",
        f"authority:       {w.authority}",
        f"legal reference: {w.legal_reference}",
        f"agency:          {w.agency} (HI2 {w.hi2}, HI3 {w.hi3 or '-'})",
        f"scope:           {w.scope}",
        f"valid:           {_t(w.valid_from)} .. {_t(w.valid_until)}",
        f"created:         {_t(w.created_at)} by {w.created_by}",
    ]
    if w.modified_by:
        lines.append(f"modified by:     {w.modified_by}")
    if w.approved_by:
        lines.append(f"approved:        {_t(w.approved_at)} by {w.approved_by}")
    if w.revoked_by:
        lines.append(f"revoked:         {_t(w.revoked_at)} by {w.revoked_by}: {w.revoke_reason}")
    if w.expired_at:
        lines.append(f"expired:         {_t(w.expired_at)}")
    lines.append(f"targets ({len(w.targets)}):")
    lines += [f"  {t.kind:<9} {t.value}" for t in w.targets]
    return "\n".join(lines)


@group.command("show")
@click.argument("liid")
@click.option("--user", "-u", help="Who is looking (audited; default: the OS user).")
@click.option("--yaml", "as_yaml", is_flag=True, help="Print the definition as warrant YAML.")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
@click.pass_context
def show(ctx: click.Context, liid: str, user: str | None, as_yaml: bool, as_json: bool) -> None:
    """Show one warrant (the view is recorded in the audit trail)."""
    store = _store(ctx)
    w = store.view(liid, user or default_user())
    if as_yaml:
        click.echo(w.spec.to_yaml(), nl=False)
    elif as_json:
        click.echo(json.dumps({**w.to_dict(), "status": w.status(store.clock())}, ensure_ascii=False, indent=1))
    else:
        click.echo(_show_text(w, store.clock()))
