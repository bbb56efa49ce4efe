"""`bus plan`, `bus apply`, `bus asyncapi`: the integrator's view of the cluster."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from bus.cli.app import app
from bus.cli.options import TopologyOption, cli_settings
from bus.connect.registry import KIT_CHECKS
from bus.integrate.apply import apply as apply_plan
from bus.integrate.asyncapi import asyncapi_document
from bus.integrate.asyncapi import render as render_asyncapi
from bus.integrate.desired import DEFAULT_SERVICE_PRINCIPAL, REGISTRY_TOPIC
from bus.integrate.exceptions import ApplyRefused
from bus.integrate.plan import Plan, make_plan, render
from bus.kafka.config import KafkaSettings
from bus.topology.models import Topology
from bus.topology.names import topology_topic
from bus.topology.published import publish_topology
from bus.topology.validate import load_topology

PLAN_HELP = "\n\n".join([
    "What `bus apply` would change so that the cluster and the registry hold what the topology implies: topics "
    "(partitions, cleanup policy), schema subjects (canonical and each subscription's derived schema) and their "
    "compatibility modes, the bus's own topics (dead letters, connector offsets and status, the registry's "
    "storage), and the ACL bindings of each department's principal User:<department> and of the service "
    "principal.",
    "+ create, ~ change, - delete (only with --prune; otherwise listed as 'would delete'), ! a conflict apply "
    "leaves alone. Features the broker lacks (ACLs, adding partitions) are reported, not failed on.",
    "Exit code: 0 no changes, 2 changes pending (or a conflict), 1 error.",
])

JsonOption = typer.Option(False, "--json", help="JSON, not text.")
PruneOption = typer.Option(False, "--prune", help="Also delete the bus's topics, subjects and ACLs the topology no longer implies.")
PrincipalOption = typer.Option(
    DEFAULT_SERVICE_PRINCIPAL, "--service-principal", envvar="BUS_SERVICE_PRINCIPAL",
    help="The principal the router and the connectors run as.",
)
RegistryTopicOption = typer.Option(
    REGISTRY_TOPIC, "--registry-topic",
    help="The embedded registry's storage topic (compacted); '' when the registry is another one.",
)


def _plan(path: Path, prune: bool, principal: str, registry_topic: str) -> tuple[Plan, Topology, KafkaSettings]:
    settings = cli_settings()
    topology = load_topology(path, KIT_CHECKS)
    plan = make_plan(topology, settings, prune=prune, service_principal=principal, registry_topic=registry_topic or None)
    return plan, topology, settings


@app.command(help=PLAN_HELP)
def plan(
    topology: Path = TopologyOption,
    as_json: bool = JsonOption,
    prune: bool = PruneOption,
    service_principal: str = PrincipalOption,
    registry_topic: str = RegistryTopicOption,
) -> None:
    made, _, _ = _plan(topology, prune, service_principal, registry_topic)
    typer.echo(json.dumps(made.to_json(), ensure_ascii=False) if as_json else render(made))
    raise typer.Exit(made.exit_code)


@app.command(help="Make the cluster and the registry match the topology (what `bus plan` shows), idempotently. "
                  "Asks before changing anything unless --yes. Exit code: 0 done (features the broker lacks are "
                  "reported, not failed on), 1 an action failed or a conflict stands.")
def apply(
    topology: Path = TopologyOption,
    as_json: bool = JsonOption,
    prune: bool = PruneOption,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    service_principal: str = PrincipalOption,
    registry_topic: str = RegistryTopicOption,
) -> None:
    made, topo, settings = _plan(topology, prune, service_principal, registry_topic)
    if not as_json:
        typer.echo(render(made))
    if made.pending and not yes:
        if as_json or not sys.stdin.isatty():
            raise ApplyRefused("bus apply needs confirmation: run it in a terminal, or add --yes")
        typer.confirm("Apply these changes?", abort=True)
    result = apply_plan(topo, settings, prune=prune, plan=made) if made.pending else None
    code = result.exit_code if result is not None else 0
    # Running routers follow the applied topology (subscriptions added, removed, changed).
    published = publish_topology(settings, topology)[1] if code == 0 else None
    if as_json:
        body = result.to_json() if result is not None else {"plan": made.to_json(), "outcomes": [], "exit_code": 0}
        typer.echo(json.dumps({**body, "published_digest": published}, ensure_ascii=False))
    else:
        for outcome in result.outcomes if result is not None else []:
            typer.echo(outcome.line())
        if result is not None:
            typer.echo(result.summary())
        if published:
            typer.echo(f"topology published as {published} to {topology_topic(topo.namespace)}: running routers follow it")
        else:
            typer.echo("topology NOT published (apply did not complete): running routers keep the previous one")
    raise typer.Exit(code)


@app.command(help="The topology as an AsyncAPI 3.0.0 document: a channel per topic, send operations of the "
                  "publishing departments, receive operations of the subscriptions, messages with their Avro "
                  "schemas and CloudEvents headers, servers from the settings.")
def asyncapi(
    topology: Path = TopologyOption,
    fmt: str = typer.Option("yaml", "--format", help="yaml or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    if fmt not in ("yaml", "json"):
        raise typer.BadParameter(f"--format {fmt!r}: write yaml or json")
    text = render_asyncapi(asyncapi_document(load_topology(topology), KafkaSettings()), fmt)  # type: ignore[arg-type]
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)
