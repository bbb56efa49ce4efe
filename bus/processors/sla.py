"""The maintenance promise: per camera, when a fault opened, was answered and was repaired;
a breach when a fault is not answered within 24 h or not repaired within 72 h; fleet
availability (cameras online / cameras known, target at least 95%).

Facts, all in event time (nothing reads the wall clock):
- ``camera_status`` OFFLINE opens a fault (if none is open); ONLINE repairs the open one.
  A status older than the last one applied to the camera is ignored.
- Updates of its maintenance case (a city_case of category CAMERA_FAULT whose
  ``component_id`` is the camera): DISPATCHED or HANDLING answer the fault, RESOLVED or
  CLOSED repair it (a repair answers too). A case update read before the status that opens
  its fault (two topics, no order between them) is kept and applied when the fault opens
  at or before the update's time.
- The clock is the latest event time read. A fault breaches its answer (repair) deadline
  when the clock passes ``opened_at + answer_within`` (``+ repair_within``) before it was
  answered (repaired), or when the answer (repair) comes later than that. Each fault
  breaches each deadline at most once.

A breach is a city_case escalating the fault to the city-level platform (category
CAMERA_FAULT, level CITY, source LINKAGE, responsible unit the camera's owner), so it
reaches the district centres and supervisors through the case subscriptions they already
have, with no new event type. Its id is ``uuid5(camera/opened_at/kind)``: a replay of the
same records gives the same escalation case, never a second one. The tracker ignores
updates of its own escalation cases (their ids are kept per camera).

The deadlines are those of the linkage rule that opens CAMERA_FAULT cases in
``topology.yaml`` (the same promise written once), 24 h and 72 h without one.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Protocol

from bus.processors.cameras import CameraInfo
from bus.processors.storms import event_time_ms, iso_ms
from bus.topology.models import Topology

FAULT_CATEGORY = "CAMERA_FAULT"
ANSWERED = frozenset({"DISPATCHED", "HANDLING"})
REPAIRED = frozenset({"RESOLVED", "CLOSED"})
HOUR_MS = 3_600_000
SLA_NAMESPACE = uuid.UUID("a3c9e1f4-6b2d-4e8a-9c71-2f5d8b0e4a19")
#: Escalation case ids kept per camera (to ignore their updates); older faults' drop out.
KEPT_ESCALATIONS = 8

Deadline = Literal["answer", "repair"]


@dataclass(frozen=True)
class SlaPolicy:
    answer_within_ms: int = 24 * HOUR_MS
    repair_within_ms: int = 72 * HOUR_MS

    @classmethod
    def from_topology(cls, topology: Topology) -> SlaPolicy:
        """The deadlines of the first linkage rule opening CAMERA_FAULT cases, else 24 h / 72 h."""
        for rule in topology.linkage:
            if rule.case.category == FAULT_CATEGORY:
                return cls(int(rule.case.respond_within_h * HOUR_MS), int(rule.case.resolve_within_h * HOUR_MS))
        return cls()

    def deadline(self, opened_at: int, kind: Deadline) -> int:
        return opened_at + (self.answer_within_ms if kind == "answer" else self.repair_within_ms)


@dataclass(frozen=True)
class CameraSla:
    """One camera's entry of the SLA table (camera_id is the table key), as JSON."""

    camera_id: str
    owner_department: str | None = None
    location: dict[str, Any] | None = None  # city.common.Location as JSON
    status_at: int | None = None  # event time of the last status that changed the entry
    opened_at: int | None = None  # the current (or last) fault
    answered_at: int | None = None
    repaired_at: int | None = None
    case_id: str | None = None  # its maintenance case, once one is seen
    breached: list[str] = field(default_factory=list)  # deadlines of the current fault already breached
    case_answered_at: int | None = None  # latest case facts, for a fault not open yet
    case_repaired_at: int | None = None
    escalations: list[str] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.opened_at is not None and self.repaired_at is None

    @property
    def district(self) -> str | None:
        return (self.location or {}).get("district")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> CameraSla:
        return cls(**{k: value[k] for k in cls.__dataclass_fields__ if k in value})

    def answer(self, at: int) -> CameraSla:
        if not self.open or self.opened_at is None or at < self.opened_at or self.answered_at is not None:
            return self
        return replace(self, answered_at=at)

    def repair(self, at: int) -> CameraSla:
        if not self.open or self.opened_at is None or at < self.opened_at:
            return self
        return replace(self, answered_at=min(self.answered_at or at, at), repaired_at=at)


def breach_case_id(camera_id: str, opened_at: int, kind: Deadline) -> str:
    return str(uuid.uuid5(SLA_NAMESPACE, f"{camera_id}/{opened_at}/{kind}"))


