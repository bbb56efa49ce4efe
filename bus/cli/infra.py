from __future__ import annotations

import contextlib
import enum
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer

from bus.cli.app import app
from bus.cli.options import TopologyOption, cli_settings
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.distribution import KAFKA_VERSION
from bus.kafka.local import LocalKafka, default_data_dir
from bus.kafka.config import KafkaSettings
from bus.errors import BusError
from bus.registry.server import serve_forever
from bus.serving import is_loopback
from bus.runtime.demo import demo_systems
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


class Engine(str, enum.Enum):
    embedded = "embedded"
    kafka = "kafka"


@app.command()
def broker(
    engine: Engine = typer.Argument(Engine.embedded, help="embedded: the embedded broker (tansu, memory only, no Java). "
                                    "kafka: Apache Kafka in KRaft mode (Java 17+; its jars come from Maven Central once)."),
    port: int = typer.Option(9092, "--port", help="Port on 127.0.0.1 (of the first node; the others take the next ones)."),
    nodes: int = typer.Option(1, "--nodes", help="kafka: 1, or 3 (topics at replication factor 3, min.insync.replicas 2)."),
    data: Optional[Path] = typer.Option(None, "--data", help="kafka: the data folder, kept across restarts "
                                        "(default: ~/.local/share/citybus/kafka, or kafka-3-nodes)."),
) -> None:
    """Run a Kafka broker in the foreground on loopback: the embedded one, or Apache Kafka."""
    if engine is Engine.embedded:
        if nodes != 1 or data is not None:
            raise BusError("the embedded broker has one node and keeps nothing on disk: --nodes and --data are for "
                           "`bus broker kafka`")
        running = EmbeddedBroker(port, die_with_parent=True).start()
        typer.echo(
            f"embedded Kafka broker on {running.bootstrap_servers} (pid {running.pid}, memory only: "
            f"everything is lost when it stops; log: {running.log_path}). Ctrl-C stops it."
        )
        try:
            _wait_for_ctrl_c()
        finally:
            running.stop()
        return
    folder = data or default_data_dir(nodes)
    kafka = LocalKafka(folder, nodes=nodes, port=port, say=typer.echo)
    typer.echo(f"kafka: starting Apache Kafka {KAFKA_VERSION}, {nodes} node{'s' if nodes > 1 else ''}, data in {folder} ...")
    with kafka:
        typer.echo(
            f"Apache Kafka {KAFKA_VERSION} on {kafka.bootstrap_servers} ({nodes} node{'s' if nodes > 1 else ''}, KRaft; "
            f"data: {folder}; logs: {folder}/node-*/kafka.log). Clients: BUS_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}. "
            "Ctrl-C stops it."
        )
        _wait_for_ctrl_c()
        typer.echo("kafka: stopping (controlled shutdown) ...")


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
    serve_forever(cli_settings(), host=host, port=port, topic=topic)


@app.command()
def up(
    demo: bool = typer.Option(False, "--demo", help="The demo city: simulated departments' systems (camera platform, camera devices, case system, population registry, webhook endpoints and databases) attached through the topology's connectors, and a sample of every event type."),
    simulators: bool = typer.Option(True, "--simulators/--no-simulators", help="With --demo: run the departments' simulated systems (else only the samples)."),
    samples: int = typer.Option(5, "--samples", help="With --demo: sample records per event type."),
    broker_engine: Optional[Engine] = typer.Option(None, "--broker", help="The broker to start (unless BUS_BOOTSTRAP_SERVERS names one): "
                                                   "embedded (memory only, no Java) or kafka (Apache Kafka, durable in --data) "
                                                   "(default: embedded with --demo, else kafka)."),
    data: Optional[Path] = typer.Option(None, "--data", help="With --broker kafka: the data folder, kept across restarts "
                                        "(default: ~/.local/share/citybus/kafka)."),
    nodes: int = typer.Option(1, "--nodes", help="With --broker kafka: 1 or 3 nodes."),
    broker_port: int = typer.Option(9092, "--broker-port", help="Port of the broker it starts."),
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
    connectors, the processors, the ops endpoints and the page (Ctrl-C stops)."""
    if not is_loopback(web_host) and not os.environ.get("BUS_WEB_TOKEN"):  # refuse before starting anything
        raise BusError(f"refusing to serve the ops endpoints and the page on {web_host} without a token: "
                       "set BUS_WEB_TOKEN, or bind to 127.0.0.1")
    engine = broker_engine or (Engine.embedded if demo else Engine.kafka)
    if engine is Engine.embedded and (data is not None or nodes != 1):
        raise BusError("--data and --nodes are for --broker kafka: the embedded broker has one node and keeps nothing "
                       "on disk")
    with contextlib.ExitStack() as stack:
        systems = stack.enter_context(demo_systems(topology, typer.echo)) if demo and simulators else None
        city = stack.enter_context(run_city(
            systems.topology_path if systems else topology,
            settings=KafkaSettings(),
            engine=engine.value,
            data_dir=data,
            nodes=nodes,
            broker_port=broker_port,
            registry_port=registry_port,
            web_host=web_host,
            web_port=web_port,
            page_port=page_port,
            with_connectors=connectors,
            with_processors=processors,
            say=typer.echo,
        ))
        published = 0
        if demo:
            published = publish_demo_samples(city, samples, typer.echo)
            typer.echo(f"demo: {published} sample records published; read them with `bus tail camera_alarm`")
        if systems is not None:
            systems.start()
            stack.callback(systems.stop_pushing)  # first thing on the way out: nothing arrives while the bus stops
            typer.echo("demo: the camera platform (HTTP ingest) and the camera devices (MQTT) are pushing; "
                       "the case system and the population registry are being read")
        where = f" Page: {city.page.url}/" if city.page else ""
        typer.echo(f"ready: broker {city.settings.bootstrap_servers}, registry {city.settings.registry_url}."
                   f"{where} Ctrl-C stops.")
        if exit_after_start:
            if city.router:  # show the samples routed before leaving
                deadline = time.monotonic() + 30
                while city.router.routers[None].stats.records_in < published and time.monotonic() < deadline:
                    time.sleep(0.1)
            typer.echo(city.summary(published))
            return
        _wait_for_ctrl_c(lambda: typer.echo(city.summary(published)))
