"""The real ends of partitions, read past the embedded broker's too-low high watermark."""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.kafka.ends import ends_past_last_batch


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
    ends = ends_past_last_batch(kafka_settings, reported)
    assert ends == {(topic, 0): 300, (topic, 1): 5, (topic, 2): 0}
    if kafka_settings.embedded:
        assert reported[(topic, 0)] < 300, "the broker reported the real end: nothing was read past it"
    else:
        assert reported == ends  # Kafka reports the end; reading it again changes nothing


def test_a_partition_that_cannot_be_read_keeps_its_reported_end(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str]
) -> None:
    """An end past what the partition holds (nothing to read at end - 1) is kept, after the
    timeout, instead of being lowered or waited on for good."""
    topic = topic_factory("ends-empty")
    assert ends_past_last_batch(kafka_settings, {(topic, 0): 7}, timeout_s=1.0) == {(topic, 0): 7}
