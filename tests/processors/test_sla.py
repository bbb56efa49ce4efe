"""The maintenance promise, from recorded event sequences (data/sla_*.jsonl): time is the
records' own, each record is applied then the clock checks every camera (as the worker's
ticks do), and a replay opens no second escalation case."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from bus.kafka.config import KafkaSettings, producer_config
from bus.ops.metrics import BusMonitor
from bus.processors.cameras import CameraInfo, camera_from_status
from bus.processors.sla import (
    ALL,
    Availability,
    AvailabilityReporter,
    CameraSla,
    SlaPolicy,
    SlaTracker,
    breach_case_id,
    fleet_availability,
    key_partition,
)
from bus.processors.storms import event_time_ms
from bus.schemas.catalog import SchemaCatalog
from bus.schemas.records import to_datum
from bus.topology.validate import load_topology

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
A, B = "CAM-CC-00012", "CAM-SD-00044"
OPENED_A = event_time_ms("2026-11-20T08:00:00+08:00")


def recorded(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def feed(tracker: SlaTracker, events: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    """(index of the record that made it, escalation case) for every breach."""
    out: list[tuple[int, dict[str, Any]]] = []
    for i, event in enumerate(events):
        record = event["record"]
        if event["type"] == "camera_status":
            made = tracker.status(record)
            at = event_time_ms(record["reported_at"])
        else:
            made = tracker.case(record["component_id"], record)
            at = event_time_ms(record["updated_at"])
        made += tracker.due(at)
        out += [(i, case) for case in made]
    return out


def entry(tracker: SlaTracker, camera: str) -> CameraSla:
    return CameraSla.from_json(tracker.store[camera])


def test_fault_answered_and_repaired_in_time() -> None:
    tracker = SlaTracker({})
    assert feed(tracker, recorded("sla_answered_in_time.jsonl")) == []
    a = entry(tracker, A)
    assert (a.opened_at, a.answered_at, a.repaired_at) == (
        OPENED_A, event_time_ms("2026-11-20T11:00:00+08:00"), event_time_ms("2026-11-22T00:00:00+08:00"))
    assert a.case_id == "11111111-1111-4111-8111-111111111111"


def test_not_answered_within_24_h_breaches_exactly_once() -> None:
    tracker = SlaTracker({})
    breaches = feed(tracker, recorded("sla_not_answered.jsonl"))
    assert [(i, c["component_id"]) for i, c in breaches] == [(4, A)]  # at 24 h 1 min, not at 24 h exactly
    (_, case) = breaches[0]
    assert case["case_id"] == breach_case_id(A, OPENED_A, "answer")
    assert (case["category"], case["level"], case["source"], case["status"]) == ("CAMERA_FAULT", "CITY", "LINKAGE",
                                                                                "REPORTED")
    assert (case["district"], case["responsible_unit"]) == ("LIUNAN", "city_management")
    assert case["title"] == f"maintenance promise broken: camera {A} not answered within 24 h"
    assert case["reported_at"] == "2026-11-21T00:00:00.000Z"  # the deadline, whatever record passed it
    assert "not answered by the deadline" in case["description"]
    assert "maintenance case 11111111-1111-4111-8111-111111111111" in case["description"]
    assert entry(tracker, A).breached == ["answer"]


def test_repaired_late_breaches_and_an_older_status_changes_nothing() -> None:
    tracker = SlaTracker({})
    breaches = feed(tracker, recorded("sla_repaired_late.jsonl"))
    # A: 72 h passed at B's record of 23 Nov 09:00; B repaired exactly at its deadline: in time
    assert [(i, c["case_id"]) for i, c in breaches] == [(4, breach_case_id(A, OPENED_A, "repair"))]
    assert "not repaired within 72 h" in breaches[0][1]["title"]
    b = entry(tracker, B)
    assert (b.opened_at, b.repaired_at, b.breached) == (
        event_time_ms("2026-11-20T09:00:00+08:00"), event_time_ms("2026-11-23T09:00:00+08:00"), [])


def test_a_late_repair_is_a_breach_by_its_own_record() -> None:
    tracker = SlaTracker({})
    events = [e for e in recorded("sla_repaired_late.jsonl") if e["record"].get("camera_id", A) == A
              or e["record"].get("component_id") == A]
    breaches = feed(tracker, [events[0], events[1], events[-1]])  # nothing between: the repair itself is late
    assert [c["case_id"] for _, c in breaches] == [breach_case_id(A, OPENED_A, "repair")]
    assert "repaired late, at 2026-11-23T08:00:00.000Z" in breaches[0][1]["description"]


def test_case_read_before_the_status_that_opens_its_fault() -> None:
    tracker = SlaTracker({})
    assert feed(tracker, recorded("sla_case_before_status.jsonl")) == []
    b = entry(tracker, B)
    assert (b.answered_at, b.repaired_at) == (
        event_time_ms("2026-11-20T12:00:00+08:00"), event_time_ms("2026-11-22T12:00:00+08:00"))


@pytest.mark.parametrize("name", ["sla_not_answered.jsonl", "sla_repaired_late.jsonl"])
def test_replay_opens_no_second_case(name: str) -> None:
    tracker = SlaTracker({})
    first = feed(tracker, recorded(name))
    assert first
    assert feed(tracker, recorded(name)) == []  # the same records again: nothing new
    fresh = feed(SlaTracker({}), recorded(name))  # a worker that lost its state: the same case ids
    assert [c["case_id"] for _, c in fresh] == [c["case_id"] for _, c in first]


def test_updates_of_its_own_escalation_cases_are_ignored() -> None:
    tracker = SlaTracker({})
    events = recorded("sla_not_answered.jsonl")
    ((_, case),) = feed(tracker, events[:5])
    closed = dict(case, status="CLOSED", updated_at="2026-11-21T09:00:00.000Z")
    assert tracker.case(A, closed) == []
    assert entry(tracker, A).open  # closing the escalation is not a repair of the camera


def test_a_new_fault_after_a_repair_has_its_own_deadlines() -> None:
    tracker = SlaTracker({})
    feed(tracker, recorded("sla_not_answered.jsonl"))
    reopened = event_time_ms("2026-11-26T08:00:00+08:00")
    status = {"camera_id": A, "status": "OFFLINE", "reported_at": "2026-11-26T08:00:00+08:00"}
    assert tracker.status(status) == []
    (case,) = tracker.due(reopened + 24 * 3_600_000 + 1)
    assert case["case_id"] == breach_case_id(A, reopened, "answer") != breach_case_id(A, OPENED_A, "answer")
    assert case["district"] == "LIUNAN"  # location kept from earlier statuses


def test_a_camera_without_district_breaches_without_a_case() -> None:
    tracker = SlaTracker({})
    tracker.status({"camera_id": "CAM-X", "status": "OFFLINE", "reported_at": "2026-11-20T08:00:00+08:00"})
    assert tracker.due(OPENED_A + 25 * 3_600_000) == []
    assert (tracker.unplaced, entry(tracker, "CAM-X").breached) == (1, ["answer"])


def test_escalation_cases_fit_the_city_case_schema() -> None:
    schema = SchemaCatalog.load(REPO / "schemas").get("city_case")
    for name in ("sla_not_answered.jsonl", "sla_repaired_late.jsonl"):
        for _, case in feed(SlaTracker({}), recorded(name)):
            to_datum(schema, case)  # raises RecordInvalid listing every problem


def test_policy_comes_from_the_maintenance_linkage_rule() -> None:
    assert SlaPolicy.from_topology(load_topology(REPO / "topology.yaml")) == SlaPolicy(24 * 3_600_000, 72 * 3_600_000)
    tracker = SlaTracker({}, SlaPolicy(answer_within_ms=3_600_000, repair_within_ms=2 * 3_600_000))
    breaches = feed(tracker, recorded("sla_answered_in_time.jsonl"))
    assert [c["title"].split(" not ")[1] for _, c in breaches] == ["answered within 1 h", "repaired within 2 h"]


def test_key_partition_is_the_publishers(kafka_settings: KafkaSettings, topic_factory: Callable[..., str]) -> None:
    """Records the processors key themselves must land where the publisher (librdkafka's
    default partitioner) puts the same camera's camera_status records."""
    topic = topic_factory("partitions", partitions=12)
    producer = Producer(producer_config(kafka_settings, client_id="test-partitioner"))
    landed: dict[str, int] = {}
    keys = [f"CAM-CC-{i:05d}" for i in range(40)]
    for key in keys:
        producer.produce(topic, key=key.encode(), value=b"x",
                         on_delivery=lambda err, msg: landed.__setitem__(msg.key().decode(), msg.partition()))
    assert producer.flush(30) == 0
    assert landed == {key: key_partition(key, 12) for key in keys}
    assert len(set(landed.values())) > 6  # spread out: the check could fail


