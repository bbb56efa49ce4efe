"""The Confluent wire format: magic byte 0, a 4-byte big-endian schema id, the Avro body."""

from __future__ import annotations

import io
import struct
from typing import Any

import fastavro

from bus.schemas.exceptions import WireFormatError

MAGIC = 0
_HEADER = struct.Struct(">bI")


def encode(schema_id: int, parsed_schema: Any, datum: Any) -> bytes:
    buf = io.BytesIO()
    buf.write(_HEADER.pack(MAGIC, schema_id))
    fastavro.schemaless_writer(buf, parsed_schema, datum)
    return buf.getvalue()


def schema_id_of(data: bytes) -> int:
    """The schema id in a wire-format value, or WireFormatError."""
    if data is None or len(data) < _HEADER.size:
        raise WireFormatError(f"value of {0 if data is None else len(data)} bytes is too short for the wire format")
    magic, schema_id = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireFormatError(f"unknown magic byte {magic}; expected 0 (Confluent wire format)")
    return schema_id


def decode_body(data: bytes, writer_schema: Any, reader_schema: Any | None = None) -> Any:
    """Decode the Avro body of a wire-format value (header already checked)."""
    try:
        return fastavro.schemaless_reader(
            io.BytesIO(data[_HEADER.size :]), writer_schema, reader_schema
        )
    except (EOFError, ValueError, IndexError, TypeError) as exc:
        raise WireFormatError(f"Avro body does not decode with schema: {exc}") from exc
