"""The router: a confluent-kafka consume-transform-produce loop in Kafka transactions.

Each batch read from the canonical topics is routed to the subscription topics and its
input offsets are committed in the same transaction, so a crash neither loses nor
duplicates a routed record on a broker that implements transactions.

The embedded broker hides open transactions from read_committed readers but shows the
records of *aborted* ones (a killed router's open transaction is aborted when its
successor fences it). On that profile the router therefore also recovers by source
position: every output carries ``bus_src`` (canonical topic, partition, offset), and when
a canonical partition is assigned the router reads the tail of each output partition and
skips outputs that are already visible. With Kafka proper that scan is not needed (aborted
records are invisible) and is skipped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from bus.connectors.dlq import context_headers
from bus.connectors.records import RawRecord
from bus.consume.decoder import Decoder
from bus.kafka.admin import TopicSpec, ensure_topics, wait_for_broker
from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.kafka.consuming import take_batch
from bus.ops.lag import router_group
from bus.ops.metrics import BusMonitor
from bus.registry.client import registry_client
from bus.routing.exceptions import RoutingError
from bus.routing.plan import Route, build_routes
from bus.schemas import wire
from bus.schemas.catalog import schema_json
from bus.schemas.exceptions import SchemaError
from bus.schemas.registration import ensure_registered
from bus.topology.models import Topology, topic_name

log = structlog.get_logger(__name__)

SRC_HEADER = "bus_src"


def router_dlq_topic(topology: Topology) -> str:
    return topic_name(topology.namespace, "bus-router-dlq")


@dataclass
class RouterStats:
    records_in: int = 0
    records_out: int = 0
    filtered_out: int = 0
    dead_letters: int = 0
    skipped_on_recovery: int = 0
    transactions: int = 0
    committed_in: int = 0  # input records whose transaction committed
    committed_out: int = 0  # output records whose transaction committed


def _retrying(operation: Callable[[], object], attempts: int = 5) -> None:
    """Run a transactional operation, repeating it while librdkafka says the error is
    retriable and does not require an abort (its documented contract)."""
    for attempt in range(1, attempts + 1):
        try:
            operation()
            return
        except KafkaException as exc:
            error = exc.args[0]
            if attempt == attempts or not error.retriable() or error.txn_requires_abort():
                raise
            log.warning("router transaction step failed, retrying", error=error.str(), attempt=attempt)


class Router:
    """Routes every canonical topic of ``topology`` to its subscription topics."""

    def __init__(
        self,
        topology: Topology,
        settings: KafkaSettings,
        *,
        instance: str = "0",
        batch_size: int = 500,
        environ: dict[str, str] | None = None,
        on_batch: Callable[[RouterStats], None] | None = None,
        monitor: BusMonitor | None = None,
    ) -> None:
        self.topology = topology
        self.settings = settings
        self.batch_size = batch_size
        self.routes = build_routes(topology, environ)
        self.stats = RouterStats()
        self._on_batch = on_batch
        self.monitor = monitor
        self._reported: dict[str, int] = {}
        self._by_topic = {topology.event_type(et).topic: (et, routes) for et, routes in self.routes.items()}
        self._canonical = {topology.event_type(et).topic: topology.schema_for(et) for et in self.routes}
        self._skip: dict[tuple[str, int], int] = {}  # (output topic, partition) -> source offset
        self._registry = registry_client(settings)
        self._decoder = Decoder(self._registry)
        self._transactional_id = topic_name(topology.namespace, f"bus-router-{instance}")
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self.assigned = threading.Event()

    # -- start-up -----------------------------------------------------------------------

    def prepare(self) -> None:
        """Create the subscription and dead-letter topics and register every route's schema."""
        wait_for_broker(self.settings)
        specs = [TopicSpec(r.topic, r.partitions) for routes in self.routes.values() for r in routes]
        specs += [TopicSpec(self.topology.event_type(et).topic, self.topology.event_type(et).partitions) for et in self.routes]
        specs.append(TopicSpec(router_dlq_topic(self.topology), 1))
        ensure_topics(self.settings, specs)
        self._check_partition_counts()
        for routes in self.routes.values():
            for route in routes:
                route.schema_id = ensure_registered(
                    self._registry, route.subject, schema_json(route.schema), route.compatibility
                )

    def _check_partition_counts(self) -> None:
        """Outputs keep their source partition: a subscription topic needs as many partitions
        as its canonical topic."""
        topics = wait_for_broker(self.settings).list_topics(timeout=self.settings.connect_timeout_s).topics
        for event_type, routes in self.routes.items():
            source = self.topology.event_type(event_type)
            have = len(topics[source.topic].partitions)
            for route in routes:
                if len(topics[route.topic].partitions) != have:
                    raise RoutingError(
                        f"subscription topic {route.topic} has {len(topics[route.topic].partitions)} partitions but "
                        f"{source.topic} has {have}; give them the same count (outputs keep the source partition)"
                    )

    def _open(self) -> None:
        self._producer = Producer(
            producer_config(self.settings, client_id="bus-router", transactional_id=self._transactional_id)
        )
        self._producer.init_transactions(self.settings.connect_timeout_s + 20)
        # Static membership under the transactional id: a restarted router (same --instance)
        # takes its partitions back at once instead of waiting for a rebalance.
        self._consumer = Consumer(
            consumer_config(
                self.settings,
                group_id=router_group(self.topology.namespace),
                client_id="bus-router",
                group_instance_id=self._transactional_id,
            )
        )
        self._consumer.subscribe(list(self._by_topic), on_assign=self._on_assign, on_revoke=self._on_revoke)

    # -- recovery -----------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.settings.embedded:
            committed = consumer.committed(partitions, timeout=self.settings.connect_timeout_s)
            self._recover({(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed})
        log.info("router assigned", partitions=len(partitions))
        self.assigned.set()

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.clear()

    def _recover(self, committed: dict[tuple[str, int], int]) -> None:
        """Find outputs of the assigned canonical partitions, at or after their committed
        offsets, that are already visible (aborted transactions' records, on the embedded
        broker), so that they are not written again.

        Output partition p of a route holds only the outputs of source partition p, in
        source order. Reading it backwards, page by page, until an output of an input
        before the committed offset (or the start of the log) therefore finds every
        visible output of uncommitted inputs, however many aborts left them there."""
        pending = {
            (route.topic, p): (src_topic, c)
            for (src_topic, p), c in committed.items()
            for route in self._by_topic[src_topic][1]
        }
        reader = Consumer(
            consumer_config(self.settings, group_id="bus-router-recovery", client_id="bus-router-recovery")
        )
        try:
            upper = {}
            for out in pending:
                low, high = reader.get_watermark_offsets(TopicPartition(*out), timeout=self.settings.connect_timeout_s)
                upper[out] = (low, high)
            while pending:
                pages = {out: (max(low, high - self.batch_size), high) for out, (low, high) in upper.items() if out in pending}
                pages = {out: page for out, page in pages.items() if page[1] > page[0]}
                for out in [o for o in pending if o not in pages]:
                    del pending[out]  # empty, or read back to the start of the log
                if not pages:
                    break
                found = self._read_pages(reader, pages)
                for out, sources in found.items():
                    src_topic, c = pending[out]
                    uncommitted = [o for o in sources if o >= c]
                    if uncommitted:
                        self._skip[out] = max(self._skip.get(out, -1), max(uncommitted))
                        log.info("router recovery: skipping visible outputs of uncommitted inputs",
                                 output=f"{out[0]}[{out[1]}]", up_to_source_offset=self._skip[out])
                    if len(uncommitted) < len(sources) or pages[out][0] == upper[out][0]:
                        del pending[out]  # reached a committed output, or the log start
                    else:
                        upper[out] = (upper[out][0], pages[out][0])  # all uncommitted: read further back
        finally:
            reader.close()

    def _read_pages(
        self, reader: Consumer, pages: dict[tuple[str, int], tuple[int, int]]
    ) -> dict[tuple[str, int], list[int]]:
        """The source offsets (``bus_src``) of the records in each output page."""
        found: dict[tuple[str, int], list[int]] = {out: [] for out in pages}
        reader.assign([TopicPartition(t, q, start) for (t, q), (start, _) in pages.items()])
        remaining = set(pages)
        deadline = time.monotonic() + self.settings.connect_timeout_s + 30
        while remaining and time.monotonic() < deadline:
            for msg in take_batch(reader, 1000, 0.2):
                out = (msg.topic(), msg.partition())
                if msg.error() or out not in remaining or msg.offset() >= pages[out][1]:
                    continue
                for key, value in msg.headers() or []:
                    if key == SRC_HEADER and value:
                        found[out].append(int(value.rsplit(b":", 1)[1]))
            for tp in reader.position([TopicPartition(t, q) for t, q in remaining]):
                if tp.offset >= pages[(tp.topic, tp.partition)][1]:
                    remaining.discard((tp.topic, tp.partition))
        reader.unassign()
        if remaining:
            raise RoutingError(
                f"router recovery could not read {len(remaining)} output partition(s) in time; restart the router"
            )
        return found

    # -- the loop -----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Route until ``stop`` is set. Returns after the last transaction is committed."""
        if any(r.schema_id is None for routes in self.routes.values() for r in routes):
            self.prepare()
        self._open()
        assert self._consumer is not None and self._producer is not None
        try:
            while not stop.is_set():
                batch = self._next_batch()
                if batch:
                    self._route_batch(batch)
        finally:
            self.close()

    def _next_batch(self) -> list[Message]:
        assert self._consumer is not None
        return [m for m in take_batch(self._consumer, self.batch_size, 0.2) if not self._transport_error(m)]

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
        producer.begin_transaction()
        try:
            for msg in batch:
                self._route_one(msg)
            positions = self._consumer.position(self._consumer.assignment())
            metadata = self._consumer.consumer_group_metadata()
            _retrying(lambda: producer.send_offsets_to_transaction(positions, metadata, timeout))
            # A retriable commit failure (a timeout) is retried, never aborted: the commit may
            # have happened, and aborting it would route the batch twice.
            _retrying(lambda: producer.commit_transaction(timeout))
        except KafkaException as exc:
            self.stats.records_out = out_before
            self._abort_and_rewind(exc)
            return
        self.stats.transactions += 1
        self.stats.committed_in += len(batch)
        self.stats.committed_out += self.stats.records_out - out_before
        if self.monitor is not None:
            self._report(batch, time.monotonic() - started)
        log.debug("router transaction committed", records=len(batch), seconds=round(time.monotonic() - started, 4))
        if self._on_batch:
            self._on_batch(self.stats)

    def _report(self, batch: list[Message], seconds: float) -> None:
        """Metrics for one committed transaction: a handful of calls per batch, none per record."""
        assert self.monitor is not None and self._consumer is not None
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
            router_group(self.topology.namespace), [(t, p, o + 1) for (t, p), o in last.items()], time.time()
        )

    def _abort_and_rewind(self, exc: KafkaException) -> None:
        assert self._consumer is not None and self._producer is not None
        error = exc.args[0]
        if error.fatal() or not error.txn_requires_abort() and not error.retriable():
            raise RoutingError(f"the router's transaction failed and cannot go on: {error.str()}") from exc
        log.warning("router transaction aborted; the batch will be routed again", error=error.str())
        self._producer.abort_transaction(self.settings.connect_timeout_s + 20)
        committed = self._consumer.committed(self._consumer.assignment(), timeout=self.settings.connect_timeout_s)
        for tp in committed:
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))
        if self.settings.embedded:  # the aborted outputs stay visible there: do not write them again
            self._recover({(tp.topic, tp.partition): max(tp.offset, 0) for tp in committed})

    def _route_one(self, msg: Message) -> None:
        assert self._producer is not None
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        self.stats.records_in += 1
        _, routes = self._by_topic[topic]
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
            if self._skip and self._skip.get((route.topic, partition), -1) >= offset:
                self.stats.skipped_on_recovery += 1
                continue
            self._produce(route.topic, partition, out_key, out_value, headers)
            self.stats.records_out += 1
            route.delivered += 1

    def _produce(self, topic: str, partition: int, key: bytes | None, value: bytes | None, headers: list) -> None:
        assert self._producer is not None
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
        self._produce(router_dlq_topic(self.topology), 0, msg.key(), msg.value(), headers)
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
