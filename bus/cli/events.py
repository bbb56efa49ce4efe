from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from bus.cli.app import app
from bus.cli.options import TopologyOption, cli_settings
from bus.consume.tail import tail as tail_records
from bus.errors import BusError
from bus.publish import Publisher
from bus.publish.jsonl import open_jsonl, parse_record, read_jsonl
from bus.topology.models import Topology, topic_name
from bus.topology.names import department_group_prefix
from bus.topology.validate import load_topology


@app.command()
def publish(
    event_type: str = typer.Argument(..., help="Event type, e.g. camera_alarm."),
    department: str = typer.Option(..., "--as", help="The publishing department (must own the event type)."),
    json_text: str | None = typer.Option(None, "--json", help="One record as JSON text."),
    file: Path | None = typer.Option(None, "--file", help="A JSON-lines file, one record per line ('-' for stdin)."),
    topology: Path = TopologyOption,
) -> None:
    """Publish records as a department. Returns once the broker acknowledged them."""
    if (json_text is None) == (file is None):
        raise typer.BadParameter("give exactly one of --json TEXT or --file FILE.jsonl")
    topo = load_topology(topology)
    with Publisher(topo, cli_settings()) as publisher:
        if json_text is not None:
            published = publisher.publish(event_type, department, parse_record(json_text))
            typer.echo(
                f"published {event_type} key={published.key} to {published.topic}"
                f"[{published.partition}]@{published.offset} ce_id={published.ce_id} trace_id={published.trace_id}"
            )
            return
        assert file is not None
        stream = sys.stdin.buffer if str(file) == "-" else open_jsonl(file)
        with stream:
            summary = publisher.publish_each(
                event_type,
                department,
                read_jsonl(stream),
                on_progress=lambda s: typer.echo(f"... {s.published} published, {len(s.rejected)} rejected", err=True),
            )
    typer.echo(summary.render())
    if summary.rejected:
        raise typer.Exit(1)


@app.command()
def tail(
    event_type: str | None = typer.Argument(None, help="Event type whose canonical topic to read."),
    department: str | None = typer.Option(None, "--department", "-d", help="Read every subscription topic of this department instead."),
    headers: bool = typer.Option(False, "--headers", help="Include each record's headers (CloudEvents, trace)."),
    from_end: bool = typer.Option(False, "--from-end", help="Only records published from now on."),
    max_records: int | None = typer.Option(None, "--max", "-n", help="Stop after N records."),
    idle_timeout: float | None = typer.Option(None, "--idle-timeout", help="Stop after S seconds without a record."),
    exit_at_end: bool = typer.Option(False, "--exit", "-e", help="Stop at the end of what is there now (like kcat -e)."),
    topology: Path = TopologyOption,
) -> None:
    """Print decoded records as JSON lines."""
    if (event_type is None) == (department is None):
        raise typer.BadParameter("give an EVENT_TYPE or --department NAME (one of them)")
    topo = load_topology(topology)
    if event_type is not None:
        topics = [topo.event_type(event_type).topic]
    else:
        assert department is not None
        topo.department(department)
        topics = [s.topic for s in topo.subscriptions if s.department == department]
        if not topics:
            raise BusError(f"department {department!r} has no subscriptions in {topology}")
    settings = cli_settings()
    for record in tail_records(
        settings, topics, from_beginning=not from_end,
        max_records=max_records,
        idle_timeout_s=idle_timeout,
        exit_at_end=exit_at_end,
        group_id=tail_group(topo, settings.sasl_username),
    ):
        typer.echo(json.dumps(record.as_json(headers), ensure_ascii=False))


def tail_group(topology: Topology, principal: str | None) -> str:
    """The group a tail names (it never joins it): one of the department's own when it runs as a
    department's principal, else the bus's."""
    if principal is not None and any(d.name == principal for d in topology.departments):
        return department_group_prefix(topology.namespace, principal) + "tail"
    return topic_name(topology.namespace, "bus-tail")
