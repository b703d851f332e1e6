"""The ``lawtap`` command line.

Every command turns a :class:`~lawtap.errors.LawtapError` (or an OS error) into one line on
stderr and a non-zero exit; a traceback is a bug. Heavy modules (numba kernels, DuckDB) are
imported inside the commands so ``lawtap --help`` and small runs start fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# lawtap does no linear algebra; numpy's OpenBLAS would otherwise start a spinning thread per
# core at import (0.15 CPU-s on a 2-core machine, taken from the pipeline's own threads).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click  # noqa: E402 - after the environment is set for numpy

from lawtap import __version__  # noqa: E402
from lawtap.errors import LawtapError  # noqa: E402
from lawtap.nopandas import keep_pandas_out  # noqa: E402

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _fail(message: str) -> None:
    click.echo(f"lawtap: {message}", err=True)
    sys.exit(EXIT_ERROR)


class _Group(click.Group):
    """Runs a command and reports expected failures as one line.

    Command groups that live in their own module (``lawtap.commands.*``: warrants, audit…) are
    imported only when used, so ``lawtap analyze`` does not pay for SQLAlchemy and friends.
    """

    LAZY = {
        "warrant": "lawtap.commands.warrant:group",
        "audit": "lawtap.commands.audit:group",
        "lemf": "lawtap.commands.lemf:command",
        "intercept": "lawtap.commands.intercept:command",
        "x1": "lawtap.commands.x1:command",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, name: str):  # noqa: ANN201 - click's signature
        if name in self.LAZY and name not in self.commands:
            import importlib

            module, attr = self.LAZY[name].split(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except LawtapError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            click.echo("lawtap: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except (OSError, MemoryError) as e:
            name = getattr(e, "filename", None)
            _fail(f"{name}: {e.strerror}" if name and getattr(e, "strerror", None) else str(e))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lawtap")
def main() -> None:
    """lawtap: passive network forensics and accountable lawful interception.

    lawtap only reads traffic: it never blocks, injects or alters packets.
    """
    keep_pandas_out()


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", "case_dir", required=True, type=click.Path(path_type=Path), help="Case directory to write.")
@click.option("--json", "json_logs", is_flag=True, help="Also write Zeek-style JSON logs (<type>.log).")
@click.option("-i", "--interface", help="Capture live from this interface instead of files.")
@click.option("-f", "--filter", "bpf", help="BPF filter for live capture.")
@click.option("-c", "--count", type=int, help="Live capture: stop after this many packets.")
@click.option("-d", "--duration", type=float, help="Live capture: stop after this many seconds.")
@click.option("--no-dpi", is_flag=True, help="Skip payload classification (service stays empty).")
@click.option("--no-analyzers", is_flag=True, help="Flows only: skip reassembly and application analyzers.")
@click.option("--no-extract", is_flag=True, help="Hash recovered files but do not store them under artifacts/.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on when stderr is a terminal).")
@click.option("--force", is_flag=True, help="Replace an existing case directory.")
def analyze(inputs, case_dir, json_logs, interface, bpf, count, duration, no_dpi, no_analyzers, no_extract, progress, force) -> None:
    """Analyze captures (pcap, pcapng, gzip; files or directories, merged in time order)."""
    from lawtap.pipeline import run_analysis, tune_gc_for_a_run
    from lawtap.sources import expand_inputs, open_capture

    if interface:
        if inputs:
            raise LawtapError("give either capture files or --interface, not both")
        from lawtap.sources.live import LiveSource

        sources = [LiveSource(interface, bpf, max_packets=count, duration=duration,
                              save_to=Path(case_dir).with_suffix(".live.pcap"))]
    else:
        if not inputs:
            raise LawtapError("no input: give capture files or directories, or --interface")
        paths = expand_inputs(inputs)
        if not paths:
            raise LawtapError(f"no capture files found in {', '.join(map(str, inputs))}")
        sources = [open_capture(p, file_id=i) for i, p in enumerate(paths)]
    tune_gc_for_a_run()
    stats = run_analysis(sources, case_dir, json_logs=json_logs, dpi=not no_dpi, analyzers=not no_analyzers,
                         extract=not no_extract, progress=progress, overwrite=force, command=sys.argv)
    click.echo(
        f"{stats.packets} packets, {stats.flows} connections, {sum(stats.weirds.values())} anomalies -> {case_dir}",
        err=True,
    )


def _audit_content_access(case_dir: Path, action: str, **details) -> None:
    """Viewing or exporting intercepted content (a case made by ``lawtap lemf``) is audited.

    Ordinary forensic cases are not: the audit trail records what is done under warrants.
    """
    lemf = Path(case_dir) / "lemf"
    if not lemf.is_dir():
        return
    import getpass

    from lawtap.intercept.audit import AuditLog

    liids = sorted(p.stem for p in (lemf / "cc").glob("*.pcap")) if (lemf / "cc").is_dir() else []
    AuditLog().append(getpass.getuser(), action, ",".join(liids) or None, case=str(Path(case_dir).resolve()), **details)


@main.command()
@click.argument("case_dir", type=click.Path(path_type=Path))
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def query(case_dir, sql, fmt) -> None:
    """Run SQL (DuckDB) over a case: one view per record type (conn, dns, weird, ...)."""
    from lawtap.case import run_query

    _audit_content_access(case_dir, "view", sql=sql)
    run_query(case_dir, sql, fmt)


@main.command()
@click.argument("case_dir", type=click.Path(path_type=Path))
def summary(case_dir) -> None:
    """Top talkers, services, connection states, tunnels and anomalies of a case."""
    from rich.console import Console

    from lawtap.summary import summarize

    _audit_content_access(case_dir, "view", command="summary")
    summarize(case_dir, Console())


@main.command()
@click.argument("case_dir", type=click.Path(path_type=Path))
@click.option("--uid", "uids", multiple=True, help="Connection uid to export (repeatable).")
@click.option("--where", help="SQL condition over the conn view selecting connections.")
@click.option("-w", "--write", "out", required=True, type=click.Path(path_type=Path), help="Output pcap file.")
def export(case_dir, uids, where, out) -> None:
    """Write the packets of selected connections, in order, to a pcap."""
    from lawtap.export import export_flows

    if not uids and not where:
        raise LawtapError("select connections with --uid or --where")
    _audit_content_access(case_dir, "export", uids=list(uids), where=where, output=str(out))
    n = export_flows(case_dir, list(uids) or None, where, out)
    click.echo(f"{n} packets -> {out}", err=True)


@main.command()
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="pcap file to write.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--sessions", type=int, default=300, show_default=True)
def generate(output, seed, sessions) -> None:
    """Write lawtap's deterministic demo traffic (HTTP, DNS, TLS, SMTP, SIP/RTP, tunnels...)."""
    from lawtap.generate import generate_capture

    Path(output).parent.mkdir(parents=True, exist_ok=True)
    manifest = generate_capture(output, seed, sessions)
    click.echo(f"wrote {output}: {manifest.get('packets', '?')} packets", err=True)


if __name__ == "__main__":
    main()
