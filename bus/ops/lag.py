"""Consumer lag of the bus's groups: offsets from the broker, windows kept between polls.

- :func:`bus_groups` lists the groups the bus runs for a topology (named in
  :mod:`bus.topology.names`).
- :class:`bus.ops.offsets.OffsetReader` asks the broker for groups, committed offsets and
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
records found there (:func:`bus.ops.offsets.backlog`). The reader stops at the end a read_committed consumer
can reach now (Kafka's last stable offset; librdkafka signals it as the partition's EOF):
records of a transaction still open are not records yet, as in Kafka's own consumer, whose
``records-lag`` counts to the last stable offset. The work is bounded: at most
:data:`SCAN_OFFSETS` offsets per group and partition, within the reader's timeout; a group
further behind gets the records of those counted and the rest counted as offsets (an upper
bound: ``lag_exact`` is false). The first record found also gives the time lag its offset
(the table) or its produce time (``record``). The report and its table: :mod:`bus.ops.lag_report`.

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

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from bus.kafka.config import KafkaSettings
from bus.ops.burrow import (
    DEFAULT_WINDOW,
    Commit,
    CommitWindow,
    PartitionStatus,
    Status,
    evaluate_partition,
    group_status,
)
from bus.ops.exceptions import UnknownGroup
from bus.ops.lag_report import GroupLag, LagReport, PartitionLag
from bus.ops.metrics import BusMonitor
from bus.ops.offsets import PROBE_GROUP, TP, Backlog, OffsetReader, Stretch, backlog, plan_stretches
from bus.ops.timelag import DEFAULT_TABLE_SIZE, OffsetTimeTable, lag_seconds
from bus.topology.models import Topology
from bus.topology.names import connector_group, router_group

log = structlog.get_logger("bus.ops.lag")


#: One-shot ``bus lag`` samples this many times, this far apart.
ONE_SHOT_SAMPLES = 3
ONE_SHOT_INTERVAL_S = 1.0

TimeLagMethod = Literal["table", "record"]



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
    reader = OffsetReader(settings)
    monitor = LagMonitor(reader, selection, directory, options=opts)
    try:
        for _ in range(opts.samples - 1):
            monitor.poll(with_time_lag=False)
            sleep(opts.sample_interval_s)
        return monitor.poll()
    finally:
        reader.close()
