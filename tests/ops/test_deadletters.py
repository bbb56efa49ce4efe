"""`bus dlq list | show | replay` against the real broker and registry.

The round trip: a webhook sink delivers a subscription to a real endpoint on loopback that
refuses some records (422) -> dead letters; replayed while the endpoint still refuses
them -> dead-lettered again; the endpoint fixed -> replayed once each under their
CloudEvents id; a second replay sends nothing."""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog
from ruamel.yaml import YAML
from typer.testing import CliRunner, Result

from bus.cli import dlq  # noqa: F401  (registers `bus dlq`; bus.cli.app lists the command modules)
from bus.cli.app import app
from bus.connect import ConnectorRunner, DeadLetterQueue, RawRecord
from bus.kafka.compacted import AckedProducer
from bus.connect.dlq import context_headers
from bus.demo.samples import GENERATORS
from bus.errors import BusError
from bus.kafka.admin import TopicSpec, admin, delete_topics, ensure_topics
from bus.kafka.config import KafkaSettings
from bus.ops.deadletters import (
    DeadLetter,
    DeadLetterError,
    Selection,
    _batches,
    dead_letter_topics,
    parse_since,
    read_dead_letters,
)
from bus.topology.models import Topology
from tests.connectors.support import Endpoint, produce_wire_records, read_all, wait_until
from tests.fixtures.city import City
from bus.topology.names import dlq_topic, router_dlq_topic
from bus.topology.validate import load_topology

pytestmark = pytest.mark.integration

SINK = "fire-dispatch-webhook"
SOURCE = "camera-devices-mqtt"
HMAC_KEY = "dlq-test-hmac-key"
REFUSAL = "connectors.webhook_sink.EndpointAnswer"


@dataclass
class Refusing:
    """What the endpoint refuses (422): alarms whose id is in ``alarm_ids``."""

    alarm_ids: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, _number: int, _headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            return 422 if json.loads(body).get("alarm_id") in self.alarm_ids else 200

    def fix(self) -> None:
        with self.lock:
            self.alarm_ids.clear()


@dataclass
class DlqCity:
    city: City
    topology: Topology
    endpoint: Endpoint
    refusing: Refusing

    @property
    def settings(self) -> KafkaSettings:
        return self.city.settings

    @property
    def env(self) -> dict[str, str]:
        return {"BUS_BOOTSTRAP_SERVERS": self.settings.bootstrap_servers,
                "BUS_KAFKA_PROFILE": self.settings.kafka_profile or "embedded",
                "BUS_REGISTRY_URL": self.settings.registry_url, "BUS_TOPOLOGY": str(self.city.path)}

    def bus(self, *args: str) -> Result:
        """The command run in this process. Its root callback points the logs at the
        runner's captured stderr, which closes when the command ends: put them back after."""
        saved = structlog.get_config()
        try:
            return CliRunner().invoke(app, list(args), env=self.env)
        finally:
            structlog.configure(**saved)

    def letters(self, connector: str = SINK) -> list[DeadLetter]:
        topics = dead_letter_topics(self.topology, self.settings)
        return [d for d in read_dead_letters(self.settings, topics) if d.connector == connector]


@pytest.fixture
def dlq_city(city: City, monkeypatch: pytest.MonkeyPatch) -> Iterator[DlqCity]:
    """The demo city whose fire-dispatch webhook points at a real endpoint on loopback
    (errors.tolerance: all, short retries), and whose MQTT source dead-letters too."""
    monkeypatch.setenv("FIRE_DISPATCH_HMAC_KEY", HMAC_KEY)
    refusing = Refusing()
    endpoint = Endpoint(hmac_key=HMAC_KEY, answer=refusing.answer).start()
    yaml = YAML()
    doc = yaml.load(city.path.read_text(encoding="utf-8"))
    for connector in doc["connectors"]:
        if connector["name"] == SINK:
            connector["config"].update({"url": endpoint.url, "timeout_s": 5, "errors.tolerance": "all",
                                        "errors.retry.delay.max.ms": 600})
        if connector["name"] == SOURCE:
            connector["config"]["errors.tolerance"] = "all"
    with city.path.open("w", encoding="utf-8") as out:
        yaml.dump(doc, out)
    topology = load_topology(city.path)
    try:
        yield DlqCity(city, topology, endpoint, refusing)
    finally:
        endpoint.stop()
        namespace = topology.namespace
        topics = admin(city.settings).list_topics(timeout=10).topics
        delete_topics(city.settings, sorted(t for t in topics if namespace and t.startswith(f"{namespace}.")))


