"""The city's topology (``topology.yaml``) as pydantic models.

Each model checks what it can see on its own (names, closed sets, one operator per filter
condition, a connector is a source or a sink). Everything that needs other parts of the
file or the schemas (unknown names, fields, entitlements, masks) is checked by
:mod:`bus.topology.validate`, which reports every problem with its line.

Naming conventions: an event type's canonical topic is ``city.events.<event_type>``, a
subscription's topic is ``city.sub.<department>.<subscription>``, and a topic's registry
subject is ``<topic>-value`` (TopicNameStrategy). With ``namespace: NS`` every topic is
prefixed ``NS.`` (tests and cities sharing one cluster).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from bus.topology.exceptions import CatalogMissing, UnknownName
from bus.topology.filters import TOPIC_PREFIX, Filter, KebabName, SnakeName, _Model, is_rfc3339, parse_rfc3339
from bus.topology.linkage import LinkageRule
from bus.topology.names import CANONICAL_PREFIX, ENRICHED_SUFFIX, SUBSCRIPTION_PREFIX, topic_name

if TYPE_CHECKING:
    from pathlib import Path

    from bus.schemas.catalog import EventSchema, SchemaCatalog



Compatibility = Literal[
    "BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"
]
#: How a personal field reaches a department. ``masked`` = the schema's default mask.
Treatment = Literal["clear", "masked", "hash", "partial", "generalise", "drop"]
#: A treatment a record is actually given (``masked`` resolved to the schema's mask).
Concrete = Literal["clear", "hash", "partial", "generalise", "drop"]
#: How much of a personal field each treatment shows; a subscription may only narrow.
VISIBILITY: dict[str, int] = {"drop": 0, "hash": 1, "partial": 2, "generalise": 2, "clear": 3}

# -- the topology ---------------------------------------------------------------------



class City(_Model):
    """The city the topology describes."""

    name: str = Field(description="Name of the city.", examples=["Liuzhou"])
    description: str | None = Field(None, description="A sentence about the city and its bus.", examples=[
        "Mid-sized industrial city, about 4 million people, 31 departments on one bus."])


class Department(_Model):
    """A department: a publisher of the event types it owns, a subscriber to others."""

    name: SnakeName = Field(description="Id of the department, snake_case.", examples=["police", "district_chengzhong"])
    title: str = Field(description="Its official name.", examples=["Public Security Bureau"])
    description: str | None = Field(None, description="What it does with the bus.", examples=[
        "Runs the surveillance network (Skynet) and the household registry."])
    entitlements: dict[str, dict[str, Treatment]] = Field(
        default_factory=dict,
        description=(
            "Personal data the department may receive: event type -> personal field -> treatment "
            "(clear, masked = the schema's default mask, hash, partial, generalise, drop). A personal "
            "field not listed is never delivered to this department."
        ),
        examples=[{"population_change": {"name": "clear", "national_id": "clear", "birth_date": "masked"}}],
    )

    def entitlement(self, event_type: str, field: str) -> Treatment | None:
        """The treatment as written (``masked`` unresolved), or None."""
        return self.entitlements.get(event_type, {}).get(field)


class EventType(_Model):
    """An event type: one Avro schema, one owner, one canonical topic."""

    name: SnakeName = Field(description="Id of the event type, the stem of its schema file.", examples=["camera_alarm"])
    schema_file: str = Field(
        alias="schema", description="Its Avro schema, relative to schemas_dir.",
        examples=["surveillance/camera_alarm.avsc"],
    )
    owner: str = Field(description="The only department that may publish it.", examples=["police"])
    key: str = Field(
        description="Top-level, non-nullable field used as the record key (order holds per key).",
        examples=["camera_id"],
    )
    compatibility: Compatibility = Field(
        "BACKWARD", description="Schema compatibility mode enforced by the registry for its subject.",
        examples=["BACKWARD", "FULL_TRANSITIVE"],
    )
    partitions: int = Field(6, ge=1, le=10_000, description="Partitions of the canonical topic.", examples=[6, 12])
    description: str | None = Field(None, description="What the events are.", examples=[
        "Alarms raised by cameras and vehicle checkpoints."])
    route_from: Literal["canonical", "enriched"] = Field(
        "canonical",
        description="What the router delivers to subscribers: the canonical topic as published, or "
        "`enriched`: `<topic>.enriched`, written by the stateful processors (`bus process`, part of `bus up`), "
        "where camera alarms carry the camera's location and storms are merged.",
        examples=["canonical", "enriched"],
    )

    _namespace: str | None = PrivateAttr(None)

    @property
    def topic(self) -> str:
        """The canonical topic: ``city.events.<event_type>``."""
        return topic_name(self._namespace, CANONICAL_PREFIX, self.name)

    @property
    def routed_topic(self) -> str:
        """The topic the router reads for this type (see ``route_from``)."""
        return f"{self.topic}.{ENRICHED_SUFFIX}" if self.route_from == "enriched" else self.topic

    @property
    def subject(self) -> str:
        """The registry subject of the canonical topic's values (TopicNameStrategy)."""
        return f"{self.topic}-value"


