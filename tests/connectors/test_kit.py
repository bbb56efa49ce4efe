"""The connector kit with small connectors of the tests' own: source positions in the
compacted offsets topic, backpressure, pause and resume, status from the status topic."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from confluent_kafka.admin import ConfigResource

from bus.connect import (
    Backpressure,
    ConnectorConfig,
    ConnectorRunner,
    OffsetStore,
    Sink,
    SinkBatch,
    Source,
    StatusStore,
)
from bus.consume.tail import tail
from bus.demo.samples import GENERATORS
from bus.kafka.admin import admin
from bus.topology.models import Connector
from tests.connectors.support import committed, produce_wire_records, wait_until
from tests.fixtures.city import City
from bus.topology.names import offsets_topic


class CountingConfig(ConnectorConfig):
    total: int = 0


class CountingSource(Source):
    """Publishes camera_status records numbered from its stored position up to `total`."""

    config_model: ClassVar[type[ConnectorConfig]] = CountingConfig

    def run(self) -> None:
        self.started_from = dict(self.position or {})  # the live position moves on as it publishes
        self.mark_ready()
        first = self.started_from.get("next", 0)
        assert isinstance(self.config, CountingConfig)
        for n in range(first, self.config.total):
            if not self.running:
                return
            record = GENERATORS["camera_status"](random.Random(n)) | {"camera_id": f"CAM-CC-{n:05d}"}
            self.produce("camera_status", record, position={"next": n + 1})
            self.flush()


class RecordingSink(Sink):
    """Keeps what it is given; pushes back the first batch once when told to."""

    push_back_once = False

    def setup(self) -> None:
        self.written: list[str] = []
        self.lock = threading.Lock()
        self.pushed_back = False

    def write(self, batch: SinkBatch) -> None:
        if self.push_back_once and not self.pushed_back:
            self.pushed_back = True
            raise Backpressure(0.3, batch.topic, batch.partition, "the test sink is full")
        with self.lock:
            self.written.extend(record.ce_id for record in batch)


class PushingBackSink(RecordingSink):
    push_back_once = True


class MetricsRecorder:
    """Receives the metric hooks, as the ops monitor does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, hook: str) -> Callable[..., None]:
        return lambda *args, **kwargs: self.calls.append((hook, args, kwargs))


@pytest.fixture
def runners() -> Iterator[list[ConnectorRunner]]:
    started: list[ConnectorRunner] = []
    yield started
    for runner in started:
        runner.stop()


def source_runner(city: City, total: int) -> ConnectorRunner:
    connector = Connector.model_validate({"name": "counter", "type": "counting", "department": "police",
                                          "publishes": ["camera_status"], "config": {"total": total}})
    return ConnectorRunner(connector, city.topology, city.settings, kind=CountingSource)


def sink_runner(city: City, topic: str, kind: type[Sink], metrics: object = None) -> ConnectorRunner:
    connector = Connector.model_validate({"name": "recorder", "type": "recording", "department": "fire_brigade",
                                          "subscription": "fire-alarms"})
    return ConnectorRunner(connector, city.topology, city.settings, kind=kind, topic=topic, status_interval_s=1.0,
                           metrics=metrics)  # type: ignore[arg-type]


def test_positions_are_stored_in_the_compacted_offsets_topic_and_read_back(connector_city: City) -> None:
    namespace = connector_city.topology.namespace
    writer = OffsetStore(connector_city.settings, namespace).ensure()
    writer.save("case-system-poller", {"updated_since": "2026-11-23T08:00:00+08:00", "id": "C-1"})
    writer.save("case-system-poller", {"updated_since": "2026-11-23T09:00:00+08:00", "id": "C-7"})
    writer.save("population-base-cdc", {"change_seq": 41})
    writer.close()

    reader = OffsetStore(connector_city.settings, namespace)  # another process, another machine
    assert reader.load("case-system-poller") == {"updated_since": "2026-11-23T09:00:00+08:00", "id": "C-7"}
    assert reader.load_all()["population-base-cdc"] == {"change_seq": 41}
    assert reader.load("never-ran") is None
    reader.forget("population-base-cdc")
    assert reader.load("population-base-cdc") is None
    reader.close()

    topic = offsets_topic(namespace)
    client = admin(connector_city.settings)  # kept: the futures need their client alive
    described = client.describe_configs([ConfigResource("topic", topic)])
    config = next(iter(described.values())).result(timeout=10)
    assert config["cleanup.policy"].value == "compact"


def test_a_restarted_source_resumes_from_its_stored_position(connector_city: City, runners: list) -> None:
    first = source_runner(connector_city, total=5)
    runners.append(first.start())
    assert first.wait(30) == "stopped"  # its input ended
    assert OffsetStore(connector_city.settings, connector_city.topology.namespace).load("counter") == {"next": 5}

    second = source_runner(connector_city, total=8)
    runners.append(second.start())
    assert second.wait(30) == "stopped"
    assert second.instance.started_from == {"next": 5}  # type: ignore[union-attr]

    topic = connector_city.topology.event_type("camera_status").topic
    got = sorted(r.value["camera_id"] for r in tail(connector_city.settings, [topic], exit_at_end=True))
    assert got == [f"CAM-CC-{n:05d}" for n in range(8)]  # each once: no gap, no repeat


def test_backpressure_pauses_the_partition_and_the_batch_is_given_again(
    connector_city: City, topic_factory: Callable[..., str], runners: list
) -> None:
    topic = topic_factory("sub")
    rng = random.Random(3)
    produced = produce_wire_records(connector_city.settings, connector_city.topology, topic,
                                    [GENERATORS["camera_alarm"](rng) for _ in range(6)])
    metrics = MetricsRecorder()
    runner = sink_runner(connector_city, topic, PushingBackSink, metrics)
    runners.append(runner.start())
    sink: Any = runner.instance
    wait_until(lambda: len(sink.written) == 6, 30, "the records after the pause")
    assert sink.pushed_back
    assert sink.written == [p.ce_id for p in produced]  # once each, in order
    assert runner.status().counts["backpressure"] == 1
    wait_until(lambda: committed(connector_city.settings, runner.group_id, topic) == [6], 10, "the commit")
    hooks = {hook for hook, _, _ in metrics.calls}
    assert {"on_record_in", "on_commit"} <= hooks
    assert ("on_commit", (runner.group_id, [(topic, 0, 6)]), {}) in metrics.calls


def test_pause_resume_and_status_are_seen_from_the_status_topic(
    connector_city: City, topic_factory: Callable[..., str], runners: list
) -> None:
    topic = topic_factory("sub")
    runner = sink_runner(connector_city, topic, RecordingSink)
    runners.append(runner.start())
    store = StatusStore(connector_city.settings, connector_city.topology.namespace)
    assert store.read_all()["recorder"].state == "running"

    runner.pause()
    status = store.read_all()["recorder"]
    assert status.state == "paused" and status.side == "sink" and status.department == "fire_brigade"
    produced = produce_wire_records(connector_city.settings, connector_city.topology, topic,
                                    [GENERATORS["camera_alarm"](random.Random(i)) for i in range(3)])
    runner.resume()
    sink: Any = runner.instance
    wait_until(lambda: len(sink.written) == 3, 30, "the records after resume")
    assert sink.written == [p.ce_id for p in produced]

    wait_until(lambda: store.read_all()["recorder"].counts.get("records_in") == 3, 10, "a heartbeat with counts")
    runner.stop()
    final = store.read_all()["recorder"]
    assert final.state == "stopped" and not final.stale()
    assert final.position == {f"{topic}[0]": 3}
    store.close()
