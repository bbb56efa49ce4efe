"""The ``linkage:`` section of ``topology.yaml``: "one point linkage, multi-level response".

Each rule matches camera alarms with the router's declarative filter language (the same
``match`` an integrator already writes for subscriptions, compiled by
:mod:`bus.routing.filters`) and names the case to open: its category, the units responsible
(a department, or ``camera_owner`` = the department owning the alarm's camera, or
``district_centre`` = the command centre of the alarm's district) and its deadlines.
The processors (:mod:`bus.processors.linkage`) turn each matching alarm into one city_case
per responsible unit.

The models check what they see on their own; :func:`linkage_problems` checks names against
the rest of the file (departments, the city_case categories), and the validator checks each
``match`` against the camera_alarm schema like a subscription's filter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from bus.topology.exceptions import suggest
from bus.topology.filters import KEBAB_CASE, Filter

#: The event type linkage reads, and the one it writes.
ALARM_TYPE = "camera_alarm"
CASE_TYPE = "city_case"
#: Responsible units resolved per alarm rather than named.
CAMERA_OWNER = "camera_owner"
DISTRICT_CENTRE = "district_centre"
ROLES = (CAMERA_OWNER, DISTRICT_CENTRE)

Loc = tuple[str | int, ...]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CaseSpec(_Model):
    """The case a linkage rule opens, once per responsible unit."""

    category: str = Field(
        description="The city_case category (a symbol of CaseCategory in the city_case schema).",
        examples=["FIRE_HAZARD", "CAMERA_FAULT"],
    )
    responsible: list[str] = Field(
        min_length=1,
        description=(
            "Who gets a case: department names, `camera_owner` (the department owning the alarm's camera) or "
            "`district_centre` (the command centre of the alarm's district, district_<district>)."
        ),
        examples=[["fire_brigade", "district_centre"], ["camera_owner"]],
    )
    level: Literal["CITY", "DISTRICT"] = Field(
        "DISTRICT", description="The platform that supervises the case.", examples=["DISTRICT"]
    )
    respond_within_h: Annotated[float, Field(gt=0)] = Field(
        description="Hours the responsible unit has to answer (respond_by = alarm time + this).", examples=[0.25, 24]
    )
    resolve_within_h: Annotated[float, Field(gt=0)] = Field(
        description="Hours to resolve the problem (resolve_by = alarm time + this).", examples=[4, 72]
    )

    @model_validator(mode="after")
    def _resolve_after_respond(self) -> CaseSpec:
        if self.resolve_within_h < self.respond_within_h:
            raise PydanticCustomError(
                "linkage_deadlines",
                "resolve_within_h ({resolve}) is shorter than respond_within_h ({respond}): a problem cannot be "
                "resolved before it is answered; raise resolve_within_h or lower respond_within_h",
                {"resolve": f"{self.resolve_within_h:g}", "respond": f"{self.respond_within_h:g}"},
            )
        return self


class LinkageRule(_Model):
    """Camera alarms that match open a case for each responsible unit."""

    name: Annotated[str, Field(pattern=KEBAB_CASE)] = Field(
        description="Unique id, lowercase with dashes; part of every case id the rule makes.",
        examples=["fire-smoke"],
    )
    description: str | None = Field(None, description="Why the rule exists.", examples=[
        "A fire or smoke alarm alerts the fire brigade and the district centre at once."])
    match: Filter = Field(
        description="Which camera alarms open cases: a filter on camera_alarm fields, as in subscriptions.",
        examples=[{"field": "alarm_type", "in": ["CAMERA_OFFLINE", "TAMPERING"]}],
    )
    case: CaseSpec = Field(description="The case to open.", examples=[{
        "category": "CAMERA_FAULT", "responsible": ["camera_owner"], "respond_within_h": 24, "resolve_within_h": 72}])


def linkage_problems(
    rules: Sequence[tuple[int, LinkageRule]],
    plain_names: Iterable[tuple[int, str]],
    departments: set[str],
    event_types: set[str],
    case_categories: Sequence[str] | None,
) -> list[tuple[Loc, str, bool]]:
    """What the section gets wrong against the rest of the file: (loc, message, at_key).
    ``plain_names``: (index, name) of every rule as written, valid or not (duplicates);
    ``case_categories``: the city_case schema's categories, None when it did not load."""
    problems: list[tuple[Loc, str, bool]] = []
    first: dict[str, int] = {}
    for i, name in plain_names:
        if name in first:
            problems.append((("linkage", i, "name"), f"duplicate linkage rule name {name!r} (rule {first[name] + 1} "
                             "has it): case ids are made from the rule name, give each rule a unique name", False))
        first.setdefault(name, i)
    if rules:
        for needed in (ALARM_TYPE, CASE_TYPE):
            if needed not in event_types:
                problems.append((("linkage",), f"linkage reads camera_alarm and writes city_case, and event type "
                                 f"{needed!r} is not defined; add it to event_types or remove the linkage section",
                                 True))
    for i, rule in rules:
        base: Loc = ("linkage", i, "case")
        if case_categories is not None and rule.case.category not in case_categories:
            problems.append(((*base, "category"), f"category {rule.case.category!r} is not a city_case category; "
                             f"{suggest(rule.case.category, case_categories, 'CaseCategory symbol')}", False))
        seen: set[str] = set()
        for j, unit in enumerate(rule.case.responsible):
            loc = (*base, "responsible", j)
            if unit in seen:
                problems.append((loc, f"{unit!r} is listed twice in responsible; list it once", False))
            elif unit not in ROLES and unit not in departments:
                known = sorted(departments | set(ROLES))
                problems.append((loc, f"unknown department {unit!r} in responsible; write a department, "
                                 f"{CAMERA_OWNER} or {DISTRICT_CENTRE}: {suggest(unit, known, 'department')}", False))
            seen.add(unit)
    return problems


def plain_rule_names(plain: Any) -> list[tuple[int, str]]:
    """(index, name) of each rule of a ``linkage:`` section as written (for duplicates)."""
    if not isinstance(plain, list):
        return []
    return [(i, item["name"]) for i, item in enumerate(plain) if isinstance(item, dict)
            and isinstance(item.get("name"), str)]
