"""Running one connector: start, stop, pause, resume, status.

A source runs its ``run()`` loop on the runner's thread and publishes through
:class:`~bus.publish.Publisher`; its position is read from the offsets topic at start.

A sink's subscription topic is consumed by the group ``<namespace.>bus-connector-<name>``
(read_committed, no auto-commit). Each poll is split by partition; every partition's
records are decoded (an undecodable value is a dead letter, stage ``VALUE_CONVERTER``)
and written by the sink, partitions concurrently. Offsets are committed only after
``write`` returned for that partition, that is once every record of it was delivered or
dead-lettered. :class:`Backpressure` pauses the partition it names and rewinds it to
the batch's first offset; it is resumed after ``retry_after``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from bus.ops.lag import connector_group
from bus.connectors.base import PublisherPool, Sink, SinkContext, Source, SourceContext, class_path, same_side
from bus.connectors.compacted import AckedProducer
from bus.connectors.config import ConnectorConfig, parse_config
from bus.connectors.dlq import STAGE_VALUE_CONVERTER, DeadLetterQueue, ErrorPolicy, dlq_topic
from bus.connectors.exceptions import Backpressure, ConnectorError, ConnectorFailed, Interrupted
from bus.connectors.monitor import ConnectorMonitor, MetricsHooks
from bus.connectors.offsets import OffsetStore
from bus.connectors.records import RawRecord, SinkBatch, SinkRecord
from bus.connectors.registry import load_connector_class
from bus.connectors.status import ConnectorStatus, State, StatusStore, now_iso
from bus.consume.decoder import Decoder
from bus.kafka.config import KafkaSettings, consumer_config
from bus.registry.client import registry_client
from bus.registry.exceptions import RegistryUnreachable
from bus.topology.models import Connector, Topology

GROUP_PREFIX = "bus-connector"
TP = tuple[str, int]


def group_id(namespace: str | None, connector: str) -> str:
    """The consumer group of a sink: ``<namespace.>bus-connector-<name>`` (named by bus.ops.lag)."""
    return connector_group(namespace, connector)


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


class ConnectorRunner:
    """Runs one connector of a topology on a background thread.

    ``kind`` (the connector class) defaults to the installed type named by
    ``connector.type``; ``topic`` overrides a sink's subscription topic; ``metrics``
    receives the connector's metric hooks (e.g. the ops monitor).
    """

    def __init__(
        self,
        connector: Connector,
        topology: Topology,
        settings: KafkaSettings,
        *,
        kind: type[Source] | type[Sink] | None = None,
        topic: str | None = None,
        entry_points: Iterable[EntryPoint] | None = None,
        task_id: int = 0,
        status_interval_s: float = 10.0,
        report_status: bool = True,
        parallel_partitions: int = 8,
        metrics: MetricsHooks | None = None,
    ) -> None:
        self.connector = connector
        self.topology = topology
        self.settings = settings
        self.task_id = task_id
        self.status_interval_s = status_interval_s
        self.report_status = report_status
        self._kind = kind
        self._topic = topic
        self._entry_points = entry_points
        self._parallel = max(1, parallel_partitions)
        self._metrics = metrics
        self.instance: Source | Sink | None = None
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._state: State = "stopped"
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat: threading.Thread | None = None
        self._monitor: ConnectorMonitor | None = None
        self._producer: AckedProducer | None = None
        self._dlq: DeadLetterQueue | None = None
        self._status: StatusStore | None = None
        self._offsets: OffsetStore | None = None
        self._publishers: PublisherPool | None = None
        self._config: ConnectorConfig | None = None
        # sink state (the consumer thread only, except _pause_wanted)
        self._pause_wanted = False
        self._operator_paused = False
        self._held: dict[TP, float] = {}
        self._dead_lettered: dict[TP, int] = {}
        self._committed: dict[TP, int] = {}

    # -- names ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.connector.name

    @property
    def group_id(self) -> str:
        return group_id(self.topology.namespace, self.name)

    @property
    def topic(self) -> str | None:
        """The topic a sink consumes (None for a source)."""
        if self.connector.side != "sink":
            return None
        if self._topic:
            return self._topic
        assert self.connector.subscription is not None
        return self.topology.subscription(self.connector.subscription).topic

    @property
    def dead_letter_topic(self) -> str:
        configured = self._config.errors_deadletterqueue_topic_name if self._config else None
        return dlq_topic(self.topology.namespace, self.name, configured)

    @property
    def state(self) -> State:
        return self._state

    @property
    def error(self) -> BaseException | None:
        return self._error

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> "ConnectorRunner":
        """Build the connector and start it; returns once it serves (or raises its error)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stopping.clear()
        self._error = None
        self._set_state("starting")
        try:
            self._build()
        except BaseException as exc:
            self._fail(exc)
            self._close_resources()
            raise
        assert self.instance is not None
        self._thread = threading.Thread(target=self._main, name=f"bus-connector-{self.name}", daemon=True)
        self._thread.start()
        try:
            self._wait_ready(self.instance, self._thread, timeout_s)
            self._set_state("running")
            self._heartbeat = threading.Thread(target=self._beat, name=f"bus-connector-{self.name}-status",
                                               daemon=True)
            self._heartbeat.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, instance: Source | Sink, thread: threading.Thread, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not instance.wait_ready(0.05):
            if not thread.is_alive() or time.monotonic() > deadline:
                break
        if self._error is not None:
            raise self._error
        if instance.wait_ready(0):
            return
        if not thread.is_alive():
            raise ConnectorFailed(self.name, "its run() returned without calling mark_ready(); a source calls it "
                                  "once it serves, before producing")
        raise ConnectorFailed(self.name, f"it did not become ready within {timeout_s:g} s")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop and wait for the connector's thread. Safe to call twice."""
        if self._thread is None:
            return
        if self._state != "failed":
            self._set_state("stopping")
        self._stopping.set()
        if self.instance is not None:
            self.instance.stop()
        self._thread.join(timeout_s)
        if self._heartbeat is not None:
            self._heartbeat.join(timeout_s)
        self._thread = self._heartbeat = None
        if self._state != "failed":
            self._set_state("stopped")
        self._close_resources()

    def pause(self) -> None:
        """Stop taking records (a sink pauses its partitions; a source its input)."""
        if self.instance is None or self._state not in ("running", "paused"):
            return
        self.instance.pause()
        self._pause_wanted = True
        self._set_state("paused")

    def resume(self) -> None:
        if self.instance is None or self._state != "paused":
            return
        self.instance.resume()
        self._pause_wanted = False
        self._set_state("running")

    def wait(self, timeout_s: float | None = None) -> State:
        """Block until the connector's thread ends (a failure, or a source that finished)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)
        return self._state

    def status(self) -> ConnectorStatus:
        counts = self._monitor.snapshot() if self._monitor else {}
        detail = self.instance.status_detail() if self.instance is not None else {}
        if self.connector.side == "sink":
            position = {f"{t}[{p}]": o for (t, p), o in sorted(self._committed.items())}
            detail = {"topic": self.topic, "group": self.group_id, "dead_letter_topic": self.dead_letter_topic, **detail}
        else:
            position = dict(self.instance.position or {}) if isinstance(self.instance, Source) else {}
            detail = {"dead_letter_topic": self.dead_letter_topic, **detail}
        return ConnectorStatus(
            name=self.name,
            type=self.connector.type,
            department=self.connector.department,
            side=self.connector.side,
            state=self._state,
            worker=self.worker,
            updated_at=now_iso(),
            interval_s=self.status_interval_s,
            error=str(self._error) if self._error else None,
            counts=counts,
            position=position,
            detail=detail,
        )

    def __enter__(self) -> "ConnectorRunner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- building ------------------------------------------------------------------------

    def _build(self) -> None:
        kind = self._kind or load_connector_class(self.connector.type, entry_points=self._entry_points)
        same_side(kind, self.connector)
        config = parse_config(kind.config_model, self.name, self.connector.config, resolve=True)
        self._config = config
        monitor = self._monitor = ConnectorMonitor(
            self.name, self.connector.department, self.connector.type,
            subscription=self.connector.subscription, metrics=self._metrics,
        )
        producer = self._producer = AckedProducer(self.settings, client_id=f"{GROUP_PREFIX}-{self.name}")
        self._dlq = DeadLetterQueue(
            self.settings,
            self.dead_letter_topic,
            connector=self.name,
            task_id=self.task_id,
            context_headers_enable=config.errors_deadletterqueue_context_headers_enable,
            producer=producer,
        ).ensure()
        if self.report_status:
            self._status = StatusStore(self.settings, self.topology.namespace, producer=producer).ensure()
        errors = ErrorPolicy(self.name, config, self._dlq, monitor, class_path(kind))
        common = dict(connector=self.connector, topology=self.topology, settings=self.settings, monitor=monitor,
                      errors=errors, retry=config.retry_policy(), stopping=self._stopping)
        if issubclass(kind, Source):
            self._offsets = OffsetStore(self.settings, self.topology.namespace, producer=producer).ensure()
            self._publishers = PublisherPool(self.topology, self.settings, client_id=f"{GROUP_PREFIX}-{self.name}")
            source = kind(config, SourceContext(**common, offsets=self._offsets, publishers=self._publishers))
            source.position = self._offsets.load(self.name)
            self.instance = source
        else:
            assert self.topic is not None
            self.instance = kind(config, SinkContext(**common, topic=self.topic))

    def _close_resources(self) -> None:
        for closer in (self._publishers, self._offsets, self._status, self._dlq, self._producer):
            if closer is not None:
                try:
                    closer.close()
                except Exception as exc:  # closing must not hide what happened before
                    if self._monitor:
                        self._monitor.log.warning("close failed", error=str(exc))
        self._publishers = self._offsets = self._status = self._dlq = self._producer = None

    # -- state and status ----------------------------------------------------------------

    def _set_state(self, state: State) -> None:
        with self._lock:
            if self._state == "failed" and state not in ("starting",):
                return
            self._state = state
        if self._monitor is not None:
            self._monitor.on_state(state)
        self._report()

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._error = error
            self._state = "failed"
        if self._monitor is not None:
            self._monitor.on_error(error, stage="task_put" if self.connector.side == "sink" else "task_poll")
        self._report()

    def _report(self) -> None:
        if self._status is None:
            return
        try:
            self._status.write(self.status())
        except Exception as exc:  # status is best effort: never stops the connector
            if self._monitor:
                self._monitor.log.warning("could not write the connector status", error=str(exc))

    def _beat(self) -> None:
        while not self._stopping.wait(self.status_interval_s):
            self._report()

    # -- the thread ----------------------------------------------------------------------

    def _main(self) -> None:
        try:
            if isinstance(self.instance, Source):
                self._run_source(self.instance)
            else:
                assert isinstance(self.instance, Sink)
                self._run_sink(self.instance)
        except Interrupted:
            pass
        except BaseException as exc:
            self._fail(exc)
        else:
            if not self._stopping.is_set():
                self._set_state("stopped")  # a source whose input ended

    def _run_source(self, source: Source) -> None:
        source.setup()
        try:
            source.run()
        finally:
            try:
                source.flush()
            finally:
                source.close()

    def _run_sink(self, sink: Sink) -> None:
        assert self.topic is not None and self._monitor is not None
        consumer = Consumer(
            consumer_config(self.settings, group_id=self.group_id, client_id=f"{GROUP_PREFIX}-{self.name}",
                            read_committed=True, from_beginning=True)
        )
        decoder = Decoder(registry_client(self.settings))
        pool = ThreadPoolExecutor(max_workers=self._parallel, thread_name_prefix=f"bus-sink-{self.name}")
        try:
            sink.setup()
            sink.mark_ready()
            if not self._await_topic(consumer):
                return
            consumer.subscribe([self.topic], on_revoke=self._on_revoke)
            while not self._stopping.is_set():
                self._apply_pauses(consumer)
                messages = consumer.consume(num_messages=sink.max_batch_records, timeout=0.2)
                work = self._split(messages)
                if work:
                    self._monitor.on_records_in(self.topic, sum(len(w.messages) for w in work))
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
        assert self.topic is not None
        said = False
        while not self._stopping.is_set():
            try:
                found = consumer.list_topics(self.topic, timeout=self.settings.connect_timeout_s).topics.get(self.topic)
            except KafkaException:
                found = None
            if found is not None and found.error is None and found.partitions:
                if said:
                    self._monitor.log.info("subscription topic found", topic=self.topic)
                return True
            if not said:
                self._monitor.log.warning("waiting for the subscription topic (the router creates it, or `bus apply`)",
                                          topic=self.topic)
                said = True
            self._stopping.wait(every_s)
        return False

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._held.pop((tp.topic, tp.partition), None)
            self._dead_lettered.pop((tp.topic, tp.partition), None)

    def _apply_pauses(self, consumer: Consumer) -> None:
        now = time.monotonic()
        if self._pause_wanted:
            assignment = consumer.assignment()
            if assignment:
                consumer.pause(assignment)  # again after a rebalance brought new partitions
            self._operator_paused = True
            return
        if self._operator_paused:
            resumed = [tp for tp in consumer.assignment() if (tp.topic, tp.partition) not in self._held]
            if resumed:
                consumer.resume(resumed)
            self._operator_paused = False
        due = [key for key, until in self._held.items() if until <= now]
        if due:
            consumer.resume([TopicPartition(t, p) for t, p in due])
            for key in due:
                del self._held[key]

    def _split(self, messages: list[Message]) -> list[_Work]:
        work: dict[TP, _Work] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise ConnectorFailed(self.name, f"the consumer failed: {error.str()}")
                continue  # transient (a broker restarting...): librdkafka retries by itself
            key = (msg.topic(), msg.partition())
            if key in self._held:
                continue  # fetched before the pause; the partition was rewound
            work.setdefault(key, _Work(*key)).messages.append(msg)
        return list(work.values())

    def _deliver(
        self, consumer: Consumer, pool: ThreadPoolExecutor, decoder: Decoder, sink: Sink, work: list[_Work]
    ) -> None:
        assert self._monitor is not None
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
        assert self._monitor is not None
        tp = TopicPartition(w.topic, w.partition)
        consumer.pause([tp])
        consumer.seek(TopicPartition(w.topic, w.partition, w.first_offset))
        self._held[w.key] = time.monotonic() + max(0.0, bp.retry_after)
        self._monitor.on_backpressure(w.topic, w.partition, bp.retry_after, str(bp))

    def _commit(self, consumer: Consumer, commits: dict[TP, int]) -> None:
        assert self._monitor is not None
        offsets = [TopicPartition(t, p, o) for (t, p), o in commits.items()]
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # A rebalance took the partitions: their records are delivered again elsewhere
            # (at least once; receivers deduplicate by Idempotency-Key).
            self._monitor.on_error(exc, stage="consumer", during="commit")
            return
        self._committed.update(commits)
        self._monitor.on_commit(self.group_id, commits)

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
        if raw.offset is not None and raw.offset <= self._dead_lettered.get(key, -1):
            return None  # already dead-lettered before a rewind
        error = DecodeFailed(raw, f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        try:
            sink.dead_letter(raw, error, stage=STAGE_VALUE_CONVERTER)
        except ConnectorFailed as failed:
            return _StopAt(raw.offset or 0, failed)
        if raw.offset is not None:
            self._dead_lettered[key] = raw.offset
        return None

    def _decode(self, decoder: Decoder, raw: RawRecord) -> object:
        """The JSON-ready value (None for a tombstone); a registry that cannot be reached
        is retried with backoff, then stops the connector (it is not the record's fault)."""
        assert self._config is not None and self._monitor is not None
        if raw.value is None:
            return None
        retries = self._config.retry_policy().start()
        while True:
            try:
                return decoder.decode_json(raw.value)
            except RegistryUnreachable as exc:
                delay = retries.next_delay()
                if delay is None:
                    raise ConnectorFailed(self.name, f"cannot decode {raw.where}: {exc}", raw) from exc
                self._monitor.on_retry(raw, exc, delay)
                if self._stopping.wait(delay):
                    raise Interrupted(f"connector {self.name!r} is stopping") from exc
