"""What makes a measured run too short to mean anything (bus.bench.steady): pure logic."""

from __future__ import annotations

import pytest

from bus.bench.steady import MIN_MEASURED_RECORDS, MIN_MEASURED_S, Marks, Window

pytestmark = pytest.mark.embedded


@pytest.mark.parametrize(
    ("startup_s", "measured_s", "records", "exhausted", "short"),
    [
        (0.4, 10.0, 500_000, False, False),  # start-up 4% of the measured time
        (0.5, 10.0, 500_000, False, True),  # 5%: too much
        (0.1, MIN_MEASURED_S - 0.5, 500_000, False, True),  # too few seconds
        (0.1, 10.0, MIN_MEASURED_RECORDS - 1, False, True),  # too few records
        (0.1, 10.0, 500_000, True, True),  # ran out of records before its time
    ],
)
def test_a_run_is_too_short_by_its_start_up_share_its_length_or_running_out(
    startup_s: float, measured_s: float, records: int, exhausted: bool, short: bool
) -> None:
    window = Window(startup_s, 2.0, 1000, measured_s, records, records, exhausted=exhausted)

    assert bool(window.short_reasons()) is short
    report = window.report()
    assert report["too_short"] is short
    assert report["eps"] == pytest.approx(records / measured_s, rel=1e-3)
    assert report["startup_pct_of_measured"] == pytest.approx(100 * startup_s / measured_s, abs=0.01)


def test_marks_leave_the_start_up_and_the_warm_up_out_of_the_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([100.0, 101.0, 101.5, 102.6, 103.0, 104.0, 105.7, 106.0])
    monkeypatch.setattr("bus.bench.steady.time.perf_counter", lambda: next(clock))
    marks = Marks(warmup_s=1.0, seconds=3.0)  # started at 100.0
    for records in (100, 150, 300, 400, 500, 700):  # commits at 101.0 ... 105.7
        marks.mark(records, 10 * records)

    window = marks.window()
    assert marks.done.is_set()
    assert window.startup_s == pytest.approx(1.0)  # to the first commit
    assert (window.warmup_s, window.warmup_records) == (pytest.approx(1.6), 200)  # 101.0 -> 102.6
    assert window.measured_s == pytest.approx(3.1) and window.measured_records == 400  # 102.6 -> 105.7
    assert window.measured_out == 4000 and not window.exhausted


def test_marks_that_never_reach_their_time_are_flagged_exhausted() -> None:
    marks = Marks(warmup_s=0.0, seconds=60.0)
    marks.mark(10, 10)
    marks.mark(20, 20)

    assert marks.window().exhausted and marks.window().short_reasons()


def test_with_a_ready_time_the_start_up_ends_there_and_the_first_batch_is_warm_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([100.0, 100.4, 101.0, 101.5, 105.0, 106.0])
    monkeypatch.setattr("bus.bench.steady.time.perf_counter", lambda: next(clock))
    marks = Marks(warmup_s=1.0, seconds=3.0)  # started at 100.0
    marks.set_ready()  # 100.4: holds its partitions
    for records in (5000, 6000, 9000, 10000):  # commits at 101.0 (the first batch), 101.5, 105.0, 106.0
        marks.mark(records, records)  # the last comes after the measured time: not in the window

    window = marks.window()
    assert window.startup_s == pytest.approx(0.4) and window.ready_s == pytest.approx(0.4)
    assert (window.warmup_s, window.warmup_records) == (pytest.approx(1.1), 6000)  # 100.4 -> 101.5
    assert (window.measured_s, window.measured_records) == (pytest.approx(3.5), 3000)  # 101.5 -> 105.0
    assert marks.done.is_set() and not window.exhausted
