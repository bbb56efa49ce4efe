"""JSON records against schemas: every problem found, named by field, with what to write."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest

from bus.demo.samples import GENERATORS
from bus.schemas import wire
from bus.schemas.catalog import SchemaCatalog
from bus.schemas.exceptions import RecordInvalid, WireFormatError
from bus.schemas.records import to_datum, to_json

ROOT = Path(__file__).resolve().parents[2] / "schemas"


@pytest.fixture(scope="module")
def catalog() -> SchemaCatalog:
    return SchemaCatalog.load(ROOT)


def alarm(**overrides: object) -> dict:
    record = {
        "alarm_id": "6f1c2f3e-1111-4a4a-9b9b-123456789abc",
        "camera_id": "CAM-CC-00012",
        "alarm_type": "FIRE_SMOKE",
        "severity": "HIGH",
        "occurred_at": "2026-11-23T08:30:00+08:00",
    }
    record.update(overrides)
    return {k: v for k, v in record.items() if v is not ...}


BAD = [
    ("wrong type", alarm(camera_id=42), "camera_id", "expected a string, got the number 42"),
    ("missing required", alarm(severity=...), "severity", "required field is missing (one of LOW, MEDIUM, HIGH, CRITICAL)"),
    ("unknown enum symbol", alarm(alarm_type="EXPLOSION"), "alarm_type", "is not one of INTRUSION"),
    ("unknown field", alarm(colour="red"), "colour", "unknown field"),
    ("bad uuid", alarm(alarm_id="not-a-uuid"), "alarm_id", "is not a UUID"),
    ("time without offset", alarm(occurred_at="2026-11-23T08:30:00"), "occurred_at", "has no UTC offset"),
    ("time not a time", alarm(occurred_at="yesterday"), "occurred_at", "not an RFC 3339 time"),
    ("null for a required field", alarm(camera_id=None), "camera_id", "expected a string, got null"),
    ("bool for an int", alarm(count=True), "count", "expected an integer, got a boolean"),
    ("int out of range", alarm(count=2**31), "count", "out of range for int"),
    ("nested record field", alarm(location={"latitude": 23.0, "longitude": 113.1, "district": "LIUCHENG"}),
     "location.district", "is not one of CHENGZHONG"),
    ("nested missing", alarm(location={"latitude": 23.0}), "location.longitude", "required field is missing"),
    ("object where a string goes", alarm(description={"text": "x"}), "description", "expected a string"),
    ("NaN for a number", alarm(confidence=float("nan")), "confidence", "nan is not a finite number"),
    ("Infinity for a number", alarm(location={"latitude": float("inf"), "longitude": 113.1, "district": "CHENGZHONG"}),
     "location.latitude", "inf is not a finite number"),
]


UUID = "6f1c2f3e-1111-4a4a-9b9b-123456789abc"
HEX = UUID.replace("-", "")
#: Text that uuid.UUID() reads as 128 bits but that is not RFC 4122's 8-4-4-4-12 hex digits:
#: int() digits (non-ASCII, signs, underscores, spaces, 0x) and the other spellings alike.
NOT_UUIDS = ["\u0660" * 32, "\uff16" + UUID[1:], " " * 31 + "1", "0x" + "0" * 30, "+" + HEX[1:], "-" + HEX[1:],
             "6f1c_2f3e1111_4a4a9b9b123456789a", "{" + HEX, "{" + UUID + "}", "uuid:" + HEX, "urn:uuid:" + UUID,
             HEX, HEX.upper(), UUID[:9] + "-" + UUID[9:], "6f1c2f3e1-111-4a4a-9b9b-123456789abc", UUID + "\n",
             " " + UUID, UUID[:-1], UUID + "0", UUID.replace("a", "g"), ""]
#: JSON integers past the largest double (about 1.8e308): float() overflows on them.
HUGE = [10**400, -(10**400), 2**1024, 10**4299]
LOCATION = {"longitude": 109.4, "district": "LIUNAN"}

BAD += [(f"not a uuid {text!r}", alarm(alarm_id=text), "alarm_id", "is not a UUID; write 8-4-4-4-12 hex digits")
        for text in NOT_UUIDS]
BAD += [(f"huge integer {i} for a double", alarm(confidence=n), "confidence",
         "digits is too large for a double: send a number between -1.7976931348623157e+308 and "
         "1.7976931348623157e+308, or null") for i, n in enumerate(HUGE)]
BAD += [("huge integer for a nested double", alarm(location={"latitude": 10**400, **LOCATION}), "location.latitude",
         "an integer of 401 digits is too large for a double"),
        ("huge integer for an int", alarm(count=-(10**400)), "count",
         "an integer of 401 digits is out of range for int (-2147483648..2147483647)")]


@pytest.mark.parametrize(("case", "record", "path", "problem"), BAD, ids=[b[0] for b in BAD])
def test_bad_records_name_the_field_and_the_problem(
    catalog: SchemaCatalog, case: str, record: dict, path: str, problem: str
) -> None:
    with pytest.raises(RecordInvalid) as info:
        to_datum(catalog.get("camera_alarm"), record)
    found = {p.path: p.problem for p in info.value.problems}
    assert path in found, found
    assert problem in found[path]


GOOD = [
    ("uuid in lower case", {"alarm_id": UUID}, "alarm_id", UUID),
    ("uuid in upper case, stored lower", {"alarm_id": UUID.upper()}, "alarm_id", UUID),
    ("uuid in mixed case, stored lower", {"alarm_id": "6F1c2f3e-1111-4A4a-9b9B-123456789aBC"}, "alarm_id", UUID),
    ("RFC 3339 Z", {"occurred_at": "2026-11-23T08:30:00Z"}, "occurred_at",
     dt.datetime(2026, 11, 23, 8, 30, tzinfo=dt.timezone.utc)),
    ("RFC 3339 lower case z", {"occurred_at": "2026-11-23T08:30:00z"}, "occurred_at",
     dt.datetime(2026, 11, 23, 8, 30, tzinfo=dt.timezone.utc)),
    ("RFC 3339 lower case t", {"occurred_at": "2026-11-23t08:30:00+08:00"}, "occurred_at",
     dt.datetime(2026, 11, 23, 0, 30, tzinfo=dt.timezone.utc)),
    ("RFC 3339 lower case t and z, with a fraction", {"occurred_at": "2026-11-23t08:30:00.250z"}, "occurred_at",
     dt.datetime(2026, 11, 23, 8, 30, 0, 250000, tzinfo=dt.timezone.utc)),
    ("integer for a double", {"confidence": 1}, "confidence", 1.0),
    ("large integer for a double", {"confidence": -(10**308)}, "confidence", -1e308),
    ("largest double, as an integer", {"confidence": int(1.7976931348623157e308)}, "confidence",
     1.7976931348623157e308),
    ("largest double", {"confidence": 1.7976931348623157e308}, "confidence", 1.7976931348623157e308),
    ("integer for a nested double", {"location": {"latitude": 24, **LOCATION}}, "location",
     {"latitude": 24.0, **LOCATION, "street": None, "grid_cell": None}),
]


@pytest.mark.parametrize(("case", "change", "name", "want"), GOOD, ids=[g[0] for g in GOOD])
def test_good_values_at_the_edges_are_accepted(
    catalog: SchemaCatalog, case: str, change: dict, name: str, want: object
) -> None:
    datum = to_datum(catalog.get("camera_alarm"), alarm(**change))
    assert datum[name] == want and type(datum[name]) is type(want)


def test_every_problem_is_reported_at_once(catalog: SchemaCatalog) -> None:
    with pytest.raises(RecordInvalid) as info:
        to_datum(catalog.get("camera_alarm"), alarm(camera_id=1, severity=..., alarm_type="X"))
    assert {p.path for p in info.value.problems} == {"camera_id", "severity", "alarm_type"}


@pytest.mark.parametrize("value", [[], "text", 3, None])
def test_a_record_must_be_an_object(catalog: SchemaCatalog, value: object) -> None:
    with pytest.raises(RecordInvalid, match="expected a JSON object"):
        to_datum(catalog.get("camera_alarm"), value)


def test_defaults_fill_missing_optional_fields(catalog: SchemaCatalog) -> None:
    datum = to_datum(catalog.get("camera_alarm"), alarm())
    assert datum["count"] == 1 and datum["location"] is None
    assert datum["occurred_at"] == dt.datetime(2026, 11, 23, 0, 30, tzinfo=dt.timezone.utc)


def test_epoch_millis_and_dates(catalog: SchemaCatalog) -> None:
    event = catalog.get("population_change")
    datum = to_datum(event, {"change_id": "6f1c2f3e-1111-4a4a-9b9b-123456789abc", "person_id": "P1",
                             "change_type": "BIRTH", "effective_date": "2026-11-20", "recorded_at": 0,
                             "birth_date": "2026-11-20"})
    assert datum["recorded_at"] == dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    assert datum["birth_date"] == dt.date(2026, 11, 20)
    with pytest.raises(RecordInvalid, match="birth_date: the string '20/11/2026' is not a date; write YYYY-MM-DD"):
        to_datum(event, {**datum, "recorded_at": 0, "effective_date": "2026-11-20",
                         "change_id": "6f1c2f3e-1111-4a4a-9b9b-123456789abc", "birth_date": "20/11/2026"})


@pytest.mark.parametrize("event_type", sorted(GENERATORS))
def test_samples_round_trip_through_the_wire_format(catalog: SchemaCatalog, event_type: str) -> None:
    rng = random.Random(7)
    event = catalog.get(event_type)
    for _ in range(50):
        record = GENERATORS[event_type](rng)
        datum = to_datum(event, record)
        value = wire.encode(12, event.parsed, datum)
        assert value[0] == 0 and wire.schema_id_of(value) == 12
        decoded = wire.decode_body(value, event.parsed)
        assert to_json(decoded) == to_json(datum)


@pytest.mark.parametrize(("value", "message"), [(b"", "too short"), (b"\x01\x00\x00\x00\x01abc", "magic byte 1")])
def test_values_not_in_the_wire_format_are_refused(value: bytes, message: str) -> None:
    with pytest.raises(WireFormatError, match=message):
        wire.schema_id_of(value)


@pytest.mark.parametrize("millis", [-62_135_596_800_001, 2**62])
def test_epoch_millis_outside_the_calendar_are_a_field_error(catalog: SchemaCatalog, millis: int) -> None:
    with pytest.raises(RecordInvalid, match="occurred_at: .* outside the years 1 to 9999"):
        to_datum(catalog.get("camera_alarm"), alarm(occurred_at=millis))


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_times_whose_utc_instant_leaves_the_calendar_are_a_field_error(catalog: SchemaCatalog, value: str) -> None:
    """Valid RFC 3339 on their own, but UTC (the wire format's clock) is a day outside years 1 to
    9999: accepted, they would reach the topic and fail every reader that decodes them."""
    with pytest.raises(RecordInvalid, match="occurred_at: .* outside the years 1 to 9999 in UTC"):
        to_datum(catalog.get("camera_alarm"), alarm(occurred_at=value))