class Subscription(_Model):
    """What one department receives of one event type, on its own topic."""

    name: KebabName = Field(description="Unique id, lowercase with dashes.", examples=["fire-alarms"])
    department: str = Field(description="The subscribing department.", examples=["fire_brigade"])
    event_type: str = Field(description="The event type subscribed to.", examples=["camera_alarm"])
    description: str = Field(description="What the department uses it for.", examples=[
        "Fire and smoke alarms, for dispatch"])
    filter: Filter | None = Field(
        None, description="Which records to deliver (declarative; all records when absent).",
        examples=[{"and": [{"field": "alarm_type", "in": ["FIRE_SMOKE"]},
                           {"not": {"field": "severity", "eq": "LOW"}}]}],
    )
    fields: list[str] | None = Field(
        None,
        description=(
            "Top-level fields to deliver; must include the event type's key. Default: every field the "
            "department may see (personal fields only with an entitlement)."
        ),
        examples=[["alarm_id", "camera_id", "alarm_type", "severity", "occurred_at", "location"]],
    )
    masks: dict[str, Treatment] = Field(
        default_factory=dict,
        description="Narrower treatments of personal fields for this subscription (never wider than the entitlement).",
        examples=[{"plate_number": "hash"}],
    )
    start: str = Field(
        "now", description="Where a new subscription starts: now, earliest, or an RFC 3339 time to backfill from.",
        examples=["now", "earliest", "2026-01-01T00:00:00+08:00"],
    )

    _namespace: str | None = PrivateAttr(None)

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        if value in ("now", "earliest") or is_rfc3339(value):
            return value
        raise PydanticCustomError(
            "start",
            "start: {value} is not now, earliest or an RFC 3339 time with an offset; write e.g. "
            "start: 2026-01-01T00:00:00+08:00",
            {"value": repr(value)},
        )

    @property
    def topic(self) -> str:
        """The subscription topic: ``city.sub.<department>.<subscription>``."""
        return topic_name(self._namespace, SUBSCRIPTION_PREFIX, self.department, self.name)

    @property
    def subject(self) -> str:
        return f"{self.topic}-value"

    @property
    def start_time(self) -> dt.datetime | None:
        """The backfill point when ``start`` is a time, else None."""
        return parse_rfc3339(self.start)

    @property
    def lane(self) -> str | None:
        """The router lane serving this subscription: its own name when it has a start point
        (``earliest`` or a time: it is backfilled by a consumer group of its own, which
        keeps going after it caught up), None for the shared group (``start: now``)."""
        return None if self.start == "now" else self.name


