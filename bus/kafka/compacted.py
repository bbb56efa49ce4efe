"""Small key -> JSON document stores on compacted Kafka topics (connector offsets and
status), and a producer whose ``send`` returns once the broker acknowledged.

A store is read by assigning every partition from the beginning up to the end offsets
taken when the read starts (no consumer group is joined, nothing is committed); the last
value of each key wins and a tombstone removes the key, as compaction itself would.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.kafka.exceptions import CompactedReadError, DeliveryFailed

Headers = list[tuple[str, bytes]]


class AckedProducer:
    """A producer whose ``send`` waits for the broker's acknowledgement. Thread-safe."""

    def __init__(self, settings: KafkaSettings, *, client_id: str, delivery_timeout_s: float = 30.0) -> None:
        self.settings = settings
        self._timeout_s = delivery_timeout_s
        self._producer = Producer(producer_config(settings, client_id=client_id, delivery_timeout_s=delivery_timeout_s))

    def send(
        self, topic: str, *, key: bytes | None, value: bytes | None, headers: Headers | None = None
    ) -> tuple[int, int]:
        """``(partition, offset)`` of the acknowledged record, or DeliveryFailed."""
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def on_delivery(err: RdKafkaError | None, msg: Message) -> None:
            outcome["err"], outcome["msg"] = err, msg
            done.set()

        while True:
            try:
                self._producer.produce(topic, key=key, value=value, headers=headers or [], on_delivery=on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)
        deadline = time.monotonic() + self._timeout_s + 5
        while not done.is_set():
            if time.monotonic() > deadline:
                raise DeliveryFailed(f"the broker at {self.settings.bootstrap_servers} did not acknowledge a record "
                                     f"on {topic} within {self._timeout_s + 5:g} s")
            self._producer.poll(0.05)
        if outcome["err"] is not None:
            raise DeliveryFailed(
                f"the broker at {self.settings.bootstrap_servers} refused a record on {topic}: {outcome['err'].str()}"
            )
        msg = outcome["msg"]
        return msg.partition(), msg.offset()

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.flush(timeout_s)


def read_to_end(settings: KafkaSettings, topic: str, *, timeout_s: float | None = None) -> Iterator[Message]:
    """Every record of ``topic`` from the beginning to the end offsets of now."""
    timeout = timeout_s or settings.connect_timeout_s + 20
    consumer = Consumer(consumer_config(settings, group_id="bus-connector-store-reader", client_id="bus-connector-store"))
    try:
        metadata = consumer.list_topics(topic, timeout=settings.connect_timeout_s)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            return
        ends: dict[int, int] = {}
        for p in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=settings.connect_timeout_s)
            if high > low:
                ends[p] = high
        if not ends:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout
        while ends:
            if time.monotonic() > deadline:
                raise CompactedReadError(f"could not read {topic} to its end within {timeout:g} s")
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            yield msg
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
    except KafkaException as exc:
        raise CompactedReadError(f"could not read {topic}: {exc.args[0].str()}") from exc
    finally:
        consumer.close()


class CompactedTopic:
    """A key -> JSON object store on one compacted topic."""

    def __init__(self, settings: KafkaSettings, name: str, *, producer: AckedProducer | None = None) -> None:
        self.settings = settings
        self.name = name
        self._producer = producer
        self._own_producer = producer is None

    def ensure(self) -> "CompactedTopic":
        ensure_topics(self.settings, [TopicSpec.compacted(self.name)])
        return self

    @property
    def producer(self) -> AckedProducer:
        if self._producer is None:
            self._producer = AckedProducer(self.settings, client_id=f"bus-store-{self.name}")
        return self._producer

    def put(self, key: str, document: dict[str, Any]) -> None:
        value = json.dumps(document, ensure_ascii=False, sort_keys=True).encode("utf-8")
        self.producer.send(self.name, key=key.encode("utf-8"), value=value)

    def delete(self, key: str) -> None:
        self.producer.send(self.name, key=key.encode("utf-8"), value=None)

    def read_all(self) -> dict[str, dict[str, Any]]:
        """The latest document of every key."""
        latest: dict[str, dict[str, Any]] = {}
        for msg in read_to_end(self.settings, self.name):
            key = (msg.key() or b"").decode("utf-8", "replace")
            value = msg.value()
            if value is None:
                latest.pop(key, None)
                continue
            try:
                document = json.loads(value)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue  # not ours: a store never fails on a foreign record
            if isinstance(document, dict):
                latest[key] = document
        return latest

    def get(self, key: str) -> dict[str, Any] | None:
        return self.read_all().get(key)

    def close(self) -> None:
        if self._own_producer and self._producer is not None:
            self._producer.close()
