"""Consumer lag of the bus's groups: offsets from the broker, windows kept between polls.

- Group names: :func:`router_group` and :func:`connector_group` are the names the router
  and the sink connectors join with; :func:`bus_groups` lists them for a topology.
- :class:`OffsetReader` asks the broker (AdminClient) for groups, committed offsets and
  log end offsets, and reads what lies between a committed offset and the end with a
  short-lived ``assign()`` consumer (read_committed; it joins no group and commits nothing).
- :class:`LagMonitor` polls: each poll stores (log end offset, now) per partition in the
  time table (:mod:`bus.ops.timelag`) and adds commits to each partition's window
  (:mod:`bus.ops.burrow`), then evaluates Burrow's status.

Lag counts records. Offsets are not records: every transaction ends with a control record
(its commit or abort marker) that takes an offset and is never delivered, and the records of
an aborted transaction are never delivered either. A read_committed consumer that has read
everything commits the offset after its last record, which is the marker's: ``end -
committed`` is 1 for it, while nothing is left to read. So each poll reads, for every
partition a group is behind on in offsets, the stretch from the committed offset to the end
as a read_committed consumer would (:meth:`OffsetReader.read_stretches`), and the lag is the
records found there (:func:`backlog`). The reader stops at the end a read_committed consumer
can reach now (Kafka's last stable offset; librdkafka signals it as the partition's EOF):
records of a transaction still open are not records yet, as in Kafka's own consumer, whose
``records-lag`` counts to the last stable offset. The work is bounded: at most
:data:`SCAN_OFFSETS` offsets per group and partition, within the reader's timeout; a group
further behind gets the records of those counted and the rest counted as offsets (an upper
bound: ``lag_exact`` is false). The first record found also gives the time lag its offset
(the table) or its produce time (``record``).

Where the window's commits come from. Kafka's OffsetFetch answers offsets, not commit
times, so the monitor learns commits two ways:

1. :meth:`LagMonitor.on_commit`: a consumer of the bus reports its commits with their
   times (the router and connectors call it through :class:`bus.ops.metrics.BusMonitor`).
   Such a group's window holds exactly its commits.
2. Polling any other group: a poll adds a commit at the poll time when the committed
   offset moved, or when the group has live members (a live consumer that does not move
   is committing without progress: STALL once the window is all one offset). A group
   without members adds nothing while its offset stands still, so it becomes STOP once
   the time since its last move exceeds the span of its window. A partition seen for the
   first time by polling has no history yet: it is judged from the next poll on.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec
from pydantic import BaseModel, ConfigDict, Field

from bus.kafka.admin import wait_for_broker
from bus.kafka.config import KafkaSettings, consumer_config
from bus.ops.burrow import (
    DEFAULT_WINDOW,
    Commit,
    CommitWindow,
    PartitionStatus,
    Status,
    evaluate_partition,
    group_status,
)
from bus.ops.exceptions import LagQueryFailed, UnknownGroup
from bus.ops.metrics import BusMonitor, PartitionSample
from bus.ops.timelag import DEFAULT_TABLE_SIZE, OffsetTimeTable, lag_seconds
from bus.topology.models import Topology
from bus.topology.names import connector_group, router_group

log = structlog.get_logger("bus.ops.lag")

#: The group id of the probe that reads behind groups: it is assigned partitions, never joins or commits.
PROBE_GROUP = "bus-lag-probe"
#: Offsets the probe reads at most per group and partition at each poll (module docstring).
SCAN_OFFSETS = 200
#: How long the broker may hold the probe's fetch at the end before answering it empty, which is
#: when librdkafka tells the probe it reached the end (Kafka's default, 500 ms, at every poll).
PROBE_FETCH_WAIT_MS = 100
#: Messages the probe takes from its queue at a time.
PROBE_BATCH = 500

#: One-shot ``bus lag`` samples this many times, this far apart.
ONE_SHOT_SAMPLES = 3
ONE_SHOT_INTERVAL_S = 1.0

TP = tuple[str, int]
TimeLagMethod = Literal["table", "record"]

_LIVE_STATES = {
    ConsumerGroupState.STABLE,
    ConsumerGroupState.PREPARING_REBALANCING,
    ConsumerGroupState.COMPLETING_REBALANCING,
}


# -- the bus's group names ---------------------------------------------------------------


def bus_groups(topology: Topology) -> list[str]:
    """The groups the bus runs for a topology: the router and every sink connector."""
    sinks = [c.name for c in topology.connectors if c.side == "sink"]
    lanes = [router_group(topology.namespace, s.lane) for s in topology.subscriptions if s.lane]
    return [router_group(topology.namespace), *lanes, *(connector_group(topology.namespace, name) for name in sinks)]


# -- department terms ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Owner:
    """Who a group's partition belongs to, in department terms ("" when unknown)."""

    department: str = ""
    subscription: str = ""
    event_type: str = ""


