"""The offset-to-time table: interpolation, extrapolation, bounds."""

from __future__ import annotations

import pytest

from bus.ops.timelag import OffsetTimeTable, Point, lag_seconds, time_of

TWO = (Point(10, 100.0), Point(20, 200.0))
THREE = (Point(0, 0.0), Point(10, 10.0), Point(20, 110.0))

LOOKUPS = [
    # (name, points, offset, expected time)
    ("between two points", TWO, 15, 150.0),
    ("at the first point", TWO, 10, 100.0),
    ("at the last point", TWO, 20, 200.0),
    ("before the table: extrapolated", TWO, 5, 50.0),
    ("after the table: extrapolated", TWO, 25, 250.0),
    ("second segment has its own slope", THREE, 15, 60.0),
    ("first segment", THREE, 5, 5.0),
    ("below the table uses first and last points", THREE, -10, -55.0),
    ("one point, at it", (Point(10, 100.0),), 10, 100.0),
    ("one point, past it", (Point(10, 100.0),), 12, 100.0),
    ("one point, before it: unknown", (Point(10, 100.0),), 5, None),
    ("empty table: unknown", (), 5, None),
]


@pytest.mark.parametrize(("name", "points", "offset", "expected"), LOOKUPS, ids=[c[0] for c in LOOKUPS])
def test_time_of(name: str, points: tuple[Point, ...], offset: int, expected: float | None) -> None:
    assert time_of(points, offset) == (pytest.approx(expected) if expected is not None else None)


def test_repeated_end_offset_keeps_the_earlier_time_and_notes_the_last() -> None:
    table = OffsetTimeTable()
    table.add(10, 100.0)
    table.add(10, 130.0)
    table.add(10, 120.0)  # a late poll answer moves nothing back
    table.add(20, 200.0)
    assert table.points() == (Point(10, 100.0, 130.0), Point(20, 200.0))


def test_a_lower_end_offset_starts_afresh() -> None:
    table = OffsetTimeTable()
    table.add(10, 100.0)
    table.add(20, 200.0)
    table.add(3, 300.0)
    assert table.points() == (Point(3, 300.0),)


def test_the_table_is_bounded() -> None:
    table = OffsetTimeTable(size=3)
    for i in range(5):
        table.add(i * 10, float(i))
    assert [p.offset for p in table.points()] == [20, 30, 40]
    assert len(OffsetTimeTable()) == 0
    with pytest.raises(ValueError):
        OffsetTimeTable(size=1)


LAGS = [
    # (name, first record not read, end, now, expected seconds)
    ("at the end: no lag", 20, 20, 500.0, 0.0),
    ("past a stale end: no lag", 25, 20, 500.0, 0.0),
    ("interpolated", 15, 20, 500.0, 350.0),
    ("extrapolated below", 5, 20, 500.0, 450.0),
    ("never negative", 15, 20, 100.0, 0.0),
]


@pytest.mark.parametrize(("name", "first", "end", "now", "expected"), LAGS, ids=[c[0] for c in LAGS])
def test_lag_seconds(name: str, first: int, end: int, now: float, expected: float) -> None:
    table = OffsetTimeTable()
    for point in TWO:
        table.add(point.offset, point.time)
    assert lag_seconds(table, first, end, now) == pytest.approx(expected)


def test_lag_seconds_unknown_with_one_point_behind() -> None:
    table = OffsetTimeTable()
    table.add(20, 100.0)
    assert lag_seconds(table, 5, 20, 500.0) is None


def test_a_consumer_that_read_a_transaction_is_timed_from_its_first_unread_record() -> None:
    """A read_committed sink that read a transaction commits the marker's offset (41); the log
    ends at 42 while the partition is quiet. Nothing is left to read: the monitor's probe finds
    no record from 41 on, so the first unread record is at the end and the lag is 0 however long
    the quiet lasts. A new transaction lands at t=290 (records 42, 43, marker 44): the first
    unread record is 42, appended after the last poll that saw the log end at 42 (t=280), not
    at t=100 when the log first ended at 41 (the quiet minutes are not lag)."""
    table = OffsetTimeTable()
    table.add(41, 100.0)
    table.add(42, 100.5)  # the marker
    for t in range(110, 290, 10):
        table.add(42, float(t))  # quiet: every poll sees the same end
    assert lag_seconds(table, 42, 42, 285.0) == 0.0  # idle, caught up: nothing to read, no lag
    table.add(45, 290.0)  # a transaction: records 42, 43, marker 44
    assert lag_seconds(table, 42, 45, 292.0) == pytest.approx(12.0)  # 292 - 280, not 292 - 100
    # Asked at the committed offset (the marker), as kafka-lag-exporter asks: 192 s.
    assert lag_seconds(table, 41, 45, 292.0) == pytest.approx(192.0)


def test_a_quiet_partition_counts_from_the_last_poll_that_saw_its_end() -> None:
    """A consumer at 7 of a partition quiet since t=100 (log end 7); record 7 lands between the
    polls at t=390 and t=400: at t=401 its lag is 1 to 11 s, the table says 11 (the earliest it
    can have come), not 301 s (from t=100)."""
    table = OffsetTimeTable()
    table.add(5, 50.0)
    for t in range(100, 400, 10):
        table.add(7, float(t))
    table.add(8, 400.0)
    assert lag_seconds(table, 7, 8, 401.0) == pytest.approx(11.0)
    table.add(9, 410.0)  # one more record: record 7 came between t=390 and t=400, so 11-21 s
    assert 11.0 <= lag_seconds(table, 7, 9, 411.0) <= 21.0
    assert lag_seconds(table, 5, 8, 401.0) == pytest.approx(351.0)  # two behind: from when the end was at 5
    # record 6 came between t=50 (end 5, seen once) and t=100 (end 7): about t=75
    assert lag_seconds(table, 6, 8, 401.0) == pytest.approx(326.0)


def test_a_consumer_behind_a_busy_partition_is_timed_as_before() -> None:
    table = OffsetTimeTable()
    for offset, t in [(10, 100.0), (20, 110.0), (30, 120.0)]:
        table.add(offset, t)
    assert lag_seconds(table, 15, 30, 130.0) == pytest.approx(25.0)  # no point at 16: interpolated


def test_between_two_points_the_line_starts_where_the_log_end_was_last_seen() -> None:
    """The log ended at 10 from t=100 to t=190 (quiet), then at 20 at t=200: records 10-19
    came between t=190 and t=200, so record 15 about t=195, not t=150."""
    points = (Point(10, 100.0, 190.0), Point(20, 200.0))
    assert time_of(points, 15) == pytest.approx(195.0)
    assert time_of(points, 10) == pytest.approx(190.0)
    assert time_of(points, 25) == pytest.approx(250.0)  # past the table: the whole table's line, as before
