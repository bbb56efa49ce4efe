"""The HTTP ingest endpoint fuzzed with hypothesis, over real HTTP on loopback, against the
real broker and registry.

Whatever arrives (malformed or deeply nested JSON, wrong types, missing and unknown fields,
bodies over the limit, bytes that are not UTF-8, other encodings and content types,
unicode edge cases, JSON-lines batches mixing good and bad lines, odd event type paths),
the connector never answers 5xx (but 503/429, backpressure). What it must accept and refuse
is decided by an oracle written here from ``schemas/surveillance/camera_alarm.avsc`` and the
standards it relies on (JSON in UTF-8, RFC 8259; times in RFC 3339; UUIDs in RFC 4122's
8-4-4-4-12 form, the only one the bus takes), with the standard library only, sharing no code
with the bus: a valid record must be answered 202, an invalid one 4xx, and input outside that
contract with one clear reading (an ISO 8601 time that is not RFC 3339, 1.0 for an
integer...) may get either answer.
Afterwards the canonical topic is read back: it holds exactly the records that were answered
202, each valid and in the oracle's canonical form, published by the police, nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bus.consume.tail import tail
from bus.kafka.admin import admin
from tests.fixtures.city import City
from tests.security.conftest import Ingest

EVENT_TYPE = "camera_alarm"
MAX_BODY = 20_000
MAX_BATCH = 60_000
MAX_RECORDS = 20
BACKPRESSURE = (429, 503)

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# -- what to send ----------------------------------------------------------------------------------

#: Strings a department system might send by mistake or on purpose.
EDGE_TEXT = ["", " ", "\x00", "\ud800", "\udfff", "\ud83d", "\ufeff", "\u202e", "\uffff", "e\u0301", "\U0001f525",
             "\U0010ffff", "𝕏" * 50, "\r\n", "\\", '"', "null", "NaN", "CAM-CC-00012\x00x"]
texts = st.one_of(st.text(max_size=30), st.sampled_from(EDGE_TEXT),
                  st.text(st.characters(codec=None, categories=["Cs", "Co", "Cn", "Zl", "Cc"]), max_size=5))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**63) - 2, 2**63 + 2),
                    st.floats(), texts)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(texts, inner, max_size=3), max_leaves=8)
#: Values near what a field wants: right-looking, or right but at a boundary.
plausible = st.one_of(
    st.sampled_from(["INTRUSION", "FIRE_SMOKE", "fire_smoke", "LOW", "CRITICAL", "EXPLOSION",
                     "2026-11-23T08:30:00+08:00", "2026-11-23T08:30:00", "2026-11-23T08:30:00.123456Z",
                     "9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00+14:00", "2026-02-30T00:00:00Z",
                     "CAM-CC-00012", "police"]),
    st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.uuids().map(lambda u: u.hex),
    st.sampled_from([0, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**63, 1e308, 10**400, -0.0, 0.5, 1.0]),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)
FIELDS = ["alarm_id", "camera_id", "alarm_type", "severity", "occurred_at", "location", "owner_department",
          "plate_number", "confidence", "snapshot_url", "count", "description"]
mutations = st.lists(st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(FIELDS)),
    st.tuples(st.just("set"), st.sampled_from(FIELDS), st.one_of(plausible, json_values)),
    st.tuples(st.just("set"), texts, json_values),  # an extra field
), max_size=3)


def base_alarm(alarm_id: uuid.UUID, camera: str) -> dict[str, Any]:
    return {"alarm_id": str(alarm_id), "camera_id": camera, "alarm_type": "INTRUSION", "severity": "HIGH",
            "occurred_at": "2026-11-23T08:30:00+08:00", "description": "fuzzed"}


@st.composite
def records(draw: st.DrawFn) -> Any:
    """A valid alarm with up to three mutations (a dropped field, a field set to anything,
    an extra field); sometimes not an object at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(json_values)
    record = base_alarm(draw(st.uuids()), draw(st.one_of(st.just("CAM-CC-00012"), texts)))
    for mutation in draw(mutations):
        if mutation[0] == "drop":
            record.pop(mutation[1], None)
        else:
            record[mutation[1]] = mutation[2]
    return record


