"""`bus dlq list | show | replay`: the dead letters of the topology's namespace."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from bus.cli.app import app
from bus.cli.options import TopologyOption, cli_settings
from bus.consume.decoder import Decoder
from bus.kafka.config import KafkaSettings
from bus.ops.deadletters import (
    ReplayLog,
    Replayer,
    Selection,
    count,
    dead_letter_topics,
    describe,
    parse_since,
    read_dead_letters,
    render_counts,
    render_letter,
)
from bus.registry.client import registry_client
from bus.topology.validate import load_topology

dlq_app = typer.Typer(
    help="Dead letters (Kafka Connect's conventions): count them, show them, replay a connector's.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")

ErrorOption = typer.Option(
    None, "--error", help="Only this exception class: full name or the part after the last dot (EndpointAnswer)."
)
SinceOption = typer.Option(None, "--since", help="Only dead letters since: a duration (15m, 2h, 7d) or an ISO time.")


@dlq_app.command("list")
def list_dead_letters(
    as_json: bool = typer.Option(False, "--json", help="One JSON object per row."),
    topology: Path = TopologyOption,
) -> None:
    """Dead letters by connector, original topic and error class.

    Every dead-letter topic of the namespace is scanned (the connectors' and the router's);
    replayed ones are counted apart."""
    topo = load_topology(topology)
    settings = cli_settings()
    topics = dead_letter_topics(topo, settings)
    rows = count(read_dead_letters(settings, topics), _replayed(settings, topo.namespace, bool(topics)))
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.to_json(), ensure_ascii=False))
        return
    typer.echo(render_counts(rows, topics))


@dlq_app.command("show")
def show(
    connector: str | None = typer.Option(None, "--connector", "-c", help="Only this connector's (bus-router: the router's)."),
    topic: str | None = typer.Option(None, "--topic", help="Only those of this original topic (or dead-letter topic)."),
    error: str | None = ErrorOption,
    since: str | None = SinceOption,
    limit: int = typer.Option(20, "-n", "--limit", min=1, help="Show the N most recent."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per dead letter (stack trace included)."),
    topology: Path = TopologyOption,
) -> None:
    """Each dead letter with its headers, error and value, oldest first.

    The value is decoded when it is a wire-format record, else shown as text or base64."""
    if connector and topic:
        raise typer.BadParameter("give --connector or --topic, not both")
    topo = load_topology(topology)
    settings = cli_settings()
    selection = Selection(connector, topic, error, parse_since(since) if since else None)
    topics = dead_letter_topics(topo, settings)
    letters = [d for d in read_dead_letters(settings, topics) if selection.matches(d)][-limit:]
    replayed = _replayed(settings, topo.namespace, bool(letters))
    decoder = Decoder(registry_client(settings))
    if not letters and not as_json:
        typer.echo("no dead letters match" if topics else "no dead-letter topics in this namespace")
    for letter in letters:
        described = describe(letter, decoder, replayed)
        typer.echo(json.dumps(described, ensure_ascii=False) if as_json else render_letter(described) + "\n")


@dlq_app.command("replay")
def replay(
    connector: str = typer.Option(..., "--connector", "-c", help="The connector whose dead letters to send again."),
    error: str | None = ErrorOption,
    since: str | None = SinceOption,
    event_type: str | None = typer.Option(
        None, "--event-type", help="Source only: the event type of dead letters that carry none."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be sent; send nothing."),
    as_json: bool = typer.Option(False, "--json", help="The report as one JSON object."),
    topology: Path = TopologyOption,
) -> None:
    """Send a connector's dead letters again, each once.

    A sink's are delivered through the connector itself, a source's published to their
    canonical topic. Records keep their CloudEvents id; what was replayed is remembered, so
    a second replay sends only what is new."""
    topo = load_topology(topology)
    replayer = Replayer(topo, cli_settings(), connector)
    selection = Selection(topic=None, error=error, since=parse_since(since) if since else None)

    def progress(done: int, total: int) -> None:
        typer.echo(f"replayed {done}/{total}", err=True)

    report = replayer.replay(selection, dry_run=dry_run, event_type=event_type, on_progress=progress)
    typer.echo(json.dumps(report.to_json(), ensure_ascii=False) if as_json else report.render())


def _replayed(settings: KafkaSettings, namespace: str | None, wanted: bool) -> dict[str, dict]:
    if not wanted:
        return {}
    log = ReplayLog(settings, namespace)
    try:
        return log.load()
    finally:
        log.close()
