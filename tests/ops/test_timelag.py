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


def test_repeated_end_offset_keeps_the_earlier_time() -> None:
    table = OffsetTimeTable()
    table.add(10, 100.0)
    table.add(10, 130.0)
    table.add(20, 200.0)
    assert table.points() == (Point(10, 100.0), Point(20, 200.0))


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
    # (name, committed, end, now, expected seconds)
    ("at the end: no lag", 20, 20, 500.0, 0.0),
    ("past a stale end: no lag", 25, 20, 500.0, 0.0),
    ("interpolated", 15, 20, 500.0, 350.0),
    ("extrapolated below", 5, 20, 500.0, 450.0),
    ("never negative", 15, 20, 100.0, 0.0),
]


@pytest.mark.parametrize(("name", "committed", "end", "now", "expected"), LAGS, ids=[c[0] for c in LAGS])
def test_lag_seconds(name: str, committed: int, end: int, now: float, expected: float) -> None:
    table = OffsetTimeTable()
    for point in TWO:
        table.add(point.offset, point.time)
    assert lag_seconds(table, committed, end, now) == pytest.approx(expected)


def test_lag_seconds_unknown_with_one_point_behind() -> None:
    table = OffsetTimeTable()
    table.add(20, 100.0)
    assert lag_seconds(table, 5, 20, 500.0) is None
