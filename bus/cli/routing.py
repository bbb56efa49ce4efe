from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from bus.cli.app import app
from bus.cli.options import TopologyOption
from bus.kafka.config import KafkaSettings
from bus.routing.router import Router
from bus.topology.loader import load_topology


@app.command()
def route(
    topology: Path = TopologyOption,
    instance: str = typer.Option("0", "--instance", help="This router's id among the router instances (stable across restarts: it fences a crashed predecessor)."),
    batch_size: int = typer.Option(500, "--batch-size", min=1, max=10_000, help="Records per transaction at most."),
) -> None:
    """Run the router: canonical topics -> every subscription topic, filtered, projected and
    masked, exactly once (Kafka transactions). Ctrl-C or SIGTERM stops after the current batch."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    router = Router(load_topology(topology), KafkaSettings(), instance=instance, batch_size=batch_size)
    router.prepare()
    routes = sum(len(r) for r in router.routes.values())
    typer.echo(f"router {instance}: {routes} subscriptions over {len(router.routes)} event types; Ctrl-C stops")
    router.run(stop)
    s = router.stats
    typer.echo(f"router {instance} stopped: {s.records_in} in, {s.records_out} out, {s.dead_letters} dead letters")
