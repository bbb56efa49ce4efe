"""The decoder resolves a record to a reader schema only when that schema differs from the
writer's: resolving a schema against itself changes nothing (and cost the router a third of
its decoding time)."""

from __future__ import annotations

import json
import uuid

import fastavro

from bus.consume.decoder import Decoder
from bus.kafka.config import KafkaSettings
from bus.registry.client import registry_client
from bus.registry.registration import ensure_registered
from bus.schemas import wire

WRITER = {"type": "record", "name": "Reading", "namespace": "test.decoder",
          "fields": [{"name": "id", "type": {"type": "string", "logicalType": "uuid"}}, {"name": "value", "type": "int"}]}


def test_the_same_schema_decodes_as_written_and_another_is_still_resolved(registry_settings: KafkaSettings) -> None:
    client = registry_client(registry_settings)
    schema_id = ensure_registered(client, f"decoder-{uuid.uuid4().hex[:8]}-value", json.dumps(WRITER), "BACKWARD")
    record = {"id": uuid.uuid4(), "value": 7}
    value = wire.encode(schema_id, fastavro.parse_schema(WRITER), record)
    decoder = Decoder(client)

    same = fastavro.parse_schema(json.loads(json.dumps(WRITER)))
    assert decoder.decode(value, same) == decoder.decode(value) == record
    assert decoder.decode(value, same) == record  # the second time from the cache

    evolved = fastavro.parse_schema({**WRITER, "fields": [*WRITER["fields"],
                                                          {"name": "unit", "type": "string", "default": "C"}]})
    assert decoder.decode(value, evolved) == {**record, "unit": "C"}  # resolution still applies