class Directory:
    """Maps groups and topics to departments and subscriptions (empty without a topology).

    A subscription topic -> its department and subscription; a canonical topic -> the
    owning (publishing) department and the event type; a sink connector's group -> its
    department and subscription."""

    def __init__(self, topology: Topology | None = None) -> None:
        self._topics: dict[str, Owner] = {}
        self._groups: dict[str, Owner] = {}
        self.bus_groups: tuple[str, ...] = ()
        if topology is not None:
            self._learn(topology)

    def _learn(self, topology: Topology) -> None:
        for et in topology.event_types:
            self._topics[et.topic] = Owner(et.owner, "", et.name)
        for sub in topology.subscriptions:
            self._topics[sub.topic] = Owner(sub.department, sub.name, sub.event_type)
            if sub.lane:  # a router lane serves one subscription: its lag is that department's
                self._groups[router_group(topology.namespace, sub.lane)] = Owner(sub.department, sub.name, sub.event_type)
        for c in topology.connectors:
            if c.side == "sink" and c.subscription:
                self._groups[connector_group(topology.namespace, c.name)] = Owner(c.department, c.subscription)
        self.bus_groups = tuple(bus_groups(topology))

    def owner(self, group: str, topic: str | None = None) -> Owner:
        if group in self._groups and self._groups[group].event_type:
            return self._groups[group]
        if topic is not None and topic in self._topics:
            return self._topics[topic]
        return self._groups.get(group, Owner())

    def group_owner(self, group: str) -> Owner:
        return self._groups.get(group, Owner())


# -- reading the broker -------------------------------------------------------------------


