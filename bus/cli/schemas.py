from __future__ import annotations

from pathlib import Path

import typer

from bus.cli.app import schemas_app
from bus.cli.options import TopologyOption, cli_settings
from bus.registry.client import registry_client, wait_for_registry
from bus.registry.check import check_schemas
from bus.registry.registration import ensure_registered
from bus.topology.validate import load_topology


@schemas_app.command("check")
def check(topology: Path = TopologyOption) -> None:
    """Compare schemas/ with the registered versions under each event type's compatibility
    mode. Exit 1 if any change is incompatible; nothing is registered."""
    topo = load_topology(topology)
    settings = cli_settings()
    wait_for_registry(settings)
    results = check_schemas(topo, registry_client(settings))
    for result in results:
        typer.echo(result.render())
    bad = [r for r in results if r.status == "incompatible"]
    if bad:
        typer.echo(f"{len(bad)} incompatible schema change(s); nothing was registered", err=True)
        raise typer.Exit(1)


@schemas_app.command("register")
def register(topology: Path = TopologyOption) -> None:
    """Register every event type's schema (after setting its subject's compatibility mode)."""
    topo = load_topology(topology)
    settings = cli_settings()
    wait_for_registry(settings)
    client = registry_client(settings)
    for et in topo.event_types:
        schema_id = ensure_registered(client, et.subject, topo.schema_for(et.name).canonical_json(), str(et.compatibility))
        typer.echo(f"{et.subject}: schema id {schema_id} ({et.compatibility})")