ENCODINGS = ["json", "utf-8", "utf-8-sig", "utf-16", "utf-32", "latin-1"]


def encode(record: Any, encoding: str) -> bytes:
    """The record as JSON bytes in one of several encodings, most of them wrong."""
    if encoding == "json":
        return json.dumps(record).encode("ascii")  # \uXXXX escapes, lone surrogates included
    # Lone surrogates written raw: in UTF-8 that is CESU-8 bytes, which are not UTF-8.
    text = json.dumps(record, ensure_ascii=False)
    return text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")


content_types = st.sampled_from(["application/json", "application/json; charset=utf-16", "text/plain",
                                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                 "application/x-ndjson", "", b"\xe9/\xe9", b"application/json; charset=\xff"])

# -- the oracle: a camera_alarm as schemas/surveillance/camera_alarm.avsc defines it ----------------
#
# Input is plain JSON as a department's system sends it: union values unwrapped (null or the
# value, not Avro's {"string": ...}), the timestamp-millis field as an RFC 3339 time with an
# offset or as epoch milliseconds. The value is the record as the topic's reader gives it
# back: every field present (defaults filled in), the time in UTC to the millisecond, the
# UUID in lower case, doubles as floats.

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
ALARM_TYPES = ("INTRUSION", "CROWD_GATHERING", "FIRE_SMOKE", "WATCHLIST_VEHICLE", "TAMPERING", "CAMERA_OFFLINE")
SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
DISTRICTS = ("CHENGZHONG", "YUFENG", "LIUNAN", "LIUBEI", "LIUJIANG")
#: CameraAlarm's fields without a default, then those with one (and its value).
REQUIRED = ("alarm_id", "camera_id", "alarm_type", "severity", "occurred_at")
DEFAULTS = {"location": None, "owner_department": None, "plate_number": None, "confidence": None,
            "snapshot_url": None, "count": 1, "description": None}
LOCATION_REQUIRED = ("latitude", "longitude", "district")
LOCATION_DEFAULTS = {"street": None, "grid_cell": None}
INT32 = (-(2**31), 2**31 - 1)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
MS = dt.timedelta(milliseconds=1)
#: Times an RFC 3339 string can write (four-digit years) and a reader can decode (no year 0).
MIN_MS = (dt.datetime(1, 1, 1, tzinfo=dt.timezone.utc) - EPOCH) // MS
MAX_MS = (dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=dt.timezone.utc) - EPOCH) // MS
#: RFC 3339 section 5.6 date-time; ABNF literals are case-insensitive, so t and z too.
RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[Zz]|([+-])(\d\d):(\d\d))", re.ASCII)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE)


class Invalid(Exception):
    """Not a camera_alarm record: the bus must refuse it."""


@dataclass(frozen=True)
class Verdict:
    """A record the bus must accept and publish as ``value``; with a ``doubt`` (the input is
    outside the contract but has this one reading) it may instead refuse it with 400."""

    value: dict[str, Any]
    doubt: str | None = None


def judge(raw: bytes) -> Verdict | None:
    """What the bus must do with these bytes as one record: None if it must refuse them."""
    doubts: list[str] = []
    try:
        value = alarm(parse_json(raw, doubts), doubts)
    except Invalid:
        return None
    return Verdict(value, "; ".join(doubts) or None)


def canonical_record(value: Any) -> bool:
    """Whether ``value`` is a valid record, written exactly as the oracle writes one."""
    doubts: list[str] = []
    try:
        return alarm(value, doubts) == value and not doubts
    except Invalid:
        return False


