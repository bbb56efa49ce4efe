"""Helpers of the entitlement property checked at the sinks (test_entitlement_at_sinks.py).

Three parts, kept apart so that the expectation never leans on the bus's own code:

- **Rules**: hypothesis strategies for a small city: departments with random entitlements,
  subscriptions with random field selections, masks and filters, each delivered by a
  webhook or a PostgreSQL sink, and random records of two event types.
- **Expectation**, from the rules alone (the treatments as README.md states them), as
  tests/routing/test_entitlement_property.py does: whether a record is entitled (a filter
  evaluator of our own) and what each delivered field must look like.
- **A city of real parts**: the topology written under a unique namespace, the router,
  one connector per subscription, publishing by the owners, and what the sinks got.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from hypothesis import strategies as st
from ruamel.yaml import YAML

from bus.connect import ConnectorRunner
from bus.demo.samples import REGION_CODES, camera_alarm, population_change
from bus.kafka.admin import admin, delete_topics
from bus.kafka.config import KafkaSettings
from bus.publish import Publisher
from bus.routing.service import RoutingService
from bus.schemas.catalog import EventSchema, SchemaCatalog
from bus.schemas.records import to_datum, to_json
from bus.topology.models import Topology
from tests.connectors.support import Endpoint, Receipt, all_entry_points, wait_until
from tests.routing.test_entitlement_property import EVENT as POPULATION
from tests.routing.test_entitlement_property import LEVEL, SCHEMAS, TREATMENTS, rules

ALARM = SchemaCatalog.load(SCHEMAS).get("camera_alarm")
EVENTS: dict[str, EventSchema] = {"population_change": POPULATION, "camera_alarm": ALARM}
OWNER = {"population_change": "civil_affairs", "camera_alarm": "police"}
KEY = {"population_change": "person_id", "camera_alarm": "camera_id"}
DISTRICTS = sorted(REGION_CODES)
ALARM_TYPES = ["INTRUSION", "CROWD_GATHERING", "FIRE_SMOKE", "WATCHLIST_VEHICLE", "TAMPERING", "CAMERA_OFFLINE"]
CHANGE_TYPES = ["BIRTH", "DEATH", "MOVE_IN", "MOVE_OUT", "ADDRESS_CHANGE", "HOUSEHOLD_CHANGE", "ID_DOCUMENT_CHANGE"]
SEVERITIES = ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
#: README.md: "an ID number keeps its region prefix and last 4"; a phone its operator prefix
#: and last 4, a plate its province and city letters and last character; others the last 4.
PARTIAL_SHOWN = {"national_id": (6, 4), "phone": (3, 4), "vehicle_plate": (2, 1)}
#: Personal values long and specific enough to look for anywhere in a delivery (dates and
#: enum symbols are checked field by field only: they turn up in other fields by chance).
SCANNED_PII = {"person_id", "name", "national_id", "phone", "address", "household_id", "vehicle_plate", "image",
               "health"}
#: Key column of the PostgreSQL sinks: the change's own id, so that every record is a row
#: whatever its person_id became (a partial or generalised key would merge rows).
ROW_KEY = "change_id"
Sink = Literal["webhook", "postgres"]


def personal(event: EventSchema) -> dict[str, Any]:
    return {f.path: f for f in event.personal_fields()}


def top_level(event: EventSchema) -> list[str]:
    return [f["name"] for f in event.schema["fields"]]


def concrete_in(event: EventSchema, treatment: str, name: str) -> str:
    """A written treatment made concrete: ``masked`` is the schema's mask for the field."""
    return personal(event)[name].mask if treatment == "masked" else treatment


