"""`bus tail`: decoded records of one or more topics as JSON lines.

Reads by partition assignment, not by a consumer group: nothing is committed and a
tail never joins (or disturbs) a group that does real work.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka import KafkaError as ClientError

from bus.consume.decoder import Decoder
from bus.kafka.admin import wait_for_broker
from bus.kafka.config import KafkaSettings, consumer_config
from bus.kafka.exceptions import KafkaError
from bus.registry.client import registry_client
from bus.schemas.exceptions import SchemaError


@dataclass(frozen=True)
class TailedRecord:
    topic: str
    partition: int
    offset: int
    key: str | None
    headers: dict[str, str]
    value: Any  # decoded JSON-ready record, or None for a tombstone
    error: str | None = None  # set when the value could not be decoded

    def as_json(self, with_headers: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"topic": self.topic, "partition": self.partition, "offset": self.offset, "key": self.key}
        if with_headers:
            out["headers"] = self.headers
        if self.error:
            out["error"] = self.error
        else:
            out["value"] = self.value
        return out


def tail(
    settings: KafkaSettings,
    topics: list[str],
    *,
    from_beginning: bool = True,
    max_records: int | None = None,
    idle_timeout_s: float | None = None,
    exit_at_end: bool = False,
    group_id: str = "bus-tail",
) -> Iterator[TailedRecord]:
    """Yield decoded records; stop after ``max_records``, after ``idle_timeout_s`` without
    one, or (``exit_at_end``) once every partition is read up to its end at the start
    (and the rest of a batch that straddles it). ``group_id`` is never joined nor committed
    to, but librdkafka looks up its coordinator: under ACLs it must be one the principal may use."""
    admin = wait_for_broker(settings)
    metadata = admin.list_topics(timeout=settings.connect_timeout_s)
    missing = [t for t in topics if t not in metadata.topics]
    if missing and settings.sasl_username:  # a topic the principal may not describe is not listed
        raise KafkaError(
            f"topic(s) {', '.join(missing)} on {settings.bootstrap_servers} do not exist or User:{settings.sasl_username} "
            "may not read them; a department reads its own subscriptions (`bus tail --department NAME`), and "
            "`bus apply` grants what topology.yaml entitles it to"
        )
    if missing:
        raise KafkaError(
            f"topic(s) {', '.join(missing)} do not exist yet on {settings.bootstrap_servers}; "
            "publish to the event type first, or run `bus up` to create the city's topics"
        )
    decoder = Decoder(registry_client(settings))
    consumer = Consumer(consumer_config(settings, group_id=group_id, client_id="bus-tail", max_fetch_wait_ms=50))
    # Explicit start offsets from the watermarks: cheaper than letting the fetcher resolve
    # OFFSET_BEGINNING/END partition by partition, and the ends serve exit_at_end.
    partitions = [TopicPartition(t, p) for t in topics for p in sorted(metadata.topics[t].partitions)]
    marks = _watermarks(consumer, partitions, settings.connect_timeout_s)
    consumer.assign(
        [TopicPartition(tp.topic, tp.partition, marks[(tp.topic, tp.partition)][0 if from_beginning else 1]) for tp in partitions]
    )
    ends = {k: high for k, (_, high) in marks.items()} if exit_at_end else {}
    count = 0
    last = time.monotonic()
    try:
        while max_records is None or count < max_records:
            at_end = exit_at_end and _reached(consumer, ends)
            # At the ends, only what was already fetched: on the embedded broker a high
            # watermark is the last batch's base offset + 1, and the rest of that batch came
            # in the same fetch (docs/embedded-broker.md; departments' records are batched there).
            msg = consumer.poll(AT_END_POLL_S if at_end else 0.2)
            if at_end and msg is None:
                return
            if msg is None:
                if idle_timeout_s is not None and time.monotonic() - last > idle_timeout_s:
                    return
                continue
            if msg.error():
                if msg.error().code() == msg.error()._PARTITION_EOF:
                    continue
                raise KafkaError(f"reading {msg.topic()}: {msg.error().str()}")
            last = time.monotonic()
            count += 1
            yield _record(decoder, msg)
    finally:
        consumer.close()


#: The last wait, once every partition's position reached its end: records of the batch
#: that straddles the end are already in the local queue.
AT_END_POLL_S = 0.05


#: A partition not served yet (just made, a leader moving): asked again.
_NOT_SERVED_YET = {ClientError.NOT_LEADER_FOR_PARTITION, ClientError.LEADER_NOT_AVAILABLE,
                   ClientError.UNKNOWN_TOPIC_OR_PART}


def _watermarks(
    consumer: Consumer, partitions: list[TopicPartition], timeout: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """Each partition's (low, high) watermarks. A retriable error (a new partition whose leader
    does not serve it yet, a leader moving) is asked again until ``timeout``."""
    deadline = time.monotonic() + timeout
    out: dict[tuple[str, int], tuple[int, int]] = {}
    for tp in partitions:
        while True:
            try:
                out[(tp.topic, tp.partition)] = consumer.get_watermark_offsets(tp, timeout=timeout)
                break
            except KafkaException as exc:
                # librdkafka does not flag these retriable on a watermark query
                if exc.args[0].code() not in _NOT_SERVED_YET or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    return out


def _reached(consumer: Consumer, ends: dict[tuple[str, int], int]) -> bool:
    # The position, not the last record's offset: transaction markers occupy offsets too.
    positions = consumer.position([TopicPartition(t, p) for t, p in ends])
    for tp in positions:
        end = ends[(tp.topic, tp.partition)]
        if end > 0 and (tp.offset < 0 or tp.offset < end):
            return False
    return True


def _record(decoder: Decoder, msg: Any) -> TailedRecord:
    headers = {k: v.decode("utf-8", "replace") if v is not None else "" for k, v in (msg.headers() or [])}
    key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
    value, error = None, None
    if msg.value() is not None:
        try:
            value = decoder.decode_json(msg.value())
        except SchemaError as exc:
            error = str(exc)
    return TailedRecord(msg.topic(), msg.partition(), msg.offset(), key, headers, value, error)
