"""The router against the real broker and registry."""

from __future__ import annotations

import random
import struct
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from ruamel.yaml import YAML

from bus.consume.tail import tail
from bus.demo.samples import GENERATORS
from bus.kafka.admin import delete_topics
from bus.kafka.config import KafkaSettings, producer_config
from bus.publish import Publisher
from bus.routing.router import SRC_HEADER, Router
from bus.schemas.records import to_datum, to_json
from bus.topology.names import router_dlq_topic
from bus.topology.validate import load_topology
from tests.e2e.sinks import matches
from tests.fixtures.city import REPO, City


def wait_until(condition, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


class RunningRouter:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.stop = threading.Event()
        self.thread = threading.Thread(target=router.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Router:
        self.thread.start()
        return self.router

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_every_subscription_gets_exactly_its_records(city: City) -> None:
    # The expectation is computed from topology.yaml as written (its filters evaluated by the
    # e2e tests' own matcher, its field lists), not with the router's predicates and projections.
    rng = random.Random(2026)
    published: dict[str, dict[str, dict]] = defaultdict(dict)  # event type -> ce_id -> record as JSON
    with Publisher(city.topology, city.settings) as publisher:
        for et in city.topology.event_types:
            schema = city.topology.schema_for(et.name)
            for _ in range(60):
                record = GENERATORS[et.name](rng)
                done = publisher.publish(et.name, et.owner, record)
                published[et.name][done.ce_id] = to_json(to_datum(schema, record))
    total = sum(len(v) for v in published.values())
    router = Router(city.topology, city.settings, environ={"BUS_HASH_MASTER_KEY": "test"})
    with RunningRouter(router):
        wait_until(lambda: router.stats.records_in >= total, what=f"{total} records routed")

    written = YAML(typ="safe").load(city.path.read_text(encoding="utf-8"))
    personal = {et.name: {f.path for f in city.topology.schema_for(et.name).personal_fields()}
                for et in city.topology.event_types}
    traces = {}
    for et in city.topology.event_types:
        for msg in _read_raw(city.settings, et.topic):
            headers = {k: v.decode() for k, v in msg.headers()}
            traces[headers["ce_id"]] = headers["ce_traceparent"]
    assert len(traces) == total

    served = 0
    for sub in written["subscriptions"]:
        event_type = sub["event_type"]
        topic = city.topology.subscription(sub["name"]).topic
        records = published[event_type]
        expected = {ce_id for ce_id, record in records.items() if matches(sub.get("filter"), record)}
        got = {}
        for g in tail(city.settings, [topic], exit_at_end=True):
            assert g.headers["ce_id"] not in got, f"{sub['name']}: duplicate {g.headers['ce_id']}"
            got[g.headers["ce_id"]] = g
            assert g.headers[SRC_HEADER].startswith(f"{city.topology.event_type(event_type).topic}:")
            assert g.headers["ce_traceparent"] == traces[g.headers["ce_id"]]
        assert set(got) == expected, sub["name"]
        served += bool(expected)
        every = list(next(iter(records.values())))
        for ce_id, g in got.items():
            if "fields" in sub:  # the selected fields, in the event's order
                assert list(g.value) == [f for f in every if f in sub["fields"]], sub["name"]
            else:  # every field the department may see: all but personal ones it is not entitled to
                assert [f for f in every if f not in personal[event_type]] == [
                    f for f in g.value if f not in personal[event_type]], sub["name"]
                assert set(g.value) <= set(every), sub["name"]
            for name in g.value:  # what is not personal data arrives as published
                if name not in personal[event_type]:
                    assert g.value[name] == records[ce_id][name], (sub["name"], name)
    assert served >= 20, served  # of 29 with these 60 records a type: a check of empty topics would prove little


@pytest.fixture
def small_city(tmp_path: Path, registry_settings: KafkaSettings, unique_name) -> Iterator[tuple]:
    namespace = unique_name("small").replace("-", "_").lower()
    doc = {
        "version": 1,
        "city": {"name": "Small"},
        "namespace": namespace,
        "schemas_dir": str(REPO / "schemas"),
        "departments": [{"name": "police", "title": "Police"}, {"name": "city_management", "title": "City management"}],
        "event_types": [{"name": "camera_status", "schema": "surveillance/camera_status.avsc", "owner": "police",
                         "key": "camera_id", "partitions": 3}],
        "subscriptions": [
            {"name": "mirror", "department": "city_management", "event_type": "camera_status",
             "description": "Everything, untouched."},
            {"name": "offline", "department": "city_management", "event_type": "camera_status",
             "description": "Offline cameras only.", "filter": {"field": "status", "eq": "OFFLINE"},
             "fields": ["camera_id", "status", "reported_at"]},
        ],
    }
    path = tmp_path / "topology.yaml"
    with path.open("w") as out:
        YAML().dump(doc, out)
    topology = load_topology(path)
    yield topology, registry_settings
    delete_topics(registry_settings, [et.topic for et in topology.event_types]
                  + [s.topic for s in topology.subscriptions] + [router_dlq_topic(topology.namespace)])


def test_untouched_subscription_passes_bytes_through_without_decoding(small_city: tuple) -> None:
    topology, settings = small_city
    rng = random.Random(5)
    with Publisher(topology, settings) as publisher:
        statuses = [GENERATORS["camera_status"](rng) | {"status": s} for s in ["OFFLINE", "ONLINE", "OFFLINE", "DEGRADED"]]
        for record in statuses:
            publisher.publish("camera_status", "police", record)
    # A value whose schema id no registry knows: nothing can decode it.
    garbage = b"\x00" + struct.pack(">I", 987654) + b"\x01\x02junk"
    producer = Producer(producer_config(settings, client_id="test"))
    producer.produce(topology.event_type("camera_status").topic, key=b"CAM-XX-1", value=garbage, headers=[("ce_id", b"garbage")])
    producer.flush(10)

    router = Router(topology, settings)
    mirror, offline = router.routes["camera_status"]
    assert mirror.untouched and not offline.untouched
    with RunningRouter(router):
        wait_until(lambda: router.stats.records_in >= 5, what="5 records routed")
        wait_until(lambda: router.stats.transactions >= 1, what="a committed transaction")

    canonical_raw = {(m.key(), m.value()) for m in _read_raw(settings, topology.event_type("camera_status").topic)}
    mirror_raw = {(m.key(), m.value()) for m in _read_raw(settings, mirror.topic)}
    assert mirror_raw == canonical_raw  # byte for byte, the undecodable one included
    assert (b"CAM-XX-1", garbage) in mirror_raw

    offline_records = list(tail(settings, [offline.topic], exit_at_end=True))
    assert [r.value["status"] for r in offline_records] == ["OFFLINE", "OFFLINE"]
    assert set(offline_records[0].value) == {"camera_id", "status", "reported_at"}

    dead = _read_raw(settings, router_dlq_topic(topology.namespace))
    assert len(dead) == 1
    headers = dict(dead[0].headers())
    assert dead[0].value() == garbage
    assert headers["__connect.errors.topic"].decode() == topology.event_type("camera_status").topic
    assert headers["__connect.errors.exception.class.name"]
    assert headers["__connect.errors.connector.name"] == b"bus-router"
    assert router.stats.dead_letters == 1


def _read_raw(settings: KafkaSettings, topic: str) -> list:
    """Every record of ``topic`` up to its real ends (past the embedded broker's high
    watermark: the processors, for one, write canonical city cases in batches)."""
    from confluent_kafka import Consumer, TopicPartition

    from bus.kafka.admin import admin
    from bus.kafka.config import consumer_config
    from bus.kafka.ends import ends_past_last_batch

    partitions = admin(settings).list_topics(topic, timeout=10).topics[topic].partitions
    consumer = Consumer(consumer_config(settings, group_id="raw", client_id="raw"))
    out = []
    try:
        reported = {(topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in partitions}
        ends = {p: end for (_, p), end in ends_past_last_batch(settings, reported).items()}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        deadline = time.monotonic() + 20
        while True:
            positions = consumer.position([TopicPartition(topic, p) for p in partitions])
            if all(tp.offset >= ends[tp.partition] or ends[tp.partition] == 0 for tp in positions):
                return out
            if time.monotonic() > deadline:  # a partial read would pass for a short topic
                raise AssertionError(f"read {len(out)} records of {topic} in 20 s, not to its ends {ends}")
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg)
    finally:
        consumer.close()


def test_router_reports_to_the_monitor(small_city: tuple) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    from bus.ops.metrics import BusMonitor

    topology, settings = small_city
    with Publisher(topology, settings) as publisher:
        for status in ["OFFLINE", "ONLINE", "OFFLINE"]:
            publisher.publish("camera_status", "police", GENERATORS["camera_status"](random.Random(3)) | {"status": status})
    monitor = BusMonitor()
    router = Router(topology, settings, monitor=monitor)
    with RunningRouter(router):
        wait_until(lambda: router.stats.committed_in >= 3, what="3 records committed")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(monitor.render().decode())
        for s in family.samples
    }
    canonical = topology.event_type("camera_status").topic
    assert samples[("bus_records_in_total", (("topic", canonical),))] == 3
    mirror, offline = router.routes["camera_status"]
    out = {labels: v for (name, labels), v in samples.items() if name == "bus_records_out_total"}
    assert out[(("department", "city_management"), ("subscription", "mirror"), ("topic", mirror.topic))] == 3
    assert out[(("department", "city_management"), ("subscription", "offline"), ("topic", offline.topic))] == 2
    assert any(name == "bus_router_transaction_seconds_count" and v >= 1 for (name, _), v in samples.items())


class _FailFirstCommit:
    """The router's producer, except that the first commit fails with an error that
    requires aborting the transaction (as a broker may answer under load)."""

    def __init__(self, producer) -> None:
        self._producer = producer
        self.failed = False

    def commit_transaction(self, *args):
        if not self.failed:
            self.failed = True
            self._producer.flush(10)  # the outputs reached the broker before the failure
            from confluent_kafka import KafkaError, KafkaException

            raise KafkaException(KafkaError(KafkaError._STATE, "injected: abort required", txn_requires_abort=True))
        return self._producer.commit_transaction(*args)

    def __getattr__(self, name):
        return getattr(self._producer, name)


class _RouterFailingOnce(Router):
    def _open(self) -> None:
        super()._open()
        self.wrapper = _FailFirstCommit(self._producer)
        self._producer = self.wrapper  # type: ignore[assignment]


@pytest.mark.embedded
@pytest.mark.parametrize("one_camera", [False, True], ids=["many-cameras", "one-camera"])
def test_an_aborted_transaction_is_routed_again_without_duplicates(small_city: tuple, one_camera: bool) -> None:
    """One camera: the aborted transaction's outputs are one multi-record batch per output
    partition (routed outputs are batched on the embedded broker too)."""
    topology, settings = small_city
    rng = random.Random(11)
    with Publisher(topology, settings) as publisher:
        for _ in range(20):
            record = GENERATORS["camera_status"](rng) | {"status": "OFFLINE"}
            publisher.publish("camera_status", "police", record | ({"camera_id": "CAM-SD-00042"} if one_camera else {}))
    router = _RouterFailingOnce(topology, settings)
    with RunningRouter(router):
        wait_until(lambda: router.stats.committed_in >= 20, what="20 records committed after the abort")
    assert router.wrapper.failed
    for route in router.routes["camera_status"]:
        ids = [r.headers["ce_id"] for r in tail(settings, [route.topic], exit_at_end=True)]
        assert len(ids) == 20 and len(set(ids)) == 20, f"{route.subscription}: {len(ids)} records, {len(set(ids))} distinct"


@pytest.mark.embedded
def test_a_batch_that_routes_nothing_still_commits_its_position(small_city: tuple) -> None:
    """Records every route filters out leave no outputs to commit with. The position is
    committed all the same (on Kafka in a transaction of offsets only; on the embedded broker,
    which drops the offsets of a transaction that wrote nothing, by the consumer), so the group
    ends caught up and a restart does not read them again."""
    from confluent_kafka import Consumer, TopicPartition

    from bus.kafka.config import consumer_config

    topology, settings = small_city
    rng = random.Random(17)
    with Publisher(topology, settings) as publisher:
        for _ in range(6):
            publisher.publish("camera_status", "police", GENERATORS["camera_status"](rng) | {"status": "ONLINE"})
    topic = topology.event_type("camera_status").topic
    partitions = [TopicPartition(topic, p) for p in range(topology.event_type("camera_status").partitions)]

    def committed_and_ends(group: str) -> list[tuple[int, int]]:
        consumer = Consumer(consumer_config(settings, group_id=group, client_id="test-probe"))
        try:
            return [(tp.offset, consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[1])
                    for tp in consumer.committed(partitions, timeout=10)]
        finally:
            consumer.close()

    router = Router(topology, settings, select=lambda s: s.name == "offline")  # ONLINE: filtered out
    with RunningRouter(router):
        wait_until(lambda: router.stats.committed_in >= 6, what="6 records committed")
        assert router.stats.records_out == 0
        assert (router.stats.transactions == 0) == settings.embedded, router.stats  # Kafka: offsets-only transactions
        rows = committed_and_ends(router.group)
        assert all(committed == end for committed, end in rows if end > 0), rows

        with Publisher(topology, settings) as publisher:  # an output: a transaction again
            publisher.publish("camera_status", "police", GENERATORS["camera_status"](rng) | {"status": "OFFLINE"})
        wait_until(lambda: router.stats.committed_out == 1, what="a transaction for the output")
    rows = committed_and_ends(router.group)
    assert sum(end for _, end in rows) == 7 and all(committed == end for committed, end in rows if end > 0), rows
    assert len(list(tail(settings, [router.routes["camera_status"][0].topic], exit_at_end=True))) == 1


class _FailFirstPositionCommit:
    """The router's consumer, except that its first commit fails (a rebalance under way)."""

    def __init__(self, consumer) -> None:
        self._consumer = consumer
        self.commits = 0

    def commit(self, *args, **kwargs):
        self.commits += 1
        if self.commits == 1:
            from confluent_kafka import KafkaError, KafkaException

            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS, "injected: rebalance in progress"))
        return self._consumer.commit(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._consumer, name)