class Connector(_Model):
    """A department system attached to the bus: a source (publishes) or a sink (subscription)."""

    name: KebabName = Field(description="Unique id, lowercase with dashes.", examples=["skynet-webhook"])
    type: SnakeName = Field(
        description="Connector kind from the connector kit.", examples=["http_ingest", "postgres_sink"]
    )
    department: str = Field(description="The department whose system it is.", examples=["police"])
    description: str | None = Field(None, description="The system it attaches.", examples=[
        "Alarm push of the Skynet video platform."])
    publishes: list[str] | None = Field(
        None, min_length=1, description="Source side: the event types it publishes (owned by its department).",
        examples=[["camera_alarm", "camera_status"]],
    )
    subscription: str | None = Field(
        None, description="Sink side: the subscription (of its department) it delivers.", examples=["fire-alarms"]
    )
    config: dict[str, Any] = Field(
        default_factory=dict, description="Settings of the connector kind (checked by the connector kit).",
        examples=[{"url": "https://dispatch.fire.example.gov.cn/bus"}],
    )

    @model_validator(mode="after")
    def _source_or_sink(self) -> Connector:
        if (self.publishes is None) == (self.subscription is None):
            raise PydanticCustomError(
                "connector_side",
                "a connector is a source or a sink: write `publishes: [<event type>, ...]` or "
                "`subscription: <name>`, {which}",
                {"which": "not both" if self.publishes is not None else "one of them"},
            )
        return self

    @property
    def side(self) -> Literal["source", "sink"]:
        return "source" if self.publishes is not None else "sink"


