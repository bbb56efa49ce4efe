"""Checking a topology file completely: YAML, structure, names, schemas, personal data.

``validate_topology(path)`` returns every problem at once, sorted by position; it never
stops at the first. Structural problems come from the pydantic models (see
:mod:`bus.topology.loader`); this module adds what needs the whole file and the schemas:
unknown or duplicate names, schema files, key fields, filter fields and values, field
selections, entitlements and masks, connector ownership, installed connector types.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bus.errors import BusError
from bus.schemas.catalog import EventSchema, FieldInfo, SchemaCatalog
from bus.schemas.records import is_uuid
from bus.topology.exceptions import Problem, TopologyInvalid, suggest
from bus.topology.filters import AllOf, AnyOf, Condition, Filter, Not, Operator, is_rfc3339
from bus.topology.linkage import ALARM_TYPE, CASE_TYPE, LinkageRule, linkage_problems, plain_rule_names
from bus.topology.loader import Document, Loc, Parsed, parse_structure, read_document, salvage
from bus.topology.models import (
    VISIBILITY,
    Concrete,
    Connector,
    Department,
    EventType,
    Subscription,
    Topology,
    narrows,
    resolve,
)

_ORDERED: frozenset[str] = frozenset({"gt", "gte", "lt", "lte"})
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DUPLICATES = (("departments", "department"), ("event_types", "event type"),
               ("subscriptions", "subscription"), ("connectors", "connector"))


def load_topology(path: Path | str, connectors: ConnectorChecks | None = None) -> Topology:
    """The topology in ``path``, validated with its schemas (and, with ``connectors``, its
    connectors' settings); the catalog is attached (``topology.catalog``,
    ``topology.schema_for``). Raises :class:`TopologyInvalid` carrying every problem."""
    document = read_document(path)
    topology, problems = check_document(document, connectors)
    if problems or topology is None:
        raise TopologyInvalid(str(path), problems)
    return topology


class ConnectorChecks(Protocol):
    """The connector kit's checks of a connector entry, which this package cannot make itself
    (the kit builds on it): :data:`bus.connect.config.KIT_CHECKS`."""

    def installed_types(self) -> list[str]:
        """The connector types installed here; raises a BusError when that cannot be told."""
        ...

    def config_problems(self, connector_type: str, config: Mapping[str, Any]) -> list[tuple[Loc, str]]:
        """The problems of one entry's ``config`` (``loc`` relative to the entry); none for a type
        not installed."""
        ...


def validate_topology(path: Path | str, connectors: ConnectorChecks | None = None) -> list[Problem]:
    """Every problem of the topology file ``path`` and its schemas, sorted by position; with
    ``connectors``, of its connectors' types and settings too (what `bus validate` prints)."""
    return check_topology(path, connectors)[1]


def check_topology(path: Path | str, connectors: ConnectorChecks | None = None) -> tuple[Topology | None, list[Problem]]:
    """The topology (with its catalog attached, when the structure is valid) and every problem;
    with ``connectors``, a connector type that is not installed here is one."""
    try:
        document = read_document(path)
    except TopologyInvalid as exc:
        return None, exc.problems
    return check_document(document, connectors, connector_types=connectors is not None)


def check_document(
    document: Document, connectors: ConnectorChecks | None = None, *, connector_types: bool = False
) -> tuple[Topology | None, list[Problem]]:
    """:func:`check_topology` for a file already read. ``connectors``: check each connector's
    settings against its type's config model. Unless ``connector_types`` too, a connector type
    that is not installed here is not a problem: :func:`bus.topology.loader.load_topology`
    loads the city for the router, the processors and the page, which run no connector; the
    host that runs one refuses a type it does not have (`bus connector run`, `bus up`)."""
    parsed = parse_structure(document)
    checker = _Checker(parsed, connectors, connector_types=connector_types)
    found = checker.run()
    problems = sorted(set(document.problems + parsed.problems + found))
    topology = parsed.topology
    if topology is not None and checker.catalog is not None:
        topology.attach(checker.catalog, document.path)
    return topology, problems


