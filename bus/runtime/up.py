"""`bus up`: the broker (embedded unless BUS_BOOTSTRAP_SERVERS names a cluster), the
embedded registry (unless BUS_REGISTRY_URL names one), the city's topics and schemas, the
router, the connectors of the topology, the stateful processors, the ops endpoints, and
with ``demo`` a sample of every event type published by its owner department.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bus.demo.samples import sample
from bus.kafka.admin import TopicSpec, ensure_topics, wait_for_broker
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.local import LocalKafka, default_data_dir
from bus.kafka.config import KafkaSettings
from bus.publish import Publisher
from bus.registry.client import registry_client
from bus.registry.server import EmbeddedRegistry
from bus.ops.metrics import BusMonitor
from bus.routing.service import RoutingService
from bus.runtime.parts import Connectors, Processors, running_connectors, running_processors
from bus.connect.registry import KIT_CHECKS
from bus.topology.validate import load_topology
from bus.web.cluster import ClusterProvider
from bus.web.ops import OpsServer, broker_check, registry_check
from bus.web.page import PageServer
from bus.registry.registration import ensure_registered
from bus.topology.models import Topology

Say = Callable[[str], None]


@dataclass
class RunningCity:
    settings: KafkaSettings
    topology: Topology
    broker: EmbeddedBroker | LocalKafka | None
    registry: EmbeddedRegistry | None
    router: RoutingService | None = None
    monitor: BusMonitor | None = None
    ops: OpsServer | None = None
    page: PageServer | None = None
    provider: ClusterProvider | None = None
    connectors: Connectors | None = None
    processors: Processors | None = None

    def summary(self, published: int) -> str:
        """One line: published, routed, delivered, dead letters, worst lag, and what is down."""
        counts = {"published": published, "delivered": 0, "dead_lettered": 0}
        if self.connectors is not None:
            for runner in self.connectors.running.values():
                snapshot = runner.status().counts
                for name in counts:
                    counts[name] += int(snapshot.get(name, 0))
        parts = [f"{counts['published']} published"]
        if self.router is None:
            parts.append("no router")
        else:
            stats, shared = self.router.stats, self.router.routers[None].stats
            lanes = stats.records_in - shared.records_in
            parts.append(f"{shared.records_in} routed in" + (f" (+{lanes} read by backfill lanes)" if lanes else "")
                         + f", {stats.records_out} out")
            counts["dead_lettered"] += stats.dead_letters
            if self.router.restarts:
                parts[-1] += f" (router restarted {sum(self.router.restarts.values())} times after failures)"
        parts.append(f"{counts['delivered']} delivered, {counts['dead_lettered']} dead letters")
        if self.provider is not None:
            lagging = [s for s in self.provider.state().streams if s.lag]
            worst = max(lagging, key=lambda s: s.lag or 0, default=None)
            parts.append(f"worst lag {worst.lag} ({worst.subscription or worst.group})" if worst else "no lag")
        if self.connectors is not None:
            states = self.connectors.states()
            up = sum(1 for state in states.values() if state == "running")
            parts.append(f"connectors {up}/{len(states)} running")
        if self.processors is not None:
            parts.append("processors " + self.processors.describe())
        return "status: " + ", ".join(parts[:2]) + "; " + "; ".join(parts[2:])


def prepare_topics_and_schemas(topology: Topology, settings: KafkaSettings, say: Say) -> None:
    """Create every canonical topic and register every event schema (idempotent)."""
    created = ensure_topics(settings, [TopicSpec(et.topic, et.partitions) for et in topology.event_types])
    say(f"topics: {len(topology.event_types)} canonical topics ready ({len(created)} created)")
    client = registry_client(settings)
    for et in topology.event_types:
        schema_id = ensure_registered(client, et.subject, topology.schema_for(et.name).canonical_json(), str(et.compatibility))
        say(f"schema: {et.subject} registered as id {schema_id} ({et.compatibility})")


@contextlib.contextmanager
def run_city(
    topology_path: Path,
    *,
    settings: KafkaSettings | None = None,
    start_broker: bool | None = None,
    start_registry: bool | None = None,
    engine: Literal["embedded", "kafka"] = "embedded",
    data_dir: Path | None = None,
    nodes: int = 1,
    broker_port: int | None = None,
    registry_port: int | None = None,
    with_router: bool = True,
    with_connectors: bool = False,
    with_processors: bool = False,
    web_host: str = "127.0.0.1",
    web_port: int | None = None,
    page_port: int | None = None,
    say: Say = print,
) -> Iterator[RunningCity]:
    """Start the city's infrastructure; stop it all when the block ends.

    By default a broker starts unless ``BUS_BOOTSTRAP_SERVERS`` names a cluster: the embedded
    one (memory only), or with ``engine="kafka"`` a local Apache Kafka of ``nodes`` nodes,
    durable in ``data_dir`` (:func:`bus.kafka.local.default_data_dir` when None). The
    embedded registry starts unless ``BUS_REGISTRY_URL`` names one."""
    if start_broker is None:
        start_broker = not os.environ.get("BUS_BOOTSTRAP_SERVERS")
    if start_registry is None:
        start_registry = not os.environ.get("BUS_REGISTRY_URL")
    topology = load_topology(topology_path, KIT_CHECKS)
    say(f"topology: {topology_path} ({len(topology.departments)} departments, "
        f"{len(topology.event_types)} event types, {len(topology.subscriptions)} subscriptions)")
    settings = settings or KafkaSettings()
    with contextlib.ExitStack() as stack:
        broker = None
        if start_broker and engine == "kafka":
            folder = data_dir or default_data_dir(nodes)
            say(f"broker: starting Apache Kafka ({nodes} node{'s' if nodes > 1 else ''}, data in {folder}) ...")
            broker = stack.enter_context(LocalKafka(folder, nodes=nodes, port=broker_port, say=say))
            settings = settings.with_broker(broker.bootstrap_servers, embedded=False)
        elif start_broker:
            say("broker: starting the embedded Kafka broker (memory only: everything is lost when the bus stops; "
                "`bus up --broker kafka` keeps it) ...")
            broker = stack.enter_context(EmbeddedBroker(broker_port))
            settings = settings.with_broker(broker.bootstrap_servers, embedded=True)
        wait_for_broker(settings)
        say(f"broker: {settings.bootstrap_servers} ({settings.kafka_profile} profile)")
        registry = None
        if start_registry:
            say("registry: starting the embedded schema registry ...")
            registry = stack.enter_context(EmbeddedRegistry(settings, port=registry_port))
            settings = settings.with_registry(registry.url)
        say(f"registry: {settings.registry_url}")
        prepare_topics_and_schemas(topology, settings, say)
        city = RunningCity(settings, topology, broker, registry, monitor=BusMonitor())
        if with_router:
            city.router = stack.enter_context(_running_router(topology, settings, city.monitor, say))
        if with_processors:
            city.processors = stack.enter_context(running_processors(topology_path, settings, say))
        if with_connectors:
            city.connectors = stack.enter_context(running_connectors(topology, settings, city.monitor, say))
        if web_port is not None:
            checks = {"broker": broker_check(settings), "registry": registry_check(settings)}
            if city.router is not None:
                router = city.router
                checks["router"] = lambda: (router.is_assigned(), "assigned" if router.is_assigned() else "waiting for partitions")
            token = os.environ.get("BUS_WEB_TOKEN") or None
            city.ops = stack.enter_context(OpsServer(city.monitor, checks, host=web_host, port=web_port, token=token))
            say(f"ops: {city.ops.url}/healthz, /readyz, /metrics" + (" (token required)" if token else ""))
        if page_port is not None:
            token = os.environ.get("BUS_WEB_TOKEN") or None
            city.provider = stack.enter_context(ClusterProvider(topology, settings, monitor=city.monitor))
            city.page = stack.enter_context(PageServer(topology, city.provider, host=web_host, port=page_port,
                                                       token=token))
            say(f"page: {city.page.url}/  (the city's data flows, live lag, dead letters, connectors, cameras)")
        yield city
        say("stopping ...")


@contextlib.contextmanager
def _running_router(topology: Topology, settings: KafkaSettings, monitor: BusMonitor, say: Say) -> Iterator[RoutingService]:
    service = RoutingService(topology, settings, monitor=monitor)
    service.prepare()
    service.start()
    say(f"router: {len(service.subscriptions)} subscriptions ({len(service.routers) - 1} backfilling in lanes of "
        "their own); joining the router groups ...")
    if service.wait_assigned(30):
        say("router: assigned, routing (follows `bus apply`)")
    else:
        say("router: not assigned yet after 30 s; it keeps trying (check `bus lag`)")
    try:
        yield service
    finally:
        service.stop()


def publish_demo_samples(city: RunningCity, per_type: int, say: Say, seed: int | None = None) -> int:
    """Publish ``per_type`` sample records of every event type as its owner department."""
    rng = random.Random(seed)
    total = 0
    with Publisher(city.topology, city.settings, client_id="bus-demo") as publisher:
        for et in city.topology.event_types:
            for _ in range(per_type):
                publisher.publish(et.name, et.owner, sample(et.name, rng))
            total += per_type
            say(f"demo: published {per_type} {et.name} as {et.owner} to {et.topic}")
    return total
