"""The schemas in ``schemas/``: shared named types in ``common/``, one folder per event
family, one ``.avsc`` file per event type (the file stem is the event type's name).

Each event schema is turned into a self-contained schema (shared types inlined at their
first use, referenced by full name after it), which is what the registry stores and what
any Confluent-compatible tool can read without schema references.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, get_args

import fastavro
from fastavro.schema import SchemaParseException, UnknownType

from bus.schemas.exceptions import SchemaFileError, UnknownEventType

COMMON_DIR = "common"

Classification = Literal["public", "internal", "personal", "sensitive"]
Mask = Literal["drop", "hash", "partial", "generalise"]
PERSONAL: frozenset[str] = frozenset({"personal", "sensitive"})
CLASSIFICATIONS: frozenset[str] = frozenset(get_args(Classification))
MASKS: frozenset[str] = frozenset(get_args(Mask))

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_NAMED = {"record", "enum", "fixed", "error"}


@dataclass(frozen=True)
class FieldInfo:
    """One field, top-level or nested (``path`` = ``location.district``)."""

    path: str
    type: Any  # the field's Avro type, self-contained
    doc: str | None
    classification: str = "internal"
    pii: str | None = None
    mask: str | None = None
    has_default: bool = False

    @property
    def personal(self) -> bool:
        return self.classification in PERSONAL

    @property
    def nullable(self) -> bool:
        return isinstance(self.type, list) and "null" in self.type

    @property
    def value_type(self) -> Any:
        """The type without its null branch (``["null", T]`` -> ``T``)."""
        if isinstance(self.type, list):
            rest = [t for t in self.type if t != "null"]
            return rest[0] if len(rest) == 1 else rest
        return self.type


@dataclass(frozen=True)
class EventSchema:
    """An event type's schema: its name, family, file and self-contained Avro schema."""

    name: str
    family: str
    path: Path
    schema: dict[str, Any]
    fields: dict[str, FieldInfo] = field(repr=False)
    named_types: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)

    @property
    def full_name(self) -> str:
        return self.schema["name"]

    @cached_property
    def parsed(self) -> Any:
        """fastavro's parsed form, for encoding and decoding. It keeps fastavro's "parsed"
        hint: without it fastavro parses the schema again for every record."""
        return fastavro.parse_schema(self.schema)

    def canonical_json(self) -> str:
        return schema_json(self.schema)

    def field(self, path: str) -> FieldInfo | None:
        """A top-level or nested field by dotted path, or None."""
        return self.fields.get(path)

    def personal_fields(self) -> list[FieldInfo]:
        return [f for f in self.fields.values() if f.personal]

    def resolve(self, avro_type: Any) -> Any:
        """A named-type reference (``city.common.District``) replaced by its definition."""
        if isinstance(avro_type, str) and avro_type in self.named_types:
            return self.named_types[avro_type]
        return avro_type


class SchemaCatalog:
    """All event schemas under one ``schemas/`` root."""

    def __init__(self, root: Path, events: dict[str, EventSchema], errors: list[SchemaFileError]) -> None:
        self.root = root
        self._events = events  # never changed after loading
        self._by_path: dict[str, EventSchema | None] = {}
        #: Files that could not be loaded (only with ``strict=False``; else the first is raised).
        self.errors = errors

    @classmethod
    def load(cls, root: Path | str, *, strict: bool = True) -> "SchemaCatalog":
        """Load every schema under ``root``. With ``strict=False`` a broken file is recorded in
        ``errors`` and left out, so that a validator can report every problem at once."""
        root = Path(root)
        if not root.is_dir():
            raise SchemaFileError(root, "schema folder not found; pass the folder that holds the .avsc files")
        errors: list[SchemaFileError] = []
        try:
            named = _load_common(root / COMMON_DIR)
        except SchemaFileError as exc:
            if strict:
                raise
            errors.append(exc)
            named = {}
        events: dict[str, EventSchema] = {}
        for path in sorted(root.glob("*/*.avsc")):
            if path.parent.name == COMMON_DIR:
                continue
            try:
                if path.stem in events:
                    raise SchemaFileError(
                        path, f"event type {path.stem!r} is also defined in {events[path.stem].path}"
                    )
                events[path.stem] = load_event_schema(path, named)
            except SchemaFileError as exc:
                if strict:
                    raise
                errors.append(exc)
        return cls(root, events, errors)

    def by_path(self, relative: str | Path) -> EventSchema | None:
        """The event schema loaded from ``root/relative``, or None. (Publishing asks once per
        record: paths are resolved, which costs system calls, once per path.)"""
        key = str(relative)
        if key not in self._by_path:
            target = (self.root / relative).resolve()
            self._by_path[key] = next((e for e in self._events.values() if e.path.resolve() == target), None)
        return self._by_path[key]

    @property
    def event_types(self) -> list[str]:
        return sorted(self._events)

    def __contains__(self, name: object) -> bool:
        return name in self._events

    def get(self, name: str) -> EventSchema:
        try:
            return self._events[name]
        except KeyError:
            raise UnknownEventType(name, list(self._events)) from None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._events.values())


