"""Registering the event schemas with a Confluent-compatible registry, through
confluent-kafka's ``SchemaRegistryClient`` only (so any compatible registry works)."""

from __future__ import annotations

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bus.registry.client import registry_call
from bus.schemas.exceptions import SchemaIncompatible

_NOT_FOUND = {40401, 40403}


def avro_schema(schema_json: str) -> Schema:
    return Schema(schema_json, schema_type="AVRO")


def ensure_registered(client: SchemaRegistryClient, subject: str, schema_json: str, compatibility: str) -> int:
    """The schema id of ``schema_json`` under ``subject``, registering it (after setting the
    subject's compatibility mode) when this exact schema is not registered yet."""
    schema = avro_schema(schema_json)
    try:
        return registry_call(client, lambda: client.lookup_schema(subject, schema)).schema_id
    except SchemaRegistryError as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
    registry_call(client, lambda: client.set_compatibility(subject, compatibility))
    try:
        return registry_call(client, lambda: client.register_schema(subject, schema))
    except SchemaRegistryError as exc:
        if exc.http_status_code == 409:
            raise SchemaIncompatible(subject, exc.error_message) from exc
        raise
