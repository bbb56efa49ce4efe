"""Linkage ("one point linkage, multi-level response"): alarms become city_case events for
the responsible units and the district centre, with deterministic case ids.

Pure logic only (not yet run by the faust app, and the rules are not yet read from
``topology.yaml``: the topology model has no ``linkage`` section yet). ``DEFAULT_RULES`` are
the two rules of the issue. A case id is ``uuid5(namespace, rule/unit/alarm_id)``: a replay of
the same alarm gives the same case ids, so it creates no second case.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from bus.processors.storms import FLAP_CAMERA_ID, SEVERITIES, event_time_ms, iso_ms

CASE_NAMESPACE = uuid.UUID("0f4f7c1a-5e0b-4d55-8a8e-1d1b9b7c6e21")

Target = Literal["owner", "district"] | str  # "owner": the camera's owner; "district": its command centre


class LinkageRule(BaseModel):
    """Alarms of these types (at least this severity) open one case per responsible unit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Rule name; part of every case id it makes.", examples=["fire-smoke"])
    alarm_types: list[str] = Field(min_length=1, examples=[["FIRE_SMOKE"]])
    min_severity: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"] = "LOW"
    category: str = Field(description="city_case category.", examples=["FIRE_HAZARD", "CAMERA_FAULT"])
    responsible: list[Target] = Field(
        min_length=1,
        description="Departments, or `owner` (the camera's owner) or `district` (its district command centre).",
        examples=[["fire_brigade", "district"]],
    )
    respond_within_h: float = Field(gt=0, examples=[0.25, 24])
    resolve_within_h: float = Field(gt=0, examples=[4, 72])


DEFAULT_RULES = (
    LinkageRule(
        name="fire-smoke", alarm_types=["FIRE_SMOKE"], category="FIRE_HAZARD",
        responsible=["fire_brigade", "district"], respond_within_h=0.25, resolve_within_h=4,
    ),
    LinkageRule(
        name="camera-maintenance", alarm_types=["CAMERA_OFFLINE", "TAMPERING"], category="CAMERA_FAULT",
        responsible=["owner"], respond_within_h=24, resolve_within_h=72,
    ),
)


def case_id(rule: str, unit: str, alarm_id: str) -> str:
    return str(uuid.uuid5(CASE_NAMESPACE, f"{rule}/{unit}/{alarm_id}"))


def _unit(target: str, alarm: dict[str, Any], district: str) -> str | None:
    if target == "owner":
        return alarm.get("owner_department")
    if target == "district":
        return f"district_{district.lower()}"
    return target


def cases_for(alarm: dict[str, Any], rules: tuple[LinkageRule, ...] | list[LinkageRule] = DEFAULT_RULES) -> list[dict[str, Any]]:
    """The city_case records (JSON form, status REPORTED, source LINKAGE) one alarm opens.
    An alarm without a district (not enriched, or a network-flap incident) opens none: a case
    must name its district. A responsible ``owner`` that is unknown is skipped."""
    district = (alarm.get("location") or {}).get("district")
    if not district or alarm.get("camera_id") == FLAP_CAMERA_ID:
        return []
    at = event_time_ms(alarm["occurred_at"])
    cases: list[dict[str, Any]] = []
    for rule in rules:
        if alarm["alarm_type"] not in rule.alarm_types:
            continue
        if SEVERITIES.index(alarm["severity"]) < SEVERITIES.index(rule.min_severity):
            continue
        for target in rule.responsible:
            unit = _unit(target, alarm, district)
            if not unit:
                continue
            count = int(alarm.get("count") or 1)
            cases.append(
                {
                    "case_id": case_id(rule.name, unit, alarm["alarm_id"]),
                    "status": "REPORTED",
                    "category": rule.category,
                    "title": f"{alarm['alarm_type'].replace('_', ' ').lower()} at camera {alarm['camera_id']}",
                    "description": f"opened by linkage rule {rule.name} from alarm {alarm['alarm_id']}"
                    + (f" ({count} alarms merged)" if count > 1 else ""),
                    "source": "LINKAGE",
                    "level": "DISTRICT",
                    "district": district,
                    "location": alarm.get("location"),
                    "responsible_unit": unit,
                    "component_id": alarm["camera_id"],
                    "reported_at": iso_ms(at),
                    "updated_at": iso_ms(at),
                    "respond_by": iso_ms(at + int(rule.respond_within_h * 3_600_000)),
                    "resolve_by": iso_ms(at + int(rule.resolve_within_h * 3_600_000)),
                    "related_alarm_id": alarm["alarm_id"],
                }
            )
    return cases