def key_partition(key: str, partitions: int) -> int:
    """The partition librdkafka's default partitioner (``consistent_random``: CRC-32 of the
    key) gives ``key``: the publisher's, so records the processors key themselves land on the
    partition of the camera's camera_status records (faust tables need co-partitioned input)."""
    return zlib.crc32(key.encode("utf-8")) % partitions


class SlaTracker:
    """Feed records with :meth:`status` and :meth:`case`, advance the clock of cameras not
    in a record with :meth:`due`. Each returns the escalation cases (city_case, JSON form) to
    publish. ``store``: camera id -> :class:`CameraSla` as JSON (a faust table in the app)."""

    def __init__(self, store: MutableMapping[str, Any], policy: SlaPolicy | None = None) -> None:
        self.store = store
        self.policy = policy or SlaPolicy()
        self.clock: int | None = None
        self.unplaced = 0  # breaches not published: the camera's district is unknown
        # camera id -> event time of its latest status, for the order check; not in the store,
        # so that a heartbeat that changes nothing writes nothing (after a restart the store's
        # ``status_at``, the last change, checks the order instead)
        self._reported: dict[str, int] = {}

    def _advance(self, at: int) -> int:
        self.clock = at if self.clock is None else max(self.clock, at)
        return self.clock

    def _get(self, camera_id: str) -> CameraSla:
        held = self.store.get(camera_id)
        return CameraSla.from_json(held) if held else CameraSla(camera_id)

    def _put(self, before: CameraSla, after: CameraSla) -> None:
        if after != before:
            self.store[after.camera_id] = after.to_json()

    # -- input -----------------------------------------------------------------------------

    def status(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        """A camera_status record (JSON form)."""
        at = event_time_ms(record["reported_at"])
        clock = self._advance(at)
        camera_id = record["camera_id"]
        before = self._get(camera_id)
        entry = replace(
            before,
            owner_department=record.get("owner_department") or before.owner_department,
            location=record.get("location") or before.location,
        )
        known = [t for t in (entry.status_at, self._reported.get(camera_id)) if t is not None]
        if not known or at >= max(known):
            self._reported[camera_id] = at
            applied = entry
            if record["status"] == "OFFLINE" and not entry.open:
                applied = self._open(entry, at)
            elif record["status"] == "ONLINE":
                applied = entry.repair(at)
            if applied != entry or entry.status_at is None:
                entry = replace(applied, status_at=at)
        entry, out = self._check(entry, clock)
        self._put(before, entry)
        return out

    def case(self, camera_id: str, record: dict[str, Any]) -> list[dict[str, Any]]:
        """An update of a CAMERA_FAULT city_case (JSON form) about ``camera_id``."""
        at = event_time_ms(record["updated_at"])
        clock = self._advance(at)
        before = self._get(camera_id)
        if record["case_id"] in before.escalations:
            return []
        entry = before
        if record["status"] in ANSWERED:
            entry = replace(entry, case_answered_at=max(entry.case_answered_at or at, at)).answer(at)
        elif record["status"] in REPAIRED:
            entry = replace(entry, case_repaired_at=max(entry.case_repaired_at or at, at)).repair(at)
        if entry.open and entry.opened_at is not None and at >= entry.opened_at:
            entry = replace(entry, case_id=record["case_id"])
        entry, out = self._check(entry, clock)
        self._put(before, entry)
        return out

    def due(self, at: int, camera_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Advance the clock to ``at`` (event time) and check the open faults of ``camera_ids``
        (default: every camera in the store)."""
        clock = self._advance(at)
        out: list[dict[str, Any]] = []
        for camera_id in list(self.store.keys()) if camera_ids is None else camera_ids:
            before = self._get(camera_id)
            if not before.open:
                continue
            entry, breaches = self._check(before, clock)
            self._put(before, entry)
            out += breaches
        return out

    # -- faults ----------------------------------------------------------------------------

    def _open(self, entry: CameraSla, at: int) -> CameraSla:
        entry = replace(entry, opened_at=at, answered_at=None, repaired_at=None, case_id=None, breached=[])
        if entry.case_answered_at is not None and entry.case_answered_at >= at:
            entry = entry.answer(entry.case_answered_at)
        if entry.case_repaired_at is not None and entry.case_repaired_at >= at:
            entry = entry.repair(entry.case_repaired_at)
        return entry

    def _check(self, entry: CameraSla, clock: int) -> tuple[CameraSla, list[dict[str, Any]]]:
        if entry.opened_at is None:
            return entry, []
        out: list[dict[str, Any]] = []
        checks: tuple[tuple[Deadline, int | None], ...] = (("answer", entry.answered_at), ("repair", entry.repaired_at))
        for kind, done in checks:
            deadline = self.policy.deadline(entry.opened_at, kind)
            late = done > deadline if done is not None else clock > deadline
            if kind in entry.breached or not late:
                continue
            case = breach_case(entry, kind, deadline, done, self.policy)
            entry = replace(entry, breached=[*entry.breached, kind])
            if case is None:
                self.unplaced += 1
                continue
            entry = replace(entry, escalations=[*entry.escalations, case["case_id"]][-KEPT_ESCALATIONS:])
            out.append(case)
        return entry, out


def breach_case(
    entry: CameraSla, kind: Deadline, deadline: int, done: int | None, policy: SlaPolicy
) -> dict[str, Any] | None:
    """The escalation case (city_case JSON form) of one breach; None when the camera's district
    is unknown (a case must name its district)."""
    assert entry.opened_at is not None
    if entry.district is None:
        return None
    hours = (policy.answer_within_ms if kind == "answer" else policy.repair_within_ms) / HOUR_MS
    verb = "answered" if kind == "answer" else "repaired"
    when = f"{verb} late, at {iso_ms(done)}" if done is not None else f"not {verb} by the deadline"
    return {
        "case_id": breach_case_id(entry.camera_id, entry.opened_at, kind),
        "status": "REPORTED",
        "category": FAULT_CATEGORY,
        "title": f"maintenance promise broken: camera {entry.camera_id} not {verb} within {hours:g} h",
        "description": f"fault opened {iso_ms(entry.opened_at)}, {kind} deadline {iso_ms(deadline)}, {when}"
        + (f"; maintenance case {entry.case_id}" if entry.case_id else "; no maintenance case seen"),
        "source": "LINKAGE",
        "level": "CITY",
        "district": entry.district,
        "location": entry.location,
        "responsible_unit": entry.owner_department,
        "component_id": entry.camera_id,
        "reported_at": iso_ms(deadline),
        "updated_at": iso_ms(deadline),
    }


# -- fleet availability --------------------------------------------------------------------


@dataclass(frozen=True)
class Availability:
    online: int
    total: int

    @property
    def ratio(self) -> float:
        return self.online / self.total if self.total else 0.0

    def to_json(self, at: dt.datetime) -> dict[str, Any]:
        """The value of the availability topic (``ratio`` 0.0 when no camera is known)."""
        stamp = at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return {"online": self.online, "total": self.total, "ratio": round(self.ratio, 6), "at": stamp}


ALL = "all"


def fleet_availability(cameras: Iterable[CameraInfo]) -> dict[str, Availability]:
    """Cameras ONLINE / cameras whose status is known, per district and overall (``all``).
    A camera without a known status (imported, never reported) is not counted; one without
    a district counts in ``all`` only."""
    counts: dict[str, list[int]] = {ALL: [0, 0]}
    for camera in cameras:
        if camera.status is None:
            continue
        online = int(camera.status == "ONLINE")
        for key in (ALL, camera.district) if camera.district else (ALL,):
            pair = counts.setdefault(key, [0, 0])
            pair[0] += online
            pair[1] += 1
    return {key: Availability(online, total) for key, (online, total) in counts.items()}


class AvailabilityMonitor(Protocol):
    """Where the fleet's availability figures go (the ops monitor is one)."""

    def set_availability(self, online: int, total: int, *, district: str = "all") -> None: ...


class AvailabilityReporter:
    """Turns the camera table into the figures to publish: those that changed since the last
    report (a compacted topic keeps the last per key), each also set on the monitor."""

    def __init__(self, monitor: AvailabilityMonitor | None = None) -> None:
        self.monitor = monitor
        self._last: dict[str, Availability] = {}

    def report(self, cameras: Iterable[CameraInfo], at: dt.datetime) -> list[tuple[str, dict[str, Any]]]:
        """(key, JSON value) of every figure that changed: key ``all`` or a district."""
        figures = fleet_availability(cameras)
        changed = [(key, figure) for key, figure in sorted(figures.items()) if self._last.get(key) != figure]
        if self.monitor is not None:
            for key, figure in changed:
                self.monitor.set_availability(figure.online, figure.total, district=key)
        self._last = figures
        return [(key, figure.to_json(at)) for key, figure in changed]


def cameras_of(values: Iterable[Any]) -> Iterator[CameraInfo]:
    """The camera table's values (JSON) as CameraInfo."""
    return (CameraInfo.from_json(v) for v in values if v)
