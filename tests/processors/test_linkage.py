"""Linkage rules from topology.yaml: which alarms open which cases, with deterministic ids
(pure logic), and a recorded alarm sequence through storms and linkage, replayed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bus.processors.linkage import cases_for, compile_rules
from bus.processors.storms import Emission, StormMerger
from bus.schemas.catalog import SchemaCatalog
from bus.schemas.records import to_datum
from bus.topology.models import Topology
from bus.topology.validate import load_topology

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
LOC = {"latitude": 23.02, "longitude": 113.12, "district": "CHENGZHONG", "street": None, "grid_cell": None}
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
        (alarm("FIRE_SMOKE"), [("FIRE_HAZARD", "fire_brigade"), ("FIRE_HAZARD", "district_chengzhong")]),
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
                          {"field": "location.district", "ne": "LIUJIANG"}]},
        "case": {"category": "PUBLIC_SAFETY", "responsible": ["police", "district_centre", "camera_owner"],
                 "level": "CITY", "respond_within_h": 0.5, "resolve_within_h": 6},
    }])
    rules = compile_rules(topology)
    cases = cases_for(alarm("CROWD_GATHERING", "CRITICAL"), rules)
    assert [(c["responsible_unit"], c["level"], c["resolve_by"]) for c in cases] == [
        ("police", "CITY", "2026-11-23T06:30:00.000Z"),
        ("district_chengzhong", "CITY", "2026-11-23T06:30:00.000Z"),
        ("street_lighting", "CITY", "2026-11-23T06:30:00.000Z"),
    ]
    assert cases_for(alarm("CROWD_GATHERING", "MEDIUM"), rules) == []
    assert cases_for(alarm("CROWD_GATHERING", location=dict(LOC, district="LIUJIANG")), rules) == []
    assert cases_for(alarm("FIRE_SMOKE"), rules) == []  # the shipped rules are gone with the section
    assert compile_rules(with_linkage(tmp_path, [])) == ()


def recorded(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def run(alarms: list[dict[str, Any]]) -> tuple[list[Emission], list[dict[str, Any]]]:
    """Storms, then linkage, as the worker does: (every emission, the cases they open)."""
    merger = StormMerger()
    emitted = [out for record in alarms for out in merger.add(record)] + merger.flush()
    return emitted, [case for e in emitted for case in cases_for(e.alarm, RULES, first=e.first)]


def test_recorded_sequence_and_its_replay() -> None:
    alarms = recorded("linkage_alarms.jsonl")
    emitted, cases = run(alarms)
    summary = sorted((c["responsible_unit"], c["category"], c["component_id"]) for c in cases)
    assert summary == [
        ("district_chengzhong", "FIRE_HAZARD", "CAM-NH-00012"),  # the 3 alarms of the first minute: one storm
        ("district_chengzhong", "FIRE_HAZARD", "CAM-NH-00012"),  # 10 minutes later: a new alarm
        ("fire_brigade", "FIRE_HAZARD", "CAM-NH-00012"),
        ("fire_brigade", "FIRE_HAZARD", "CAM-NH-00012"),
        ("street_lighting", "CAMERA_FAULT", "CAM-NH-00077"),  # 2 offline alarms, one fault
    ]  # the intrusion opens nothing, the tampering of a camera without owner neither
    # the storm's first alarm opened the fire cases at once; its update (3 alarms) opened none
    updates = [e for e in emitted if e.is_update]
    assert sorted((e.alarm["alarm_id"], e.alarm["count"]) for e in updates) == sorted(
        [(alarms[0]["alarm_id"], 3), (alarms[3]["alarm_id"], 2)]
    )
    fire = next(c for c in cases if c["related_alarm_id"] == alarms[0]["alarm_id"] and c["responsible_unit"] == "fire_brigade")
    assert fire["description"] == f"opened by linkage rule fire-smoke from alarm {alarms[0]['alarm_id']}"
    assert all(cases_for(e.alarm, RULES, first=e.first) == [] for e in updates)
    replayed = run(alarms)[1]
    assert sorted(c["case_id"] for c in replayed) == sorted(c["case_id"] for c in cases)  # no second case
    assert len({c["case_id"] for c in cases}) == 5


def test_update_opens_only_the_rules_it_escalated_into(tmp_path: Path) -> None:
    """A storm of crowd alarms that starts MEDIUM and turns CRITICAL: the first opens the
    any-severity case at once, the update only the case of the severe rule, with its own id."""
    crowds = {"field": "alarm_type", "eq": "CROWD_GATHERING"}
    rules = compile_rules(with_linkage(tmp_path, [
        {"name": "crowds", "match": crowds,
         "case": {"category": "PUBLIC_SAFETY", "responsible": ["district_centre"], "respond_within_h": 1,
                  "resolve_within_h": 6}},
        {"name": "severe-crowds", "match": {"and": [crowds, {"field": "severity", "in": ["HIGH", "CRITICAL"]}]},
         "case": {"category": "PUBLIC_SAFETY", "responsible": ["police"], "level": "CITY", "respond_within_h": 0.5,
                  "resolve_within_h": 6}},
    ]))
    merger = StormMerger()
    storm = [alarm("CROWD_GATHERING", "MEDIUM", alarm_id=f"6f1c2f3e-{i:04d}-4a4a-9b9b-123456789abc",
                   occurred_at=f"2026-11-23T08:30:{i * 10:02d}+08:00") for i in range(3)]
    storm[1]["severity"] = "CRITICAL"
    (first,) = merger.add(storm[0])
    assert [c["responsible_unit"] for c in cases_for(first.alarm, rules, first=first.first)] == ["district_chengzhong"]
    assert merger.add(storm[1]) == merger.add(storm[2]) == []
    (update,) = merger.flush()
    escalated = cases_for(update.alarm, rules, first=update.first)
    assert [(c["responsible_unit"], c["level"], c["related_alarm_id"]) for c in escalated] == [
        ("police", "CITY", storm[0]["alarm_id"]),
    ]
    assert "(3 alarms merged)" in escalated[0]["description"]
    # without its first version, the update would open both again, the first under the same id
    both = cases_for(update.alarm, rules)
    assert len(both) == 2 and cases_for(first.alarm, rules)[0]["case_id"] == both[0]["case_id"]
    # a storm that stays MEDIUM: its update opens nothing
    calm = StormMerger()
    calm.add(storm[0])
    calm.add(storm[2])
    (calm_update,) = calm.flush()
    assert calm_update.alarm["count"] == 2
    assert cases_for(calm_update.alarm, rules, first=calm_update.first) == []