def schema_json(schema: dict[str, Any]) -> str:
    """The one JSON form in which the bus writes schemas (what the registry stores)."""
    return json.dumps(schema, separators=(",", ":"), sort_keys=False)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SchemaFileError(path, f"line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaFileError(path, f"cannot read: {exc}") from exc


def _load_common(folder: Path) -> dict[str, dict[str, Any]]:
    """Parse the shared named types, in whatever order their references allow."""
    pending = {p: _read_json(p) for p in sorted(folder.glob("*.avsc"))} if folder.is_dir() else {}
    parsed_names: dict[str, Any] = {}
    definitions: dict[str, dict[str, Any]] = {}
    while pending:
        progressed = False
        for path, raw in list(pending.items()):
            try:
                fastavro.parse_schema(raw, named_schemas=parsed_names, _write_hint=False)
            except UnknownType:
                continue
            except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
                raise SchemaFileError(path, f"not a valid Avro schema: {exc}") from exc
            _collect_definitions(raw, raw.get("namespace"), definitions)
            del pending[path]
            progressed = True
        if not progressed:
            path, raw = next(iter(pending.items()))
            try:
                fastavro.parse_schema(raw, named_schemas=parsed_names, _write_hint=False)
            except UnknownType as exc:
                raise SchemaFileError(path, f"refers to unknown type {exc.name!r}; define it in {folder}") from exc
    return definitions


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect_definitions(schema: Any, namespace: str | None, out: dict[str, dict[str, Any]]) -> None:
    """Record every named type defined in ``schema`` under its full name, names made full."""
    if isinstance(schema, list):
        for branch in schema:
            _collect_definitions(branch, namespace, out)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in _NAMED:
            ns = schema.get("namespace", namespace)
            full = _full_name(schema["name"], ns)
            ns = full.rpartition(".")[0] or None
            out[full] = _qualify(schema, ns)
            for f in schema.get("fields", []):
                _collect_definitions(f["type"], ns, out)
        elif kind in ("array", "map"):
            _collect_definitions(schema.get("items") or schema.get("values"), namespace, out)
        elif isinstance(kind, (dict, list)):
            _collect_definitions(kind, namespace, out)


def _qualify(schema: Any, namespace: str | None) -> Any:
    """A copy of ``schema`` with every name and reference written in full (no namespaces)."""
    if isinstance(schema, str):
        return schema if schema in _PRIMITIVES else _full_name(schema, namespace)
    if isinstance(schema, list):
        return [_qualify(b, namespace) for b in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    out = {k: v for k, v in schema.items() if k != "namespace"}
    if kind in _NAMED:
        full = _full_name(schema["name"], schema.get("namespace", namespace))
        out["name"] = full
        inner_ns = full.rpartition(".")[0] or None
        if "fields" in schema:
            out["fields"] = [{**f, "type": _qualify(f["type"], inner_ns)} for f in schema["fields"]]
    elif kind == "array":
        out["items"] = _qualify(schema["items"], namespace)
    elif kind == "map":
        out["values"] = _qualify(schema["values"], namespace)
    elif isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in _PRIMITIVES):
        out["type"] = _qualify(kind, namespace)
    return out


def inline_references(schema: Any, shared: dict[str, dict[str, Any]], seen: set[str] | None = None) -> Any:
    """Replace references to shared named types by their definition at first use.

    ``schema`` must be qualified (full names). Later uses stay references, so the result
    defines every name exactly once and is valid for every Avro implementation.
    """
    seen = set() if seen is None else seen
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema
        if schema in seen:
            return schema
        if schema in shared:
            seen.add(schema)
            return inline_references(shared[schema], shared, seen)
        return schema
    if isinstance(schema, list):
        return [inline_references(b, shared, seen) for b in schema]
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    out = dict(schema)
    if kind in _NAMED:
        seen.add(schema["name"])
        if "fields" in schema:
            out["fields"] = [{**f, "type": inline_references(f["type"], shared, seen)} for f in schema["fields"]]
    elif kind == "array":
        out["items"] = inline_references(schema["items"], shared, seen)
    elif kind == "map":
        out["values"] = inline_references(schema["values"], shared, seen)
    elif isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in _PRIMITIVES):
        out["type"] = inline_references(kind, shared, seen)
    return out


