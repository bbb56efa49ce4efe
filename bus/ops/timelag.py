"""Lag in seconds, the way kafka-lag-exporter estimates it.

Each poll stores a point (log end offset, time) for a partition in a bounded table
(default 60 points). The time at which the log end was at the consumer's committed
offset is interpolated between the two points that bracket it, or extrapolated along
the line through the table's first and last points when none do; the time lag is
``now`` minus that time (0 when the consumer is at the end; never negative).

Points have strictly increasing offsets: when a poll finds the same log end offset as
the last point, the table keeps the earlier time (the log end reached that offset then),
and notes the later one as the time the log end was last seen there.

Quiet partitions: the record at ``committed`` was appended after the last poll that saw
the log end at ``committed``, not when the log first ended there (on a quiet partition,
minutes earlier): between two points, the line starts at the lower one's last sighting.
Commit markers: every
transaction leaves a marker that takes an offset and is never delivered, so a
``read_committed`` consumer that read everything commits the marker's offset and stays
one offset behind; when the log was seen ending at ``committed + 1``, the consumer had
read all but that offset then, and the lag counts from the last poll that saw it so. The
cost: a consumer stuck one record short of a quiet partition's end reads as caught up
here; its commit window still says it stalled.
A log end offset lower than the last point (topic re-created, table of another life)
starts the table afresh.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque
from dataclasses import dataclass

DEFAULT_TABLE_SIZE = 60


@dataclass(frozen=True, slots=True)
class Point:
    offset: int
    time: float  # when a poll first saw the log end at ``offset``
    last_seen: float | None = None  # when a poll last saw it there (None: only once, at ``time``)

    @property
    def seen_until(self) -> float:
        return self.time if self.last_seen is None else self.last_seen


class OffsetTimeTable:
    """(log end offset, time) points of one partition, oldest first, at most ``size``."""

    def __init__(self, size: int = DEFAULT_TABLE_SIZE) -> None:
        if size < 2:
            raise ValueError(f"an offset-time table needs room for 2 points to interpolate, not {size}")
        self.size = size
        self._points: deque[Point] = deque(maxlen=size)

    def add(self, offset: int, time: float) -> None:
        last = self._points[-1] if self._points else None
        if last is not None and offset == last.offset:
            self._points[-1] = Point(offset, last.time, max(time, last.seen_until))
            return
        if last is not None and offset < last.offset:
            self._points.clear()
        self._points.append(Point(offset, time))

    def points(self) -> tuple[Point, ...]:
        return tuple(self._points)

    def time_of(self, offset: int) -> float | None:
        """When the log end was at ``offset``; None when the table cannot tell (fewer
        than two points and ``offset`` is not at or past the only one)."""
        return time_of(self.points(), offset)

    def seen_until(self, offset: int) -> float | None:
        """When a poll last saw the log end at ``offset``; None if no poll saw it there."""
        for point in reversed(self._points):
            if point.offset == offset:
                return point.seen_until
            if point.offset < offset:
                return None
        return None

    def __len__(self) -> int:
        return len(self._points)


def time_of(points: tuple[Point, ...], offset: int) -> float | None:
    """When the record at ``offset`` was appended, as far as the points tell: between two
    points, on the line from the lower one's last sighting (the log end sat there until
    then) to the upper one's first."""
    if not points:
        return None
    first, last = points[0], points[-1]
    if offset == last.offset or (len(points) == 1 and offset > last.offset):
        return last.seen_until
    if len(points) == 1:
        return None
    if offset < first.offset or offset > last.offset:
        return _on_line(first.offset, first.time, last, offset)
    i = bisect_right([p.offset for p in points], offset) - 1
    return _on_line(points[i].offset, points[i].seen_until, points[i + 1], offset)


def _on_line(a_offset: int, a_time: float, b: Point, offset: int) -> float:
    return a_time + (offset - a_offset) * (b.time - a_time) / (b.offset - a_offset)


def lag_seconds(table: OffsetTimeTable, committed: int, end: int, now: float) -> float | None:
    """Time lag of a consumer at ``committed`` when the log ends at ``end``; None when the
    table cannot estimate it."""
    if committed >= end:
        return 0.0
    produced = table.time_of(committed)
    marker = table.seen_until(committed + 1)  # a commit marker at ``committed`` (module docstring)
    if marker is not None:
        produced = marker if produced is None else max(produced, marker)
    return None if produced is None else max(0.0, now - produced)
