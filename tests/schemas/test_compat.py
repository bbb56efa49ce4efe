"""Compatibility modes composed from Avro's reference checker (unit tests, no broker)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bus.schemas.compat import (
    NEW_READS_OLD,
    OLD_READS_NEW,
    CompatibilityMode,
    Incompatibility,
    InvalidSchema,
    check_compatibility,
    is_compatible,
)


def record(*fields: dict[str, Any], name: str = "Alarm", **extra: Any) -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "city.alarms", "fields": list(fields), **extra}


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "Severity", "symbols": list(symbols), **extra}


ID = f("id", "string")
LEVEL = f("level", "int")

BASE = record(ID, LEVEL)
ADDED_WITH_DEFAULT = record(ID, LEVEL, f("severity", "string", default="LOW"))
ADDED_NO_DEFAULT = record(ID, LEVEL, f("severity", "string"))
LEVEL_REMOVED = record(ID)
BASE_LEVEL_DEFAULT = record(ID, f("level", "int", default=0))
LEVEL_LONG = record(ID, f("level", "long"))

ENUM_AB = record(f("severity", enum("LOW", "HIGH")))
ENUM_ABC = record(f("severity", enum("LOW", "HIGH", "CRITICAL")))
ENUM_AB_DEFAULT = record(f("severity", enum("LOW", "HIGH", default="LOW")))
ENUM_ABC_DEFAULT = record(f("severity", enum("LOW", "HIGH", "CRITICAL", default="LOW")))

STRING = record(f("note", "string"))
NULLABLE_STRING = record(f("note", ["null", "string"], default=None))
UNION_WIDE = record(f("note", ["null", "string", "int"], default=None))

BACKWARD, FORWARD, FULL = CompatibilityMode.BACKWARD, CompatibilityMode.FORWARD, CompatibilityMode.FULL

MISSING_DEFAULT = "reader_field_missing_default_value"
TYPE_MISMATCH = "type_mismatch"
MISSING_SYMBOLS = "missing_enum_symbols"
MISSING_BRANCH = "missing_union_branch"

# (id, previous oldest first, new, mode, expected [(version, direction, kind, field)])
CASES: list[tuple[str, list[Any], Any, CompatibilityMode, list[tuple[int, str, str, str | None]]]] = [
    ("added with default, backward", [BASE], ADDED_WITH_DEFAULT, BACKWARD, []),
    ("added with default, forward", [BASE], ADDED_WITH_DEFAULT, FORWARD, []),
    ("added with default, full", [BASE], ADDED_WITH_DEFAULT, FULL, []),
    (
        "added without default, backward",
        [BASE],
        ADDED_NO_DEFAULT,
        BACKWARD,
        [(1, NEW_READS_OLD, MISSING_DEFAULT, "severity")],
    ),
    ("added without default, forward", [BASE], ADDED_NO_DEFAULT, FORWARD, []),
    ("added without default, full", [BASE], ADDED_NO_DEFAULT, FULL, [(1, NEW_READS_OLD, MISSING_DEFAULT, "severity")]),
    ("removed, old had no default, backward", [BASE], LEVEL_REMOVED, BACKWARD, []),
    (
        "removed, old had no default, forward",
        [BASE],
        LEVEL_REMOVED,
        FORWARD,
        [(1, OLD_READS_NEW, MISSING_DEFAULT, "level")],
    ),
    ("removed, old had a default, forward", [BASE_LEVEL_DEFAULT], LEVEL_REMOVED, FORWARD, []),
    ("removed, old had a default, full", [BASE_LEVEL_DEFAULT], LEVEL_REMOVED, FULL, []),
    ("enum symbol added, backward", [ENUM_AB], ENUM_ABC, BACKWARD, []),
    ("enum symbol added, forward", [ENUM_AB], ENUM_ABC, FORWARD, [(1, OLD_READS_NEW, MISSING_SYMBOLS, "severity")]),
    ("enum symbol added, old enum has a default, forward", [ENUM_AB_DEFAULT], ENUM_ABC_DEFAULT, FORWARD, []),
    ("enum symbol removed, backward", [ENUM_ABC], ENUM_AB, BACKWARD, [(1, NEW_READS_OLD, MISSING_SYMBOLS, "severity")]),
    ("enum symbol removed, forward", [ENUM_ABC], ENUM_AB, FORWARD, []),
    ("int to long, backward (reader long, writer int)", [BASE], LEVEL_LONG, BACKWARD, []),
    ("int to long, forward (reader int, writer long)", [BASE], LEVEL_LONG, FORWARD, [(1, OLD_READS_NEW, TYPE_MISMATCH, "level")]),
    ("long to int, backward", [LEVEL_LONG], BASE, BACKWARD, [(1, NEW_READS_OLD, TYPE_MISMATCH, "level")]),
    ("long to int, forward", [LEVEL_LONG], BASE, FORWARD, []),
    ("union widened, backward", [NULLABLE_STRING], UNION_WIDE, BACKWARD, []),
    ("union widened, forward", [NULLABLE_STRING], UNION_WIDE, FORWARD, [(1, OLD_READS_NEW, MISSING_BRANCH, "note")]),
    ("union narrowed, backward", [UNION_WIDE], NULLABLE_STRING, BACKWARD, [(1, NEW_READS_OLD, MISSING_BRANCH, "note")]),
    ("union narrowed, forward", [UNION_WIDE], NULLABLE_STRING, FORWARD, []),
    ("type made nullable, backward", [STRING], NULLABLE_STRING, BACKWARD, []),
    ("type made nullable, forward", [STRING], NULLABLE_STRING, FORWARD, [(1, OLD_READS_NEW, TYPE_MISMATCH, "note")]),
    ("anything goes under NONE", [BASE], {"type": "array", "items": "bytes"}, CompatibilityMode.NONE, []),
    ("no previous version", [], ADDED_NO_DEFAULT, CompatibilityMode.FULL_TRANSITIVE, []),
]


def _summary(found: list[Incompatibility]) -> list[tuple[int, str, str, str | None]]:
    return [(i.version, i.direction, i.kind, i.field) for i in found]


@pytest.mark.parametrize(("previous", "new", "mode", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rules(previous: list[Any], new: Any, mode: CompatibilityMode, expected: list[Any]) -> None:
    assert _summary(check_compatibility(new, previous, mode)) == expected


# A chain of three versions where only the transitive mode sees the problem with v1.
SEVERITY_DEFAULT = record(ID, LEVEL, f("severity", "string", default="LOW"))
SEVERITY_REQUIRED = record(ID, LEVEL, f("severity", "string"))
BACKWARD_CHAIN = [BASE, SEVERITY_DEFAULT]  # then SEVERITY_REQUIRED: fine vs v2, not vs v1
FORWARD_CHAIN = [BASE, BASE_LEVEL_DEFAULT]  # then LEVEL_REMOVED: v2 has a default, v1 has none

TRANSITIVE_CASES = [
    ("BACKWARD", BACKWARD_CHAIN, SEVERITY_REQUIRED, []),
    ("BACKWARD_TRANSITIVE", BACKWARD_CHAIN, SEVERITY_REQUIRED, [(1, NEW_READS_OLD, MISSING_DEFAULT, "severity")]),
    ("FORWARD", FORWARD_CHAIN, LEVEL_REMOVED, []),
    ("FORWARD_TRANSITIVE", FORWARD_CHAIN, LEVEL_REMOVED, [(1, OLD_READS_NEW, MISSING_DEFAULT, "level")]),
    ("FULL", FORWARD_CHAIN, LEVEL_REMOVED, []),
    ("FULL_TRANSITIVE", FORWARD_CHAIN, LEVEL_REMOVED, [(1, OLD_READS_NEW, MISSING_DEFAULT, "level")]),
    ("NONE", FORWARD_CHAIN, LEVEL_REMOVED, []),
]


@pytest.mark.parametrize(("mode", "previous", "new", "expected"), TRANSITIVE_CASES, ids=[c[0] for c in TRANSITIVE_CASES])
def test_transitive_modes_check_every_version(mode: str, previous: list[Any], new: Any, expected: list[Any]) -> None:
    assert _summary(check_compatibility(new, previous, mode)) == expected


def test_full_checks_both_directions() -> None:
    # v1 -> new: a field added without default AND a field removed without default
    new = record(ID, f("severity", "string"))
    found = check_compatibility(new, [BASE], FULL)
    assert _summary(found) == [
        (1, NEW_READS_OLD, MISSING_DEFAULT, "severity"),
        (1, OLD_READS_NEW, MISSING_DEFAULT, "level"),
    ]


def test_message_names_the_field_says_why_and_what_to_do() -> None:
    [problem] = check_compatibility(ADDED_NO_DEFAULT, [BASE, BASE], BACKWARD)
    assert problem.message == (
        "field 'severity' was added without a default: readers using the new schema cannot read "
        "records written with version 2; give it a default"
    )
    assert problem.location == "/fields/2"
    assert problem.field == "severity"
    assert problem.version == 2


@pytest.mark.parametrize(
    ("previous", "new", "mode", "location", "words"),
    [
        (BASE, LEVEL_REMOVED, FORWARD, "/fields/1", ["'level'", "removed", "version 1"]),
        (BASE, LEVEL_LONG, FORWARD, "/fields/1/type", ["'level'", "int", "long"]),
        (ENUM_ABC, ENUM_AB, BACKWARD, "/fields/0/type/symbols", ["'severity'", "CRITICAL"]),
        (UNION_WIDE, NULLABLE_STRING, BACKWARD, "/fields/0/type", ["'note'", "int", "keep int"]),
    ],
    ids=["removed", "promotion", "enum", "union"],
)
def test_locations_and_messages(previous: Any, new: Any, mode: CompatibilityMode, location: str, words: list[str]) -> None:
    [problem] = check_compatibility(new, [previous], mode)
    assert problem.location == location
    for word in words:
        assert word in problem.message


def test_nested_record_inside_a_union_is_explained_by_its_field() -> None:
    point = record(f("lat", "double"), name="Point")
    point_with_lon = record(f("lat", "double"), f("lon", "double"), name="Point")
    old = record(f("location", ["null", point], default=None))
    new = record(f("location", ["null", point_with_lon], default=None))
    [problem] = check_compatibility(new, [old], BACKWARD)
    assert (problem.kind, problem.field, problem.location) == (MISSING_DEFAULT, "location.lon", "/fields/0/type/1/fields/1")


def test_renamed_record_needs_an_alias() -> None:
    renamed = record(ID, LEVEL, name="Alert")
    [problem] = check_compatibility(renamed, [BASE], BACKWARD)
    assert problem.kind == "name_mismatch" and "city.alarms.Alarm" in problem.message
    aliased = record(ID, LEVEL, name="Alert", aliases=["city.alarms.Alarm"])
    assert check_compatibility(aliased, [BASE], BACKWARD) == []


def test_fixed_size_change() -> None:
    old = record(f("hash", {"type": "fixed", "name": "Hash", "size": 16}))
    new = record(f("hash", {"type": "fixed", "name": "Hash", "size": 32}))
    [problem] = check_compatibility(new, [old], BACKWARD)
    assert (problem.kind, problem.location) == ("fixed_size_mismatch", "/fields/0/type/size")


def test_given_version_numbers_are_reported() -> None:
    found = check_compatibility(ADDED_NO_DEFAULT, [BASE, BASE], CompatibilityMode.BACKWARD_TRANSITIVE, versions=[3, 7])
    assert [p.version for p in found] == [3, 7]


def test_text_and_dict_schemas_are_the_same() -> None:
    assert check_compatibility(json.dumps(ADDED_NO_DEFAULT), [json.dumps(BASE)], "backward") == check_compatibility(
        ADDED_NO_DEFAULT, [BASE], BACKWARD
    )
    assert is_compatible(ADDED_WITH_DEFAULT, [BASE], "FULL")


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ("{not json", "not valid JSON"),
        ("string", "needs quotes"),
        ('{"type": "record", "name": "A", "fields": [{"name": "a", "type": "strng"}]}', "not valid Avro"),
        ('{"type": "enum", "name": "E", "symbols": ["A", "A"]}', "not valid Avro"),
    ],
)
def test_invalid_schema_is_reported(schema: str, words: str) -> None:
    with pytest.raises(InvalidSchema, match=words):
        check_compatibility(schema, [BASE], BACKWARD)


def test_mode_names() -> None:
    assert CompatibilityMode.parse(" full_transitive ") is CompatibilityMode.FULL_TRANSITIVE
    assert {m.value for m in CompatibilityMode} == {
        "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE",
    }
    with pytest.raises(ValueError, match="SIDEWAYS.*BACKWARD"):
        CompatibilityMode.parse("SIDEWAYS")