class OffsetReader:
    """Groups, committed offsets, log end offsets and record times, from the broker.

    Raises :class:`~bus.kafka.exceptions.BrokerUnreachable` (naming the address, after
    ``connect_timeout_s``) when no broker answers, :class:`LagQueryFailed` when one
    answers with an error or not in time."""

    def __init__(self, settings: KafkaSettings, *, timeout_s: float | None = None) -> None:
        self.settings = settings
        self.timeout_s = settings.connect_timeout_s if timeout_s is None else timeout_s
        self._admin: AdminClient = wait_for_broker(settings, self.timeout_s)
        self._readers: dict[str, Consumer] = {}  # group -> a consumer in its name that reads its commits
        self._partitions: tuple[float, list[TopicPartition]] = (0.0, [])
        weakref.finalize(self, _close_all, self._readers)

    # Groups are listed (ListGroups, with their states) but never described, and their offsets
    # are fetched as a consumer of the group fetches them: librdkafka 2.16 aborts the whole
    # process (an assertion in rd_kafka_enq_once_del_source_return; librdkafka#3663, #4605) when
    # an admin request to a group coordinator (DescribeGroups, OffsetFetch) times out on a broker
    # that stopped answering. Measured with a node of three frozen: the first round of such
    # queries aborted; ListGroups and a consumer's OffsetFetch did not, in 6 rounds of kills and freezes.

    def _states(self) -> dict[str, ConsumerGroupState]:
        future = self._admin.list_consumer_groups(request_timeout=self.timeout_s)
        result = self._result("list consumer groups", future)
        return {g.group_id: g.state for g in result.valid}

    def group_ids(self) -> set[str]:
        return set(self._states())

    def committed(self, group: str) -> dict[TP, int]:
        """The group's committed offsets (partitions without a commit are absent), on every
        partition of the cluster's topics (Kafka's internal ones aside)."""
        reader = self._readers.get(group)
        if reader is None:
            # Not read_committed: such a consumer asks for stable offsets (KIP-447), which Kafka
            # withholds while the group's transaction is open, as the router's often is.
            reader = self._readers[group] = Consumer(consumer_config(self.settings, group_id=group,
                                                                     client_id=PROBE_GROUP, read_committed=False))
        try:
            found = reader.committed(self._all_partitions(), timeout=self.timeout_s)
        except KafkaException as exc:
            raise LagQueryFailed(f"committed offsets of group {group!r} on {self.settings.bootstrap_servers} "
                                 f"failed: {exc.args[0].str() if exc.args else exc}") from exc
        return {(tp.topic, tp.partition): tp.offset for tp in found if tp.error is None and tp.offset >= 0}

    def _all_partitions(self, max_age_s: float = 2.0) -> list[TopicPartition]:
        at, partitions = self._partitions
        if time.monotonic() - at > max_age_s:
            try:
                topics = self._admin.list_topics(timeout=self.timeout_s).topics
            except KafkaException as exc:
                raise LagQueryFailed(f"listing topics on {self.settings.bootstrap_servers} failed: {exc}") from exc
            partitions = [TopicPartition(name, p) for name, meta in sorted(topics.items())
                          if not name.startswith("__") for p in sorted(meta.partitions)]
            self._partitions = (time.monotonic(), partitions)
        return partitions

    def live(self, groups: Sequence[str]) -> dict[str, bool]:
        """Whether each group has live members (a consumer holds its partitions, or is joining)."""
        if not groups:
            return {}
        states = self._known_states(groups)
        return {group: states[group] in _LIVE_STATES for group in groups}

    def stable(self, group: str) -> bool:
        """Whether ``group`` has finished joining: its members hold their partitions."""
        return self._known_states([group])[group] == ConsumerGroupState.STABLE

    def _known_states(self, groups: Sequence[str]) -> dict[str, ConsumerGroupState]:
        """Each group's state from ListGroups; a group it gives no state for (the embedded broker
        lists none) is described instead, with DescribeGroups."""
        listed = self._states()
        states = {g: listed[g] for g in groups if listed.get(g, ConsumerGroupState.UNKNOWN) != ConsumerGroupState.UNKNOWN}
        unknown = [g for g in groups if g not in states]
        if unknown:
            futures = self._admin.describe_consumer_groups(unknown, request_timeout=self.timeout_s)
            for group, future in futures.items():
                description = self._result(f"describe group {group!r}", future)
                live = bool(description.members) and description.state not in _LIVE_STATES
                states[group] = ConsumerGroupState.STABLE if live else description.state
        return states

    def end_offsets(self, partitions: Iterable[TP]) -> dict[TP, int]:
        """Log end offsets; partitions the broker cannot answer for (a deleted topic) are
        left out and logged."""
        request = {TopicPartition(t, p): OffsetSpec.latest() for t, p in sorted(set(partitions))}
        if not request:
            return {}
        futures = self._admin.list_offsets(request, request_timeout=self.timeout_s)
        out: dict[TP, int] = {}
        for tp, future in futures.items():
            try:
                out[(tp.topic, tp.partition)] = future.result(timeout=self.timeout_s).offset
            except (KafkaException, FutureTimeout) as exc:
                log.warning("no log end offset", topic=tp.topic, partition=tp.partition, error=str(exc))
        return out

    def read_stretches(
        self, wanted: Mapping[TP, Sequence[tuple[int, int]]], ends: Mapping[TP, int], timeout_s: float | None = None
    ) -> dict[TP, list[Stretch]]:
        """Read each partition's stretches ``[start, stop)`` (ascending, not overlapping: see
        :func:`plan_stretches`) as a read_committed consumer would, all within ``timeout_s``
        (default: the reader's timeout). ``ends``: the log end offsets they were planned against.
        A stretch not read to its stop in time comes back with what was read, not complete; one
        not started in time is absent."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        out: dict[TP, list[Stretch]] = {}
        for stretches in _rounds(wanted):  # a reader has one position per partition: a round each
            if time.monotonic() >= deadline:
                break
            consumer = Consumer(
                consumer_config(
                    self.settings, group_id=PROBE_GROUP, client_id=PROBE_GROUP, probe=True,
                    max_fetch_wait_ms=PROBE_FETCH_WAIT_MS,
                )
            )
            try:
                for tp, stretch in _read_round(consumer, stretches, ends, deadline).items():
                    out.setdefault(tp, []).append(stretch)
            finally:
                consumer.close()
        return out

    def _result(self, what: str, future: Any) -> Any:
        try:
            return future.result(timeout=self.timeout_s)
        except (KafkaException, FutureTimeout) as exc:
            detail = exc.args[0].str() if isinstance(exc, KafkaException) else f"no answer within {self.timeout_s:g} s"
            raise LagQueryFailed(f"{what} on {self.settings.bootstrap_servers} failed: {detail}") from exc



def _close_all(readers: dict[str, Consumer]) -> None:
    for reader in readers.values():
        reader.close()
    readers.clear()


# -- what lies between a committed offset and the end ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Stretch:
    """What a read_committed reader found in ``[start, stop)`` of one partition: its records,
    ``(offset, produce time in epoch seconds or None)``, in order. The stretch's other offsets
    are no records: transaction markers, and records of aborted transactions (which Kafka's
    reader drops; the embedded broker delivers them, so there they count). ``complete``: no
    record a read_committed consumer could read now lies past ``stop`` up to the end the
    stretch was planned against (the reader got there, or to the last stable offset before a
    transaction still open)."""

    start: int
    stop: int
    records: tuple[tuple[int, float | None], ...] = ()
    complete: bool = True

    def covers(self, offset: int) -> bool:
        return self.start <= offset and (offset <= self.stop or self.complete)


@dataclass(frozen=True, slots=True)
class Backlog:
    """What a group has not consumed on one partition.

    ``records``: the records between its committed offset and the end. ``exact``: counted; when
    not, offsets not read count as records (an upper bound). ``first``: the offset of the first
    record not consumed; where reading stopped when the records read held none and the stretch
    goes on; None when no record is left. ``first_time``: that record's produce time, when read."""

    records: int
    exact: bool
    first: int | None
    first_time: float | None = None


