"""What ``bus lag`` reads from the broker: consumer groups and their states, committed offsets,
log end offsets, and what lies between a committed offset and the end (records, not markers).
See :mod:`bus.ops.lag` for how it is judged."""

from __future__ import annotations

import time
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, ConsumerGroupState, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from bus.kafka.admin import wait_for_broker
from bus.kafka.config import KafkaSettings, consumer_config
from bus.ops.exceptions import LagQueryFailed

log = structlog.get_logger("bus.ops.lag")

TP = tuple[str, int]

#: The group id of the probe that reads behind groups: it is assigned partitions, never joins or commits.
PROBE_GROUP = "bus-lag-probe"
#: Offsets the probe reads at most per group and partition at each poll (module docstring).
SCAN_OFFSETS = 200
#: How long the broker may hold the probe's fetch at the end before answering it empty, which is
#: when librdkafka tells the probe it reached the end (Kafka's default, 500 ms, at every poll).
PROBE_FETCH_WAIT_MS = 100
#: Messages the probe takes from its queue at a time.
PROBE_BATCH = 500

_LIVE_STATES = {
    ConsumerGroupState.STABLE,
    ConsumerGroupState.PREPARING_REBALANCING,
    ConsumerGroupState.COMPLETING_REBALANCING,
}


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
    # that stopped answering (one node of three frozen is enough); ListGroups and a consumer's
    # OffsetFetch time out without aborting.

    def close(self) -> None:
        """Close the consumers that read the groups' commits (also done when the reader is
        collected); a closed reader opens new ones if asked again."""
        _close_all(self._readers)

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