def parse_json(raw: bytes, doubts: list[str]) -> Any:
    """RFC 8259: UTF-8 (strict: no encoded surrogates), no NaN or Infinity."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid from None
    if text.startswith("\ufeff"):
        doubts.append("a byte order mark, which a parser may ignore or refuse (RFC 8259 8.1)")
        text = text[1:]

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({name for name, _ in pairs}) < len(pairs):
            doubts.append("a repeated member name, whose meaning RFC 8259 leaves open (here the last wins)")
        return dict(pairs)

    def constant(name: str) -> Any:
        raise Invalid(name)

    try:
        return json.loads(text, object_pairs_hook=members, parse_constant=constant)
    except (ValueError, RecursionError):  # not JSON, an integer of over 4300 digits, nested too deeply
        raise Invalid from None


def fields(value: Any, required: tuple[str, ...], defaults: dict[str, Any]) -> dict[str, Any]:
    """An Avro record from a JSON object: every field without a default present, no others."""
    if not isinstance(value, dict) or not set(required) <= value.keys() <= {*required, *defaults}:
        raise Invalid
    return {**defaults, **value}


def alarm(value: Any, doubts: list[str]) -> dict[str, Any]:
    record = fields(value, REQUIRED, DEFAULTS)
    return {
        "alarm_id": uuid_string(record["alarm_id"]),
        "camera_id": string(record["camera_id"]),
        "alarm_type": symbol(record["alarm_type"], ALARM_TYPES),
        "severity": symbol(record["severity"], SEVERITIES),
        "occurred_at": timestamp_millis(record["occurred_at"], doubts),
        "location": None if record["location"] is None else location(record["location"]),
        "owner_department": nullable(string, record["owner_department"]),
        "plate_number": nullable(string, record["plate_number"]),
        "confidence": nullable(double, record["confidence"]),
        "snapshot_url": nullable(string, record["snapshot_url"]),
        "count": integer(record["count"], INT32, doubts),
        "description": nullable(string, record["description"]),
    }


def location(value: Any) -> dict[str, Any]:
    record = fields(value, LOCATION_REQUIRED, LOCATION_DEFAULTS)
    return {"latitude": double(record["latitude"]), "longitude": double(record["longitude"]),
            "district": symbol(record["district"], DISTRICTS), "street": nullable(string, record["street"]),
            "grid_cell": nullable(string, record["grid_cell"])}


def nullable(check: Callable[[Any], Any], value: Any) -> Any:
    return None if value is None else check(value)


def string(value: Any) -> str:
    """Unicode text: a lone surrogate (from a \\ud800 escape) is not, and has no UTF-8."""
    if not isinstance(value, str) or any("\ud800" <= c <= "\udfff" for c in value):
        raise Invalid
    return value


def symbol(value: Any, symbols: tuple[str, ...]) -> str:
    if value not in symbols or not isinstance(value, str):
        raise Invalid
    return value


def double(value: Any) -> float:
    """A finite JSON number (an integer too) that a double holds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid
    try:
        number = float(value)
    except OverflowError:  # an integer beyond 1.8e308
        raise Invalid from None
    if not math.isfinite(number):
        raise Invalid
    return number


def integer(value: Any, bounds: tuple[int, int], doubts: list[str]) -> int:
    """A JSON integer within ``bounds``. JSON has a single number type: a whole number
    written with a fraction or an exponent (1.0, 1e3) may be read as that integer."""
    if isinstance(value, float) and value.is_integer():
        doubts.append(f"the integer {value!r} written as a decimal")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise Invalid
    return value


def uuid_string(value: Any) -> str:
    """RFC 4122's 8-4-4-4-12 hex digits, in either case. The bus promises that form only, so
    its other spellings (no hyphens, braces, a URN) are refused like any other text."""
    text = string(value)
    if not UUID.fullmatch(text):
        raise Invalid
    return text.lower()


