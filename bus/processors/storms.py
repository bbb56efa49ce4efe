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

What a window holds that went out nowhere else (an offline alarm awaiting the flap decision,
the absorbed alarms of a storm's pending update) is also written to ``store`` (by
:meth:`StormMerger.write_pending`, before each offset commit; a faust table
in the app: a changelog, so it survives a crash), one entry per camera and window
(:func:`entry_name`), and removed when the window closes; a window of one alarm already emitted
is not written. :meth:`StormMerger.restore` reads them back after a restart. A window restored
after its close was published (a crash between the two) publishes the same versions with the
same ids again, which idempotent consumers drop.

Time is the records' own (``occurred_at``); the watermark is the latest event time seen
(the least over input partitions) and windows close when it passes their end. An alarm older
than every open window of its key is emitted alone, at once (never dropped, never held).
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import json
import uuid
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from bus.topology.filters import parse_rfc3339


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
    #: the store entries (name, version) whose content this emission publishes: hand them to
    #: :meth:`StormMerger.forget` once it is acknowledged, not before.
    discharges: tuple[tuple[str, int], ...] = ()

    @property
    def is_update(self) -> bool:
        return self.first is not None


def entry_name(kind: str, camera_id: str, *window: Any) -> str:
    """A store entry's name: JSON ``[kind, camera id, ...what tells the window apart]``."""
    return json.dumps([kind, camera_id, *window], separators=(",", ":"))


def entry_camera(name: str) -> str:
    """The camera of a store entry: its partition is the camera's."""
    return str(json.loads(name)[1])


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

    @property
    def pending(self) -> bool:
        """It absorbed alarms: an update is due when it closes."""
        return self.count != raw_count(self.first)

    def to_json(self, **extra: Any) -> str:
        return json.dumps({**asdict(self), **extra}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str) -> tuple[_Group, dict[str, Any]]:
        """The group, and the other fields it was stored with (``flap_start_ms``)."""
        data = json.loads(raw)
        group = cls(**{k: data.pop(k) for k in ("start_ms", "first", "count", "last_ms", "severity")})
        return group, data

    def update(self) -> Emission | None:
        """The update emitted when the window closes; None if it absorbed nothing."""
        if not self.pending:
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
    opened_by: str = ""  # the alarm id that opened it: two flaps may start at the same time
    cameras: dict[str, _Group] = field(default_factory=dict)

    @property
    def ref(self) -> tuple[int, str]:
        return self.start_ms, self.opened_by

    def name(self, camera_id: str) -> str:
        """Its store entry for ``camera_id``."""
        return entry_name("flap", camera_id, self.start_ms, self.opened_by)

    def stored(self, group: _Group, **extra: Any) -> str:
        return group.to_json(flap_start_ms=self.start_ms, flap_opened_by=self.opened_by, **extra)

    @property
    def raw_count(self) -> int:
        return sum(g.count for g in self.cameras.values())


