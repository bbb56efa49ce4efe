"""The figures the city runs on, counted from the records the bus carries: sharing, the
maintenance promise, throughput per event type, publish -> delivery latency per subscription.

Where each figure comes from (docs/figures.md says the same for the city's readers):

- **Sharing.** Every record of a subscription topic (one department's own topic) carries its
  publishing department in ``ce_source`` and the canonical record it was routed from in
  ``bus_src`` (``topic:partition:offset``, written by the router). A record a department
  receives from another department is *received from others*; a canonical record is
  *shared* when at least one of its routed copies reached a department other than its
  publisher. The denominators are the records of each event type's routed topic (the
  canonical topic, or the processors' enriched topic for ``route_from: enriched``): every
  record a department published, as the router reads it. Counted over what the topics hold.
- **The maintenance promise.** The processors' SLA table (``camera_sla``), read from the
  changelog faust writes it to: one JSON entry per camera holding its current fault (opened,
  answered, repaired, and the deadlines the tracker declared broken, in event time). Each
  changelog record is a change of an entry, so reading from the start gives every fault the
  changelog still holds; compaction may drop the earlier faults of a camera, never its current
  one. Nothing is recomputed: a deadline is broken when the tracker says so. Working order
  (cameras online) is the processors' availability topic, read by the page.
- **Throughput.** The records of each event type's canonical topic (what its publisher sent)
  and of its subscription topics (what departments got), by record timestamp.
- **Latency.** For each subscription record: its timestamp (when the router wrote it to the
  department's topic) minus its ``ce_time`` (when its publisher published it). Both are whole
  milliseconds, so the percentiles are exact. For an event type routed from the processors'
  output (camera alarms) the routed record is the processors' enriched one, and its ``ce_time``
  is when the processors published it.

"The last hour" is the current minute and the 59 before it, by record timestamp (whole
minutes since the epoch); "per second" is the last full minute's count / 60. Percentiles are
nearest-rank: the q-quantile of ``n`` samples is the ``ceil(q * n)``-th smallest.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    IsolationLevel,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import OffsetSpec
from pydantic import BaseModel, ConfigDict, Field

from bus.errors import BusError
from bus.kafka.admin import admin
from bus.kafka.config import KafkaSettings, consumer_config
from bus.kafka.consuming import take_batch
from bus.ops.metrics import BusMonitor
from bus.processors.sla import CameraSla, Deadline, SlaPolicy, breach_case_id
from bus.processors.storms import iso_ms
from bus.processors.topics import SLA_TABLE, changelog_topic, runs_processors
from bus.routing.router import SRC_HEADER
from bus.topology.models import Topology

log = structlog.get_logger(__name__)

TP = tuple[str, int]

#: The programme's target: 60% of the government's information resources shared.
SHARING_TARGET = 0.6
#: The maintenance promise: at least 95% of the cameras in working order.
WORKING_ORDER_TARGET = 0.95
#: "The last hour": the current minute and the 59 before it.
WINDOW_MINUTES = 60
#: Percentiles, in thousandths (integer arithmetic: the rank is exact).
QUANTILES = {"p50": 500, "p99": 990}
#: Breaches listed on the page (the latest first); the count covers them all.
BREACHES_SHOWN = 100
ALL = "all"
DEADLINES: tuple[Deadline, ...] = ("answer", "repair")


# -- pure parts ----------------------------------------------------------------------------------


def minute_of(ms: int) -> int:
    return ms // 60_000


def window(now: float) -> range:
    """The minutes (since the epoch) of "the last hour" at ``now`` (epoch seconds), oldest first."""
    current = int(now // 60)
    return range(current - WINDOW_MINUTES + 1, current + 1)


def nearest_rank(counts: Mapping[int, int], permille: int) -> int | None:
    """The ``ceil(permille / 1000 * n)``-th smallest of the ``n`` samples counted in ``counts``
    (value -> how many times); None without samples."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = max(1, -(-permille * total // 1000))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    raise AssertionError("unreachable: the rank is at most the total")