def alarms(n: int, seed: int = 11) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [GENERATORS["camera_alarm"](rng) | {"alarm_type": "FIRE_SMOKE", "severity": "HIGH"} for _ in range(n)]


def run_sink_until_dead_lettered(c: DlqCity, records: list[dict[str, Any]], refused: int) -> list[str]:
    """Put ``records`` on the subscription topic, run the sink until every one was answered
    and ``refused`` are dead letters; returns their ce ids."""
    topic = c.topology.subscription("fire-alarms").topic
    ensure_topics(c.settings, [TopicSpec(topic, 2)])
    produced = produce_wire_records(c.settings, c.topology, topic, records)
    runner = ConnectorRunner(c.topology.connector(SINK), c.topology, c.settings, status_interval_s=1.0)
    with runner:
        wait_until(lambda: {r.key for r in c.endpoint.snapshot()} >= {p.ce_id for p in produced}, 30,
                   "every record answered")
        wait_until(lambda: len(c.letters()) == refused, 30, f"{refused} dead letters")
    return [p.ce_id for p in produced]


def router_dead_letter(c: DlqCity) -> None:
    """A record the router could not decode, written as the router writes it."""
    topic = router_dlq_topic(c.topology.namespace)
    ensure_topics(c.settings, [TopicSpec(topic)])
    raw = RawRecord(c.topology.event_type("camera_alarm").topic, 0, 41, b"CAM-X", b"\x00\x00\x00\x03\xe7garbage")
    producer = AckedProducer(c.settings, client_id="test-router-dlq")
    try:
        producer.send(topic, key=raw.key, value=raw.value, headers=context_headers(
            raw, ValueError("schema id 999 is not known to the registry"), connector="bus-router", task_id=0,
            stage="TRANSFORMATION", class_name="bus.routing.router.Router"))
    finally:
        producer.close()


