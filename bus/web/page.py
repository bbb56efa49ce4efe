"""The live page of the city's data flows: ``/`` (one HTML page), ``/graph.svg`` (the
topology drawn by :func:`bus.topology.graph.render_svg`) and ``/api/state`` (JSON).

The page shows lag per consumer stream (a group on a topic: the router on each canonical
topic, each sink connector on its subscription's topic) with a chart of the last hour,
dead letters per connector and for the router, connector health and camera availability, and
the figures the city runs on (:mod:`bus.ops.figures`: sharing, the maintenance promise,
throughput and latency, counted from the topics; docs/figures.md).
Everything is served from this process: the script and the style sheet are package data
inlined into the page, so the page works on a city network that reaches no internet.

The data comes from a :class:`StateProvider`, so that ``bus web`` can poll a cluster on
its own (:class:`ClusterProvider`) while ``bus up`` hands over its in-process view.

Bound to 127.0.0.1 by default. Bound anywhere else it refuses to start without a token
(``BUS_WEB_TOKEN``); every request then needs ``Authorization: Bearer <token>`` or the
cookie that opening ``/?token=<token>`` once sets (what Jupyter does, since a browser
cannot add a header to the address it is given).
"""

from __future__ import annotations

import html
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal, Protocol, TypeVar

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from bus.kafka.compacted import CompactedTopic
from bus.connectors.status import StatusStore
from bus.errors import BusError
from bus.kafka.admin import admin
from bus.kafka.config import KafkaSettings, consumer_config
from bus.ops.burrow import Status
from bus.ops.figures import CityFigures, FiguresReader, publish_figures
from bus.ops.lag import Directory, GroupSelection, LagMonitor, LagOptions
from bus.ops.lag_report import GroupLag, LagReport, PartitionLag
from bus.ops.metrics import BusMonitor
from bus.ops.offsets import TP, OffsetReader
from bus.topology.graph import render_svg
from bus.topology.models import Topology, topic_name
from bus.topology.names import AVAILABILITY_TOPIC, connector_group, dlq_topic, router_dlq_topic, router_group
from bus.serving import ThreadedServer

log = structlog.get_logger(__name__)

#: The compacted topic of camera availability: key = district or "all", value JSON
#: ``{"online": int, "total": int, "ratio": float, "at": ISO time}``.
HISTORY_SPAN_S = 3600.0
DEFAULT_INTERVAL_S = 5.0
TOKEN_COOKIE = "bus_web_token"

T = TypeVar("T")
Role = Literal["router", "sink", "other"]


# -- what the page shows ------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LagPoint(_Model):
    """One sample of a stream's lag (epoch seconds, records, seconds or None when unknown)."""

    at: float
    lag: int
    lag_seconds: float | None


class StreamLag(_Model):
    """A consumer group on one topic: all its partitions summed (records) or worst (seconds, status).
    ``topic`` is None for a group the topology declares but the cluster lacks (NOTFOUND)."""

    id: str = Field(description="group|topic, stable between polls: the key of the history.")
    group: str
    role: Role
    topic: str | None
    department: str | None
    subscription: str | None
    event_type: str | None
    partitions: int
    lag: int | None
    lag_seconds: float | None
    status: str
    history: list[LagPoint] = Field(default_factory=list, description="The last hour, oldest first.")


class DeadLetters(_Model):
    """Dead letters of one connector or of the router: records on its dead-letter topic
    (None when the topic does not exist: nothing was ever dead-lettered)."""

    owner: str
    kind: Literal["connector", "router"]
    department: str | None
    topic: str
    count: int | None


class ConnectorHealth(_Model):
    """A topology connector and the status it last wrote (``state`` "unknown": never reported)."""

    name: str
    type: str
    department: str
    side: Literal["source", "sink"]
    state: str
    stale: bool = False
    updated_at: str | None = None
    worker: str | None = None
    error: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)


class CameraAvailability(_Model):
    district: str
    online: int
    total: int
    ratio: float
    at: str


class PageState(_Model):
    """Everything ``/api/state`` answers. ``at`` is None before the first poll."""

    city: str
    namespace: str | None
    at: float | None = None
    interval_s: float
    streams: list[StreamLag] = Field(default_factory=list)
    dead_letters: list[DeadLetters] = Field(default_factory=list)
    connectors: list[ConnectorHealth] = Field(default_factory=list)
    cameras: list[CameraAvailability] = Field(default_factory=list, description="Empty: no data published.")
    figures: CityFigures | None = Field(None, description="Sharing, the maintenance promise, throughput and "
                                                          "latency (bus.ops.figures); None until first read.")
    problems: list[str] = Field(default_factory=list, description="What could not be read at the last poll, and why.")


class StateProvider(Protocol):
    """Where the page's data comes from. ``state()`` is called for every ``/api/state``
    request and must answer at once (from memory), never by asking the cluster."""

    def state(self) -> PageState: ...


# -- the last hour of each stream ---------------------------------------------------------------


class LagHistory:
    """An in-memory ring of the last ``span_s`` seconds of samples per stream."""

    def __init__(self, span_s: float = HISTORY_SPAN_S, max_points: int = 3600) -> None:
        self.span_s = span_s
        self._points: dict[str, deque[LagPoint]] = {}
        self._max_points = max_points

    def add(self, stream_id: str, point: LagPoint) -> None:
        ring = self._points.setdefault(stream_id, deque(maxlen=self._max_points))
        ring.append(point)

    def prune(self, now: float, keep: Iterable[str]) -> None:
        """Drop samples older than the span, and the streams no longer watched."""
        kept = set(keep)
        for stream_id in list(self._points):
            if stream_id not in kept:
                del self._points[stream_id]
                continue
            ring = self._points[stream_id]
            while ring and ring[0].at < now - self.span_s:
                ring.popleft()

    def of(self, stream_id: str) -> list[LagPoint]:
        return list(self._points.get(stream_id, ()))