# -- fleet availability ---------------------------------------------------------------------


def fleet(name: str) -> list[CameraInfo]:
    """The camera table after the recorded statuses (newer statuses win, as in the app)."""
    table: dict[str, CameraInfo] = {}
    for event in recorded(name):
        info = camera_from_status(event["record"], event_time_ms(event["record"]["reported_at"]))
        table[info.camera_id] = table[info.camera_id].merged(info) if info.camera_id in table else info
    return list(table.values())


def test_availability_per_district_and_overall() -> None:
    figures = fleet_availability(fleet("availability.jsonl"))
    assert {k: (v.online, v.total) for k, v in figures.items()} == {
        ALL: (22, 26), "LIUNAN": (19, 20), "YUFENG": (3, 5)}
    assert figures["LIUNAN"].ratio == pytest.approx(0.95)
    assert figures[ALL].ratio < 0.95
    at = dt.datetime(2026, 11, 23, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert figures["YUFENG"].to_json(at) == {"online": 3, "total": 5, "ratio": 0.6, "at": "2026-11-23T00:30:00.000Z"}


def test_availability_of_nothing() -> None:
    assert fleet_availability([CameraInfo("CAM-IMPORTED")]) == {ALL: Availability(0, 0)}  # no status: not counted
    assert Availability(0, 0).ratio == 0.0


def test_reporter_sends_changed_figures_and_sets_the_monitor() -> None:
    monitor = BusMonitor()
    reporter = AvailabilityReporter(monitor)
    at = dt.datetime(2026, 11, 23, 0, 30, tzinfo=dt.timezone.utc)
    cameras = fleet("availability.jsonl")
    first = reporter.report(cameras, at)
    assert [key for key, _ in first] == ["LIUNAN", "YUFENG", ALL]
    assert reporter.report(cameras, at) == []  # nothing changed: nothing to send
    repaired = [replace(c, status="ONLINE") if c.camera_id == "CAM-CC-00007" else c for c in cameras]
    assert reporter.report(repaired, at) == [
        ("LIUNAN", {"online": 20, "total": 20, "ratio": 1.0, "at": "2026-11-23T00:30:00.000Z"}),
        (ALL, {"online": 23, "total": 26, "ratio": round(23 / 26, 6), "at": "2026-11-23T00:30:00.000Z"}),
    ]
    text = monitor.render().decode()
    assert 'bus_camera_fleet_availability{district="LIUNAN"} 1.0' in text
    assert 'bus_camera_fleet_availability{district="YUFENG"} 0.6' in text


class CountingStore(dict):
    """A store that counts its writes (each is a changelog record in the worker)."""

    writes = 0

    def __setitem__(self, key: str, value: Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def _status(camera: str, status: str, at: str) -> dict[str, Any]:
    return {"camera_id": camera, "status": status, "reported_at": at,
            "location": {"latitude": 23.0, "longitude": 113.1, "district": "LIUNAN"}, "owner_department": "police"}


def test_heartbeats_write_nothing_and_an_older_status_still_changes_nothing() -> None:
    store = CountingStore()
    tracker = SlaTracker(store)
    tracker.status(_status(A, "ONLINE", "2026-11-20T08:00:00+08:00"))
    assert store.writes == 1  # the camera is new
    for minute in range(1, 30):
        tracker.status(_status(A, "ONLINE", f"2026-11-20T08:{minute:02d}:00+08:00"))
    assert store.writes == 1  # 29 heartbeats: nothing changed, nothing written
    tracker.status(_status(A, "OFFLINE", "2026-11-20T08:30:00+08:00"))
    assert (store.writes, entry(tracker, A).opened_at) == (2, event_time_ms("2026-11-20T08:30:00+08:00"))
    tracker.status(_status(A, "OFFLINE", "2026-11-20T08:31:00+08:00"))
    assert store.writes == 2  # still offline: the fault stays as opened
    # A report older than the latest heartbeat, though newer than the last change, is out of order:
    tracker.status(_status(A, "ONLINE", "2026-11-20T08:30:30+08:00"))
    assert entry(tracker, A).open and store.writes == 2
    tracker.status(_status(A, "ONLINE", "2026-11-20T08:40:00+08:00"))
    assert entry(tracker, A).repaired_at == event_time_ms("2026-11-20T08:40:00+08:00")
