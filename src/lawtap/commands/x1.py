"""``lawtap x1``: serve ETSI X1 (TS 103 221-1) to the ADMF over HTTPS with mutual TLS.

Tasks become draft warrants in the warrant store; a second person approves them with
``lawtap warrant approve`` before anything is intercepted (see docs/x1.md).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import click


@click.command("x1")
@click.option("--listen", default="127.0.0.1:8443", show_default=True, metavar="HOST:PORT")
@click.option("--cert", required=True, type=click.Path(path_type=Path, exists=True), help="Server certificate (PEM).")
@click.option("--key", required=True, type=click.Path(path_type=Path, exists=True), help="Its private key.")
@click.option("--client-ca", required=True, type=click.Path(path_type=Path, exists=True),
              help="CA whose certificates identify the ADMFs (mutual TLS).")
@click.option("--ne-id", required=True, help="This network element's X1 identifier.")
@click.option("--agency", required=True, help="Receiving agency of the provisioned warrants.")
@click.option("--hi2", required=True, metavar="HOST:PORT", help="The agency's HI2 (IRI) endpoint.")
@click.option("--hi3", metavar="HOST:PORT", help="The agency's HI3 (CC) endpoint (default: HI2's).")
@click.option("--db", "db_url", help="Warrant database URL (default: $LAWTAP_DB_URL or ~/.lawtap/lawtap.db).")
def command(listen, cert, key, client_ca, ne_id, agency, hi2, hi3, db_url) -> None:
    """Serve X1 until Ctrl-C; every request is audited."""
    from lawtap.intercept.warrants import WarrantStore
    from lawtap.intercept.x1backend import WarrantX1Backend
    from lawtap.x1 import X1Server, X1Service, server_tls_context

    host, _, port = listen.rpartition(":")
    store = WarrantStore(db_url)
    backend = WarrantX1Backend(store, agency=agency, hi2=hi2, hi3=hi3)
    server = X1Server(X1Service(backend, ne_id, on_request=backend.audit_hook),
                      server_tls_context(cert, key, client_ca), host=host.strip("[]") or "127.0.0.1", port=int(port))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    server.start()
    click.echo(f"X1 listening on {listen}", err=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
