"""Connector status, as ``bus connector status`` shows it from any machine.

A running connector writes its status (state, error, worker, counters, position) to the
compacted topic ``<namespace.>bus-connector-status`` on every change of state and every
``interval_s`` seconds, as Kafka Connect writes to its status topic. A status whose
heartbeat is more than three intervals old belongs to a worker that died without saying.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from bus.kafka.compacted import AckedProducer, CompactedTopic
from bus.kafka.config import KafkaSettings
from bus.topology.names import status_topic


State = Literal["starting", "running", "paused", "stopping", "stopped", "failed"]


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ConnectorStatus:
    name: str
    type: str
    department: str
    side: str
    state: State
    worker: str
    updated_at: str
    interval_s: float
    error: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    position: dict[str, Any] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ConnectorStatus":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def stale(self, now: dt.datetime | None = None) -> bool:
        """True when a live state's last heartbeat is older than three intervals."""
        if self.state not in ("starting", "running", "paused", "stopping"):
            return False
        now = now or dt.datetime.now(dt.timezone.utc)
        updated = dt.datetime.fromisoformat(self.updated_at.replace("Z", "+00:00"))
        return (now - updated).total_seconds() > 3 * self.interval_s


class StatusStore:
    """Statuses of every connector of one topology namespace."""

    def __init__(self, settings: KafkaSettings, namespace: str | None, *, producer: AckedProducer | None = None):
        self.topic = CompactedTopic(settings, status_topic(namespace), producer=producer)

    def ensure(self) -> "StatusStore":
        self.topic.ensure()
        return self

    def write(self, status: ConnectorStatus) -> None:
        self.topic.put(status.name, status.as_dict())

    def read_all(self) -> dict[str, ConnectorStatus]:
        out: dict[str, ConnectorStatus] = {}
        for name, document in self.topic.read_all().items():
            try:
                out[name] = ConnectorStatus.from_dict(document)
            except TypeError:
                continue  # a document of another version: not shown rather than failing
        return out

    def close(self) -> None:
        self.topic.close()