def timestamp_millis(value: Any, doubts: list[str]) -> str:
    """Epoch milliseconds, or an RFC 3339 time with an offset (digits below the millisecond
    dropped); as the reader gives it back: RFC 3339 in UTC to the millisecond."""
    if isinstance(value, str):
        millis = rfc3339_millis(value, doubts)
    elif isinstance(value, (int, float)):
        millis = integer(value, (MIN_MS, MAX_MS), doubts)
    else:
        raise Invalid
    if not MIN_MS <= millis <= MAX_MS:
        raise Invalid
    t = EPOCH + millis * MS
    return (f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
            f".{t.microsecond // 1000:03d}Z")


def rfc3339_millis(text: str, doubts: list[str]) -> int:
    match = RFC3339.fullmatch(text)
    if match is None:  # another ISO 8601-like form with an offset (no seconds, basic format, a space...)
        try:
            other = dt.datetime.fromisoformat(text)
        except ValueError:
            raise Invalid from None
        if other.tzinfo is None:  # local time of an unknown place
            raise Invalid
        doubts.append(f"{text!r} is not RFC 3339, but datetime.fromisoformat reads it")
        return (other - EPOCH) // MS
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    fraction, sign, offset_hours, offset_minutes = match.groups()[6:]
    try:  # also refuses a leap second (:60), which timestamp-millis cannot count
        local = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.timezone.utc)
    except ValueError:
        raise Invalid from None
    offset = 0
    if sign:
        if int(offset_hours) > 23 or int(offset_minutes) > 59:
            raise Invalid
        offset = (1 if sign == "+" else -1) * (int(offset_hours) * 60 + int(offset_minutes))
    return (local - EPOCH) // MS - offset * 60_000 + int((fraction or "0")[:3].ljust(3, "0"))


def test_the_oracle_follows_the_schema_files() -> None:
    """Fields, defaults, types and symbols as the .avsc files declare them (a schema change
    fails here until the oracle follows it)."""

    def kind(avro: Any) -> Any:
        if isinstance(avro, list):
            return [kind(branch) for branch in avro]
        if isinstance(avro, dict):
            return avro.get("logicalType") or avro["name"]
        return avro.rpartition(".")[2]

    def load(path: str) -> dict[str, Any]:
        return json.loads((SCHEMAS / path).read_text())

    alarm_schema, location_schema = load("surveillance/camera_alarm.avsc"), load("common/location.avsc")
    for schema, required, defaults in [(alarm_schema, REQUIRED, DEFAULTS),
                                       (location_schema, LOCATION_REQUIRED, LOCATION_DEFAULTS)]:
        assert tuple(f["name"] for f in schema["fields"] if "default" not in f) == required
        assert {f["name"]: f["default"] for f in schema["fields"] if "default" in f} == defaults
    assert {f["name"]: kind(f["type"]) for f in alarm_schema["fields"] + location_schema["fields"]} == {
        "alarm_id": "uuid", "camera_id": "string", "alarm_type": "AlarmType", "severity": "Severity",
        "occurred_at": "timestamp-millis", "location": ["null", "Location"], "owner_department": ["null", "string"],
        "plate_number": ["null", "string"], "confidence": ["null", "double"], "snapshot_url": ["null", "string"],
        "count": "int", "description": ["null", "string"], "latitude": "double", "longitude": "double",
        "district": "District", "street": ["null", "string"], "grid_cell": ["null", "string"]}
    symbols = {f["name"]: tuple(f["type"]["symbols"]) for f in alarm_schema["fields"] if kind(f["type"]) in
               ("AlarmType", "Severity")}
    assert symbols == {"alarm_type": ALARM_TYPES, "severity": SEVERITIES}
    assert tuple(load("common/district.avsc")["symbols"]) == DISTRICTS


GOOD = {"alarm_id": "0E9B1D4C-8F5A-4B6E-9C3D-2A1B0C9D8E7F", "camera_id": "CAM-CC-00012", "alarm_type": "INTRUSION",
        "severity": "HIGH", "occurred_at": "2026-11-23T08:30:00.1239+08:00"}
#: GOOD as the topic holds it.
HELD = {**DEFAULTS, **GOOD, "alarm_id": "0e9b1d4c-8f5a-4b6e-9c3d-2a1b0c9d8e7f", "occurred_at": "2026-11-23T00:30:00.123Z"}