class _RouterFailingPositionCommitOnce(Router):
    def _open(self) -> None:
        super()._open()
        self.wrapper = _FailFirstPositionCommit(self._consumer)
        self._consumer = self.wrapper  # type: ignore[assignment]


@pytest.mark.embedded
@pytest.mark.only_on("embedded", reason="on Kafka a batch without outputs commits its position in a transaction, "
                     "never from the consumer (test_input_offsets_are_committed_only_through_the_open_transaction)")
def test_a_failed_position_commit_reads_the_batch_again(small_city: tuple) -> None:
    """A batch without outputs whose position commit fails is read again (it routes nothing
    again) and committed then; the router goes on instead of failing."""
    topology, settings = small_city
    rng = random.Random(19)
    with Publisher(topology, settings) as publisher:
        for _ in range(4):
            publisher.publish("camera_status", "police", GENERATORS["camera_status"](rng) | {"status": "ONLINE"})
    router = _RouterFailingPositionCommitOnce(topology, settings, select=lambda s: s.name == "offline")
    with RunningRouter(router):
        wait_until(lambda: router.stats.committed_in >= 4, what="4 records committed after the failed commit")
    assert router.wrapper.commits >= 2
    assert router.stats.records_in > 4  # the failed batch was read again
    assert router.stats.records_out == 0 and router.stats.transactions == 0


