"""The city under faults, end to end, checked at the sinks.

The demo topology runs as separate supervised processes (bus.runtime.supervisor): the
router, the stateful processors (camera alarms reach their subscribers through the
processors' enriched topic) and four sink connectors: the fire brigade's and the
emergency wall's webhooks, Liunan's case webhook (cases published by the case system
and opened by the processors' linkage rules), and the statistics bureau's PostgreSQL copy
of the population base (a backfill lane). Departments keep publishing while:

- the router, the processors and a sink connector (the fire brigade's webhook and the
  statistics database, in turn) are each SIGKILLed 7 times (21 kills), each kill at a
  random point shortly after the part made progress again; nobody restarts them but the
  supervisor;
- the broker fails: the embedded one is frozen with SIGSTOP for 10 s, then resumed; on a
  three-node Apache Kafka (replication factor 3, min.insync.replicas 2) the node that leads
  most of the partitions the router writes is SIGKILLed, another is frozen for 10 s while
  the first is still down (the controllers lose their quorum meanwhile), then the killed
  one is started again;
- the emergency wall's endpoint answers slowly, then goes down (connections refused and
  dropped), then comes back.

Afterwards, with no help from the test, the bus catches up, and:

- the processors lost no alarm: cameras repeat their alarms (storms, merged into one update
  of the first alarm) and go offline together (network flaps, merged into one incident), and
  every raw alarm is still counted in the last version of some enriched alarm (of its camera
  and type; offline alarms in all of them together), whatever the kills met in their windows;
  a replayed version carries its first CloudEvents id again;
- every subscription topic holds exactly the entitled records of its source, each as many
  times as the source holds it (the router is exactly once);
- each sink received every record its subscription holds and nothing else, exactly once
  in effect (distinct idempotency keys; for the database, the last record of each key),
  and in per-key order (the first delivery of each record follows the topic's order).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException

from bus.consume.decoder import Decoder
from bus.consume.tail import tail
from bus.demo.samples import DISTRICTS, GENERATORS
from bus.errors import BusError
from bus.kafka.admin import TopicSpec, ensure_topics, wait_for_broker
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.config import KafkaSettings
from bus.kafka.local import LocalKafka
from bus.ops.offsets import OffsetReader
from bus.processors.app import app_id, ensure_processor_topics, processor_topics
from bus.processors.storms import FLAP_CAMERA_ID, OFFLINE, raw_count
from bus.publish import Publisher
from bus.registry.client import registry_client
from bus.registry.server import EmbeddedRegistry
from bus.routing.plan import build_routes
from bus.schemas.records import to_json
from bus.runtime.supervisor import PartSpec, Supervisor, bus_command, child_environ
from bus.topology.models import Topology
from tests.connectors.services import Database, database  # noqa: F401 (fixture)
from tests.connectors.support import Endpoint, wait_until
from tests.e2e.sinks import matches, written_filters
from tests.fixtures.city import write_city_topology
from tests.routing.test_router import _read_raw
from bus.topology.names import connector_group, router_group
from bus.topology.validate import load_topology

pytestmark = pytest.mark.integration  # starts its own brokers

KILLS_PER_PART = 7
HASH_KEY = "faults-test"
WEBHOOKS = {  # connector -> the env variable of its HMAC key
    "fire-dispatch-webhook": "FIRE_DISPATCH_HMAC_KEY",
    "emergency-wall-webhook": "EMERGENCY_WALL_HMAC_KEY",
    "liunan-cases-webhook": "LIUNAN_WEBHOOK_HMAC_KEY",
}
DATABASE_SINK = "statistics-population-base"
RETRIES = {"errors.retry.delay.max.ms": 2000}  # an endpoint back is retried within 2 s
STORM_WINDOW_S = 3  # short: windows open and close all through the run, and are open at every kill
FLAP_CAMERAS = 4  # offline cameras within 1 s that make a network flap (some do, some do not)


@dataclass
class OwnBroker:
    """The test's own broker: the embedded one, or a three-node Apache Kafka."""

    settings: KafkaSettings
    embedded: EmbeddedBroker | None = None
    kafka: LocalKafka | None = None