@pytest.mark.parametrize("change, want", [
    ({}, {}),
    ({"occurred_at": "2026-11-23t08:30:00z"}, {"occurred_at": "2026-11-23T08:30:00.000Z"}),
    ({"occurred_at": "2026-11-23T08:30:00.5z"}, {"occurred_at": "2026-11-23T08:30:00.500Z"}),
    ({"occurred_at": "2026-11-23t08:30:00+08:00"}, {"occurred_at": "2026-11-23T00:30:00.000Z"}),
    ({"alarm_id": "0e9b1d4c-8f5a-4b6e-9c3d-2a1b0c9d8e7f"}, {"alarm_id": "0e9b1d4c-8f5a-4b6e-9c3d-2a1b0c9d8e7f"}),
    ({"confidence": 10**308}, {"confidence": 1e308}),
    ({"occurred_at": -1}, {"occurred_at": "1969-12-31T23:59:59.999Z"}),
    ({"occurred_at": "0001-01-01T00:00:00-00:30"}, {"occurred_at": "0001-01-01T00:30:00.000Z"}),
    ({"location": {"latitude": 24, "longitude": 109.4, "district": "LIUNAN"}},
     {"location": {"latitude": 24.0, "longitude": 109.4, "district": "LIUNAN", "street": None, "grid_cell": None}}),
    ({"confidence": 1, "count": 3, "plate_number": "桂B12345"}, {"confidence": 1.0, "count": 3, "plate_number": "桂B12345"}),
    ({"occurred_at": "2026-11-23T08:30:00"}, None),  # no offset
    ({"occurred_at": "2026-11-23T23:59:60Z"}, None),  # a leap second
    ({"occurred_at": "0001-01-01T00:00:00+00:01"}, None),  # year 0 in UTC
    ({"occurred_at": True}, None),
    ({"alarm_id": "٠" * 32}, None),
    ({"alarm_id": " " * 31 + "1"}, None),
    ({"alarm_id": "0x" + "0" * 30}, None),
    ({"alarm_id": "+e9b1d4c8f5a4b6e9c3d2a1b0c9d8e7f"}, None),
    ({"alarm_id": "0e9b_1d4c8f5a_4b6e9c3d2a1b0c9d8e"}, None),
    ({"alarm_id": "{0e9b1d4c8f5a4b6e9c3d2a1b0c9d8e7f"}, None),
    ({"alarm_id": "uuid:0e9b1d4c8f5a4b6e9c3d2a1b0c9d8e7f"}, None),
    ({"alarm_id": "0e9b1d4c8f5a4b6e9c3d2a1b0c9d8e7f"}, None),  # RFC 4122's other spellings: the bus
    ({"alarm_id": "{0e9b1d4c-8f5a-4b6e-9c3d-2a1b0c9d8e7f}"}, None),  # promises 8-4-4-4-12 only
    ({"alarm_id": "urn:uuid:0e9b1d4c-8f5a-4b6e-9c3d-2a1b0c9d8e7f"}, None),
    ({"alarm_id": "0e9b1d4c8-f5a-4b6e-9c3d-2a1b0c9d8e7f"}, None),
    ({"alarm_type": "intrusion"}, None),
    ({"count": None}, None),
    ({"count": 2**31}, None),
    ({"confidence": 10**400}, None),
    ({"location": {"latitude": -(10**400), "longitude": 109.4, "district": "LIUNAN"}}, None),
    ({"description": "\ud800"}, None),
    ({"owner_department": {"string": "police"}}, None),  # Avro's JSON encoding of a union: not plain JSON
    ({"location": {"latitude": 24, "longitude": 109.4}}, None),
    ({"extra": 1}, None),
    ({"occurred_at": "20261123T083000+0800"}, "doubt"),
    ({"occurred_at": 1.0}, "doubt"),
])
def test_the_oracle(change: dict[str, Any], want: dict[str, Any] | str | None) -> None:
    verdict = judge(json.dumps({**GOOD, **change}).encode())
    if want is None or want == "doubt":
        assert verdict is None if want is None else verdict is not None and verdict.doubt, verdict
        return
    assert verdict is not None and verdict.doubt is None, verdict
    assert verdict.value == {**HELD, **change, **want}
    assert canonical_record(verdict.value)


