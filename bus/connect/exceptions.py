"""Errors of the connector kit.

Every error keeps its cause (``raise ... from exc``); an error about one record keeps the
raw record, which is what the dead-letter topic needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from bus.errors import BusError, ConfigError
from bus.topology.exceptions import suggest

if TYPE_CHECKING:
    from bus.connect.base import RawRecord

#: A location inside a connector's entry of topology.yaml, e.g. ("config", "auth", "token").
Loc = tuple[str | int, ...]


class ConnectorError(BusError):
    """Anything the connector kit reports."""


class ConnectorConfigInvalid(ConnectorError, ConfigError):
    """A connector's ``config`` that cannot work; ``problems`` lists every (loc, message)."""

    def __init__(self, connector: str, problems: Sequence[tuple[Loc, str]]) -> None:
        self.connector = connector
        self.problems = list(problems)
        listed = "\n".join(f"  {_render(loc)}: {message}" for loc, message in self.problems)
        super().__init__(f"connector {connector!r}: {len(self.problems)} problem(s) in its config:\n{listed}")


def _render(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "config"


class SecretUnavailable(ConnectorError):
    """A secret reference (``env:NAME``, ``file:PATH``) that cannot be read at start."""


class UnknownConnectorType(ConnectorError, LookupError):
    """A connector type that no installed package provides."""

    def __init__(self, name: str, installed: Sequence[str], detail: str = "") -> None:
        self.name = name
        self.installed = sorted(installed)
        hint = suggest(name, self.installed, "connector type")
        super().__init__(
            f"unknown connector type {name!r}{': ' + detail if detail else ''}; {hint}. Connector types are "
            "installed packages that declare an entry point in the group 'bus.connectors' "
            "(`bus connector list` shows them)"
        )


class ConnectorLoadError(ConnectorError):
    """An entry point that names a module or class that cannot be imported or is no connector."""


class Backpressure(ConnectorError):
    """A sink cannot take the records of ``topic``/``partition`` now: the runner pauses the
    partition for ``retry_after`` seconds and redelivers from its first uncommitted offset."""

    def __init__(self, retry_after: float, topic: str, partition: int, reason: str = "") -> None:
        self.retry_after = retry_after
        self.topic = topic
        self.partition = partition
        super().__init__(
            f"backpressure on {topic}[{partition}]: retry after {retry_after:g} s{': ' + reason if reason else ''}"
        )


class RecordFailed(ConnectorError):
    """One record could not be handled. ``record`` is the raw record; ``retriable`` says
    whether trying again later may succeed (a timeout) or not (a 4xx answer)."""

    def __init__(self, message: str, record: RawRecord | None, *, retriable: bool, stage: str = "TASK_PUT") -> None:
        self.record = record
        self.retriable = retriable
        self.stage = stage
        super().__init__(message)


class ConnectorFailed(ConnectorError):
    """The connector stopped on an error (``errors.tolerance: none``, or a fault of its own)."""

    def __init__(self, connector: str, message: str, record: RawRecord | None = None) -> None:
        self.connector = connector
        self.record = record
        super().__init__(f"connector {connector!r} stopped: {message}")


class Interrupted(ConnectorError):
    """Work abandoned because the connector is stopping; nothing of it is committed."""


class OffsetStoreError(ConnectorError):
    """The connector offsets topic could not be read or written."""