class _Checker:
    """The semantic checks of one parsed file; ``run()`` returns what they found."""

    def __init__(self, parsed: Parsed, connectors: ConnectorChecks | None, *, connector_types: bool = True) -> None:
        self.parsed = parsed
        self.connectors = connectors
        self.check_types = connector_types and connectors is not None
        self.document = parsed.document
        self.problems: list[Problem] = []
        self.catalog: SchemaCatalog | None = None
        self.schemas: dict[str, EventSchema] = {}
        self.names = {section: {n for _, n in parsed.names(section)} for section, _ in _DUPLICATES}
        self.departments: dict[str, Department] = _first_by_name(parsed.items["departments"])
        self.event_types: dict[str, EventType] = _first_by_name(parsed.items["event_types"])
        self.subscriptions: dict[str, Subscription] = _first_by_name(parsed.items["subscriptions"])
        self.connector_types: list[str] | None = None  # installed ones, read once when a connector needs them

    def run(self) -> list[Problem]:
        self._duplicates()
        self._load_catalog()
        for i, event_type in self.parsed.items["event_types"]:
            self._event_type(i, event_type)
        for i, department in self.parsed.items["departments"]:
            self._entitlements(i, department)
        for i, subscription in self.parsed.items["subscriptions"]:
            self._subscription(i, subscription)
        for i, connector in self.parsed.items["connectors"]:
            self._connector(i, connector)
        self._linkage()
        return self.problems

    # -- helpers -------------------------------------------------------------------------

    def add(self, loc: Loc, message: str, *, at_key: bool = False) -> None:
        self.problems.append(self.document.problem(loc, message, at_key=at_key))

    def known(self, loc: Loc, kind: str, name: str, section: str) -> bool:
        """True if ``name`` is defined in ``section``; else a problem with a suggestion."""
        if name in self.names[section]:
            return True
        self.add(loc, f"unknown {kind} {name!r}; {suggest(name, self.names[section], kind)}")
        return False

    # -- names and schemas ---------------------------------------------------------------

    def _duplicates(self) -> None:
        for section, kind in _DUPLICATES:
            first: dict[str, int] = {}
            for i, name in self.parsed.names(section):
                if name not in first:
                    first[name] = i
                    continue
                line = self.document.position((section, first[name], "name"))[0]
                self.add((section, i, "name"),
                         f"duplicate {kind} name {name!r}: already defined at line {line}; give each {kind} "
                         "a unique name")

    def _schema_root(self) -> Path:
        root = Path(self.parsed.schemas_dir)
        return root if root.is_absolute() else self.document.path.parent / root

    def _load_catalog(self) -> None:
        root = self._schema_root()
        if not root.is_dir():
            self.add(("schemas_dir",), f"schema folder not found: {root}; set schemas_dir to the folder that "
                                       "holds the .avsc files (relative to this file)")
            return
        self.catalog = SchemaCatalog.load(root, strict=False)
        used = {(root / et.schema_file).resolve() for _, et in self.parsed.items["event_types"]}
        for error in self.catalog.errors:
            if error.path.resolve() not in used:
                self.add(("schemas_dir",), f"a schema file under schemas_dir does not load: {error}")

    def _event_type(self, i: int, et: EventType) -> None:
        self.known(("event_types", i, "owner"), "department", et.owner, "departments")
        schema = self._schema(i, et)
        if schema is None:
            return
        if schema.name != et.name:
            self.add(("event_types", i, "name"),
                     f"event type {et.name!r} uses {et.schema_file}, which defines event type {schema.name!r} "
                     f"(the file's name); name the event type {schema.name!r} or point schema: at "
                     f"<family>/{et.name}.avsc")
        self.schemas.setdefault(et.name, schema)
        self._key(i, et, schema)

    def _schema(self, i: int, et: EventType) -> EventSchema | None:
        if self.catalog is None:
            return None
        loc = ("event_types", i, "schema")
        path = self.catalog.root / et.schema_file
        if not path.is_file():
            known = sorted(str(e.path.relative_to(self.catalog.root)) for e in self.catalog)
            self.add(loc, f"schema file not found: looked for {path}; write a path relative to schemas_dir "
                          f"({self.catalog.root}): {suggest(et.schema_file, known, 'schema file')}")
            return None
        errors = [e for e in self.catalog.errors if e.path.resolve() == path.resolve()]
        for error in errors:
            self.add(loc, f"schema file {et.schema_file} does not load: {error}")
        schema = self.catalog.by_path(et.schema_file)
        if schema is None and not errors:
            self.add(loc, f"{et.schema_file} is not an event schema; event schemas live one folder deep, as "
                          "<family>/<event_type>.avsc (common/ holds shared types)")
        return schema

    def _key(self, i: int, et: EventType, schema: EventSchema) -> None:
        loc = ("event_types", i, "key")
        top = _top_level(schema)
        candidates = [f.path for f in map(schema.field, top) if f and not f.nullable and _kind(schema, f).scalar]
        info = schema.field(et.key)
        if "." in et.key:
            self.add(loc, f"key {et.key!r} is a nested field; the key must be a top-level field that every "
                          f"record has: write one of {', '.join(candidates)}")
        elif info is None:
            self.add(loc, f"key {et.key!r} is not a field of {schema.name}; {suggest(et.key, candidates, 'field')}")
        elif info.nullable:
            self.add(loc, f"key field {et.key!r} is nullable, and records without a key lose their order; "
                          f"choose a field every record has: {', '.join(candidates)}")
        elif not _kind(schema, info).scalar:
            self.add(loc, f"key field {et.key!r} is {_kind(schema, info).describe()}; the key must be a string, "
                          f"number or enum field: {', '.join(candidates)}")

    # -- departments ---------------------------------------------------------------------

    def _entitlements(self, i: int, department: Department) -> None:
        for et_name, fields in department.entitlements.items():
            loc = ("departments", i, "entitlements", et_name)
            if not self.known(loc, "event type", et_name, "event_types"):
                continue
            schema = self.schemas.get(et_name)
            if schema is None:
                continue
            personal = [f.path for f in schema.personal_fields()]
            for name in fields:
                info = schema.field(name)
                if info is None:
                    self.add((*loc, name), f"{name!r} is not a field of {et_name}; "
                                           f"{suggest(name, personal, 'personal field')}", at_key=True)
                elif not info.personal:
                    self.add((*loc, name),
                             f"{name!r} is not a personal field of {et_name} (classification "
                             f"{info.classification!r}), so every subscriber may see it; remove it: entitlements "
                             f"name personal fields only ({', '.join(personal)})", at_key=True)

    # -- subscriptions -------------------------------------------------------------------

    def _subscription(self, i: int, sub: Subscription) -> None:
        base = ("subscriptions", i)
        department_known = self.known((*base, "department"), "department", sub.department, "departments")
        type_known = self.known((*base, "event_type"), "event type", sub.event_type, "event_types")
        schema = self.schemas.get(sub.event_type) if type_known else None
        if schema is None:
            return
        scope = _Scope(sub.event_type, schema, self.departments.get(sub.department) if department_known else None)
        if sub.filter is not None:
            self._filter((*base, "filter"), sub.filter, scope)
        if sub.fields is not None:
            self._fields(base, sub, scope)
        for name, mask in sub.masks.items():
            self._mask((*base, "masks", name), sub, name, mask, scope)

    def _filter(self, loc: Loc, node: Filter, scope: _Scope) -> None:
        if isinstance(node, Condition):
            self._condition(loc, node, scope)
        elif isinstance(node, AllOf):
            for j, child in enumerate(node.all_of):
                self._filter((*loc, "and", j), child, scope)
        elif isinstance(node, AnyOf):
            for j, child in enumerate(node.any_of):
                self._filter((*loc, "or", j), child, scope)
        elif isinstance(node, Not):
            self._filter((*loc, "not"), node.negated, scope)

    def _condition(self, loc: Loc, cond: Condition, scope: _Scope) -> None:
        info = scope.schema.field(cond.field)
        if info is None:
            known = list(scope.schema.fields)
            self.add((*loc, "field"), f"filter field {cond.field!r} is not a field of {scope.event_type}; "
                                      f"{suggest(cond.field, known, 'field')}")
            return
        if info.personal and scope.department is not None:
            ceiling = scope.ceiling(info)
            if ceiling is None:
                self.add((*loc, "field"), scope.unentitled(cond.field, "the filter"))
                return
            if ceiling != "clear" and cond.op != "exists":
                self.add((*loc, "field"),
                         f"the filter compares personal field {cond.field!r}, which department "
                         f"{scope.department.name!r} may only see as {ceiling!r}: comparing it would reveal what "
                         "the mask hides; use exists, or filter on other fields")
                return
        problem = value_problem(_kind(scope.schema, info), cond.field, cond.op, cond.value)
        if problem:
            self.add((*loc, cond.op), f"filter on {cond.field!r}: {problem}")

    def _fields(self, base: Loc, sub: Subscription, scope: _Scope) -> None:
        assert sub.fields is not None
        top = _top_level(scope.schema)
        seen: set[str] = set()
        for j, name in enumerate(sub.fields):
            loc = (*base, "fields", j)
            if name in seen:
                self.add(loc, f"{name!r} is listed twice in fields; list it once")
            elif "." in name:
                self.add(loc, f"fields selects top-level fields; {name!r} is nested: write {name.split('.')[0]!r}")
            elif name not in top:
                self.add(loc, f"{name!r} is not a field of {scope.event_type}; {suggest(name, top, 'field')}")
            elif self._unentitled_field(scope, name):
                self.add(loc, scope.unentitled(name, "fields"))
            seen.add(name)
        et = self.event_types.get(sub.event_type)
        if et is not None and et.key in top and et.key not in sub.fields:
            self.add((*base, "fields"),
                     f"fields leaves out {sub.event_type}'s key field {et.key!r}; add it: subscribers need the "
                     f"key to keep each {et.key}'s records in order")

    @staticmethod
    def _unentitled_field(scope: _Scope, name: str) -> bool:
        info = scope.schema.field(name)
        return scope.department is not None and info is not None and info.personal and scope.ceiling(info) is None

    def _mask(self, loc: Loc, sub: Subscription, name: str, mask: str, scope: _Scope) -> None:
        info = scope.schema.field(name)
        personal = [f.path for f in scope.schema.personal_fields()]
        if info is None:
            self.add(loc, f"masks names {name!r}, which is not a field of {scope.event_type}; "
                          f"{suggest(name, personal, 'personal field')}", at_key=True)
            return
        if not info.personal:
            self.add(loc, f"masks names {name!r}, which is not a personal field of {scope.event_type}; masks apply "
                          f"to personal fields only ({', '.join(personal)}): remove it", at_key=True)
            return
        if scope.department is None:
            return
        ceiling = scope.ceiling(info)
        if ceiling is None:
            self.add(loc, scope.unentitled(name, "masks"), at_key=True)
            return
        if sub.fields is not None and name.split(".")[0] not in sub.fields:
            self.add(loc, f"masks names {name!r}, which fields does not select; add it to fields or remove the mask",
                     at_key=True)
        wanted = resolve(mask, info.mask)  # type: ignore[arg-type]
        if wanted is not None and not narrows(wanted, ceiling):
            lower = sorted((t for t, level in VISIBILITY.items() if level < VISIBILITY[ceiling]),
                           key=lambda t: -VISIBILITY[t])
            allowed = [ceiling, *lower]
            shown = f"{mask!r} (the schema's mask {wanted!r})" if mask == "masked" else repr(mask)
            self.add(loc, f"mask {shown} would show more of {scope.event_type}.{name} than department "
                          f"{scope.department.name!r} may see ({scope.describe_ceiling(info)}); write "
                          f"{' or '.join(repr(t) for t in allowed)}")

    # -- connectors ----------------------------------------------------------------------

    def _connector(self, i: int, connector: Connector) -> None:
        base = ("connectors", i)
        department_known = self.known((*base, "department"), "department", connector.department, "departments")
        for j, name in enumerate(connector.publishes or []):
            loc = (*base, "publishes", j)
            if not self.known(loc, "event type", name, "event_types"):
                continue
            et = self.event_types.get(name)
            if et is not None and department_known and et.owner != connector.department:
                self.add(loc, f"department {connector.department!r} would be a publisher that does not own {name}: "
                              f"its owner is {et.owner!r}, the only department that may publish it; attach this "
                              f"connector to {et.owner!r} or remove {name} from publishes")
        if connector.subscription is not None:
            self._sink(base, connector, department_known)
        if self.connectors is None or (self.check_types and not self._type_installed((*base, "type"), connector.type)):
            return
        # The connector's own settings, against its config model (secrets are resolved at
        # start, not here; a type not installed is not checked).
        for loc, message in self.connectors.config_problems(connector.type, connector.config):
            self.add((*base, *loc), message, at_key=message.startswith("unknown key"))

    def _type_installed(self, loc: Loc, name: str) -> bool:
        """True if connector type ``name`` is installed here; else a problem at ``loc`` naming
        the installed types and the closest one (its config is then not checked)."""
        assert self.connectors is not None
        if self.connector_types is None:
            try:
                self.connector_types = sorted(self.connectors.installed_types())
            except BusError as exc:  # two packages declare one name: nothing can be checked
                self.add(loc, str(exc))
                return False
        if name in self.connector_types:
            return True
        self.add(loc, unknown_type_message(name, self.connector_types))
        return False

    # -- linkage rules (bus.topology.linkage) ----------------------------------------------

    def _linkage(self) -> None:
        plain = self.parsed.plain.get("linkage")
        if self.parsed.topology is not None:
            rules = list(enumerate(self.parsed.topology.linkage))
        else:
            salvaged = ((i, salvage(v, LinkageRule)) for i, v in enumerate(plain if isinstance(plain, list) else []))
            rules = [(i, rule) for i, rule in salvaged if isinstance(rule, LinkageRule)]
        case_schema = self.schemas.get(CASE_TYPE)
        category = case_schema.field("category") if case_schema else None
        categories = _kind(case_schema, category).symbols if case_schema and category else None
        for loc, message, at_key in linkage_problems(rules, plain_rule_names(plain), self.names["departments"],
                                                     self.names["event_types"], categories):
            self.add(loc, message, at_key=at_key)
        alarm_schema = self.schemas.get(ALARM_TYPE)
        if alarm_schema is not None:  # each match is a filter on camera_alarm, checked like a subscription's
            for i, rule in rules:
                self._filter(("linkage", i, "match"), rule.match, _Scope(ALARM_TYPE, alarm_schema, None))

    def _sink(self, base: Loc, connector: Connector, department_known: bool) -> None:
        loc = (*base, "subscription")
        assert connector.subscription is not None
        if not self.known(loc, "subscription", connector.subscription, "subscriptions"):
            return
        sub = self.subscriptions.get(connector.subscription)
        if sub is None or not department_known or sub.department == connector.department:
            return
        own = sorted(s.name for s in self.subscriptions.values() if s.department == connector.department)
        self.add(loc, f"subscription {sub.name!r} belongs to department {sub.department!r}, not "
                      f"{connector.department!r}; a sink delivers its own department's subscriptions only: set "
                      f"department: {sub.department}, or use a subscription of department {connector.department!r} "
                      f"({', '.join(own) or 'it has none yet'})")


