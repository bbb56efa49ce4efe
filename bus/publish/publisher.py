"""Publishing typed events onto their canonical topic.

A record is checked against the topology (may this department publish this type?) and
the schema (every field problem at once), encoded in the Confluent wire format with
CloudEvents binary-mode headers, keyed by its key field, and produced by an idempotent
acks=all producer. ``publish`` returns only once the broker acknowledged the record.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import Message, Producer

from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.config import MAX_RECORD_BYTES, KafkaSettings, producer_config
from bus.kafka.exceptions import BrokerUnreachable, DeliveryFailed
from bus.publish.exceptions import PublishRefused
from bus.registry.client import registry_client
from bus.schemas import wire
from bus.schemas.exceptions import RecordTooLarge
from bus.schemas.records import to_datum
from bus.registry.registration import ensure_registered
from bus.topology.models import Topology

log = structlog.get_logger(__name__)

CONTENT_TYPE = "application/avro"
SPEC_VERSION = "1.0"


def new_traceparent() -> str:
    """A W3C trace context (``00-<trace id>-<span id>-01``), carried as ``ce_traceparent``."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def trace_id_of(traceparent: str) -> str:
    parts = traceparent.split("-")
    return parts[1] if len(parts) == 4 else traceparent


@dataclass(frozen=True)
class Published:
    """Where the broker stored an acknowledged record."""

    event_type: str
    topic: str
    partition: int
    offset: int
    key: str
    ce_id: str
    schema_id: int
    trace_id: str


@dataclass
class _Prepared:
    topic: str
    key: str
    value: bytes
    headers: list[tuple[str, bytes]]
    ce_id: str
    schema_id: int
    traceparent: str


@dataclass
class _Pending:
    """Delivery outcomes of produced records, filled by the producer's callbacks."""

    done: dict[int, Message | DeliveryFailed] = field(default_factory=dict)


