"""The webhook sink against the real broker and registry and a real endpoint on loopback.

Records are put on a topic of the test in the wire format with CloudEvents headers, as
the router puts them on a subscription topic."""

from __future__ import annotations

import random
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from bus.connect import ConnectorRunner
from bus.demo.samples import GENERATORS
from bus.topology.models import Connector
from tests.connectors.support import (
    Endpoint,
    Produced,
    committed,
    entry_points,
    produce_raw,
    produce_wire_records,
    read_all,
    wait_until,
)
from tests.fixtures.city import City
from bus.topology.names import dlq_topic

HMAC_KEY = "fire-dispatch-test-key"
CAMERAS = ["CAM-CC-00001", "CAM-CC-00002", "CAM-NH-00003", "CAM-SD-00004"]


def alarms(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` alarms spread over a few cameras (keys), so order per key is visible."""
    rng = random.Random(seed)
    return [GENERATORS["camera_alarm"](rng) | {"camera_id": CAMERAS[i % len(CAMERAS)], "count": i} for i in range(n)]


@pytest.fixture
def sink_runner(connector_city: City, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ConnectorRunner]]:
    monkeypatch.setenv("TEST_WEBHOOK_HMAC_KEY", HMAC_KEY)
    runners: list[ConnectorRunner] = []

    def make(endpoint: Endpoint, topic: str, *, name: str = "fire-dispatch-webhook", **config: Any) -> ConnectorRunner:
        connector = Connector.model_validate({
            "name": name, "type": "http_webhook_sink", "department": "fire_brigade", "subscription": "fire-alarms",
            "config": {"url": endpoint.url, "hmac_key": "env:TEST_WEBHOOK_HMAC_KEY", "timeout_s": 5,
                       "errors.retry.delay.max.ms": 600, **config},
        })
        runner = ConnectorRunner(connector, connector_city.topology, connector_city.settings, topic=topic,
                                 entry_points=entry_points(), status_interval_s=1.0)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()


def per_key_order(produced: list[Produced]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = defaultdict(list)
    for p in produced:
        order[p.key].append(p.ce_id)
    return dict(order)


def first_deliveries(endpoint: Endpoint) -> dict[str, list[str]]:
    """Per key (ce-subject), the idempotency keys in the order first accepted."""
    order: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for receipt in endpoint.accepted():
        if receipt.key not in seen:
            seen.add(receipt.key)
            order[receipt.headers["ce-subject"]].append(receipt.key)
    return dict(order)


def test_every_record_is_delivered_signed_with_its_idempotency_key_and_cloud_events_headers(
    connector_city: City, topic_factory: Callable[..., str], make_endpoint: Callable[..., Endpoint],
    sink_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub", partitions=2)
    produced = produce_wire_records(connector_city.settings, connector_city.topology, topic, alarms(12))
    endpoint = make_endpoint(hmac_key=HMAC_KEY)
    runner = sink_runner(endpoint, topic).start()
    wait_until(lambda: endpoint.accepted_keys() >= {p.ce_id for p in produced}, 30, "every record delivered")

    by_key = {r.key: r for r in endpoint.accepted()}
    for p in produced:
        receipt = by_key[p.ce_id]
        assert endpoint.signed(receipt)
        assert receipt.json()["alarm_id"] == p.record["alarm_id"]
        assert receipt.headers["content-type"] == "application/json"
        assert receipt.headers["ce-id"] == p.ce_id
        assert receipt.headers["ce-source"] == "police"
        assert receipt.headers["ce-type"] == "camera_alarm"
        assert receipt.headers["ce-specversion"] == "1.0"
        assert receipt.headers["ce-subject"] == p.key
        assert receipt.headers["traceparent"].startswith("00-")
    assert first_deliveries(endpoint) == per_key_order(produced)
    wait_until(lambda: sum(committed(connector_city.settings, runner.group_id, topic, 2)) == 12, 10, "commits")
    status = runner.status()
    assert status.state == "running" and status.counts["delivered"] == 12


def test_an_endpoint_that_fails_for_a_while_gets_every_record_once_in_key_order(
    connector_city: City, topic_factory: Callable[..., str], make_endpoint: Callable[..., Endpoint],
    sink_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub")
    produced = produce_wire_records(connector_city.settings, connector_city.topology, topic, alarms(16))
    endpoint = make_endpoint(hmac_key=HMAC_KEY, answer=lambda n, headers, body: 500 if n < 10 else 200)
    runner = sink_runner(endpoint, topic).start()
    wait_until(lambda: endpoint.accepted_keys() >= {p.ce_id for p in produced}, 30, "every record delivered")

    accepted = [r.key for r in endpoint.accepted()]
    assert sorted(accepted) == sorted(p.ce_id for p in produced)  # each accepted exactly once
    assert first_deliveries(endpoint) == per_key_order(produced)
    assert sum(1 for r in endpoint.snapshot() if r.status == 500) == 10
    assert runner.status().counts["retries"] >= 10
    wait_until(lambda: committed(connector_city.settings, runner.group_id, topic) == [16], 10, "commits")


def test_a_4xx_answer_and_an_undecodable_value_go_to_the_dead_letter_topic_with_connect_headers(
    connector_city: City, topic_factory: Callable[..., str], make_endpoint: Callable[..., Endpoint],
    sink_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub")
    records = alarms(6)
    rejected_id = records[2]["alarm_id"]
    produced = produce_wire_records(connector_city.settings, connector_city.topology, topic, records)
    produce_raw(connector_city.settings, topic, b"CAM-CC-00001", b"not the wire format")
    endpoint = make_endpoint(hmac_key=HMAC_KEY, answer=lambda n, h, body: 422 if rejected_id.encode() in body else 200)
    runner = sink_runner(endpoint, topic).start()
    dead_topic = dlq_topic(connector_city.topology.namespace, runner.name)

    letters = read_all(connector_city.settings, dead_topic, 2)
    assert len(letters) == 2
    by_stage = {dict(m.headers())["__connect.errors.stage"].decode(): m for m in letters}
    put = by_stage["TASK_PUT"]
    headers = {k: v.decode() for k, v in put.headers()}
    original = produced[2]
    assert put.key() == original.key.encode()
    assert headers["ce_id"] == original.ce_id  # the original headers are kept
    assert headers["__connect.errors.topic"] == topic
    assert headers["__connect.errors.partition"] == str(original.partition)
    assert headers["__connect.errors.offset"] == str(original.offset)
    assert headers["__connect.errors.connector.name"] == "fire-dispatch-webhook"
    assert headers["__connect.errors.task.id"] == "0"
    assert headers["__connect.errors.class.name"] == "connectors.webhook_sink.WebhookSink"
    assert headers["__connect.errors.exception.class.name"] == "connectors.webhook_sink.EndpointAnswer"
    assert "answered 422" in headers["__connect.errors.exception.message"]
    assert "Traceback" in headers["__connect.errors.exception.stacktrace"]

    converter = by_stage["VALUE_CONVERTER"]
    assert converter.value() == b"not the wire format"
    assert dict(converter.headers())["__connect.errors.offset"] == b"6"

    expected = {p.ce_id for p in produced} - {original.ce_id}
    # Keys are delivered concurrently: the dead letters may be written before the last deliveries.
    wait_until(lambda: endpoint.accepted_keys() >= expected, 10, "every other record delivered")
    assert endpoint.accepted_keys() == expected
    wait_until(lambda: committed(connector_city.settings, runner.group_id, topic) == [7], 10, "commits past them")
    assert runner.status().counts["dead_lettered"] == 2


def test_with_tolerance_none_a_4xx_stops_the_connector_before_the_record(
    connector_city: City, topic_factory: Callable[..., str], make_endpoint: Callable[..., Endpoint],
    sink_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub")
    records = [r | {"camera_id": CAMERAS[0]} for r in alarms(5)]  # one key: strictly one after the other
    produced = produce_wire_records(connector_city.settings, connector_city.topology, topic, records)
    bad = records[3]["alarm_id"].encode()
    endpoint = make_endpoint(hmac_key=HMAC_KEY, answer=lambda n, h, body: 400 if bad in body else 200)
    runner = sink_runner(endpoint, topic, **{"errors.tolerance": "none"}).start()

    assert runner.wait(30) == "failed"
    assert "errors.tolerance: none" in str(runner.error)
    assert "answered 400" in str(runner.error)
    assert [r.key for r in endpoint.accepted()] == [p.ce_id for p in produced[:3]]
    assert committed(connector_city.settings, runner.group_id, topic)[0] <= 3  # never past the failed record


def test_a_sink_stopped_mid_stream_resumes_from_its_committed_offsets_without_loss(
    connector_city: City, topic_factory: Callable[..., str], make_endpoint: Callable[..., Endpoint],
    sink_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub", partitions=2)
    produced = produce_wire_records(connector_city.settings, connector_city.topology, topic, alarms(40))
    gate = threading.Event()
    endpoint = make_endpoint(hmac_key=HMAC_KEY, hold_after=15, gate=gate)
    first = sink_runner(endpoint, topic).start()
    wait_until(lambda: len(endpoint.snapshot()) >= 12, 30, "the first deliveries")
    first.stop()  # requests in flight are abandoned: their batches are not committed
    gate.set()
    assert first.state == "stopped"
    delivered_before = endpoint.accepted_keys()
    assert len(delivered_before) < 40

    second = sink_runner(endpoint, topic).start()
    wait_until(lambda: endpoint.accepted_keys() >= {p.ce_id for p in produced}, 30, "the rest after the restart")
    assert first_deliveries(endpoint) == per_key_order(produced)
    wait_until(lambda: sum(committed(connector_city.settings, second.group_id, topic, 2)) == 40, 10, "commits")


def test_a_sink_started_before_its_topic_exists_delivers_once_the_topic_is_created(
    connector_city: City, unique_name: Callable[[str], str], make_endpoint: Callable[..., Endpoint],
    sink_runner: Callable[..., ConnectorRunner],
) -> None:
    from structlog.testing import capture_logs

    from bus.kafka.admin import TopicSpec, delete_topics, ensure_topics

    topic = unique_name("sub-not-yet")
    endpoint = make_endpoint(hmac_key=HMAC_KEY)
    with capture_logs() as logs:
        runner = sink_runner(endpoint, topic).start()  # as a supervisor may start it: before the router
        wait_until(lambda: any(e["event"].startswith("waiting for the subscription topic") for e in logs), 30,
                   "the sink to say what it waits for")
    try:
        ensure_topics(connector_city.settings, [TopicSpec(topic, 2)])
        produced = produce_wire_records(connector_city.settings, connector_city.topology, topic, alarms(6))
        # Without the wait, the consumer would learn of the topic at its next metadata refresh (5 min).
        wait_until(lambda: endpoint.accepted_keys() >= {p.ce_id for p in produced}, 30, "every record delivered")
        assert runner.state == "running"
    finally:
        runner.stop()
        delete_topics(connector_city.settings, [topic])