@pytest.mark.parametrize("raw, want", [
    (json.dumps(GOOD).encode(), "valid"),
    (json.dumps(GOOD).encode()[:-1] + b', "confidence": NaN}', None),  # not JSON
    (json.dumps(GOOD, ensure_ascii=False).replace("CAM", "\ud800").encode("utf-8", "surrogatepass"), None),  # CESU-8
    (json.dumps(GOOD).encode("utf-16"), None),
    (b"[" * 100_000 + b"]" * 100_000, None),
    (b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), "doubt"),  # a byte order mark
    (json.dumps(GOOD).encode()[:-1] + b', "severity": "LOW"}', "doubt"),  # a repeated name
])
def test_the_oracle_reads_json_as_rfc_8259_has_it(raw: bytes, want: str | None) -> None:
    verdict = judge(raw)
    assert (None if verdict is None else "doubt" if verdict.doubt else "valid") == want


# -- the bookkeeping -----------------------------------------------------------------------------


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@dataclass
class Ledger:
    """Every answer, and what the topic must hold because of them."""

    accepted: Counter[str] = field(default_factory=Counter)  # canonical values answered 202
    ce_ids: set[str] = field(default_factory=set)
    maybe: Counter[str] = field(default_factory=Counter)  # in requests answered 503: may or may not be there
    statuses: Counter[int] = field(default_factory=Counter)

    def check(self, answer: httpx.Response, what: str) -> None:
        """Never 5xx but backpressure; every refusal a JSON error."""
        status = answer.status_code
        self.statuses[status] += 1
        assert status < 500 or status in BACKPRESSURE, f"{what}: {status} {answer.text[:500]}"
        if status >= 400 and answer.headers.get("content-type", "").startswith("application/json"):
            assert answer.json()["error"], what


    def prove_topic(self, city: City) -> None:
        """The canonical topic holds exactly the records answered 202 (and perhaps some of
        those answered 503), each a valid record the police published."""
        topic = city.topology.event_type(EVENT_TYPE).topic
        exists = topic in admin(city.settings).list_topics(timeout=10).topics
        got = list(tail(city.settings, [topic], exit_at_end=True)) if exists else []
        assert all(r.error is None for r in got), [r.error for r in got if r.error]
        for r in got:
            assert canonical_record(r.value), r.value
            assert (r.headers["ce_type"], r.headers["ce_source"]) == (EVENT_TYPE, "police")
            assert r.key == r.value["camera_id"]
        held = Counter(canonical(r.value) for r in got)
        surplus = held - self.accepted
        assert not (surplus - self.maybe), f"records on the topic never answered 202: {list(surplus)[:3]}"
        missing = self.accepted - held
        assert not missing, f"records answered 202 missing from the topic: {list(missing)[:3]}"
        assert self.ce_ids <= {r.headers["ce_id"] for r in got}


@pytest.fixture
def fuzzed(start_ingest: Callable[..., Ingest]) -> tuple[Ingest, Ledger]:
    """A connector to fuzz (small limits, so that bodies over them are cheap) and the
    ledger of its answers."""
    ingest = start_ingest(max_body_bytes=MAX_BODY, max_batch_bytes=MAX_BATCH, max_batch_records=MAX_RECORDS)
    return ingest, Ledger()


# -- the proofs ------------------------------------------------------------------------------------


Fuzzed = tuple[Ingest, Ledger]


