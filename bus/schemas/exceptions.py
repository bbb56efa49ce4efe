from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bus.errors import BusError


class SchemaError(BusError):
    """Anything wrong with schemas, records or their encoding."""


class SchemaFileError(SchemaError):
    """An .avsc file that cannot be loaded."""

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__(f"{path}: {message}")


class UnknownEventType(SchemaError):
    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"unknown event type {name!r}; known event types: {', '.join(sorted(known)) or 'none'}")


@dataclass(frozen=True)
class FieldProblem:
    """One problem with one field of a record: ``path`` like ``location.district``."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path or '<record>'}: {self.problem}"


class RecordInvalid(SchemaError):
    """A record that does not match its schema. Keeps every field problem found."""

    def __init__(self, event_type: str, problems: list[FieldProblem]) -> None:
        self.event_type = event_type
        self.problems = problems
        listed = "; ".join(str(p) for p in problems)
        super().__init__(f"invalid {event_type} record: {listed}")


class RecordTooLarge(SchemaError):
    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"record is {size:,} bytes encoded, over the {limit:,}-byte limit; split it or "
            "store large content elsewhere and publish a link"
        )


class WireFormatError(SchemaError):
    """Bytes that are not in the Confluent wire format (magic byte 0, 4-byte schema id)."""


class SchemaIncompatible(SchemaError):
    """The registry refused a schema version under the subject's compatibility mode."""

    def __init__(self, subject: str, detail: str) -> None:
        self.subject = subject
        super().__init__(
            f"the registry refused the schema for {subject}: {detail}. Run `bus schemas check` to see "
            "which field breaks compatibility, then give new fields defaults or keep removed ones optional"
        )
