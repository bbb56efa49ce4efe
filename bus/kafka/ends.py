"""The real ends of partitions on the embedded broker, whose high watermark is the last
record batch's base offset + 1 (docs/embedded-broker.md): read that last batch, and its last record + 1 is
the end. faust's table recovery reads a changelog up to the end it is given, so the
processors' transport asks here instead of trusting the broker (``bus.kafka.faust_transport``);
with that, what faust writes need not be single-record batches.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

import structlog
from confluent_kafka import Consumer, TopicPartition

from bus.kafka.config import KafkaSettings, consumer_config
from bus.kafka.consuming import take_batch

log = structlog.get_logger(__name__)

#: Once every partition delivered its first record of the last batch, the rest of that batch
#: came in the same fetch: a short last wait takes what is already queued.
REST_OF_BATCH_WAIT_S = 0.05


def ends_past_last_batch(
    settings: KafkaSettings, reported: Mapping[tuple[str, int], int], timeout_s: float = 10.0
) -> dict[tuple[str, int], int]:
    """``reported`` high watermarks, each moved to the end of the partition's last batch.
    A partition that cannot be read within ``timeout_s`` keeps its reported value."""
    ends = dict(reported)
    wanted = {tp: high for tp, high in reported.items() if high > 0}
    if not wanted:
        return ends
    consumer = Consumer(
        consumer_config(
            settings,
            group_id=f"bus-ends-{uuid.uuid4().hex[:8]}",  # assigned, never joined or committed
            client_id="bus-ends",
            read_committed=False,
            max_fetch_wait_ms=20,
        )
    )
    try:
        consumer.assign([TopicPartition(topic, p, high - 1) for (topic, p), high in wanted.items()])
        waiting = set(wanted)
        deadline = time.monotonic() + timeout_s
        wait_s = 0.2
        while time.monotonic() < deadline:
            msgs = take_batch(consumer, 1000, wait_s)
            for msg in msgs:
                if msg.error() is None:
                    tp = (str(msg.topic()), int(msg.partition() or 0))
                    ends[tp] = max(ends[tp], int(msg.offset()) + 1)
                    waiting.discard(tp)
            if waiting and not msgs:
                # a transaction's marker ends the partition: no record comes, the position passes it
                for position in consumer.position([TopicPartition(t, p) for t, p in waiting]):
                    if position.offset >= wanted[(position.topic, position.partition)]:
                        waiting.discard((position.topic, position.partition))
            if not waiting:
                if not msgs and wait_s == REST_OF_BATCH_WAIT_S:
                    break
                wait_s = REST_OF_BATCH_WAIT_S
    finally:
        consumer.close()
    if waiting:
        log.warning("kept the broker's end for partitions whose last batch could not be read",
                    partitions=sorted(f"{t}[{p}]" for t, p in waiting), timeout_s=timeout_s)
    return ends