def plan_stretches(
    behind: Mapping[TP, Iterable[int]], ends: Mapping[TP, int], limit: int | None = None
) -> dict[TP, list[tuple[int, int]]]:
    """The stretches to read: from each committed offset below its partition's end, up to
    ``limit`` offsets (default :data:`SCAN_OFFSETS`) and not past the end; stretches that
    overlap or touch are merged (two groups near each other are read once)."""
    span = SCAN_OFFSETS if limit is None else limit
    out: dict[TP, list[tuple[int, int]]] = {}
    for tp, offsets in behind.items():
        end = ends[tp]
        merged: list[tuple[int, int]] = []
        for start in sorted({o for o in offsets if o < end}):
            stop = min(start + span, end)
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
            else:
                merged.append((start, stop))
        if merged:
            out[tp] = merged
    return out


def backlog(committed: int, end: int, stretches: Sequence[Stretch] = ()) -> Backlog:
    """A group at ``committed`` on a partition that ends at ``end``, as the stretches read
    there tell. Without a stretch that covers ``committed`` (not read in time), the offsets
    count, as Burrow and kafka-lag-exporter count them."""
    if committed >= end:
        return Backlog(0, True, None)
    stretch = next((s for s in reversed(stretches) if s.start <= committed), None)
    if stretch is None or not stretch.covers(committed):
        return Backlog(end - committed, False, committed)
    ahead = stretch.records[bisect_left(stretch.records, committed, key=lambda r: r[0]):]
    unread = 0 if stretch.complete else max(end - max(stretch.stop, committed), 0)
    if ahead:
        first, first_time = ahead[0]
        return Backlog(len(ahead) + unread, stretch.complete, first, first_time)
    if stretch.complete:
        return Backlog(0, True, None)
    return Backlog(unread, False, max(stretch.stop, committed))


def _rounds(wanted: Mapping[TP, Sequence[tuple[int, int]]]) -> Iterator[dict[TP, tuple[int, int]]]:
    """Round k reads the k-th stretch of every partition that has one."""
    for k in range(max((len(v) for v in wanted.values()), default=0)):
        yield {tp: stretches[k] for tp, stretches in wanted.items() if len(stretches) > k}


