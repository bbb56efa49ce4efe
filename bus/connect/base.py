"""The two kinds of connector a department attaches with.

- A :class:`Source` brings records from a department's system onto the bus: its
  ``run()`` loop calls :meth:`Source.produce` (which publishes through
  :class:`~bus.publish.Publisher`, as the connector's department, and returns after the
  broker's acknowledgement) and :meth:`Source.flush` (which stores the position reached)
  for as long as :attr:`Source.running`.
- A :class:`Sink` delivers a subscription to a department's system: the runner consumes
  the subscription topic and calls :meth:`Sink.write` with the decoded records of one
  partition at a time (several partitions may be written concurrently, from different
  threads), then :meth:`Sink.flush`, then commits. When ``write`` returns, every record
  of the batch is delivered or was given to :meth:`Sink.dead_letter`. A sink that cannot
  take records now raises :class:`Backpressure`; the runner pauses that partition and
  delivers the batch again later.

Each connector type declares its settings as ``config_model`` (a
:class:`~bus.connect.config.ConnectorConfig` subclass) and is installed as an entry
point of the group ``bus.connect``.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from bus.connect.config import ConnectorConfig
from bus.connect.dlq import STAGE_TASK_POLL, STAGE_TASK_PUT, ErrorPolicy
from bus.connect.exceptions import Backpressure, ConnectorError, Interrupted
from bus.connect.monitor import ConnectorMonitor
from bus.connect.offsets import OffsetStore, Position
from bus.connect.records import RawRecord, SinkBatch, SinkRecord
from bus.retry import RetryPolicy
from bus.errors import BusError
from bus.kafka.config import KafkaSettings
from bus.kafka.exceptions import KafkaError
from bus.publish.exceptions import PublishRefused
from bus.publish.publisher import Published, Publisher, PublishSummary
from bus.registry.exceptions import RegistryUnreachable
from bus.topology.models import Connector, Topology

__all__ = [
    "Backpressure",
    "ConnectorContext",
    "PublisherPool",
    "RawRecord",
    "Sink",
    "SinkBatch",
    "SinkContext",
    "SinkRecord",
    "Source",
    "SourceContext",
]


class PublisherPool:
    """One :class:`Publisher` per thread (a Publisher is not thread-safe), closed together."""

    def __init__(self, topology: Topology, settings: KafkaSettings, *, client_id: str) -> None:
        self.topology = topology
        self.settings = settings
        self.client_id = client_id
        self._local = threading.local()
        self._all: list[Publisher] = []
        self._lock = threading.Lock()

    def get(self) -> Publisher:
        publisher = getattr(self._local, "publisher", None)
        if publisher is None:
            publisher = Publisher(self.topology, self.settings, client_id=self.client_id)
            self._local.publisher = publisher
            with self._lock:
                self._all.append(publisher)
        return publisher

    def close(self) -> None:
        with self._lock:
            publishers, self._all = self._all, []
        for publisher in publishers:
            publisher.close()


@dataclass
class ConnectorContext:
    """What the runner gives a connector: who it is, where the bus is, how to fail."""

    connector: Connector
    topology: Topology
    settings: KafkaSettings
    monitor: ConnectorMonitor
    errors: ErrorPolicy
    retry: RetryPolicy
    stopping: threading.Event = field(default_factory=threading.Event)


@dataclass
class SourceContext(ConnectorContext):
    offsets: OffsetStore | None = None
    publishers: PublisherPool | None = None


@dataclass
class SinkContext(ConnectorContext):
    topic: str = ""


class _Lifecycle:
    """Start/stop/pause state shared by sources and sinks."""

    side: ClassVar[Literal["source", "sink"]]
    #: The connector's settings; subclasses narrow it to their own model.
    config_model: ClassVar[type[ConnectorConfig]] = ConnectorConfig

    def __init__(self, config: ConnectorConfig, context: ConnectorContext) -> None:
        self.config = config
        self.context = context
        self.name = context.connector.name
        self.department = context.connector.department
        self.log = context.monitor.log
        self._ready = threading.Event()
        self._paused = threading.Event()

    @property
    def running(self) -> bool:
        """False once the connector is asked to stop: loops end when they see it."""
        return not self.context.stopping.is_set()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    def mark_ready(self) -> None:
        """Tell the runner the connector is serving (start() returns then)."""
        self._ready.set()

    def wait_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s)

    def setup(self) -> None:
        """Open what the connector needs (on the runner's thread, before work starts)."""

    def stop(self) -> None:
        """Asked from another thread to stop: abandon waits (``running`` is already False)."""

    def close(self) -> None:
        """Release what ``setup`` opened (on the runner's thread, after work ended)."""

    def pause(self) -> None:
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    def status_detail(self) -> dict[str, Any]:
        """Connector-specific facts for ``bus connector status`` (never a secret)."""
        return {}

    def check_running(self) -> None:
        """Raise Interrupted when stopping: for long waits inside write() and run()."""
        if not self.running:
            raise Interrupted(f"connector {self.name!r} is stopping")


class Source(_Lifecycle, ABC):
    """A connector that publishes a department system's records onto the bus."""

    side: ClassVar[Literal["source"]] = "source"  # type: ignore[assignment]

    def __init__(self, config: ConnectorConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        self.context: SourceContext = context
        #: The position saved by the last run (None on the first run), read at start.
        self.position: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @abstractmethod
    def run(self) -> None:
        """The source's loop: produce records and flush while ``running``; call
        :meth:`mark_ready` once it is serving."""

    def produce(
        self,
        event_type: str,
        record: Any,
        *,
        traceparent: str | None = None,
        position: Position | None = None,
    ) -> Published:
        """Publish one record as the connector's department and wait for the broker's
        acknowledgement. ``position`` (JSON object) is saved by the next :meth:`flush`.
        Raises what :meth:`Publisher.publish` raises (RecordInvalid, PublishRefused,
        BrokerUnreachable...). Thread-safe."""
        self.check_publishes(event_type)
        assert self.context.publishers is not None
        publisher = self.context.publishers.get()
        published = publisher.publish(event_type, self.department, record, traceparent=traceparent)
        self.context.monitor.on_published(event_type, published.topic, published.trace_id,
                                          partition=published.partition, offset=published.offset)
        self._advance(position)
        return published

    def produce_many(
        self,
        event_type: str,
        records: Sequence[Any],
        *,
        traceparent: str | None = None,
        position: Position | None = None,
    ) -> PublishSummary:
        """Publish records to the end, pipelined (or one by one, under one ``traceparent``),
        as the connector's department; each rejection is numbered from 1. ``position`` is
        saved by the next :meth:`flush` only if every record was acknowledged."""
        self.check_publishes(event_type)
        assert self.context.publishers is not None
        publisher = self.context.publishers.get()
        if traceparent is None:
            summary = publisher.publish_each(event_type, self.department, enumerate(records, start=1))
        else:
            summary = PublishSummary()
            for number, record in enumerate(records, start=1):
                try:
                    publisher.publish(event_type, self.department, record, traceparent=traceparent)
                    summary.published += 1
                except (KafkaError, RegistryUnreachable):
                    raise
                except BusError as exc:
                    summary.rejected.append((number, str(exc)))
        topic = self.context.topology.event_type(event_type).topic
        self.context.monitor.on_published_many(event_type, topic, summary.published)
        if not summary.rejected:
            self._advance(position)
        return summary

    def check_publishes(self, event_type: str) -> None:
        """PublishRefused unless ``event_type`` is in the connector's ``publishes``."""
        publishes = self.context.connector.publishes or []
        if event_type not in publishes:
            raise PublishRefused(
                f"connector {self.name!r} may not publish {event_type}: it publishes "
                f"{', '.join(publishes) or 'nothing'} (its `publishes` in topology.yaml)"
            )

    def _advance(self, position: Position | None) -> None:
        if position is not None:
            with self._lock:
                self._pending = dict(position)

    def flush(self) -> None:
        """Save the position of the last acknowledged record (if it changed)."""
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None or pending == self.position or self.context.offsets is None:
            return
        self.context.offsets.save(self.name, pending)
        self.position = pending

    def dead_letter(self, raw: RawRecord, error: BaseException, *, stage: str = STAGE_TASK_POLL) -> None:
        """Input that cannot become a record: to the dead-letter topic (or stop, with
        ``errors.tolerance: none``)."""
        self.context.errors.report(raw, error, stage=stage)

    def wait_while_paused(self, poll_s: float = 0.2) -> None:
        """Block while paused; return at once when stopping."""
        while self.paused and self.running:
            self.context.stopping.wait(poll_s)


class Sink(_Lifecycle, ABC):
    """A connector that delivers a subscription to a department's system."""

    side: ClassVar[Literal["sink"]] = "sink"  # type: ignore[assignment]
    #: Most records the runner hands over per poll (all partitions together).
    max_batch_records: ClassVar[int] = 500

    def __init__(self, config: ConnectorConfig, context: SinkContext) -> None:
        super().__init__(config, context)
        self.context: SinkContext = context

    @abstractmethod
    def write(self, batch: SinkBatch) -> None:
        """Deliver every record of ``batch`` (one partition, offset order), dead-lettering
        those that fail for good; raise :class:`Backpressure` to be given it again later."""

    def flush(self) -> None:
        """Make what ``write`` delivered durable; the runner commits after this returns."""

    def dead_letter(self, record: SinkRecord | RawRecord, error: BaseException, *, stage: str = STAGE_TASK_PUT) -> None:
        """A record that failed for good: to the dead-letter topic (``errors.tolerance: all``)
        or ConnectorFailed (``none``)."""
        raw = record.raw if isinstance(record, SinkRecord) else record
        self.context.errors.report(raw, error, stage=stage)


def class_path(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def same_side(kind: type[Source] | type[Sink], connector: Connector) -> None:
    """ConnectorError when a topology entry's side (publishes/subscription) does not match its type."""
    if kind.side != connector.side:
        wants = "`publishes: [...]`" if kind.side == "source" else "`subscription: <name>`"
        raise ConnectorError(
            f"connector {connector.name!r} is a {connector.side} in topology.yaml, but type {connector.type!r} "
            f"is a {kind.side}; give it {wants} instead"
        )
