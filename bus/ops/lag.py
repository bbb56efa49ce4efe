"""Consumer lag of the bus's groups: offsets from the broker, windows kept between polls.

- Group names: :func:`router_group` and :func:`connector_group` are the names the router
  and the sink connectors join with; :func:`bus_groups` lists them for a topology.
- :class:`OffsetReader` asks the broker (AdminClient) for groups, committed offsets and
  log end offsets, and reads the produce time of a partition's first unconsumed record
  with a short-lived ``assign()`` consumer (it joins no group and commits nothing).
- :class:`LagMonitor` polls: each poll stores (log end offset, now) per partition in the
  time table (:mod:`bus.ops.timelag`) and adds commits to each partition's window
  (:mod:`bus.ops.burrow`), then evaluates Burrow's status.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
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
from bus.topology.models import Topology, topic_name

log = structlog.get_logger("bus.ops.lag")

ROUTER_GROUP = "bus-router"
CONNECTOR_GROUP_PREFIX = "bus-connector-"
#: The group id of the record-time probe: it is assigned partitions, never joins or commits.
PROBE_GROUP = "bus-lag-probe"

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


def router_group(namespace: str | None, lane: str | None = None) -> str:
    """The router's consumer group: ``bus-router``, or ``<namespace>.bus-router``; a lane's
    (one subscription with a start point, see bus.routing.service) is ``bus-router.<lane>``."""
    return topic_name(namespace, ROUTER_GROUP if lane is None else f"{ROUTER_GROUP}.{lane}")


def connector_group(namespace: str | None, connector: str) -> str:
    """A sink connector's group: ``bus-connector-<name>``, or ``<namespace>.bus-connector-<name>``."""
    return topic_name(namespace, CONNECTOR_GROUP_PREFIX + connector)


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

    def group_ids(self) -> set[str]:
        future = self._admin.list_consumer_groups(request_timeout=self.timeout_s)
        result = self._result("list consumer groups", future)
        return {g.group_id for g in result.valid}

    def committed(self, group: str) -> dict[TP, int]:
        """The group's committed offsets (partitions without a commit are absent)."""
        request = [ConsumerGroupTopicPartitions(group)]
        future = self._admin.list_consumer_group_offsets(request, request_timeout=self.timeout_s)[group]
        result = self._result(f"committed offsets of group {group!r}", future)
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in result.topic_partitions or []
            if tp.error is None and tp.offset >= 0
        }

    def live(self, groups: Sequence[str]) -> dict[str, bool]:
        """Whether each group has live members (a consumer holds its partitions)."""
        if not groups:
            return {}
        futures = self._admin.describe_consumer_groups(list(groups), request_timeout=self.timeout_s)
        out: dict[str, bool] = {}
        for group, future in futures.items():
            description = self._result(f"describe group {group!r}", future)
            out[group] = bool(description.members) or description.state in _LIVE_STATES
        return out

    def stable(self, group: str) -> bool:
        """Whether ``group`` has finished joining: its members hold their partitions."""
        future = self._admin.describe_consumer_groups([group], request_timeout=self.timeout_s)[group]
        return self._result(f"describe group {group!r}", future).state == ConsumerGroupState.STABLE

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

    def first_unconsumed_times(
        self, positions: Mapping[TP, int], ends: Mapping[TP, int], timeout_s: float | None = None
    ) -> dict[TP, float | None]:
        """The produce time (epoch seconds, from the record timestamp) of the first record
        at or after each position, read up to the partition's end offset. None: there is
        no record before the end (only transaction markers, which occupy offsets too).
        Partitions not read in time are absent."""
        if not positions:
            return {}
        consumer = Consumer(consumer_config(self.settings, group_id=PROBE_GROUP, client_id=PROBE_GROUP, probe=True))
        try:
            consumer.assign([TopicPartition(t, p, o) for (t, p), o in positions.items()])
            wanted = {tp: self._stable_end(consumer, tp, ends[tp]) for tp in positions}
            return _first_timestamps(consumer, wanted, timeout_s or self.timeout_s)
        finally:
            consumer.close()

    def _stable_end(self, consumer: Consumer, tp: TP, end: int) -> int:
        """``end``, or less: where a read_committed reader stops now (Kafka's last stable offset).
        Records of a transaction still open lie past it, and waiting to read them would take the
        whole timeout. ``end`` when the broker does not answer, and on the embedded broker (its
        high watermark may stop short of the real end the caller passes)."""
        if self.settings.embedded:
            return end
        try:
            return min(end, consumer.get_watermark_offsets(TopicPartition(*tp), timeout=self.timeout_s)[1])
        except KafkaException:
            return end

    def _result(self, what: str, future: Any) -> Any:
        try:
            return future.result(timeout=self.timeout_s)
        except (KafkaException, FutureTimeout) as exc:
            detail = exc.args[0].str() if isinstance(exc, KafkaException) else f"no answer within {self.timeout_s:g} s"
            raise LagQueryFailed(f"{what} on {self.settings.bootstrap_servers} failed: {detail}") from exc