def unknown_type_message(name: str, installed: list[str]) -> str:
    """Why connector type ``name`` cannot run here: the installed types and the closest one."""
    how = ("a connector type is an installed package that declares an entry point in the group 'bus.connectors'; "
           "`bus connector list` shows them")
    if not installed:
        return f"connector type {name!r} is not installed, and no connector type is; {how}"
    close = difflib.get_close_matches(name, installed, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"connector type {name!r} is not installed{hint}; the installed types are: {', '.join(installed)} ({how})"


def _first_by_name(items: list[tuple[int, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _, item in items:
        out.setdefault(item.name, item)
    return out


def _top_level(schema: EventSchema) -> list[str]:
    return [f["name"] for f in schema.schema["fields"]]


@dataclass(frozen=True)
class _Scope:
    """What a subscription's checks need: its event type, schema and department."""

    event_type: str
    schema: EventSchema
    department: Department | None

    def ceiling(self, info: FieldInfo) -> Concrete | None:
        assert self.department is not None
        return resolve(self.department.entitlement(self.event_type, info.path), info.mask)

    def describe_ceiling(self, info: FieldInfo) -> str:
        assert self.department is not None
        raw = self.department.entitlement(self.event_type, info.path)
        resolved = self.ceiling(info)
        return f"its entitlement is 'masked' = {resolved!r}" if raw == "masked" else f"its entitlement is {raw!r}"

    def unentitled(self, name: str, where: str) -> str:
        assert self.department is not None
        dept = self.department.name
        return (f"department {dept!r} has no entitlement to personal field {self.event_type}.{name}, so it is never "
                f"delivered; remove it from {where}, or add `{name}: <treatment>` under entitlements: "
                f"{self.event_type}: of department {dept!r}")


# -- filter values against Avro types ---------------------------------------------------


@dataclass(frozen=True)
class FieldKind:
    """What a field's Avro type means for a filter: ``name`` is one of string, uuid, enum,
    int, number, boolean, timestamp, date, record, array, map, fixed, bytes, union."""

    name: str
    symbols: tuple[str, ...] = ()
    type_name: str = ""
    fields: tuple[str, ...] = ()

    @property
    def scalar(self) -> bool:
        return self.name in ("string", "uuid", "enum", "int", "number", "boolean", "timestamp", "date")

    def describe(self) -> str:
        if self.name == "enum":
            return f"an enum ({self.type_name})"
        if self.name == "record":
            return f"a record ({self.type_name})"
        return {"int": "a whole number", "number": "a number", "timestamp": "a timestamp", "date": "a date",
                "boolean": "a boolean", "uuid": "a UUID string", "string": "a string"}.get(self.name, f"a {self.name}")


_PRIMITIVE_KINDS = {"string": "string", "int": "int", "long": "int", "float": "number", "double": "number",
                    "boolean": "boolean", "bytes": "bytes", "null": "null"}
_LOGICAL_KINDS = {"uuid": "uuid", "date": "date", "timestamp-millis": "timestamp", "timestamp-micros": "timestamp",
                  "local-timestamp-millis": "timestamp", "local-timestamp-micros": "timestamp"}


def _kind(schema: EventSchema, info: FieldInfo) -> FieldKind:
    return kind_of(schema, info.value_type)


def kind_of(schema: EventSchema, avro_type: Any) -> FieldKind:
    """The filter kind of an Avro type (named references resolved through ``schema``)."""
    if isinstance(avro_type, list):
        return FieldKind("union")
    if isinstance(avro_type, str):
        if avro_type in _PRIMITIVE_KINDS:
            return FieldKind(_PRIMITIVE_KINDS[avro_type])
        resolved = schema.resolve(avro_type)
        return kind_of(schema, resolved) if resolved is not avro_type else FieldKind("unknown", type_name=avro_type)
    kind = avro_type.get("type")
    if kind == "enum":
        return FieldKind("enum", tuple(avro_type["symbols"]), avro_type["name"].rpartition(".")[2])
    if kind == "record":
        names = tuple(f["name"] for f in avro_type["fields"])
        return FieldKind("record", type_name=avro_type["name"].rpartition(".")[2], fields=names)
    if kind in ("array", "map", "fixed"):
        return FieldKind(kind)
    logical = avro_type.get("logicalType")
    if logical in _LOGICAL_KINDS:
        return FieldKind(_LOGICAL_KINDS[logical])
    return kind_of(schema, kind)


def value_problem(kind: FieldKind, path: str, op: Operator, value: Any) -> str | None:
    """Why ``{field: path, op: value}`` cannot work on a field of ``kind``, or None."""
    if op == "exists":
        return None
    if kind.name == "record":
        inner = ", ".join(f"{path}.{f}" for f in kind.fields)
        return f"{path} is {kind.describe()} and cannot be compared; compare one of its fields ({inner}) or use exists"
    if not kind.scalar:
        return f"{path} is {kind.describe()} and cannot be compared; use exists"
    if op == "prefix" and kind.name not in ("string", "uuid"):
        return f"prefix works on string fields only, and {path} is {kind.describe()}; use eq or in"
    if op in _ORDERED and kind.name in ("enum", "boolean"):
        return f"{op} does not apply to {kind.describe()}; use eq, ne, in or not_in"
    if op in ("in", "not_in"):
        if not value:
            return f"{op} needs at least one value; write {op}: [value, ...]"
        problems = [p for p in (value_mismatch(kind, v) for v in value) if p]
        return f"{op}: {problems[0]}" if problems else None
    if op == "prefix":
        return None
    return value_mismatch(kind, value)


def value_mismatch(kind: FieldKind, value: Any) -> str | None:
    """Why ``value`` is not a value of a scalar ``kind`` (written as in YAML), or None."""
    got = _describe(value)
    if value is None:
        return "null cannot be compared; write exists: false to match records without a value"
    if kind.name == "enum":
        if isinstance(value, str) and value in kind.symbols:
            return None
        close = suggest(str(value), kind.symbols, "symbol")
        hint = f"{close} " if close.startswith("did you mean") else ""
        return f"{got} is not a symbol of {kind.type_name}; {hint}write one of: {', '.join(kind.symbols)}"
    check, expected = _VALUE_CHECKS[kind.name]
    return None if check(value) else f"expected {expected}, got {got}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or not _DATE.match(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


_VALUE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "a string (quote it)"),
    "uuid": (is_uuid, "a UUID string like '6f1c2f3e-1111-4a4a-9b9b-123456789abc'"),
    "int": (_is_int, "a whole number like 5"),
    "number": (_is_number, "a number like 0.8"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "timestamp": (is_rfc3339, "an RFC 3339 time with an offset like '2026-01-01T08:00:00+08:00'"),
    "date": (_is_date, "a date YYYY-MM-DD like '2026-01-01'"),
}


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return repr(value)