def ce_time_ms(value: bytes | None) -> int | None:
    """Milliseconds since the epoch of a ``ce_time`` header (RFC 3339); None when absent or bad."""
    if not value:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if stamp.tzinfo is None:
        return None
    delta = stamp - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def parse_src(value: bytes | None) -> TP | None:
    """``bus_src`` (``topic:partition:offset``) as ((topic, partition), offset)."""
    if not value:
        return None
    try:
        topic, partition, offset = value.decode("utf-8").rsplit(":", 2)
        return (topic, int(partition)), int(offset)  # type: ignore[return-value]
    except (UnicodeDecodeError, ValueError):
        return None


class OffsetSet:
    """A set of offsets of one partition, as bits in chunks of 65,536 offsets (8 KB each)."""

    SHIFT = 16

    def __init__(self) -> None:
        self._chunks: dict[int, bytearray] = {}

    def add(self, offset: int) -> bool:
        """Add ``offset``; True when it was not there."""
        chunk = self._chunks.get(offset >> self.SHIFT)
        if chunk is None:
            chunk = self._chunks[offset >> self.SHIFT] = bytearray(1 << (self.SHIFT - 3))
        index = offset & ((1 << self.SHIFT) - 1)
        byte, bit = index >> 3, 1 << (index & 7)
        if chunk[byte] & bit:
            return False
        chunk[byte] |= bit
        return True


# -- what the page and /metrics show ------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DepartmentSharing(_Model):
    department: str
    title: str
    published: int = Field(description="Records it published on the bus (its event types' routed topics).")
    shared: int = Field(description="Of those, records that reached at least one other department.")
    received: int = Field(description="Records it received from other departments.")
    received_from: dict[str, int] = Field(description="Publishing department -> records received from it.")


class EventTypeSharing(_Model):
    event_type: str
    publisher: str
    records: int = Field(description="Records on its routed topic.")
    shared: int = Field(description="Of those, records that reached a department other than their publisher.")
    reached: list[str] = Field(description="Departments other than the publisher that received its records.")


class Sharing(_Model):
    target: float = SHARING_TARGET
    event_types: int
    event_types_shared: int = Field(description="Event types of which a record reached another department.")
    event_types_share: float | None
    records: int
    records_shared: int
    records_share: float | None
    departments: list[DepartmentSharing]
    by_event_type: list[EventTypeSharing]


class DeadlineFigures(_Model):
    """The faults' outcome for one deadline (answer within 24 h, or repair within 72 h)."""

    kept: int = Field(description="Done in time.")
    broken: int = Field(description="Declared broken by the SLA tracker (done late, or not done by the deadline).")
    pending: int = Field(description="Not done yet, the deadline not passed.")
    overdue: int = Field(description="Still not done, the deadline passed (part of broken).")


class DistrictFaults(_Model):
    district: str = Field(description="A district, or 'all'.")
    open: int
    faults: int = Field(description="Faults the SLA table's changelog holds (open or repaired).")
    answer: DeadlineFigures
    repair: DeadlineFigures


class Breach(_Model):
    camera_id: str
    district: str | None
    owner_department: str | None
    deadline: Deadline
    opened_at: str
    due_at: str
    done_at: str | None = Field(description="When it was answered (repaired), late; None: not yet.")
    case_id: str | None = Field(description="The escalation case the processors publish (city_case), when the "
                                            "camera's district is known.")


class Maintenance(_Model):
    working_order_target: float = WORKING_ORDER_TARGET
    answer_within_h: float
    repair_within_h: float
    districts: list[DistrictFaults] = Field(description="'all' first, then each district with faults.")
    breaches: list[Breach] = Field(description=f"The latest {BREACHES_SHOWN} at most, the latest due first.")
    breaches_total: int


class EventTypeThroughput(_Model):
    event_type: str
    publisher: str
    last_hour: int = Field(description="Records published in the last hour (its canonical topic).")
    per_second: float = Field(description="Records published per second over the last full minute.")
    delivered_last_hour: int = Field(description="Records delivered to its subscriptions' topics in the last hour.")
    per_minute: list[int] = Field(description="Records published in each minute of the last hour, oldest first.")


class SubscriptionLatency(_Model):
    subscription: str
    department: str
    event_type: str
    deliveries: int = Field(description="Records delivered in the last hour.")
    measured: int = Field(description="Of those, records with a publish time (ce_time).")
    p50_s: float | None
    p99_s: float | None
    max_s: float | None


