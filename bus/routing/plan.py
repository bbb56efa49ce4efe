"""What the router does for each subscription, worked out once when the topology loads:
its compiled filter, its projection (selected fields, masked personal fields), its own
schema derived from the canonical one, and whether it may pass records through untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import fastavro

from bus.routing.exceptions import UnsupportedSubscription
from bus.routing.filters import Predicate, always, compile_filter
from bus.routing.masking import Masker, masker
from bus.routing.secrets import department_hash_key
from bus.schemas.catalog import EventSchema, inline_references
from bus.topology.models import Subscription, Topology

MASKED_TYPE = ["null", "string"]
SUBJECT_HEADER = "ce_subject"  # CloudEvents subject = the record key (bus.publish)


@dataclass
class Route:
    """One subscription as the router carries it out."""

    subscription: str
    department: str
    event_type: str
    topic: str
    subject: str
    compatibility: str
    partitions: int
    schema: dict[str, Any]
    predicate: Predicate
    untouched: bool
    project: Callable[[dict[str, Any]], dict[str, Any]]
    masked_key: bool
    key_field: str
    schema_id: int | None = field(default=None)
    delivered: int = 0  # records produced to this subscription by this router

    @cached_property
    def parsed(self) -> Any:
        return fastavro.parse_schema(self.schema)  # keeps fastavro's parsed hint: no re-parse per record

    def key_for(self, projected: dict[str, Any], original_key: bytes | None) -> bytes | None:
        if not self.masked_key:
            return original_key
        value = projected.get(self.key_field)
        return None if value is None else str(value).encode("utf-8")

    def headers_for(self, headers: list[tuple[str, bytes]], key: bytes | None) -> list[tuple[str, bytes]]:
        """The headers of an output: ``ce_subject`` (the record key, in clear on the canonical
        topic) as this subscription sees the key, and absent when it does not see it."""
        if not self.masked_key:
            return headers
        out = [(name, value) for name, value in headers if name != SUBJECT_HEADER]
        return out if key is None else [*out, (SUBJECT_HEADER, key)]


def derive_schema(event: EventSchema, selection: list[str], treatments: dict[str, str]) -> dict[str, Any]:
    """The subscription's schema: the canonical record with only the selected fields, and
    masked fields typed as optional strings (marked with the treatment they got)."""
    schema = copy.deepcopy(event.schema)
    by_name = {f["name"]: f for f in schema["fields"]}
    fields = []
    for name in [f["name"] for f in event.schema["fields"] if f["name"] in selection]:
        f = by_name[name]
        treatment = treatments.get(name, "clear")
        if treatment != "clear":
            f = {**f, "type": MASKED_TYPE, "default": None, "masked": treatment,
                 "doc": f"{f['doc']} (delivered {treatment}ed)" if treatment != "drop" else f["doc"]}
        fields.append(f)
    # Named types defined inside a field that was left out must move to the first field
    # that still refers to them, or the schema would not parse.
    schema["fields"] = fields
    return _redefine_orphans(schema, event)


def _redefine_orphans(schema: dict[str, Any], event: EventSchema) -> dict[str, Any]:
    def strip(node: Any) -> Any:
        # Replace named definitions with references, then let the inliner define each once.
        if isinstance(node, list):
            return [strip(n) for n in node]
        if isinstance(node, dict):
            if node.get("type") in ("record", "enum", "fixed") and node is not schema:
                return node["name"]
            if node.get("type") in ("array", "map"):
                key = "items" if node["type"] == "array" else "values"
                return {**node, key: strip(node[key])}
            if isinstance(node.get("type"), (dict, list)):
                return {**node, "type": strip(node["type"])}
        return node

    top = {**schema, "fields": [{**f, "type": strip(f["type"])} for f in schema["fields"]]}
    named = {k: v for k, v in event.named_types.items() if k != schema["name"]}
    flat = {k: _flatten(v) for k, v in named.items()}
    return inline_references(top, flat)


def _flatten(definition: dict[str, Any]) -> dict[str, Any]:
    """A named type whose nested named types are references (the inliner expands them)."""
    if definition.get("type") != "record":
        return definition
    fields = []
    for f in definition["fields"]:
        t = f["type"]
        branches = t if isinstance(t, list) else [t]
        new = [b["name"] if isinstance(b, dict) and b.get("type") in ("record", "enum", "fixed") else b for b in branches]
        fields.append({**f, "type": new if isinstance(t, list) else new[0]})
    return {**definition, "fields": fields}


def _projector(
    event: EventSchema, selection: list[str], maskers: dict[str, Masker]
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    names = [f["name"] for f in event.schema["fields"] if f["name"] in selection]

    def project(record: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name in names:
            mask = maskers.get(name)
            out[name] = record.get(name) if mask is None else mask(record.get(name), record)
        return out

    return project


def build_route(topology: Topology, sub: Subscription, environ: dict[str, str] | None = None) -> Route:
    et = topology.event_type(sub.event_type)
    event = topology.schema_for(sub.event_type)
    selection = topology.selection(sub.name)
    treatments = topology.treatments(sub.name)
    nested = [path for path, t in treatments.items() if "." in path and t != "clear"]
    if nested:
        raise UnsupportedSubscription(
            f"subscription {sub.name!r}: masking nested personal fields ({', '.join(nested)}) is not supported; "
            "select the enclosing record only for departments entitled to it in clear"
        )
    key = department_hash_key(sub.department, environ) if any(t == "hash" for t in treatments.values()) else b""
    maskers = {
        path: masker(t, event.field(path), key)  # type: ignore[arg-type]
        for path, t in treatments.items()
        if t != "clear"
    }
    all_fields = [f["name"] for f in event.schema["fields"]]
    untouched = sub.filter is None and selection == all_fields and not maskers
    return Route(
        subscription=sub.name,
        department=sub.department,
        event_type=sub.event_type,
        topic=sub.topic,
        subject=sub.subject,
        compatibility=str(et.compatibility),
        partitions=et.partitions,
        schema=event.schema if untouched else derive_schema(event, selection, treatments),
        predicate=compile_filter(sub.filter, event) if sub.filter is not None else always,
        untouched=untouched,
        project=_projector(event, selection, maskers),
        # A key masked, dropped or not entitled: the output's key and ce_subject follow the field.
        masked_key=et.key in maskers or et.key not in selection,
        key_field=et.key,
    )


def build_routes(
    topology: Topology,
    environ: dict[str, str] | None = None,
    select: Callable[[Subscription], bool] | None = None,
) -> dict[str, list[Route]]:
    """Event type -> its routes, for every event type that has (selected) subscriptions."""
    routes: dict[str, list[Route]] = {}
    for sub in topology.subscriptions:
        if select is None or select(sub):
            routes.setdefault(sub.event_type, []).append(build_route(topology, sub, environ))
    return routes
