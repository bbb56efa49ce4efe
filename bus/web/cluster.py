"""The page's view of a cluster, polled on a thread of its own (``bus web``): lag, dead letters,
connector health, camera availability and the city's figures (:mod:`bus.ops.figures`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Literal, TypeVar

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from pydantic import ValidationError

from bus.kafka.compacted import CompactedTopic
from bus.connect.status import StatusStore
from bus.errors import BusError
from bus.kafka.admin import admin
from bus.kafka.config import KafkaSettings, consumer_config
from bus.ops.figures import CityFigures, FiguresReader, publish_figures
from bus.ops.lag import Directory, GroupSelection, LagMonitor, LagOptions
from bus.ops.lag_report import LagReport
from bus.ops.metrics import BusMonitor
from bus.ops.offsets import TP, OffsetReader
from bus.topology.models import Topology, topic_name
from bus.topology.names import AVAILABILITY_TOPIC, dlq_topic, router_dlq_topic
from bus.web.state import (
    DEFAULT_INTERVAL_S,
    CameraAvailability,
    ConnectorHealth,
    DeadLetters,
    LagHistory,
    LagPoint,
    PageState,
    StreamLag,
    streams_of,
)

log = structlog.get_logger(__name__)


T = TypeVar("T")


# -- polling a cluster ------------------------------------------------------------------------------


class DeadLetterCounter:
    """Counts the records of dead-letter topics, reading only what is new at each call.

    Not end offsets: the router writes its dead letters inside its transactions, and
    every transaction leaves a marker that takes an offset, so an end offset counts
    markers as dead letters. A ``read_committed`` consumer that is assigned the
    partitions (it joins no group and commits nothing) counts records only."""

    def __init__(self, settings: KafkaSettings, timeout_s: float | None = None) -> None:
        self.settings = settings
        self.timeout_s = settings.connect_timeout_s if timeout_s is None else timeout_s
        self._admin = admin(settings)
        self._consumer: Consumer | None = None
        self._counts: dict[TP, int] = {}

    def count(self, topics: Iterable[str]) -> dict[str, int]:
        """Records per existing topic (a topic that does not exist is absent)."""
        names = sorted(set(topics))
        metadata = self._admin.list_topics(timeout=self.timeout_s).topics
        partitions = [
            (t, p) for t in names if t in metadata and metadata[t].error is None for p in metadata[t].partitions
        ]
        consumer = self._reader()
        gone = [tp for tp in self._counts if tp not in partitions and tp[0] in names]  # deleted since
        if gone:
            consumer.incremental_unassign([TopicPartition(t, p) for t, p in gone])
            for tp in gone:
                del self._counts[tp]
        new = [tp for tp in partitions if tp not in self._counts]
        if new:
            consumer.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in new])
            self._counts.update({tp: 0 for tp in new})
        ends = {tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=self.timeout_s)[1] for tp in partitions}
        self._read_to(ends)
        out: dict[str, int] = {}
        for (topic, _), count in ((tp, self._counts[tp]) for tp in partitions):
            out[topic] = out.get(topic, 0) + count
        return out

    def _read_to(self, ends: dict[TP, int]) -> None:
        consumer = self._reader()
        deadline = time.monotonic() + self.timeout_s
        waiting = dict(ends)
        while waiting:
            positions = consumer.position([TopicPartition(t, p) for t, p in waiting])
            for tp in positions:
                if tp.offset >= waiting[(tp.topic, tp.partition)] or waiting[(tp.topic, tp.partition)] == 0:
                    del waiting[(tp.topic, tp.partition)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                raise DeadLettersUnread(sorted({t for t, _ in waiting}), self.timeout_s)
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                key = (str(msg.topic()), int(msg.partition() or 0))
                self._counts[key] = self._counts.get(key, 0) + 1

    def _reader(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(consumer_config(self.settings, group_id="bus-web-dlq-counter",
                                                      client_id="bus-web-dlq-counter"))
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


class DeadLettersUnread(BusError):
    """The dead-letter topics could not be read to their end in time."""

    def __init__(self, topics: list[str], timeout_s: float) -> None:
        super().__init__(
            f"could not read the dead-letter topics {', '.join(topics)} to their end within {timeout_s:g} s; "
            "the counts shown are the last ones read (is the broker overloaded?)"
        )


class ClusterProvider:
    """Polls the cluster every ``interval_s`` seconds from a background thread: lag of the
    bus's groups (router and sink connectors), dead-letter topics' end offsets, connector
    statuses and camera availability; keeps the last hour of lag per stream.

    ``bus web`` runs one on its own. ``bus up`` can run one in-process with its
    :class:`~bus.ops.metrics.BusMonitor`: the router's commits then reach the lag windows
    through the monitor's hooks, and the lag gauges of ``/metrics`` are set by the same polls.
    A part that cannot be read is listed in ``problems`` and the others are still shown."""

    def __init__(
        self,
        topology: Topology,
        settings: KafkaSettings,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        monitor: BusMonitor | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topology = topology
        self.settings = settings
        self.interval_s = interval_s
        self._monitor = monitor
        self._clock = clock
        self._history = LagHistory()
        self._lag: LagMonitor | None = None
        self._lock = threading.Lock()
        self._state = PageState(city=topology.city.name, namespace=topology.namespace, interval_s=interval_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._dlq = DeadLetterCounter(settings)
        self._statuses = StatusStore(settings, topology.namespace)
        self._cameras = CompactedTopic(settings, topic_name(topology.namespace, AVAILABILITY_TOPIC))
        self._figures = FiguresReader(topology, settings, clock=clock)

    def state(self) -> PageState:
        with self._lock:
            return self._state

    def poll(self) -> PageState:
        """Read the cluster once and keep the result (the thread calls this; tests may too)."""
        now = self._clock()
        problems: list[str] = []
        last = self.state()
        state = PageState(
            city=self.topology.city.name, namespace=self.topology.namespace, at=now, interval_s=self.interval_s,
            streams=self._read_streams(now, problems, last.streams),
            dead_letters=self._read(problems, "dead letters", self._dead_letters, last.dead_letters),
            connectors=self._read(problems, "connector statuses", self._connectors, last.connectors),
            cameras=self._read(problems, "camera availability", self._camera_availability, last.cameras),
            figures=self._read(problems, "city figures", self._city_figures, last.figures),
            problems=problems,
        )
        with self._lock:
            self._state = state
        return state

    def start(self) -> "ClusterProvider":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bus-web-poller", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval_s + 30)
        self._thread = None
        self._dlq.close()
        self._figures.close()
        if self._lag is not None:
            self._lag.reader.close()

    def __enter__(self) -> "ClusterProvider":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.poll()
            except Exception as exc:  # a page that stops updating must say so, not die silently
                log.exception("page poll failed")
                with self._lock:
                    self._state = self._state.model_copy(update={"problems": [f"the poll failed: {exc!r}"]})
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    # -- the parts ------------------------------------------------------------------------

    def _read(self, problems: list[str], what: str, read: Callable[[], T], last: T) -> T:
        """``read()``, or the last value read (named in ``problems``) when it fails."""
        try:
            return read()
        except (BusError, KafkaException) as exc:
            problems.append(f"{what} (showing the last values read): {exc}")
            log.warning("page could not read", what=what, error=str(exc))
            return last

    def _read_streams(self, now: float, problems: list[str], last: list[StreamLag]) -> list[StreamLag]:
        def read() -> LagReport:
            if self._lag is None:  # built on first success: the reader needs a broker that answers
                self._lag = LagMonitor(
                    OffsetReader(self.settings), GroupSelection.of_topology(self.topology), Directory(self.topology),
                    options=LagOptions(interval_s=self.interval_s), monitor=self._monitor, clock=self._clock,
                )
            return self._lag.poll(now)

        report = self._read(problems, "consumer lag", read, None)
        if report is None:
            return last
        rows = streams_of(report, self.topology)
        for row in rows:
            if row.lag is not None:
                self._history.add(row.id, LagPoint(at=now, lag=row.lag, lag_seconds=row.lag_seconds))
        self._history.prune(now, (r.id for r in rows))
        return [r.model_copy(update={"history": self._history.of(r.id)}) for r in rows]

    def _dead_letters(self) -> list[DeadLetters]:
        wanted: list[tuple[str, Literal["connector", "router"], str | None, str]] = [
            ("router", "router", None, router_dlq_topic(self.topology.namespace))
        ]
        for c in self.topology.connectors:
            configured = c.config.get("errors.deadletterqueue.topic.name")
            topic = dlq_topic(self.topology.namespace, c.name, configured if isinstance(configured, str) else None)
            wanted.append((c.name, "connector", c.department, topic))
        counts = self._dlq.count([topic for *_, topic in wanted])
        return [
            DeadLetters(owner=owner, kind=kind, department=department, topic=topic, count=counts.get(topic))
            for owner, kind, department, topic in wanted
        ]

    def _connectors(self) -> list[ConnectorHealth]:
        statuses = self._statuses.read_all()
        out = []
        for c in self.topology.connectors:
            s = statuses.get(c.name)
            if s is None:
                out.append(ConnectorHealth(name=c.name, type=c.type, department=c.department, side=c.side,
                                           state="unknown"))
                continue
            out.append(ConnectorHealth(
                name=c.name, type=c.type, department=c.department, side=c.side, state=s.state, stale=s.stale(),
                updated_at=s.updated_at, worker=s.worker, error=s.error,
                counts={k: v for k, v in s.counts.items() if isinstance(v, int)},
            ))
        return out

    def _city_figures(self) -> CityFigures:
        figures = self._figures.poll()
        if self._monitor is not None:
            publish_figures(self._monitor, figures)
        return figures

    def _camera_availability(self) -> list[CameraAvailability]:
        out = []
        for district, document in self._cameras.read_all().items():
            try:
                out.append(CameraAvailability(district=district, **document))
            except (ValidationError, TypeError) as exc:
                log.warning("camera availability record not understood", district=district, error=str(exc))
        if self._monitor is not None:  # the processors run apart: /metrics learns the figures here
            for figures in out:
                self._monitor.set_availability(figures.online, figures.total, district=figures.district)
        return sorted(out, key=lambda c: (c.district != "all", c.district))
