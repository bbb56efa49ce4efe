"""Producing with chosen timestamps and committing chosen offsets, for lag tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition

from bus.kafka.config import KafkaSettings, consumer_config, producer_config


def produce(
    settings: KafkaSettings, topic: str, partition: int, count: int, *, first_ms: int, step_ms: int = 1000
) -> list[int]:
    """``count`` records to one partition, record i stamped ``first_ms + i * step_ms``.
    One flush per record: on the embedded broker the high watermark is right only for
    single-record batches (BROKER.md); producer_config's embedded profile does the rest."""
    producer = Producer(producer_config(settings, client_id="lag-test-producer"))
    stamps = [first_ms + i * step_ms for i in range(count)]
    for i, stamp in enumerate(stamps):
        producer.produce(topic, value=f"record {i}".encode(), partition=partition, timestamp=stamp)
        assert producer.flush(10) == 0
    return stamps


def commit(settings: KafkaSettings, group: str, topic: str, partition: int, offset: int) -> None:
    """Commit ``offset`` for ``group`` as a consumer that joins nothing (assign-based)."""
    consumer = Consumer(consumer_config(settings, group_id=group, client_id="lag-test-committer"))
    try:
        consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
    finally:
        consumer.close()


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")
