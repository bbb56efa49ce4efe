"""The broker and registry a benchmark runs on, shared by `bus bench route`, `process` and
`connectors`.

- ``BUS_BOOTSTRAP_SERVERS`` set: that cluster (``existing``), whatever ``engine`` says;
- else ``engine="kafka"`` (the default): a local Apache Kafka node (:class:`LocalKafka`) in a
  temporary folder, started for the run and removed after it;
- else ``engine="embedded"``: the embedded broker (tansu, memory only).

A schema registry of the run's own (an embedded one on a fresh storage topic) serves the
benchmark's schemas. How long the broker took to start is reported, never measured.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from bus.kafka.admin import admin, delete_topics, wait_for_broker
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.config import KafkaSettings
from bus.kafka.distribution import KAFKA_VERSION
from bus.kafka.local import LocalKafka
from bus.registry.server import EmbeddedRegistry

Say = Callable[[str], None]
Engine = Literal["embedded", "kafka"]
ENGINES: tuple[Engine, ...] = ("kafka", "embedded")


@dataclass(frozen=True)
class BenchBroker:
    """Where a benchmark runs: client settings (the registry included) and what to report."""

    settings: KafkaSettings
    #: ``kafka`` (a local Apache Kafka started for the run), ``embedded``, or ``existing``.
    engine: str
    description: str
    broker_startup_s: float

    def report(self) -> dict[str, Any]:
        """The JSON fields every benchmark carries about its broker and machine."""
        return {
            "engine": self.engine,
            "broker": self.description,
            "broker_startup_s": round(self.broker_startup_s, 2),
            "cores": os.cpu_count(),
        }


@contextlib.contextmanager
def bench_broker(engine: Engine = "kafka", say: Say = print) -> Iterator[BenchBroker]:
    """Start (or name) the benchmark's broker and registry; stop what was started after."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}: write kafka or embedded")
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        if os.environ.get("BUS_BOOTSTRAP_SERVERS"):
            settings = KafkaSettings()
            kind, description = "existing", f"existing cluster at {settings.bootstrap_servers}"
        elif engine == "kafka":
            say(f"broker: starting Apache Kafka {KAFKA_VERSION} (1 node, temporary folder) ...")
            kafka = stack.enter_context(LocalKafka(nodes=1, say=say))
            settings = KafkaSettings().with_broker(kafka.bootstrap_servers, embedded=False)
            kind, description = "kafka", f"Apache Kafka {KAFKA_VERSION} (local, 1 node)"
        else:
            say("broker: starting the embedded broker (tansu, memory only) ...")
            embedded = stack.enter_context(EmbeddedBroker())
            settings = KafkaSettings().with_broker(embedded.bootstrap_servers, embedded=True)
            kind, description = "embedded", "embedded (tansu 0.6.0, memory only)"
        wait_for_broker(settings)
        startup_s = time.monotonic() - started
        say(f"broker: {description} at {settings.bootstrap_servers} ({settings.kafka_profile} profile), "
            f"up in {startup_s:.1f} s")
        topic = f"_bus_schemas_bench_{uuid.uuid4().hex[:6]}"
        if kind == "existing":  # leave a cluster we did not start as we found it (after the registry stopped)
            stack.callback(delete_topics, settings, [topic])
        registry = stack.enter_context(EmbeddedRegistry(settings, topic=topic))
        yield BenchBroker(settings.with_registry(registry.url), kind, description, startup_s)


@contextlib.contextmanager
def given_or_started(settings: KafkaSettings | None, engine: Engine, say: Say) -> Iterator[BenchBroker]:
    """``settings`` (a broker and registry the caller runs, e.g. a test session's), else
    :func:`bench_broker`."""
    if settings is None:
        with bench_broker(engine, say) as broker:
            yield broker
        return
    kind = "embedded" if settings.embedded else "existing"
    yield BenchBroker(settings, kind, f"given: {settings.bootstrap_servers} ({settings.kafka_profile} profile)", 0.0)


def drop_namespace(settings: KafkaSettings, namespace: str | None) -> None:
    """Delete the topics of ``namespace``: a benchmark's city, on a cluster it did not start."""
    topics = admin(settings).list_topics(timeout=10).topics
    delete_topics(settings, sorted(t for t in topics if namespace and t.startswith(f"{namespace}.")))
