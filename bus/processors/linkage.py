"""Linkage ("one point linkage, multi-level response"): alarms become city_case events for
the responsible units and the district centre, with deterministic case ids.

The rules are the ``linkage:`` section of ``topology.yaml`` (:mod:`bus.topology.linkage`);
:func:`compile_rules` compiles each rule's ``match`` once, with the router's filter compiler.
A case id is ``uuid5(namespace, rule/unit/alarm_id)``: a replay of the same alarm gives the
same case ids, so it creates no second case.

Storm updates (:mod:`bus.processors.storms`): a storm's first alarm goes out at once and opens
its cases then; the update at the window's close has the same ``alarm_id``, so the cases of
the rules its first version matched would have the same ids, and they are skipped (nothing new
to tell the unit). An update opens only the cases of rules it matches and its first version did
not: its severity escalated into a rule (``severity in [HIGH, CRITICAL]``), or a rule on
``count``. Those are new cases, with ids of their own (the rule is part of the id).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from bus.processors.storms import FLAP_CAMERA_ID, event_time_ms, iso_ms
from bus.routing.filters import Predicate, compile_filter
from bus.topology.linkage import ALARM_TYPE, CAMERA_OWNER, DISTRICT_CENTRE, LinkageRule
from bus.topology.models import Topology

CASE_NAMESPACE = uuid.UUID("0f4f7c1a-5e0b-4d55-8a8e-1d1b9b7c6e21")
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class CompiledRule:
    rule: LinkageRule
    matches: Predicate


def compile_rules(topology: Topology) -> tuple[CompiledRule, ...]:
    """The topology's linkage rules, each ``match`` compiled against the camera_alarm schema."""
    if not topology.linkage:
        return ()
    schema = topology.schema_for(ALARM_TYPE)
    return tuple(CompiledRule(rule, compile_filter(rule.match, schema)) for rule in topology.linkage)


def case_id(rule: str, unit: str, alarm_id: str) -> str:
    return str(uuid.uuid5(CASE_NAMESPACE, f"{rule}/{unit}/{alarm_id}"))


def district_centre(district: str) -> str:
    """The department name of a district's command centre (``district_chengzhong``)."""
    return f"district_{district.lower()}"


def _unit(responsible: str, alarm: dict[str, Any], district: str) -> str | None:
    if responsible == CAMERA_OWNER:
        return alarm.get("owner_department")
    if responsible == DISTRICT_CENTRE:
        return district_centre(district)
    return responsible


def cases_for(
    alarm: dict[str, Any], rules: tuple[CompiledRule, ...], *, first: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """The city_case records (JSON form, status REPORTED, source LINKAGE) one alarm opens.
    An alarm without a district (not enriched, or a network-flap incident) opens none: a case
    must name its district. A ``camera_owner`` that is unknown is skipped. ``first``: for a
    storm's update, the version emitted first; rules that version matched are skipped."""
    district = (alarm.get("location") or {}).get("district")
    if not district or alarm.get("camera_id") == FLAP_CAMERA_ID:
        return []
    at = event_time_ms(alarm["occurred_at"])
    count = int(alarm.get("count") or 1)
    cases: list[dict[str, Any]] = []
    for compiled in rules:
        if not compiled.matches(alarm) or (first is not None and compiled.matches(first)):
            continue
        rule, spec = compiled.rule, compiled.rule.case
        for responsible in spec.responsible:
            unit = _unit(responsible, alarm, district)
            if not unit:
                continue
            cases.append(
                {
                    "case_id": case_id(rule.name, unit, alarm["alarm_id"]),
                    "status": "REPORTED",
                    "category": spec.category,
                    "title": f"{alarm['alarm_type'].replace('_', ' ').lower()} at camera {alarm['camera_id']}",
                    "description": f"opened by linkage rule {rule.name} from alarm {alarm['alarm_id']}"
                    + (f" ({count} alarms merged)" if count > 1 else ""),
                    "source": "LINKAGE",
                    "level": spec.level,
                    "district": district,
                    "location": alarm.get("location"),
                    "responsible_unit": unit,
                    "component_id": alarm["camera_id"],
                    "reported_at": iso_ms(at),
                    "updated_at": iso_ms(at),
                    "respond_by": iso_ms(at + int(spec.respond_within_h * HOUR_MS)),
                    "resolve_by": iso_ms(at + int(spec.resolve_within_h * HOUR_MS)),
                    "related_alarm_id": alarm["alarm_id"],
                }
            )
    return cases
