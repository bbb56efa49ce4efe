"""Compiling the topology's declarative filters into predicates, once, at load time.

No eval: each node becomes a closure. Values are converted once to the field's Python
type (times to aware datetimes, dates to dates), so the hot path only compares.
A null or absent field satisfies ``ne``, ``not_in`` and ``exists: false``; every other
comparison with it is false.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable
from typing import Any

from bus.schemas.catalog import EventSchema
from bus.topology.filters import AllOf, AnyOf, Condition, Filter, Not, parse_rfc3339

Predicate = Callable[[dict[str, Any]], bool]

_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}


def always(_: dict[str, Any]) -> bool:
    return True


def compile_filter(node: Filter | None, event: EventSchema) -> Predicate:
    if node is None:
        return always
    if isinstance(node, Condition):
        return _condition(node, event)
    if isinstance(node, Not):
        inner = compile_filter(node.negated, event)
        return lambda record: not inner(record)
    children = [compile_filter(child, event) for child in (node.all_of if isinstance(node, AllOf) else node.any_of)]
    if isinstance(node, AnyOf):
        return lambda record: any(child(record) for child in children)
    return lambda record: all(child(record) for child in children)


def getter(path: str) -> Callable[[dict[str, Any]], Any]:
    """A function reading a dotted path from a record (None where any step is missing)."""
    steps = path.split(".")
    if len(steps) == 1:
        name = steps[0]
        return lambda record: record.get(name)

    def get(record: dict[str, Any]) -> Any:
        value: Any = record
        for step in steps:
            if not isinstance(value, dict):
                return None
            value = value.get(step)
        return value

    return get


def _converter(event: EventSchema, path: str) -> Callable[[Any], Any]:
    info = event.field(path)
    logical = None
    if info is not None:
        value_type = event.resolve(info.value_type)
        if isinstance(value_type, dict):
            logical = value_type.get("logicalType")
    if logical == "timestamp-millis":
        return lambda v: parse_rfc3339(v) if isinstance(v, str) else v
    if logical == "date":
        return lambda v: dt.date.fromisoformat(v) if isinstance(v, str) else v
    return lambda v: v


def _condition(cond: Condition, event: EventSchema) -> Predicate:
    get = getter(cond.field)
    convert = _converter(event, cond.field)
    op, raw = cond.op, cond.value
    if op == "exists":
        wanted = bool(raw)
        return lambda record: (get(record) is not None) == wanted
    if op == "prefix":
        text = str(raw)
        return lambda record: isinstance(v := get(record), str) and v.startswith(text)
    if op in ("in", "not_in"):
        values = frozenset(convert(v) for v in raw)
        if op == "in":
            return lambda record: get(record) in values
        return lambda record: get(record) not in values
    target = convert(raw)
    if op == "eq":
        return lambda record: get(record) == target
    if op == "ne":
        return lambda record: get(record) != target
    compare = _ORDERING[op]

    def ordered(record: dict[str, Any]) -> bool:
        value = get(record)
        if value is None:
            return False
        try:
            return compare(value, target)
        except TypeError:
            return False

    return ordered