def _read_round(
    consumer: Consumer, stretches: Mapping[TP, tuple[int, int]], ends: Mapping[TP, int], deadline: float
) -> dict[TP, Stretch]:
    found: dict[TP, list[tuple[int, float | None]]] = {tp: [] for tp in stretches}
    done: dict[TP, Stretch] = {}

    def finish(tp: TP, stop: int, complete: bool) -> None:
        start = stretches[tp][0]
        done[tp] = Stretch(start, max(stop, start), tuple(found[tp]), complete)
        consumer.pause([TopicPartition(*tp)])

    consumer.assign([TopicPartition(t, p, start) for (t, p), (start, _) in stretches.items()])
    while len(done) < len(stretches) and (left := deadline - time.monotonic()) > 0:
        for msg in consumer.consume(PROBE_BATCH, min(0.1, left)):
            tp: TP = (str(msg.topic()), int(msg.partition() or 0))
            if tp not in stretches or tp in done:
                continue
            stop, error = stretches[tp][1], msg.error()
            if error is None:
                offset = int(msg.offset() or 0)
                if offset >= stop:  # read past the stretch in the same fetch
                    finish(tp, stop, stop >= ends[tp])
                else:
                    kind, millis = msg.timestamp()
                    found[tp].append((offset, None if kind == TIMESTAMP_NOT_AVAILABLE else millis / 1000.0))
            elif error.code() == KafkaError._PARTITION_EOF:
                # As far as a read_committed reader gets now: the end, or the last stable offset.
                reached = int(msg.offset() or 0)
                finish(tp, min(reached, stop), reached <= stop or stop >= ends[tp])
        waiting = [TopicPartition(*tp) for tp in stretches if tp not in done]
        for position in consumer.position(waiting) if waiting else []:
            tp = (position.topic, position.partition)
            stop = stretches[tp][1]
            if position.offset >= stop:  # every record before it was delivered; markers are stepped over
                finish(tp, stop, stop >= ends[tp])
    late = [TopicPartition(*tp) for tp in stretches if tp not in done]
    for position in consumer.position(late) if late else []:
        tp = (position.topic, position.partition)  # out of time: what was read so far
        start, stop = stretches[tp]
        done[tp] = Stretch(start, min(max(position.offset, start), stop), tuple(found[tp]), complete=False)
    return done


# -- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int
    lag: int
    lag_seconds: float | None
    status: Status
    commits: int  # commits in the window
    department: str = ""
    subscription: str = ""
    event_type: str = ""
    lag_exact: bool = True  # ``lag`` counted; False: offsets not read count in it (an upper bound)

    def to_json(self) -> dict[str, Any]:
        return {
            "department": self.department or None,
            "subscription": self.subscription or None,
            "event_type": self.event_type or None,
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
            "lag_exact": self.lag_exact,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "status": self.status.value,
            "commits": self.commits,
        }

    def sample(self) -> PartitionSample:
        return PartitionSample(
            self.group, self.topic, self.partition, self.committed, self.end, self.lag, self.lag_seconds,
            self.status, self.department, self.subscription,
        )


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    status: Status
    partitions: tuple[PartitionLag, ...] = ()
    maxlag: PartitionLag | None = None
    totallag: int = 0
    complete: float = 0.0
    department: str = ""
    subscription: str = ""

    @property
    def found(self) -> bool:
        return self.status != Status.NOTFOUND

    @property
    def max_lag_seconds(self) -> float | None:
        known = [p.lag_seconds for p in self.partitions if p.lag_seconds is not None]
        return max(known) if known else None

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "status": self.status.value,
            "department": self.department or None,
            "subscription": self.subscription or None,
            "totallag": self.totallag,
            "maxlag": None if self.maxlag is None else {
                "topic": self.maxlag.topic, "partition": self.maxlag.partition, "lag": self.maxlag.lag,
            },
            "max_lag_seconds": None if self.max_lag_seconds is None else round(self.max_lag_seconds, 3),
            "complete": round(self.complete, 3),
            "partitions": [p.to_json() for p in self.partitions],
        }


@dataclass(frozen=True, slots=True)
class LagReport:
    at: float
    groups: tuple[GroupLag, ...]

    @property
    def ok(self) -> bool:
        return all(g.status == Status.OK for g in self.groups)

    @property
    def exit_code(self) -> int:
        """0 when every group is OK, 2 otherwise (for cron and scripts)."""
        return 0 if self.ok else 2

    def group(self, name: str) -> GroupLag:
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": dt.datetime.fromtimestamp(self.at, dt.UTC).isoformat(timespec="seconds"),
            "ok": self.ok,
            "groups": [g.to_json() for g in self.groups],
        }