def test_single_records_of_any_shape_and_encoding(fuzzed: Fuzzed, security_city: City) -> None:
    ingest, ledger = fuzzed

    @FUZZ
    @given(record=records(), encoding=st.sampled_from(ENCODINGS), content_type=content_types)
    def send(record: Any, encoding: str, content_type: str | bytes) -> None:
        raw = encode(record, encoding)
        answer = ingest.post(EVENT_TYPE, raw, headers={"Content-Type": content_type})
        what = f"{raw[:300]!r} ({encoding}, {content_type!r})"
        ledger.check(answer, what)
        verdict = judge(raw) if len(raw) <= MAX_BODY else None
        if answer.status_code in BACKPRESSURE:
            if verdict is not None:
                ledger.maybe[canonical(verdict.value)] += 1
            return
        if verdict is None:
            assert 400 <= answer.status_code < 500, f"{what}: an invalid record was answered {answer.status_code}"
            return
        if verdict.doubt and answer.status_code == 400:
            return  # outside the contract: refusing it is right too
        assert answer.status_code == 202, f"{what}: a valid record was refused: {answer.text[:500]}"
        ack = answer.json()
        assert ack["key"] == verdict.value["camera_id"]
        ledger.accepted[canonical(verdict.value)] += 1
        ledger.ce_ids.add(ack["ce_id"])

    send()
    assert ledger.statuses[202] > 0 and ledger.statuses[400] > 0, ledger.statuses
    ledger.prove_topic(security_city)


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    """JSON lines: good records, mutated ones, garbage, blank lines."""
    kinds = st.sampled_from(["good", "good", "mutated", "garbage", "blank"])
    lines = []
    for kind in draw(st.lists(kinds, min_size=1, max_size=MAX_RECORDS + 3)):
        if kind == "good":
            lines.append(json.dumps(base_alarm(draw(st.uuids()), "CAM-CC-00012")).encode())
        elif kind == "mutated":
            lines.append(encode(draw(records()), draw(st.sampled_from(["json", "utf-8"]))))
        elif kind == "garbage":
            lines.append(draw(st.binary(max_size=40)).replace(b"\n", b""))
        else:
            lines.append(draw(st.sampled_from([b"", b" ", b"\t", b"\r"])))
    return lines


def test_json_lines_batches_mixing_good_and_bad_lines(fuzzed: Fuzzed, security_city: City) -> None:
    ingest, ledger = fuzzed

    @FUZZ
    @given(lines=batches(), separator=st.sampled_from([b"\n", b"\r\n"]))
    def send(lines: list[bytes], separator: bytes) -> None:
        raw = separator.join(lines)
        answer = ingest.post(EVENT_TYPE, raw, batch=True)
        what = f"batch {raw[:300]!r}"
        ledger.check(answer, what)
        lines = {n: line.rstrip(b"\r") for n, line in enumerate(raw.split(b"\n"), start=1)}
        # A line of JSON whitespace is blank; one of other ASCII whitespace (VT, FF) is not
        # JSON, yet blank to many readers: it may be skipped or refused.
        verdicts = {n: judge(line) for n, line in lines.items() if line.strip(b" \t\r")}
        skippable = {n for n in verdicts if not lines[n].strip()}
        wants = [v.value for v in verdicts.values() if v is not None]
        bad = {n for n, v in verdicts.items() if v is None} - skippable
        doubtful = {n for n, v in verdicts.items() if v is not None and v.doubt} | skippable
        if answer.status_code in BACKPRESSURE:
            ledger.maybe.update(canonical(w) for w in wants)
            return
        fits = 0 < len(wants) <= MAX_RECORDS and len(raw) <= MAX_BATCH
        if answer.status_code == 202:
            assert fits and not bad, f"{what}: an invalid batch was accepted"
            assert answer.json()["accepted"] == len(wants)
            ledger.accepted.update(canonical(w) for w in wants)
            return
        assert 400 <= answer.status_code < 500, what
        assert not fits or bad or doubtful, f"{what}: a valid batch was refused: {answer.text[:500]}"
        if answer.status_code == 400 and bad:  # every bad line named, and only those (or doubtful ones)
            assert bad <= {p["line"] for p in answer.json()["problems"]} <= bad | doubtful, what

    send()
    assert ledger.statuses[202] > 0 and ledger.statuses[400] > 0, ledger.statuses
    ledger.prove_topic(security_city)


