"""The shipped schemas, and schema files that must be refused with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import avro.schema
import pytest

from bus.schemas.catalog import SchemaCatalog
from bus.schemas.exceptions import SchemaFileError, UnknownEventType

ROOT = Path(__file__).resolve().parents[2] / "schemas"
EVENT_TYPES = ["camera_alarm", "camera_status", "city_case", "population_change"]


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load(ROOT)


def test_every_event_type_is_there(catalog: SchemaCatalog) -> None:
    assert catalog.event_types == EVENT_TYPES


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_self_contained_schema_is_valid_for_the_reference_implementation(catalog: SchemaCatalog, name: str) -> None:
    event = catalog.get(name)
    parsed = avro.schema.parse(event.canonical_json())  # raises on names defined twice
    assert parsed.fullname == event.full_name
    assert event.full_name.startswith("city.")


def test_shared_types_are_defined_once_and_referenced_after(catalog: SchemaCatalog) -> None:
    text = catalog.get("population_change").canonical_json()
    assert text.count('"name":"city.common.District"') == 1
    assert '"city.common.District"' in text.replace('"name":"city.common.District"', "")
    # Location (with its District) is shared by three families.
    for name in ("camera_alarm", "camera_status", "city_case"):
        assert catalog.get(name).field("location.district") is not None


def test_personal_fields_carry_their_classification(catalog: SchemaCatalog) -> None:
    population = catalog.get("population_change")
    personal = {f.path: (f.pii, f.mask) for f in population.personal_fields()}
    assert personal["national_id"] == ("national_id", "partial")
    assert personal["birth_date"] == ("birth_date", "generalise")
    assert personal["name"] == ("name", "drop")
    assert personal["person_id"] == ("person_id", "hash")
    assert "district" not in personal
    assert catalog.get("camera_alarm").field("plate_number").personal
    assert not catalog.get("camera_status").personal_fields()


@pytest.mark.parametrize("name", EVENT_TYPES)
def test_times_and_ids_use_logical_types(catalog: SchemaCatalog, name: str) -> None:
    text = catalog.get(name).canonical_json()
    assert '"logicalType":"timestamp-millis"' in text
    if name != "camera_status":
        assert '"logicalType":"uuid"' in text


def test_unknown_event_type_lists_the_known_ones(catalog: SchemaCatalog) -> None:
    with pytest.raises(UnknownEventType, match="camera_alarm, camera_status"):
        catalog.get("camera_alarms")


def _write(tmp_path: Path, rel: str, schema: object) -> Path:
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema if isinstance(schema, str) else json.dumps(schema))
    return path


def _record(fields: list[dict]) -> dict:
    return {"type": "record", "name": "Thing", "namespace": "city.test", "doc": "A thing.", "fields": fields}


BROKEN = [
    ("invalid JSON", '{"type": "record",', "invalid JSON"),
    ("field without doc", _record([{"name": "a", "type": "string"}]), "has no doc"),
    ("personal without mask", _record([{"name": "a", "type": "string", "doc": "x", "classification": "personal"}]), "needs \"pii\""),
    ("unknown classification", _record([{"name": "a", "type": "string", "doc": "x", "classification": "secret"}]), "not one of"),
    ("mask on a non-personal field", _record([{"name": "a", "type": "string", "doc": "x", "mask": "drop"}]), "not classified personal"),
    ("unknown type", _record([{"name": "a", "type": "city.common.Nowhere", "doc": "x"}]), "unknown type"),
    ("not a record", {"type": "enum", "name": "E", "symbols": ["A"]}, "must be an Avro record"),
    ("no namespace", {"type": "record", "name": "T", "doc": "d", "fields": []}, "namespace"),
]


@pytest.mark.parametrize(("case", "schema", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_schema_files_are_refused_with_the_file_and_reason(
    tmp_path: Path, case: str, schema: object, message: str
) -> None:
    path = _write(tmp_path, "family/thing.avsc", schema)
    with pytest.raises(SchemaFileError) as info:
        SchemaCatalog.load(tmp_path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_lenient_load_keeps_good_files_and_lists_broken_ones(tmp_path: Path) -> None:
    _write(tmp_path, "family/good.avsc", _record([{"name": "a", "type": "string", "doc": "x"}]))
    _write(tmp_path, "family/bad.avsc", "{")
    catalog = SchemaCatalog.load(tmp_path, strict=False)
    assert catalog.event_types == ["good"]
    assert [e.path.name for e in catalog.errors] == ["bad.avsc"]