# -- the monitor -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GroupSelection:
    """Which groups a monitor watches.

    ``names`` explicit groups; ``all_groups`` every group on the cluster (re-listed at
    each poll); ``strict``: a named group missing from the cluster is an error
    (:class:`UnknownGroup`) rather than a NOTFOUND status (the topology's groups)."""

    names: tuple[str, ...] = ()
    all_groups: bool = False
    strict: bool = True

    @classmethod
    def of_topology(cls, topology: Topology) -> GroupSelection:
        return cls(tuple(bus_groups(topology)), strict=False)


@dataclass
class _PartitionState:
    window: CommitWindow
    committed: int | None = None
    end: int | None = None
    lag_seconds: float | None = None
    pending: list[tuple[int, float]] = field(default_factory=list)  # hooked commits before any end offset


class LagOptions(BaseModel):
    """How lag is evaluated (``bus lag`` flags; the web app's /metrics monitor)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(
        default=DEFAULT_WINDOW, ge=1, description="Commits per partition in Burrow's window.", examples=[10]
    )
    table_size: int = Field(
        default=DEFAULT_TABLE_SIZE, ge=2, examples=[60],
        description="(log end offset, time) points kept per partition for the time lag.",
    )
    time_lag: TimeLagMethod = Field(
        default="table",
        description="`table`: interpolate the first unconsumed record's offset in the offset-time table "
        "(kafka-lag-exporter), falling back to its timestamp while the table cannot tell; `record`: always "
        "that timestamp.",
        examples=["table"],
    )
    interval_s: float = Field(
        default=5.0, gt=0, description="Seconds between polls of a watching monitor.", examples=[5.0]
    )
    samples: int = Field(
        default=ONE_SHOT_SAMPLES, ge=2, description="Polls of a one-shot measurement before judging.", examples=[3]
    )
    sample_interval_s: float = Field(
        default=ONE_SHOT_INTERVAL_S, gt=0, examples=[1.0],
        description="Seconds between the polls of a one-shot measurement.",
    )


class LagMonitor:
    """Keeps each partition's commit window and time table between polls."""

    def __init__(
        self,
        reader: OffsetReader,
        selection: GroupSelection,
        directory: Directory | None = None,
        *,
        options: LagOptions | None = None,
        monitor: BusMonitor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.selection = selection
        self.directory = directory or Directory()
        self.options = options or LagOptions()
        self.monitor = monitor
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, dict[TP, _PartitionState]] = {}
        self._tables: dict[TP, OffsetTimeTable] = {}
        self._ends: dict[TP, int] = {}
        self._stretches: dict[TP, list[Stretch]] = {}  # what the last poll read behind the groups
        self._hooked: set[str] = set()
        self._watched: list[str] = []
        self._missing: list[str] = []
        if monitor is not None:
            monitor.add_observer(self)

    # -- commits reported by the bus's own consumers ----------------------------------------

    def on_commit(self, group: str, offsets: Iterable[tuple[str, int, int]], at: float | None = None) -> None:
        """``group`` committed ``(topic, partition, offset)``s at ``at`` (epoch seconds,
        default now). From then on the group's window holds only reported commits."""
        when = self._clock() if at is None else at
        with self._lock:
            self._hooked.add(group)
            for topic, partition, offset in offsets:
                state = self._state(group, (topic, partition))
                end = self._ends.get((topic, partition))
                if end is None:
                    state.pending.append((offset, when))
                    continue
                state.window.add(Commit(offset, when, self._backlog(topic, partition, offset, end).records))
                state.committed = offset

    # -- polling ----------------------------------------------------------------------------

    def poll(self, now: float | None = None, *, with_time_lag: bool = True) -> LagReport:
        """Read the broker once, update windows and tables, evaluate, publish to the
        monitor's metrics. ``now`` (epoch seconds) defaults to the clock."""
        when = self._clock() if now is None else now
        groups, missing = self._resolve_groups()
        committed = {g: self.reader.committed(g) for g in groups}
        ends = self.reader.end_offsets(tp for offsets in committed.values() for tp in offsets)
        live = self.reader.live([g for g in groups if g not in self._hooked])
        behind: dict[TP, set[int]] = {}
        for offsets in committed.values():
            for tp, offset in offsets.items():
                if tp in ends and offset < ends[tp]:
                    behind.setdefault(tp, set()).add(offset)
        stretches = self.reader.read_stretches(plan_stretches(behind, ends), ends) if behind else {}
        with self._lock:
            for tp, end in ends.items():
                self._table(tp).add(end, when)
                self._ends[tp] = end
            self._stretches = stretches
            for group, offsets in committed.items():
                self._observe_group(group, offsets, ends, when, live.get(group, False))
            self._drop_groups_not_in(groups)
            self._watched, self._missing = groups, missing
        if with_time_lag:
            self._update_time_lags(when)
        report = self.report(when)
        self._publish(report)
        return report

    def run(self, count: int | None = None) -> Iterator[LagReport]:
        """Poll every ``options.interval_s`` seconds; ``count`` polls, or until the caller stops."""
        interval_s = self.options.interval_s
        polls = 0
        next_at = time.monotonic()
        while count is None or polls < count:
            yield self.poll()
            polls += 1
            next_at += interval_s
            if count is None or polls < count:
                time.sleep(max(0.0, next_at - time.monotonic()))

    def report(self, now: float | None = None) -> LagReport:
        """Evaluate what the monitor knows, without reading the broker."""
        when = self._clock() if now is None else now
        with self._lock:
            groups = list(self._watched) or sorted(self._states)
            found = [self._evaluate_group(g, when) for g in groups]
            missing = [self._not_found(g) for g in self._missing]
        return LagReport(when, tuple(sorted(found + missing, key=lambda g: g.group)))

    # -- internals -------------------------------------------------------------------------

    def _resolve_groups(self) -> tuple[list[str], list[str]]:
        on_cluster = self.reader.group_ids()
        if self.selection.all_groups:
            return sorted(on_cluster - {PROBE_GROUP}), []
        missing = [n for n in self.selection.names if n not in on_cluster]
        if missing and self.selection.strict:
            raise UnknownGroup(missing[0], self.reader.settings.bootstrap_servers, sorted(on_cluster))
        return [n for n in self.selection.names if n in on_cluster], missing

    def _observe_group(
        self, group: str, offsets: Mapping[TP, int], ends: Mapping[TP, int], now: float, live: bool
    ) -> None:
        for tp in [tp for tp in self._states.get(group, {}) if tp not in offsets]:
            del self._states[group][tp]  # the group no longer has a commit there
        for tp, offset in offsets.items():
            if tp not in ends:
                continue
            state = self._state(group, tp)
            end = ends[tp]
            for pending_offset, at in state.pending:
                state.window.add(Commit(pending_offset, at, self._backlog(*tp, pending_offset, end).records))
            state.pending.clear()
            state.committed, state.end = offset, end
            if group in self._hooked:
                continue
            last = state.window.last
            if last is None or last.offset != offset or live:
                state.window.add(Commit(offset, now, self._backlog(*tp, offset, end).records))

    def _drop_groups_not_in(self, groups: Sequence[str]) -> None:
        for gone in set(self._states) - set(groups) - self._hooked:
            del self._states[gone]
            if self.monitor is not None:
                self.monitor.forget_group(gone)

    def _update_time_lags(self, now: float) -> None:
        """Each partition's time lag: 0 when no record is left; else from the first record not
        consumed, at its offset in the table (falling back to its timestamp while the table cannot
        tell) or by its timestamp (``record``). None when neither is known."""
        with self._lock:
            for states in self._states.values():
                for (topic, partition), state in states.items():
                    if state.committed is None or state.end is None:
                        continue
                    left = self._backlog(topic, partition, state.committed, state.end)
                    estimate = None
                    if left.records == 0:
                        estimate = 0.0
                    elif self.options.time_lag == "table" and left.first is not None:
                        estimate = lag_seconds(self._table((topic, partition)), left.first, state.end, now)
                    if estimate is None and left.first_time is not None:
                        estimate = max(0.0, now - left.first_time)
                    state.lag_seconds = estimate

    def _evaluate_group(self, group: str, now: float) -> GroupLag:
        rows: list[PartitionLag] = []
        statuses: list[PartitionStatus] = []
        for (topic, partition), state in sorted(self._states.get(group, {}).items()):
            if state.committed is None or state.end is None:
                continue
            left = self._backlog(topic, partition, state.committed, state.end)
            lag = left.records
            commits = state.window.commits()
            if group not in self._hooked and len(commits) == 1 and commits[0].time >= now:
                commits = ()  # first sight of a polled partition: no history to judge yet
            evaluated = evaluate_partition(topic, partition, commits, lag, now, self.options.window)
            owner = self.directory.owner(group, topic)
            statuses.append(evaluated)
            rows.append(PartitionLag(
                group, topic, partition, state.committed, state.end, lag, state.lag_seconds, evaluated.status,
                len(state.window), owner.department, owner.subscription, owner.event_type, left.exact,
            ))
        summary = group_status(statuses)
        maxlag = None
        if summary.maxlag is not None:
            maxlag = next(r for r in rows if (r.topic, r.partition) == (summary.maxlag.topic, summary.maxlag.partition))
        owner = self.directory.group_owner(group)
        return GroupLag(
            group, summary.status, tuple(rows), maxlag, summary.totallag, summary.complete,
            owner.department, owner.subscription,
        )

    def _not_found(self, group: str) -> GroupLag:
        owner = self.directory.group_owner(group)
        return GroupLag(group, Status.NOTFOUND, department=owner.department, subscription=owner.subscription)

    def _publish(self, report: LagReport) -> None:
        if self.monitor is None:
            return
        for g in report.groups:
            samples = [p.sample() for p in g.partitions]
            for sample in samples:
                self.monitor.set_lag(sample)
            self.monitor.set_group(
                g.group, status=g.status, maxlag=g.maxlag.lag if g.maxlag else 0,
                maxlag_seconds=g.max_lag_seconds, totallag=g.totallag, complete=g.complete, partitions=samples,
            )

    def _backlog(self, topic: str, partition: int, committed: int, end: int) -> Backlog:
        return backlog(committed, end, self._stretches.get((topic, partition), ()))

    def _state(self, group: str, tp: TP) -> _PartitionState:
        states = self._states.setdefault(group, {})
        if tp not in states:
            states[tp] = _PartitionState(CommitWindow(self.options.window))
        return states[tp]

    def _table(self, tp: TP) -> OffsetTimeTable:
        if tp not in self._tables:
            self._tables[tp] = OffsetTimeTable(self.options.table_size)
        return self._tables[tp]


