"""The applied topology, published for the running bus.

``bus apply`` publishes the topology it applied to the compacted topic
``<ns.>bus-topology`` (one record, key ``topology``): the YAML text and every schema file
under its ``schemas_dir``, so that a router on any machine loads exactly what was applied,
not whatever copy of the files it happens to have. A running router watches the topic
(:class:`TopologyWatcher`) and changes its subscriptions between two transactions.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog
from confluent_kafka import Consumer, TopicPartition
from ruamel.yaml import YAML

from bus.kafka.compacted import AckedProducer
from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.config import KafkaSettings, consumer_config
from bus.kafka.consuming import take_batch
from bus.topology.exceptions import TopologyError
from bus.topology.models import Topology, topic_name
from bus.topology.names import topology_topic
from bus.topology.validate import load_topology

log = structlog.get_logger(__name__)

KEY = b"topology"
SCHEMA_SUFFIXES = (".avsc", ".json")


@dataclass(frozen=True)
class Bundle:
    """A topology file and its schema files, as published."""

    yaml: str
    schemas_dir: str
    schemas: dict[str, str]  # path relative to schemas_dir -> text

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()[:16]

    def to_bytes(self) -> bytes:
        body = {"yaml": self.yaml, "schemas_dir": self.schemas_dir, "schemas": self.schemas}
        return json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes) -> Bundle:
        body = json.loads(raw)
        return cls(body["yaml"], body["schemas_dir"], dict(body["schemas"]))

    @classmethod
    def of(cls, topology_path: Path) -> Bundle:
        """Read ``topology_path`` (validated first: a bad topology is never published)."""
        topology = load_topology(topology_path)
        root = topology_path.parent / topology.schemas_dir
        schemas = {
            str(path.relative_to(root)): path.read_text(encoding="utf-8")
            for path in sorted(root.rglob("*"))
            if path.is_file() and path.suffix in SCHEMA_SUFFIXES
        }
        return cls(topology_path.read_text(encoding="utf-8"), topology.schemas_dir, schemas)

    def load(self) -> Topology:
        """The topology of this bundle, loaded from a private copy of its files."""
        with tempfile.TemporaryDirectory(prefix="bus-topology-") as tmp:
            folder = Path(tmp)
            schemas = (folder / "schemas").resolve()
            for relative, text in self.schemas.items():
                target = (schemas / relative).resolve()
                if not target.is_relative_to(schemas):
                    raise TopologyError(f"the published topology names a schema outside its folder: {relative}")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text, encoding="utf-8")
            yaml = YAML()  # round trip: the copy keeps the file's layout, its schemas are ours
            document = yaml.load(self.yaml)
            document["schemas_dir"] = "schemas"
            path = folder / "topology.yaml"
            with path.open("w", encoding="utf-8") as out:
                yaml.dump(document, out)
            return load_topology(path)


def publish_topology(settings: KafkaSettings, topology_path: Path) -> tuple[Topology, str]:
    """Publish the topology in ``topology_path`` for running routers; returns it and its digest."""
    bundle = Bundle.of(topology_path)
    topology = bundle.load()
    topic = topology_topic(topology.namespace)
    ensure_topics(settings, [TopicSpec.compacted(topic)])
    producer = AckedProducer(settings, client_id="bus-apply")
    try:
        producer.send(topic, key=KEY, value=bundle.to_bytes())
    finally:
        producer.close()
    return topology, bundle.digest


class TopologyWatcher:
    """Reads the latest published topology of a namespace; :meth:`poll` returns a new one
    when it changed since the last call (the first call returns the current one, if any)."""

    def __init__(self, settings: KafkaSettings, namespace: str | None) -> None:
        self.settings = settings
        self.namespace = namespace
        self.topic = topology_topic(namespace)
        ensure_topics(settings, [TopicSpec.compacted(self.topic)])
        self._consumer = Consumer(
            consumer_config(settings, group_id=topic_name(namespace, "bus-topology-watch"), client_id="bus-topology-watch")
        )
        self._consumer.assign([TopicPartition(self.topic, 0, 0)])
        self._latest: bytes | None = None
        self.digest: str | None = None

    def poll(self, wait_s: float = 0.0) -> Topology | None:
        for msg in take_batch(self._consumer, 100, wait_s):
            if msg.error() is None and msg.key() == KEY and msg.value():
                self._latest = msg.value()
        if self._latest is None:
            return None
        raw, self._latest = self._latest, None
        bundle = Bundle.from_bytes(raw)
        if bundle.digest == self.digest:
            return None
        topology = bundle.load()
        if topology.namespace != self.namespace:
            raise TopologyError(
                f"the published topology's namespace is {topology.namespace!r}, this bus runs {self.namespace!r}"
            )
        self.digest = bundle.digest
        return topology

    def close(self) -> None:
        self._consumer.close()
