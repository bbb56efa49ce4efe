"""Every filter operator against every field type, null semantics, combinators, nesting."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from bus.routing.filters import compile_filter
from bus.schemas.catalog import SchemaCatalog
from bus.topology.filters import Filter

CATALOG = SchemaCatalog.load(Path(__file__).resolve().parents[2] / "schemas")
ALARM = CATALOG.get("camera_alarm")
POPULATION = CATALOG.get("population_change")
UTC = dt.timezone.utc


def check(event, spec: dict, record: dict) -> bool:
    node = TypeAdapter(Filter).validate_python(spec)
    return compile_filter(node, event)(record)


alarm = {
    "alarm_type": "FIRE_SMOKE",
    "severity": "HIGH",
    "camera_id": "CAM-CC-00012",
    "count": 7,
    "confidence": 0.9,
    "occurred_at": dt.datetime(2026, 11, 23, 0, 30, tzinfo=UTC),
    "location": {"district": "CHENGZHONG", "latitude": 23.0},
    "plate_number": None,
}

CASES = [
    # (spec, expected) on `alarm`
    ({"field": "alarm_type", "eq": "FIRE_SMOKE"}, True),
    ({"field": "alarm_type", "eq": "INTRUSION"}, False),
    ({"field": "alarm_type", "ne": "INTRUSION"}, True),
    ({"field": "alarm_type", "in": ["INTRUSION", "FIRE_SMOKE"]}, True),
    ({"field": "alarm_type", "not_in": ["INTRUSION", "FIRE_SMOKE"]}, False),
    ({"field": "count", "gt": 6}, True),
    ({"field": "count", "gt": 7}, False),
    ({"field": "count", "gte": 7}, True),
    ({"field": "count", "lt": 7}, False),
    ({"field": "count", "lte": 7}, True),
    ({"field": "confidence", "gte": 0.9}, True),
    ({"field": "confidence", "lt": 0.5}, False),
    ({"field": "camera_id", "prefix": "CAM-CC-"}, True),
    ({"field": "camera_id", "prefix": "CAM-NH-"}, False),
    ({"field": "camera_id", "gt": "CAM-CC-00011"}, True),
    ({"field": "occurred_at", "gte": "2026-11-23T08:30:00+08:00"}, True),  # same instant, other offset
    ({"field": "occurred_at", "gt": "2026-11-23T08:30:00+08:00"}, False),
    ({"field": "occurred_at", "lt": "2026-11-24T00:00:00Z"}, True),
    ({"field": "location.district", "eq": "CHENGZHONG"}, True),
    ({"field": "location.district", "in": ["YUFENG"]}, False),
    ({"field": "location.latitude", "gt": 22.5}, True),
    ({"field": "location", "exists": True}, True),
    # null / absent fields
    ({"field": "plate_number", "exists": False}, True),
    ({"field": "plate_number", "exists": True}, False),
    ({"field": "plate_number", "eq": "桂B12345"}, False),
    ({"field": "plate_number", "ne": "桂B12345"}, True),
    ({"field": "plate_number", "not_in": ["桂B12345"]}, True),
    ({"field": "plate_number", "prefix": "桂"}, False),
    ({"field": "description", "gt": "a"}, False),
    # combinators
    ({"and": [{"field": "alarm_type", "eq": "FIRE_SMOKE"}, {"field": "count", "gte": 5}]}, True),
    ({"and": [{"field": "alarm_type", "eq": "FIRE_SMOKE"}, {"field": "count", "gte": 8}]}, False),
    ({"or": [{"field": "alarm_type", "eq": "INTRUSION"}, {"field": "count", "gte": 5}]}, True),
    ({"or": [{"field": "alarm_type", "eq": "INTRUSION"}, {"field": "count", "gte": 8}]}, False),
    ({"not": {"field": "severity", "eq": "LOW"}}, True),
    ({"not": {"field": "severity", "eq": "HIGH"}}, False),
    ({"and": [{"not": {"field": "severity", "eq": "LOW"}},
              {"or": [{"field": "location.district", "eq": "YUFENG"}, {"field": "count", "gte": 5}]}]}, True),
]


@pytest.mark.parametrize(("spec", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_operator(spec: dict, expected: bool) -> None:
    assert check(ALARM, spec, alarm) is expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"field": "birth_date", "lt": "1990-01-01"}, True),
        ({"field": "birth_date", "gte": "1990-01-01"}, False),
        ({"field": "birth_date", "eq": "1985-06-01"}, True),
        ({"field": "effective_date", "in": ["2026-11-20", "2026-11-21"]}, True),
        ({"field": "district", "eq": "YUFENG"}, True),
    ],
)
def test_dates_and_optional_enums(spec: dict, expected: bool) -> None:
    record = {"birth_date": dt.date(1985, 6, 1), "effective_date": dt.date(2026, 11, 21), "district": "YUFENG"}
    assert check(POPULATION, spec, record) is expected


def test_a_nested_path_through_a_null_record_is_null() -> None:
    record = {**alarm, "location": None}
    assert check(ALARM, {"field": "location.district", "eq": "CHENGZHONG"}, record) is False
    assert check(ALARM, {"field": "location.district", "exists": False}, record) is True
