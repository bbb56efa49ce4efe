"""Burrow's rules, table-driven: every rule, its edges, and the order they are tried in."""

from __future__ import annotations

import pytest

from bus.ops.burrow import (
    Commit,
    CommitWindow,
    PartitionStatus,
    Status,
    any_lag_zero,
    evaluate_partition,
    group_status,
    lag_not_decreasing,
    partition_status,
    rewound,
    stalled,
    stopped,
)


def window(*commits: tuple[int, float, int]) -> list[Commit]:
    """(offset, commit time, lag) triples, oldest first."""
    return [Commit(offset, time, lag) for offset, time, lag in commits]


# -- each rule on its own --------------------------------------------------------------------

RULE_CASES = [
    # (name, predicate, window, now, expected)
    ("zero lag present", any_lag_zero, window((1, 0, 3), (2, 10, 0)), 0, True),
    ("no zero lag", any_lag_zero, window((1, 0, 3), (2, 10, 1)), 0, False),
    ("offset went back", rewound, window((5, 0, 1), (7, 10, 1), (6, 20, 1)), 0, True),
    ("offsets equal are not a rewind", rewound, window((5, 0, 1), (5, 10, 1)), 0, False),
    ("offsets rising", rewound, window((5, 0, 1), (6, 10, 1)), 0, False),
    ("silent longer than the window spans", stopped, window((1, 0, 1), (2, 10, 1)), 21, True),
    ("silent exactly as long as the span", stopped, window((1, 0, 1), (2, 10, 1)), 20, False),
    ("one commit, time passed", stopped, window((1, 100, 1)), 100.5, True),
    ("one commit, no time passed", stopped, window((1, 100, 1)), 100, False),
    ("empty window never stops", stopped, [], 1e9, False),
    ("same offset throughout", stalled, window((4, 0, 1), (4, 10, 2), (4, 20, 3)), 0, True),
    ("one commit is one offset", stalled, window((4, 0, 1)), 0, True),
    ("offset moved once", stalled, window((4, 0, 1), (4, 10, 2), (5, 20, 3)), 0, False),
    ("lag rising", lag_not_decreasing, window((1, 0, 1), (2, 10, 2), (3, 20, 5)), 0, True),
    ("lag flat", lag_not_decreasing, window((1, 0, 4), (2, 10, 4)), 0, True),
    ("lag fell once", lag_not_decreasing, window((1, 0, 4), (2, 10, 3), (3, 20, 9)), 0, False),
]


@pytest.mark.parametrize(("name", "rule", "commits", "now", "expected"), RULE_CASES, ids=[c[0] for c in RULE_CASES])
def test_rule(name: str, rule, commits: list[Commit], now: float, expected: bool) -> None:
    result = rule(commits, now) if rule is stopped else rule(commits)
    assert result is expected


# -- the partition status: rules and their order ------------------------------------------

STATUS_CASES = [
    # (name, window, current lag, now, expected)
    ("current lag zero beats a rewind", window((9, 0, 3), (4, 10, 8)), 0, 1000, Status.OK),
    ("a zero lag in the window beats a stall", window((4, 0, 0), (4, 10, 2), (4, 20, 3)), 3, 25, Status.OK),
    ("a zero lag in the window beats a stop", window((4, 0, 0), (5, 10, 2)), 3, 1000, Status.OK),
    ("rewind", window((10, 0, 5), (8, 10, 7), (12, 20, 3)), 3, 25, Status.REWIND),
    ("rewind beats stop", window((10, 0, 5), (8, 10, 7), (12, 20, 3)), 3, 1000, Status.REWIND),
    ("rewind beats stall and warn", window((10, 0, 5), (8, 10, 7), (8, 20, 9)), 9, 25, Status.REWIND),
    ("stop", window((10, 0, 5), (20, 10, 3)), 3, 25, Status.STOP),
    ("stop beats stall", window((10, 0, 5), (10, 10, 6)), 6, 100, Status.STOP),
    ("stop beats warn", window((10, 0, 5), (12, 10, 6)), 6, 100, Status.STOP),
    ("not stopped at exactly the span", window((10, 0, 5), (20, 10, 3)), 3, 20, Status.OK),
    ("stall", window((10, 0, 5), (10, 10, 6), (10, 20, 7)), 7, 25, Status.STALL),
    ("stall beats warn (lag rising too)", window((10, 0, 5), (10, 10, 9)), 9, 12, Status.STALL),
    ("warn: lag rising", window((10, 0, 5), (12, 10, 5), (14, 20, 8)), 8, 25, Status.WARN),
    ("warn: lag flat", window((10, 0, 5), (12, 10, 5)), 5, 12, Status.WARN),
    ("ok: lag fell once", window((10, 0, 5), (15, 10, 3), (20, 20, 4)), 4, 25, Status.OK),
    ("one commit just now: a stall", window((10, 100, 5)), 5, 100, Status.STALL),
    ("one commit a while ago: a stop", window((10, 100, 5)), 5, 101, Status.STOP),
    ("no commits: nothing to judge", [], 5, 100, Status.OK),
]


