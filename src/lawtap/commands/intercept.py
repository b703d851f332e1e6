"""``lawtap intercept``: captures -> collector -> mediator -> the agencies' HI2/HI3.

Only approved warrants whose window covers a packet intercept it (the collector checks every
packet); IRI goes to each warrant's HI2 endpoint, content (scope ``iri+cc``) to HI3, through
the mediator's durable queue, so an agency that is down receives everything later, in order.
Every run is audited: intercept start and stop, and the number of records delivered per LIID.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click

from lawtap.errors import LawtapError


def _agency_id(name: str) -> str:
    """A directory-safe id for an agency's queues."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "agency"


def _first_timestamp(paths: list[Path]) -> datetime:
    from lawtap.sources import open_capture

    for p in paths:
        for batch in open_capture(p).batches():
            if len(batch):
                return datetime.fromtimestamp(int(batch.ts.min()) / 1e9, timezone.utc)
    return datetime.now(timezone.utc)


@click.command("intercept")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--state-dir", required=True, type=click.Path(path_type=Path),
              help="Mediator state: durable per-agency queues and sequence numbers.")
@click.option("--db", "db_url", help="Warrant database URL (default: $LAWTAP_DB_URL or ~/.lawtap/lawtap.db).")
@click.option("--user", default="collector", show_default=True, help="Actor name in the audit trail.")
@click.option("--wait", type=float, default=30.0, show_default=True,
              help="Seconds to wait for the agencies to acknowledge everything before exiting.")
def command(inputs, state_dir, db_url, user, wait) -> None:
    """Intercept the targets of active warrants in captures and deliver them (ETSI TS 102 232)."""
    from lawtap.etsi.mediator import Mediator, agency_for
    from lawtap.etsi.pdu import (Direction, ps_pdu_email_cc, ps_pdu_email_iri, ps_pdu_ipiri, ps_pdu_ipmm_cc,
                                  ps_pdu_ipmm_iri)
    from lawtap.intercept.collector import Interception, intercept_capture
    from lawtap.intercept.warrants import WarrantStore
    from lawtap.sources import expand_inputs

    paths = expand_inputs(inputs)
    if not paths:
        raise LawtapError(f"no capture files found in {', '.join(map(str, inputs))}")
    store = WarrantStore(db_url)
    at = _first_timestamp(paths)
    targets = store.target_set(at, timedelta(days=3650))
    if not targets:
        raise LawtapError("no approved warrant is in force for these captures: nothing may be intercepted")
    by_liid = {w.liid: w for w in targets.warrants}
    agencies = {}
    for w in targets.warrants:
        aid = _agency_id(w.spec.agency)
        agencies.setdefault(aid, agency_for(aid, w.spec.hi2, w.spec.hi3 or w.spec.hi2))
    liid_agency = {liid: _agency_id(w.spec.agency) for liid, w in by_liid.items()}
    delivered: dict[str, int] = {}

    store.audit.append(user, "intercept_start", None, inputs=[str(p) for p in paths], liids=sorted(by_liid))
    with Mediator(state_dir, list(agencies.values())) as mediator:

        def deliver(ev: Interception) -> None:
            aid = liid_agency[ev.liid]
            d = Direction.FROM_TARGET if ev.from_target else Direction.TO_TARGET
            if ev.kind == "cc":
                mediator.submit_ipcc(aid, ev.liid, ev.cin, ev.ts_ns, ev.packet, int(d))
            elif ev.kind == "ipmm-iri":
                e = ev.details or {}
                mediator.submit_iri(aid, ps_pdu_ipmm_iri, ev.liid, ev.cin, ev.ts_ns, sip=ev.packet,
                                    src_ip=e.get("src_ip"), dst_ip=e.get("dst_ip"))
            elif ev.kind == "ipmm-cc":
                mediator.submit_cc(aid, ps_pdu_ipmm_cc, ev.liid, ev.cin, ev.ts_ns, ev.packet, int(d))
            elif ev.kind == "email-cc":
                mediator.submit_cc(aid, ps_pdu_email_cc, ev.liid, ev.cin, ev.ts_ns, ev.packet, int(d))
            elif ev.kind == "email-iri":
                e = ev.details or {}
                mediator.submit_iri(aid, ps_pdu_email_iri, ev.liid, ev.cin, ev.ts_ns, event=e["event"],
                                    protocol=e["protocol"], client_ip=e["client_ip"], server_ip=e["server_ip"],
                                    client_port=e["client_port"], server_port=e["server_port"], sender=e["sender"],
                                    recipients=e["recipients"],
                                    message_id=(e["message_id"] or "").encode() or None)
            else:
                event = "startOfInterceptionWithSessionActive" if ev.kind == "iri-begin" else "accessEnd"
                mediator.submit_iri(aid, ps_pdu_ipiri, ev.liid, ev.cin, ev.ts_ns, event=event,
                                    username=ev.identity or ev.target_ip, target_ip=ev.target_ip or None)
            delivered[ev.liid] = delivered.get(ev.liid, 0) + 1

        stats = intercept_capture([str(p) for p in paths], targets, deliver)
        mediator.flush()
        done = mediator.wait_delivered(wait)
    for liid, n in sorted(delivered.items()):
        store.audit.append(user, "delivery", liid, records=n, acknowledged=done)
    store.audit.append(user, "intercept_stop", None, packets=stats.packets_seen,
                       intercepted=stats.packets_intercepted, dropped=stats.dropped)
    click.echo(
        f"{stats.packets_seen} packets: {stats.packets_intercepted} intercepted for {len(delivered)} warrant(s), "
        f"{stats.dropped} dropped; {sum(delivered.values())} records "
        + ("delivered" if done else f"queued in {state_dir} (agency not reachable yet)"),
        err=True,
    )
