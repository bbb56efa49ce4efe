"""Errors of the ops tooling (lag, metrics). Each keeps its cause."""

from __future__ import annotations

from bus.errors import BusError


class OpsError(BusError):
    """Something the ops tooling could not find out."""


class UnknownGroup(OpsError):
    """A consumer group asked for by name does not exist on the cluster."""

    def __init__(self, group: str, bootstrap_servers: str, known: list[str]) -> None:
        self.group = group
        self.known = known
        hint = f"; groups there: {', '.join(sorted(known)[:20])}" if known else "; the cluster has no consumer groups"
        super().__init__(
            f"consumer group {group!r} does not exist on {bootstrap_servers}{hint}. "
            "Run `bus lag --all` to list every group."
        )


class LagQueryFailed(OpsError):
    """The broker refused or did not answer a query for offsets or groups."""