# -- rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubRule:
    """One subscription as drawn: its department's entitlement to the event type, its own
    field selection, masks and filter, and the kind of sink that delivers it."""

    name: str
    department: str
    event_type: str
    entitled: dict[str, str]
    fields: list[str] | None
    masks: dict[str, str]
    filter: dict[str, Any] | None
    sink: Sink

    @property
    def event(self) -> EventSchema:
        return EVENTS[self.event_type]

    def treatment(self, name: str) -> str | None:
        """What a personal field gets here (None: not entitled at all)."""
        if name not in self.entitled:
            return None
        written = self.masks.get(name, self.entitled[name])
        return concrete_in(self.event, written, name)

    def selection(self) -> list[str]:
        """The fields a delivery carries: those asked for (default all) that are not personal,
        or personal and entitled to something other than drop."""
        wanted = self.fields if self.fields is not None else top_level(self.event)
        pii = personal(self.event)
        return [n for n in top_level(self.event)
                if n in wanted and (n not in pii or self.treatment(n) not in (None, "drop"))]


@dataclass(frozen=True)
class CityRules:
    subscriptions: list[SubRule]
    #: Entitled to everything in clear, subscribed with a filter no record can match.
    bystander: SubRule

    def all(self) -> list[SubRule]:
        return [*self.subscriptions, self.bystander]

    def entitlements(self) -> dict[str, dict[str, dict[str, str]]]:
        out: dict[str, dict[str, dict[str, str]]] = {}
        for sub in self.all():
            if sub.entitled:
                out.setdefault(sub.department, {})[sub.event_type] = sub.entitled
        return out


def _fix_key(entitled: dict[str, str], fields: list[str] | None, key: str) -> list[str] | None:
    """A selection must list the key: add it when the department is entitled to it at all
    (a dropped key is listed and still not delivered), else take the default selection."""
    if fields is None or key in fields:
        return fields
    return [*fields, key] if key in entitled or key not in personal(POPULATION) | personal(ALARM) else None


def _narrows(wanted: str, ceiling: str) -> bool:
    """README.md: a subscription may only narrow (drop < hash < partial = generalise < clear)."""
    return wanted == ceiling or LEVEL[wanted] < LEVEL[ceiling]


@st.composite
def spread_rules(draw: st.DrawFn, event: EventSchema) -> tuple[dict[str, str], list[str] | None, dict[str, str]]:
    """(entitlement, fields, masks) of a subscription to ``event``, valid by construction,
    where every personal field gets a drawn treatment or none: unlike the router property's
    ``rules()`` (whose simplest case entitles to nothing), the simplest case here is
    everything in clear, so that a few examples cover both ends."""
    pii = personal(event)
    written = draw(st.fixed_dictionaries({n: st.sampled_from([*TREATMENTS, None]) for n in sorted(pii)}))
    entitled = {n: t for n, t in written.items() if t is not None}
    allowed = [n for n in top_level(event) if n not in pii or n in entitled]
    fields = draw(st.none() | st.lists(st.sampled_from(allowed), unique=True, min_size=1))
    chosen = fields if fields is not None else allowed
    masks = {}
    for name in [n for n in chosen if n in entitled]:
        ceiling = concrete_in(event, entitled[name], name)
        narrower = [t for t in ("drop", "hash", "partial", "generalise") if _narrows(t, ceiling)]
        if narrower and draw(st.booleans()):
            masks[name] = draw(st.sampled_from(narrower))
    return entitled, fields, masks


