"""The figures the city runs on: the pure parts with table-driven cases, then known records on
the real broker (written as the bus writes them) read back as exact figures, then a running
router and processors whose output the figures must match, against an oracle that reads the
topics itself."""

from __future__ import annotations

import calendar
import datetime as dt
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, IsolationLevel, TopicPartition
from confluent_kafka.admin import OffsetSpec

from bus.demo.samples import sample
from bus.kafka.admin import admin, delete_topics
from bus.kafka.config import KafkaSettings, consumer_config
from bus.ops.figures import (
    CityFigures,
    FiguresReader,
    OffsetSet,
    ce_time_ms,
    nearest_rank,
    parse_src,
    publish_figures,
    window,
)
from bus.ops.metrics import BusMonitor
from bus.processors.sla import breach_case_id
from bus.processors.storms import iso_ms
from bus.processors.topics import changelog_partitions, processor_topics
from bus.publish import Publisher
from bus.routing.service import RoutingService
from bus.topology.models import Topology
from tests.fixtures.city import City
from tests.ops import figures_data as data
from tests.ops.helpers import wait_until
from tests.ops.test_metrics import scrape, value
from bus.topology.names import router_group

REPO = Path(__file__).resolve().parents[2]

# -- the pure parts ---------------------------------------------------------------------------


def oracle_quantile(samples: list[int], q: Fraction) -> int:
    """The ceil(q n)-th smallest, on a sorted list."""
    return sorted(samples)[math.ceil(q * len(samples)) - 1]


@pytest.mark.parametrize("samples", [
    [7], [1, 2], [2, 1, 3], [5, 5, 5, 9], list(range(100)), list(range(101)), list(range(1000, 0, -1)),
    [0, -3, 12, 12, 12, 40, 7, 7], [250] * 3 + [10_000],
])
@pytest.mark.parametrize("permille", [500, 990])
def test_nearest_rank_is_the_ceil_q_n_th_smallest(samples: list[int], permille: int) -> None:
    counts: dict[int, int] = {}
    for s in samples:
        counts[s] = counts.get(s, 0) + 1
    assert nearest_rank(counts, permille) == oracle_quantile(samples, Fraction(permille, 1000))


def test_nearest_rank_of_nothing_is_none() -> None:
    assert nearest_rank({}, 500) is None


@pytest.mark.parametrize(("text", "expected"), [
    (b"2026-11-23T08:30:00.123Z", calendar.timegm((2026, 11, 23, 8, 30, 0)) * 1000 + 123),
    (b"2026-11-23T16:30:00.123+08:00", calendar.timegm((2026, 11, 23, 8, 30, 0)) * 1000 + 123),
    (b"1970-01-01T00:00:00Z", 0),
    (b"2026-11-23T08:30:00", None),  # no zone: not RFC 3339
    (b"yesterday", None),
    (b"", None),
    (None, None),
])
def test_ce_time_is_read_to_the_millisecond(text: bytes | None, expected: int | None) -> None:
    assert ce_time_ms(text) == expected


def test_the_last_hour_is_the_current_minute_and_the_59_before() -> None:
    minutes = window(3600 * 24 + 59.9)  # 00:00:59.9 of the second day: minute 1440
    assert (minutes.start, minutes[-1], len(minutes)) == (1440 - 59, 1440, 60)


def test_offset_set() -> None:
    seen = OffsetSet()
    assert [seen.add(o) for o in (0, 7, 7, 65_535, 65_536, 10**9, 0, 10**9)] == [
        True, True, False, True, True, True, False, False]


@pytest.mark.parametrize(("value", "expected"), [
    (b"city.events.city_case:3:1200", (("city.events.city_case", 3), 1200)),
    (b"ns.city.events.a:b:0:5", (("ns.city.events.a:b", 0), 5)),
    (b"nonsense", None), (b"t:x:1", None), (None, None),
])
def test_bus_src(value: bytes | None, expected: object) -> None:
    assert parse_src(value) == expected


# -- known records on the real broker ----------------------------------------------------------------


@pytest.fixture
def known_city(city: City) -> Iterator[City]:
    assert data.write_known_records(city.topology, city.settings) == data.RECORDS
    yield city
    delete_topics(city.settings, [data.sla_topic(city.topology)])


def read_all(reader: FiguresReader, records: int) -> CityFigures:
    """Poll until every record written was read (a poll reads for at most max_read_s)."""
    figures: list[CityFigures] = []

    def done() -> bool:
        figures.append(reader.poll(now=data.NOW))
        return figures[-1].caught_up and figures[-1].records_read >= records

    wait_until(done, 60, f"{records} records read")
    return figures[-1]


