"""Small Avro schemas for the registry tests."""

from __future__ import annotations

import json
from typing import Any

from confluent_kafka.schema_registry import Schema


def avro(*fields: tuple[str, Any] | dict[str, Any], name: str = "Alarm") -> Schema:
    """A record schema; a field is ("name", type) or a full field dict."""
    built = [f if isinstance(f, dict) else {"name": f[0], "type": f[1]} for f in fields]
    return Schema(json.dumps({"type": "record", "name": name, "namespace": "city", "fields": built}), "AVRO")


def compact(schema: Schema) -> str:
    """The text the registry stores and returns: the same JSON without whitespace."""
    return json.dumps(json.loads(schema.schema_str), separators=(",", ":"))
