"""Dead letters with Kafka Connect's conventions, and the error policy that sends them.

A dead letter keeps the original key, value and headers, and adds (with
``errors.deadletterqueue.context.headers.enable``) the ``__connect.errors.*`` headers
Kafka Connect writes: where the record came from (``topic``, ``partition``, ``offset``),
who failed on it (``connector.name``, ``task.id``, ``stage``, ``class.name``) and why
(``exception.class.name``, ``exception.message``, ``exception.stacktrace``). Header
values are UTF-8 text, as Connect writes them.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass

from bus.kafka.compacted import AckedProducer
from bus.connect.config import ConnectorConfig
from bus.connect.exceptions import ConnectorFailed
from bus.connect.monitor import ConnectorMonitor
from bus.connect.records import RawRecord
from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.config import KafkaSettings

HEADER_PREFIX = "__connect.errors."
MAX_STACKTRACE_CHARS = 32_000

#: Kafka Connect's stages, and the bus's use of them.
STAGE_VALUE_CONVERTER = "VALUE_CONVERTER"  # the value could not be decoded
STAGE_TASK_PUT = "TASK_PUT"  # a sink could not deliver the record
STAGE_TASK_POLL = "TASK_POLL"  # a source could not turn its input into a record


def context_headers(
    record: RawRecord, error: BaseException, *, connector: str, task_id: int, stage: str, class_name: str
) -> list[tuple[str, bytes]]:
    """The ``__connect.errors.*`` headers describing why ``record`` failed."""
    stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    fields: list[tuple[str, str | None]] = [
        ("topic", record.topic),
        ("partition", None if record.partition is None else str(record.partition)),
        ("offset", None if record.offset is None else str(record.offset)),
        ("connector.name", connector),
        ("task.id", str(task_id)),
        ("stage", stage),
        ("class.name", class_name),
        ("exception.class.name", f"{type(error).__module__}.{type(error).__qualname__}"),
        ("exception.message", str(error)),
        ("exception.stacktrace", stack[-MAX_STACKTRACE_CHARS:]),
    ]
    return [(HEADER_PREFIX + name, value.encode("utf-8")) for name, value in fields if value is not None]


class DeadLetterQueue:
    """The dead-letter topic of one connector."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        connector: str,
        task_id: int = 0,
        context_headers_enable: bool = True,
        producer: AckedProducer | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.connector = connector
        self.task_id = task_id
        self.context_headers_enable = context_headers_enable
        self._producer = producer or AckedProducer(settings, client_id=f"bus-dlq-{connector}")
        self._own_producer = producer is None

    def ensure(self) -> "DeadLetterQueue":
        ensure_topics(self.settings, [TopicSpec(self.topic)])
        return self

    def send(self, record: RawRecord, error: BaseException, *, stage: str, class_name: str) -> tuple[int, int]:
        """Write the dead letter; returns its (partition, offset) once acknowledged."""
        headers = list(record.headers)
        if self.context_headers_enable:
            headers += context_headers(
                record, error, connector=self.connector, task_id=self.task_id, stage=stage, class_name=class_name
            )
        return self._producer.send(self.topic, key=record.key, value=record.value, headers=headers)

    def close(self) -> None:
        if self._own_producer:
            self._producer.close()


@dataclass
class ErrorPolicy:
    """Kafka Connect's ``errors.tolerance`` applied to a record that failed for good:
    ``all`` dead-letters it and goes on, ``none`` stops the connector with the error."""

    connector: str
    config: ConnectorConfig
    dlq: DeadLetterQueue
    monitor: ConnectorMonitor
    class_name: str

    def report(self, record: RawRecord, error: BaseException, *, stage: str) -> None:
        """Dead-letter ``record`` (tolerance all) or raise ConnectorFailed (tolerance none)."""
        if self.config.errors_tolerance == "none":
            raise ConnectorFailed(
                self.connector,
                f"{stage} failed for {record.where} (errors.tolerance: none): {error}. Fix the cause and "
                "restart it: it resumes at this record; or set errors.tolerance: all to dead-letter such records",
                record,
            ) from error
        self.dlq.send(record, error, stage=stage, class_name=self.class_name)
        self.monitor.on_dead_letter(
            record, error, stage, self.dlq.topic,
            log_enable=self.config.errors_log_enable,
            include_messages=self.config.errors_log_include_messages,
        )
