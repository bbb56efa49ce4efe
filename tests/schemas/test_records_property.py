"""Whatever JSON arrives, validation either refuses it with RecordInvalid or returns a
datum that encodes: never another exception, never a half-valid record."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus.demo.samples import GENERATORS
from bus.schemas import wire
from bus.schemas.catalog import SchemaCatalog
from bus.schemas.exceptions import RecordInvalid
from bus.schemas.records import to_datum

CATALOG = SchemaCatalog.load(Path(__file__).resolve().parents[2] / "schemas")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _check(event_type: str, value: object) -> None:
    event = CATALOG.get(event_type)
    try:
        datum = to_datum(event, value)
    except RecordInvalid as exc:
        assert exc.problems and all(p.problem for p in exc.problems)
        return
    wire.encode(1, event.parsed, datum)  # accepted means encodable


@pytest.mark.parametrize("event_type", sorted(GENERATORS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values)
def test_arbitrary_json(event_type: str, value: object) -> None:
    _check(event_type, value)


@pytest.mark.parametrize("event_type", sorted(GENERATORS))
@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32), field_index=st.integers(0, 50), replacement=json_values)
def test_one_field_of_a_valid_record_replaced(event_type: str, seed: int, field_index: int, replacement: object) -> None:
    record = GENERATORS[event_type](random.Random(seed))
    names = sorted(record)
    record[names[field_index % len(names)]] = replacement
    _check(event_type, record)
