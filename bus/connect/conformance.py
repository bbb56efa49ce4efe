"""The connector conformance suite: what every connector type must do, whatever its peer
(Redpanda Connect runs all its connectors through one ``integration.StreamTests``). Every
connector type of this repository passes it, and so can a department's own: see
docs/connectors.md.

The checks:

- :func:`check_config_model`: every setting (nested ones too) has a description and an
  example, a valid config has no problem, an unknown key (top level and inside nested
  settings) is refused by name;
- :func:`check_live`, one live session per type (every start of a sink costs a consumer
  group join, so the steps share them):
  start -> ``running``; good inputs are delivered; a bad input goes to the connector's
  dead-letter topic with Kafka Connect's context headers (and the harness's own: file and
  line, MQTT topic, original topic/offset...) and the connector goes on with the next good
  input (a type whose peer is told at once instead, as HTTP ingest answers 400, publishes
  and dead-letters nothing); stop -> ``stopped`` within the harness's ``stop_within_s``;
  inputs given while it is down (where the peer keeps them) and after the restart are all
  delivered, none twice, and the restarted connector handles only the new ones; no secret
  of the config appears in a log line (structlog and stdlib logging) or in its status.

A connector type takes part through a :class:`Harness`: a valid config with a real peer,
how to feed one good and one bad input, and how to see what was delivered. Sources are seen
on their event type's canonical topic (:class:`SourceHarness`); sinks are fed on a topic of
the test in the wire format, as the router fills a subscription topic (:class:`SinkHarness`).

The checks run inside pytest (a harness reaches pytest's ``monkeypatch``, ``caplog`` and
its own fixtures through :class:`Env`) against a running broker and schema registry (any
object with the ``topology`` and ``settings`` of :class:`Bus`; :func:`bus_from_environment`
gives the one the ``BUS_*`` variables name).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from pydantic import BaseModel
from structlog.testing import capture_logs

from bus.connect.base import Sink, Source
from bus.connect.registry import GROUP, config_problems, load_connector_class
from bus.connect.runner import ConnectorRunner
from bus.consume.tail import tail
from bus.kafka.admin import TopicSpec, delete_topics, ensure_topics, with_detected_profile
from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.publish import Publisher
from bus.topology import Connector, Topology, load_topology

if TYPE_CHECKING:
    import pytest

__all__ = [
    "CONTEXT_HEADERS", "BadInput", "Bus", "Env", "Harness", "RunningBus", "SinkHarness", "SourceHarness",
    "bus_from_environment", "check_config_model", "check_live", "entry_points_for", "wait_until",
]

#: Kafka Connect's context headers every dead letter carries.
CONTEXT_HEADERS = ("topic", "connector.name", "task.id", "stage", "class.name", "exception.class.name",
                   "exception.message", "exception.stacktrace")


class Bus(Protocol):
    """Where the suite runs: a loaded topology and the settings of its broker and registry."""

    @property
    def topology(self) -> Topology: ...

    @property
    def settings(self) -> KafkaSettings: ...


@dataclass(frozen=True)
class RunningBus:
    topology: Topology
    settings: KafkaSettings


def bus_from_environment(topology: Path | str | None = None) -> RunningBus:
    """The bus the ``BUS_*`` variables name, as every ``bus`` command finds it: the broker of
    ``BUS_BOOTSTRAP_SERVERS`` and the registry of ``BUS_REGISTRY_URL`` (default: ``bus broker``
    and ``bus registry`` on this machine, or ``bus up``'s), and the topology ``topology``
    (default: ``BUS_TOPOLOGY``, else ``topology.yaml``)."""
    path = topology or os.environ.get("BUS_TOPOLOGY", "topology.yaml")
    return RunningBus(load_topology(path), with_detected_profile(KafkaSettings()))


# -- what a harness is given and gives ------------------------------------------------------


@dataclass
class Env:
    """What a harness may use: the test's city, a folder of its own, the environment and
    (lazily, so a type's peer is only set up for that type) any pytest fixture."""

    city: Bus
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest
    unique: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)


@dataclass(frozen=True)
class BadInput:
    """A bad input that was fed, and what its dead letter must show.

    ``headers``: headers the dead letter must have with these values (beyond the context
    headers every dead letter has); ``value``: the dead letter's value, when known;
    ``dead_lettered`` False: the peer was refused at once (checked by the harness) and
    nothing may reach the bus or the dead-letter topic."""

    stage: str = "TASK_POLL"
    headers: dict[str, str] = field(default_factory=dict)
    value: bytes | None = None
    dead_lettered: bool = True


class Harness(ABC):
    """One connector type with a real peer, as the suite drives it."""

    #: The connector type's name (its entry point's name).
    type: ClassVar[str]
    side: ClassVar[Literal["source", "sink"]]
    #: The class under test when it is not installed as an entry point yet (a department's
    #: own connector, tested before its package is installed); None: the installed ``type``.
    connector_class: ClassVar[type[Source] | type[Sink] | None] = None
    #: Inputs given while the connector is stopped wait at the peer (a folder, a topic, an
    #: MQTT session); False for a peer that pushes and is refused meanwhile (HTTP ingest).
    feeds_while_down: ClassVar[bool] = True
    #: Longest a stop may take.
    stop_within_s: ClassVar[float] = 5.0

    def __init__(self, env: Env) -> None:
        self.env = env
        self.city = env.city
        #: Secret values of the config: never in a log line or the status.
        self.secrets: list[str] = []
        self._seed = random.Random(env.unique).getrandbits(32)

    @classmethod
    @abstractmethod
    def static_config(cls) -> dict[str, Any]:
        """A valid ``config`` without a peer, for the config checks (secrets as references)."""

    @abstractmethod
    def entry(self) -> dict[str, Any]:
        """The connector's entry of topology.yaml (name, type, department, publishes or
        subscription, config) pointing at the live peer."""

    def open(self) -> None:
        """Start the peer (before the first start)."""

    def close(self) -> None:
        """Stop what ``open`` started."""

    def attach(self, runner: ConnectorRunner) -> None:
        """Called after each start (a listening source learns its new address here)."""

    @abstractmethod
    def feed_good(self, n: int) -> list[str]:
        """Give the connector ``n`` good inputs; their identities, as :meth:`delivered` shows them."""

    @abstractmethod
    def feed_bad(self) -> BadInput:
        """Give the connector one input it cannot deliver."""

    @abstractmethod
    def delivered(self) -> list[str]:
        """Identities of what reached the far side, once per delivery (a repeat shows twice)."""

    def settle(self, runner: ConnectorRunner) -> None:
        """Wait until what was delivered is also committed (a clean stop then repeats nothing)."""

    @property
    def topic(self) -> str | None:
        """A sink's subscription topic (the runner's override)."""
        return None

    def named(self, base: str) -> str:
        """A connector name of this test alone (its group, dead-letter topic and position)."""
        return f"{base}-{self.env.unique}"

    def next_seed(self) -> int:
        self._seed += 1
        return self._seed

    def sample(self, rng: random.Random) -> dict[str, Any]:
        """A realistic record of the harness's event type, different for each ``rng``
        (``bus.demo.samples.sample(event_type, rng)`` makes the demo city's)."""
        raise NotImplementedError(f"{type(self).__name__}.sample: return a record of its event type")


class SourceHarness(Harness):
    """A source: what it publishes is read back from the canonical topic of its event type."""

    side: ClassVar[Literal["source", "sink"]] = "source"
    event_type: ClassVar[str] = "camera_alarm"
    identity: ClassVar[str] = "alarm_id"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.fed: set[str] = set()

    def record(self) -> dict[str, Any]:
        """A new record to feed (see :meth:`sample`); :meth:`delivered` looks for it."""
        record = self.sample(random.Random(self.next_seed()))
        self.fed.add(str(record[self.identity]))
        return record

    def delivered(self) -> list[str]:
        """What this harness fed, as found on the canonical topic (which other tests share)."""
        topic = self.city.topology.event_type(self.event_type).topic
        try:
            found = [str(r.value[self.identity]) for r in tail(self.city.settings, [topic], exit_at_end=True)]
            return [i for i in found if i in self.fed]
        except Exception as exc:  # the topic is created by the first record
            if "do not exist yet" in str(exc):
                return []
            raise


class SinkHarness(Harness):
    """A sink: fed on a topic of its own (wire format, CloudEvents headers), as the router
    fills a subscription topic, with records of ``event_type`` published by ``department``."""

    side: ClassVar[Literal["source", "sink"]] = "sink"
    event_type: ClassVar[str] = "camera_alarm"
    department: ClassVar[str] = "police"
    identity: ClassVar[str] = "alarm_id"

    def open(self) -> None:
        namespace = self.city.topology.namespace
        self._topic = f"{namespace + '.' if namespace else ''}conformance-sub-{self.env.unique}"
        ensure_topics(self.city.settings, [TopicSpec(self._topic, 1)])
        self.feeder = WireFeeder(self.city.settings, self.city.topology, self._topic)
        self.produced = 0

    def close(self) -> None:
        self.feeder.close()
        delete_topics(self.city.settings, [self._topic])

    @property
    def topic(self) -> str | None:
        return self._topic

    def record(self) -> dict[str, Any]:
        """A new record to feed (see :meth:`sample`)."""
        return self.sample(random.Random(self.next_seed()))

    def put(self, record: dict[str, Any]) -> tuple[int, int]:
        """Put one record of ``event_type`` on the sink's topic; its (partition, offset)."""
        where = self.feeder.record(self.event_type, self.department, record)
        self.produced += 1
        return where

    def feed_good(self, n: int) -> list[str]:
        records = [self.record() for _ in range(n)]
        for record in records:
            self.put(record)
        return [str(r[self.identity]) for r in records]

    def feed_bad(self) -> BadInput:
        """A value that is not the wire format: every sink dead-letters it (VALUE_CONVERTER)."""
        value = b"not the wire format " + self.env.unique.encode()
        partition, offset = self.feeder.send(b"bad-key", value, [])
        self.produced += 1
        return BadInput(stage="VALUE_CONVERTER", value=value, headers={
            "__connect.errors.topic": self._topic, "__connect.errors.partition": str(partition),
            "__connect.errors.offset": str(offset)})

    def settle(self, runner: ConnectorRunner) -> None:
        wait_until(lambda: committed(self.city.settings, runner.group_id, self._topic) == [self.produced], 20,
                   "the sink's offsets committed")


# -- the checks ------------------------------------------------------------------------------


def entry_points_for(harness: type[Harness], given: Iterable[EntryPoint] | None = None) -> list[EntryPoint]:
    """The entry points the checks load connector types from: ``given`` (default: the
    installed ones), with the harness's ``connector_class``, when set, in place of any
    installed type of the same name."""
    found = list(given) if given is not None else list(importlib.metadata.entry_points(group=GROUP))
    kind = harness.connector_class
    if kind is None:
        return found
    own = EntryPoint(harness.type, f"{kind.__module__}:{kind.__qualname__}", GROUP)
    return [ep for ep in found if ep.name != harness.type] + [own]


def _models(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> list[type[BaseModel]]:
    """``model`` and every model nested in its fields (also inside lists and dicts)."""
    seen = seen if seen is not None else set()
    if model in seen:
        return []
    seen.add(model)
    found = [model]

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(_models(annotation, seen))
        for arg in getattr(annotation, "__args__", ()) or ():
            walk(arg)

    for info in model.model_fields.values():
        walk(info.annotation)
    return found


def check_config_model(harness: type[Harness], *, entry_points: Iterable[EntryPoint] | None = None) -> None:
    """The type's config model documents every setting and refuses unknown keys by name."""
    eps = entry_points_for(harness, entry_points)
    kind = load_connector_class(harness.type, entry_points=eps)
    assert kind.side == harness.side, f"{harness.type} is a {kind.side}, its harness says {harness.side}"
    for model in _models(kind.config_model):
        assert model.model_config.get("extra") == "forbid", f"{model.__name__} must forbid unknown keys"
        for name, info in model.model_fields.items():
            where = f"{harness.type}: {model.__name__}.{info.alias or name}"
            assert (info.description or "").strip(), f"{where} has no description"
            assert info.examples, f"{where} has no example"

    valid = harness.static_config()
    assert config_problems(harness.type, valid, entry_points=eps) == []
    fields = {info.alias or name: info for name, info in kind.config_model.model_fields.items()}
    wrong = [{**valid, "no_such_setting": 1}]
    for key, value in valid.items():  # inside nested settings too (auth, routes[0]...)
        if key not in fields or not _is_model_field(fields[key].annotation):
            continue
        if isinstance(value, dict):
            wrong.append({**valid, key: {**value, "no_such_setting": 1}})
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            wrong.append({**valid, key: [{**value[0], "no_such_setting": 1}, *value[1:]]})
    for config in wrong:
        problems = config_problems(harness.type, config, entry_points=eps)
        assert len(problems) == 1, problems
        loc, message = problems[0]
        assert loc[0] == "config" and loc[-1] == "no_such_setting", problems
        assert "unknown key 'no_such_setting'" in message and "the keys allowed here are" in message


def _is_model_field(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_is_model_field(a) for a in getattr(annotation, "__args__", ()) or ())


@dataclass
class _Live:
    """A harness with its peer open, and the runners made for it."""

    harness: Harness
    entry_points: list[EntryPoint]
    runners: list[ConnectorRunner] = field(default_factory=list)

    def runner(self) -> ConnectorRunner:
        h = self.harness
        connector = Connector.model_validate(self._entry)
        runner = ConnectorRunner(connector, h.city.topology, h.city.settings, topic=h.topic,
                                 entry_points=self.entry_points, status_interval_s=1.0)
        self.runners.append(runner)
        return runner

    def start(self) -> ConnectorRunner:
        runner = self.runner().start()
        assert runner.state == "running" and runner.status().state == "running", runner.status()
        self.harness.attach(runner)
        return runner

    def __enter__(self) -> _Live:
        self.harness.env.fixture("caplog").set_level(logging.INFO)  # stdlib logs (uvicorn, psycopg...) too
        self._entry = self.harness.entry()
        self.harness.open()
        return self

    def __exit__(self, *exc: object) -> None:
        for runner in self.runners:
            runner.stop()
        self.harness.close()


def _until_delivered(harness: Harness, ids: list[str], what: str) -> None:
    wanted = set(ids)
    wait_until(lambda: wanted <= set(harness.delivered()), 20, what)


def _check_no_secret_shown(harness: Harness, logs: list[dict[str, Any]], runners: list[ConnectorRunner]) -> None:
    shown = json.dumps(logs, default=str) + harness.env.fixture("caplog").text
    shown += "".join(json.dumps(r.status().as_dict(), default=str) for r in runners)
    for secret in harness.secrets:
        assert secret not in shown, f"{harness.type}: a secret of its config was logged or shown in its status"


def check_live(harness: Harness, *, entry_points: Iterable[EntryPoint] | None = None) -> None:
    """Start, a bad input among good ones, stop, restart: one live session per type (each
    start of a sink costs a consumer group join, so the steps share them)."""
    eps = entry_points_for(type(harness), entry_points)
    with capture_logs() as logs, _Live(harness, eps) as live:
        first = live.start()
        before = harness.feed_good(2)
        _until_delivered(harness, before, "the first inputs delivered")
        bad = harness.feed_bad()
        before += harness.feed_good(1)
        _until_delivered(harness, before, "the good input after the bad one")
        harness.settle(first)
        _check_dead_letter(harness, first, bad)
        _check_stop(harness, first)

        while_down = harness.feed_good(2) if harness.feeds_while_down else []
        second = live.start()
        after = harness.feed_good(2)
        _until_delivered(harness, before + while_down + after, "every input delivered after the restart")
        harness.settle(second)

        seen = Counter(harness.delivered())
        repeated = {i: n for i, n in seen.items() if n > 1}
        assert not repeated, f"{harness.type} delivered these twice: {repeated}"
        assert set(seen) == set(before + while_down + after)
        handled = second.status().counts["published" if harness.side == "source" else "delivered"]
        assert handled == len(while_down + after), f"the restarted {harness.type} handled {handled} inputs, " \
            f"not the {len(while_down + after)} given since it stopped"
        assert second.status().counts["dead_lettered"] == 0, "the bad input was dead-lettered again after the restart"
        _check_no_secret_shown(harness, logs, live.runners)


def _check_stop(harness: Harness, runner: ConnectorRunner) -> None:
    began = time.monotonic()
    runner.stop()
    took = time.monotonic() - began
    assert runner.state == "stopped" and runner.status().state == "stopped", runner.status()
    assert took < harness.stop_within_s, f"{harness.type} took {took:.1f} s to stop"


def _check_dead_letter(harness: Harness, runner: ConnectorRunner, bad: BadInput) -> None:
    dead_topic = runner.dead_letter_topic
    status = runner.status()
    assert status.state == "running", f"{harness.type} did not go on after the bad input: {status}"
    if not bad.dead_lettered:
        assert read_all(harness.city.settings, dead_topic, 1, timeout_s=1.0) == []
        assert status.counts["dead_lettered"] == 0
        return
    letters = read_all(harness.city.settings, dead_topic, 1)
    assert len(letters) == 1, f"{harness.type}: no dead letter on {dead_topic}"
    assert status.counts["dead_lettered"] == 1, status
    headers = text_headers(letters[0])
    for name in CONTEXT_HEADERS:
        assert headers.get(f"__connect.errors.{name}"), f"{harness.type}: dead letter without {name}: {headers}"
    assert headers["__connect.errors.connector.name"] == runner.name
    assert headers["__connect.errors.stage"] == bad.stage
    assert headers["__connect.errors.class.name"].endswith(type(runner.instance).__name__)
    error_class = headers["__connect.errors.exception.class.name"].rsplit(".", 1)[-1]
    assert error_class in headers["__connect.errors.exception.stacktrace"]
    for name, value in bad.headers.items():
        assert headers.get(name) == value, f"{harness.type}: dead letter header {name}: {headers.get(name)!r}"
    if bad.value is not None:
        assert letters[0].value() == bad.value


# -- helpers ---------------------------------------------------------------------------------


def wait_until(
    condition: Callable[[], Any], timeout_s: float = 30.0, what: str = "the condition", *, every_s: float = 0.02
) -> Any:
    """Poll ``condition`` every ``every_s`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)


def read_all(settings: KafkaSettings, topic: str, expected: int, timeout_s: float = 20.0) -> list[Message]:
    """The first ``expected`` records of ``topic`` (every partition), read by assignment."""
    consumer = Consumer(consumer_config(settings, group_id="conformance-reader", client_id="conformance-reader"))
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        out: list[Message] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
        return out
    finally:
        consumer.close()


def committed(settings: KafkaSettings, group: str, topic: str, partitions: int = 1) -> list[int]:
    consumer = Consumer(consumer_config(settings, group_id=group, client_id="conformance-committed"))
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in got]
    finally:
        consumer.close()


def text_headers(msg: Message) -> dict[str, str]:
    """A consumed message's headers as text (the last value of each name)."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in (msg.headers() or [])}


class WireFeeder:
    """Puts records on a topic as the router fills a subscription topic (wire format,
    CloudEvents headers), and raw values, through one publisher and one producer kept open."""

    def __init__(self, settings: KafkaSettings, topology: Topology, topic: str) -> None:
        self.topic = topic
        self.publisher = Publisher(topology, settings)
        self.producer = Producer(producer_config(settings, client_id="conformance-feeder"))

    def send(self, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        """(partition, offset) of the record, once the broker acknowledged it."""
        where: list[tuple[int, int]] = []
        self.producer.produce(self.topic, key=key, value=value, headers=headers,
                              on_delivery=lambda err, msg: where.append((msg.partition(), msg.offset())))
        assert self.producer.flush(30) == 0 and where, "the broker did not acknowledge a test record"
        return where[0]

    def record(self, event_type: str, department: str, record: dict[str, Any]) -> tuple[int, int]:
        prepared = self.publisher.prepare(event_type, department, record)
        return self.send(prepared.key.encode(), prepared.value, prepared.headers)

    def close(self) -> None:
        self.publisher.close()
        self.producer.flush(10)