class CityFigures(_Model):
    at: float
    window_start: float = Field(description="Epoch seconds of the first minute of 'the last hour'.")
    records_read: int
    caught_up: bool = Field(description="False while the reader is still reading what the topics held.")
    sharing: Sharing
    maintenance: Maintenance | None = Field(description="None: the topology runs no processors.")
    throughput: list[EventTypeThroughput]
    latency: list[SubscriptionLatency]


# -- counting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Subscription:
    name: str
    department: str
    event_type: str


class FigureBook:
    """Counts the records it is given (:meth:`add`) and answers the figures at any time
    (:meth:`figures`). Knows nothing of Kafka: feed it anything with a message's shape."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.policy = SlaPolicy.from_topology(topology)
        self._owner = {et.name: et.owner for et in topology.event_types}
        self._canonical = {et.topic: et.name for et in topology.event_types}
        self._routed = {et.routed_topic: et.name for et in topology.event_types}
        self._subscriptions = {s.topic: _Subscription(s.name, s.department, s.event_type)
                               for s in topology.subscriptions}
        self.changelog = changelog_topic(topology, SLA_TABLE) if runs_processors(topology) else None
        self._oldest = -math.inf  # records of older minutes can never be in a window again
        self.records_read = 0
        # sharing
        self._published: Counter[str] = Counter()  # event type -> records on its routed topic
        self._published_by: Counter[str] = Counter()  # department -> records it published
        self._shared: Counter[str] = Counter()  # event type -> records that reached another department
        self._shared_by: Counter[str] = Counter()
        self._received: dict[str, Counter[str]] = {}  # department -> publisher -> records
        self._reached: dict[str, set[str]] = {}  # event type -> departments other than the publisher
        self._shared_offsets: dict[TP, OffsetSet] = {}
        # throughput and latency: minute -> count
        self._published_minutes: dict[str, Counter[int]] = {}
        self._delivered_minutes: dict[str, Counter[int]] = {}
        self._deliveries: dict[str, Counter[int]] = {}  # subscription -> minute -> records
        self._latency: dict[str, dict[int, Counter[int]]] = {}  # subscription -> minute -> ms -> samples
        # the maintenance promise
        self._faults: dict[tuple[str, int], CameraSla] = {}
        self._cameras: dict[str, CameraSla] = {}

    def topics(self) -> list[str]:
        """Every topic the figures are counted from."""
        topics = {*self._canonical, *self._routed, *self._subscriptions}
        if self.changelog is not None:
            topics.add(self.changelog)
        return sorted(topics)

    def begin(self, now: float) -> None:
        """Forget the minutes that left the window at ``now`` (epoch seconds)."""
        self._oldest = window(now).start
        for per_minute in (*self._published_minutes.values(), *self._delivered_minutes.values(),
                           *self._deliveries.values(), *self._latency.values()):
            for minute in [m for m in per_minute if m < self._oldest]:
                del per_minute[minute]

    # -- records -------------------------------------------------------------------------

    def add(self, msg: Message) -> None:
        """One record (an error or a record of another topic is ignored)."""
        if msg.error() is not None:
            return
        topic = str(msg.topic())
        self.records_read += 1
        if topic == self.changelog:
            self._add_fault(msg)
            return
        kind, stamp = msg.timestamp()
        ts = None if kind == TIMESTAMP_NOT_AVAILABLE else stamp
        minute = None if ts is None else minute_of(ts)
        recent = minute is not None and minute >= self._oldest
        headers = dict(msg.headers() or ())
        if (event_type := self._canonical.get(topic)) is not None and recent:
            self._published_minutes.setdefault(event_type, Counter())[minute] += 1  # type: ignore[index]
        if (event_type := self._routed.get(topic)) is not None:
            self._published[event_type] += 1
            self._published_by[self._source(headers, event_type)] += 1
        if (sub := self._subscriptions.get(topic)) is not None:
            self._add_delivery(sub, headers, ts if recent else None)

    def _source(self, headers: Mapping[str, bytes], event_type: str) -> str:
        """The publishing department: ``ce_source``, else the event type's owner (its only
        allowed publisher)."""
        source = headers.get("ce_source")
        try:
            return source.decode("utf-8") if source else self._owner[event_type]
        except UnicodeDecodeError:
            return self._owner[event_type]

    def _add_delivery(self, sub: _Subscription, headers: Mapping[str, bytes], ts: int | None) -> None:
        source = self._source(headers, sub.event_type)
        self._received.setdefault(sub.department, Counter())[source] += 1
        if source != sub.department:
            self._reached.setdefault(sub.event_type, set()).add(sub.department)
            src = parse_src(headers.get(SRC_HEADER))
            if src is not None:
                tp, offset = src
                event_type = self._routed.get(tp[0])
                if event_type is not None and self._shared_offsets.setdefault(tp, OffsetSet()).add(offset):
                    self._shared[event_type] += 1
                    self._shared_by[source] += 1
        if ts is None:
            return
        minute = minute_of(ts)
        self._delivered_minutes.setdefault(sub.event_type, Counter())[minute] += 1
        self._deliveries.setdefault(sub.name, Counter())[minute] += 1
        published = ce_time_ms(headers.get("ce_time"))
        if published is not None:
            self._latency.setdefault(sub.name, {}).setdefault(minute, Counter())[ts - published] += 1

    def _add_fault(self, msg: Message) -> None:
        try:
            camera = json.loads(msg.key() or b"null")
            value = msg.value()
            document = None if value is None else json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return  # not the table's: never fail on a foreign record
        if not isinstance(camera, str):
            return
        if document is None:
            self._cameras.pop(camera, None)
            return
        if not isinstance(document, dict):
            return
        try:
            entry = CameraSla.from_json(document)
        except TypeError:
            return
        self._cameras[camera] = entry
        if entry.opened_at is not None:
            self._faults[(camera, entry.opened_at)] = entry

    # -- figures ---------------------------------------------------------------------------

    def figures(self, now: float, *, caught_up: bool = True) -> CityFigures:
        minutes = window(now)
        return CityFigures(
            at=now, window_start=float(minutes.start * 60), records_read=self.records_read, caught_up=caught_up,
            sharing=self._sharing(), maintenance=self._maintenance() if self.changelog is not None else None,
            throughput=self._throughput(minutes), latency=self._latencies(minutes),
        )

    def _sharing(self) -> Sharing:
        departments = [
            DepartmentSharing(
                department=d.name, title=d.title, published=self._published_by[d.name], shared=self._shared_by[d.name],
                received=sum(n for source, n in self._received.get(d.name, Counter()).items() if source != d.name),
                received_from={s: n for s, n in sorted(self._received.get(d.name, Counter()).items()) if s != d.name},
            )
            for d in self.topology.departments
        ]
        by_type = [
            EventTypeSharing(event_type=et.name, publisher=et.owner, records=self._published[et.name],
                             shared=self._shared[et.name], reached=sorted(self._reached.get(et.name, ())))
            for et in self.topology.event_types
        ]
        types_shared = sum(1 for e in by_type if e.reached)
        records, shared = sum(e.records for e in by_type), sum(e.shared for e in by_type)
        return Sharing(
            event_types=len(by_type), event_types_shared=types_shared,
            event_types_share=types_shared / len(by_type) if by_type else None,
            records=records, records_shared=shared, records_share=shared / records if records else None,
            departments=departments, by_event_type=by_type,
        )

    def _maintenance(self) -> Maintenance:
        per_district: dict[str, list[CameraSla]] = {ALL: []}
        for entry in self._faults.values():
            for key in (ALL, entry.district) if entry.district else (ALL,):
                per_district.setdefault(key, []).append(entry)
        open_by: Counter[str] = Counter()
        for entry in self._cameras.values():
            if entry.open:
                open_by[ALL] += 1
                if entry.district:
                    open_by[entry.district] += 1
        districts = [
            DistrictFaults(district=key, open=open_by[key], faults=len(entries),
                           answer=_outcomes(entries, "answer"), repair=_outcomes(entries, "repair"))
            for key, entries in sorted(per_district.items(), key=lambda kv: (kv[0] != ALL, kv[0]))
        ]
        breaches = [self._breach(entry, kind) for entry in self._faults.values() for kind in DEADLINES
                    if kind in entry.breached]
        breaches.sort(key=lambda b: (b.due_at, b.camera_id, b.deadline), reverse=True)
        return Maintenance(
            answer_within_h=self.policy.answer_within_ms / 3_600_000,
            repair_within_h=self.policy.repair_within_ms / 3_600_000,
            districts=districts, breaches=breaches[:BREACHES_SHOWN], breaches_total=len(breaches),
        )

    def _breach(self, entry: CameraSla, kind: Deadline) -> Breach:
        assert entry.opened_at is not None
        done = entry.answered_at if kind == "answer" else entry.repaired_at
        return Breach(
            camera_id=entry.camera_id, district=entry.district, owner_department=entry.owner_department,
            deadline=kind, opened_at=iso_ms(entry.opened_at), due_at=iso_ms(self.policy.deadline(entry.opened_at, kind)),
            done_at=None if done is None else iso_ms(done),
            case_id=breach_case_id(entry.camera_id, entry.opened_at, kind) if entry.district else None,
        )

    def _throughput(self, minutes: range) -> list[EventTypeThroughput]:
        out = []
        for et in self.topology.event_types:
            published = self._published_minutes.get(et.name, Counter())
            delivered = self._delivered_minutes.get(et.name, Counter())
            out.append(EventTypeThroughput(
                event_type=et.name, publisher=et.owner, last_hour=sum(published[m] for m in minutes),
                per_second=round(published[minutes[-1] - 1] / 60, 3),
                delivered_last_hour=sum(delivered[m] for m in minutes),
                per_minute=[published[m] for m in minutes],
            ))
        return out

    def _latencies(self, minutes: range) -> list[SubscriptionLatency]:
        out = []
        for sub in self.topology.subscriptions:
            samples: Counter[int] = Counter()
            for minute, counts in self._latency.get(sub.name, {}).items():
                if minute in minutes:
                    samples.update(counts)
            deliveries = self._deliveries.get(sub.name, Counter())
            p50, p99 = (nearest_rank(samples, QUANTILES[q]) for q in ("p50", "p99"))
            out.append(SubscriptionLatency(
                subscription=sub.name, department=sub.department, event_type=sub.event_type,
                deliveries=sum(deliveries[m] for m in minutes), measured=sum(samples.values()),
                p50_s=_seconds(p50), p99_s=_seconds(p99), max_s=_seconds(max(samples) if samples else None),
            ))
        return out


def _seconds(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000


def _outcomes(entries: Iterable[CameraSla], kind: Deadline) -> DeadlineFigures:
    """Each fault's outcome for one deadline, as the SLA tracker recorded it."""
    kept = broken = pending = overdue = 0
    for entry in entries:
        done = entry.answered_at if kind == "answer" else entry.repaired_at
        if kind in entry.breached:
            broken += 1
            overdue += done is None
        elif done is not None:
            kept += 1
        else:
            pending += 1
    return DeadlineFigures(kept=kept, broken=broken, pending=pending, overdue=overdue)


