"""Thin helpers over confluent-kafka's AdminClient."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec, TopicMetadata

from bus.kafka.config import KafkaSettings, admin_config
from bus.kafka.exceptions import BrokerUnreachable, KafkaError


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int = 1
    replication_factor: int = -1  # broker default: right for one broker and for a cluster
    config: dict[str, str] = field(default_factory=dict)

    @classmethod
    def compacted(cls, name: str, partitions: int = 1) -> "TopicSpec":
        return cls(name, partitions, config={"cleanup.policy": "compact"})


def admin(settings: KafkaSettings) -> AdminClient:
    return AdminClient(admin_config(settings))


def wait_for_broker(settings: KafkaSettings, timeout_s: float | None = None) -> AdminClient:
    """An admin client once the cluster answers metadata, or BrokerUnreachable naming it."""
    timeout = settings.connect_timeout_s if timeout_s is None else timeout_s
    client = admin(settings)
    try:
        client.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerUnreachable(settings.bootstrap_servers, timeout, str(exc.args[0])) from exc
    return client


#: The cluster id the embedded broker (tansu) reports in its metadata.
EMBEDDED_CLUSTER_ID = "tansu_cluster"


def with_detected_profile(settings: KafkaSettings, timeout_s: float = 2.0) -> KafkaSettings:
    """``settings`` with the profile of the broker that answers there, when none was chosen
    (``BUS_KAFKA_PROFILE`` unset): a command run without settings finds `bus up`'s broker on
    the default address, the embedded one or Apache Kafka, and applies the embedded
    workarounds to the first only. Unchanged when nothing answers (the command then says so)."""
    if "kafka_profile" in settings.model_fields_set:
        return settings
    try:
        metadata = admin(settings).list_topics(timeout=min(timeout_s, settings.connect_timeout_s))
    except KafkaException:
        return settings
    return settings.with_broker(settings.bootstrap_servers, embedded=metadata.cluster_id == EMBEDDED_CLUSTER_ID)


def ensure_topics(settings: KafkaSettings, specs: list[TopicSpec], timeout_s: float = 15.0) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    client = wait_for_broker(settings)
    existing = set(client.list_topics(timeout=timeout_s).topics)
    new = [
        NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.config)
        for s in specs
        if s.name not in existing
    ]
    if not new:
        return []
    created = []
    for name, future in client.create_topics(new, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise KafkaError(f"could not create topic {name}: {exc.args[0].str()}") from exc
    _wait_visible(client, [t.topic for t in new], timeout_s)
    return created


def _wait_visible(client: AdminClient, names: list[str], timeout_s: float) -> None:
    """Until the new topics are in metadata and every partition's leader answers: a broker
    names a new partition's leader before it has made the log, and a read of its ends
    meanwhile fails with NOT_LEADER_FOR_PARTITION."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metadata = client.list_topics(timeout=timeout_s)
        topics = metadata.topics
        if all(n in topics and not topics[n].error for n in names) and not unserved_partitions(
            client, [topics[n] for n in names]
        ):
            return
        time.sleep(0.05)
    raise KafkaError(f"topics {names} were created but their partitions had no leader within {timeout_s:g} s")


def unserved_partitions(client: AdminClient, topics: Iterable[TopicMetadata]) -> list[str]:
    """The partitions of ``topics`` without a leader that answers ListOffsets, as topic[p]."""
    wanted = {}
    failing = []
    for topic in topics:
        for p in topic.partitions.values():
            if p.leader < 0 or p.error is not None:
                failing.append(f"{topic.topic}[{p.id}]")
            else:
                wanted[TopicPartition(topic.topic, p.id)] = OffsetSpec.latest()
    if failing or not wanted:
        return failing
    for tp, future in client.list_offsets(wanted, request_timeout=5).items():
        try:
            future.result()
        except KafkaException:
            failing.append(f"{tp.topic}[{tp.partition}]")
    return failing


def delete_topics(settings: KafkaSettings, names: list[str], timeout_s: float = 15.0) -> None:
    if not names:
        return
    client = admin(settings)
    for name, future in client.delete_topics(names, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].name() != "UNKNOWN_TOPIC_OR_PART":
                raise KafkaError(f"could not delete topic {name}: {exc.args[0].str()}") from exc
