"""The topology models: naming conventions, lookups, entitlement ceilings, filters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from bus.errors import BusError
from bus.topology import (
    AllOf,
    AnyOf,
    CatalogMissing,
    Condition,
    Not,
    Problem,
    Subscription,
    Topology,
    TopologyInvalid,
    UnknownName,
    load_topology,
)
from bus.topology.filters import conditions
from bus.topology.models import narrows

REPO = Path(__file__).resolve().parents[2]

SMALL = {
    "version": 1,
    "city": {"name": "Test"},
    "departments": [
        {"name": "police", "title": "Police",
         "entitlements": {"population_change": {"name": "clear", "birth_date": "masked", "person_id": "hash"}}},
        {"name": "statistics", "title": "Statistics",
         "entitlements": {"population_change": {"person_id": "masked", "national_id": "drop"}}},
    ],
    "event_types": [
        {"name": "camera_alarm", "schema": "surveillance/camera_alarm.avsc", "owner": "police", "key": "camera_id"},
        {"name": "population_change", "schema": "population/population_change.avsc", "owner": "police",
         "key": "person_id", "compatibility": "FULL_TRANSITIVE", "partitions": 12},
    ],
    "subscriptions": [
        {"name": "people", "department": "police", "event_type": "population_change", "description": "d",
         "masks": {"birth_date": "drop"}},
        {"name": "counts", "department": "statistics", "event_type": "population_change", "description": "d"},
    ],
}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Topology:
    path = tmp_path_factory.mktemp("small") / "topology.yaml"
    path.write_text(json.dumps({**SMALL, "schemas_dir": str(REPO / "schemas")}), encoding="utf-8")  # JSON is YAML
    return load_topology(path)


def test_topic_and_subject_names(small: Topology) -> None:
    et = small.event_type("population_change")
    assert (et.topic, et.subject) == ("city.events.population_change", "city.events.population_change-value")
    sub = small.subscription("people")
    assert (sub.topic, sub.subject) == ("city.sub.police.people", "city.sub.police.people-value")
    assert (et.compatibility, et.partitions) == ("FULL_TRANSITIVE", 12)
    assert small.event_type("camera_alarm").compatibility == "BACKWARD"
    assert small.event_type("camera_alarm").partitions == 6
    assert sub.start == "now" and sub.start_time is None


def test_namespace_prefixes_every_topic() -> None:
    topology = Topology.model_validate({**SMALL, "namespace": "staging"})
    assert topology.event_type("camera_alarm").topic == "staging.city.events.camera_alarm"
    assert topology.subscription("counts").subject == "staging.city.sub.statistics.counts-value"


@pytest.mark.parametrize(
    ("department", "event_type", "expected"),
    [("police", "camera_alarm", True), ("police", "population_change", True),
     ("statistics", "camera_alarm", False), ("nobody", "camera_alarm", False), ("police", "nothing", False)],
)
def test_may_publish(small: Topology, department: str, event_type: str, expected: bool) -> None:
    assert small.may_publish(department, event_type) is expected


@pytest.mark.parametrize(
    ("department", "field", "expected"),
    [
        ("police", "name", "clear"),
        ("police", "birth_date", "generalise"),  # masked = the schema's mask
        ("police", "person_id", "hash"),
        ("police", "national_id", None),  # no entitlement: never delivered
        ("police", "change_type", "clear"),  # not personal
        ("police", "location.nowhere", None),  # not a field
        ("statistics", "person_id", "hash"),
        ("statistics", "national_id", "drop"),
    ],
)
def test_ceiling(small: Topology, department: str, field: str, expected: str | None) -> None:
    assert small.ceiling(department, "population_change", field) == expected


def test_selection_and_treatments(small: Topology) -> None:
    people = small.selection("people")
    assert "name" in people and "national_id" not in people and "cause_of_death_category" not in people
    assert "birth_date" not in people  # masked to drop by the subscription
    assert small.treatments("people") == {"person_id": "hash", "name": "clear"}
    assert small.selection("counts")[:2] == ["change_id", "person_id"]
    assert small.treatments("counts") == {"person_id": "hash"}


def test_subscriptions_for(small: Topology) -> None:
    assert [s.name for s in small.subscriptions_for("population_change")] == ["people", "counts"]
    assert small.subscriptions_for("camera_alarm") == []


def test_unknown_names_suggest_the_closest(small: Topology) -> None:
    with pytest.raises(UnknownName, match=r"unknown department 'polce'; did you mean 'police'\?"):
        small.department("polce")
    with pytest.raises(UnknownName, match="known event types: camera_alarm, population_change"):
        small.event_type("zzz")
    assert issubclass(UnknownName, BusError)


def test_schema_questions_need_the_catalog() -> None:
    topology = Topology.model_validate(SMALL)
    with pytest.raises(CatalogMissing, match="load it with bus.topology.load_topology"):
        topology.schema_for("camera_alarm")
    with pytest.raises(CatalogMissing):
        topology.ceiling("police", "population_change", "name")


def test_loaded_topology_carries_its_catalog(small: Topology) -> None:
    assert small.schema_for("camera_alarm").field("location.district") is not None
    assert small.catalog.root == REPO / "schemas"


@pytest.mark.parametrize(
    ("wanted", "ceiling", "allowed"),
    [("clear", "clear", True), ("hash", "clear", True), ("drop", "hash", True), ("partial", "partial", True),
     ("generalise", "partial", False), ("partial", "hash", False), ("clear", "generalise", False),
     ("hash", "drop", False)],
)
def test_narrowing(wanted: str, ceiling: str, allowed: bool) -> None:
    assert narrows(wanted, ceiling) is allowed  # type: ignore[arg-type]


def test_filters_parse_into_a_tree() -> None:
    sub = Subscription.model_validate({
        "name": "f", "department": "d", "event_type": "e", "description": "x",
        "filter": {"and": [
            {"field": "alarm_type", "in": ["FIRE_SMOKE"]},
            {"not": {"field": "severity", "eq": "LOW"}},
            {"or": [{"field": "location.district", "eq": "CHENGZHONG"}, {"field": "count", "gte": 5}]},
        ]},
    })
    tree = sub.filter
    assert isinstance(tree, AllOf)
    assert isinstance(tree.all_of[1], Not) and isinstance(tree.all_of[2], AnyOf)
    assert [(c.field, c.op, c.value) for c in conditions(tree)] == [
        ("alarm_type", "in", ["FIRE_SMOKE"]), ("severity", "eq", "LOW"),
        ("location.district", "eq", "CHENGZHONG"), ("count", "gte", 5),
    ]
    assert tree.model_dump(by_alias=True, exclude_none=True)["and"][0] == {"field": "alarm_type", "in": ["FIRE_SMOKE"]}


@pytest.mark.parametrize(
    ("condition", "error"),
    [({"field": "x"}, "found none"), ({"field": "x", "eq": 1, "ne": 2}, "found eq, ne"),
     ({"field": "x", "exists": "yes"}, "valid boolean"), ({"field": "x", "prefix": 5}, "valid string"),
     ({"field": "x", "like": "%a"}, "Extra inputs")],
)
def test_bad_conditions(condition: dict[str, object], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        Condition.model_validate(condition)


@pytest.mark.parametrize(
    ("start", "ok"),
    [("now", True), ("earliest", True), ("2026-01-01T00:00:00+08:00", True), ("2026-01-01T00:00:00.5Z", True),
     ("2026-01-01T00:00:00", False), ("2026-01-01", False), ("2026-13-01T00:00:00Z", False), ("latest", False)],
)
def test_start(start: str, ok: bool) -> None:
    data = {"name": "s", "department": "d", "event_type": "e", "description": "x", "start": start}
    if ok:
        assert Subscription.model_validate(data).start == start
    else:
        with pytest.raises(ValidationError, match="is not now, earliest or an RFC 3339 time"):
            Subscription.model_validate(data)


def test_every_field_is_documented_with_examples() -> None:
    """Field descriptions and examples generate help and docs."""
    from bus.topology import filters, linkage, models

    classes = [c for module in (models, filters, linkage) for c in vars(module).values()
               if isinstance(c, type) and issubclass(c, BaseModel) and c.__module__ == module.__name__
               and not c.__name__.startswith("_")]
    assert len(classes) >= 10
    for cls in classes:
        for name, field in cls.model_fields.items():
            assert field.description and field.examples, f"{cls.__name__}.{name}"
    assert "Condition" in Topology.model_json_schema()["$defs"]


def test_problem_format_and_order() -> None:
    a = Problem("t.yaml", 3, 5, "b")
    b = Problem("t.yaml", 12, 1, "a")
    assert str(a) == "t.yaml:3:5: b"
    assert sorted([b, a]) == [a, b]
    error = TopologyInvalid("t.yaml", [b, a])
    assert error.problems == [a, b]
    assert isinstance(error, BusError)
    assert str(error) == "2 problem(s) in t.yaml:\nt.yaml:3:5: b\nt.yaml:12:1: a"


def test_load_keeps_the_cause(tmp_path: Path) -> None:
    with pytest.raises(TopologyInvalid) as caught:
        load_topology(tmp_path / "missing.yaml")
    assert caught.value.problems[0].message.startswith("file not found")
    assert isinstance(caught.value.__cause__, FileNotFoundError)