@pytest.mark.integration
@pytest.mark.embedded
def test_known_records_give_exact_figures(known_city: City) -> None:
    reader = FiguresReader(known_city.topology, known_city.settings)
    try:
        figures = read_all(reader, data.RECORDS)
        assert figures.records_read == data.RECORDS
        assert figures.at == data.NOW and figures.window_start == (data.M - 59) * 60
        data.assert_known_figures(figures, known_city.topology)
        # Read again: nothing new, nothing counted twice.
        assert reader.poll(now=data.NOW) == figures
    finally:
        reader.close()


@pytest.mark.integration
def test_the_figures_reach_metrics(known_city: City) -> None:
    reader = FiguresReader(known_city.topology, known_city.settings)
    try:
        figures = read_all(reader, data.RECORDS)
    finally:
        reader.close()
    monitor = BusMonitor()
    publish_figures(monitor, figures)
    samples = scrape(monitor)
    n = data.Names.of(known_city.topology)
    first, second = n.population_subs
    assert value(samples, "bus_sharing_share", of="records") == pytest.approx(6 / 11)
    assert value(samples, "bus_sharing_share", of="event_types") == pytest.approx(2 / len(known_city.topology.event_types))
    assert value(samples, "bus_sharing_records", department=n.civil, direction="published") == 6
    assert value(samples, "bus_sharing_records", department=n.civil, direction="shared") == 5
    assert value(samples, "bus_sharing_records", department=first.department, direction="received") == 3
    assert value(samples, "bus_camera_faults_open", district="all") == 2
    assert value(samples, "bus_camera_faults", district=n.d1, deadline="answer", outcome="broken") == 1
    assert value(samples, "bus_camera_faults", district="all", deadline="repair", outcome="kept") == 2
    assert value(samples, "bus_camera_faults_overdue", district=n.d1, deadline="answer") == 1
    assert value(samples, "bus_camera_faults_overdue", district="all", deadline="repair") == 0
    assert value(samples, "bus_event_type_records_last_hour", event_type="population_change", stage="published") == 5
    assert value(samples, "bus_event_type_records_last_hour", event_type="population_change", stage="delivered") == 6
    assert value(samples, "bus_event_type_published_per_second", event_type="population_change") == 0.033
    assert value(samples, "bus_subscription_delivered_last_hour", department=first.department,
                 subscription=first.name) == 3
    assert value(samples, "bus_delivery_latency_seconds", department=first.department, subscription=first.name,
                 quantile="0.5") == 0.12
    assert value(samples, "bus_delivery_latency_seconds", department=second.department, subscription=second.name,
                 quantile="0.99") == 7.0
    idle = next(s for s in known_city.topology.subscriptions if s.event_type == "camera_alarm")
    assert math.isnan(value(samples, "bus_delivery_latency_seconds", department=idle.department,
                            subscription=idle.name, quantile="0.99"))


# -- a running bus: router and processors -------------------------------------------------------------


T_EVENT = calendar.timegm((2026, 11, 23, 0, 30, 0)) * 1000  # the cameras' event time
HOUR_MS = 3_600_000


