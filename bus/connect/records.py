"""Records as connectors see them: the raw Kafka record (kept for dead letters) and the
decoded record a sink delivers, grouped in batches of one topic partition."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from bus.publish.publisher import trace_id_of


@dataclass(frozen=True)
class RawRecord:
    """A record exactly as it was read (or, for a source, as it came in)."""

    topic: str | None
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None

    @classmethod
    def from_message(cls, msg: Message) -> "RawRecord":
        kind, timestamp = msg.timestamp()
        return cls(
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            key=msg.key(),
            value=msg.value(),
            headers=tuple((k, v if v is not None else b"") for k, v in (msg.headers() or [])),
            timestamp_ms=None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
        )

    def header(self, name: str) -> str | None:
        """The last value of header ``name`` as text (None when absent)."""
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def key_text(self) -> str | None:
        return None if self.key is None else self.key.decode("utf-8", "replace")

    @property
    def where(self) -> str:
        if self.topic is None:
            return "a source record"
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def ce_id(self) -> str:
        """The CloudEvents id, or (for a record without one) its topic, partition and offset."""
        return self.header("ce_id") or f"{self.topic}-{self.partition}-{self.offset}"

    @property
    def traceparent(self) -> str | None:
        return self.header("ce_traceparent")

    @property
    def trace_id(self) -> str | None:
        parent = self.traceparent
        return trace_id_of(parent) if parent else None


@dataclass(frozen=True)
class SinkRecord:
    """A decoded record for a sink: ``value`` is the JSON-ready record (None for a tombstone)."""

    raw: RawRecord
    value: Any

    @property
    def key(self) -> str | None:
        return self.raw.key_text

    @property
    def ce_id(self) -> str:
        return self.raw.ce_id

    @property
    def event_type(self) -> str | None:
        return self.raw.header("ce_type")

    @property
    def trace_id(self) -> str | None:
        return self.raw.trace_id

    def headers(self) -> dict[str, str]:
        return {k: v.decode("utf-8", "replace") for k, v in self.raw.headers}


@dataclass
class SinkBatch:
    """Records of one topic partition, in offset order."""

    topic: str
    partition: int
    records: list[SinkRecord] = field(default_factory=list)

    @property
    def first_offset(self) -> int:
        return self.records[0].raw.offset or 0

    @property
    def next_offset(self) -> int:
        """The offset to commit once the whole batch is delivered."""
        return (self.records[-1].raw.offset or 0) + 1

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.records)
