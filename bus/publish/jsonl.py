"""Reading JSON records from text given on the command line or from JSON-lines files.

Each line is decoded strictly as UTF-8 and parsed on its own, so one bad line is reported
with its number and never stops the lines after it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from bus.kafka.config import MAX_RECORD_BYTES
from bus.publish.exceptions import InputInvalid


def parse_record(raw: bytes | str) -> Any:
    """One JSON record from bytes or text, or InputInvalid saying what is wrong."""
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            # argv bytes that were not UTF-8 arrive as lone surrogates (surrogateescape).
            raise InputInvalid("the input is not valid UTF-8; re-encode it as UTF-8") from None
    if len(raw) > MAX_RECORD_BYTES:
        raise InputInvalid(
            f"the record is {len(raw):,} bytes, over the {MAX_RECORD_BYTES:,}-byte limit; "
            "split it or publish a link to the large content"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputInvalid(
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at position {exc.start}); re-encode the input as UTF-8"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputInvalid(f"invalid JSON at column {exc.colno}: {exc.msg}") from None


def read_jsonl(stream: BinaryIO) -> Iterator[tuple[int, Any | InputInvalid]]:
    """``(line number, record or InputInvalid)`` for each non-blank line."""
    for number, raw in enumerate(stream, start=1):
        line = raw.rstrip(b"\r\n")
        if not line.strip():
            continue
        try:
            yield number, parse_record(line)
        except InputInvalid as exc:
            yield number, exc


def open_jsonl(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise InputInvalid(f"cannot read {path}: {exc.strerror}") from exc