def load_event_schema(path: Path, shared: dict[str, dict[str, Any]]) -> EventSchema:
    raw = _read_json(path)
    if not isinstance(raw, dict) or raw.get("type") != "record":
        raise SchemaFileError(path, "an event schema must be an Avro record")
    qualified = _qualify(raw, raw.get("namespace"))
    if "." not in qualified["name"]:
        raise SchemaFileError(path, "give the record a namespace (e.g. \"namespace\": \"city.surveillance\")")
    schema = inline_references(qualified, shared)
    try:
        fastavro.parse_schema(schema, _write_hint=False)
    except UnknownType as exc:
        raise SchemaFileError(
            path, f"refers to unknown type {exc.name!r}; define it in this file or in {COMMON_DIR}/"
        ) from exc
    except (SchemaParseException, ValueError, TypeError, KeyError) as exc:
        raise SchemaFileError(path, f"not a valid Avro schema: {exc}") from exc
    fields: dict[str, FieldInfo] = {}
    named_types: dict[str, dict[str, Any]] = {}
    _index_fields(path, schema, "", named_types, fields)
    return EventSchema(
        name=path.stem, family=path.parent.name, path=path, schema=schema, fields=fields, named_types=named_types
    )


def _index_fields(
    path: Path,
    record: dict[str, Any],
    prefix: str,
    named: dict[str, Any],
    out: dict[str, FieldInfo],
) -> None:
    named[record["name"]] = record
    if not record.get("doc"):
        raise SchemaFileError(path, f"record {record['name']} has no doc; document every type and field")
    for f in record["fields"]:
        dotted = f"{prefix}{f['name']}"
        if not f.get("doc"):
            raise SchemaFileError(path, f"field {dotted!r} has no doc; document every field")
        classification = f.get("classification", "internal")
        if classification not in CLASSIFICATIONS:
            raise SchemaFileError(
                path, f"field {dotted!r}: classification {classification!r} is not one of {sorted(CLASSIFICATIONS)}"
            )
        info = FieldInfo(
            path=dotted,
            type=f["type"],
            doc=f.get("doc"),
            classification=classification,
            pii=f.get("pii"),
            mask=f.get("mask"),
            has_default="default" in f,
        )
        if info.personal and (not info.pii or info.mask not in MASKS):
            raise SchemaFileError(
                path,
                f"personal field {dotted!r} needs \"pii\" (what it is, e.g. national_id) and \"mask\" "
                f"(its default treatment, one of {sorted(MASKS)})",
            )
        if not info.personal and (info.pii or info.mask):
            raise SchemaFileError(
                path, f"field {dotted!r} has pii/mask but is not classified personal or sensitive"
            )
        out[dotted] = info
        for branch in f["type"] if isinstance(f["type"], list) else [f["type"]]:
            target = named.get(branch) if isinstance(branch, str) else branch
            if isinstance(target, dict) and target.get("type") == "record":
                _index_fields(path, target, dotted + ".", named, out)
            elif isinstance(target, dict) and target.get("type") in _NAMED:
                named[target["name"]] = target