def _leaf_choices(event_type: str, entitled: dict[str, str], now: dt.datetime) -> list[st.SearchStrategy]:
    """Conditions a subscription of this department may write: on any plain field; on a
    personal field only ``exists``, unless the department may see it in clear."""
    clear = {n for n, t in entitled.items() if concrete_in(EVENTS[event_type], t, n) == "clear"}
    known = [st.fixed_dictionaries({"field": st.just(n), "exists": st.booleans()}) for n in sorted(entitled)]
    if event_type == "population_change":
        known += [
            st.fixed_dictionaries({"field": st.just("change_type"), "in": st.lists(st.sampled_from(CHANGE_TYPES),
                                                                               min_size=1, max_size=4, unique=True)}),
            st.fixed_dictionaries({"field": st.just("change_type"), "ne": st.sampled_from(CHANGE_TYPES)}),
            st.fixed_dictionaries({"field": st.just("district"), "eq": st.sampled_from(DISTRICTS)}),
            st.fixed_dictionaries({"field": st.just("district"), "not_in": st.lists(st.sampled_from(DISTRICTS),
                                                                                min_size=1, max_size=3, unique=True)}),
            st.fixed_dictionaries({"field": st.just("previous_district"), "exists": st.booleans()}),
            st.builds(lambda d: {"field": "effective_date", "gte": (now.date() - dt.timedelta(days=d)).isoformat()},
                      st.integers(0, 10)),
            st.builds(lambda m: {"field": "recorded_at", "lt": (now - dt.timedelta(minutes=m)).isoformat()},
                      st.integers(0, 60)),
        ]
        if "gender" in clear:
            known.append(st.fixed_dictionaries({"field": st.just("gender"), "eq": st.sampled_from(["FEMALE", "MALE"])}))
        if "national_id" in clear:
            known.append(st.fixed_dictionaries({"field": st.just("national_id"),
                                                "prefix": st.sampled_from(sorted(REGION_CODES.values()))}))
        if "birth_date" in clear:
            known.append(st.fixed_dictionaries({"field": st.just("birth_date"), "lt": st.just("1970-01-01")}))
    else:
        known += [
            st.fixed_dictionaries({"field": st.just("alarm_type"), "in": st.lists(st.sampled_from(ALARM_TYPES),
                                                                              min_size=1, max_size=4, unique=True)}),
            st.fixed_dictionaries({"field": st.just("severity"), "ne": st.sampled_from(SEVERITIES)}),
            st.fixed_dictionaries({"field": st.just("location.district"), "eq": st.sampled_from(DISTRICTS)}),
            st.fixed_dictionaries({"field": st.just("owner_department"), "prefix": st.sampled_from(["police", "c"])}),
            st.fixed_dictionaries({"field": st.just("count"), "gte": st.integers(1, 6)}),
            st.fixed_dictionaries({"field": st.just("confidence"), "gt": st.sampled_from([0.6, 0.8])}),
        ]
        if "plate_number" in clear:
            known.append(st.fixed_dictionaries({"field": st.just("plate_number"), "prefix": st.just("桂B1")}))
    return known


def filters(event_type: str, entitled: dict[str, str], now: dt.datetime) -> st.SearchStrategy:
    """No filter, one condition, or and/or/not over conditions (one level of nesting)."""
    leaf = st.one_of(_leaf_choices(event_type, entitled, now))
    node = leaf | st.builds(lambda c: {"not": c}, leaf)
    group = st.lists(node, min_size=2, max_size=3)
    return st.none() | node | st.builds(lambda c: {"and": c}, group) | st.builds(lambda c: {"or": c}, group)


@st.composite
def city_rules(draw: st.DrawFn, now: dt.datetime) -> CityRules:
    """2-3 population_change subscriptions, each of a department of its own (the first one
    drawn by the router property's ``rules()`` and delivered into PostgreSQL, the others by
    ``spread_rules``), and 1-2 camera_alarm subscriptions of those departments (webhooks);
    plus the bystander."""
    subs: list[SubRule] = []
    departments = [f"dept_{c}" for c in "abc"[: draw(st.integers(2, 3))]]
    for i, department in enumerate(departments):
        entitled, fields, masks = draw(rules() if i == 0 else spread_rules(POPULATION))
        fields = _fix_key(entitled, fields, "person_id")
        sink: Sink = "postgres" if i == 0 else draw(st.sampled_from(["webhook", "postgres"]))
        if sink == "postgres" and fields is not None and ROW_KEY not in fields:
            fields = [*fields, ROW_KEY]
        subs.append(SubRule(f"people-{i}", department, "population_change", entitled, fields, masks,
                            draw(filters("population_change", entitled, now)), sink))
    alarm_entitlements: dict[str, dict[str, str]] = {}
    for i in range(draw(st.integers(1, 2))):
        department = draw(st.sampled_from(departments))
        entitled, fields, masks = draw(spread_rules(ALARM))
        entitled = alarm_entitlements.setdefault(department, entitled)  # one entitlement per department
        fields = [n for n in fields if n in entitled or n not in personal(ALARM)] if fields else None
        fields = _fix_key(entitled, fields or None, "camera_id")
        masks = {n: t for n, t in masks.items() if n in entitled and (fields is None or n in fields)
                 and _narrows(concrete_in(ALARM, t, n), concrete_in(ALARM, entitled[n], n))}
        subs.append(SubRule(f"alarms-{i}", department, "camera_alarm", entitled, fields, masks,
                            draw(filters("camera_alarm", entitled, now)), "webhook"))
    return CityRules(subs, bystander())


