"""Reading in batches without waiting for a full batch."""

from __future__ import annotations

from confluent_kafka import Consumer, Message


def take_batch(consumer: Consumer, max_records: int, wait_s: float) -> list[Message]:
    """Wait up to ``wait_s`` for one record, then take whatever else is already fetched, up
    to ``max_records``: a quiet topic is served at once, a busy one in full batches.
    (``consume(n, timeout)`` alone waits out its timeout unless n records arrive.)
    Messages carrying errors are returned too; the caller decides what they mean."""
    first = consumer.poll(wait_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_records - 1, 0)] if max_records > 1 else [first]