class StormMerger:
    """Feed alarms (JSON form) with ``add``; it returns what to publish now: first alarms of
    windows at once, updates and flap decisions in event-time order of their window's close.
    ``flush`` closes every open window (idle city, shutdown, tests)."""

    def __init__(self, config: StormConfig | None = None, store: MutableMapping[str, str] | None = None) -> None:
        self.config = config or StormConfig()
        #: window key -> state (JSON) of the windows that hold something unpublished; None:
        #: the windows live in memory only.
        self.store = store
        self._stored: dict[str, int] = {}  # name -> version of what store holds (or will, once written)
        self._versions = itertools.count(1)
        #: writes not yet made to ``store`` (name -> state, None: remove), in order; a name keeps
        #: its first place, so a storm's entry is still written before the flap entry it replaced
        #: is removed. The app writes them before every offset commit (:meth:`write_pending`).
        self._pending: dict[str, str | None] = {}
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

    def restore(self) -> list[Emission]:
        """Reopen the windows of ``store`` that are not open here (after a restart, or when
        partitions were assigned). Returns what to publish now: the decisions of flap windows
        that had closed but whose entries were not forgotten yet (their emissions may not have
        been acknowledged), the same versions with the same ids as when they closed."""
        if self.store is None:
            return []
        self.write_pending()
        out: list[Emission] = []
        flaps: dict[tuple[int, str], dict[str, _Group]] = {}  # open at the crash (the latest), or closed unmarked
        incidents: dict[tuple[int, str], dict[str, tuple[_Group, str]]] = {}
        storms: dict[tuple[str, str], list[tuple[int, str, _Group]]] = {}
        decided: list[tuple[str, _Group]] = []  # flap entries closed with each camera's own alarm
        for name, raw in list(self.store.items()):
            if raw is None or name in self._stored:
                continue
            kind, camera = json.loads(name)[:2]
            group, extra = _Group.from_json(raw)
            ref, closed = (extra.get("flap_start_ms"), extra.get("flap_opened_by", "")), extra.get("closed")
            key = (camera, group.first["alarm_type"])
            if kind == "storm" and key not in self._groups:
                storms.setdefault(key, []).append((group.start_ms, name, group))
            elif kind == "flap" and closed == "first":
                decided.append((name, group))
            elif kind == "flap" and closed == "incident":
                incidents.setdefault(ref, {})[camera] = (group, name)
            elif kind == "flap" and not (self._flap and camera in self._flap.cameras):
                flaps.setdefault(ref, {})[camera] = group
            else:
                continue
            self._stored[name] = next(self._versions)
        out += [Emission(dict(group.first), discharges=self._discharge(name)) for name, group in decided]
        for key, windows in storms.items():  # the latest is open; older ones had closed unacknowledged
            windows.sort(key=lambda w: w[0])
            for _, name, group in windows[:-1]:
                update = group.update()
                if update is not None:
                    out.append(replace(update, discharges=self._discharge(name)))
            self._put(key, windows[-1][2])
        for (start, opened_by), members in sorted(incidents.items()):
            flap = _Flap(start, opened_by, {camera: group for camera, (group, _) in members.items()})
            discharges = tuple(d for _, name in members.values() for d in self._discharge(name))
            out.append(Emission(self._incident(flap), discharges=discharges))
        latest = max(flaps, default=None)
        for ref in sorted(flaps):  # only one is open at a time: older ones had closed unmarked
            if self._flap is not None and self._flap.ref != ref:
                out += self._close_flap()
            if self._flap is None:
                self._flap = _Flap(*ref)
            self._flap.cameras.update(flaps[ref])
            if ref != latest:
                out += self._close_flap()
        return out

    def forget(self, discharges: tuple[tuple[str, int], ...]) -> None:
        """Remove store entries whose content was published (``Emission.discharges``), unless
        saved again since (a new window of the same key)."""
        for name, version in discharges:
            if self._stored.get(name) == version:
                self._forget(name)

    # -- the store -------------------------------------------------------------------

    def write_pending(self) -> int:
        """Write what changed since the last call to ``store`` (a window absorbing alarms
        writes its entry once per call, not once per alarm); returns how many writes. Call it
        before committing the offsets of the alarms processed, so that the store is never
        behind them."""
        if self.store is None or not self._pending:
            return 0
        pending, self._pending = self._pending, {}
        for name, state in pending.items():
            if state is not None:
                self.store[name] = state
            elif name in self.store:
                del self.store[name]
        return len(pending)

    def _save(self, name: str, state: str) -> None:
        if self.store is not None:
            self._pending[name] = state
            self._stored[name] = next(self._versions)

    def _forget(self, name: str) -> None:
        """At once: only where what it held is published, or saved under another name of the
        same camera (one changelog partition keeps the two writes in order)."""
        if self._stored.pop(name, None) is not None:
            self._pending[name] = None

    def _discharge(self, name: str) -> tuple[tuple[str, int], ...]:
        version = self._stored.get(name)
        return ((name, version),) if version is not None else ()

    @staticmethod
    def _storm_name(key: tuple[str, str], group: _Group) -> str:
        return entry_name("storm", key[0], key[1], group.first["alarm_id"])

    def _save_storm(self, key: tuple[str, str], group: _Group) -> None:
        if group.pending:
            self._save(self._storm_name(key, group), group.to_json())

    # -- windows ---------------------------------------------------------------------

    def _late(self, ms: int) -> bool:
        return self.watermark is not None and ms < self.watermark - self.config.window_ms

    def _add_storm(self, alarm: dict[str, Any], ms: int) -> list[Emission]:
        key = (alarm["camera_id"], alarm["alarm_type"])
        group = self._groups.get(key)
        if group is not None and group.covers(ms, self.config.window_ms):
            group.absorb(alarm, ms)
            self._save_storm(key, group)
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
            flap = self._flap = _Flap(ms, alarm["alarm_id"])
        group = flap.cameras.get(alarm["camera_id"])
        if group is None:
            group = flap.cameras[alarm["camera_id"]] = _Group.open(alarm, ms)
        else:
            group.absorb(alarm, ms)
        self._save(flap.name(alarm["camera_id"]), flap.stored(group))
        return out

    def _put(self, key: tuple[str, str], group: _Group) -> None:
        self._groups[key] = group
        heapq.heappush(self._closing, (group.start_ms, next(self._opened), key, group))

    def _close_group(self, key: tuple[str, str]) -> list[Emission]:
        group = self._groups.pop(key)
        update = group.update()
        if update is None:  # held nothing unpublished (never stored)
            return []
        return [replace(update, discharges=self._discharge(self._storm_name(key, group)))]

    def _close_flap(self) -> list[Emission]:
        flap, self._flap = self._flap, None
        if flap is None:
            return []
        names = [flap.name(camera_id) for camera_id in flap.cameras]
        # An entry that stays until its emission is acknowledged is marked with the decision,
        # so that a restart publishes that again rather than reopening the window to later alarms.
        if len(flap.cameras) >= self.config.flap_threshold:
            for (camera_id, group), name in zip(flap.cameras.items(), names):
                if name in self._stored:
                    self._save(name, flap.stored(group, closed="incident"))
            discharges = tuple(d for name in names for d in self._discharge(name))
            return [Emission(self._incident(flap), discharges=discharges)]
        out: list[Emission] = []
        for (camera_id, group), name in zip(flap.cameras.items(), names):  # ordinary storms from here on
            key = (camera_id, OFFLINE)
            held = self._groups.get(key)
            if held is not None and held.covers(group.start_ms, self.config.window_ms):
                held.absorb_group(group)  # its first alarm went out already
                self._save_storm(key, held)
                self._forget(name)  # after the storm's entry that took it over: one partition, in order
                continue
            if held is not None:
                out += self._close_group(key)
            self._put(key, group)
            if group.pending:  # the storm's entry holds its first alarm too
                self._save_storm(key, group)
                self._forget(name)
            elif name in self._stored:
                self._save(name, flap.stored(group, closed="first"))
            out.append(Emission(dict(group.first), discharges=self._discharge(name)))
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