class Publisher:
    """Publishes events for any department of ``topology``. Not thread-safe; one per thread."""

    def __init__(self, topology: Topology, settings: KafkaSettings, *, client_id: str = "bus-publisher") -> None:
        self.topology = topology
        self.settings = settings
        self._producer = Producer(producer_config(settings, client_id=client_id, data_path=True))
        self._registry = registry_client(settings)
        self._schema_ids: dict[str, int] = {}

    # -- preparing -------------------------------------------------------------------

    def _schema_id(self, event_type: str) -> int:
        if event_type not in self._schema_ids:
            et = self.topology.event_type(event_type)
            ensure_topics(self.settings, [TopicSpec(et.topic, et.partitions)])
            self._schema_ids[event_type] = ensure_registered(
                self._registry, et.subject, self.topology.schema_for(event_type).canonical_json(), str(et.compatibility)
            )
        return self._schema_ids[event_type]

    def check_allowed(self, event_type: str, department: str) -> None:
        et = self.topology.event_type(event_type)  # unknown type: a clear error
        self.topology.department(department)  # unknown department: a clear error
        if not self.topology.may_publish(department, event_type):
            raise PublishRefused(
                f"department {department!r} may not publish {event_type}: its owner is {et.owner!r}. "
                f"Publish as {et.owner!r}, or ask the integrator to change the owner in topology.yaml"
            )

    def prepare(
        self, event_type: str, department: str, record: Any, *, traceparent: str | None = None
    ) -> _Prepared:
        """Check and encode one record; raises before anything reaches the broker."""
        self.check_allowed(event_type, department)
        et = self.topology.event_type(event_type)
        event = self.topology.schema_for(event_type)
        datum = to_datum(event, record)
        schema_id = self._schema_id(event_type)
        value = wire.encode(schema_id, event.parsed, datum)
        if len(value) > MAX_RECORD_BYTES:
            raise RecordTooLarge(len(value), MAX_RECORD_BYTES)
        key = str(datum[et.key])
        ce_id = str(uuid.uuid4())
        traceparent = traceparent or new_traceparent()
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        headers = [
            ("ce_specversion", SPEC_VERSION),
            ("ce_id", ce_id),
            ("ce_source", department),
            ("ce_type", event_type),
            ("ce_time", now),
            ("ce_subject", key),
            ("content-type", CONTENT_TYPE),
            ("ce_traceparent", traceparent),
        ]
        return _Prepared(
            topic=et.topic,
            key=key,
            value=value,
            headers=[(k, v.encode("utf-8")) for k, v in headers],
            ce_id=ce_id,
            schema_id=schema_id,
            traceparent=traceparent,
        )

    # -- producing -------------------------------------------------------------------

    def _produce(self, prepared: _Prepared, slot: int, pending: _Pending) -> None:
        def on_delivery(err: RdKafkaError | None, msg: Message) -> None:
            if err is not None:
                pending.done[slot] = DeliveryFailed(
                    f"the broker at {self.settings.bootstrap_servers} did not acknowledge the record: {err.str()}"
                )
            else:
                pending.done[slot] = msg

        while True:
            try:
                self._producer.produce(
                    prepared.topic,
                    key=prepared.key.encode("utf-8"),
                    value=prepared.value,
                    headers=prepared.headers,
                    on_delivery=on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.1)  # local queue full: let deliveries drain

    def _published(self, event_type: str, prepared: _Prepared, msg: Message) -> Published:
        return Published(
            event_type=event_type,
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            key=prepared.key,
            ce_id=prepared.ce_id,
            schema_id=prepared.schema_id,
            trace_id=trace_id_of(prepared.traceparent),
        )

    def publish(
        self, event_type: str, department: str, record: Any, *, traceparent: str | None = None
    ) -> Published:
        """Publish one record and wait for the broker's acknowledgement."""
        prepared = self.prepare(event_type, department, record, traceparent=traceparent)
        pending = _Pending()
        self._produce(prepared, 0, pending)
        self._wait(pending, 1)
        outcome = pending.done[0]
        if isinstance(outcome, DeliveryFailed):
            raise outcome
        published = self._published(event_type, prepared, outcome)
        log.debug(
            "published",
            event_type=event_type,
            department=department,
            topic=published.topic,
            partition=published.partition,
            offset=published.offset,
            trace_id=published.trace_id,
        )
        return published

    def _wait(self, pending: _Pending, expected: int) -> None:
        # message.timeout.ms bounds each record; this loop only waits for the callbacks.
        self._producer.flush(self.settings.connect_timeout_s + 60)
        if len(pending.done) < expected:
            raise BrokerUnreachable(self.settings.bootstrap_servers, self.settings.connect_timeout_s + 60)

    def publish_each(
        self,
        event_type: str,
        department: str,
        records: Iterable[tuple[int, Any | Exception]],
        *,
        window: int = 1000,
        on_progress: Callable[["PublishSummary"], None] | None = None,
    ) -> "PublishSummary":
        """Publish numbered records (``(line, record)``; a record may be an Exception from
        parsing) to the end, keeping up to ``window`` unacknowledged. Returns the summary."""
        self.check_allowed(event_type, department)
        summary = PublishSummary()
        pending = _Pending()
        in_flight: dict[int, tuple[int, _Prepared]] = {}
        for slot, (line, record) in enumerate(records):
            try:
                if isinstance(record, Exception):
                    raise record
                prepared = self.prepare(event_type, department, record)
            except (BrokerUnreachable, DeliveryFailed):
                raise
            except Exception as exc:  # a bad record is reported with its line, never fatal
                summary.rejected.append((line, str(exc)))
                continue
            self._produce(prepared, slot, pending)
            in_flight[slot] = (line, prepared)
            self._producer.poll(0)
            if len(in_flight) - len(pending.done) >= window:
                self._producer.flush(self.settings.connect_timeout_s + 60)
            self._collect(in_flight, pending, summary)
            if on_progress and slot % 1000 == 999:
                on_progress(summary)
        self._producer.flush(self.settings.connect_timeout_s + 60)
        self._collect(in_flight, pending, summary)
        for line, _ in in_flight.values():
            summary.rejected.append((line, "not acknowledged by the broker in time"))
        summary.rejected.sort()
        return summary

    @staticmethod
    def _collect(in_flight: dict[int, tuple[int, _Prepared]], pending: _Pending, summary: "PublishSummary") -> None:
        # Only the slots acknowledged since the last call (every one is in flight: a callback
        # fires in poll/flush, after its slot was noted), so a call costs what was acknowledged,
        # not the whole window.
        for slot in list(pending.done):
            line, _ = in_flight.pop(slot)
            outcome = pending.done.pop(slot)
            if isinstance(outcome, DeliveryFailed):
                summary.rejected.append((line, str(outcome)))
            else:
                summary.published += 1

    def close(self) -> None:
        self._producer.flush(5)

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class PublishSummary:
    published: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"{self.published} published, {len(self.rejected)} rejected"]
        lines += [f"  line {line}: {reason}" for line, reason in self.rejected]
        return "\n".join(lines)
