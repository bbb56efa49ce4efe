"""What a running connector reports: processing code calls hooks on a monitor, which
keeps the counters of ``bus connector status``, writes the log lines and passes the
events on to the bus's metrics (any object with :class:`MetricsHooks`' methods, such as
the ops monitor), instead of counters and log calls scattered through the hot path."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import structlog

from bus.connect.records import RawRecord

log = structlog.get_logger("bus.connect")


class MetricsHooks(Protocol):
    """The metric hooks a connector calls (those of the bus's ops monitor)."""

    def on_record_in(self, topic: str, count: int = 1) -> None: ...

    def on_record_out(self, topic: str, *, department: str = "", subscription: str = "", count: int = 1) -> None: ...

    def on_dead_letter(self, *, connector: str, topic: str, error: str) -> None: ...

    def on_connector_error(self, connector: str, stage: str) -> None: ...

    def on_commit(self, group: str, offsets: Iterable[tuple[str, int, int]], at: float | None = None) -> None: ...


@dataclass
class Counts:
    records_in: int = 0
    delivered: int = 0
    published: int = 0
    retries: int = 0
    dead_lettered: int = 0
    errors: int = 0
    backpressure: int = 0
    commits: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ConnectorMonitor:
    """Counters, log lines and metrics of one connector. Thread-safe; never raises
    because of a metric."""

    def __init__(
        self,
        connector: str,
        department: str,
        connector_type: str,
        *,
        subscription: str | None = None,
        metrics: MetricsHooks | None = None,
    ) -> None:
        self.connector = connector
        self.department = department
        self.subscription = subscription or ""
        self.counts = Counts()
        self.metrics = metrics
        self._lock = threading.Lock()
        self.log = log.bind(connector=connector, department=department, connector_type=connector_type)

    def _add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.counts, name, getattr(self.counts, name) + n)

    def _metric(self, hook: str, *args: Any, **kwargs: Any) -> None:
        if self.metrics is None:
            return
        try:
            getattr(self.metrics, hook)(*args, **kwargs)
        except Exception as exc:  # metrics are an observer: they never stop the work
            self.log.debug("metric hook failed", hook=hook, error=str(exc))

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return self.counts.as_dict()

    # -- hooks -------------------------------------------------------------------------

    def on_state(self, state: str, **detail: Any) -> None:
        self.log.info(f"connector {state}", state=state, **detail)

    def on_records_in(self, topic: str, n: int) -> None:
        self._add("records_in", n)
        self._metric("on_record_in", topic, n)

    def on_delivered(self, record: RawRecord, **detail: Any) -> None:
        self._add("delivered")
        self._metric("on_record_out", record.topic or "", department=self.department, subscription=self.subscription)
        self.log.debug("delivered", where=record.where, trace_id=record.trace_id,
                       event_type=record.header("ce_type"), **detail)

    def on_published(self, event_type: str, topic: str, trace_id: str, **detail: Any) -> None:
        self._add("published")
        self._metric("on_record_out", topic, department=self.department)
        self.log.debug("published", event_type=event_type, trace_id=trace_id, topic=topic, **detail)

    def on_published_many(self, event_type: str, topic: str, n: int) -> None:
        self._add("published", n)
        self._metric("on_record_out", topic, department=self.department, count=n)
        self.log.debug("published", event_type=event_type, topic=topic, records=n)

    def on_retry(self, record: RawRecord | None, error: BaseException, delay_s: float) -> None:
        self._add("retries")
        self.log.info("retrying", where=record.where if record else None, error=str(error),
                      retry_in_s=round(delay_s, 3), trace_id=record.trace_id if record else None)

    def on_dead_letter(self, record: RawRecord, error: BaseException, stage: str, topic: str,
                       *, log_enable: bool, include_messages: bool) -> None:
        self._add("dead_lettered")
        self._metric("on_dead_letter", connector=self.connector, topic=topic, error=type(error).__name__)
        fields: dict[str, Any] = {"where": record.where, "stage": stage, "dead_letter_topic": topic,
                                  "error": str(error), "trace_id": record.trace_id,
                                  "event_type": record.header("ce_type")}
        if include_messages:
            fields.update(key=record.key_text, headers={k: v.decode("utf-8", "replace") for k, v in record.headers})
        (self.log.warning if log_enable else self.log.info)("dead-lettered", **fields)

    def on_error(self, error: BaseException, *, stage: str, **detail: Any) -> None:
        """``stage``: Kafka Connect's words, lower case (``task_put``, ``task_poll``,
        ``value_converter``, ``producer``, ``consumer``)."""
        self._add("errors")
        self._metric("on_connector_error", self.connector, stage)
        self.log.error("connector error", error=str(error), error_class=type(error).__name__, stage=stage, **detail)

    def on_backpressure(self, topic: str, partition: int, retry_after: float, reason: str) -> None:
        self._add("backpressure")
        self.log.info("backpressure: partition paused", topic=topic, partition=partition,
                      retry_after_s=retry_after, reason=reason)

    def on_commit(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        self._add("commits")
        self._metric("on_commit", group, [(t, p, o) for (t, p), o in offsets.items()])
        self.log.debug("committed", offsets={f"{t}[{p}]": o for (t, p), o in offsets.items()})