def nested(opener: str, depth: int) -> bytes:
    closer = {"[": "]", '{"a": ': "}", '{"camera_id": ': "}", '[{"a": ': "}]"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


hostile = st.one_of(
    st.tuples(st.just("nested"), st.sampled_from(["[", '{"a": ', '{"camera_id": ', '[{"a": ']),
              st.sampled_from([1, 10, 999, 1000, 1001, 5000, 100_000, 200_000]) | st.integers(1, 4000)),
    st.tuples(st.just("huge"), st.integers(MAX_BODY + 1, MAX_BATCH * 3), st.booleans()),
    st.tuples(st.just("bytes"), st.binary(max_size=400)),
    st.tuples(st.just("path"), texts, records()),
)


def test_hostile_bodies_and_paths(fuzzed: Fuzzed, security_city: City) -> None:
    """Deeply nested JSON (Python's parser raises RecursionError around 1,000 levels),
    bodies over the limits by Content-Length and by the bytes streamed, random bytes, and
    event types no one declared, on both endpoints."""
    ingest, ledger = fuzzed

    @FUZZ
    @given(case=hostile, batch=st.booleans())
    @example(case=("nested", "[", 100_000), batch=False)  # 100 kB: over MAX_BODY, 413 unread
    @example(case=("nested", "[", 9_000), batch=False)  # under it: parsed, RecursionError -> 400
    @example(case=("nested", '{"camera_id": ', 3_000), batch=True)
    @example(case=("huge", MAX_BATCH + 1, True), batch=True)
    def send(case: tuple[Any, ...], batch: bool) -> None:
        limit = MAX_BATCH if batch else MAX_BODY
        what = f"{case[0]} {str(case[1:])[:200]} (batch={batch})"
        if case[0] == "path":
            path = quote(case[1].encode("utf-8", "surrogatepass"), safe="")  # %-escapes of bytes that may not be UTF-8
            answer = ingest.post(path, json.dumps(case[2]).encode(), batch=batch)
            ledger.check(answer, what)
            assert answer.status_code in (400, 404, 405) or (case[1] == EVENT_TYPE), what
            if answer.status_code == 202:  # the type, spelled plainly: accepted as any record
                verdict = judge(json.dumps(case[2]).encode())
                assert verdict is not None, f"{what}: an invalid record was accepted"
                ledger.accepted[canonical(verdict.value)] += 1
            return
        if case[0] == "nested":
            raw = nested(case[1], case[2])
            answer = ingest.post(EVENT_TYPE, raw, batch=batch)
            ledger.check(answer, what)
            assert answer.status_code in (400, 413), f"{what}: {answer.status_code} {answer.text[:300]}"
            assert answer.status_code == (413 if len(raw) > limit else 400), what
            return
        if case[0] == "huge":
            size, streamed = case[1], case[2]
            record = json.dumps(base_alarm(uuid.uuid4(), "CAM-CC-1")).encode()
            raw = record + b" " * (size - len(record))
            content: Any = iter([raw[i:i + 8192] for i in range(0, len(raw), 8192)]) if streamed else raw
            answer = ingest.post(EVENT_TYPE, content, batch=batch)
            ledger.check(answer, what)
            if size > limit:
                assert answer.status_code == 413, what
            elif answer.status_code == 202:
                verdict = judge(record)
                assert verdict is not None
                ledger.accepted[canonical(verdict.value)] += 1
            return
        raw = case[1]
        answer = ingest.post(EVENT_TYPE, raw, batch=batch)
        ledger.check(answer, what)
        assert 400 <= answer.status_code < 500, what

    send()
    assert ledger.statuses[413] > 0 and ledger.statuses[400] > 0 and ledger.statuses[404] > 0, ledger.statuses
    ledger.prove_topic(security_city)
