"""The loop of a sink connector: its subscription topic consumed by its group
(``<namespace.>bus-connector-<name>``, read_committed, no auto-commit). Each poll is split by
partition; every partition's records are decoded (an undecodable value is a dead letter,
stage ``VALUE_CONVERTER``) and written by the sink, partitions concurrently. Offsets are
committed only after ``write`` returned for that partition, that is once every record of it
was delivered or dead-lettered. :class:`Backpressure` pauses the partition it names and
rewinds it to the batch's first offset; it is resumed after ``retry_after``."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from bus.connect.assembly import GROUP_PREFIX
from bus.connect.base import Sink
from bus.connect.config import ConnectorConfig
from bus.connect.dlq import STAGE_VALUE_CONVERTER
from bus.connect.exceptions import Backpressure, ConnectorError, ConnectorFailed, Interrupted
from bus.connect.monitor import ConnectorMonitor
from bus.connect.records import RawRecord, SinkBatch, SinkRecord
from bus.consume.decoder import Decoder
from bus.kafka.config import KafkaSettings, consumer_config
from bus.registry.client import registry_client
from bus.registry.exceptions import RegistryUnreachable

TP = tuple[str, int]


class DecodeFailed(ConnectorError):
    """A value that is not a decodable wire-format record; keeps the raw record."""

    def __init__(self, record: RawRecord, detail: str) -> None:
        self.record = record
        super().__init__(f"the value at {record.where} cannot be decoded: {detail}")


class _StopAt(Exception):
    """A partition stopped at ``offset`` by ConnectorFailed; what came before is done."""

    def __init__(self, offset: int, error: ConnectorFailed) -> None:
        self.offset = offset
        self.error = error


@dataclass
class _Work:
    topic: str
    partition: int
    messages: list[Message] = field(default_factory=list)

    @property
    def key(self) -> TP:
        return self.topic, self.partition

    @property
    def first_offset(self) -> int:
        return self.messages[0].offset()

    @property
    def next_offset(self) -> int:
        return self.messages[-1].offset() + 1


class SinkLoop:
    """Feeds one sink from its subscription topic (see the module docstring). ``pause_wanted``
    is the operator's pause (set from another thread); ``committed`` the offsets committed."""

    def __init__(self, name: str, sink: Sink, topic: str, group_id: str, settings: KafkaSettings,
                 monitor: ConnectorMonitor, config: ConnectorConfig, stopping: threading.Event,
                 parallel: int = 8) -> None:
        self.name = name
        self.sink = sink
        self.topic = topic
        self.group_id = group_id
        self.settings = settings
        self.monitor = monitor
        self.config = config
        self.stopping = stopping
        self.parallel = max(1, parallel)
        self.pause_wanted = False
        self.committed: dict[TP, int] = {}
        self.held: dict[TP, float] = {}  # partitions under backpressure -> when to resume them
        self.dead_lettered: dict[TP, int] = {}  # the last offset dead-lettered, per partition
        self._operator_paused = False

    def run(self) -> None:
        """Consume and write until stopped; raises what stops the sink."""
        sink = self.sink
        consumer = Consumer(
            consumer_config(self.settings, group_id=self.group_id, client_id=f"{GROUP_PREFIX}-{self.name}",
                            read_committed=True, from_beginning=True)
        )
        decoder = Decoder(registry_client(self.settings))
        pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix=f"bus-sink-{self.name}")
        try:
            sink.setup()
            sink.mark_ready()
            if not self._await_topic(consumer):
                return
            consumer.subscribe([self.topic], on_revoke=self._on_revoke)
            while not self.stopping.is_set():
                self._apply_pauses(consumer)
                messages = consumer.consume(num_messages=sink.max_batch_records, timeout=0.2)
                work = self._split(messages)
                if work:
                    self.monitor.on_records_in(self.topic, sum(len(w.messages) for w in work))
                    self._deliver(consumer, pool, decoder, sink, work)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            try:
                sink.close()
            finally:
                consumer.close()

    def _await_topic(self, consumer: Consumer, every_s: float = 1.0) -> bool:
        """Wait until the subscription topic exists (the router or `bus apply` creates it):
        subscribed to a missing topic, the consumer would only notice it at its next metadata
        refresh, minutes later. False when stopped while waiting."""
        said = False
        while not self.stopping.is_set():
            try:
                found = consumer.list_topics(self.topic, timeout=self.settings.connect_timeout_s).topics.get(self.topic)
            except KafkaException:
                found = None
            if found is not None and found.error is None and found.partitions:
                if said:
                    self.monitor.log.info("subscription topic found", topic=self.topic)
                return True
            if not said:
                self.monitor.log.warning("waiting for the subscription topic (the router creates it, or `bus apply`)",
                                          topic=self.topic)
                said = True
            self.stopping.wait(every_s)
        return False

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.held.pop((tp.topic, tp.partition), None)
            self.dead_lettered.pop((tp.topic, tp.partition), None)

    def _apply_pauses(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if self.pause_wanted:
            assignment = consumer.assignment()
            if assignment:
                consumer.pause(assignment)  # again after a rebalance brought new partitions
            self._operator_paused = True
            return
        if self._operator_paused:
            resumed = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) not in self.held]
            if resumed:
                consumer.resume(resumed)
            self._operator_paused = False
        due = [key for key, until in self.held.items() if until <= now]
        if due:
            consumer.resume([TopicPartition(t, p) for t, p in due])
            for key in due:
                del self.held[key]

    def _split(self, messages: list[Message]) -> list[_Work]:
        work: dict[TP, _Work] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise ConnectorFailed(self.name, f"the consumer failed: {error.str()}")
                continue  # transient (a broker restarting...): librdkafka retries by itself
            key = (msg.topic(), msg.partition())
            if key in self.held:
                continue  # fetched before the pause; the partition was rewound
            work.setdefault(key, _Work(*key)).messages.append(msg)
        return list(work.values())

    def _deliver(
        self, consumer: Consumer, pool: ThreadPoolExecutor, decoder: Decoder, sink: Sink, work: list[_Work]
    ) -> None:
        futures: list[tuple[_Work, Future[None]]] = [
            (w, pool.submit(self._write_partition, decoder, sink, w)) for w in work
        ]
        commits: dict[TP, int] = {}
        failure: BaseException | None = None
        for w, future in futures:
            try:
                future.result()
                commits[w.key] = w.next_offset
            except Backpressure as bp:
                self._hold(consumer, w, bp)
            except Interrupted:
                pass
            except _StopAt as stop:
                commits[w.key] = stop.offset
                failure = failure or stop.error
            except BaseException as exc:
                failure = failure or exc
        if commits:
            sink.flush()
            self._commit(consumer, commits)
        if failure is not None:
            raise failure

    def _hold(self, consumer: Consumer, w: _Work, bp: Backpressure) -> None:
        tp = TopicPartition(w.topic, w.partition)
        consumer.pause([tp])
        consumer.seek(TopicPartition(w.topic, w.partition, w.first_offset))
        self.held[w.key] = time.monotonic() + max(0.0, bp.retry_after)
        self.monitor.on_backpressure(w.topic, w.partition, bp.retry_after, str(bp))

    def _commit(self, consumer: Consumer, commits: dict[TP, int]) -> None:
        offsets = [TopicPartition(t, p, o) for (t, p), o in commits.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # A rebalance took the partitions: their records are delivered again elsewhere
            # (at least once; receivers deduplicate by Idempotency-Key).
            self.monitor.on_error(exc, stage="consumer", during="commit")
            return
        self.committed.update(commits)
        self.monitor.on_commit(self.group_id, commits)

    def _write_partition(self, decoder: Decoder, sink: Sink, w: _Work) -> None:
        records: list[SinkRecord] = []
        stop: _StopAt | None = None
        for msg in w.messages:
            raw = RawRecord.from_message(msg)
            try:
                records.append(SinkRecord(raw, self._decode(decoder, raw)))
            except (Interrupted, ConnectorFailed):
                raise
            except Exception as exc:
                stop = self._undecodable(sink, raw, exc)
                if stop is not None:
                    break
        if records:
            sink.write(SinkBatch(w.topic, w.partition, records))
        if stop is not None:
            raise stop

    def _undecodable(self, sink: Sink, raw: RawRecord, exc: Exception) -> _StopAt | None:
        key = (raw.topic or "", raw.partition or 0)
        if raw.offset is not None and raw.offset <= self.dead_lettered.get(key, -1):
            return None  # already dead-lettered before a rewind
        error = DecodeFailed(raw, f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        try:
            sink.dead_letter(raw, error, stage=STAGE_VALUE_CONVERTER)
        except ConnectorFailed as failed:
            return _StopAt(raw.offset or 0, failed)
        if raw.offset is not None:
            self.dead_lettered[key] = raw.offset
        return None

    def _decode(self, decoder: Decoder, raw: RawRecord) -> object:
        """The JSON-ready value (None for a tombstone); a registry that cannot be reached
        is retried with backoff, then stops the connector (it is not the record's fault)."""
        if raw.value is None:
            return None
        retries = self.config.retry_policy().start()
        while True:
            try:
                return decoder.decode_json(raw.value)
            except RegistryUnreachable as exc:
                delay = retries.next_delay()
                if delay is None:
                    raise ConnectorFailed(self.name, f"cannot decode {raw.where}: {exc}", raw) from exc
                self.monitor.on_retry(raw, exc, delay)
                if self.stopping.wait(delay):
                    raise Interrupted(f"connector {self.name!r} is stopping") from exc
