"""Lag in seconds, the way kafka-lag-exporter estimates it.

Each poll stores a point (log end offset, time) for a partition in a bounded table
(default 60 points). The time at which the log end was at the consumer's committed
offset is interpolated between the two points that bracket it, or extrapolated along
the line through the table's first and last points when none do; the time lag is
``now`` minus that time (0 when the consumer is at the end; never negative).

Points have strictly increasing offsets: when a poll finds the same log end offset as
the last point, the table keeps the earlier time (the log end reached that offset then).
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
    time: float


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

    def __len__(self) -> int:
        return len(self._points)


def time_of(points: tuple[Point, ...], offset: int) -> float | None:
    if not points:
        return None
    first, last = points[0], points[-1]
    if offset == last.offset or (len(points) == 1 and offset > last.offset):
        return last.time
    if len(points) == 1:
        return None
    if offset < first.offset or offset > last.offset:
        return _on_line(first, last, offset)
    i = bisect_right([p.offset for p in points], offset) - 1
    return _on_line(points[i], points[i + 1], offset)


def _on_line(a: Point, b: Point, offset: int) -> float:
    return a.time + (offset - a.offset) * (b.time - a.time) / (b.offset - a.offset)


def lag_seconds(table: OffsetTimeTable, committed: int, end: int, now: float) -> float | None:
    """Time lag of a consumer at ``committed`` when the log ends at ``end``; None when the
    table cannot estimate it."""
    if committed >= end:
        return 0.0
    produced = table.time_of(committed)
    return None if produced is None else max(0.0, now - produced)