def bystander() -> SubRule:
    """A department entitled to every personal field in clear, whose filter no record matches."""
    everything = {n: "clear" for n in personal(POPULATION)}
    impossible = {"and": [{"field": "change_type", "eq": "BIRTH"}, {"field": "change_type", "eq": "DEATH"}]}
    return SubRule("nothing-matches", "bystander", "population_change", everything, None, {}, impossible, "webhook")


#: Optional fields a drawn record may lack (null), per event type.
BLANKABLE = {
    "population_change": ["name", "national_id", "gender", "birth_date", "phone", "address", "district",
                          "household_id", "previous_district"],
    "camera_alarm": ["location", "owner_department", "confidence", "plate_number", "snapshot_url"],
}


@st.composite
def records(draw: st.DrawFn, event_type: str, min_size: int, max_size: int) -> list[dict[str, Any]]:
    """Sample records of the demo city (bus.demo.samples) from a drawn seed, each with a
    drawn set of optional fields made null; alarms also get a drawn count and may carry a
    plate and a snapshot whatever their type."""
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    blanks = draw(st.lists(st.sets(st.sampled_from(BLANKABLE[event_type]), max_size=3),
                           min_size=min_size, max_size=max_size))
    out = []
    for nulls in blanks:
        if event_type == "population_change":
            record = population_change(rng)
        else:
            record = camera_alarm(rng)
            record["count"] = rng.randint(1, 8)
            if rng.random() < 0.5:
                record["plate_number"] = f"桂B{rng.randint(10000, 99999)}"
                record["snapshot_url"] = f"https://skynet.city.local/snapshots/{record['alarm_id']}.jpg"
        out.append(record | {name: None for name in nulls})
    return out


# -- expectation -------------------------------------------------------------------------


def _comparable(value: Any) -> Any:
    """Times and dates as written in JSON, made comparable as times and dates."""
    if isinstance(value, str) and len(value) >= 10 and value[4] == "-" and value[7] == "-":
        try:
            return dt.datetime.fromisoformat(value) if len(value) > 10 else dt.date.fromisoformat(value)
        except ValueError:
            return value
    return value


def _at(record: dict[str, Any], path: str) -> Any:
    value: Any = record
    for step in path.split("."):
        value = value.get(step) if isinstance(value, dict) else None
    return value