@dataclass
class Bus:
    topology: Topology
    settings: KafkaSettings
    broker: OwnBroker
    supervisor: Supervisor
    endpoints: dict[str, Endpoint]
    database: Database
    said: list[str] = field(default_factory=list)


@pytest.fixture(params=["embedded", "kafka-3-nodes"])
def own_broker(request: pytest.FixtureRequest) -> Iterator[OwnBroker]:
    """A broker and registry of this test's own: it fails the broker."""
    with contextlib.ExitStack() as stack:
        if request.param == "embedded":
            embedded = stack.enter_context(EmbeddedBroker())
            own = OwnBroker(KafkaSettings().with_broker(embedded.bootstrap_servers, embedded=True), embedded=embedded)
        else:
            kafka = stack.enter_context(LocalKafka(nodes=3))
            own = OwnBroker(KafkaSettings().with_broker(kafka.bootstrap_servers, embedded=False), kafka=kafka)
        wait_for_broker(own.settings)
        registry = EmbeddedRegistry(own.settings).start()
        stack.callback(registry.stop)
        own.settings = own.settings.with_registry(registry.url)
        yield own


@pytest.fixture
def running_bus(tmp_path: Path, own_broker: OwnBroker, database: Database) -> Iterator[Bus]:  # noqa: F811
    broker, settings = own_broker, own_broker.settings
    endpoints = {name: Endpoint(hmac_key=f"{name}-key").start() for name in WEBHOOKS}
    config = {name: {"url": endpoint.url, **RETRIES} for name, endpoint in endpoints.items()}
    config[DATABASE_SINK] = {"dsn": "env:STATS_POPULATION_BASE_DSN", **RETRIES}
    path = write_city_topology(tmp_path, "faults", enriched=True, connector_config=config)
    topology = load_topology(path)
    ensure_topics(settings, [TopicSpec(et.topic, et.partitions) for et in topology.event_types])
    ensure_processor_topics(topology, settings)
    env = child_environ({
        **settings.to_environ(), "BUS_HASH_MASTER_KEY": HASH_KEY, "BUS_LOG_LEVEL": "WARNING",
        "STATS_POPULATION_BASE_DSN": database.dsn,
        **{variable: f"{name}-key" for name, variable in WEBHOOKS.items()},
    })
    parts = [
        PartSpec("router", bus_command("route", "-t", str(path), "--batch-size", "50"), env, tmp_path / "router.log"),
        PartSpec("processors", bus_command("process", "--topology", str(path), "--window", str(STORM_WINDOW_S),
                                           "--flap-threshold", str(FLAP_CAMERAS), "--flap-window", "1",
                                           "--idle-flush", "2"), env, tmp_path / "processors.log"),
        *(PartSpec(name, bus_command("connector", "run", name, "-t", str(path)), env, tmp_path / f"{name}.log")
          for name in [*WEBHOOKS, DATABASE_SINK]),
    ]
    said: list[str] = []
    supervisor = Supervisor(parts, say=said.append, backoff_min_s=0.2, backoff_max_s=2.0, stable_after_s=5.0)
    bus = Bus(topology, settings, broker, supervisor.start(), endpoints, database, said)
    try:
        yield bus
    finally:
        supervisor.stop()
        print("\n".join(said))  # shown when the test failed: what died and came back, and the logs' ends
        for part in parts:
            print(f"--- {part.log_path.name}:", *part.log_path.read_text(errors="replace").splitlines()[-15:], sep="\n")
        for endpoint in endpoints.values():
            endpoint.stop()


# -- the departments' traffic ------------------------------------------------------------------


