"""The building blocks of topology.yaml's models: name patterns, RFC 3339 times, and the
filters of subscriptions and linkage rules (a condition, all_of, any_of, not)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StrictBool, StrictStr, Tag, model_validator
from pydantic_core import PydanticCustomError

SNAKE_CASE = r"^[a-z][a-z0-9_]*$"
KEBAB_CASE = r"^[a-z][a-z0-9-]*$"
TOPIC_PREFIX = r"^[a-z0-9][a-z0-9._-]*$"

Operator = Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "prefix"]
OPERATORS: tuple[Operator, ...] = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "exists", "prefix")


SnakeName = Annotated[str, Field(pattern=SNAKE_CASE)]
KebabName = Annotated[str, Field(pattern=KEBAB_CASE)]

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def parse_rfc3339(value: object) -> dt.datetime | None:
    """An RFC 3339 date-time with an explicit offset (``2026-01-01T08:00:00+08:00``), else None."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        return None
    try:
        return dt.datetime.fromisoformat(value[:10] + "T" + value[11:].upper())
    except ValueError:
        return None


def is_rfc3339(value: object) -> bool:
    return parse_rfc3339(value) is not None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# -- filters --------------------------------------------------------------------------


class Condition(_Model):
    """A filter leaf: one field, exactly one operator."""

    field: str = Field(
        description="Dotted path of the field to test; nested fields of records are reached with dots.",
        examples=["alarm_type", "location.district"],
    )
    eq: Any = Field(None, description="The field equals this value.", examples=["FIRE_SMOKE", 5])
    ne: Any = Field(None, description="The field differs from this value.", examples=["LOW"])
    in_: list[Any] | None = Field(
        None, alias="in", description="The field equals one of these values.", examples=[["FIRE_SMOKE", "INTRUSION"]]
    )
    not_in: list[Any] | None = Field(
        None, description="The field equals none of these values.", examples=[["CAMERA_OFFLINE"]]
    )
    gt: Any = Field(
        None, description="The field is greater than this (numbers, times, dates, strings).", examples=[0.8]
    )
    gte: Any = Field(None, description="The field is greater than or equal to this.", examples=[5])
    lt: Any = Field(None, description="The field is less than this.", examples=["2026-01-01T00:00:00+08:00"])
    lte: Any = Field(None, description="The field is less than or equal to this.", examples=["2026-12-31"])
    exists: StrictBool | None = Field(
        None, description="true: the field has a value (is not null); false: it is null.", examples=[True]
    )
    prefix: StrictStr | None = Field(
        None, description="The string field starts with this text.", examples=["CAM-LN-"]
    )

    @model_validator(mode="after")
    def _exactly_one_operator(self) -> Condition:
        given = self.operators_given()
        if len(given) != 1:
            raise PydanticCustomError(
                "filter_operator",
                "a filter condition needs exactly one operator, found {found}; write `field: <path>` and one "
                "of: {allowed} (combine conditions with and: [...])",
                {"found": ", ".join(given) or "none", "allowed": ", ".join(OPERATORS)},
            )
        return self

    def operators_given(self) -> list[Operator]:
        return [op for op in OPERATORS if _attribute(op) in self.model_fields_set]

    @property
    def op(self) -> Operator:
        return self.operators_given()[0]

    @property
    def value(self) -> Any:
        return getattr(self, _attribute(self.op))


def _attribute(op: Operator) -> str:
    """The attribute holding an operator's value (``in`` is a Python keyword)."""
    return "in_" if op == "in" else op


class AllOf(_Model):
    """Every condition holds."""

    all_of: list[Filter] = Field(
        alias="and", min_length=1, description="Conditions that must all hold.",
        examples=[[{"field": "alarm_type", "eq": "FIRE_SMOKE"}, {"field": "severity", "ne": "LOW"}]],
    )


class AnyOf(_Model):
    """At least one condition holds."""

    any_of: list[Filter] = Field(
        alias="or", min_length=1, description="Conditions of which at least one must hold.",
        examples=[[{"field": "location.district", "eq": "CHENGZHONG"}, {"field": "count", "gte": 5}]],
    )


class Not(_Model):
    """The condition does not hold."""

    negated: Filter = Field(
        alias="not", description="A condition that must not hold.", examples=[{"field": "severity", "eq": "LOW"}]
    )


FILTER_KINDS: dict[str, type[_Model]] = {"condition": Condition, "and": AllOf, "or": AnyOf, "not": Not}


def _filter_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((k for k in ("and", "or", "not") if k in value), "condition")
    return next((tag for tag, cls in FILTER_KINDS.items() if isinstance(value, cls)), None)


Filter = Annotated[
    Annotated[Condition, Tag("condition")]
    | Annotated[AllOf, Tag("and")]
    | Annotated[AnyOf, Tag("or")]
    | Annotated[Not, Tag("not")],
    Discriminator(
        _filter_kind,
        custom_error_type="filter_shape",
        custom_error_message=(
            "a filter is a mapping: a condition {field: <path>, <operator>: <value>} or one of "
            "and: [...], or: [...], not: {...}"
        ),
    ),
]

AllOf.model_rebuild()
AnyOf.model_rebuild()
Not.model_rebuild()


def conditions(node: Filter) -> list[Condition]:
    """Every condition of a filter, in order."""
    if isinstance(node, Condition):
        return [node]
    if isinstance(node, Not):
        return conditions(node.negated)
    children = node.all_of if isinstance(node, AllOf) else node.any_of
    return [c for child in children for c in conditions(child)]
