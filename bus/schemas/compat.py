"""Schema compatibility, following the Avro specification's schema resolution rules.

Every verdict (can this reader read what that writer wrote?) comes from Apache Avro's
reference checker, ``avro.compatibility.ReaderWriterCompatibilityChecker``. This module
only composes the registry modes from it (which versions, which direction) and, when a
pair is incompatible, walks the two schemas to say *where* and *why* in words a schema
author can act on. The walk asks the checker again at every step and never decides a
rule itself.

Terms: the *new* schema is the one being registered; *previous* schemas are the ones
already registered, oldest first. ``BACKWARD`` means the new schema, as reader, reads
data written with the previous one (consumers upgrade first); ``FORWARD`` the reverse.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, TypeAlias

import avro.errors
import avro.schema
from avro.compatibility import (
    ReaderWriterCompatibilityChecker,
    SchemaCompatibilityType,
    SchemaIncompatibilityType,
    check_fixed_size,
    check_reader_enum_contains_writer_enum,
    check_schema_names,
    lookup_writer_field,
)
from avro.schema import (
    ArraySchema,
    EnumSchema,
    FixedSchema,
    MapSchema,
    NamedSchema,
    RecordSchema,
    Schema,
    UnionSchema,
)

from bus.errors import BusError

SchemaLike: TypeAlias = str | dict[str, Any] | list[Any]
Direction: TypeAlias = Literal["new reads old", "old reads new"]

NEW_READS_OLD: Direction = "new reads old"
OLD_READS_NEW: Direction = "old reads new"


class CompatibilityMode(StrEnum):
    """The Confluent Schema Registry compatibility levels."""

    BACKWARD = "BACKWARD"
    BACKWARD_TRANSITIVE = "BACKWARD_TRANSITIVE"
    FORWARD = "FORWARD"
    FORWARD_TRANSITIVE = "FORWARD_TRANSITIVE"
    FULL = "FULL"
    FULL_TRANSITIVE = "FULL_TRANSITIVE"
    NONE = "NONE"

    @property
    def transitive(self) -> bool:
        return self.value.endswith("_TRANSITIVE")

    @property
    def directions(self) -> tuple[Direction, ...]:
        if self is CompatibilityMode.NONE:
            return ()
        if self.value.startswith("BACKWARD"):
            return (NEW_READS_OLD,)
        if self.value.startswith("FORWARD"):
            return (OLD_READS_NEW,)
        return (NEW_READS_OLD, OLD_READS_NEW)

    def non_transitive(self) -> "CompatibilityMode":
        """The same directions against one version (for a check against a named version)."""
        return CompatibilityMode(self.value.removesuffix("_TRANSITIVE"))

    @classmethod
    def parse(cls, value: str) -> "CompatibilityMode":
        """``"backward"`` -> ``BACKWARD``; ValueError naming the allowed levels otherwise."""
        try:
            return cls(value.strip().upper())
        except (ValueError, AttributeError):
            allowed = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown compatibility level {value!r}; use one of {allowed}") from None


class InvalidSchema(BusError):
    """A schema that is not valid Avro (the parser's complaint is in the message)."""


@dataclass(frozen=True)
class Incompatibility:
    """One reason why the new schema cannot be used together with a previous version.

    ``location`` is a path into the *reader's* schema (the new schema for
    ``new reads old``, version ``version`` for ``old reads new``), like Avro's and
    Confluent's own: ``/fields/3/type``, ``/fields/1/type/symbols``.
    """

    version: int
    direction: Direction
    location: str
    kind: str
    message: str
    field: str | None = None

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------------------- parsing


def parse_schema(schema: SchemaLike | Schema) -> Schema:
    """An Avro schema object, or InvalidSchema saying what the parser rejected."""
    if isinstance(schema, Schema):
        return schema
    if isinstance(schema, str):
        return _parse_text(schema)
    try:
        text = json.dumps(schema)
    except (TypeError, ValueError) as exc:
        raise InvalidSchema(f"the schema is not JSON-serialisable: {exc}") from exc
    return _parse_text(text)


@functools.lru_cache(maxsize=512)
def _parse_text(text: str) -> Schema:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        hint = " (a primitive type needs quotes: '\"string\"')" if text.strip().isidentifier() else ""
        raise InvalidSchema(f"the schema is not valid JSON: {exc}{hint}") from exc
    try:
        return avro.schema.parse(text)
    except (avro.errors.AvroException, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise InvalidSchema(f"the schema is not valid Avro: {exc}") from exc


# ---------------------------------------------------------------------- composing modes


def check_compatibility(
    new: SchemaLike | Schema,
    previous: Sequence[SchemaLike | Schema],
    mode: CompatibilityMode | str,
    *,
    versions: Sequence[int] | None = None,
) -> list[Incompatibility]:
    """Every incompatibility of ``new`` with ``previous`` (oldest first) under ``mode``.

    Non-transitive modes compare with the latest previous schema only; transitive ones
    with all of them. ``versions`` names the previous schemas' version numbers (default
    1..n). An empty list means compatible. Raises InvalidSchema for an unparsable schema.
    """
    mode = mode if isinstance(mode, CompatibilityMode) else CompatibilityMode.parse(mode)
    numbers = list(versions) if versions is not None else list(range(1, len(previous) + 1))
    if len(numbers) != len(previous):
        raise ValueError("versions must name each previous schema once")
    if mode is CompatibilityMode.NONE or not previous:
        return []
    new_schema = parse_schema(new)
    pairs = list(zip(numbers, previous))
    against = pairs if mode.transitive else pairs[-1:]
    found: list[Incompatibility] = []
    for number, old in against:
        old_schema = parse_schema(old)
        for direction in mode.directions:
            found.extend(_check_pair(new_schema, old_schema, number, direction))
    return found


def is_compatible(
    new: SchemaLike | Schema, previous: Sequence[SchemaLike | Schema], mode: CompatibilityMode | str
) -> bool:
    return not check_compatibility(new, previous, mode)


def _check_pair(new: Schema, old: Schema, version: int, direction: Direction) -> list[Incompatibility]:
    reader, writer = (new, old) if direction == NEW_READS_OLD else (old, new)
    checker = ReaderWriterCompatibilityChecker()
    verdict = checker.get_compatibility(reader, writer)
    if verdict.compatibility is SchemaCompatibilityType.compatible:
        return []
    walk = _Walk(checker, _Roles(direction, version))
    found = walk.explain(reader, writer, _Path("", None))
    if not found:  # the walk could not localise it: report the checker's own words
        found = [walk.unlocalised(verdict)]
    return found


# ----------------------------------------------------------------------- explanations


@dataclass(frozen=True)
class _Path:
    location: str
    field: str | None

    def into_field(self, index: int, name: str) -> "_Path":
        dotted = f"{self.field}.{name}" if self.field else name
        return _Path(f"{self.location}/fields/{index}", dotted)

    def child(self, token: str) -> "_Path":
        return _Path(f"{self.location}/{token}", self.field)

    @property
    def pointer(self) -> str:
        return self.location or "/"


@dataclass(frozen=True)
class _Roles:
    """Who reads and who writes, in the words of a schema author."""

    direction: Direction
    version: int

    @property
    def old(self) -> str:
        return f"version {self.version}"

    @property
    def reader(self) -> str:
        return "the new schema" if self.direction == NEW_READS_OLD else self.old

    @property
    def writer(self) -> str:
        return self.old if self.direction == NEW_READS_OLD else "the new schema"

    @property
    def consequence(self) -> str:
        if self.direction == NEW_READS_OLD:
            return f"readers using the new schema cannot read records written with {self.old}"
        return f"readers still using {self.old} cannot read records written with the new schema"


class _Walk:
    """Localises an incompatibility the checker found, asking the checker at each step."""

    def __init__(self, checker: ReaderWriterCompatibilityChecker, roles: _Roles) -> None:
        self.checker = checker
        self.roles = roles
        self._seen: set[tuple[int, int]] = set()

    def compatible(self, reader: Schema, writer: Schema) -> bool:
        result = self.checker.get_compatibility(reader, writer)
        return result.compatibility is not SchemaCompatibilityType.incompatible

    def explain(self, reader: Schema, writer: Schema, path: _Path) -> list[Incompatibility]:
        pair = (id(reader), id(writer))
        if pair in self._seen or self.compatible(reader, writer):
            return []
        self._seen.add(pair)
        if isinstance(writer, UnionSchema) and not isinstance(reader, UnionSchema):
            return [f for b in writer.schemas for f in self._explain_branch(reader, writer, b, path)]
        if isinstance(reader, UnionSchema):
            return self._explain_union(reader, writer, path)
        if reader.type != writer.type:
            return [self._type_mismatch(reader, writer, path)]
        if isinstance(reader, RecordSchema) and isinstance(writer, RecordSchema):
            return self._explain_record(reader, writer, path)
        if isinstance(reader, ArraySchema) and isinstance(writer, ArraySchema):
            return self.explain(reader.items, writer.items, path.child("items"))
        if isinstance(reader, MapSchema) and isinstance(writer, MapSchema):
            return self.explain(reader.values, writer.values, path.child("values"))
        if isinstance(reader, EnumSchema) and isinstance(writer, EnumSchema):
            return self._explain_named(reader, writer, path) + self._explain_enum(reader, writer, path)
        if isinstance(reader, FixedSchema) and isinstance(writer, FixedSchema):
            return self._explain_named(reader, writer, path) + self._explain_fixed(reader, writer, path)
        return []

    # -- structure

    def _explain_union(self, reader: UnionSchema, writer: Schema, path: _Path) -> list[Incompatibility]:
        written = writer.schemas if isinstance(writer, UnionSchema) else [writer]
        found: list[Incompatibility] = []
        for branch in written:
            if self.compatible(reader, branch):
                continue
            index, candidate = _same_kind_branch(reader, branch)
            nested = self.explain(candidate, branch, path.child(str(index))) if candidate else []
            found.extend(nested or [self._missing_branch(branch, path)])
        return found

    def _explain_branch(
        self, reader: Schema, union: UnionSchema, branch: Schema, path: _Path
    ) -> list[Incompatibility]:
        """A non-union reader against one branch of the writer's union."""
        if self.compatible(reader, branch):
            return []
        if reader.type == branch.type:
            return self.explain(reader, branch, path)
        new, old = self._new_old(_describe(reader), _describe(union))
        why = (
            f"{self.roles.reader} ({_describe(reader)}) cannot read the {_describe(branch)} branch "
            f"{self.roles.writer} can write"
        )
        return [
            self._make(
                path,
                SchemaIncompatibilityType.type_mismatch,
                f"{self._subject(path)} changed from {old} to {new}: {why}",
                f"keep the type {old}",
            )
        ]

    def _explain_record(
        self, reader: RecordSchema, writer: RecordSchema, path: _Path
    ) -> list[Incompatibility]:
        found = self._explain_named(reader, writer, path)
        for index, reader_field in enumerate(reader.fields):
            at = path.into_field(index, reader_field.name)
            writer_field = lookup_writer_field(writer_schema=writer, reader_field=reader_field)
            if writer_field is None:
                if not reader_field.has_default:
                    found.append(self._missing_default(at))
            else:
                found.extend(self.explain(reader_field.type, writer_field.type, at.child("type")))
        return found

    # -- leaves: each verdict comes from one of Avro's own check functions

    def _explain_named(self, reader: NamedSchema, writer: NamedSchema, path: _Path) -> list[Incompatibility]:
        if _ok(check_schema_names(reader, writer, [])):
            return []
        new, old = self._new_old(reader.fullname, writer.fullname)
        fix = f"keep the name '{old}'" + (
            f" or list '{old}' in the new type's aliases" if self.roles.direction == NEW_READS_OLD else ""
        )
        return [
            self._make(
                path.child("name"),
                SchemaIncompatibilityType.name_mismatch,
                f"{self._subject(path)}: the {reader.type} name changed from '{old}' to '{new}'",
                fix,
            )
        ]

    def _explain_enum(self, reader: EnumSchema, writer: EnumSchema, path: _Path) -> list[Incompatibility]:
        if _ok(check_reader_enum_contains_writer_enum(reader, writer, [])):
            return []
        missing = ", ".join(s for s in writer.symbols if s not in set(reader.symbols))
        if self.roles.direction == NEW_READS_OLD:
            what = (
                f"the new enum {reader.fullname} no longer has symbol(s) {missing} that "
                f"{self.roles.old} can write"
            )
            fix = "keep those symbols, or give the new enum a 'default' symbol"
        else:
            what = (
                f"enum {reader.fullname} gained symbol(s) {missing}, which {self.roles.old} does not "
                "know and has no enum default for"
            )
            fix = "do not add symbols to an enum whose older versions have no 'default' symbol"
        return [
            self._make(
                path.child("symbols"),
                SchemaIncompatibilityType.missing_enum_symbols,
                f"{self._subject(path)}: {what}",
                fix,
            )
        ]

    def _explain_fixed(self, reader: FixedSchema, writer: FixedSchema, path: _Path) -> list[Incompatibility]:
        if _ok(check_fixed_size(reader, writer, [])):
            return []
        new, old = self._new_old(reader.size, writer.size)
        return [
            self._make(
                path.child("size"),
                SchemaIncompatibilityType.fixed_size_mismatch,
                f"{self._subject(path)}: fixed {reader.fullname} changed size from {old} to {new} bytes",
                f"keep the size {old}",
            )
        ]

    def _type_mismatch(self, reader: Schema, writer: Schema, path: _Path) -> Incompatibility:
        new, old = self._new_old(_describe(reader), _describe(writer))
        why = (
            f"{self.roles.writer} writes {_describe(writer)} where {self.roles.reader} expects "
            f"{_describe(reader)}, and Avro does not convert {writer.type} to {reader.type}"
        )
        return self._make(
            path,
            SchemaIncompatibilityType.type_mismatch,
            f"{self._subject(path)} changed from {old} to {new}: {why}",
            f"keep the type {old} (Avro promotes only int→long→float→double and string↔bytes), "
            "or add a new field with a default instead",
        )

    def _missing_default(self, path: _Path) -> Incompatibility:
        if self.roles.direction == NEW_READS_OLD:
            what, fix = "was added without a default", "give it a default"
        else:
            what = f"was removed, but {self.roles.old} declares it without a default"
            fix = "keep the field (a field can be removed only once older versions give it a default)"
        kind = SchemaIncompatibilityType.reader_field_missing_default_value
        return self._make(path, kind, f"field '{path.field}' {what}", fix)

    def _missing_branch(self, branch: Schema, path: _Path) -> Incompatibility:
        branch_text = _describe(branch)
        if self.roles.direction == NEW_READS_OLD:
            what = f"the new union no longer accepts {branch_text}, which {self.roles.old} can write"
            fix = f"keep {branch_text} in the union"
        else:
            what = (
                f"the new schema can write {branch_text}, which the union in {self.roles.old} "
                "does not accept"
            )
            fix = f"do not add {branch_text} to the union"
        return self._make(
            path, SchemaIncompatibilityType.missing_union_branch, f"{self._subject(path)}: {what}", fix
        )

    def unlocalised(self, verdict: Any) -> Incompatibility:
        kinds = sorted({k.value for k in verdict.incompatibilities}) or ["incompatible"]
        details = "; ".join(sorted(verdict.messages))
        locations = sorted(verdict.locations)
        return Incompatibility(
            version=self.roles.version,
            direction=self.roles.direction,
            location=locations[0] if locations else "/",
            kind=kinds[0],
            message=f"{self.roles.consequence} ({', '.join(kinds)}: {details}); "
            "change the new schema so that Avro's schema resolution rules accept it",
        )

    # -- wording

    def _make(self, path: _Path, kind: SchemaIncompatibilityType, what: str, fix: str) -> Incompatibility:
        return Incompatibility(
            version=self.roles.version,
            direction=self.roles.direction,
            location=path.pointer,
            kind=kind.value,
            message=f"{what}: {self.roles.consequence}; {fix}",
            field=path.field,
        )

    def _subject(self, path: _Path) -> str:
        return f"field '{path.field}'" if path.field else "the top-level schema"

    def _new_old(self, reader_value: Any, writer_value: Any) -> tuple[Any, Any]:
        """(value in the new schema, value in the previous version)."""
        if self.roles.direction == NEW_READS_OLD:
            return reader_value, writer_value
        return writer_value, reader_value


def _ok(result: Any) -> bool:
    return result.compatibility is not SchemaCompatibilityType.incompatible


def _same_kind_branch(union: UnionSchema, schema: Schema) -> tuple[int, Schema | None]:
    """The union branch that is meant to read ``schema`` (same type, same name if named)."""
    for index, branch in enumerate(union.schemas):
        if branch.type != schema.type:
            continue
        if isinstance(branch, NamedSchema) and isinstance(schema, NamedSchema):
            aliases = branch.props.get("aliases") or []
            if branch.fullname != schema.fullname and schema.fullname not in aliases:
                continue
        return index, branch
    return -1, None


def _describe(schema: Schema) -> str:
    if isinstance(schema, UnionSchema):
        return "union [" + ", ".join(_describe(s) for s in schema.schemas) + "]"
    if isinstance(schema, NamedSchema):
        return f"{schema.type} {schema.fullname}"
    if isinstance(schema, ArraySchema):
        return f"array of {_describe(schema.items)}"
    if isinstance(schema, MapSchema):
        return f"map of {_describe(schema.values)}"
    return str(schema.type)
