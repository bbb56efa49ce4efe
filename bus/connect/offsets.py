"""Source positions (cursors, file checkpoints, ...) in the compacted topic
``<namespace.>bus-connector-offsets``, keyed by connector name.

A source saves its position after the records before it were acknowledged, and reads it
back when it starts, so that a restarted connector resumes where it stopped on any
machine that reaches the cluster. Positions are JSON objects of the source's choosing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from bus.kafka.compacted import AckedProducer, CompactedTopic
from bus.connect.exceptions import OffsetStoreError
from bus.kafka.config import KafkaSettings
from bus.topology.names import offsets_topic


Position = Mapping[str, Any]


class OffsetStore:
    """Positions of every source connector of one topology namespace."""

    def __init__(
        self, settings: KafkaSettings, namespace: str | None, *, producer: AckedProducer | None = None
    ) -> None:
        self.topic = CompactedTopic(settings, offsets_topic(namespace), producer=producer)

    @property
    def name(self) -> str:
        return self.topic.name

    def ensure(self) -> "OffsetStore":
        self.topic.ensure()
        return self

    def load(self, connector: str) -> dict[str, Any] | None:
        """The last saved position of ``connector``, or None if it never saved one."""
        document = self.topic.get(connector)
        position = document.get("position") if document else None
        return position if isinstance(position, dict) else None

    def load_all(self) -> dict[str, dict[str, Any]]:
        return {
            name: doc["position"] for name, doc in self.topic.read_all().items() if isinstance(doc.get("position"), dict)
        }

    def save(self, connector: str, position: Position) -> None:
        """Store ``position``; returns once the broker acknowledged it."""
        try:
            json.dumps(dict(position))
        except (TypeError, ValueError) as exc:
            raise OffsetStoreError(
                f"connector {connector!r} gave a position that is not JSON ({exc}); positions are JSON objects "
                "of strings, numbers, booleans, lists and objects"
            ) from exc
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        self.topic.put(connector, {"connector": connector, "position": dict(position), "saved_at": now})

    def forget(self, connector: str) -> None:
        """Remove the position (a tombstone): the connector starts from scratch next time."""
        self.topic.delete(connector)

    def close(self) -> None:
        self.topic.close()