def _first_timestamps(consumer: Consumer, ends: Mapping[TP, int], timeout_s: float) -> dict[TP, float | None]:
    out: dict[TP, float | None] = {}
    untimed: set[TP] = set()  # a record without a timestamp: no estimate
    deadline = time.monotonic() + timeout_s
    while len(out) + len(untimed) < len(ends) and time.monotonic() < deadline:
        msg = consumer.poll(min(0.1, max(deadline - time.monotonic(), 0.0)))
        if msg is not None and not msg.error():
            key: TP = (str(msg.topic()), int(msg.partition() or 0))
            if key in ends and key not in out and key not in untimed:
                kind, millis = msg.timestamp()
                if kind == TIMESTAMP_NOT_AVAILABLE:
                    untimed.add(key)
                else:
                    out[key] = millis / 1000.0
                consumer.pause([TopicPartition(*key)])
        _past_the_end(consumer, ends, out, untimed)
    return out


def _past_the_end(consumer: Consumer, ends: Mapping[TP, int], out: dict[TP, float | None], untimed: set[TP]) -> None:
    """Partitions read up to their end without a record: nothing there but markers."""
    waiting = [TopicPartition(t, p) for (t, p) in ends if (t, p) not in out and (t, p) not in untimed]
    for tp in consumer.position(waiting) if waiting else []:
        if tp.offset >= ends[(tp.topic, tp.partition)]:
            out[(tp.topic, tp.partition)] = None
            consumer.pause([tp])


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
        description="`table`: interpolate in the offset-time table (kafka-lag-exporter), falling back to the "
        "first unconsumed record's timestamp while the table cannot tell; `record`: always that timestamp.",
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
                state.window.add(Commit(offset, when, max(end - offset, 0)))
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
        with self._lock:
            for tp, end in ends.items():
                self._table(tp).add(end, when)
                self._ends[tp] = end
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
                state.window.add(Commit(pending_offset, at, max(end - pending_offset, 0)))
            state.pending.clear()
            state.committed, state.end = offset, end
            if group in self._hooked:
                continue
            last = state.window.last
            if last is None or last.offset != offset or live:
                state.window.add(Commit(offset, now, max(end - offset, 0)))

    def _drop_groups_not_in(self, groups: Sequence[str]) -> None:
        for gone in set(self._states) - set(groups) - self._hooked:
            del self._states[gone]
            if self.monitor is not None:
                self.monitor.forget_group(gone)

    def _update_time_lags(self, now: float) -> None:
        with self._lock:
            known = [(s, s.committed, s.end, tp) for states in self._states.values() for tp, s in states.items()]
        to_probe: list[_Probe] = []
        ends: dict[TP, int] = {}
        for state, committed, end, tp in known:
            if committed is None or end is None:
                continue
            estimate = None
            if committed >= end:
                estimate = 0.0
            elif self.options.time_lag == "table":
                estimate = lag_seconds(self._table(tp), committed, end, now)
            if estimate is None:
                to_probe.append((state, tp, committed))
                ends[tp] = end
            state.lag_seconds = estimate
        for batch in _one_position_per_partition(to_probe):
            times = self.reader.first_unconsumed_times({tp: offset for _, tp, offset in batch}, ends)
            for state, tp, _ in batch:
                if tp in times:
                    produced = times[tp]
                    state.lag_seconds = 0.0 if produced is None else max(0.0, now - produced)

    def _evaluate_group(self, group: str, now: float) -> GroupLag:
        rows: list[PartitionLag] = []
        statuses: list[PartitionStatus] = []
        for (topic, partition), state in sorted(self._states.get(group, {}).items()):
            if state.committed is None or state.end is None:
                continue
            lag = max(state.end - state.committed, 0)
            commits = state.window.commits()
            if group not in self._hooked and len(commits) == 1 and commits[0].time >= now:
                commits = ()  # first sight of a polled partition: no history to judge yet
            evaluated = evaluate_partition(topic, partition, commits, lag, now, self.options.window)
            owner = self.directory.owner(group, topic)
            statuses.append(evaluated)
            rows.append(PartitionLag(
                group, topic, partition, state.committed, state.end, lag, state.lag_seconds, evaluated.status,
                len(state.window), owner.department, owner.subscription, owner.event_type,
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

    def _state(self, group: str, tp: TP) -> _PartitionState:
        states = self._states.setdefault(group, {})
        if tp not in states:
            states[tp] = _PartitionState(CommitWindow(self.options.window))
        return states[tp]

    def _table(self, tp: TP) -> OffsetTimeTable:
        if tp not in self._tables:
            self._tables[tp] = OffsetTimeTable(self.options.table_size)
        return self._tables[tp]


_Probe = tuple[_PartitionState, TP, int]


def _one_position_per_partition(items: list[_Probe]) -> Iterator[list[_Probe]]:
    """Split probes so that each batch asks one position per partition (two groups on the
    same partition at different offsets need two reads)."""
    remaining = items
    while remaining:
        batch: dict[tuple[TP, int], list[_Probe]] = {}
        taken: dict[TP, int] = {}
        rest = []
        for item in remaining:
            _, tp, offset = item
            if taken.setdefault(tp, offset) == offset:
                batch.setdefault((tp, offset), []).append(item)
            else:
                rest.append(item)
        yield [item for group in batch.values() for item in group]
        remaining = rest


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
    what they saw; time lag from the first unconsumed record's timestamp (read once, at
    the last sample). Within seconds of sampling: a group that moved or reached the end
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
