"""`bus lag`: consumer lag and Burrow status of the bus's groups."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import structlog
import typer

from bus.cli.app import app
from bus.cli.options import TopologyOption, cli_settings
from bus.ops.burrow import DEFAULT_WINDOW
from bus.ops.lag import (
    ONE_SHOT_INTERVAL_S,
    ONE_SHOT_SAMPLES,
    Directory,
    GroupSelection,
    LagMonitor,
    LagOptions,
    measure,
)
from bus.ops.lag_report import LagReport, render_table
from bus.ops.offsets import OffsetReader
from bus.topology.exceptions import TopologyError
from bus.topology.models import Topology
from bus.topology.validate import load_topology

log = structlog.get_logger("bus.cli.ops")

_CLEAR = "\x1b[2J\x1b[H"


LAG_HELP = "\n\n".join([
    "Lag per partition: committed offset, log end offset, lag in records and in seconds, and Burrow's "
    "status (OK, WARN, STOP, STALL, REWIND; a group reports STOP, STALL and REWIND as ERR).",
    "Without --watch, `bus lag` polls the offsets a few times (--samples, default 3, --sample-interval "
    "apart, default 1 s) and judges the status from that short history: a group whose offsets moved, or "
    "that is at the end, is OK; a live group that did not move while it has lag is STALL; a group without "
    "members that did not move is STOP; lag that grew at every poll is WARN; an offset that went back is "
    "REWIND. Lag in seconds is then the age of the first record not yet consumed.",
    "With --watch the commit windows (last --window commits) and the offset-to-time table grow at every "
    "poll; lag in seconds is interpolated from the table, as kafka-lag-exporter does.",
    "Exit code: 0 when every group is OK, 2 otherwise; 1 on an error (no broker, unknown group).",
])


@app.command(help=LAG_HELP)
def lag(
    groups: list[str] | None = typer.Argument(
        None, help="Consumer groups to show. Default: the bus's groups from the topology (router and sink connectors)."
    ),
    all_groups: bool = typer.Option(False, "--all", help="Every consumer group on the cluster."),
    as_json: bool = typer.Option(False, "--json", help="JSON, not a table (one object per poll with --watch)."),
    watch: bool = typer.Option(False, "--watch", help="Poll until Ctrl-C, keeping the commit windows between polls."),
    interval: float = typer.Option(5.0, "--interval", min=0.1, help="With --watch: seconds between polls."),
    count: int | None = typer.Option(None, "--count", min=1, help="With --watch: stop after N polls."),
    samples: int = typer.Option(
        ONE_SHOT_SAMPLES, "--samples", min=2, help="Without --watch: polls taken before judging the status."
    ),
    sample_interval: float = typer.Option(
        ONE_SHOT_INTERVAL_S, "--sample-interval", min=0.05, help="Without --watch: seconds between those polls."
    ),
    window: int = typer.Option(DEFAULT_WINDOW, "--window", min=1, help="Commits per partition in Burrow's window."),
    topology: Path = TopologyOption,
) -> None:
    if all_groups and groups:
        raise typer.BadParameter("give group names or --all, not both")
    selection, directory = _selection(groups or [], all_groups, topology)
    settings = cli_settings()
    if not watch:
        options = LagOptions(window=window, samples=samples, sample_interval_s=sample_interval)
        report = measure(settings, selection, directory, options=options)
        _show(report, as_json)
        raise typer.Exit(report.exit_code)
    options = LagOptions(window=window, interval_s=interval)
    monitor = LagMonitor(OffsetReader(settings), selection, directory, options=options)
    last: LagReport | None = None
    try:
        for report in monitor.run(count):
            last = report
            if not as_json:
                _watch_header(report, clear=sys.stdout.isatty())
            _show(report, as_json)
    except KeyboardInterrupt:
        pass
    finally:
        monitor.reader.close()
    raise typer.Exit(last.exit_code if last is not None else 1)


def _selection(groups: list[str], all_groups: bool, path: Path) -> tuple[GroupSelection, Directory]:
    if not groups and not all_groups:
        topo = load_topology(path)
        return GroupSelection.of_topology(topo), Directory(topo)
    selection = GroupSelection(tuple(groups), all_groups=all_groups, strict=True)
    return selection, Directory(_optional_topology(path))


def _optional_topology(path: Path) -> Topology | None:
    """The topology for department names, when there is a usable one."""
    if not path.exists():
        return None
    try:
        return load_topology(path)
    except TopologyError as exc:
        log.warning("topology not usable, showing groups without department names", file=str(path), error=str(exc))
        return None


def _show(report: LagReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        typer.echo(render_table(report))


def _watch_header(report: LagReport, *, clear: bool) -> None:
    at = report.to_json()["at"]
    typer.echo(f"{_CLEAR if clear else chr(10)}bus lag at {at} ({'OK' if report.ok else 'NOT OK'}); Ctrl-C stops")
