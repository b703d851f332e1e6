"""``lawtap lemf``: run the reference LEMF, then turn what it received into a case.

The lead registers :data:`command` with ``main.add_command``. The receiving store lives in
``DIR/lemf/`` (raw PDUs, per-LIID CC pcaps, events); on Ctrl-C the CC pcaps are analysed into
``DIR`` like any capture, so intercepted e-mails, calls and web sessions show up as a normal case,
and the IRI records are written to ``DIR/lemf/iri.parquet``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import sys
from pathlib import Path

import click

from lawtap.errors import LawtapError


def _tls_context(cert: Path | None, key: Path | None, ca: Path | None) -> ssl.SSLContext | None:
    if cert is None:
        if key is not None or ca is not None:
            raise LawtapError("--tls-key/--tls-ca need --tls-cert")
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # TS 102 232-1: at least TLS 1.2 when TLS is used
    try:
        ctx.load_cert_chain(str(cert), str(key) if key else None)
        if ca is not None:
            ctx.load_verify_locations(str(ca))
            ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: only known mediators may deliver
    except (OSError, ssl.SSLError) as e:
        raise LawtapError(f"TLS setup failed: {e}") from None
    return ctx


@click.command("lemf")
@click.option("--listen", "listen", required=True, metavar="HOST:PORT", help="Address to receive HI2/HI3 on.")
@click.option("-o", "--output", "case_dir", required=True, type=click.Path(path_type=Path),
              help="Case directory (the LEMF store is kept in DIR/lemf).")
@click.option("--tls-cert", type=click.Path(path_type=Path, exists=True), help="Serve TLS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(path_type=Path, exists=True), help="Private key for --tls-cert.")
@click.option("--tls-ca", type=click.Path(path_type=Path, exists=True), help="Require client certificates from this CA.")
@click.option("--no-fsync", is_flag=True, help="Do not fsync before acknowledging (tests only).")
@click.option("--no-analyze", is_flag=True, help="Only receive; do not analyse the CC afterwards.")
def command(listen: str, case_dir: Path, tls_cert: Path | None, tls_key: Path | None, tls_ca: Path | None,
            no_fsync: bool, no_analyze: bool) -> None:
    """Receive ETSI TS 102 232 handover (HI2 IRI, HI3 CC) until Ctrl-C, then analyse the CC.

    Every PDU is decoded and checked for sequence continuity per (LIID, CIN); gaps, duplicates,
    keep-alives and malformed PDUs are logged to DIR/lemf/events.jsonl.
    """
    from lawtap.etsi.lemf import parse_listen, serve

    host, port = parse_listen(listen)
    tls = _tls_context(tls_cert, tls_key, tls_ca)
    store_dir = Path(case_dir) / "lemf"

    async def run():  # noqa: ANN202
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)

        def ready(bound: int) -> None:
            click.echo(f"lemf: listening on {host}:{bound}, store {store_dir} (Ctrl-C to stop)", err=True)

        return await serve(store_dir, host, port, tls=tls, fsync=not no_fsync, stop=stop, on_ready=ready)

    store = asyncio.run(run())
    report = store.report()
    table = store.iri_table()
    import pyarrow.parquet as pq

    pq.write_table(table, store_dir / "iri.parquet")
    (store_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    c = report["counts"]
    click.echo(
        f"lemf: {c['accepted']} PDUs kept, {c['duplicates']} duplicates dropped, {c['gaps']} gaps, "
        f"{c['malformed']} malformed, {c['keepalives']} keep-alives, {c['iri']} IRI",
        err=True,
    )
    pcaps = sorted((store_dir / "cc").glob("*.pcap"))
    if no_analyze or not pcaps:
        return
    from lawtap.pipeline import run_analysis
    from lawtap.sources import open_capture

    sources = [open_capture(p, file_id=i) for i, p in enumerate(pcaps)]
    stats = run_analysis(sources, case_dir, overwrite=True, command=sys.argv)
    click.echo(f"{stats.packets} packets, {stats.flows} connections -> {case_dir}", err=True)
