"""Prometheus metrics of the bus, and the monitor whose hooks processing code calls.

Processing code never touches a metric: the router and the connectors call hook methods
on a :class:`BusMonitor` (faust's ``Sensor`` style), which updates the metrics and
passes commits on to whoever evaluates lag. The exposition text (for ``/metrics``) comes
from :func:`render`.

Names follow kafka-lag-exporter for consumer lag (``kafka_consumergroup_group_lag``,
``kafka_consumergroup_group_lag_seconds``...) and Redpanda Connect's habits for the rest:
counters of records received and sent, errors, latency histograms. The bus adds its own
department labels (``department``, ``subscription``; empty when a topic is not a
subscription's) so that a panel shows which department is behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from bus.ops.burrow import Status

#: The exposition's HTTP content type.
CONTENT_TYPE = CONTENT_TYPE_LATEST

PARTITION_LABELS = ("group", "topic", "partition", "department", "subscription")

#: Router transaction time buckets, seconds (a transaction is milliseconds to seconds).
TRANSACTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BusMetrics:
    """Every metric the bus exports, on one registry of its own (not the global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        # -- consumer lag (kafka-lag-exporter's names) ---------------------------------
        self.group_offset = Gauge(
            "kafka_consumergroup_group_offset", "Last committed offset of a consumer group's partition.",
            PARTITION_LABELS, registry=r,
        )
        self.latest_offset = Gauge(
            "kafka_partition_latest_offset", "Log end offset (high watermark) of a partition.",
            ("topic", "partition"), registry=r,
        )
        self.group_lag = Gauge(
            "kafka_consumergroup_group_lag", "Records between a group's committed offset and the log end.",
            PARTITION_LABELS, registry=r,
        )
        self.group_lag_seconds = Gauge(
            "kafka_consumergroup_group_lag_seconds",
            "Estimated seconds between the produce time of the group's committed offset and now.",
            PARTITION_LABELS, registry=r,
        )
        self.group_max_lag = Gauge(
            "kafka_consumergroup_group_max_lag", "Largest partition lag of a group, records.", ("group",), registry=r
        )
        self.group_max_lag_seconds = Gauge(
            "kafka_consumergroup_group_max_lag_seconds", "Largest partition time lag of a group, seconds.",
            ("group",), registry=r,
        )
        self.group_sum_lag = Gauge(
            "kafka_consumergroup_group_sum_lag", "Sum of a group's partition lags, records.", ("group",), registry=r
        )
        # -- Burrow's status -------------------------------------------------------------
        self.partition_status = Gauge(
            "bus_consumergroup_partition_status",
            "1 for a partition's current Burrow status (OK, WARN, STOP, STALL, REWIND), 0 for the others.",
            (*PARTITION_LABELS, "status"), registry=r,
        )
        self.group_status = Gauge(
            "bus_consumergroup_status",
            "1 for a group's current Burrow status (NOTFOUND, OK, WARN, ERR), 0 for the others.",
            ("group", "status"), registry=r,
        )
        self.group_complete = Gauge(
            "bus_consumergroup_complete", "Share of a group's partitions whose commit window is full.",
            ("group",), registry=r,
        )
        # -- records through the bus -----------------------------------------------------
        self.records_in = Counter(
            "bus_records_in", "Records received on a topic (published or read by the router).", ("topic",), registry=r
        )
        self.records_out = Counter(
            "bus_records_out", "Records delivered to a subscription topic.",
            ("topic", "department", "subscription"), registry=r,
        )
        self.dead_letters = Counter(
            "bus_dead_letters", "Records sent to a dead-letter topic.", ("connector", "topic", "error"), registry=r
        )
        self.connector_errors = Counter(
            "bus_connector_errors", "Errors of a connector, by stage.", ("connector", "stage"), registry=r
        )
        self.transaction_seconds = Histogram(
            "bus_router_transaction_seconds", "Time of one router transaction (begin to commit).",
            buckets=TRANSACTION_BUCKETS, registry=r,
        )
        # -- the camera fleet ------------------------------------------------------------
        self.fleet_availability = Gauge(
            "bus_camera_fleet_availability", "Share of cameras online (0 to 1).", ("district",), registry=r
        )
        self.fleet_online = Gauge("bus_camera_fleet_online", "Cameras online.", ("district",), registry=r)
        self.fleet_cameras = Gauge("bus_camera_fleet_cameras", "Cameras known.", ("district",), registry=r)
        # -- the figures the city runs on (bus.ops.figures, counted from the topics) ------------
        self.sharing_share = Gauge(
            "bus_sharing_share",
            "Share (0 to 1) of the event types (of=\"event_types\") or of the records (of=\"records\") that reached "
            "a department other than their publisher; the programme's target is 0.6.",
            ("of",), registry=r,
        )
        self.sharing_records = Gauge(
            "bus_sharing_records",
            "Records per department: published (on the bus), shared (published and received by another "
            "department), received (from other departments).",
            ("department", "direction"), registry=r,
        )
        self.camera_faults_open = Gauge(
            "bus_camera_faults_open", "Camera faults open (not repaired), from the processors' SLA table.",
            ("district",), registry=r,
        )
        self.camera_faults = Gauge(
            "bus_camera_faults",
            "Camera faults by deadline (answer: 24 h, repair: 72 h) and outcome: kept (done in time), broken (the "
            "SLA tracker declared the deadline broken: done late, or not done by it), pending (not done, not due).",
            ("district", "deadline", "outcome"), registry=r,
        )
        self.camera_faults_overdue = Gauge(
            "bus_camera_faults_overdue", "Camera faults past a deadline and still not answered (repaired).",
            ("district", "deadline"), registry=r,
        )
        self.event_type_records = Gauge(
            "bus_event_type_records_last_hour",
            "Records of an event type in the last hour: published (its canonical topic) or delivered (its "
            "subscriptions' topics).",
            ("event_type", "stage"), registry=r,
        )
        self.event_type_rate = Gauge(
            "bus_event_type_published_per_second", "Records of an event type published per second, last full minute.",
            ("event_type",), registry=r,
        )
        self.subscription_deliveries = Gauge(
            "bus_subscription_delivered_last_hour", "Records delivered to a subscription's topic in the last hour.",
            ("department", "subscription"), registry=r,
        )
        self.delivery_latency = Gauge(
            "bus_delivery_latency_seconds",
            "Publish (ce_time) to delivery (the subscription topic's record timestamp) over the last hour, "
            "nearest-rank quantile.",
            ("department", "subscription", "quantile"), registry=r,
        )


def render(metrics: BusMetrics) -> bytes:
    """The Prometheus text exposition of ``metrics`` (serve it with :data:`CONTENT_TYPE`)."""
    return generate_latest(metrics.registry)


_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


def exported_names(metrics: BusMetrics) -> frozenset[str]:
    """Every sample name the exposition can contain (``bus_records_in_total``...)."""
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in _SAMPLE_SUFFIXES.get(family.type, ("",)))
    return frozenset(names)


