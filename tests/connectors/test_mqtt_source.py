"""The MQTT source against the real Mosquitto, broker and registry.

Each test uses MQTT topics and a client id of its own (``bus-test-<uuid>/...``)."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from bus.connect import ConnectorRunner
from bus.consume.tail import tail
from bus.demo.samples import GENERATORS
from bus.topology.models import Connector
from tests.connectors.services import mqtt_address
from tests.connectors.support import entry_points, read_all, wait_until
from tests.fixtures.city import City
from bus.topology.names import dlq_topic


def source_entry_points() -> list[EntryPoint]:
    return [*entry_points(), EntryPoint("mqtt_source", "connectors.mqtt_source:MqttSource", "bus.connectors")]


@pytest.fixture
def prefix() -> str:
    return f"bus-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def device() -> Iterator[mqtt.Client]:
    """A camera device publishing at QoS 1."""
    host, port = mqtt_address()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"device-{uuid.uuid4().hex[:8]}")
    client.connect(host, port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def send(client: mqtt.Client, topic: str, payload: Any) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    info = client.publish(topic, body, qos=1)
    info.wait_for_publish(10)
    assert info.is_published()


@pytest.fixture
def mqtt_runner(connector_city: City, prefix: str) -> Iterator[Callable[..., ConnectorRunner]]:
    runners: list[ConnectorRunner] = []
    host, port = mqtt_address()

    def make(**config: Any) -> ConnectorRunner:
        connector = Connector.model_validate({
            "name": "camera-devices-mqtt", "type": "mqtt_source", "department": "police",
            "publishes": ["camera_alarm", "camera_status"],
            "config": {"host": host, "port": port, "topics": [f"{prefix}/cameras/#"],
                       "client_id": f"citybus-{prefix}", "session_expiry_s": 60,
                       "routes": [{"topic": f"{prefix}/cameras/+/alarm", "event_type": "camera_alarm"},
                                  {"topic": f"{prefix}/cameras/+/status", "event_type": "camera_status"}],
                       **config},
        })
        runner = ConnectorRunner(connector, connector_city.topology, connector_city.settings,
                                 entry_points=source_entry_points(), status_interval_s=1.0)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()
    # end the persistent session so the broker forgets it
    host, port = mqtt_address()
    cleaner = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"citybus-{prefix}", clean_session=True)
    try:
        cleaner.connect(host, port)
        cleaner.loop_start()
        cleaner.disconnect()
        cleaner.loop_stop()
    except OSError:
        pass


def on_topic(city: City, event_type: str) -> list[Any]:
    return list(tail(city.settings, [city.topology.event_type(event_type).topic], exit_at_end=True))


def test_messages_are_mapped_by_topic_pattern_and_published(
    connector_city: City, prefix: str, device: mqtt.Client, mqtt_runner: Callable[..., ConnectorRunner],
) -> None:
    runner = mqtt_runner().start()
    rng = random.Random(5)
    statuses = [GENERATORS["camera_status"](rng) for _ in range(3)]
    alarm = GENERATORS["camera_alarm"](rng)
    for status in statuses:
        send(device, f"{prefix}/cameras/{status['camera_id']}/status", status)
    send(device, f"{prefix}/cameras/{alarm['camera_id']}/alarm", alarm)

    wait_until(lambda: runner.status().counts.get("published", 0) == 4, 20, "four records published")
    got = on_topic(connector_city, "camera_status")
    assert sorted(g.value["camera_id"] for g in got) == sorted(s["camera_id"] for s in statuses)
    assert {g.headers["ce_source"] for g in got} == {"police"}
    alarms = on_topic(connector_city, "camera_alarm")
    assert [a.value["alarm_id"] for a in alarms] == [alarm["alarm_id"]]


def test_a_type_field_in_the_payload_chooses_the_event_type(
    connector_city: City, prefix: str, device: mqtt.Client, mqtt_runner: Callable[..., ConnectorRunner],
) -> None:
    runner = mqtt_runner(routes=[], type_field="kind_of_message",
                         type_values={"alarm": "camera_alarm", "status": "camera_status"}).start()
    rng = random.Random(9)
    alarm, status = GENERATORS["camera_alarm"](rng), GENERATORS["camera_status"](rng)
    send(device, f"{prefix}/cameras/gw-1/up", alarm | {"kind_of_message": "alarm"})
    send(device, f"{prefix}/cameras/gw-1/up", status | {"kind_of_message": "status"})
    wait_until(lambda: runner.status().counts.get("published", 0) == 2, 20, "two records published")
    assert [a.value["alarm_id"] for a in on_topic(connector_city, "camera_alarm")] == [alarm["alarm_id"]]
    assert [s.value["camera_id"] for s in on_topic(connector_city, "camera_status")] == [status["camera_id"]]


def test_bad_payloads_go_to_the_dead_letter_topic_with_their_mqtt_topic(
    connector_city: City, prefix: str, device: mqtt.Client, mqtt_runner: Callable[..., ConnectorRunner],
) -> None:
    runner = mqtt_runner().start()
    good = GENERATORS["camera_status"](random.Random(1))
    send(device, f"{prefix}/cameras/CAM-1/status", b"not json {")
    send(device, f"{prefix}/cameras/CAM-2/status", {"camera_id": "CAM-2", "status": "ON FIRE"})
    send(device, f"{prefix}/cameras/CAM-3/status", good)
    letters = read_all(connector_city.settings, dlq_topic(connector_city.topology.namespace, runner.name), 2)
    assert len(letters) == 2
    by_topic = {m.key().decode(): m for m in letters}
    assert set(by_topic) == {f"{prefix}/cameras/CAM-1/status", f"{prefix}/cameras/CAM-2/status"}
    first = by_topic[f"{prefix}/cameras/CAM-1/status"]
    headers = {k: v.decode() for k, v in first.headers()}
    assert first.value() == b"not json {"
    assert headers["mqtt_topic"] == f"{prefix}/cameras/CAM-1/status"
    assert headers["__connect.errors.topic"] == f"{prefix}/cameras/CAM-1/status"
    assert headers["__connect.errors.stage"] == "TASK_POLL"
    assert "not JSON" in headers["__connect.errors.exception.message"]
    second = {k: v.decode() for k, v in by_topic[f"{prefix}/cameras/CAM-2/status"].headers()}
    assert "camera_status" in second["__connect.errors.exception.message"]
    wait_until(lambda: runner.status().counts.get("published", 0) == 1, 20, "the good record")
    assert [s.value["camera_id"] for s in on_topic(connector_city, "camera_status")] == [good["camera_id"]]


def test_messages_sent_while_the_connector_is_down_are_delivered_when_it_returns(
    connector_city: City, prefix: str, device: mqtt.Client, mqtt_runner: Callable[..., ConnectorRunner],
) -> None:
    first = mqtt_runner().start()  # creates the persistent session and its subscription
    rng = random.Random(3)
    before = GENERATORS["camera_status"](rng)
    send(device, f"{prefix}/cameras/{before['camera_id']}/status", before)
    wait_until(lambda: first.status().counts.get("published", 0) == 1, 20, "the first record")
    first.stop()

    while_down = [GENERATORS["camera_status"](rng) for _ in range(5)]
    for status in while_down:
        send(device, f"{prefix}/cameras/{status['camera_id']}/status", status)

    second = mqtt_runner().start()
    wait_until(lambda: second.status().counts.get("published", 0) == 5, 20, "the records sent while it was down")
    got = on_topic(connector_city, "camera_status")
    assert sorted(g.value["camera_id"] for g in got) == sorted(s["camera_id"] for s in [before, *while_down])
