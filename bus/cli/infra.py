from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import typer

from bus.cli.app import app
from bus.cli.options import TopologyOption
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.config import KafkaSettings
from bus.errors import BusError
from bus.registry.server import serve_forever
from bus.web.serving import is_loopback
from bus.runtime.up import publish_demo_samples, run_city


def _wait_for_ctrl_c(every_5s: Callable[[], None] | None = None) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(5):
            if every_5s:
                every_5s()
    except KeyboardInterrupt:
        pass


@app.command()
def broker(
    port: int = typer.Option(9092, "--port", help="Port on 127.0.0.1."),
) -> None:
    """Run the embedded Kafka-compatible broker in the foreground (memory only)."""
    running = EmbeddedBroker(port, die_with_parent=True).start()
    typer.echo(
        f"embedded Kafka broker on {running.bootstrap_servers} (pid {running.pid}, memory only: "
        f"everything is lost when it stops; log: {running.log_path}). Ctrl-C stops it."
    )
    try:
        _wait_for_ctrl_c()
    finally:
        running.stop()


@app.command()
def registry(
    port: int = typer.Option(8081, "--port", help="Port to serve the registry API on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    topic: str = typer.Option("_bus_schemas", "--topic", help="Compacted topic that stores the schemas."),
) -> None:
    """Run the embedded schema registry (Confluent REST API subset) in the foreground."""
    if not is_loopback(host):
        raise BusError(
            f"refusing to serve the schema registry on {host}: it has no authentication yet and "
            "anyone reaching it could register schemas. Bind to 127.0.0.1, or use a Confluent-compatible "
            "registry with authentication (BUS_REGISTRY_URL, BUS_REGISTRY_USERNAME/PASSWORD)"
        )
    serve_forever(KafkaSettings(), host=host, port=port, topic=topic)


@app.command()
def up(
    demo: bool = typer.Option(False, "--demo", help="Also publish sample events of every type (and, later, run the departments' simulators)."),
    samples: int = typer.Option(5, "--samples", help="With --demo: sample records per event type."),
    broker_port: int = typer.Option(9092, "--broker-port", help="Port of the embedded broker."),
    registry_port: int = typer.Option(8081, "--registry-port", help="Port of the embedded registry."),
    web_port: int = typer.Option(8080, "--web-port", help="Port of the ops endpoints (/healthz, /readyz, /metrics)."),
    web_host: str = typer.Option("127.0.0.1", "--web-host", help="Address of the ops endpoints and the page; beyond loopback BUS_WEB_TOKEN is required."),
    page_port: int = typer.Option(8088, "--page-port", help="Port of the page (0: any free port)."),
    topology: Path = TopologyOption,
    connectors: bool = typer.Option(True, "--connectors/--no-connectors", help="Run the connectors of the topology (a connector that cannot start, e.g. its secret is not set, is reported and left out)."),
    processors: bool = typer.Option(True, "--processors/--no-processors", help="Run the stateful processors (`bus process`) as a child process."),
    exit_after_start: bool = typer.Option(False, "--exit-after-start", hidden=True),
) -> None:
    """Run the bus: broker, registry, topics and schemas of the topology, the router, the
    connectors, the processors and the ops endpoints (Ctrl-C stops)."""
    with run_city(
        topology,
        settings=KafkaSettings(),
        broker_port=broker_port,
        registry_port=registry_port,
        web_host=web_host,
        web_port=web_port,
        page_port=page_port,
        with_connectors=connectors,
        with_processors=processors,
        say=typer.echo,
    ) as city:
        if demo:
            total = publish_demo_samples(city, samples, typer.echo)
            typer.echo(f"demo: {total} records published; read them with `bus tail camera_alarm`")
        typer.echo(
            f"ready: broker {city.settings.bootstrap_servers}, registry {city.settings.registry_url}. Ctrl-C stops."
        )
        published = total if demo else 0
        if exit_after_start:
            if city.router:  # show the samples routed before leaving
                deadline = time.monotonic() + 30
                while city.router.routers[None].stats.records_in < published and time.monotonic() < deadline:
                    time.sleep(0.1)
            typer.echo(city.summary(published))
            return
        _wait_for_ctrl_c(lambda: typer.echo(city.summary(published)))