# -- the monitor ---------------------------------------------------------------------------


class CommitObserver(Protocol):
    """Something that evaluates lag from commits (:class:`bus.ops.lag.LagMonitor`)."""

    def on_commit(self, group: str, offsets: Iterable[tuple[str, int, int]], at: float | None = None) -> None: ...


@dataclass(frozen=True, slots=True)
class PartitionSample:
    """One partition's lag as :meth:`BusMonitor.set_lag` takes it."""

    group: str
    topic: str
    partition: int
    committed: int
    end: int
    lag: int
    lag_seconds: float | None
    status: Status
    department: str = ""
    subscription: str = ""

    @property
    def labels(self) -> tuple[str, str, str, str, str]:
        return (self.group, self.topic, str(self.partition), self.department, self.subscription)


class BusMonitor:
    """The hooks processing code calls. Cheap, thread-safe, never raises on bad labels."""

    def __init__(self, metrics: BusMetrics | None = None, *, observers: Sequence[CommitObserver] = ()) -> None:
        self.metrics = metrics or BusMetrics()
        self._observers = list(observers)
        self._series: dict[str, set[tuple[str, str, str, str, str]]] = {}

    def add_observer(self, observer: CommitObserver) -> None:
        self._observers.append(observer)

    # -- records ---------------------------------------------------------------------------

    def on_record_in(self, topic: str, count: int = 1) -> None:
        self.metrics.records_in.labels(topic).inc(count)

    def on_record_out(self, topic: str, *, department: str = "", subscription: str = "", count: int = 1) -> None:
        self.metrics.records_out.labels(topic, department, subscription).inc(count)

    def on_dead_letter(self, *, connector: str, topic: str, error: str) -> None:
        """``error``: the exception's class name (a bounded set of values)."""
        self.metrics.dead_letters.labels(connector, topic, error).inc()

    def on_connector_error(self, connector: str, stage: str) -> None:
        """``stage``: Kafka Connect's stage words (``key_converter``, ``value_converter``,
        ``transformation``, ``task_put``, ``task_poll``, ``producer``, ``consumer``)."""
        self.metrics.connector_errors.labels(connector, stage).inc()

    def on_transaction(self, seconds: float) -> None:
        self.metrics.transaction_seconds.observe(seconds)

    def on_commit(self, group: str, offsets: Iterable[tuple[str, int, int]], at: float | None = None) -> None:
        """A consumer of ``group`` committed ``(topic, partition, offset)``s at ``at``
        (epoch seconds, default now). Passed on to the lag evaluators."""
        committed = list(offsets)
        for observer in self._observers:
            observer.on_commit(group, committed, at)

    # -- lag -------------------------------------------------------------------------------

    def set_lag(self, sample: PartitionSample) -> None:
        m, labels = self.metrics, sample.labels
        m.group_offset.labels(*labels).set(sample.committed)
        m.latest_offset.labels(sample.topic, str(sample.partition)).set(sample.end)
        m.group_lag.labels(*labels).set(sample.lag)
        if sample.lag_seconds is not None:
            m.group_lag_seconds.labels(*labels).set(sample.lag_seconds)
        for status in (Status.OK, Status.WARN, Status.STOP, Status.STALL, Status.REWIND):
            m.partition_status.labels(*labels, status.value).set(1 if sample.status == status else 0)
        self._series.setdefault(sample.group, set()).add(labels)

    def set_group(
        self,
        group: str,
        *,
        status: Status,
        maxlag: int,
        maxlag_seconds: float | None,
        totallag: int,
        complete: float,
        partitions: Iterable[PartitionSample] = (),
    ) -> None:
        """A group's summary; ``partitions`` are its current partitions: series of others
        (partitions the group no longer has) are removed."""
        m = self.metrics
        for value in (Status.NOTFOUND, Status.OK, Status.WARN, Status.ERR):
            m.group_status.labels(group, value.value).set(1 if status == value else 0)
        m.group_max_lag.labels(group).set(maxlag)
        if maxlag_seconds is not None:
            m.group_max_lag_seconds.labels(group).set(maxlag_seconds)
        m.group_sum_lag.labels(group).set(totallag)
        m.group_complete.labels(group).set(complete)
        current = {p.labels for p in partitions}
        for stale in self._series.get(group, set()) - current:
            self._remove_partition(stale)
        self._series[group] = current

    def forget_group(self, group: str) -> None:
        """Remove every series of a group (it no longer exists)."""
        m = self.metrics
        for labels in self._series.pop(group, set()):
            self._remove_partition(labels)
        for gauge in (m.group_max_lag, m.group_max_lag_seconds, m.group_sum_lag, m.group_complete):
            _remove(gauge, group)
        for status in Status:
            _remove(m.group_status, group, status.value)

    def _remove_partition(self, labels: tuple[str, str, str, str, str]) -> None:
        m = self.metrics
        for gauge in (m.group_offset, m.group_lag, m.group_lag_seconds):
            _remove(gauge, *labels)
        for status in Status:
            _remove(m.partition_status, *labels, status.value)

    # -- the camera fleet ------------------------------------------------------------------

    def set_availability(self, online: int, total: int, *, district: str = "all") -> None:
        """Cameras online out of ``total`` (``district="all"`` for the whole city)."""
        m = self.metrics
        m.fleet_online.labels(district).set(online)
        m.fleet_cameras.labels(district).set(total)
        # No cameras: no availability (NaN compares false, so no alert fires on it).
        m.fleet_availability.labels(district).set(online / total if total else float("nan"))

    # -- the figures the city runs on ------------------------------------------------------

    def set_sharing(
        self,
        *,
        event_types_share: float | None,
        records_share: float | None,
        departments: Mapping[str, tuple[int, int, int]],
    ) -> None:
        """The shares (None: nothing to count yet) and, per department, (published, shared,
        received from others) records."""
        m = self.metrics
        m.sharing_share.labels("event_types").set(_number(event_types_share))
        m.sharing_share.labels("records").set(_number(records_share))
        for department, counts in departments.items():
            for direction, count in zip(("published", "shared", "received"), counts):
                m.sharing_records.labels(department, direction).set(count)

    def set_faults(
        self, district: str, *, open: int, outcomes: Mapping[tuple[str, str], int], overdue: Mapping[str, int]
    ) -> None:
        """Camera faults of a district (or ``all``): open; (deadline, outcome) -> faults;
        deadline -> faults overdue."""
        m = self.metrics
        m.camera_faults_open.labels(district).set(open)
        for (deadline, outcome), count in outcomes.items():
            m.camera_faults.labels(district, deadline, outcome).set(count)
        for deadline, count in overdue.items():
            m.camera_faults_overdue.labels(district, deadline).set(count)

    def set_throughput(self, event_type: str, *, last_hour: int, per_second: float, delivered_last_hour: int) -> None:
        m = self.metrics
        m.event_type_records.labels(event_type, "published").set(last_hour)
        m.event_type_records.labels(event_type, "delivered").set(delivered_last_hour)
        m.event_type_rate.labels(event_type).set(per_second)

    def set_latency(
        self, department: str, subscription: str, *, deliveries: int, quantiles: Mapping[str, float | None]
    ) -> None:
        """A subscription's deliveries and latency quantiles (``"0.5"`` -> seconds; None: no sample)."""
        m = self.metrics
        m.subscription_deliveries.labels(department, subscription).set(deliveries)
        for quantile, seconds in quantiles.items():
            m.delivery_latency.labels(department, subscription, quantile).set(_number(seconds))

    def render(self) -> bytes:
        return render(self.metrics)


def _number(value: float | None) -> float:
    """A gauge's value; None is NaN (no data: compares false, so no alert fires on it)."""
    return float("nan") if value is None else value


def _remove(gauge: Gauge, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass
