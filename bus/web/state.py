"""What the page shows (:class:`PageState`, served as ``/api/state``) and the last hour of each
consumer stream's lag."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Literal, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field

from bus.ops.burrow import Status
from bus.ops.figures import CityFigures
from bus.ops.lag import Directory
from bus.ops.lag_report import GroupLag, LagReport, PartitionLag
from bus.topology.models import Topology
from bus.topology.names import connector_group, router_group

log = structlog.get_logger(__name__)

HISTORY_SPAN_S = 3600.0
#: How often the page's state is read and the page refreshes (seconds).
DEFAULT_INTERVAL_S = 5.0

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
