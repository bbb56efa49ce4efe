"""Known records for the figures' tests, written to the real broker as the bus writes them
(canonical records with CloudEvents headers, routed copies with ``bus_src``, the SLA table's
changelog as faust writes it), and the figures they must give, worked out by hand below.

Every name (departments, subscriptions, districts) comes from the topology, so that the data
follows the shipped city whatever its districts are called.

Time: ``NOW`` is the figures' "now", whole seconds an hour before the wall clock (Kafka refuses
record timestamps more than an hour ahead of its clock). Minute ``M`` is ``NOW // 60``; "the
last hour" is minutes ``M - 59`` to ``M``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

import pytest

from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.config import KafkaSettings, producer_config
from bus.ops.figures import CityFigures
from bus.processors.sla import breach_case_id
from bus.processors.storms import iso_ms
from bus.processors.topics import SLA_TABLE, changelog_topic
from bus.topology.models import Subscription, Topology
from tests.ops.helpers import past_now

HOUR = 3_600_000
#: records written: 6 + 3 + 3 + 1 population changes and copies, 3 + 3 statuses and copies, 2 + 1 cases
#: and copy, 12 changes of the SLA table
RECORDS = 34
NOW = past_now()
M = int(NOW // 60)


def at(minutes_ago: int, second: float = 5.0) -> int:
    """Milliseconds of ``second`` into the minute ``M - minutes_ago``."""
    return (M - minutes_ago) * 60_000 + int(second * 1000)


def districts(topology: Topology) -> list[str]:
    return list(topology.schema_for("camera_status").named_types["city.common.District"]["symbols"])


@dataclass
class Names:
    """Who is who in the data set, from the topology."""

    civil: str  # population_change's owner
    police: str  # camera_status's owner
    cases: str  # city_case's owner
    population_subs: list[Subscription]  # two subscriptions of population_change by other departments
    population_own: Subscription  # one by its owner
    status_own: Subscription  # camera_status's subscription by its owner
    case_sub: Subscription  # city_case's subscription by another department
    d1: str
    d2: str

    @classmethod
    def of(cls, topology: Topology) -> "Names":
        owner = {et.name: et.owner for et in topology.event_types}
        population = topology.subscriptions_for("population_change")
        others = [s for s in population if s.department != owner["population_change"]]
        # two receivers that are not the camera_status owner, so that each department's row is simple
        others = [s for s in others if s.department != owner["camera_status"]][:2]
        case_sub = next(s for s in topology.subscriptions_for("city_case")
                        if s.department not in (owner["city_case"], owner["population_change"],
                                                *(s.department for s in others)))
        d1, d2 = districts(topology)[:2]
        return cls(
            civil=owner["population_change"], police=owner["camera_status"], cases=owner["city_case"],
            population_subs=others,
            population_own=next(s for s in population if s.department == owner["population_change"]),
            status_own=next(s for s in topology.subscriptions_for("camera_status")
                            if s.department == owner["camera_status"]),
            case_sub=case_sub, d1=d1, d2=d2,
        )


@dataclass
class Writer:
    settings: KafkaSettings
    producer: Producer = field(init=False)
    failed: list[KafkaError] = field(default_factory=list)
    count: int = 0

    def __post_init__(self) -> None:
        self.producer = Producer(producer_config(self.settings, client_id="figures-test"))

    def send(self, topic: str, *, timestamp: int | None = None, headers: dict[str, str] | None = None,
             key: bytes | None = None, value: bytes | None = b"x") -> None:
        """One record, flushed (the embedded broker's high watermark is right only for
        single-record batches), its delivery checked."""
        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.failed.append(err)

        extra: dict[str, Any] = {} if timestamp is None else {"timestamp": timestamp}
        self.producer.produce(topic, key=key, value=value, partition=0, on_delivery=delivered,
                              headers=[(k, v.encode()) for k, v in (headers or {}).items()], **extra)
        assert self.producer.flush(10) == 0, f"a record to {topic} was not delivered within 10 s"
        assert not self.failed, f"the broker refused a record to {topic}: {self.failed[0]}"
        self.count += 1


def published(writer: Writer, topic: str, source: str, ts: int) -> None:
    writer.send(topic, timestamp=ts, headers={"ce_source": source, "ce_time": iso_ms(ts), "ce_id": str(uuid.uuid4())})


def routed(writer: Writer, sub: Subscription, source: str, src: tuple[str, int], published_ms: int,
           latency_ms: int) -> None:
    writer.send(sub.topic, timestamp=published_ms + latency_ms,
                headers={"ce_source": source, "ce_time": iso_ms(published_ms), "bus_src": f"{src[0]}:0:{src[1]}"})


def sla_topic(topology: Topology) -> str:
    return changelog_topic(topology, SLA_TABLE)


def topics_of(topology: Topology) -> list[str]:
    """Every topic the data set writes (the test deletes the changelog; the city fixture the rest)."""
    n = Names.of(topology)
    return sorted({topology.event_type(t).topic for t in ("population_change", "camera_status", "city_case")}
                  | {s.topic for s in (*n.population_subs, n.population_own, n.status_own, n.case_sub)}
                  | {sla_topic(topology)})


# The SLA table's entries, as faust writes them: a change of a camera's entry is a record.
T = 1_700_000_000_000  # event time of the faults (the tracker's clock, not the wall clock)


def sla_history(n: Names) -> list[tuple[str, dict[str, Any]]]:
    def entry(camera: str, district: str | None, **fields: Any) -> tuple[str, dict[str, Any]]:
        location = None if district is None else {"latitude": 24.3, "longitude": 109.4, "district": district,
                                                  "street": None, "grid_cell": None}
        value = {"camera_id": camera, "owner_department": n.police, "location": location, "status_at": None,
                 "opened_at": None, "answered_at": None, "repaired_at": None, "case_id": None, "breached": [],
                 "case_answered_at": None, "case_repaired_at": None, "escalations": []}
        value.update(fields)
        return camera, value

    day = 24 * HOUR
    return [
        # A: answered after 1 h, repaired after 2 h: both kept
        entry("CAM-A", n.d1, status_at=T, opened_at=T),
        entry("CAM-A", n.d1, status_at=T, opened_at=T, answered_at=T + HOUR),
        entry("CAM-A", n.d1, status_at=T + 2 * HOUR, opened_at=T, answered_at=T + HOUR, repaired_at=T + 2 * HOUR),
        # B: never answered; the tracker declared the answer deadline broken; still open
        entry("CAM-B", n.d1, status_at=T, opened_at=T),
        entry("CAM-B", n.d1, status_at=T, opened_at=T, breached=["answer"]),
        # C: a fault ten days ago repaired after 80 h (repair broken), then a new fault, open, nothing due
        entry("CAM-C", n.d2, status_at=T - 10 * day, opened_at=T - 10 * day),
        entry("CAM-C", n.d2, status_at=T - 10 * day + 80 * HOUR, opened_at=T - 10 * day,
              answered_at=T - 10 * day + HOUR, repaired_at=T - 10 * day + 80 * HOUR, breached=["repair"]),
        entry("CAM-C", n.d2, status_at=T, opened_at=T),
        # E (no district): opened an hour before T, answered 30 h later (late), repaired at 40 h (in time)
        entry("CAM-E", None, status_at=T - HOUR, opened_at=T - HOUR),
        entry("CAM-E", None, status_at=T - HOUR, opened_at=T - HOUR, breached=["answer"]),
        entry("CAM-E", None, status_at=T + 39 * HOUR, opened_at=T - HOUR, answered_at=T + 29 * HOUR,
              repaired_at=T + 39 * HOUR, breached=["answer"]),
        # F: a camera reported online, never faulty
        entry("CAM-F", n.d2, status_at=T),
    ]


def write_known_records(topology: Topology, settings: KafkaSettings) -> int:
    """Write the data set; returns the number of records written."""
    n = Names.of(topology)
    pop, status, case = (topology.event_type(t).topic for t in ("population_change", "camera_status", "city_case"))
    ensure_topics(settings, [TopicSpec(t) for t in topics_of(topology) if t != sla_topic(topology)]
                  + [TopicSpec.compacted(sla_topic(topology), 1)])
    w = Writer(settings)
    # population_change: offsets 0-5 of its canonical topic
    pop_times = [at(1, 10), at(1, 20), at(10), at(30), at(59), at(60)]  # offset 5: an hour and a minute ago
    for ts in pop_times:
        published(w, pop, n.civil, ts)
    first, second = n.population_subs
    for offset, latency in ((0, 120), (1, 80), (2, 3000)):
        routed(w, first, n.civil, (pop, offset), pop_times[offset], latency)
    for offset, latency in ((1, 50), (3, 7000), (5, 100)):
        routed(w, second, n.civil, (pop, offset), pop_times[offset], latency)
    routed(w, n.population_own, n.civil, (pop, 4), pop_times[4], 40)  # to its own publisher: not shared
    # camera_status: three records, routed to their publisher only
    status_times = [at(2), at(3), at(4)]
    for ts in status_times:
        published(w, status, n.police, ts)
    for offset, ts in enumerate(status_times):
        routed(w, n.status_own, n.police, (status, offset), ts, 10)
    # city_case: two records, one of them routed to another department
    case_times = [at(5), at(6)]
    for ts in case_times:
        published(w, case, n.cases, ts)
    routed(w, n.case_sub, n.cases, (case, 1), case_times[1], 250)
    # the SLA table's changelog
    for camera, value in sla_history(n):
        w.send(sla_topic(topology), key=json.dumps(camera).encode(), value=json.dumps(value).encode())
    return w.count


def expected(topology: Topology) -> dict[str, Any]:
    """The figures of the data set at ``NOW``, worked out by hand (not by the code under test)."""
    n = Names.of(topology)
    first, second = n.population_subs
    departments: dict[str, dict[str, Any]] = {
        d.name: {"published": 0, "shared": 0, "received": 0, "received_from": {}} for d in topology.departments
    }
    # civil: 6 published, offsets 0, 1, 2, 3 and 5 reached another department
    departments[n.civil].update(published=6, shared=5)
    departments[n.police].update(published=3, shared=0)
    departments[n.cases].update(published=2, shared=1)
    departments[first.department].update(received=3, received_from={n.civil: 3})
    departments[second.department].update(received=3, received_from={n.civil: 3})
    departments[n.case_sub.department].update(received=1, received_from={n.cases: 1})
    per_minute_pop = [0] * 60
    for minutes_ago in (1, 1, 10, 30, 59):  # the record of 60 minutes ago is out
        per_minute_pop[59 - minutes_ago] += 1
    per_minute_status = [0] * 60
    for minutes_ago in (2, 3, 4):
        per_minute_status[59 - minutes_ago] += 1
    per_minute_case = [0] * 60
    for minutes_ago in (5, 6):
        per_minute_case[59 - minutes_ago] += 1
    return {
        "sharing": {
            "event_types": len(topology.event_types), "event_types_shared": 2,
            "event_types_share": 2 / len(topology.event_types),
            "records": 11, "records_shared": 6, "records_share": 6 / 11,
            "departments": departments,
            "by_event_type": {
                "population_change": (6, 5, sorted({first.department, second.department})),
                "camera_status": (3, 0, []),
                "city_case": (2, 1, [n.case_sub.department]),
                "camera_alarm": (0, 0, []),
            },
        },
        "throughput": {  # last hour, per second (last full minute: 2 records), delivered, per minute
            "population_change": (5, round(2 / 60, 3), 3 + 2 + 1, per_minute_pop),
            "camera_status": (3, 0.0, 3, per_minute_status),
            "city_case": (2, 0.0, 1, per_minute_case),
            "camera_alarm": (0, 0.0, 0, [0] * 60),
        },
        "latency": {  # deliveries, p50, p99, max (seconds); nearest rank: the ceil(q n)-th smallest
            first.name: (3, 0.12, 3.0, 3.0),  # 80, 120, 3000 ms
            second.name: (2, 0.05, 7.0, 7.0),  # 50, 7000 ms (the 100 ms one is an hour and a minute old)
            n.population_own.name: (1, 0.04, 0.04, 0.04),
            n.status_own.name: (3, 0.01, 0.01, 0.01),
            n.case_sub.name: (1, 0.25, 0.25, 0.25),
        },
        "faults": {  # district: open, faults, answer (kept, broken, pending, overdue), repair (same)
            "all": (2, 5, (2, 2, 1, 1), (2, 1, 2, 0)),
            n.d1: (1, 2, (1, 1, 0, 1), (1, 0, 1, 0)),
            n.d2: (1, 2, (1, 0, 1, 0), (0, 1, 1, 0)),
        },
        "breaches": [  # the latest due first
            ("CAM-B", n.d1, "answer", iso_ms(T), iso_ms(T + 24 * HOUR), None, breach_case_id("CAM-B", T, "answer")),
            ("CAM-E", None, "answer", iso_ms(T - HOUR), iso_ms(T + 23 * HOUR), iso_ms(T + 29 * HOUR), None),
            ("CAM-C", n.d2, "repair", iso_ms(T - 240 * HOUR), iso_ms(T - 240 * HOUR + 72 * HOUR),
             iso_ms(T - 240 * HOUR + 80 * HOUR), breach_case_id("CAM-C", T - 240 * HOUR, "repair")),
        ],
    }


def assert_known_figures(figures: CityFigures, topology: Topology) -> None:
    """The figures of tests.ops.figures_data, exactly."""
    want = expected(topology)
    sharing = figures.sharing
    assert (sharing.event_types, sharing.event_types_shared, sharing.records, sharing.records_shared) == (
        want["sharing"]["event_types"], want["sharing"]["event_types_shared"], want["sharing"]["records"],
        want["sharing"]["records_shared"])
    assert sharing.event_types_share == pytest.approx(want["sharing"]["event_types_share"])
    assert sharing.records_share == pytest.approx(want["sharing"]["records_share"])
    got = {d.department: {"published": d.published, "shared": d.shared, "received": d.received,
                          "received_from": d.received_from} for d in sharing.departments}
    assert got == want["sharing"]["departments"]
    assert {e.event_type: (e.records, e.shared, e.reached) for e in sharing.by_event_type} == \
        want["sharing"]["by_event_type"]

    assert {t.event_type: (t.last_hour, t.per_second, t.delivered_last_hour, t.per_minute)
            for t in figures.throughput} == want["throughput"]
    latency = {s.subscription: (s.deliveries, s.p50_s, s.p99_s, s.max_s) for s in figures.latency if s.deliveries}
    assert latency == want["latency"]
    assert all(s.p50_s is None for s in figures.latency if not s.deliveries)

    maintenance = figures.maintenance
    assert maintenance is not None
    assert (maintenance.answer_within_h, maintenance.repair_within_h) == (24, 72)
    faults = {d.district: (d.open, d.faults, (d.answer.kept, d.answer.broken, d.answer.pending, d.answer.overdue),
                           (d.repair.kept, d.repair.broken, d.repair.pending, d.repair.overdue))
              for d in maintenance.districts}
    assert faults == want["faults"]
    assert [d.district for d in maintenance.districts][0] == "all"
    assert [(b.camera_id, b.district, b.deadline, b.opened_at, b.due_at, b.done_at, b.case_id)
            for b in maintenance.breaches] == want["breaches"]
    assert maintenance.breaches_total == 3
