"""Burrow's consumer status rules, as pure functions over a window of commits.

A partition's window holds its last N commits (default 10), each with the committed
offset, the commit time and the lag at that time. The rules (docs/operations.md, "Statuses: Burrow's rules"):

- OK if the current lag is 0 or any lag in the window is 0;
- otherwise the first rule that matches, in this order:
  REWIND (an offset is lower than the one before it),
  STOP (now - last commit time > last commit time - first commit time),
  STALL (every offset in the window is the same),
  WARN (the lag never decreases between consecutive commits);
- else OK.

A group's status is its worst partition's, where STOP, STALL and REWIND report as ERR,
with ``maxlag`` (the partition with the largest current lag), ``totallag`` and
``complete`` (the share of partitions whose window is full).

Nothing here reads a clock or the broker: times are passed in, so tests drive time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_WINDOW = 10


class Status(StrEnum):
    """Burrow's status values, in Burrow's order of severity."""

    NOTFOUND = "NOTFOUND"
    OK = "OK"
    WARN = "WARN"
    ERR = "ERR"
    STOP = "STOP"
    STALL = "STALL"
    REWIND = "REWIND"

    @property
    def severity(self) -> int:
        return _SEVERITY.index(self)

    @property
    def at_group_level(self) -> Status:
        """STOP, STALL and REWIND are reported as ERR for a group."""
        return Status.ERR if self.severity > Status.ERR.severity else self


_SEVERITY: tuple[Status, ...] = tuple(Status)


@dataclass(frozen=True, slots=True)
class Commit:
    """One commit of a partition: the offset, when (epoch seconds), and the lag then."""

    offset: int
    time: float
    lag: int


Window = Sequence[Commit]


# -- the rules -------------------------------------------------------------------------


def any_lag_zero(window: Window) -> bool:
    return any(c.lag == 0 for c in window)


def rewound(window: Window) -> bool:
    """An offset in the window is lower than the one before it."""
    return any(later.offset < earlier.offset for earlier, later in _pairs(window))


def stopped(window: Window, now: float) -> bool:
    """No commit for longer than the window spans: now - last > last - first."""
    if not window:
        return False
    first, last = window[0], window[-1]
    return now - last.time > last.time - first.time


def stalled(window: Window) -> bool:
    """Every offset in the window is the same (committing without moving)."""
    return len({c.offset for c in window}) == 1


def lag_not_decreasing(window: Window) -> bool:
    """The lag never decreases between consecutive commits."""
    return all(later.lag >= earlier.lag for earlier, later in _pairs(window))


def _pairs(window: Window) -> Iterator[tuple[Commit, Commit]]:
    return zip(window, window[1:], strict=False)


#: The error rules in the order they are tried; the first that matches is the status.
RULES: tuple[tuple[Status, Callable[[Window, float], bool]], ...] = (
    (Status.REWIND, lambda window, now: rewound(window)),
    (Status.STOP, stopped),
    (Status.STALL, lambda window, now: stalled(window)),
    (Status.WARN, lambda window, now: lag_not_decreasing(window)),
)


def partition_status(window: Window, current_lag: int, now: float) -> Status:
    """Burrow's status of one partition. An empty window (no commit seen) is OK: there is
    nothing to judge yet."""
    if current_lag <= 0 or not window or any_lag_zero(window):
        return Status.OK
    for status, matches in RULES:
        if matches(window, now):
            return status
    return Status.OK


# -- partitions and groups -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionStatus:
    topic: str
    partition: int
    status: Status
    lag: int
    commits: int  # how many commits the window holds
    complete: bool  # the window is full


def evaluate_partition(
    topic: str, partition: int, window: Window, current_lag: int, now: float, window_size: int = DEFAULT_WINDOW
) -> PartitionStatus:
    return PartitionStatus(
        topic=topic,
        partition=partition,
        status=partition_status(window, current_lag, now),
        lag=max(current_lag, 0),
        commits=len(window),
        complete=len(window) >= window_size,
    )


@dataclass(frozen=True, slots=True)
class GroupStatus:
    status: Status
    maxlag: PartitionStatus | None
    totallag: int
    complete: float
    partitions: tuple[PartitionStatus, ...]


def group_status(partitions: Iterable[PartitionStatus]) -> GroupStatus:
    """The worst partition status (STOP, STALL, REWIND as ERR), maxlag, totallag, complete.
    A group without partitions is OK (it exists but has committed nothing)."""
    parts = tuple(partitions)
    worst = max((p.status for p in parts), key=lambda s: s.severity, default=Status.OK)
    return GroupStatus(
        status=worst.at_group_level,
        maxlag=max(parts, key=lambda p: p.lag, default=None),
        totallag=sum(p.lag for p in parts),
        complete=(sum(p.complete for p in parts) / len(parts)) if parts else 0.0,
        partitions=parts,
    )


class CommitWindow:
    """The last ``size`` commits of one partition, oldest first."""

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        if size < 1:
            raise ValueError(f"a commit window holds at least 1 commit, not {size}")
        self.size = size
        self._commits: deque[Commit] = deque(maxlen=size)

    def add(self, commit: Commit) -> None:
        self._commits.append(commit)

    @property
    def last(self) -> Commit | None:
        return self._commits[-1] if self._commits else None

    def commits(self) -> tuple[Commit, ...]:
        return tuple(self._commits)

    def __len__(self) -> int:
        return len(self._commits)
