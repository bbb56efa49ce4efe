"""Treatments of personal fields and the schemas derived for subscriptions."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import avro.schema
import pytest

from bus.routing.masking import generalise, keyed_hash, partial
from bus.routing.plan import derive_schema
from bus.routing.secrets import department_hash_key
from bus.schemas.catalog import SchemaCatalog

CATALOG = SchemaCatalog.load(Path(__file__).resolve().parents[2] / "schemas")


@pytest.mark.parametrize(
    ("value", "pii", "expected"),
    [
        ("450204198506010012", "national_id", "450204********0012"),
        ("13812345678", "phone", "138****5678"),
        ("桂B12345", "vehicle_plate", "桂B****5"),
        ("H123456789", "household_id", "******6789"),
        ("1234", "national_id", "****"),
        ("", "phone", ""),
    ],
)
def test_partial_keeps_what_the_kind_allows(value: str, pii: str, expected: str) -> None:
    assert partial(value, pii) == expected


@pytest.mark.parametrize(
    ("value", "pii", "record", "expected"),
    [
        (dt.date(1985, 6, 1), "birth_date", {}, "1985"),
        (dt.datetime(2026, 11, 23, 8, 30, tzinfo=dt.timezone.utc), "time", {}, "2026-11-23"),
        ("12 Feie Road, Liunan District", "address", {"district": "LIUNAN"}, "LIUNAN"),
        ("12 Feie Road", "address", {"district": None}, None),
        ("I00-I99", "health", {}, None),
    ],
)
def test_generalise(value: object, pii: str, record: dict, expected: object) -> None:
    assert generalise(value, pii, record) == expected


def test_keyed_hash_links_within_a_department_not_across() -> None:
    env = {"BUS_HASH_MASTER_KEY": "city-master-key"}
    police, health = department_hash_key("police", env), department_hash_key("health", env)
    assert keyed_hash("P1234567890", police) == keyed_hash("P1234567890", police)
    assert keyed_hash("P1234567890", police) != keyed_hash("P1234567890", health)
    assert keyed_hash("P1234567890", police) != keyed_hash("P1234567891", police)
    assert "P1234567890" not in keyed_hash("P1234567890", police)


def test_a_department_key_overrides_the_master() -> None:
    env = {"BUS_HASH_MASTER_KEY": "m", "BUS_HASH_KEY_HEALTH": "own-key"}
    assert department_hash_key("health", env) == b"own-key"
    assert department_hash_key("health", env) != department_hash_key("health", {"BUS_HASH_MASTER_KEY": "m"})


def test_derived_schema_selects_masks_and_parses_everywhere() -> None:
    event = CATALOG.get("population_change")
    selection = ["change_id", "person_id", "change_type", "effective_date", "recorded_at", "birth_date", "district", "previous_district"]
    schema = derive_schema(event, selection, {"person_id": "hash", "birth_date": "generalise"})
    names = [f["name"] for f in schema["fields"]]
    assert names == selection
    fields = {f["name"]: f for f in schema["fields"]}
    assert fields["person_id"]["type"] == ["null", "string"] and fields["person_id"]["masked"] == "hash"
    assert fields["district"]["type"] != ["null", "string"]
    # District is defined once (in `district`) and referenced after, as Avro requires.
    parsed = avro.schema.parse(json.dumps(schema))
    assert parsed.fullname == "city.population.PopulationChange"


def test_derived_schema_moves_a_shared_type_out_of_a_dropped_field() -> None:
    event = CATALOG.get("population_change")
    # `district` (which defines District first) is left out; `previous_district` must define it.
    schema = derive_schema(event, ["change_id", "person_id", "previous_district"], {})
    avro.schema.parse(json.dumps(schema))
    assert "symbols" in json.dumps(schema["fields"][2])