class _CommitSpy:
    """Records how the router's consumer and producer commit: any consumer commit, and each
    producer call of the transaction protocol in order (the first commit fails with an error
    that requires aborting, as a broker may answer under load)."""

    def __init__(self, target, calls: list[str]) -> None:
        self._target = target
        self.calls = calls

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if name in ("commit", "store_offsets", "begin_transaction", "send_offsets_to_transaction",
                    "commit_transaction", "abort_transaction"):
            def spied(*args, **kwargs):
                if name == "commit_transaction" and "commit_transaction (fails)" not in self.calls:
                    self.calls.append("commit_transaction (fails)")
                    self._target.flush(10)
                    from confluent_kafka import KafkaError, KafkaException

                    raise KafkaException(KafkaError(KafkaError._STATE, "injected: abort required",
                                                    txn_requires_abort=True))
                self.calls.append(name)
                return attr(*args, **kwargs)
            return spied
        return attr


class _SpiedRouter(Router):
    def _open(self) -> None:
        super()._open()
        self.calls: list[str] = []
        self._consumer = _CommitSpy(self._consumer, self.calls)  # type: ignore[assignment]
        self._producer = _CommitSpy(self._producer, self.calls)  # type: ignore[assignment]


@pytest.mark.only_on("kafka", reason="the embedded broker drops the offsets of a transaction that wrote no record: "
                     "there a batch without outputs is committed by the consumer")