class Departments:
    """Publishes as the owner departments until stopped: camera alarms (timed now, a third of
    them repeating a recent camera's alarm: storms; about a fifth offline: flaps), cases moving
    through their lifecycle, population changes of a pool of people (several per person:
    per-key order matters)."""

    def __init__(self, topology: Topology, settings: KafkaSettings) -> None:
        self.topology, self.settings = topology, settings
        self.rng = random.Random(2026)
        self.stop = threading.Event()
        self.published = 0
        self.failed = 0  # publishes refused while the broker was frozen
        self.cases: list[dict[str, Any]] = []
        self.people: list[dict[str, Any]] = []
        self.recent_alarms: collections.deque[dict[str, Any]] = collections.deque(maxlen=30)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _alarm(self, number: int) -> dict[str, Any]:
        alarm = GENERATORS["camera_alarm"](self.rng)
        if self.recent_alarms and self.rng.random() < 0.35:  # the same camera and type again: a storm
            again = self.rng.choice(self.recent_alarms)
            alarm.update({k: again[k] for k in ("camera_id", "alarm_type", "location", "owner_department")})
        else:
            code = DISTRICTS[alarm["location"]["district"]][2]
            alarm["camera_id"] = f"CAM-{code}-{number % 100_000:05d}"
            if self.rng.random() < 0.4:
                alarm["alarm_type"] = "FIRE_SMOKE"
            self.recent_alarms.append(alarm)
        alarm["severity"] = self.rng.choice(["MEDIUM", "HIGH", "CRITICAL"])
        alarm["occurred_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        return alarm

    def _case(self) -> dict[str, Any]:
        if self.cases and self.rng.random() < 0.5:
            case = dict(self.rng.choice(self.cases))
            case["status"] = self.rng.choice(["DISPATCHED", "HANDLING", "RESOLVED", "CLOSED"])
            case["responsible_unit"] = "liunan-street-light-unit"
            return case
        case = GENERATORS["city_case"](self.rng)
        case["district"] = case["location"]["district"] = self.rng.choice(["LIUNAN", "LIUNAN", "CHENGZHONG"])
        self.cases.append(case)
        return case

    def _change(self) -> dict[str, Any]:
        change = GENERATORS["population_change"](self.rng)
        if self.people and self.rng.random() < 0.5:
            person = self.rng.choice(self.people)
            change.update({k: person[k] for k in ("person_id", "national_id", "name", "birth_date")})
        else:
            self.people.append(change)
        return change

    def _run(self) -> None:
        number = 0
        with Publisher(self.topology, self.settings, client_id="faults-departments") as publisher:
            while not self.stop.is_set():
                number += 1
                kind = self.rng.choices(["camera_alarm", "city_case", "population_change"], [5, 3, 2])[0]
                record = {"camera_alarm": lambda: self._alarm(number), "city_case": self._case,
                          "population_change": self._change}[kind]()
                try:
                    publisher.publish(kind, self.topology.event_type(kind).owner, record)
                    self.published += 1
                except BusError:
                    self.failed += 1
                self.stop.wait(0.02)


# -- progress, faults ----------------------------------------------------------------------------


def _groups(topology: Topology) -> dict[str, list[str]]:
    """The consumer groups of each killable part."""
    ns = topology.namespace
    return {
        "router": [router_group(ns), *(router_group(ns, s.lane) for s in topology.subscriptions if s.lane)],
        "processors": [app_id(topology)],
        **{name: [connector_group(ns, name)] for name in [*WEBHOOKS, DATABASE_SINK]},
    }


def _read_topics(topology: Topology) -> dict[str, list[str]]:
    """Topics each killable part reads (some of them: enough to see it make progress)."""
    processors = processor_topics(topology)
    return {
        "router": [et.routed_topic for et in topology.event_types],
        "processors": [processors.alarms, processors.statuses],
        **{c.name: [topology.subscription(c.subscription).topic] for c in topology.connectors if c.subscription},
    }


class CommittedProbe:
    """Sums a part's committed offsets on the topics it reads, as ``bus lag`` reads them (a
    consumer's OffsetFetch: librdkafka 2.16's admin group requests abort the process when a
    broker stops answering, see :class:`bus.ops.offsets.OffsetReader`). -1 while no answer comes."""

    def __init__(self, settings: KafkaSettings, topology: Topology) -> None:
        self.settings = settings
        self.groups = _groups(topology)
        self.topics = _read_topics(topology)
        self.reader: OffsetReader | None = None

    def __call__(self, target: str) -> int:
        try:
            self.reader = self.reader or OffsetReader(self.settings, timeout_s=5)
            return sum(offset for group in self.groups[target]
                       for (topic, _), offset in self.reader.committed(group).items() if topic in self.topics[target])
        except (BusError, KafkaException):  # the broker is frozen or failing over: no answer is no progress
            return -1


class Killer(threading.Thread):
    """Kills its targets in turn, each at a random point shortly after it made progress
    (committed offsets moved) since its (re)start; the supervisor starts it again."""

    def __init__(self, bus: Bus, targets: list[str], kills: int, seed: int, landed: list[tuple[str, int]]) -> None:
        super().__init__(daemon=True, name=f"kill-{targets[0]}")
        self.bus, self.targets, self.kills, self.landed = bus, targets, kills, landed
        self.rng = random.Random(seed)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            committed = CommittedProbe(self.bus.settings, self.bus.topology)
            done = 0
            while done < self.kills:
                target = self.targets[done % len(self.targets)]
                pid = wait_until(lambda: self.bus.supervisor.pid(target), 120, f"{target} to run", every_s=0.1)
                before = committed(target)
                wait_until(lambda: committed(target) > max(before, 0), 180, f"{target} to make progress",
                           every_s=0.2)
                time.sleep(self.rng.uniform(0.0, 1.5))  # a random point of its work
                if self.bus.supervisor.pid(target) == pid:  # else it died by itself meanwhile: again
                    os.kill(pid, signal.SIGKILL)
                    self.landed.append((target, pid))
                    done += 1
        except BaseException as exc:  # noqa: BLE001 (reported by the test's thread)
            self.error = exc


def _freeze(pid: int, seconds: float) -> None:
    os.kill(pid, signal.SIGSTOP)
    try:
        threading.Event().wait(seconds)  # the fault lasts this long
    finally:
        os.kill(pid, signal.SIGCONT)


def _busiest_leader(bus: Bus) -> int:
    """The node that leads most partitions of the subscription topics (the router's outputs)."""
    topics = wait_for_broker(bus.settings).list_topics(timeout=10).topics
    leaders = Counter(
        partition.leader
        for subscription in bus.topology.subscriptions if subscription.topic in topics
        for partition in topics[subscription.topic].partitions.values()
    )
    return leaders.most_common(1)[0][0]


class BrokerFaults(threading.Thread):
    """The broker's faults, each after some of the parts' kills landed: the embedded broker is
    frozen for 10 s; of a three-node Kafka, the busiest leader is SIGKILLed, another node frozen
    for 10 s, and the killed one started again."""

    def __init__(self, bus: Bus, landed: list[tuple[str, int]]) -> None:
        super().__init__(daemon=True, name="broker-faults")
        self.bus, self.landed = bus, landed
        self.done: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            broker = self.bus.broker
            wait_until(lambda: len(self.landed) >= 4, 300, "four kills")
            if broker.embedded is not None:
                _freeze(broker.embedded.pid, 10.0)  # type: ignore[arg-type]
                self.done.append("froze the broker for 10 s")
                return
            kafka = broker.kafka
            assert kafka is not None
            victim = _busiest_leader(self.bus)
            kafka.kill_node(victim)
            self.done.append(f"killed node {victim}")
            wait_until(lambda: len(self.landed) >= 7, 300, "seven kills")
            frozen = next(node.node_id for node in kafka.nodes if node.node_id != victim)
            _freeze(kafka.pid(frozen), 10.0)  # type: ignore[arg-type]
            self.done.append(f"froze node {frozen} for 10 s")
            wait_until(lambda: len(self.landed) >= 9, 300, "nine kills")
            kafka.start_node(victim)
            kafka.wait_ready(120)
            self.done.append(f"started node {victim} again")
        except BaseException as exc:  # noqa: BLE001 (reported by the test's thread)
            self.error = exc


def _settled(bus: Bus, quiet_s: float = 5.0) -> Callable[[], bool]:
    """A condition: the router groups and the processors have read everything, and have for
    ``quiet_s`` (the processors' last sends are acknowledged and routed). (Sinks are
    checked at the sinks: their committed offsets stop short of a transaction marker.)"""
    groups = _groups(bus.topology)
    reader = OffsetReader(bus.settings, timeout_s=15)
    since: list[float | None] = [None]

    def lag() -> int:
        total = 0
        for group in [*groups["router"], *groups["processors"]]:
            committed = reader.committed(group)
            ends = reader.end_offsets(committed)
            total += sum(max(0, ends.get(tp, 0) - offset) for tp, offset in committed.items())
        return total

    def settled() -> bool:
        if lag():
            since[0] = None
            return False
        since[0] = since[0] or time.monotonic()
        return time.monotonic() - since[0] >= quiet_s

    return settled


# -- what the topics and the sinks hold ----------------------------------------------------------


def _source(bus: Bus, topic: str, event_type: str) -> list[tuple[str, dict]]:
    """(ce_id, record) of every record on a source topic, in partition order."""
    decoder = Decoder(registry_client(bus.settings))
    reader = bus.topology.schema_for(event_type).parsed
    out = []
    for msg in sorted(_read_raw(bus.settings, topic), key=lambda m: (m.partition(), m.offset())):
        headers = {k: v.decode() for k, v in msg.headers()}
        out.append((headers["ce_id"], decoder.decode(msg.value(), reader)))
    return out


def _check_router(bus: Bus) -> dict[str, list]:
    """Every subscription holds each entitled source record as often as the source does.
    Returns each subscription's records (in partition order)."""
    routes = build_routes(bus.topology, {"BUS_HASH_MASTER_KEY": HASH_KEY})  # the topics, not the expectation
    filters = written_filters(bus.topology)
    held = {}
    for event_type, event_routes in routes.items():
        et = bus.topology.event_type(event_type)
        source = _source(bus, et.routed_topic, event_type)
        for route in event_routes:
            expected = Counter(ce_id for ce_id, record in source if matches(filters[route.subscription], to_json(record)))
            got = sorted(tail(bus.settings, [route.topic], exit_at_end=True), key=lambda r: (r.partition, r.offset))
            assert Counter(r.headers["ce_id"] for r in got) == expected, route.subscription
            held[route.subscription] = got
    return held


def _alarm_kind(alarm: dict[str, Any]) -> tuple[str, str]:
    """What a raw alarm's count is accounted to: its camera and type (its storms), or, for an
    offline alarm, all offline alarms (a flap merges many cameras into one incident)."""
    if alarm["alarm_type"] == OFFLINE:
        return ("every camera", OFFLINE)
    return (alarm["camera_id"], alarm["alarm_type"])


def _check_processors(bus: Bus) -> None:
    """Every raw alarm is counted in the last version (the highest count) of an enriched alarm
    of its kind. A kill between the changelog's write and the offset commit replays alarms a
    restored window counted already (at least once): a count may come out high, never low."""
    topics = processor_topics(bus.topology)
    published: Counter[tuple[str, str]] = Counter()
    for _, record in _source(bus, topics.alarms, "camera_alarm"):
        published[_alarm_kind(record)] += raw_count(record)
    versions: dict[tuple[str, int], set[str]] = defaultdict(set)  # (alarm id, count) -> CloudEvents ids
    last: dict[str, dict[str, Any]] = {}
    for ce_id, record in _source(bus, topics.enriched, "camera_alarm"):
        versions[(record["alarm_id"], raw_count(record))].add(ce_id)
        if raw_count(record) >= raw_count(last.get(record["alarm_id"], record)):
            last[record["alarm_id"]] = record
    counted: Counter[tuple[str, str]] = Counter()
    for record in last.values():
        counted[_alarm_kind(record)] += raw_count(record)
    short = {kind: (counted[kind], n) for kind, n in published.items() if counted[kind] < n}
    assert not short, f"raw alarms lost by the processors (counted, published): {short}"
    assert all(len(ids) == 1 for ids in versions.values()), "a replayed alarm got a new CloudEvents id"
    merged = [record for record in last.values() if raw_count(record) > 1]
    assert any(r["camera_id"] == FLAP_CAMERA_ID for r in merged), "no network flap: the run proves nothing of them"
    assert any(r["alarm_type"] != OFFLINE for r in merged), "no storm: the run proves nothing of them"
    print(f"\nprocessors: {sum(published.values())} raw alarms in {len(last)} enriched alarms "
          f"({len(merged)} merged), counted high by {sum(counted.values()) - sum(published.values())}")


def _check_webhook(endpoint: Endpoint, held: list, key_field: str) -> None:
    accepted = endpoint.accepted()
    keys = [r.key for r in accepted]
    assert set(keys) == {r.headers["ce_id"] for r in held}  # all, and nothing else
    assert all(endpoint.signed(r) for r in accepted)
    first_seen: dict[str, list[str]] = defaultdict(list)
    for receipt in accepted:
        record_key = str(receipt.json()[key_field])
        if receipt.key not in first_seen[record_key]:
            first_seen[record_key].append(receipt.key)
    in_topic: dict[str, list[str]] = defaultdict(list)
    for record in held:
        if record.headers["ce_id"] not in in_topic[record.key]:
            in_topic[record.key].append(record.headers["ce_id"])
    assert first_seen == in_topic, "per-key order broken"


def _rows(database: Database) -> dict[str, str]:  # noqa: F811
    return dict(database.query("SELECT person_id, change_id::text FROM stats.population_change"))


# -- the run -------------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_the_city_recovers_by_itself_from_kills_a_frozen_broker_and_a_failing_endpoint(running_bus: Bus) -> None:
    bus = running_bus
    departments = Departments(bus.topology, bus.settings)
    departments.thread.start()
    landed: list[tuple[str, int]] = []
    killers = [
        Killer(bus, ["router"], KILLS_PER_PART, 1, landed),
        Killer(bus, ["processors"], KILLS_PER_PART, 2, landed),
        Killer(bus, ["fire-dispatch-webhook", DATABASE_SINK], KILLS_PER_PART, 3, landed),
    ]
    wall = bus.endpoints["emergency-wall-webhook"]
    faults = BrokerFaults(bus, landed)
    try:
        for killer in killers:
            killer.start()
        faults.start()
        wait_until(lambda: len(landed) >= 6, 300, "six kills")
        wall.answer = lambda n, h, b: (time.sleep(0.5), 200)[1]  # a slow endpoint ...
        wait_until(lambda: len(landed) >= 12, 300, "twelve kills")
        wall.go_down()  # ... then a dead one ...
        outage = [departments.published]
        wait_until(lambda: len(landed) >= 15, 300, "fifteen kills")
        outage.append(departments.published)
        wall.answer = lambda n, h, b: 200
        wall.come_back()  # ... and back
        for killer in killers:
            killer.join(600)
            assert not killer.is_alive(), f"{killer.name}: the kills did not all land"
            assert killer.error is None, f"{killer.name}: {killer.error!r}"
        faults.join(300)
        assert faults.error is None, f"the broker's faults: {faults.error!r} after {faults.done}"
        assert len(faults.done) == (1 if bus.broker.embedded else 3), faults.done
    finally:
        departments.stop.set()
        departments.thread.join(60)

    assert len(landed) == 3 * KILLS_PER_PART, landed
    # The last kill's restart may still be in its back-off (up to 15 s): wait for it, do not race it.
    with contextlib.suppress(AssertionError):  # the assertion below says which part
        wait_until(lambda: all(bus.supervisor.restarts(name) >= KILLS_PER_PART for name in ("router", "processors")),
                   60, "the supervisor to restart the last kills", every_s=0.2)
    assert all(bus.supervisor.restarts(name) >= KILLS_PER_PART for name in ("router", "processors")), bus.said
    assert departments.published > 500, (departments.published, departments.failed)

    # Nobody helps from here on: the bus catches up by itself.
    wait_until(_settled(bus), 300, "the router and the processors to catch up", every_s=0.5)
    _check_processors(bus)
    held = _check_router(bus)
    sinks = {"fire-dispatch-webhook": ("fire-alarms", "camera_id"),
             "emergency-wall-webhook": ("critical-alarms", "camera_id"),
             "liunan-cases-webhook": ("liunan-cases", "case_id")}
    for name, (subscription, key_field) in sinks.items():
        expected = {r.headers["ce_id"] for r in held[subscription]}
        assert expected, f"{subscription}: nothing to deliver, the run proves nothing"
        with contextlib.suppress(AssertionError):  # the check below says what is missing
            wait_until(lambda: bus.endpoints[name].accepted_keys() >= expected, 120, f"{name} to receive everything",
                       every_s=0.5)
        _check_webhook(bus.endpoints[name], held[subscription], key_field)
    last = {record.key: record.value["change_id"] for record in held["population-statistics"]}  # the last wins
    with contextlib.suppress(AssertionError):
        wait_until(lambda: _rows(bus.database) == last, 120, "the statistics database to be written", every_s=0.5)
    assert _rows(bus.database) == last
    assert outage[1] > outage[0], "no department published while the wall's endpoint was down"
