"""``bus lag``'s report: per partition, per group, and the table it prints."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from bus.ops.burrow import Status
from bus.ops.metrics import PartitionSample

# -- the report ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int
    end: int
    lag: int
    lag_seconds: float | None
    status: Status
    commits: int  # commits in the window
    department: str = ""
    subscription: str = ""
    event_type: str = ""
    lag_exact: bool = True  # ``lag`` counted; False: offsets not read count in it (an upper bound)

    def to_json(self) -> dict[str, Any]:
        return {
            "department": self.department or None,
            "subscription": self.subscription or None,
            "event_type": self.event_type or None,
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "end": self.end,
            "lag": self.lag,
            "lag_exact": self.lag_exact,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "status": self.status.value,
            "commits": self.commits,
        }

    def sample(self) -> PartitionSample:
        return PartitionSample(
            self.group, self.topic, self.partition, self.committed, self.end, self.lag, self.lag_seconds,
            self.status, self.department, self.subscription,
        )


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    status: Status
    partitions: tuple[PartitionLag, ...] = ()
    maxlag: PartitionLag | None = None
    totallag: int = 0
    complete: float = 0.0
    department: str = ""
    subscription: str = ""

    @property
    def found(self) -> bool:
        return self.status != Status.NOTFOUND

    @property
    def max_lag_seconds(self) -> float | None:
        known = [p.lag_seconds for p in self.partitions if p.lag_seconds is not None]
        return max(known) if known else None

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "status": self.status.value,
            "department": self.department or None,
            "subscription": self.subscription or None,
            "totallag": self.totallag,
            "maxlag": None if self.maxlag is None else {
                "topic": self.maxlag.topic, "partition": self.maxlag.partition, "lag": self.maxlag.lag,
            },
            "max_lag_seconds": None if self.max_lag_seconds is None else round(self.max_lag_seconds, 3),
            "complete": round(self.complete, 3),
            "partitions": [p.to_json() for p in self.partitions],
        }


@dataclass(frozen=True, slots=True)
class LagReport:
    at: float
    groups: tuple[GroupLag, ...]

    @property
    def ok(self) -> bool:
        return all(g.status == Status.OK for g in self.groups)

    @property
    def exit_code(self) -> int:
        """0 when every group is OK, 2 otherwise (for cron and scripts)."""
        return 0 if self.ok else 2

    def group(self, name: str) -> GroupLag:
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": dt.datetime.fromtimestamp(self.at, dt.UTC).isoformat(timespec="seconds"),
            "ok": self.ok,
            "groups": [g.to_json() for g in self.groups],
        }


# -- the table ---------------------------------------------------------------------------------

COLUMNS = ("DEPARTMENT", "SUBSCRIPTION", "GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "LAG_S", "STATUS")


def render_table(report: LagReport) -> str:
    """The report as aligned text: one row per partition, then one line per group."""
    rows = [list(COLUMNS)]
    for g in report.groups:
        if not g.partitions:
            note = "not found on the cluster" if not g.found else "no committed offsets"
            rows.append([g.department or "-", g.subscription or "-", g.group, f"({note})", "-", "-", "-", "-", "-",
                         g.status.value])
        for p in g.partitions:
            rows.append([
                p.department or "-", p.subscription or "-", p.group, p.topic, str(p.partition), str(p.committed),
                str(p.end), str(p.lag), _seconds(p.lag_seconds), p.status.value,
            ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.append("")
    lines.extend(_group_line(g) for g in report.groups)
    return "\n".join(lines)


def _group_line(g: GroupLag) -> str:
    where = f" ({g.department}/{g.subscription})" if g.subscription else ""
    worst = f", maxlag {g.maxlag.lag} at {g.maxlag.topic}[{g.maxlag.partition}]" if g.maxlag and g.maxlag.lag else ""
    return f"group {g.group}{where}: {g.status.value}, totallag {g.totallag}{worst}, complete {g.complete:.0%}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
