"""Encoding derived events the way ``Publisher`` does (Confluent wire format, CloudEvents
binary-mode headers), for topics the publisher does not write (the enriched alarm topic)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from bus.kafka.config import KafkaSettings
from bus.publish.publisher import CONTENT_TYPE, SPEC_VERSION, new_traceparent
from bus.registry.client import registry_client
from bus.schemas import wire
from bus.schemas.records import to_datum
from bus.registry.registration import ensure_registered
from bus.topology.models import Topology


class DerivedEncoder:
    """Encodes records of ``event_type`` for ``topic`` (schema registered under ``<topic>-value``,
    the canonical schema itself, so the registry gives it the canonical id)."""

    def __init__(self, topology: Topology, settings: KafkaSettings, event_type: str, topic: str) -> None:
        self.event_type = topology.event_type(event_type)
        self.schema = topology.schema_for(event_type)
        self.topic = topic
        self._registry = registry_client(settings)
        self._schema_id: int | None = None

    @property
    def schema_id(self) -> int:
        if self._schema_id is None:
            self._schema_id = ensure_registered(
                self._registry, f"{self.topic}-value", self.schema.canonical_json(), str(self.event_type.compatibility)
            )
        return self._schema_id

    def encode(
        self, record: dict[str, Any], *, ce_id: str, traceparent: str | None = None
    ) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """(key, value, headers) of one record (JSON form); RecordInvalid if it does not fit."""
        datum = to_datum(self.schema, record)
        value = wire.encode(self.schema_id, self.schema.parsed, datum)
        key = str(datum[self.event_type.key])
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        headers = [
            ("ce_specversion", SPEC_VERSION),
            ("ce_id", ce_id),
            ("ce_source", self.event_type.owner),
            ("ce_type", self.event_type.name),
            ("ce_time", now),
            ("ce_subject", key),
            ("content-type", CONTENT_TYPE),
            ("ce_traceparent", traceparent or new_traceparent()),
        ]
        return key.encode("utf-8"), value, [(k, v.encode("utf-8")) for k, v in headers]


def derived_ce_id(record: dict[str, Any]) -> str:
    """A deterministic CloudEvents id: a replay of the same inputs gives the same id. It covers
    the count, so a storm's update (same ``alarm_id``, a higher count: the merger counts every
    raw alarm as at least 1) gets an id of its own, and a sink that is idempotent on the
    CloudEvents id takes it as a new event instead of a duplicate of the first version."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bus-processors/{record['alarm_id']}/{record.get('count', 1)}"))