class Topology(_Model):
    """The whole city: departments, event types, subscriptions, connectors.

    A topology from :func:`bus.topology.loader.load_topology` carries the schema catalog
    it was validated against (:attr:`catalog`, :meth:`schema_for`).
    """

    version: Literal[1] = Field(description="Format version of this file.", examples=[1])
    city: City = Field(description="The city.", examples=[{"name": "Liuzhou"}])
    namespace: str | None = Field(
        None, pattern=TOPIC_PREFIX,
        description="Prefix of every topic (and so of every registry subject); for tests or cities sharing a cluster.",
        examples=["staging"],
    )
    schemas_dir: str = Field(
        "schemas", description="Folder of the Avro schemas, relative to this file.", examples=["schemas"]
    )
    departments: list[Department] = Field(description="Every department on the bus.", examples=[[
        {"name": "police", "title": "Public Security Bureau"}]])
    event_types: list[EventType] = Field(default_factory=list, description="Every event type.", examples=[[
        {"name": "camera_alarm", "schema": "surveillance/camera_alarm.avsc", "owner": "police", "key": "camera_id"}]])
    subscriptions: list[Subscription] = Field(default_factory=list, description="Every subscription.", examples=[[
        {"name": "fire-alarms", "department": "fire_brigade", "event_type": "camera_alarm",
         "description": "Fire and smoke alarms", "filter": {"field": "alarm_type", "eq": "FIRE_SMOKE"}}]])
    connectors: list[Connector] = Field(default_factory=list, description="Departments' systems.", examples=[[
        {"name": "fire-dispatch-webhook", "type": "http_webhook_sink", "department": "fire_brigade",
         "subscription": "fire-alarms"}]])
    linkage: list[LinkageRule] = Field(default_factory=list, description="Rules that turn camera alarms into cases "
                                       "for the responsible units (bus.topology.linkage).", examples=[[
        {"name": "fire-smoke", "match": {"field": "alarm_type", "eq": "FIRE_SMOKE"}, "case": {
            "category": "FIRE_HAZARD", "responsible": ["fire_brigade", "district_centre"],
            "respond_within_h": 0.25, "resolve_within_h": 4}}]])

    _catalog: SchemaCatalog | None = PrivateAttr(None)
    _source: Path | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _share_namespace(self) -> Topology:
        for et in self.event_types:
            et._namespace = self.namespace
        for sub in self.subscriptions:
            sub._namespace = self.namespace
        return self

    # -- lookups ----------------------------------------------------------------------

    def department(self, name: str) -> Department:
        return _named(self.departments, name, "department")

    def event_type(self, name: str) -> EventType:
        return _named(self.event_types, name, "event type")

    def subscription(self, name: str) -> Subscription:
        return _named(self.subscriptions, name, "subscription")

    def connector(self, name: str) -> Connector:
        return _named(self.connectors, name, "connector")

    def subscriptions_for(self, event_type: str) -> list[Subscription]:
        return [s for s in self.subscriptions if s.event_type == event_type]

    def may_publish(self, department: str, event_type: str) -> bool:
        """True if ``department`` owns ``event_type`` (False for unknown names)."""
        return any(et.name == event_type and et.owner == department for et in self.event_types)

    # -- schemas and personal data ----------------------------------------------------

    def attach(self, catalog: SchemaCatalog, source: Path | None = None) -> Topology:
        """Give the topology the schema catalog it was validated against (the loader does this)."""
        self._catalog = catalog
        self._source = source
        return self

    @property
    def catalog(self) -> SchemaCatalog:
        if self._catalog is None:
            raise CatalogMissing(
                "this topology has no schema catalog; load it with bus.topology.load_topology(path)"
            )
        return self._catalog

    @property
    def source(self) -> Path | None:
        """The file the topology was loaded from, if any."""
        return self._source

    def schema_for(self, event_type: str) -> EventSchema:
        et = self.event_type(event_type)
        schema = self.catalog.by_path(et.schema_file)
        if schema is None:
            raise CatalogMissing(f"no schema loaded from {et.schema_file} for event type {event_type!r}")
        return schema

    def ceiling(self, department: str, event_type: str, field: str) -> Concrete | None:
        """The most of ``field`` that ``department`` may see: ``clear`` for a non-personal
        field, the entitlement (``masked`` resolved to the schema's mask) for a personal one,
        None when the field is unknown or the department has no entitlement to it."""
        info = self.schema_for(event_type).field(field)
        if info is None:
            return None
        if not info.personal:
            return "clear"
        return resolve(self.department(department).entitlement(event_type, field), info.mask)

    def selection(self, subscription: str) -> list[str]:
        """The top-level fields a subscription delivers: its ``fields`` (or, by default, every
        top-level field its department may see), without fields whose treatment is ``drop``."""
        sub = self.subscription(subscription)
        schema = self.schema_for(sub.event_type)
        names = sub.fields if sub.fields is not None else [f["name"] for f in schema.schema["fields"]]
        return [n for n in names if self._treatment(sub, n) not in (None, "drop")]

    def treatments(self, subscription: str) -> dict[str, Concrete]:
        """Each personal field (dotted path) inside the delivered fields -> the treatment its
        records get (the subscription's mask, else the department's ceiling)."""
        sub = self.subscription(subscription)
        selected = set(self.selection(subscription))
        out: dict[str, Concrete] = {}
        for info in self.schema_for(sub.event_type).personal_fields():
            treatment = self._treatment(sub, info.path)
            if info.path.split(".")[0] in selected and treatment is not None:
                out[info.path] = treatment
        return out

    def _treatment(self, sub: Subscription, field: str) -> Concrete | None:
        ceiling = self.ceiling(sub.department, sub.event_type, field)
        if ceiling is None:
            return None
        info = self.schema_for(sub.event_type).field(field)
        narrowed = resolve(sub.masks.get(field), info.mask if info else None)
        return narrowed if narrowed is not None else ceiling


def narrows(wanted: Concrete, ceiling: Concrete) -> bool:
    """True if a subscription may ask for ``wanted`` under a ``ceiling``: the same treatment,
    or one that shows strictly less (drop < hash < partial = generalise < clear)."""
    return wanted == ceiling or VISIBILITY[wanted] < VISIBILITY[ceiling]


def resolve(treatment: Treatment | None, schema_mask: str | None) -> Concrete | None:
    """``masked`` -> the schema's default mask; other treatments unchanged."""
    if treatment == "masked":
        return schema_mask  # type: ignore[return-value]
    return treatment


_Named = TypeVar("_Named", Department, EventType, Subscription, Connector)


def _named(items: list[_Named], name: str, kind: str) -> _Named:
    for item in items:
        if item.name == name:
            return item
    raise UnknownName(kind, name, [i.name for i in items])