@pytest.fixture
def processors(city: City, tmp_path: Path) -> Iterator[None]:
    """The processors' worker as a subprocess (as `bus up` runs it); stopped and its topics
    deleted at the end."""
    settings = city.settings
    env = dict(os.environ, BUS_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
               BUS_KAFKA_PROFILE=str(settings.kafka_profile), BUS_REGISTRY_URL=settings.registry_url)
    with (tmp_path / "processors.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bus.processors", str(city.path), "none", "INFO"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    topics = processor_topics(city.topology)
    delete_topics(settings, [topics.enriched, topics.camera_import, topics.sla, topics.availability,
                             *changelog_partitions(city.topology)])


@pytest.fixture
def router(city: City) -> Iterator[RoutingService]:
    service = RoutingService(city.topology, city.settings, watch=False)
    service.prepare()
    service.start()
    try:
        assert service.wait_assigned(60), "the router was not assigned its partitions within 60 s"
        yield service
    finally:
        service.stop()
        client = admin(city.settings)
        groups = [router_group(city.topology.namespace, lane) for lane in service.routers]
        for future in client.delete_consumer_groups(groups, request_timeout=10).values():
            try:
                future.result(timeout=10)
            except Exception:  # noqa: BLE001 (never committed: nothing to delete)
                pass


def oracle(topology: Topology, settings: KafkaSettings, now: float) -> dict[str, Any]:
    """The figures, from every record of the city's topics read here with a plain consumer:
    sorted lists and sets, nothing of bus.ops.figures."""
    sub_of = {s.topic: s for s in topology.subscriptions}
    routed_of = {et.routed_topic: et.name for et in topology.event_types}
    canonical_of = {et.topic: et.name for et in topology.event_types}
    first_minute, last_minute = int(now // 60) - 59, int(now // 60)
    received: dict[str, dict[str, int]] = {d.name: {} for d in topology.departments}
    published = {et.name: 0 for et in topology.event_types}
    published_by = {d.name: 0 for d in topology.departments}
    shared: dict[str, set[str]] = {et.name: set() for et in topology.event_types}
    shared_by: dict[str, set[str]] = {d.name: set() for d in topology.departments}
    reached: dict[str, set[str]] = {et.name: set() for et in topology.event_types}
    in_hour = {et.name: 0 for et in topology.event_types}
    delivered = {et.name: 0 for et in topology.event_types}
    latencies: dict[str, list[int]] = {s.name: [] for s in topology.subscriptions}
    for msg in read_everything(settings, sorted({*sub_of, *routed_of, *canonical_of})):
        headers = {k: v.decode() for k, v in msg.headers() or []}
        topic, ts = msg.topic(), msg.timestamp()[1]
        recent = first_minute <= ts // 60_000 <= last_minute
        if topic in canonical_of and recent:
            in_hour[canonical_of[topic]] += 1
        if topic in routed_of:
            published[routed_of[topic]] += 1
            published_by[headers["ce_source"]] += 1
        if topic in sub_of:
            sub = sub_of[topic]
            source = headers["ce_source"]
            received[sub.department][source] = received[sub.department].get(source, 0) + 1
            if source != sub.department:
                reached[sub.event_type].add(sub.department)
                shared[sub.event_type].add(headers["bus_src"])
                shared_by[source].add(headers["bus_src"])
            if recent:
                delivered[sub.event_type] += 1
                publish_ms = round(dt.datetime.fromisoformat(headers["ce_time"]).timestamp() * 1000)
                latencies[sub.name].append(ts - publish_ms)
    return {
        "departments": {d: (published_by[d], len(shared_by[d]),
                            sum(n for s, n in received[d].items() if s != d),
                            {s: n for s, n in received[d].items() if s != d}) for d in received},
        "by_event_type": {e: (published[e], len(shared[e]), sorted(reached[e])) for e in published},
        "throughput": {e: (in_hour[e], delivered[e]) for e in published},
        "latency": {s: (len(v), oracle_quantile(v, Fraction(1, 2)) / 1000 if v else None,
                        oracle_quantile(v, Fraction(99, 100)) / 1000 if v else None) for s, v in latencies.items()},
    }


def read_everything(settings: KafkaSettings, topics: list[str]) -> Iterator[Any]:
    """Every committed record of ``topics`` (those that exist), to their last stable offsets."""
    client = admin(settings)
    metadata = client.list_topics(timeout=10).topics
    partitions = [TopicPartition(t, p) for t in topics if t in metadata for p in metadata[t].partitions]
    ends = {(tp.topic, tp.partition): f.result(10).offset for tp, f in client.list_offsets(
        {tp: OffsetSpec.latest() for tp in partitions}, isolation_level=IsolationLevel.READ_COMMITTED,
        request_timeout=10).items()}
    consumer = Consumer(consumer_config(settings, group_id="figures-oracle", client_id="figures-oracle"))
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for (t, p), end in ends.items() if end > 0])
        waiting = {tp: end for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + 120
        while waiting:
            assert time.monotonic() < deadline, f"the oracle could not read {sorted(waiting)[:3]} to their end"
            yield from (msg for msg in consumer.consume(1000, 0.2) if msg.error() is None)
            for tp in consumer.position([TopicPartition(t, p) for t, p in waiting]):
                if tp.offset >= waiting[(tp.topic, tp.partition)]:
                    del waiting[(tp.topic, tp.partition)]
    finally:
        consumer.close()


def status(camera: str, state: str, at: int, district: str, owner: str) -> dict[str, Any]:
    return {"camera_id": camera, "status": state, "reported_at": iso_ms(at), "owner_department": owner,
            "location": {"latitude": 24.33, "longitude": 109.41, "district": district, "street": None,
                         "grid_cell": None}}


@pytest.mark.integration
def test_a_running_bus_gives_the_figures_its_topics_hold(city: City, router: RoutingService, processors: None) -> None:
    """Departments publish through the bus; the router routes and the processors track the
    cameras. The figures equal what an oracle counts in the topics, and the maintenance
    figures are the scenario's, worked out by hand."""
    topology, settings = city.topology, city.settings
    d1, d2 = data.districts(topology)[:2]
    owner = topology.event_type("camera_status").owner
    rng = random.Random(18)
    published = 0
    with Publisher(topology, settings) as publisher:
        # X: offline, its maintenance case dispatched after 1 h, online after 2 h: both deadlines kept.
        # Y: offline, nothing; 25 h later (another camera's report moves the clock) its answer is overdue.
        # Z: online, never faulty.
        publisher.publish("camera_status", owner, status("CAM-X", "OFFLINE", T_EVENT, d1, owner))
        publisher.publish("camera_status", owner, status("CAM-Y", "OFFLINE", T_EVENT, d1, owner))
        publisher.publish("camera_status", owner, status("CAM-Z", "ONLINE", T_EVENT, d2, owner))
        publisher.publish("city_case", topology.event_type("city_case").owner, {
            "case_id": str(uuid.UUID(int=rng.getrandbits(128))), "status": "DISPATCHED", "category": "CAMERA_FAULT",
            "title": "camera offline", "source": "LINKAGE", "district": d1, "responsible_unit": owner,
            "component_id": "CAM-X", "reported_at": iso_ms(T_EVENT), "updated_at": iso_ms(T_EVENT + HOUR_MS)})
        publisher.publish("camera_status", owner, status("CAM-X", "ONLINE", T_EVENT + 2 * HOUR_MS, d1, owner))
        publisher.publish("camera_status", owner, status("CAM-Z", "ONLINE", T_EVENT + 25 * HOUR_MS, d2, owner))
        published += 6
        # (no city_case samples: their times would move the SLA clock, which is event time)
        for _ in range(20):
            publisher.publish("population_change", topology.event_type("population_change").owner,
                              sample("population_change", rng))
            published += 1

    reader = FiguresReader(topology, settings)
    try:
        maintenance: list[Any] = []

        def breach_seen() -> bool:
            maintenance.append(reader.poll().maintenance)
            return maintenance[-1] is not None and maintenance[-1].breaches_total >= 1

        wait_until(breach_seen, 180, "the processors' breach of CAM-Y's answer deadline")
        found = maintenance[-1]
        assert {d.district: (d.open, d.faults, (d.answer.kept, d.answer.broken, d.answer.pending, d.answer.overdue),
                             (d.repair.kept, d.repair.broken, d.repair.pending, d.repair.overdue))
                for d in found.districts} == {
            "all": (1, 2, (1, 1, 0, 1), (1, 0, 1, 0)),
            d1: (1, 2, (1, 1, 0, 1), (1, 0, 1, 0)),
        }
        assert [(b.camera_id, b.deadline, b.due_at, b.done_at, b.case_id) for b in found.breaches] == [
            ("CAM-Y", "answer", iso_ms(T_EVENT + 24 * HOUR_MS), None, breach_case_id("CAM-Y", T_EVENT, "answer"))]

        # Everything published, and the processors' escalation case, routed and committed.
        shared_router = router.routers[None]
        wait_until(lambda: shared_router.stats.committed_in >= published + 1, 60, "every record routed")
        now = time.time()
        want = oracle(topology, settings, now)
        figures: list[CityFigures] = []

        def matches() -> bool:
            figures.append(reader.poll(now=now))
            return figures[-1].caught_up and _as_oracle(figures[-1]) == want

        try:
            wait_until(matches, 60, "the figures equal the oracle's")
        except AssertionError:
            assert _as_oracle(figures[-1]) == want  # show the difference
        got = figures[-1]
        assert got.sharing.by_event_type and sum(e.records for e in got.sharing.by_event_type) >= published
        assert any(lat.deliveries for lat in got.latency), "some subscription received records"
    finally:
        reader.close()


def _as_oracle(figures: CityFigures) -> dict[str, Any]:
    return {
        "departments": {d.department: (d.published, d.shared, d.received, d.received_from)
                        for d in figures.sharing.departments},
        "by_event_type": {e.event_type: (e.records, e.shared, e.reached) for e in figures.sharing.by_event_type},
        "throughput": {t.event_type: (t.last_hour, t.delivered_last_hour) for t in figures.throughput},
        "latency": {s.subscription: (s.deliveries, s.p50_s, s.p99_s) for s in figures.latency},
    }