@pytest.mark.parametrize(("name", "commits", "lag", "now", "expected"), STATUS_CASES, ids=[c[0] for c in STATUS_CASES])
def test_partition_status(name: str, commits: list[Commit], lag: int, now: float, expected: Status) -> None:
    assert partition_status(commits, lag, now) == expected


def test_evaluate_partition_reports_the_window_fill() -> None:
    full = window(*[(i, i * 10, 5) for i in range(10)])
    assert evaluate_partition("t", 0, full, 5, 95).complete
    partial = evaluate_partition("t", 1, full[:3], 5, 25)
    assert (partial.commits, partial.complete) == (3, False)
    assert evaluate_partition("t", 0, full, -4, 95).lag == 0  # lag is never negative


# -- groups --------------------------------------------------------------------------------


def part(p: int, status: Status, lag: int = 1, complete: bool = True) -> PartitionStatus:
    return PartitionStatus("t", p, status, lag, 10 if complete else 3, complete)


GROUP_CASES = [
    ("all ok", [Status.OK, Status.OK], Status.OK),
    ("worst is warn", [Status.OK, Status.WARN], Status.WARN),
    ("stop reports as err", [Status.OK, Status.STOP], Status.ERR),
    ("stall reports as err", [Status.WARN, Status.STALL], Status.ERR),
    ("rewind reports as err", [Status.REWIND, Status.OK], Status.ERR),
    ("no partitions", [], Status.OK),
]


@pytest.mark.parametrize(("name", "statuses", "expected"), GROUP_CASES, ids=[c[0] for c in GROUP_CASES])
def test_group_status_is_the_worst_partition(name: str, statuses: list[Status], expected: Status) -> None:
    assert group_status([part(i, s) for i, s in enumerate(statuses)]).status == expected


def test_group_maxlag_totallag_and_complete() -> None:
    parts = [
        part(0, Status.OK, 3), part(1, Status.WARN, 12, complete=False), part(2, Status.OK, 0), part(3, Status.OK, 5)
    ]
    summary = group_status(parts)
    assert summary.maxlag is not None and summary.maxlag.partition == 1
    assert summary.totallag == 20
    assert summary.complete == 0.75
    empty = group_status([])
    assert (empty.maxlag, empty.totallag, empty.complete) == (None, 0, 0.0)


def test_severity_order_is_burrows() -> None:
    order = [Status.NOTFOUND, Status.OK, Status.WARN, Status.ERR, Status.STOP, Status.STALL, Status.REWIND]
    assert sorted(Status, key=lambda s: s.severity) == order
    assert [s.at_group_level for s in order] == [Status.NOTFOUND, Status.OK, Status.WARN] + [Status.ERR] * 4


def test_commit_window_keeps_the_last_n() -> None:
    kept = CommitWindow(3)
    for i in range(5):
        kept.add(Commit(i, float(i), 1))
    assert [c.offset for c in kept.commits()] == [2, 3, 4]
    assert kept.last == Commit(4, 4.0, 1)
    with pytest.raises(ValueError):
        CommitWindow(0)
