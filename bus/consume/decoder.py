"""Decoding Confluent wire-format values with writer schemas fetched by id from the registry."""

from __future__ import annotations

import json
from typing import Any

import fastavro
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bus.registry.client import registry_call
from bus.schemas import wire
from bus.schemas.exceptions import WireFormatError
from bus.schemas.records import to_json


class Decoder:
    """Decodes values of any registered schema; parsed schemas are cached by id."""

    def __init__(self, registry: SchemaRegistryClient) -> None:
        self._registry = registry
        self._parsed: dict[int, Any] = {}
        #: (writer schema id, id of a reader schema) -> (that reader schema, whether it is the writer's)
        self._same: dict[tuple[int, int], tuple[Any, bool]] = {}

    def writer_schema(self, schema_id: int) -> Any:
        if schema_id not in self._parsed:
            try:
                registered = registry_call(self._registry, lambda: self._registry.get_schema(schema_id))
            except SchemaRegistryError as exc:
                if exc.error_code != 40403:
                    raise
                # Bad data, not an outage: the record names a schema no registry holds.
                raise WireFormatError(f"schema id {schema_id} is not known to the registry") from exc
            self._parsed[schema_id] = fastavro.parse_schema(json.loads(registered.schema_str))
        return self._parsed[schema_id]

    def decode(self, value: bytes, reader_schema: Any | None = None) -> Any:
        """The datum in a wire-format value (WireFormatError if it is not one), resolved
        to ``reader_schema`` when given (Avro schema resolution)."""
        schema_id = wire.schema_id_of(value)
        writer = self.writer_schema(schema_id)
        if reader_schema is not None and self._is_writer(schema_id, writer, reader_schema):
            reader_schema = None  # resolving a schema against itself changes nothing, and costs a third
        return wire.decode_body(value, writer, reader_schema)

    def _is_writer(self, schema_id: int, writer: Any, reader: Any) -> bool:
        key = (schema_id, id(reader))
        known = self._same.get(key)
        if known is None or known[0] is not reader:
            known = self._same[key] = (reader, reader == writer)
        return known[1]

    def decode_json(self, value: bytes) -> Any:
        return to_json(self.decode(value))