def matches(node: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    """The filter grammar of topology.yaml, evaluated on a record as JSON; a null field
    satisfies ne, not_in and exists: false, and no other comparison (README.md)."""
    if node is None:
        return True
    if "and" in node:
        return all(matches(child, record) for child in node["and"])
    if "or" in node:
        return any(matches(child, record) for child in node["or"])
    if "not" in node:
        return not matches(node["not"], record)
    value = _at(record, node["field"])
    (op, wanted), = ((k, v) for k, v in node.items() if k != "field")
    if op == "exists":
        return (value is not None) == wanted
    if op in ("ne", "not_in"):
        return value is None or (value != wanted if op == "ne" else value not in wanted)
    if value is None:
        return False
    if op == "eq":
        return value == wanted
    if op == "in":
        return value in wanted
    if op == "prefix":
        return isinstance(value, str) and value.startswith(wanted)
    left, right = _comparable(value), _comparable(wanted)
    return {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[op]


def clear_json(event_type: str, record: dict[str, Any]) -> dict[str, Any]:
    """A record as the bus renders it in JSON (every field, times in UTC): the reference the
    clear fields of a delivery are compared with."""
    return to_json(to_datum(EVENTS[event_type], record))


def hmac_of(value: Any, key: bytes) -> bytes:
    return hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).digest()


def check_value(sub: SubRule, name: str, got: Any, record: dict[str, Any], key: bytes) -> str | None:
    """What is wrong with the delivered value of field ``name`` (None when it is right)."""
    original = record[name]
    treatment = sub.treatment(name) if name in personal(sub.event) else "clear"
    if treatment == "clear" or original is None:
        return None if got == original else f"{name}: {got!r} delivered, {original!r} expected ({treatment})"
    pii = personal(sub.event)[name].pii
    if treatment == "hash":
        ok = isinstance(got, str) and got.startswith("h:") and len(got) > 20
        digest = base64.urlsafe_b64decode(got[2:] + "=" * (-len(got[2:]) % 4)) if ok else b""
        if not (len(digest) >= 16 and hmac_of(original, key).startswith(digest)):
            return f"{name}: {got!r} is not the department's keyed HMAC-SHA256 of the value"
    elif treatment == "partial":
        head, tail = PARTIAL_SHOWN.get(pii or "", (0, 4))
        text = str(original)
        wanted = ("*" * len(text) if len(text) <= head + tail
                  else text[:head] + "*" * (len(text) - head - tail) + text[len(text) - tail:])
        if got != wanted:
            return f"{name}: {got!r} delivered, partial of {text!r} should show {wanted!r}"
    elif treatment == "generalise":
        wanted = {"birth_date": str(original)[:4], "address": record.get("district")}.get(pii or "")
        if got != wanted:
            return f"{name}: {got!r} delivered, generalised {original!r} should be {wanted!r}"
    return None


def check_delivery(sub: SubRule, got: dict[str, Any], record: dict[str, Any], key: bytes,
                   headers: dict[str, str] | None = None, seen: Counter[str] | None = None) -> list[str]:
    """Every problem of one delivered record: fields beyond the selection, missing ones,
    values treated otherwise than the rule says, personal values showing where they may not
    (anywhere in the body or in any header)."""
    problems = []
    selection = sub.selection()
    if set(got) != set(selection):
        problems.append(f"fields {sorted(got)} delivered, {sorted(selection)} expected "
                        f"(beyond: {sorted(set(got) - set(selection))}, missing: {sorted(set(selection) - set(got))})")
    pii = personal(sub.event)
    for name in [n for n in selection if n in got]:
        if seen is not None and name in pii and record[name] is not None:
            seen[f"personal {sub.treatment(name)}"] += 1  # what the run really checked, for its report
        problem = check_value(sub, name, got[name], record, key)
        if problem:
            problems.append(problem)
    text = json.dumps(got, ensure_ascii=False, default=str)
    for name, info in pii.items():
        if seen is not None and name in record and name not in selection:
            seen["personal absent"] += 1
        value = record.get(name)
        if info.pii not in SCANNED_PII or value is None or sub.treatment(name) == "clear" and name in selection:
            continue
        if str(value) in text:
            problems.append(f"{name} in clear ({value!r}) in the body, treated {sub.treatment(name)!r}")
        leaking = sorted(h for h, v in (headers or {}).items()
                         if str(value) in unquote(v))
        if leaking:
            problems.append(f"{name} in clear ({value!r}) in header(s) {', '.join(leaking)}, treated "
                            f"{sub.treatment(name)!r}")
    return problems


# -- the topology ------------------------------------------------------------------------


@dataclass
class Wiring:
    """Where the sinks of one example deliver."""

    endpoints: dict[str, Endpoint]  # subscription -> its webhook endpoint
    hmac_env: str  # env var holding the webhooks' signing key
    dsn_env: str  # env var holding the PostgreSQL DSN
    db_prefix: str  # prefix of this example's PostgreSQL schemas

    def table(self, sub: str) -> str:
        """A schema of its own per sink: PostgreSQL's CREATE SCHEMA IF NOT EXISTS is not safe
        against a concurrent one, and postgres sinks starting at once into one new schema
        can fail (UniqueViolation on pg_namespace_nspname_index)."""
        return f"{self.db_prefix}_{sub.replace('-', '_')}.changes"


def connector_name(sub: SubRule) -> str:
    return f"{sub.name}-{sub.sink}"


def _connector(sub: SubRule, wiring: Wiring) -> dict[str, Any]:
    config: dict[str, Any]
    if sub.sink == "webhook":
        config = {"url": wiring.endpoints[sub.name].url, "hmac_key": f"env:{wiring.hmac_env}"}
        kind = "http_webhook_sink"
    else:
        config = {"dsn": f"env:{wiring.dsn_env}", "table": wiring.table(sub.name), "key_column": ROW_KEY}
        kind = "postgres_sink"
    return {"name": connector_name(sub), "type": kind, "department": sub.department, "subscription": sub.name,
            "config": config}


def write_topology(folder: Path, namespace: str, city: CityRules, wiring: Wiring) -> Path:
    """topology.yaml of the drawn city: the two owners, the subscribing departments with
    their entitlements, the bystander, an outsider entitled to everything that subscribes
    to nothing, and one sink connector per subscription."""
    entitlements = city.entitlements()
    subscribers = sorted({s.department for s in city.all()})
    everything = {et: {n: "clear" for n in personal(ev)} for et, ev in EVENTS.items()}
    departments = [{"name": "civil_affairs", "title": "Civil Affairs"}, {"name": "police", "title": "Police"},
                   {"name": "outsider", "title": "Outsider", "entitlements": everything}]
    departments += [{"name": d, "title": d, "entitlements": entitlements.get(d, {})} for d in subscribers]
    subscriptions = []
    for sub in city.all():
        entry: dict[str, Any] = {"name": sub.name, "department": sub.department, "event_type": sub.event_type,
                                 "description": "Drawn by hypothesis."}
        for attribute in ("filter", "fields", "masks"):
            if getattr(sub, attribute):
                entry[attribute] = getattr(sub, attribute)
        subscriptions.append(entry)
    doc = {
        "version": 1,
        "city": {"name": "Property"},
        "namespace": namespace,
        "schemas_dir": str(SCHEMAS),
        "departments": departments,
        "event_types": [
            {"name": "population_change", "schema": "population/population_change.avsc", "owner": "civil_affairs",
             "key": "person_id", "partitions": 3},
            {"name": "camera_alarm", "schema": "surveillance/camera_alarm.avsc", "owner": "police",
             "key": "camera_id", "partitions": 3},
        ],
        "subscriptions": subscriptions,
        "connectors": [_connector(sub, wiring) for sub in city.all()],
    }
    path = folder / "topology.yaml"
    with path.open("w", encoding="utf-8") as out:
        YAML().dump(doc, out)
    return path


# -- the city running ----------------------------------------------------------------------


@dataclass
class Published:
    """A record as its owner published it, with the CloudEvents id the sinks dedupe on."""

    event_type: str
    record: dict[str, Any]
    ce_id: str


@dataclass
class Delivered:
    """What the sinks of one example received, once everything routed was delivered."""

    bodies: dict[str, dict[str, Receipt]] = field(default_factory=dict)  # webhook sub -> ce_id -> receipt
    duplicates: dict[str, int] = field(default_factory=dict)  # webhook sub -> accepted receipts beyond one per key
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # postgres sub -> rows
    routed: dict[str, int] = field(default_factory=dict)  # subscription -> records the router wrote
    seconds: dict[str, float] = field(default_factory=dict)


def hash_keys(city: CityRules) -> dict[str, bytes]:
    """A key of its own for each department (BUS_HASH_KEY_<DEPARTMENT>, README.md)."""
    return {d: f"hash-key-{d}-{uuid.uuid4().hex[:8]}".encode() for d in {s.department for s in city.all()}}


def _publish(topology: Topology, settings: KafkaSettings, batches: dict[str, list[dict[str, Any]]]) -> list[Published]:
    """Each record published by its event type's owner, interleaved by type."""
    out = []
    with Publisher(topology, settings) as publisher:
        queue = [(et, r) for et, rs in batches.items() for r in rs]
        random.Random(len(queue)).shuffle(queue)
        for event_type, record in queue:
            ce_id = publisher.publish(event_type, OWNER[event_type], record).ce_id
            out.append(Published(event_type, record, ce_id))
    return out


def _delivered_count(runner: ConnectorRunner) -> int:
    counts = runner.status().counts
    return counts.get("delivered", 0) + counts.get("dead_lettered", 0)


@contextmanager
def _running(topology: Topology, settings: KafkaSettings, city: CityRules,
             environ: dict[str, str]) -> Iterator[tuple[RoutingService, dict[str, ConnectorRunner]]]:
    """The router (in-process threads) and one connector runner per subscription, started
    concurrently (each joins its consumer group: a few seconds, paid once); on the way out
    the router stops first, then the connectors, all delivered by then."""
    service = RoutingService(topology, settings, environ=environ, watch=False)
    service.prepare()  # subscription topics and schemas, before the sinks subscribe
    runners = {s.name: ConnectorRunner(topology.connector(connector_name(s)), topology, settings,
                                       entry_points=all_entry_points(), status_interval_s=1.0) for s in city.all()}
    with ThreadPoolExecutor(max_workers=len(runners)) as pool, ExitStack() as stack:
        stack.callback(lambda: list(pool.map(lambda r: r.stop(), runners.values())))
        list(pool.map(lambda r: r.start(60), runners.values()))
        service.start()
        stack.callback(service.stop)
        yield service, runners


def run_city(topology: Topology, settings: KafkaSettings, city: CityRules, environ: dict[str, str],
             batches: dict[str, list[dict[str, Any]]], wiring: Wiring, read_rows: Callable[[str], list[dict[str, Any]]],
             timeout_s: float = 60.0) -> tuple[list[Published], Delivered]:
    """Publish ``batches`` through the running city and return what reached the sinks once
    the router committed every record and each sink delivered all the router wrote for it."""
    got = Delivered()
    started = time.monotonic()
    with _running(topology, settings, city, environ) as (service, runners):
        got.seconds["start"] = time.monotonic() - started
        published = _publish(topology, settings, batches)
        wait_until(lambda: service.stats.committed_in >= len(published), timeout_s, "the router to route every record")
        routes = {r.subscription: r for rs in service.routers[None].routes.values() for r in rs}
        got.routed = {name: routes[name].delivered for name in runners}

        def settled() -> bool:
            failed = {n: r.error for n, r in runners.items() if r.state == "failed"}
            assert not failed, f"sink connectors failed: {failed}"
            return all(_delivered_count(r) >= got.routed[n] for n, r in runners.items())

        wait_until(settled, timeout_s, f"every sink to deliver what the router wrote ({got.routed})")
        got.seconds["deliver"] = time.monotonic() - started - got.seconds["start"]
        dead = {n: r.status().counts.get("dead_lettered", 0) for n, r in runners.items()}
        assert not any(dead.values()), f"records were dead-lettered at the sinks: {dead}"
    for sub in city.all():
        if sub.sink == "webhook":
            accepted = wiring.endpoints[sub.name].accepted()
            got.bodies[sub.name] = {r.key: r for r in accepted}
            got.duplicates[sub.name] = len(accepted) - len(got.bodies[sub.name])
        else:
            got.rows[sub.name] = read_rows(wiring.table(sub.name))
    got.seconds["total"] = time.monotonic() - started
    return published, got


def delete_namespace(settings: KafkaSettings, namespace: str) -> None:
    """Every topic of one example (canonical, subscription, connector status, dead letters)."""
    topics = admin(settings).list_topics(timeout=10).topics
    delete_topics(settings, sorted(t for t in topics if t.startswith(f"{namespace}.")))


def written_filters(topology: Topology) -> dict[str, dict[str, Any] | None]:
    """Each subscription's filter as topology.yaml writes it (read from the file, not the model):
    for :func:`matches`, an expectation that does not lean on the router's predicates."""
    assert topology.source is not None, "a topology loaded from a file"
    written = YAML(typ="safe").load(topology.source.read_text(encoding="utf-8"))
    return {sub["name"]: sub.get("filter") for sub in written["subscriptions"]}
