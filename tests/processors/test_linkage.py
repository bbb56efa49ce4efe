"""Linkage rules from topology.yaml: which alarms open which cases, with deterministic ids
(pure logic), and a recorded alarm sequence through storms and linkage, replayed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bus.processors.linkage import cases_for, compile_rules
from bus.processors.storms import StormMerger
from bus.schemas.catalog import SchemaCatalog
from bus.schemas.records import to_datum
from bus.topology.loader import load_topology
from bus.topology.models import Topology

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
LOC = {"latitude": 23.02, "longitude": 113.12, "district": "NANHAI", "street": None, "grid_cell": None}
RULES = compile_rules(load_topology(REPO / "topology.yaml"))


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
def test_shipped_rules(record: dict, expected: list) -> None:
    assert [(c["category"], c["responsible_unit"]) for c in cases_for(record, RULES)] == expected


def test_case_ids_are_deterministic_and_distinct() -> None:
    first, second = cases_for(alarm("FIRE_SMOKE"), RULES), cases_for(alarm("FIRE_SMOKE"), RULES)
    assert [c["case_id"] for c in first] == [c["case_id"] for c in second]  # a replay: same cases
    assert len({c["case_id"] for c in first}) == 2
    other = cases_for(alarm("FIRE_SMOKE", alarm_id="6f1c2f3e-2222-4a4a-9b9b-123456789abc"), RULES)
    assert not {c["case_id"] for c in other} & {c["case_id"] for c in first}


def test_deadlines_follow_the_maintenance_promise() -> None:
    (case,) = cases_for(alarm("CAMERA_OFFLINE", count=7), RULES)
    assert (case["reported_at"], case["respond_by"], case["resolve_by"]) == (
        "2026-11-23T00:30:00.000Z", "2026-11-24T00:30:00.000Z", "2026-11-26T00:30:00.000Z",
    )
    assert "(7 alarms merged)" in case["description"]


def test_cases_fit_the_city_case_schema() -> None:
    schema = SchemaCatalog.load(REPO / "schemas").get("city_case")
    for kind in ("FIRE_SMOKE", "CAMERA_OFFLINE"):
        for case in cases_for(alarm(kind), RULES):
            to_datum(schema, case)  # raises RecordInvalid listing every problem


def with_linkage(tmp_path: Path, rules: list[dict[str, Any]]) -> Topology:
    yaml = YAML()
    data = yaml.load((REPO / "topology.yaml").read_text(encoding="utf-8"))
    data["schemas_dir"] = str(REPO / "schemas")
    data["linkage"] = rules
    path = tmp_path / "topology.yaml"
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return load_topology(path)


def test_rules_are_read_from_the_topology(tmp_path: Path) -> None:
    topology = with_linkage(tmp_path, [{
        "name": "severe-crowds",
        "match": {"and": [{"field": "alarm_type", "eq": "CROWD_GATHERING"},
                          {"field": "severity", "in": ["HIGH", "CRITICAL"]},
                          {"field": "location.district", "ne": "GAOMING"}]},
        "case": {"category": "PUBLIC_SAFETY", "responsible": ["police", "district_centre", "camera_owner"],
                 "level": "CITY", "respond_within_h": 0.5, "resolve_within_h": 6},
    }])
    rules = compile_rules(topology)
    cases = cases_for(alarm("CROWD_GATHERING", "CRITICAL"), rules)
    assert [(c["responsible_unit"], c["level"], c["resolve_by"]) for c in cases] == [
        ("police", "CITY", "2026-11-23T06:30:00.000Z"),
        ("district_nanhai", "CITY", "2026-11-23T06:30:00.000Z"),
        ("street_lighting", "CITY", "2026-11-23T06:30:00.000Z"),
    ]
    assert cases_for(alarm("CROWD_GATHERING", "MEDIUM"), rules) == []
    assert cases_for(alarm("CROWD_GATHERING", location=dict(LOC, district="GAOMING")), rules) == []
    assert cases_for(alarm("FIRE_SMOKE"), rules) == []  # the shipped rules are gone with the section
    assert compile_rules(with_linkage(tmp_path, [])) == ()


def recorded(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def run(alarms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Storms, then linkage, as the worker does: the cases every published alarm opens."""
    merger = StormMerger()
    published = [out for record in alarms for out in merger.add(record)] + merger.flush()
    return [case for record in published for case in cases_for(record, RULES)]


def test_recorded_sequence_and_its_replay() -> None:
    alarms = recorded("linkage_alarms.jsonl")
    cases = run(alarms)
    summary = sorted((c["responsible_unit"], c["category"], c["component_id"]) for c in cases)
    assert summary == [
        ("district_nanhai", "FIRE_HAZARD", "CAM-NH-00012"),  # the 3 alarms of the first minute: one storm
        ("district_nanhai", "FIRE_HAZARD", "CAM-NH-00012"),  # 10 minutes later: a new alarm
        ("fire_brigade", "FIRE_HAZARD", "CAM-NH-00012"),
        ("fire_brigade", "FIRE_HAZARD", "CAM-NH-00012"),
        ("street_lighting", "CAMERA_FAULT", "CAM-NH-00077"),  # 2 offline alarms, one fault
    ]  # the intrusion opens nothing, the tampering of a camera without owner neither
    assert "(3 alarms merged)" in next(c["description"] for c in cases if c["related_alarm_id"] == alarms[0]["alarm_id"]
                                       and c["responsible_unit"] == "fire_brigade")
    replayed = run(alarms)
    assert sorted(c["case_id"] for c in replayed) == sorted(c["case_id"] for c in cases)  # no second case
    assert len({c["case_id"] for c in cases}) == 5