def publish_figures(monitor: BusMonitor, figures: CityFigures) -> None:
    """Set the figures' metrics on ``monitor`` (for /metrics)."""
    sharing = figures.sharing
    monitor.set_sharing(
        event_types_share=sharing.event_types_share, records_share=sharing.records_share,
        departments={d.department: (d.published, d.shared, d.received) for d in sharing.departments},
    )
    if figures.maintenance is not None:
        for district in figures.maintenance.districts:
            monitor.set_faults(
                district.district, open=district.open,
                outcomes={(kind, outcome): getattr(getattr(district, kind), outcome)
                          for kind in DEADLINES for outcome in ("kept", "broken", "pending")},
                overdue={kind: getattr(district, kind).overdue for kind in DEADLINES},
            )
    for t in figures.throughput:
        monitor.set_throughput(t.event_type, last_hour=t.last_hour, per_second=t.per_second,
                               delivered_last_hour=t.delivered_last_hour)
    for lat in figures.latency:
        monitor.set_latency(lat.department, lat.subscription, deliveries=lat.deliveries,
                            quantiles={"0.5": lat.p50_s, "0.99": lat.p99_s})


# -- reading the topics -----------------------------------------------------------------------


class FiguresUnread(BusError):
    """The topics the figures are counted from could not be read."""