def streams_of(report: LagReport, topology: Topology) -> list[StreamLag]:
    """One row per group and topic of a lag report (history not filled in)."""
    router = router_group(topology.namespace)
    sinks = {connector_group(topology.namespace, c.name) for c in topology.connectors if c.side == "sink"}
    directory = Directory(topology)
    rows: list[StreamLag] = []
    for g in report.groups:
        is_router = g.group == router or g.group.startswith(router + ".")  # the shared group or a lane
        role: Role = "router" if is_router else "sink" if g.group in sinks else "other"
        if not g.partitions:
            rows.append(_missing_stream(g, role))
            continue
        by_topic: dict[str, list[PartitionLag]] = {}
        for p in g.partitions:
            by_topic.setdefault(p.topic, []).append(p)
        for topic, parts in sorted(by_topic.items()):
            owner = directory.owner(g.group, topic)
            seconds = [p.lag_seconds for p in parts if p.lag_seconds is not None]
            worst = max((p.status for p in parts), key=lambda s: s.severity)
            rows.append(StreamLag(
                id=f"{g.group}|{topic}", group=g.group, role=role, topic=topic,
                department=owner.department or None, subscription=owner.subscription or None,
                event_type=owner.event_type or None, partitions=len(parts), lag=sum(p.lag for p in parts),
                lag_seconds=round(max(seconds), 3) if seconds else None, status=worst.at_group_level.value,
            ))
    return rows


def _missing_stream(g: GroupLag, role: Role) -> StreamLag:
    return StreamLag(
        id=f"{g.group}|", group=g.group, role=role, topic=None, department=g.department or None,
        subscription=g.subscription or None, event_type=None, partitions=0, lag=None, lag_seconds=None,
        status=g.status.value if g.status == Status.NOTFOUND else Status.OK.value,
    )


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


# -- the app -------------------------------------------------------------------------------------------


def render_page(topology: Topology, refresh_s: float) -> str:
    """The HTML page: graph inline (so it can be coloured by status), style and script inlined."""
    static = resources.files("bus.web") / "static"
    template = (static / "page.html").read_text(encoding="utf-8")
    title = f"{topology.city.name}: data flows"
    replacements = {
        "<!--TITLE-->": _escape(title),
        "<!--REFRESH_MS-->": str(int(refresh_s * 1000)),
        "<!--NAMESPACE-->": _escape(topology.namespace or ""),
        "<!--GRAPH-->": render_svg(topology),
        "/*STYLE*/": (static / "page.css").read_text(encoding="utf-8"),
        "/*SCRIPT*/": (static / "page.js").read_text(encoding="utf-8"),
    }
    for marker, value in replacements.items():
        template = template.replace(marker, value)
    return template


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def create_page_app(
    topology: Topology, provider: StateProvider, *, token: str | None = None, refresh_s: float = DEFAULT_INTERVAL_S
) -> Starlette:
    page = render_page(topology, refresh_s)
    graph = render_svg(topology)

    def authorised(request: Request) -> bool:
        if token is None:
            return True
        expected = token.encode()
        header = request.headers.get("authorization", "").encode()
        cookie = request.cookies.get(TOKEN_COOKIE, "").encode()
        return hmac.compare_digest(header, b"Bearer " + expected) or hmac.compare_digest(cookie, expected)

    def refused() -> Response:
        return JSONResponse(
            {"error": "send Authorization: Bearer <BUS_WEB_TOKEN>, or open /?token=<BUS_WEB_TOKEN> once"},
            status_code=401,
        )

    async def index(request: Request) -> Response:
        given = request.query_params.get("token")
        if token is not None and given is not None and hmac.compare_digest(given.encode(), token.encode()):
            answer = RedirectResponse("/", status_code=303)  # the token leaves the address bar and history
            answer.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
            return answer
        if not authorised(request):
            return refused()
        return HTMLResponse(page, headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-store"})

    async def graph_svg(request: Request) -> Response:
        if not authorised(request):
            return refused()
        return Response(graph, media_type="image/svg+xml")

    async def api_state(request: Request) -> Response:
        if not authorised(request):
            return refused()
        return JSONResponse(provider.state().model_dump(mode="json"), headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/", index), Route("/graph.svg", graph_svg), Route("/api/state", api_state)])


#: Nothing from elsewhere: the browser itself refuses any asset not served by this process.
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:"
)


@dataclass
class PageServer:
    """The page served from a background thread (``bus web``, and ``bus up``)."""

    topology: Topology
    provider: StateProvider
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    refresh_s: float = DEFAULT_INTERVAL_S
    _serving: ThreadedServer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        app = create_page_app(self.topology, self.provider, token=self.token, refresh_s=self.refresh_s)
        self._serving = ThreadedServer(app, host=self.host, port=self.port, what="page", token=self.token)

    @property
    def url(self) -> str:
        return self._serving.url

    def start(self, timeout_s: float = 10.0) -> "PageServer":
        self._serving.start(timeout_s)
        self.port = self._serving.port
        log.info("page serving", url=self.url, access="bearer or cookie" if self.token else "open (loopback)")
        return self

    def stop(self) -> None:
        self._serving.stop()

    def __enter__(self) -> "PageServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
