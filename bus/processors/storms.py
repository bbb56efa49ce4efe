"""Alarm storms and network flaps, in event time, without making an alarm wait for its window.

- A storm: alarms of the same camera and alarm type whose event times fall within
  ``window_ms`` (default 60 s) of the first one. The first alarm of a window is emitted at
  once, unchanged: a fire alarm reaches the fire brigade now, not when its window closes.
  The later alarms of the window are absorbed. When the window closes, if it absorbed any,
  ONE update of the first alarm is emitted: the same ``alarm_id`` (consumers and sinks upsert
  by id), ``count`` = the number of raw alarms (the sum of their counts), the highest severity
  seen, the description "alarm storm: N ...". A window of one alarm emits nothing more.
- A network flap: CAMERA_OFFLINE alarms of at least ``flap_threshold`` distinct cameras
  within ``flap_window_ms`` of the first one become one incident (a camera_alarm on the
  pseudo camera ``NETWORK-FLAP``), not hundreds of alarms and hundreds of cases. That must be
  decided before anything goes out, so offline alarms are held for the flap window (10 s of
  event time by default), and only for it. Fewer cameras: each camera's offline alarms go on
  as an ordinary storm, its first alarm emitted when the flap window closes, its update (if
  any) when the storm window closes.

Every output is an :class:`Emission`: the alarm, and for an update the version emitted first,
so that linkage can tell which cases that version opened already. An update's CloudEvents id
differs from its first version's (:func:`bus.processors.encoding.derived_ce_id` derives it from
the id and the count, and an update counts at least one raw alarm more). Nothing here reads the
wall clock or draws a random id: a replay gives the same emissions with the same ids.

Time is the records' own (``occurred_at``); the watermark is the latest event time seen
(the least over input partitions) and windows close when it passes their end. An alarm older
than every open window of its key is emitted alone, at once (never dropped, never held).
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

from bus.topology.models import parse_rfc3339

SEVERITIES = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
OFFLINE = "CAMERA_OFFLINE"
FLAP_CAMERA_ID = "NETWORK-FLAP"
#: uuid5 namespace of the ids the processors derive (replays give the same ids).
DERIVED_NAMESPACE = uuid.UUID("5b0c6c1e-9d3c-4f0a-9a51-3c1f6f0c2a77")


def event_time_ms(value: Any) -> int:
    """Milliseconds since 1970 of an RFC 3339 string, an aware datetime or a number."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        parsed = parse_rfc3339(value)
        if parsed is None:
            raise ValueError(f"not an RFC 3339 time: {value!r}")
        value = parsed
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError(f"time without UTC offset: {value!r}")
        return int(value.timestamp() * 1000)
    raise ValueError(f"not a time: {value!r}")


