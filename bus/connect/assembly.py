"""Building one connector from its entry in topology.yaml: its class, its checked config
(secrets resolved), its monitor, its dead-letter queue and error policy, and, for a source,
its position and publishers. The runner (:mod:`bus.connect.runner`) and dead-letter
replay (:mod:`bus.ops.deadletters`) build connectors the same way, here."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint

from bus.connect.base import PublisherPool, Sink, SinkContext, Source, SourceContext, class_path, same_side
from bus.kafka.compacted import AckedProducer
from bus.connect.config import ConnectorConfig, parse_config
from bus.connect.dlq import DeadLetterQueue, ErrorPolicy
from bus.connect.monitor import ConnectorMonitor, MetricsHooks
from bus.connect.offsets import OffsetStore
from bus.connect.registry import load_connector_class
from bus.connect.status import StatusStore
from bus.kafka.config import KafkaSettings
from bus.topology.models import Connector, Topology
from bus.topology.names import dlq_topic

#: The client id (and, namespaced, the consumer group) of every connector starts so.
GROUP_PREFIX = "bus-connector"


@dataclass
class Assembly:
    """What a connector runs with; :meth:`close` releases what it holds."""

    connector: Connector
    topology: Topology
    settings: KafkaSettings
    kind: type[Source] | type[Sink]
    config: ConnectorConfig
    monitor: ConnectorMonitor
    producer: AckedProducer
    dlq: DeadLetterQueue
    errors: ErrorPolicy
    stopping: threading.Event
    status: StatusStore | None = None
    offsets: OffsetStore | None = None
    publishers: PublisherPool | None = None
    _closed: bool = field(default=False, repr=False)

    def _context(self) -> dict[str, object]:
        return dict(connector=self.connector, topology=self.topology, settings=self.settings, monitor=self.monitor,
                    errors=self.errors, retry=self.config.retry_policy(), stopping=self.stopping)

    def sink(self, topic: str) -> Sink:
        """The sink, writing what it reads from ``topic``."""
        assert issubclass(self.kind, Sink)
        return self.kind(self.config, SinkContext(**self._context(), topic=topic))  # type: ignore[arg-type]

    def source(self) -> Source:
        """The source, at the position its offsets store holds."""
        assert issubclass(self.kind, Source)
        self.offsets = OffsetStore(self.settings, self.topology.namespace, producer=self.producer).ensure()
        self.publishers = PublisherPool(self.topology, self.settings, client_id=f"{GROUP_PREFIX}-{self.connector.name}")
        source = self.kind(self.config, SourceContext(**self._context(), offsets=self.offsets,  # type: ignore[arg-type]
                                                      publishers=self.publishers))
        source.position = self.offsets.load(self.connector.name)
        return source

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close publishers, stores, the dead-letter queue and the producer; a failure to close
        one is logged and does not hide what happened before."""
        if self._closed:
            return
        self._closed = True
        for closer in (self.publishers, self.offsets, self.status, self.dlq, self.producer):
            if closer is not None:
                try:
                    closer.close()
                except Exception as exc:
                    self.monitor.log.warning("close failed", error=str(exc))


def assemble(
    connector: Connector,
    topology: Topology,
    settings: KafkaSettings,
    *,
    kind: type[Source] | type[Sink] | None = None,
    entry_points: Iterable[EntryPoint] | None = None,
    task_id: int = 0,
    metrics: MetricsHooks | None = None,
    report_status: bool = True,
    stopping: threading.Event | None = None,
    monitor_class: type[ConnectorMonitor] = ConnectorMonitor,
) -> Assembly:
    """Build ``connector``: ``kind`` defaults to the installed type its ``type`` names; its
    config is checked and its secrets resolved (a bad one raises, naming the field); its
    dead-letter topic (and, with ``report_status``, the status topic) exists when this returns."""
    kind = kind or load_connector_class(connector.type, entry_points=entry_points)
    same_side(kind, connector)
    config = parse_config(kind.config_model, connector.name, connector.config, resolve=True)
    monitor = monitor_class(connector.name, connector.department, connector.type,
                            subscription=connector.subscription, metrics=metrics)
    producer = AckedProducer(settings, client_id=f"{GROUP_PREFIX}-{connector.name}")
    dlq = status = None
    try:
        dlq = DeadLetterQueue(
            settings,
            dlq_topic(topology.namespace, connector.name, config.errors_deadletterqueue_topic_name),
            connector=connector.name,
            task_id=task_id,
            context_headers_enable=config.errors_deadletterqueue_context_headers_enable,
            producer=producer,
        ).ensure()
        if report_status:
            status = StatusStore(settings, topology.namespace, producer=producer).ensure()
    except BaseException:
        for closer in (dlq, producer):
            if closer is not None:
                closer.close()
        raise
    errors = ErrorPolicy(connector.name, config, dlq, monitor, class_path(kind))
    return Assembly(connector, topology, settings, kind, config, monitor, producer, dlq, errors,
                    stopping or threading.Event(), status)