def test_input_offsets_are_committed_only_through_the_open_transaction(small_city: tuple) -> None:
    """Batches with outputs, batches whose records are all filtered out, and an aborted
    transaction: the router's consumer never commits, and every input offset reaches the
    group through send_offsets_to_transaction inside an open transaction that commits (or
    aborts, and the batch is routed again). The group ends caught up, every output once."""
    from confluent_kafka import Consumer, TopicPartition

    from bus.kafka.config import consumer_config

    topology, settings = small_city
    rng = random.Random(23)
    statuses = ["ONLINE"] * 6 + ["OFFLINE"] * 6 + ["ONLINE"] * 6
    router = _SpiedRouter(topology, settings, select=lambda s: s.name == "offline")  # ONLINE: filtered out
    with RunningRouter(router), Publisher(topology, settings) as publisher:
        for n, status in enumerate(statuses, 1):  # three batches at least: without outputs, with, without
            publisher.publish("camera_status", "police", GENERATORS["camera_status"](rng) | {"status": status})
            if n % 6 == 0:
                wait_until(lambda: router.stats.committed_in >= n, what=f"{n} records committed")
    calls = router.calls
    assert "commit" not in calls and "store_offsets" not in calls, calls
    assert "commit_transaction (fails)" in calls and "abort_transaction" in calls, calls
    open_transaction = False
    for call in calls:
        if call == "begin_transaction":
            assert not open_transaction, calls
            open_transaction = True
        elif call == "send_offsets_to_transaction":
            assert open_transaction, f"offsets sent outside a transaction: {calls}"
        elif call in ("commit_transaction", "abort_transaction"):
            assert open_transaction, calls
            open_transaction = False
    assert router.stats.transactions >= 3  # with outputs and without
    topic = topology.event_type("camera_status").topic
    partitions = [TopicPartition(topic, p) for p in range(topology.event_type("camera_status").partitions)]
    consumer = Consumer(consumer_config(settings, group_id=router.group, client_id="test-probe"))
    try:
        rows = [(tp.offset, consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)[1])
                for tp in consumer.committed(partitions, timeout=10)]
    finally:
        consumer.close()
    assert all(committed == end for committed, end in rows if end > 0), rows
    ids = [r.headers["ce_id"] for r in tail(settings, [router.routes["camera_status"][0].topic], exit_at_end=True)]
    assert len(ids) == 6 and len(set(ids)) == 6
