"""Records left to a group: the stretches the probe plans and what they tell (pure logic).

A transactional partition used below: records 0-2, their commit marker at 3, records 4-5 of
an aborted transaction with its marker at 6, records 7-8 and their marker at 9; end 10. A
read_committed reader delivers 0, 1, 2, 7, 8 (on Kafka)."""

from __future__ import annotations

import pytest
from bus.ops.offsets import Backlog, Stretch, backlog, plan_stretches


T = ("t", 0)
RECORDS = ((0, 100.0), (1, 101.0), (2, 102.0), (7, 107.0), (8, 108.0))
READ = (Stretch(0, 10, RECORDS),)  # read to the end

CASES = [
    # (name, committed, end, stretches, expected)
    ("at the end", 10, 10, (), Backlog(0, True, None)),
    ("past a stale end", 12, 10, (), Backlog(0, True, None)),
    ("on the last marker: nothing left", 9, 10, READ, Backlog(0, True, None)),
    ("one record and its marker", 8, 10, READ, Backlog(1, True, 8, 108.0)),
    ("behind the aborted transaction: two records, not six offsets", 3, 10, READ, Backlog(2, True, 7, 107.0)),
    ("from the beginning", 0, 10, READ, Backlog(5, True, 0, 100.0)),
    ("not read: the offsets count", 3, 10, (), Backlog(7, False, 3)),
    (
        "read to the last stable offset (a transaction open from 7): complete",
        3, 10, (Stretch(0, 7, RECORDS[:3]),), Backlog(0, True, None),
    ),
    (
        "read part of the way: what was read counts, the rest as offsets",
        0, 10, (Stretch(0, 5, RECORDS[:3], complete=False),), Backlog(3 + 5, False, 0, 100.0),
    ),
    (
        "no record in the part read: from where reading stopped",
        3, 10, (Stretch(3, 6, (), complete=False),), Backlog(4, False, 6),
    ),
    (
        "committed beyond an incomplete stretch: not covered",
        8, 10, (Stretch(0, 5, RECORDS[:3], complete=False),), Backlog(2, False, 8),
    ),
    (
        "the stretch of its own among several",
        8, 10, (Stretch(0, 3, RECORDS[:3], complete=False), Stretch(8, 10, RECORDS[4:])),
        Backlog(1, True, 8, 108.0),
    ),
]


@pytest.mark.parametrize(("name", "committed", "end", "stretches", "expected"), CASES, ids=[c[0] for c in CASES])
def test_backlog(name: str, committed: int, end: int, stretches: tuple[Stretch, ...], expected: Backlog) -> None:
    assert backlog(committed, end, stretches) == expected


PLANS = [
    # (name, committed offsets, end, limit, expected stretches)
    ("one group", {3}, 10, 200, [(3, 10)]),
    ("at the end: nothing to read", {10}, 10, 200, []),
    ("far behind: the first offsets only", {0}, 1000, 200, [(0, 200)]),
    ("two groups near each other: read once", {3, 8}, 10, 200, [(3, 10)]),
    ("two groups far apart: two stretches", {0, 900}, 1000, 200, [(0, 200), (900, 1000)]),
    ("touching stretches merge", {0, 200}, 1000, 200, [(0, 400)]),
]


@pytest.mark.parametrize(("name", "offsets", "end", "limit", "expected"), PLANS, ids=[c[0] for c in PLANS])
def test_plan_stretches(name: str, offsets: set[int], end: int, limit: int, expected: list[tuple[int, int]]) -> None:
    planned = plan_stretches({T: offsets}, {T: end}, limit)
    assert planned.get(T, []) == expected
