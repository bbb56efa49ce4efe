"""Linkage rules: which alarms open which cases, with deterministic ids (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.processors.linkage import cases_for
from bus.schemas.catalog import SchemaCatalog
from bus.schemas.records import to_datum

REPO = Path(__file__).resolve().parents[2]
LOC = {"latitude": 23.02, "longitude": 113.12, "district": "NANHAI", "street": None, "grid_cell": None}


def alarm(kind: str, severity: str = "HIGH", **extra: object) -> dict:
    record = {
        "alarm_id": "6f1c2f3e-1111-4a4a-9b9b-123456789abc",
        "camera_id": "CAM-NH-00012",
        "alarm_type": kind,
        "severity": severity,
        "occurred_at": "2026-11-23T08:30:00+08:00",
        "location": LOC,
        "owner_department": "street_lighting",
        "count": 1,
    }
    record.update(extra)
    return record


@pytest.mark.parametrize(
    "record,expected",
    [
        (alarm("FIRE_SMOKE"), [("FIRE_HAZARD", "fire_brigade"), ("FIRE_HAZARD", "district_nanhai")]),
        (alarm("CAMERA_OFFLINE", "LOW"), [("CAMERA_FAULT", "street_lighting")]),
        (alarm("TAMPERING"), [("CAMERA_FAULT", "street_lighting")]),
        (alarm("TAMPERING", owner_department=None), []),  # owner unknown: nobody to give it to
        (alarm("INTRUSION"), []),
        (alarm("FIRE_SMOKE", location=None), []),  # not enriched: no district, no case
        (alarm("CAMERA_OFFLINE", camera_id="NETWORK-FLAP"), []),
    ],
)
def test_rules(record: dict, expected: list) -> None:
    assert [(c["category"], c["responsible_unit"]) for c in cases_for(record)] == expected


def test_case_ids_are_deterministic_and_distinct() -> None:
    first, second = cases_for(alarm("FIRE_SMOKE")), cases_for(alarm("FIRE_SMOKE"))
    assert [c["case_id"] for c in first] == [c["case_id"] for c in second]  # a replay: same cases
    assert len({c["case_id"] for c in first}) == 2
    other = cases_for(alarm("FIRE_SMOKE", alarm_id="6f1c2f3e-2222-4a4a-9b9b-123456789abc"))
    assert not {c["case_id"] for c in other} & {c["case_id"] for c in first}


def test_deadlines_follow_the_maintenance_promise() -> None:
    (case,) = cases_for(alarm("CAMERA_OFFLINE", count=7))
    assert (case["reported_at"], case["respond_by"], case["resolve_by"]) == (
        "2026-11-23T00:30:00.000Z", "2026-11-24T00:30:00.000Z", "2026-11-26T00:30:00.000Z",
    )
    assert "(7 alarms merged)" in case["description"]


def test_cases_fit_the_city_case_schema() -> None:
    schema = SchemaCatalog.load(REPO / "schemas").get("city_case")
    for kind in ("FIRE_SMOKE", "CAMERA_OFFLINE"):
        for case in cases_for(alarm(kind)):
            to_datum(schema, case)  # raises RecordInvalid listing every problem
