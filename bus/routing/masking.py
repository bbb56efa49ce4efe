"""Treatments of personal fields: clear, drop, hash, partial, generalise.

Every treatment but ``clear`` turns the value into a string (or null), so a subscription's
schema types a masked field as ``["null", "string"]``. What ``partial`` keeps and what
``generalise`` coarsens to depend on what the field is (its ``pii`` attribute).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from bus.schemas.catalog import FieldInfo

Masker = Callable[[Any, dict[str, Any]], Any]

#: pii kind -> (characters kept at the start, characters kept at the end)
PARTIAL_KEEP: dict[str, tuple[int, int]] = {
    "national_id": (6, 4),  # region prefix (where the person was registered) and last 4
    "phone": (3, 4),
    "vehicle_plate": (2, 1),
}
DEFAULT_PARTIAL_KEEP = (0, 4)


def keyed_hash(value: Any, key: bytes) -> str:
    digest = hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).digest()
    return "h:" + base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def partial(value: Any, pii: str | None) -> str:
    text = str(value)
    head, tail = PARTIAL_KEEP.get(pii or "", DEFAULT_PARTIAL_KEEP)
    if len(text) <= head + tail:
        return "*" * len(text)
    return text[:head] + "*" * (len(text) - head - tail) + text[len(text) - tail :]


def generalise(value: Any, pii: str | None, record: dict[str, Any]) -> str | None:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return str(value.year)
    if pii == "address":
        district = record.get("district")
        return str(district) if district else None
    return None  # nothing coarser is known for this kind: show nothing


def masker(treatment: str, info: FieldInfo, key: bytes) -> Masker:
    """The function applying ``treatment`` to one field's value (None stays None)."""
    if treatment == "clear":
        return lambda value, record: value
    if treatment == "drop":
        return lambda value, record: None
    if treatment == "hash":
        return lambda value, record: None if value is None else keyed_hash(value, key)
    if treatment == "partial":
        return lambda value, record: None if value is None else partial(value, info.pii)
    if treatment == "generalise":
        return lambda value, record: None if value is None else generalise(value, info.pii, record)
    raise ValueError(f"unknown treatment {treatment!r}")