class FiguresReader:
    """Reads every topic the figures come from, each from its beginning, and at each
    :meth:`poll` what arrived since, up to the ends of the moment (for at most ``max_read_s``:
    a city with a long history is counted over several polls, ``caught_up`` False meanwhile).

    One ``read_committed`` consumer that is assigned the partitions: it joins no group and
    commits nothing. Between polls its partitions are paused, so that it costs the broker
    nothing while the page waits."""

    def __init__(
        self,
        topology: Topology,
        settings: KafkaSettings,
        *,
        max_read_s: float = 5.0,
        timeout_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.book = FigureBook(topology)
        self.settings = settings
        self.max_read_s = max_read_s
        self.timeout_s = settings.connect_timeout_s if timeout_s is None else timeout_s
        self._clock = clock
        self._admin = admin(settings)
        self._consumer: Consumer | None = None
        self._assigned: set[TP] = set()

    def poll(self, now: float | None = None) -> CityFigures:
        """Read what is new, then the figures at ``now`` (epoch seconds, default the clock's)."""
        at = self._clock() if now is None else now
        self.book.begin(at)
        try:
            partitions = self._partitions()
            self._assign(partitions)
            caught_up = self._read(self._ends(partitions))
        except KafkaException as exc:
            raise FiguresUnread(f"could not read the topics of the city's figures on "
                                f"{self.settings.bootstrap_servers}: {exc.args[0].str()}") from exc
        return self.book.figures(at, caught_up=caught_up)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
            self._assigned.clear()

    def _partitions(self) -> list[TP]:
        metadata = self._admin.list_topics(timeout=self.timeout_s).topics
        return [(t, p) for t in self.book.topics() if t in metadata and metadata[t].error is None
                for p in sorted(metadata[t].partitions)]

    def _assign(self, partitions: list[TP]) -> None:
        consumer = self._reader()
        gone = [tp for tp in self._assigned if tp not in set(partitions)]  # deleted since
        if gone:
            consumer.incremental_unassign([TopicPartition(t, p) for t, p in gone])
            self._assigned.difference_update(gone)
        new = [tp for tp in partitions if tp not in self._assigned]
        if new:
            consumer.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in new])
            self._assigned.update(new)

    def _ends(self, partitions: list[TP]) -> dict[TP, int]:
        """Where a read_committed reader stops now (Kafka's last stable offsets)."""
        if not partitions:
            return {}
        request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in partitions}
        futures = self._admin.list_offsets(request, isolation_level=IsolationLevel.READ_COMMITTED,
                                           request_timeout=self.timeout_s)
        ends: dict[TP, int] = {}
        for tp, future in futures.items():
            try:
                ends[(tp.topic, tp.partition)] = future.result(timeout=self.timeout_s).offset
            except KafkaException as exc:  # deleted meanwhile: read next time
                log.debug("no end offset for the figures", topic=tp.topic, partition=tp.partition, error=str(exc))
        return ends

    def _read(self, ends: dict[TP, int]) -> bool:
        """Read every partition up to its end; True when done within ``max_read_s``."""
        consumer = self._reader()
        assignment = [TopicPartition(t, p) for t, p in sorted(self._assigned)]
        if assignment:
            consumer.resume(assignment)
        deadline = time.monotonic() + self.max_read_s
        waiting = {tp: end for tp, end in ends.items() if end > 0}
        try:
            while True:
                if waiting:
                    for position in consumer.position([TopicPartition(t, p) for t, p in waiting]):
                        if position.offset >= waiting[(position.topic, position.partition)]:
                            del waiting[(position.topic, position.partition)]
                if not waiting:
                    return True
                if time.monotonic() > deadline:
                    return False
                for msg in take_batch(consumer, 5000, 0.1):
                    self.book.add(msg)
        finally:
            if assignment:
                consumer.pause(assignment)

    def _reader(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self.settings, group_id="bus-web-figures",
                                                      client_id="bus-web-figures"))
        return self._consumer

