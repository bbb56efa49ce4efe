"""JSON records <-> Avro datums, checked against an event schema.

Input is plain JSON as a department system would send it: union values without Avro's
``{"type": value}`` wrapping, times as RFC 3339 strings (or epoch milliseconds), dates as
``YYYY-MM-DD``. Every problem is collected with its field path, so that one answer tells
the publisher everything to fix.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
import uuid
from typing import Any

from bus.schemas.catalog import EventSchema
from bus.schemas.exceptions import FieldProblem, RecordInvalid

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
#: The largest finite value of each Avro floating point type (IEEE 754 binary32, binary64).
_LARGEST = {"float": 3.4028234663852886e38, "double": 1.7976931348623157e308}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
#: The one spelling of a UUID the bus takes: RFC 4122's 8-4-4-4-12 hex digits, in either case.
#: ``uuid.UUID()`` is far looser (no hyphens, braces, "urn:uuid:", and int() digits: "+", "_",
#: spaces, "0x", non-ASCII digits), which would let text that is no UUID onto the topics.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.ASCII | re.IGNORECASE)


class _Invalid(Exception):
    def __init__(self, problem: str) -> None:
        self.problem = problem


def to_datum(event: EventSchema, value: Any) -> dict[str, Any]:
    """The Avro datum for a JSON record, or RecordInvalid listing every field problem."""
    problems: list[FieldProblem] = []
    if not isinstance(value, dict):
        raise RecordInvalid(event.name, [FieldProblem("", f"expected a JSON object, got {_kind(value)}")])
    datum = _record(event, event.schema, value, "", problems)
    if problems:
        raise RecordInvalid(event.name, problems)
    return datum


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int) and abs(value) >= 10**40:  # all its digits would swamp the message
        return f"an integer of {_digits(value)} digits"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"the string {shown!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _digits(value: int) -> int:
    """How many decimal digits ``value`` has, without str() (refused beyond 4300 digits)."""
    value = abs(value)
    digits = int(math.log10(value)) + 1
    if 10 ** (digits - 1) > value:
        return digits - 1
    return digits + 1 if 10**digits <= value else digits


def _record(
    event: EventSchema, schema: dict[str, Any], value: dict[str, Any], prefix: str, problems: list[FieldProblem]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    known = {f["name"] for f in schema["fields"]}
    for name in value:
        if name not in known:
            problems.append(
                FieldProblem(f"{prefix}{name}", f"unknown field; {schema['name']} has: {', '.join(sorted(known))}")
            )
    for f in schema["fields"]:
        path = f"{prefix}{f['name']}"
        if f["name"] not in value:
            if "default" in f:
                out[f["name"]] = _default(event, f["type"], f["default"])
            else:
                problems.append(FieldProblem(path, f"required field is missing ({_describe(event, f['type'])})"))
            continue
        try:
            out[f["name"]] = _convert(event, f["type"], value[f["name"]], path, problems)
        except _Invalid as exc:
            problems.append(FieldProblem(path, exc.problem))
    return out


def _default(event: EventSchema, avro_type: Any, default: Any) -> Any:
    # A union's default belongs to its first branch; defaults in .avsc are JSON values.
    first = avro_type[0] if isinstance(avro_type, list) else avro_type
    if default is None:
        return None
    return _convert(event, first, default, "", [])


def _describe(event: EventSchema, avro_type: Any) -> str:
    avro_type = event.resolve(avro_type)
    if isinstance(avro_type, list):
        return " or ".join(_describe(event, t) for t in avro_type)
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "timestamp-millis":
            return "an RFC 3339 time with offset, e.g. 2026-11-23T08:30:00+08:00"
        if logical == "date":
            return "a date YYYY-MM-DD"
        if logical == "uuid":
            return "a UUID string"
        kind = avro_type["type"]
        if kind == "enum":
            return "one of " + ", ".join(avro_type["symbols"])
        if kind in ("record", "error"):
            return "an object"
        if kind == "array":
            return "a list"
        if kind == "map":
            return "an object of values"
        return _describe(event, kind)
    return {
        "null": "null",
        "boolean": "true or false",
        "int": "a 32-bit integer",
        "long": "an integer",
        "float": "a number",
        "double": "a number",
        "string": "a string",
        "bytes": "a base64 string",
    }.get(avro_type, str(avro_type))


def _convert(event: EventSchema, avro_type: Any, value: Any, path: str, problems: list[FieldProblem]) -> Any:
    avro_type = event.resolve(avro_type)
    if isinstance(avro_type, list):
        return _union(event, avro_type, value, path, problems)
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "timestamp-millis":
            return _timestamp(value)
        if logical == "date":
            return _date(value)
        if logical == "uuid":
            return _uuid(value)
        kind = avro_type["type"]
        if kind == "enum":
            if isinstance(value, str) and value in avro_type["symbols"]:
                return value
            raise _Invalid(f"{_kind(value)} is not one of {', '.join(avro_type['symbols'])}")
        if kind in ("record", "error"):
            if not isinstance(value, dict):
                raise _Invalid(f"expected an object, got {_kind(value)}")
            return _record(event, avro_type, value, path + ".", problems)
        if kind == "array":
            if not isinstance(value, list):
                raise _Invalid(f"expected a list, got {_kind(value)}")
            return [_item(event, avro_type["items"], v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
        if kind == "map":
            if not isinstance(value, dict):
                raise _Invalid(f"expected an object, got {_kind(value)}")
            return {k: _item(event, avro_type["values"], v, f"{path}.{k}", problems) for k, v in value.items()}
        if kind == "fixed":
            raise _Invalid("fixed types are not accepted from JSON")
        return _convert(event, kind, value, path, problems)
    return _primitive(avro_type, value)


def _item(event: EventSchema, avro_type: Any, value: Any, path: str, problems: list[FieldProblem]) -> Any:
    try:
        return _convert(event, avro_type, value, path, problems)
    except _Invalid as exc:
        problems.append(FieldProblem(path, exc.problem))
        return None


def _union(event: EventSchema, branches: list[Any], value: Any, path: str, problems: list[FieldProblem]) -> Any:
    if value is None:
        if "null" in branches:
            return None
        raise _Invalid(f"must not be null; expected {_describe(event, branches)}")
    last: _Invalid | None = None
    for branch in branches:
        if branch == "null":
            continue
        nested: list[FieldProblem] = []
        try:
            converted = _convert(event, branch, value, path, nested)
        except _Invalid as exc:
            last = exc
            continue
        if not nested:
            return converted
        # An object that matched the record branch but has bad fields: report those fields.
        problems.extend(nested)
        return converted
    non_null = [b for b in branches if b != "null"]
    if len(non_null) == 1 and last is not None:
        raise last
    raise _Invalid(f"{_kind(value)} matches none of: {_describe(event, non_null)}")


def _primitive(kind: str, value: Any) -> Any:
    if kind == "null":
        if value is None:
            return None
        raise _Invalid(f"expected null, got {_kind(value)}")
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        raise _Invalid(f"expected true or false, got {_kind(value)}")
    if kind in ("int", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise _Invalid(f"expected an integer, got {_kind(value)}")
        low, high = _INT32 if kind == "int" else _INT64
        if not low <= value <= high:
            shown = value if abs(value) < 10**40 else _kind(value)
            raise _Invalid(f"{shown} is out of range for {kind} ({low}..{high})")
        return value
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a number, got {_kind(value)}")
        if isinstance(value, float) and not math.isfinite(value):  # JSON parsers accept NaN and Infinity
            raise _Invalid(f"{value} is not a finite number: send a number, or null where the field allows it")
        try:
            number = float(value)  # a JSON number is read as the nearest double (RFC 8259, section 6)
        except OverflowError:  # an integer past the largest double (json.loads reads up to 4300 digits)
            number = math.inf
        largest = _LARGEST[kind]
        if not -largest <= number <= largest:
            raise _Invalid(f"{_kind(value)} is too large for a {kind}: send a number between {-largest!r} "
                           f"and {largest!r}, or null where the field allows it")
        return number
    if kind == "string":
        if isinstance(value, str):
            return value
        raise _Invalid(f"expected a string, got {_kind(value)}")
    if kind == "bytes":
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except ValueError:
                raise _Invalid("expected base64 text") from None
        raise _Invalid(f"expected a base64 string, got {_kind(value)}")
    raise _Invalid(f"unsupported Avro type {kind!r}")


def _timestamp(value: Any) -> dt.datetime:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return _EPOCH + dt.timedelta(milliseconds=value)
        except OverflowError:
            raise _Invalid(f"{value} milliseconds since 1970 is outside the years 1 to 9999") from None
    if not isinstance(value, str):
        raise _Invalid(f"expected an RFC 3339 time such as 2026-11-23T08:30:00+08:00, got {_kind(value)}")
    try:
        # RFC 3339 allows a lower case z (and t); Python 3.11 reads only an upper case Z.
        parsed = dt.datetime.fromisoformat(value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value)
    except ValueError:
        raise _Invalid(f"{_kind(value)} is not an RFC 3339 time; write e.g. 2026-11-23T08:30:00+08:00") from None
    if parsed.tzinfo is None:
        raise _Invalid(f"{_kind(value)} has no UTC offset; add one, e.g. {value}+08:00")
    try:  # the wire format counts milliseconds from 1970 in UTC; readers decode to a datetime
        parsed.astimezone(dt.timezone.utc)
    except OverflowError:
        raise _Invalid(f"{_kind(value)} is outside the years 1 to 9999 in UTC") from None
    return parsed


def _date(value: Any) -> dt.date:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return dt.date(1970, 1, 1) + dt.timedelta(days=value)
        except OverflowError:
            raise _Invalid(f"{value} days since 1970 is outside the years 1 to 9999") from None
    if not isinstance(value, str):
        raise _Invalid(f"expected a date YYYY-MM-DD, got {_kind(value)}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise _Invalid(f"{_kind(value)} is not a date; write YYYY-MM-DD") from None


def is_uuid(value: Any) -> bool:
    """True for a UUID written as the bus accepts one: 8-4-4-4-12 hex digits, either case."""
    return isinstance(value, str) and _UUID.fullmatch(value) is not None


def _uuid(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a UUID string, got {_kind(value)}")
    if _UUID.fullmatch(value) is None:
        raise _Invalid(f"{_kind(value)} is not a UUID; write 8-4-4-4-12 hex digits, "
                       "e.g. 6f1c2f3e-1111-4a4a-9b9b-123456789abc")
    return value.lower()


def to_json(value: Any) -> Any:
    """A decoded Avro datum as JSON-ready values (times as RFC 3339 UTC, dates ISO)."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return value