def iso_ms(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class StormConfig:
    window_ms: int = 60_000
    flap_window_ms: int = 10_000
    flap_threshold: int = 100


@dataclass(frozen=True)
class Emission:
    """One alarm to publish. ``first`` is set on the update of a storm: the version of the same
    alarm (same ``alarm_id``) emitted when its window opened."""

    alarm: dict[str, Any]
    first: dict[str, Any] | None = None

    @property
    def is_update(self) -> bool:
        return self.first is not None


def raw_count(alarm: dict[str, Any]) -> int:
    """How many raw alarms a record stands for: its ``count``, at least 1 (a record is an alarm),
    so that an update always counts more than the version it updates."""
    return max(1, int(alarm.get("count") or 1))


def _higher(a: str, b: str) -> str:
    return b if SEVERITIES.index(b) > SEVERITIES.index(a) else a


@dataclass
class _Group:
    """Open storm window of one (camera, alarm type); ``first`` opened it."""

    start_ms: int
    first: dict[str, Any]
    count: int
    last_ms: int
    severity: str

    @classmethod
    def open(cls, alarm: dict[str, Any], ms: int) -> _Group:
        return cls(start_ms=ms, first=dict(alarm), count=raw_count(alarm), last_ms=ms,
                   severity=alarm.get("severity", "LOW"))

    def covers(self, ms: int, window_ms: int) -> bool:
        return self.start_ms <= ms < self.start_ms + window_ms

    def absorb(self, alarm: dict[str, Any], ms: int) -> None:
        self.count += raw_count(alarm)
        self.last_ms = max(self.last_ms, ms)
        self.severity = _higher(self.severity, alarm.get("severity", "LOW"))

    def absorb_group(self, other: _Group) -> None:
        self.count += other.count
        self.last_ms = max(self.last_ms, other.last_ms)
        self.severity = _higher(self.severity, other.severity)

    def update(self) -> Emission | None:
        """The update emitted when the window closes; None if it absorbed nothing."""
        if self.count == raw_count(self.first):
            return None
        out = dict(self.first)
        out["count"] = self.count
        out["severity"] = self.severity
        span = (self.last_ms - self.start_ms) / 1000
        out["description"] = f"alarm storm: {self.count} {out['alarm_type']} alarms within {span:g} s" + (
            f"; first: {self.first['description']}" if self.first.get("description") else ""
        )
        return Emission(out, first=self.first)


@dataclass
class _Flap:
    """Open flap window: CAMERA_OFFLINE alarms of all cameras since ``start_ms``, held."""

    start_ms: int
    cameras: dict[str, _Group] = field(default_factory=dict)

    @property
    def raw_count(self) -> int:
        return sum(g.count for g in self.cameras.values())


class StormMerger:
    """Feed alarms (JSON form) with ``add``; it returns what to publish now: first alarms of
    windows at once, updates and flap decisions in event-time order of their window's close.
    ``flush`` closes every open window (idle city, shutdown, tests)."""

    def __init__(self, config: StormConfig | None = None) -> None:
        self.config = config or StormConfig()
        self.watermark: int | None = None
        self._partition_max: dict[int, int] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        # (start_ms, opened, key, group) of every group opened: windows close in this order
        # without a scan of every open window per alarm. An entry whose group was closed
        # or replaced meanwhile is stale and skipped when it comes up.
        self._closing: list[tuple[int, int, tuple[str, str], _Group]] = []
        self._opened = itertools.count()
        self._flap: _Flap | None = None

    # -- input -----------------------------------------------------------------------

    def add(self, alarm: dict[str, Any], ms: int | None = None, partition: int = 0) -> list[Emission]:
        """``partition``: the input partition; the watermark is the least of the partitions'
        latest event times, so a partition read ahead does not make another's alarms late."""
        ms = event_time_ms(alarm["occurred_at"]) if ms is None else ms
        out: list[Emission] = []
        if alarm["alarm_type"] == OFFLINE and self.config.flap_threshold > 0 and not self._late(ms):
            out += self._add_offline(alarm, ms)
        else:
            out += self._add_storm(alarm, ms)
        self._partition_max[partition] = max(self._partition_max.get(partition, ms), ms)
        self.watermark = min(self._partition_max.values())
        out += self._close(self.watermark)
        return out

    def flush(self) -> list[Emission]:
        return self._close(None)

    @property
    def open_windows(self) -> int:
        return len(self._groups) + (len(self._flap.cameras) if self._flap else 0)

    # -- windows ---------------------------------------------------------------------

    def _late(self, ms: int) -> bool:
        return self.watermark is not None and ms < self.watermark - self.config.window_ms

    def _add_storm(self, alarm: dict[str, Any], ms: int) -> list[Emission]:
        key = (alarm["camera_id"], alarm["alarm_type"])
        group = self._groups.get(key)
        if group is not None and group.covers(ms, self.config.window_ms):
            group.absorb(alarm, ms)
            return []
        if (group is None and self._late(ms)) or (group is not None and ms < group.start_ms):
            return [Emission(dict(alarm))]  # too late for any window, or older than its key's: alone
        out = self._close_group(key) if group is not None else []
        self._put(key, _Group.open(alarm, ms))
        out.append(Emission(dict(alarm)))  # the first of its window: at once
        return out

    def _add_offline(self, alarm: dict[str, Any], ms: int) -> list[Emission]:
        out: list[Emission] = []
        flap = self._flap
        if flap is not None and not (flap.start_ms <= ms < flap.start_ms + self.config.flap_window_ms):
            if ms < flap.start_ms:
                return self._add_storm(alarm, ms)
            out += self._close_flap()
            flap = None
        if flap is None:
            flap = self._flap = _Flap(start_ms=ms)
        group = flap.cameras.get(alarm["camera_id"])
        if group is None:
            flap.cameras[alarm["camera_id"]] = _Group.open(alarm, ms)
        else:
            group.absorb(alarm, ms)
        return out

    def _put(self, key: tuple[str, str], group: _Group) -> None:
        self._groups[key] = group
        heapq.heappush(self._closing, (group.start_ms, next(self._opened), key, group))

    def _close_group(self, key: tuple[str, str]) -> list[Emission]:
        update = self._groups.pop(key).update()
        return [update] if update is not None else []

    def _close_flap(self) -> list[Emission]:
        flap, self._flap = self._flap, None
        if flap is None:
            return []
        if len(flap.cameras) >= self.config.flap_threshold:
            return [Emission(self._incident(flap))]
        out: list[Emission] = []
        for camera_id, group in flap.cameras.items():  # not a flap: ordinary storms from here on
            key = (camera_id, OFFLINE)
            held = self._groups.get(key)
            if held is not None and held.covers(group.start_ms, self.config.window_ms):
                held.absorb_group(group)  # its first alarm went out already
                continue
            if held is not None:
                out += self._close_group(key)
            self._put(key, group)
            out.append(Emission(dict(group.first)))
        return out

    def _incident(self, flap: _Flap) -> dict[str, Any]:
        cameras = len(flap.cameras)
        last = max(g.last_ms for g in flap.cameras.values())
        districts: dict[str, int] = {}
        owners: set[str] = set()
        severity = "LOW"
        for group in flap.cameras.values():
            district = (group.first.get("location") or {}).get("district") or "unknown district"
            districts[district] = districts.get(district, 0) + 1
            if group.first.get("owner_department"):
                owners.add(group.first["owner_department"])
            severity = _higher(severity, group.severity)
        by_district = ", ".join(f"{d} {n}" for d, n in sorted(districts.items()))
        first_ids = sorted(g.first["alarm_id"] for g in flap.cameras.values())
        return {
            "alarm_id": str(uuid.uuid5(DERIVED_NAMESPACE, f"flap:{flap.start_ms}:{first_ids[0]}")),
            "camera_id": FLAP_CAMERA_ID,
            "alarm_type": OFFLINE,
            "severity": "CRITICAL" if cameras >= 10 * self.config.flap_threshold else max(severity, "HIGH", key=SEVERITIES.index),
            "occurred_at": iso_ms(flap.start_ms),
            "location": None,
            "owner_department": owners.pop() if len(owners) == 1 else None,
            "count": flap.raw_count,
            "description": f"network flap: {cameras} cameras offline within {(last - flap.start_ms) / 1000:g} s "
            f"({by_district})",
        }

    def _close(self, watermark: int | None) -> list[Emission]:
        """Close windows whose end is at or before ``watermark`` (all when None)."""
        out: list[Emission] = []
        if self._flap is not None and (watermark is None or self._flap.start_ms + self.config.flap_window_ms <= watermark):
            out += self._close_flap()
        closing = self._closing
        while closing and (watermark is None or closing[0][0] + self.config.window_ms <= watermark):
            _, _, key, group = heapq.heappop(closing)
            if self._groups.get(key) is group:
                out += self._close_group(key)
        return out
