"""The connector kit: how a department's system attaches to the bus.

- :class:`Source` and :class:`Sink` are the base classes of connector types;
  :class:`ConnectorConfig` is the base of their settings (Kafka Connect's ``errors.*``
  included) and :class:`SecretRef` the type of a secret setting (``env:NAME``,
  ``file:PATH``).
- Connector types are found through the entry-point group ``bus.connect``
  (:func:`installed`, :func:`load_connector_class`).
- :class:`ConnectorRunner` starts, stops, pauses and resumes one connector of the
  topology and reports its status; :func:`config_problems` checks a connector entry of
  ``topology.yaml`` for ``bus validate``.
"""

from bus.connect.base import PublisherPool, Sink, SinkContext, Source, SourceContext
from bus.connect.config import ConnectorConfig, SecretRef, describe_config, parse_config
from bus.connect.dlq import DeadLetterQueue
from bus.connect.exceptions import (
    Backpressure,
    ConnectorConfigInvalid,
    ConnectorError,
    ConnectorFailed,
    Interrupted,
    RecordFailed,
    UnknownConnectorType,
)
from bus.connect.offsets import OffsetStore
from bus.connect.records import RawRecord, SinkBatch, SinkRecord
from bus.connect.registry import GROUP, config_problems, installed, load_connector_class
from bus.connect.runner import ConnectorRunner, group_id
from bus.connect.status import ConnectorStatus, StatusStore
from bus.retry import Backoff, RetryPolicy, retry_async
from bus.topology.names import dlq_topic, offsets_topic, status_topic

__all__ = [
    "GROUP",
    "Backoff",
    "Backpressure",
    "ConnectorConfig",
    "ConnectorConfigInvalid",
    "ConnectorError",
    "ConnectorFailed",
    "ConnectorRunner",
    "ConnectorStatus",
    "DeadLetterQueue",
    "Interrupted",
    "OffsetStore",
    "PublisherPool",
    "RawRecord",
    "RecordFailed",
    "RetryPolicy",
    "SecretRef",
    "Sink",
    "SinkBatch",
    "SinkContext",
    "SinkRecord",
    "Source",
    "SourceContext",
    "StatusStore",
    "UnknownConnectorType",
    "config_problems",
    "describe_config",
    "dlq_topic",
    "group_id",
    "installed",
    "load_connector_class",
    "offsets_topic",
    "parse_config",
    "retry_async",
    "status_topic",
]