def test_dead_letters_are_listed_shown_and_replayed_once_each_under_their_cloud_events_id(dlq_city: DlqCity) -> None:
    c = dlq_city
    records = alarms(8)
    refused_ids = {records[i]["alarm_id"] for i in (1, 4, 6)}
    c.refusing.alarm_ids |= refused_ids
    ce_ids = run_sink_until_dead_lettered(c, records, refused=3)
    refused_ce = {ce for ce, r in zip(ce_ids, records) if r["alarm_id"] in refused_ids}
    assert c.endpoint.accepted_keys() == set(ce_ids) - refused_ce
    router_dead_letter(c)
    sub_topic = c.topology.subscription("fire-alarms").topic

    # list: one row per connector, original topic and error class
    listed = c.bus("dlq", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {(r["connector"], r["original_topic"], r["error_class"], r["dead_letters"], r["pending"]) for r in rows} == {
        (SINK, sub_topic, REFUSAL, 3, 3),
        ("bus-router", c.topology.event_type("camera_alarm").topic, "builtins.ValueError", 1, 1),
    }
    table = c.bus("dlq", "list")
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split() == ["CONNECTOR", "ORIGINAL", "TOPIC", "ERROR", "CLASS", "DEAD",
                                                    "LETTERS", "REPLAYED", "PENDING"]
    assert any(line.split() == [SINK, sub_topic, REFUSAL, "3", "0", "3"] for line in table.stdout.splitlines())
    assert "4 dead letter(s), 4 pending replay, in 2 topic(s)" in table.stdout

    # show: headers decoded, the error, the value decoded from the wire format
    shown = c.bus("dlq", "show", "--connector", SINK, "--json")
    assert shown.exit_code == 0, shown.output
    letters = [json.loads(line) for line in shown.stdout.splitlines()]
    assert {d["value"]["alarm_id"] for d in letters} == refused_ids
    for d in letters:
        assert d["value_format"] == "avro" and d["stage"] == "TASK_PUT" and d["error_class"] == REFUSAL
        assert "answered 422" in d["error_message"] and d["headers"]["ce_id"] == d["ce_id"] in refused_ce
        assert d["original"]["topic"] == sub_topic and d["replayed"] is None
        assert "__connect.errors.exception.stacktrace" in d["headers"]
    one = c.bus("dlq", "show", "--error", "EndpointAnswer", "-n", "1")
    assert one.exit_code == 0, one.output
    assert one.stdout.count("  error:     ") == 1 and "value (avro, schema id" in one.stdout
    assert "--json shows it" in one.stdout and "pending" in one.stdout
    router = c.bus("dlq", "show", "--connector", "bus-router", "--json")
    (bad,) = [json.loads(line) for line in router.stdout.splitlines()]
    assert bad["value_format"] in ("text", "base64") and "value_error" in bad and bad["stage"] == "TRANSFORMATION"
    assert c.bus("dlq", "show", "--error", "NoSuchError").stdout.strip() == "no dead letters match"

    # dry run: what would be sent, nothing sent
    answered = len(c.endpoint.snapshot())
    dry = c.bus("dlq", "replay", "--connector", SINK, "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    plan = json.loads(dry.stdout)
    assert (plan["to_send"], plan["sent"]) == (3, 0)
    assert {p["ce_id"] for p in plan["planned"]} == refused_ce
    assert len(c.endpoint.snapshot()) == answered

    # replayed while the endpoint still refuses: dead-lettered again, the old ones marked
    again = json.loads(c.bus("dlq", "replay", "--connector", SINK, "--json").stdout)
    assert (again["sent"], again["failed_again"]) == (0, 3)
    assert len(c.letters()) == 6
    assert all(d.original_topic == sub_topic for d in c.letters())

    # fixed: each refused record delivered once, under its CloudEvents id
    c.refusing.fix()
    fixed = c.bus("dlq", "replay", "--connector", SINK)
    assert fixed.exit_code == 0, fixed.output
    assert "sent 3" in fixed.stdout and "replayed 3/3" in fixed.stderr
    accepted = [r.key for r in c.endpoint.accepted()]
    assert sorted(accepted) == sorted(ce_ids)  # every record accepted exactly once
    assert all(c.endpoint.signed(r) for r in c.endpoint.accepted())

    # a second replay sends nothing
    answered = len(c.endpoint.snapshot())
    second = json.loads(c.bus("dlq", "replay", "--connector", SINK, "--json").stdout)
    assert (second["matched"], second["already_replayed"], second["sent"]) == (6, 6, 0)
    assert len(c.endpoint.snapshot()) == answered
    after = {(r["connector"], r["replayed"], r["pending"]) for r in
             (json.loads(line) for line in c.bus("dlq", "list", "--json").stdout.splitlines())}
    assert after == {(SINK, 6, 0), ("bus-router", 0, 1)}


def test_a_source_s_dead_letters_are_published_to_the_canonical_topic_with_a_stable_id(dlq_city: DlqCity) -> None:
    c = dlq_city
    rng = random.Random(3)
    status = GENERATORS["camera_status"](rng)
    topic = dlq_topic(c.topology.namespace, SOURCE)
    queue = DeadLetterQueue(c.settings, topic, connector=SOURCE).ensure()
    try:
        for payload in (json.dumps(status).encode(), b"{not json"):
            raw = RawRecord("cameras/CAM-1/status", None, None, b"cameras/CAM-1/status", payload,
                            (("mqtt_topic", b"cameras/CAM-1/status"),))
            queue.send(raw, ValueError("registry away"), stage="TASK_POLL", class_name="connectors.mqtt_source.MqttSource")
    finally:
        queue.close()
    canonical = c.topology.event_type("camera_status").topic

    dry = json.loads(c.bus("dlq", "replay", "--connector", SOURCE, "--dry-run", "--json").stdout)
    assert {p["to"] for p in dry["planned"]} == {canonical}

    first = c.bus("dlq", "replay", "--connector", SOURCE, "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert (report["sent"], report["failed_again"]) == (1, 1)  # the bad JSON is a new dead letter
    (published,) = read_all(c.settings, canonical, 1)
    headers = {k: v.decode() for k, v in published.headers()}
    assert headers["ce_type"] == "camera_status" and headers["ce_source"] == "police"
    assert headers["bus_dlq_replay"].startswith(f"{topic}/0/")
    letters = c.letters(SOURCE)
    assert len(letters) == 3 and letters[-1].error_class.endswith("NotReplayable")
    assert "not JSON" in letters[-1].error_message

    second = json.loads(c.bus("dlq", "replay", "--connector", SOURCE, "--json").stdout)
    assert (second["already_replayed"], second["sent"], second["failed_again"]) == (2, 0, 1)
    assert len(read_all(c.settings, canonical, 2, timeout_s=3)) == 1  # nothing published twice


def test_bad_arguments_give_clear_errors(dlq_city: DlqCity) -> None:
    c = dlq_city
    unknown = c.bus("dlq", "replay", "--connector", "fire-dispatch-webhok")
    assert isinstance(unknown.exception, BusError) and "fire-dispatch-webhook" in str(unknown.exception)
    router = c.bus("dlq", "replay", "--connector", "bus-router")
    assert isinstance(router.exception, DeadLetterError) and "cannot be replayed" in str(router.exception)
    since = c.bus("dlq", "show", "--since", "yesterday")
    assert isinstance(since.exception, DeadLetterError) and "15m" in str(since.exception)
    event_type = c.bus("dlq", "replay", "--connector", SINK, "--event-type", "camera_alarm")
    assert isinstance(event_type.exception, DeadLetterError) and "sink" in str(event_type.exception)
    foreign = c.bus("dlq", "replay", "--connector", SOURCE, "--event-type", "city_case")
    assert isinstance(foreign.exception, DeadLetterError) and "camera_status" in str(foreign.exception)
    both = c.bus("dlq", "show", "--connector", SINK, "--topic", "x")
    assert both.exit_code == 2 and "not both" in both.output
    missing = c.bus("dlq", "replay")
    assert missing.exit_code == 2 and "--connector" in missing.output
    empty = c.bus("dlq", "list")
    assert empty.exit_code == 0 and "nothing was dead-lettered" in empty.stdout


# -- pure logic ---------------------------------------------------------------------------------

NOW = dt.datetime(2026, 11, 23, 12, 0, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize(("text", "expected"), [
    ("90s", NOW - dt.timedelta(seconds=90)),
    ("15m", NOW - dt.timedelta(minutes=15)),
    ("2h", NOW - dt.timedelta(hours=2)),
    ("7d", NOW - dt.timedelta(days=7)),
    ("2026-11-23T08:00:00Z", dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)),
    ("2026-11-23T08:00:00", dt.datetime(2026, 11, 23, 8, tzinfo=dt.timezone.utc)),
    ("2026-11-23T08:00:00+08:00", dt.datetime(2026, 11, 23, 0, tzinfo=dt.timezone.utc)),
])
def test_since_takes_a_duration_or_an_iso_time(text: str, expected: dt.datetime) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "15", "-5m", "2h ago", ""])
def test_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(DeadLetterError, match="neither a duration"):
        parse_since(text, NOW)


def letter(offset: int, *, connector: str = SINK, topic: str = "ns.sub", partition: int = 0,
           error: str = REFUSAL, at: dt.datetime = NOW) -> DeadLetter:
    headers = {"topic": topic, "partition": str(partition), "offset": str(offset * 10),
               "connector.name": connector, "exception.class.name": error}
    return DeadLetter("ns.bus-dlq-x", 0, offset, int(at.timestamp() * 1000), b"k", b"v",
                      tuple((f"__connect.errors.{k}", v.encode()) for k, v in headers.items()) + (("ce_id", b"id"),))


@pytest.mark.parametrize(("selection", "matches"), [
    (Selection(), True),
    (Selection(connector=SINK), True),
    (Selection(connector="other"), False),
    (Selection(topic="ns.sub"), True),
    (Selection(topic="ns.bus-dlq-x"), True),
    (Selection(topic="ns.other"), False),
    (Selection(error="EndpointAnswer"), True),
    (Selection(error=REFUSAL), True),
    (Selection(error="Answer"), False),
    (Selection(since=NOW - dt.timedelta(seconds=1)), True),
    (Selection(since=NOW + dt.timedelta(seconds=1)), False),
])
def test_selection(selection: Selection, matches: bool) -> None:
    assert selection.matches(letter(1)) is matches


def test_a_dead_letter_gives_back_the_original_record_without_context_headers() -> None:
    raw = letter(3, partition=2).original()
    assert (raw.topic, raw.partition, raw.offset, raw.headers) == ("ns.sub", 2, 30, (("ce_id", b"id"),))


def test_batches_keep_one_original_partition_each_and_a_size_limit() -> None:
    letters = [letter(i) for i in range(5)] + [letter(i, partition=1) for i in range(5, 7)]
    assert [[d.offset for d in b] for b in _batches(letters, 2)] == [[0, 1], [2, 3], [4], [5, 6]]
