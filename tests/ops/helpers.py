"""Producing with chosen timestamps and committing chosen offsets, for lag tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, IsolationLevel, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from bus.kafka.admin import admin
from bus.kafka.config import KafkaSettings, consumer_config, producer_config


def past_now(hours: float = 1.0) -> float:
    """A fixed "now" for the tests' windows: whole epoch seconds ``hours`` before the wall
    clock. In the past so that records stamped around it are accepted: Apache Kafka refuses
    timestamps more than ``log.message.timestamp.after.max.ms`` (1 h by default) ahead of its
    clock (INVALID_TIMESTAMP); recent enough that retention (7 days) keeps them."""
    return float(int(time.time() - hours * 3600))


def send(producer: Producer, topic: str, value: bytes, *, partition: int, timestamp: int) -> None:
    """One record, flushed, and its delivery checked: ``flush()`` only counts what is still
    queued, so a record the broker refused would otherwise go unnoticed."""
    failed: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(err)

    producer.produce(topic, value=value, partition=partition, timestamp=timestamp, on_delivery=delivered)
    assert producer.flush(10) == 0, f"a record to {topic}[{partition}] was not delivered within 10 s"
    assert not failed, f"the broker refused a record to {topic}[{partition}] (timestamp {timestamp}): {failed[0]}"


def produce(
    settings: KafkaSettings, topic: str, partition: int, count: int, *, first_ms: int, step_ms: int = 1000
) -> list[int]:
    """``count`` records to one partition, record i stamped ``first_ms + i * step_ms``.
    One flush per record: on the embedded broker the high watermark is right only for
    single-record batches (docs/embedded-broker.md); producer_config's embedded profile does the rest."""
    producer = Producer(producer_config(settings, client_id="lag-test-producer"))
    stamps = [first_ms + i * step_ms for i in range(count)]
    for i, stamp in enumerate(stamps):
        send(producer, topic, f"record {i}".encode(), partition=partition, timestamp=stamp)
    return stamps


#: Commit errors Kafka calls retriable that librdkafka hands back to an explicit commit
#: instead of retrying: the group's coordinator moved, or is still loading its
#: __consumer_offsets partition (seen on a fresh node under load).
_COORDINATOR_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


def commit(
    settings: KafkaSettings, group: str, topic: str, partition: int, offset: int, timeout_s: float = 20.0
) -> None:
    """Commit ``offset`` for ``group`` as a consumer that joins nothing (assign-based),
    retrying while the group's coordinator is not ready, until ``timeout_s``."""
    consumer = Consumer(consumer_config(settings, group_id=group, client_id="lag-test-committer"))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                consumer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
                return
            except KafkaException as exc:
                if exc.args[0].code() not in _COORDINATOR_NOT_READY or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)  # librdkafka looks the coordinator up again meanwhile
    finally:
        consumer.close()


def last_stable_offset(settings: KafkaSettings, topic: str, partition: int) -> int:
    """The end offset a read_committed reader sees (ListOffsets latest, read_committed)."""
    client = admin(settings)  # keep a reference: a collected client never completes its futures
    request = {TopicPartition(topic, partition): OffsetSpec.latest()}
    futures = client.list_offsets(request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=10)
    return next(iter(futures.values())).result(timeout=10).offset


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")
