"""`bus connector list | config TYPE | run NAME | status [NAME]`."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import typer

from bus.cli.app import app
from bus.cli.options import TopologyOption, cli_settings
from bus.connect import ConnectorRunner, StatusStore, describe_config, load_connector_class
from bus.connect.exceptions import ConnectorError
from bus.connect.registry import GROUP, installed_types
from bus.errors import BusError
from bus.connect.registry import KIT_CHECKS
from bus.topology.validate import load_topology

connector_app = typer.Typer(
    help="Connectors: the installed types, running one, their status.", no_args_is_help=True
)
app.add_typer(connector_app, name="connector")


@connector_app.command("list")
def list_connectors(topology: Path = TopologyOption) -> None:
    """The installed connector types, and the connectors of the topology."""
    types = installed_types()
    typer.echo(f"connector types installed (entry points of group {GROUP}):")
    if not types:
        typer.echo("  none: install the bus with its connectors (pip install -e .) or a department's package")
    for name, declared in types.items():
        try:
            kind = load_connector_class(name)
            about = (kind.__doc__ or "").strip().splitlines()[0] if kind.__doc__ else ""
            typer.echo(f"  {name:<24} {kind.side:<6} {declared.target}  {about}")
        except ConnectorError as exc:
            typer.echo(f"  {name:<24} ?      {declared.target}  cannot be loaded: {exc}")
    if not topology.exists():
        return
    topo = load_topology(topology, KIT_CHECKS)
    typer.echo(f"\nconnectors in {topology}:")
    for c in topo.connectors:
        what = ", ".join(c.publishes or []) if c.side == "source" else f"subscription {c.subscription}"
        missing = "" if c.type in types else "  (type not installed)"
        typer.echo(f"  {c.name:<28} {c.type:<20} {c.side:<6} {c.department:<22} {what}{missing}")


@connector_app.command("config")
def config_help(connector_type: str = typer.Argument(..., help="A connector type, e.g. http_webhook_sink.")) -> None:
    """The settings of a connector type: key, type, default, description, example."""
    kind = load_connector_class(connector_type)
    typer.echo(f"{connector_type} ({kind.side}): settings under `config:` of its connectors in topology.yaml")
    for row in describe_config(kind.config_model):
        default = "required" if row.required else f"default {json.dumps(row.default)}"
        typer.echo(f"  {row.key}  ({row.type}; {default})")
        if row.description:
            typer.echo(f"      {row.description}")
        if row.examples:
            example = row.examples[0]
            typer.echo(f"      e.g. {row.key}: {example if isinstance(example, str) else json.dumps(example)}")


@connector_app.command("run")
def run(
    name: str = typer.Argument(..., help="The connector's name in topology.yaml."),
    topology: Path = TopologyOption,
) -> None:
    """Run one connector of the topology in the foreground until Ctrl-C (or SIGTERM)."""
    topo = load_topology(topology, KIT_CHECKS)
    runner = ConnectorRunner(topo.connector(name), topo, cli_settings())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    runner.start()
    detail = runner.status().detail
    where = detail.get("url") or detail.get("topic") or ""
    typer.echo(f"connector {name} ({runner.connector.type}) running{' on ' + where if where else ''}. Ctrl-C stops it.")
    try:
        while not stop.wait(0.5):
            if runner.state in ("failed", "stopped"):
                break
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
    if runner.state == "failed":
        raise BusError(str(runner.error))
    typer.echo(f"connector {name} stopped")


@connector_app.command("status")
def status(
    name: str | None = typer.Argument(None, help="One connector (default: all of the topology)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per connector."),
    topology: Path = TopologyOption,
) -> None:
    """State, worker, position and counters of the connectors, from any machine."""
    topo = load_topology(topology, KIT_CHECKS)
    names = [topo.connector(name).name] if name else [c.name for c in topo.connectors]
    store = StatusStore(cli_settings(), topo.namespace)
    try:
        known = store.read_all()
    finally:
        store.close()
    for connector in names:
        found = known.get(connector)
        if as_json:
            typer.echo(json.dumps(found.as_dict() if found else {"name": connector, "state": "never ran"},
                                  ensure_ascii=False))
            continue
        if found is None:
            typer.echo(f"{connector}: never ran")
            continue
        state = f"unknown (no heartbeat since {found.updated_at})" if found.stale() else found.state
        counts = ", ".join(f"{k} {v}" for k, v in found.counts.items() if v)
        typer.echo(f"{connector}: {state} on {found.worker} (updated {found.updated_at})")
        if found.position:
            typer.echo(f"  position: {json.dumps(found.position, ensure_ascii=False)}")
        if counts:
            typer.echo(f"  counts: {counts}")
        if found.error:
            typer.echo(f"  error: {found.error}")
