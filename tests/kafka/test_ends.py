"""The real ends of partitions, read past the embedded broker's too-low high watermark."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from structlog.testing import capture_logs

from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.kafka.ends import ends_past_last_batch

# Necessary on the embedded broker, a no-op on Kafka: shown on both engines.
pytestmark = pytest.mark.embedded


def _reported(settings: KafkaSettings, topic: str, partitions: int) -> dict[tuple[str, int], int]:
    consumer = Consumer(consumer_config(settings, group_id="test-ends", client_id="test-ends"))
    try:
        return {(topic, p): consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(partitions)}
    finally:
        consumer.close()


def test_each_partition_ends_after_its_last_batch(kafka_settings: KafkaSettings, topic_factory: Callable[..., str]) -> None:
    """Partition 0: 300 records in multi-record batches; 1: 5 single-record batches; 2: empty."""
    topic = topic_factory("ends", partitions=3)
    batched = kafka_settings.with_exact_watermarks(False)
    producer = Producer(producer_config(batched, client_id="test-ends") | {"linger.ms": 50})
    for n in range(300):
        producer.produce(topic, value=b"%d" % n, partition=0)
    assert producer.flush(10) == 0
    single = Producer(producer_config(kafka_settings.with_exact_watermarks(True), client_id="test-ends-1"))
    for n in range(5):
        single.produce(topic, value=b"%d" % n, partition=1)
        assert single.flush(10) == 0
    reported = _reported(kafka_settings, topic, 3)
    with capture_logs() as logs:
        ends = ends_past_last_batch(kafka_settings, reported)
    assert ends == {(topic, 0): 300, (topic, 1): 5, (topic, 2): 0}
    assert not logs, logs
    if kafka_settings.embedded:
        assert reported[(topic, 0)] < 300, "the broker reported the real end: nothing was read past it"
    else:
        assert reported == ends  # Kafka reports the end; reading it again changes nothing


def test_a_transaction_marker_ends_a_partition(kafka_settings: KafkaSettings, topic_factory: Callable[..., str]) -> None:
    """A transactional topic's last batch is the marker, which no reader receives: the
    position passing it ends the partition (not the timeout)."""
    topic = topic_factory("ends-tx")
    producer = Producer(producer_config(kafka_settings.with_exact_watermarks(False), client_id="test-ends-tx",
                                        transactional_id=f"{topic}-tx") | {"linger.ms": 50})
    producer.init_transactions(30)
    producer.begin_transaction()
    for n in range(10):
        producer.produce(topic, value=b"%d" % n, partition=0)
    producer.commit_transaction(30)
    # Kafka writes the markers after the commit returns: a read_committed reader's end (the
    # last stable offset) reaches them a moment later.
    deadline = time.monotonic() + 15
    while (reported := _reported(kafka_settings, topic, 1)) != {(topic, 0): 11} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reported == {(topic, 0): 11}  # ten records and the marker
    with capture_logs() as logs:
        assert ends_past_last_batch(kafka_settings, reported, timeout_s=30) == {(topic, 0): 11}
    assert not logs, logs


def test_a_partition_that_cannot_be_read_keeps_its_reported_end(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str]
) -> None:
    """An end past what the partition holds (nothing to read at end - 1) is kept, after the
    timeout, instead of being lowered or waited on for good."""
    topic = topic_factory("ends-empty")
    with capture_logs() as logs:
        assert ends_past_last_batch(kafka_settings, {(topic, 0): 7}, timeout_s=1.0) == {(topic, 0): 7}
    assert [(e["event"], e["partitions"]) for e in logs] == [
        ("kept the broker's end for partitions whose last batch could not be read", [f"{topic}[0]"])]
