from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from bus.cli.app import app
from bus.cli.options import TopologyOption, cli_settings
from bus.routing.router import DEFAULT_BATCH_SIZE
from bus.routing.service import RoutingService
from bus.topology.validate import load_topology


@app.command()
def route(
    topology: Path = TopologyOption,
    instance: str = typer.Option("0", "--instance", help="This router's id among the router instances (stable across restarts: it fences a crashed predecessor)."),
    batch_size: int = typer.Option(DEFAULT_BATCH_SIZE, "--batch-size", min=1, max=10_000, help="Records per transaction at most."),
) -> None:
    """Run the router: canonical topics -> every subscription topic, filtered, projected and
    masked, exactly once (Kafka transactions). Subscriptions with a start point are backfilled
    by a lane of their own; topologies published by `bus apply` are followed while running.
    Ctrl-C or SIGTERM stops after the current batch."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    service = RoutingService(load_topology(topology), cli_settings(), instance=instance, batch_size=batch_size)
    service.prepare()
    lanes = len(service.routers) - 1
    typer.echo(f"router {instance}: {len(service.subscriptions)} subscriptions ({lanes} in lanes of their own, "
               "backfilling from their start point); follows `bus apply`; Ctrl-C stops")
    service.start()
    stop.wait()
    service.stop()
    s = service.stats
    typer.echo(f"router {instance} stopped: {s.records_in} in, {s.records_out} out, {s.dead_letters} dead letters")
