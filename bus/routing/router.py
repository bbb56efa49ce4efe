"""The router: a confluent-kafka consume-transform-produce loop in Kafka transactions.

Each batch read from the canonical topics is routed to the subscription topics and its
input offsets are committed in the same transaction, so a crash neither loses nor
duplicates a routed record on a broker that implements transactions. On Kafka the input
offsets are committed through a transaction only, a batch without outputs included (a
transaction of offsets only).

On a broker that shows the records of aborted transactions (the embedded one, see
:mod:`bus.kafka.engine`) the router also recovers by source position
(:mod:`bus.routing.recovery`); on Apache Kafka it does not need to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from bus.connect.dlq import context_headers
from bus.connect.records import RawRecord
from bus.consume.decoder import Decoder
from bus.kafka.admin import TopicSpec, ensure_topics, wait_for_broker
from bus.kafka.config import KafkaSettings, consumer_config, producer_config, router_commit_interval_s
from bus.kafka.consuming import take_batch
from bus.kafka.engine import engine_of
from bus.registry.client import registry_client
from bus.retry import retry_call
from bus.routing.exceptions import RoutingError
from bus.routing.recovery import SRC_HEADER, VisibleOutputs
from bus.routing.plan import Route, build_routes
from bus.schemas import wire
from bus.schemas.catalog import schema_json
from bus.schemas.exceptions import SchemaError
from bus.registry.registration import ensure_registered
from bus.topology.models import Subscription, Topology
from bus.topology.names import router_dlq_topic, router_group

log = structlog.get_logger(__name__)

#: Records per transaction at most. A batch is only as big as what arrived meanwhile, so
#: this costs nothing at a steady pace; behind, a transaction's commit (a round trip or
#: more, slower on a busy broker) is shared by more records. At 500 the soak's router
#: topped out near 2,000 records/s, waiting on commits most of the time.
DEFAULT_BATCH_SIZE = 5000


@dataclass
class RouterStats:
    records_in: int = 0
    records_out: int = 0
    filtered_out: int = 0
    dead_letters: int = 0
    skipped_on_recovery: int = 0
    transactions: int = 0
    before_start: int = 0  # records older than a subscription's start point, not routed
    committed_in: int = 0  # input records whose transaction committed
    committed_out: int = 0  # output records whose transaction committed


def _retrying(operation: Callable[[], object], attempts: int = 5) -> None:
    """Run a transactional operation, repeating it while librdkafka says the error is
    retriable and does not require an abort (its documented contract)."""

    def retriable(exc: Exception) -> bool:
        error = exc.args[0] if isinstance(exc, KafkaException) else None
        return error is not None and error.retriable() and not error.txn_requires_abort()

    def on_retry(exc: Exception, attempt: int) -> None:
        log.warning("router transaction step failed, retrying", error=exc.args[0].str(), attempt=attempt)

    retry_call(operation, attempts=attempts, retriable=retriable, on_retry=on_retry)


Select = Callable[[Subscription], bool]


class RouterMonitor(Protocol):
    """What the router reports as it works (the ops monitor, :class:`bus.ops.metrics.BusMonitor`,
    is one)."""

    def on_transaction(self, seconds: float) -> None: ...

    def on_record_in(self, topic: str, count: int = 1) -> None: ...

    def on_record_out(self, topic: str, *, department: str = "", subscription: str = "", count: int = 1) -> None: ...

    def on_commit(self, group: str, offsets: Iterable[tuple[str, int, int]], at: float | None = None) -> None: ...

    def on_dead_letter(self, *, connector: str, topic: str, error: str) -> None: ...


class Router:
    """Routes the canonical topics of ``topology`` to its subscription topics (all of them,
    or those ``select`` picks); one consumer group and one transactional producer.

    ``lane`` names a router that serves one subscription with a start point (see
    :mod:`bus.routing.service`): its group is ``bus-router.<lane>`` and, where the group
    has no committed offset yet, it starts at the subscription's ``start``.

    A batch is what has arrived when a record is there, up to ``batch_size``
    (``DEFAULT_BATCH_SIZE``); transactions
    start at most every ``commit_interval_s`` (default: the profile's, see
    :func:`bus.kafka.config.router_commit_interval_s`), records arriving in between joining
    the next batch.
    """

    def __init__(
        self,
        topology: Topology,
        settings: KafkaSettings,
        *,
        instance: str = "0",
        batch_size: int = DEFAULT_BATCH_SIZE,
        environ: dict[str, str] | None = None,
        on_batch: Callable[[RouterStats], None] | None = None,
        monitor: RouterMonitor | None = None,
        select: Select | None = None,
        lane: str | None = None,
        commit_interval_s: float | None = None,
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.commit_interval_s = router_commit_interval_s(settings) if commit_interval_s is None else commit_interval_s
        self._last_begin = 0.0  # time.monotonic() when the last batch started
        self._in_transaction = False  # begun by the batch's first output
        self.environ = environ
        self.select = select
        self.lane = lane
        self.stats = RouterStats()
        self._on_batch = on_batch
        self.monitor = monitor
        self._reported: dict[str, int] = {}
        self.engine = engine_of(settings)
        #: outputs an aborted transaction left visible, on a broker that shows them
        self._visible = VisibleOutputs(settings, batch_size) if self.engine.shows_aborted_records else None
        self._not_before: dict[tuple[str, int], int] = {}  # (canonical topic, partition) -> start, ms
        self._start_ms: dict[str, int | None] = {}  # canonical topic -> start of a new group's position
        self._registry = registry_client(settings)
        self._decoder = Decoder(self._registry)
        self.group = router_group(topology.namespace, lane)
        self._transactional_id = f"{self.group}-{instance}"
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._pending: Topology | None = None
        self._lock = threading.Lock()
        self.assigned = threading.Event()
        self._install(topology, build_routes(topology, environ, select))
        if lane is not None:
            at = topology.subscription(lane).start_time  # None: from the earliest record
            self._start_ms = {topic: None if at is None else int(at.timestamp() * 1000) for topic in self._by_topic}

    def _install(self, topology: Topology, routes: dict[str, list[Route]]) -> None:
        self.topology = topology
        self.routes = routes
        self._by_topic = {topology.event_type(et).routed_topic: (et, rs) for et, rs in routes.items()}
        self._canonical = {topology.event_type(et).routed_topic: topology.schema_for(et) for et in routes}

    @property
    def subscriptions(self) -> list[str]:
        return [r.subscription for routes in self.routes.values() for r in routes]

    # -- start-up -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the subscription and dead-letter topics and register every route's schema."""
        self._prepare(self.topology, self.routes)

    def _prepare(self, topology: Topology, routes: dict[str, list[Route]]) -> None:
        wait_for_broker(self.settings)
        specs = [TopicSpec(r.topic, r.partitions) for rs in routes.values() for r in rs]
        specs += [TopicSpec(topology.event_type(et).routed_topic, topology.event_type(et).partitions) for et in routes]
        specs.append(TopicSpec(router_dlq_topic(topology.namespace), 1))
        ensure_topics(self.settings, specs)
        self._check_partition_counts(topology, routes)
        for rs in routes.values():
            for route in rs:
                route.schema_id = ensure_registered(
                    self._registry, route.subject, schema_json(route.schema), route.compatibility
                )

    def _check_partition_counts(self, topology: Topology, routes: dict[str, list[Route]]) -> None:
        """Outputs keep their source partition: a subscription topic needs as many partitions
        as its canonical topic."""
        topics = wait_for_broker(self.settings).list_topics(timeout=self.settings.connect_timeout_s).topics
        for event_type, routes in routes.items():
            source = topology.event_type(event_type)
            have = len(topics[source.routed_topic].partitions)
            for route in routes:
                if len(topics[route.topic].partitions) != have:
                    raise RoutingError(
                        f"subscription topic {route.topic} has {len(topics[route.topic].partitions)} partitions but "
                        f"{source.routed_topic} has {have}; give them the same count (outputs keep the source partition)"
                    )

    def _open(self) -> None:
        self._producer = Producer(
            producer_config(
                self.settings, client_id="bus-router", transactional_id=self._transactional_id, data_path=True
            )
        )
        self._producer.init_transactions(self.settings.connect_timeout_s + 20)
        self._in_transaction = False  # a run after a failure starts with a new producer
        # Static membership under the transactional id: a restarted router (same --instance)
        # takes its partitions back at once instead of waiting for a rebalance.
        self._consumer = Consumer(
            consumer_config(
                self.settings,
                group_id=self.group,
                client_id="bus-router",
                group_instance_id=self._transactional_id,
                # The shared router is the latency path; a lane's reads cost the embedded
                # broker as much (the same canonical partitions), for one subscription.
                latency_bound=self.lane is None,
            )
        )
        self._subscribe()

    def _subscribe(self) -> None:
        assert self._consumer is not None
        if self._by_topic:
            self._consumer.subscribe(list(self._by_topic), on_assign=self._on_assign, on_revoke=self._on_revoke)
        else:
            self._consumer.unsubscribe()
            self.assigned.set()  # nothing to route is a served state

    # -- recovery -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=self.settings.connect_timeout_s)
        fresh = [tp for tp in committed if tp.offset < 0 and self._start_ms.get(tp.topic, -1) != -1]
        if fresh:
            self._start_fresh(consumer, committed, fresh)
        self._find_visible(committed)
        log.info("router assigned", group=self.group, partitions=len(partitions))
        self.assigned.set()

    def _start_fresh(self, consumer: Consumer, committed: list[TopicPartition], fresh: list[TopicPartition]) -> None:
        """Partitions this group never committed on, of a topic with a start point: a lane's
        backfill start, or the time a subscription was added to a running router."""
        positions = {(tp.topic, tp.partition): OFFSET_BEGINNING for tp in committed if tp.offset < 0}
        for tp in fresh:
            start_ms = self._start_ms[tp.topic]
            if start_ms is not None:
                self._not_before[(tp.topic, tp.partition)] = start_ms
        timed = [TopicPartition(tp.topic, tp.partition, self._start_ms[tp.topic]) for tp in fresh
                 if self._start_ms[tp.topic] is not None]
        if timed and self.engine.answers_offsets_for_times:
            for tp in consumer.offsets_for_times(timed, timeout=self.settings.connect_timeout_s):
                if tp.offset >= 0:
                    positions[(tp.topic, tp.partition)] = tp.offset
        consumer.assign([
            TopicPartition(tp.topic, tp.partition, positions.get((tp.topic, tp.partition), tp.offset))
            for tp in committed
        ])
        log.info("router starts new partitions at their start point", group=self.group, partitions=len(fresh))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.clear()

    def _find_visible(self, committed: list[TopicPartition]) -> None:
        if self._visible is not None:
            outputs = {src: [route.topic for route in routes] for src, (_, routes) in self._by_topic.items()}
            self._visible.find({(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed}, outputs)

    # -- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Route until ``stop`` is set. Returns after the last transaction is committed."""
        if any(r.schema_id is None for routes in self.routes.values() for r in routes):
            self.prepare()
        self._open()
        assert self._consumer is not None and self._producer is not None
        try:
            while not stop.is_set():
                if self._pending is not None:
                    self._apply_pending()
                batch = self._next_batch()
                if batch:
                    self._route_batch(batch)
        finally:
            self.close()

    # -- topology changes ----------------------------------------------------------------

    def update(self, topology: Topology) -> None:
        """Serve ``topology`` from the next transaction on (thread-safe; returns at once).

        Its new routes are prepared here (topics, schemas), so the loop only swaps them.
        A subscription added to an event type this router did not read yet starts now."""
        routes = build_routes(topology, self.environ, self.select)
        self._prepare(topology, routes)
        with self._lock:
            self._pending = topology
            self._pending_routes = routes

    def _apply_pending(self) -> None:
        with self._lock:
            topology, routes = self._pending, self._pending_routes
            self._pending = None
        assert topology is not None
        delivered = {r.subscription: r.delivered for rs in self.routes.values() for r in rs}
        for rs in routes.values():
            for route in rs:
                route.delivered = delivered.get(route.subscription, 0)
        before = set(self._by_topic)
        self._install(topology, routes)
        added = set(self._by_topic) - before
        now_ms = int(time.time() * 1000)
        for topic in added:
            self._start_ms.setdefault(topic, now_ms)
        log.info("router serves a new topology", group=self.group, subscriptions=len(self.subscriptions),
                 new_topics=sorted(added), dropped_topics=sorted(before - set(self._by_topic)))
        if set(self._by_topic) != before:
            self._subscribe()

    def _next_batch(self) -> list[Message]:
        assert self._consumer is not None
        batch = take_batch(self._consumer, self.batch_size, 0.2)
        wait = self._last_begin + self.commit_interval_s - time.monotonic()
        if batch and wait > 0 and len(batch) < self.batch_size:
            batch += self._consumer.consume(self.batch_size - len(batch), wait)
        return [m for m in batch if not self._transport_error(m)]

    def _transport_error(self, msg: Message) -> bool:
        err = msg.error()
        if err is None:
            return False
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("router read error", error=err.str(), topic=msg.topic())
        return True

    def _route_batch(self, batch: list[Message]) -> None:
        assert self._consumer is not None and self._producer is not None
        started = time.monotonic()
        out_before = self.stats.records_out
        producer = self._producer
        timeout = self.settings.connect_timeout_s + 20
        self._last_begin = started
        try:
            for msg in batch:
                self._route_one(msg)  # the first output begins the transaction (_produce)
            # Partitions not read yet have no position (OFFSET_INVALID): sent in a transaction's
            # offsets, that committed a position past records the group had not read (a soak on
            # Kafka lost the last alarms of some partitions); only real positions are committed.
            positions = [tp for tp in self._consumer.position(self._consumer.assignment()) if tp.offset >= 0]
            if not self._in_transaction and self.engine.keeps_offsets_only_transactions:
                # No outputs: the position still goes through a transaction (of offsets only),
                # so input offsets are never committed any other way.
                producer.begin_transaction()
                self._in_transaction = True
            transaction = self._in_transaction
            if transaction:
                metadata = self._consumer.consumer_group_metadata()
                _retrying(lambda: producer.send_offsets_to_transaction(positions, metadata, timeout))
                # A retriable commit failure (a timeout) is retried, never aborted: the commit may
                # have happened, and aborting it would route the batch twice.
                _retrying(lambda: producer.commit_transaction(timeout))
                self._in_transaction = False
                self.stats.transactions += 1
            else:
                self._commit_position(positions)
        except KafkaException as exc:
            self.stats.records_out = out_before
            self._abort_and_rewind(exc)
            return
        self.stats.committed_in += len(batch)
        self.stats.committed_out += self.stats.records_out - out_before
        seconds = time.monotonic() - started
        if self.monitor is not None:
            self._report(batch, seconds if transaction else None)
        log.debug("router batch committed", records=len(batch), transaction=transaction, seconds=round(seconds, 4))
        if self._on_batch:
            self._on_batch(self.stats)

    def _report(self, batch: list[Message], seconds: float | None) -> None:
        """Metrics for one committed batch (``seconds``: its transaction's, None without one):
        a handful of calls per batch, none per record."""
        assert self.monitor is not None and self._consumer is not None
        if seconds is not None:
            self.monitor.on_transaction(seconds)
        per_topic: dict[str, int] = {}
        last: dict[tuple[str, int], int] = {}
        for msg in batch:
            per_topic[msg.topic()] = per_topic.get(msg.topic(), 0) + 1
            last[(msg.topic(), msg.partition())] = msg.offset()
        for topic, count in per_topic.items():
            self.monitor.on_record_in(topic, count)
        for routes in self.routes.values():
            for route in routes:
                delta = route.delivered - self._reported.get(route.subscription, 0)
                if delta:
                    self.monitor.on_record_out(
                        route.topic, department=route.department, subscription=route.subscription, count=delta
                    )
                    self._reported[route.subscription] = route.delivered
        self.monitor.on_commit(
            self.group, [(t, p, o + 1) for (t, p), o in last.items()], time.time()
        )

    def _commit_position(self, positions: list[TopicPartition]) -> None:
        """The embedded broker only: a batch that routed nothing (every record filtered out,
        or before its start) has its position committed by the consumer.

        On Kafka such a batch commits in a transaction of offsets only; the embedded broker
        drops the offsets of a transaction that wrote no record (a router whose last records
        were all filtered out stayed behind them for good, and read them again after each
        restart)."""
        assert self._consumer is not None
        offsets = [tp for tp in positions if tp.offset >= 0]  # partitions not read yet have none
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)

    def _abort_and_rewind(self, exc: KafkaException) -> None:
        assert self._consumer is not None and self._producer is not None
        error = exc.args[0]
        aborting = self._in_transaction
        if error.fatal() or aborting and not error.txn_requires_abort() and not error.retriable():
            raise RoutingError(f"the router's transaction failed and cannot go on: {error.str()}") from exc
        if aborting:
            log.warning("router transaction aborted; the batch will be routed again", error=error.str())
            self._producer.abort_transaction(self.settings.connect_timeout_s + 20)
            self._in_transaction = False
        else:  # a batch without outputs: reading it again routes nothing again
            log.warning("router position not committed; the batch will be read again", error=error.str())
        committed = self._consumer.committed(self._consumer.assignment(), timeout=self.settings.connect_timeout_s)
        for tp in committed:
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
        if aborting:  # where the aborted outputs stay visible, they are not written again
            self._find_visible(committed)

    def _route_one(self, msg: Message) -> None:
        assert self._producer is not None
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        self.stats.records_in += 1
        _, routes = self._by_topic.get(topic, (None, []))
        if self._not_before and self._before_start(msg):
            return
        headers = msg.headers() or []  # a fresh list for each call
        headers.append((SRC_HEADER, f"{topic}:{partition}:{offset}".encode()))
        value = msg.value()
        record: dict[str, Any] | None = None
        for route in routes:
            try:
                if route.untouched:
                    out_key, out_value = msg.key(), value
                else:
                    if record is None:
                        record = self._decode(topic, value)
                    if not route.predicate(record):
                        self.stats.filtered_out += 1
                        continue
                    projected = route.project(record)
                    out_key = route.key_for(projected, msg.key())
                    out_value = wire.encode(route.schema_id, route.parsed, projected)  # type: ignore[arg-type]
            except (SchemaError, ValueError, TypeError, KeyError) as exc:
                self._dead_letter(msg, route, exc)
                return  # the record is bad for every route: dead-lettered once
            # The output keeps the source partition: per-key order holds (a key has one source
            # partition) even where the key itself is masked, and each output partition holds
            # the outputs of one source partition only, which bounds recovery exactly.
            if self._visible is not None and self._visible.already_written(route.topic, partition, offset):
                self.stats.skipped_on_recovery += 1
                continue
            self._produce(route.topic, partition, out_key, out_value, route.headers_for(headers, out_key))
            self.stats.records_out += 1
            route.delivered += 1

    def _before_start(self, msg: Message) -> bool:
        """True for a record before its partition's start point (the log is scanned from the
        beginning up to the first record at or after it, then routed from there on)."""
        tp = (msg.topic(), msg.partition())
        start_ms = self._not_before.get(tp)
        if start_ms is None:
            return False
        if msg.timestamp()[1] < start_ms:
            self.stats.before_start += 1
            return True
        del self._not_before[tp]
        return False

    def _produce(self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: list) -> None:
        assert self._producer is not None
        if not self._in_transaction:
            self._producer.begin_transaction()
            self._in_transaction = True
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, partition=partition, headers=headers)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _decode(self, topic: str, value: bytes | None) -> dict[str, Any]:
        if value is None:
            raise SchemaError("a null value (tombstone) on a canonical topic has nothing to route")
        return self._decoder.decode(value, self._canonical[topic].parsed)

    def _dead_letter(self, msg: Message, route: Route, exc: Exception) -> None:
        """A record the router cannot route goes, in the same transaction, to the router's
        dead-letter topic with Kafka Connect's error headers; its offset is committed."""
        headers = list(msg.headers() or []) + context_headers(
            RawRecord.from_message(msg),
            exc,
            connector="bus-router",
            task_id=0,
            stage="TRANSFORMATION",
            class_name=f"{type(self).__module__}.{type(self).__qualname__}",
        )
        self._produce(router_dlq_topic(self.topology.namespace), 0, msg.key(), msg.value(), headers)
        self.stats.dead_letters += 1
        if self.monitor is not None:
            self.monitor.on_dead_letter(connector="bus-router", topic=msg.topic(), error=type(exc).__name__)
        log.warning(
            "record dead-lettered by the router",
            subscription=route.subscription,
            topic=msg.topic(),
            partition=msg.partition(),
            offset=msg.offset(),
            error=str(exc),
        )

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()
            finally:
                self._consumer = None
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None
