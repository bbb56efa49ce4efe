"""The HTTP ingest endpoint fuzzed with hypothesis, over real HTTP on loopback, against the
real broker and registry.

Whatever arrives (malformed or deeply nested JSON, wrong types, missing and unknown fields,
bodies over the limit, bytes that are not UTF-8, other encodings and content types,
unicode edge cases, JSON-lines batches mixing good and bad lines, odd event type paths),
the connector never answers 5xx (but 503/429, backpressure), refuses exactly what the
bus's own parser and schema check refuse, and accepts the rest. Afterwards the canonical
topic is read back: it holds exactly the records that were answered 202, each a valid
record published by the police, nothing else.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bus.consume.tail import tail
from bus.kafka.admin import admin
from bus.publish.exceptions import InputInvalid
from bus.publish.jsonl import parse_record
from bus.schemas.catalog import EventSchema
from bus.schemas.exceptions import RecordInvalid
from bus.schemas.records import to_datum, to_json
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
    st.sampled_from([0, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**63, 1e308, -0.0, 0.5, 1.0]),
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

# -- the oracle and the bookkeeping -----------------------------------------------------------------


def expected(schema: EventSchema, raw: bytes) -> Any | None:
    """What the bus must publish for these bytes as one record (JSON as decoded from the
    topic), or None if they must be refused: the bus's own parser and schema check."""
    try:
        record = parse_record(raw)
        json.dumps(record, ensure_ascii=False).encode("utf-8")
        return to_json(to_datum(schema, record))
    except (InputInvalid, RecordInvalid, RecursionError, ValueError):
        return None


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


    def prove_topic(self, city: City, schema: EventSchema) -> None:
        """The canonical topic holds exactly the records answered 202 (and perhaps some of
        those answered 503), each a valid record the police published."""
        topic = city.topology.event_type(EVENT_TYPE).topic
        exists = topic in admin(city.settings).list_topics(timeout=10).topics
        got = list(tail(city.settings, [topic], exit_at_end=True)) if exists else []
        assert all(r.error is None for r in got), [r.error for r in got if r.error]
        for r in got:
            to_datum(schema, r.value)  # each one a valid record
            assert (r.headers["ce_type"], r.headers["ce_source"]) == (EVENT_TYPE, "police")
            assert r.key == r.value["camera_id"]
        held = Counter(canonical(r.value) for r in got)
        surplus = held - self.accepted
        assert not (surplus - self.maybe), f"records on the topic never answered 202: {list(surplus)[:3]}"
        missing = self.accepted - held
        assert not missing, f"records answered 202 missing from the topic: {list(missing)[:3]}"
        assert self.ce_ids <= {r.headers["ce_id"] for r in got}


@pytest.fixture
def fuzzed(start_ingest: Callable[..., Ingest], security_city: City) -> tuple[Ingest, EventSchema, Ledger]:
    """A connector to fuzz (small limits, so that bodies over them are cheap), the event
    schema, and the ledger of its answers."""
    ingest = start_ingest(max_body_bytes=MAX_BODY, max_batch_bytes=MAX_BATCH, max_batch_records=MAX_RECORDS)
    return ingest, security_city.topology.schema_for(EVENT_TYPE), Ledger()


# -- the proofs ------------------------------------------------------------------------------------


Fuzzed = tuple[Ingest, EventSchema, Ledger]


def test_single_records_of_any_shape_and_encoding(fuzzed: Fuzzed, security_city: City) -> None:
    ingest, schema, ledger = fuzzed

    @FUZZ
    @given(record=records(), encoding=st.sampled_from(ENCODINGS), content_type=content_types)
    def send(record: Any, encoding: str, content_type: str | bytes) -> None:
        raw = encode(record, encoding)
        answer = ingest.post(EVENT_TYPE, raw, headers={"Content-Type": content_type})
        what = f"{raw[:300]!r} ({encoding}, {content_type!r})"
        ledger.check(answer, what)
        want = expected(schema, raw) if len(raw) <= MAX_BODY else None
        if answer.status_code in BACKPRESSURE:
            if want is not None:
                ledger.maybe[canonical(want)] += 1
            return
        if want is None:
            assert 400 <= answer.status_code < 500, what
            return
        assert answer.status_code == 202, f"{what}: a valid record was refused: {answer.text[:500]}"
        ack = answer.json()
        assert ack["key"] == want["camera_id"]
        ledger.accepted[canonical(want)] += 1
        ledger.ce_ids.add(ack["ce_id"])

    send()
    assert ledger.statuses[202] > 0 and ledger.statuses[400] > 0, ledger.statuses
    ledger.prove_topic(security_city, schema)


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
    ingest, schema, ledger = fuzzed

    @FUZZ
    @given(lines=batches(), separator=st.sampled_from([b"\n", b"\r\n"]))
    def send(lines: list[bytes], separator: bytes) -> None:
        raw = separator.join(lines)
        answer = ingest.post(EVENT_TYPE, raw, batch=True)
        what = f"batch {raw[:300]!r}"
        ledger.check(answer, what)
        numbered = {n: expected(schema, line.rstrip(b"\r"))
                    for n, line in enumerate(raw.split(b"\n"), start=1) if line.strip()}
        wants = list(numbered.values())
        bad = {n for n, want in numbered.items() if want is None}
        valid = bool(wants) and not bad and len(wants) <= MAX_RECORDS and len(raw) <= MAX_BATCH
        if answer.status_code in BACKPRESSURE:
            ledger.maybe.update(canonical(w) for w in wants if w is not None)
            return
        if not valid:
            assert 400 <= answer.status_code < 500, what
            if answer.status_code == 400 and bad:  # every bad line named, and only those
                assert {p["line"] for p in answer.json()["problems"]} == bad, what
            return
        assert answer.status_code == 202, f"{what}: a valid batch was refused: {answer.text[:500]}"
        assert answer.json()["accepted"] == len(wants)
        ledger.accepted.update(canonical(w) for w in wants)

    send()
    assert ledger.statuses[202] > 0 and ledger.statuses[400] > 0, ledger.statuses
    ledger.prove_topic(security_city, schema)


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
    ingest, schema, ledger = fuzzed

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
                ledger.accepted[canonical(expected(schema, json.dumps(case[2]).encode()))] += 1
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
                ledger.accepted[canonical(expected(schema, record))] += 1
            return
        raw = case[1]
        answer = ingest.post(EVENT_TYPE, raw, batch=batch)
        ledger.check(answer, what)
        assert 400 <= answer.status_code < 500, what

    send()
    assert ledger.statuses[413] > 0 and ledger.statuses[400] > 0 and ledger.statuses[404] > 0, ledger.statuses
    ledger.prove_topic(security_city, schema)