# -- one-shot --------------------------------------------------------------------------------

def measure(
    settings: KafkaSettings,
    selection: GroupSelection,
    directory: Directory | None = None,
    *,
    options: LagOptions | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> LagReport:
    """One-shot lag: ``options.samples`` polls ``options.sample_interval_s`` apart, then Burrow's rules over
    what they saw; time lag from the first unconsumed record's timestamp (at the last
    sample). Within seconds of sampling: a group that moved or reached the end
    is OK; a live group whose offsets did not move while lag exists is STALL; a group
    without members whose offsets did not move while lag exists is STOP; lag that grew at
    every sample is WARN; an offset that went back is REWIND."""
    opts = (options or LagOptions()).model_copy(update={"time_lag": "record"})
    monitor = LagMonitor(OffsetReader(settings), selection, directory, options=opts)
    for _ in range(opts.samples - 1):
        monitor.poll(with_time_lag=False)
        sleep(opts.sample_interval_s)
    return monitor.poll()


# -- the table ---------------------------------------------------------------------------------

COLUMNS = ("DEPARTMENT", "SUBSCRIPTION", "GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "LAG_S", "STATUS")


def render_table(report: LagReport) -> str:
    """The report as aligned text: one row per partition, then one line per group."""
    rows = [list(COLUMNS)]
    for g in report.groups:
        if not g.partitions:
            note = "not found on the cluster" if not g.found else "no committed offsets"
            rows.append([g.department or "-", g.subscription or "-", g.group, f"({note})", "-", "-", "-", "-", "-",
                         g.status.value])
        for p in g.partitions:
            rows.append([
                p.department or "-", p.subscription or "-", p.group, p.topic, str(p.partition), str(p.committed),
                str(p.end), str(p.lag), _seconds(p.lag_seconds), p.status.value,
            ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("")
    lines.extend(_group_line(g) for g in report.groups)
    return "\n".join(lines)


def _group_line(g: GroupLag) -> str:
    where = f" ({g.department}/{g.subscription})" if g.subscription else ""
    worst = f", maxlag {g.maxlag.lag} at {g.maxlag.topic}[{g.maxlag.partition}]" if g.maxlag and g.maxlag.lag else ""
    return f"group {g.group}{where}: {g.status.value}, totallag {g.totallag}{worst}, complete {g.complete:.0%}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
