"""Lag in seconds, the way kafka-lag-exporter estimates it.

Each poll stores a point (log end offset, time) for a partition in a bounded table
(default 60 points). The time at which the log end was at the offset of the consumer's
first unread record is interpolated between the two points that bracket it, or
extrapolated along the line through the table's first and last points when none do; the
time lag is ``now`` minus that time (0 when nothing is left to read; never negative).
kafka-lag-exporter asks at the committed offset; the difference is the markers below.

Points have strictly increasing offsets: when a poll finds the same log end offset as
the last point, the table keeps the earlier time (the log end reached that offset then),
and notes the later one as the time the log end was last seen there.

Quiet partitions: the record at an offset was appended after the last poll that saw the
log end at that offset, not when the log first ended there (on a quiet partition, minutes
earlier): between two points, the line starts at the lower one's last sighting.
Transaction markers: the time asked for is that of the first *record* the consumer has not
read, which the caller finds past the markers (:func:`bus.ops.offsets.backlog`), not that of the
committed offset: a consumer that read a transaction commits its marker's offset, and that
offset is no record. Where no record is left, the lag is 0 and the table is not asked.
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


def lag_seconds(table: OffsetTimeTable, first: int, end: int, now: float) -> float | None:
    """Time lag of a consumer whose first record not read is at ``first`` when the log ends at
    ``end`` (``first >= end``: nothing to read, 0); None when the table cannot estimate it."""
    if first >= end:
        return 0.0
    produced = table.time_of(first)
    return None if produced is None else max(0.0, now - produced)
