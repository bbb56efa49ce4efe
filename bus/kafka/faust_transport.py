"""faust's aiokafka transport for the embedded broker: the worker consumer's fetch wait chosen
by the bus, and changelog ends read past the broker's too-low high watermark.

faust-streaming builds its worker consumer with ``fetch_max_wait_ms=1500`` written into the
driver, with no setting to change it. On Kafka that only bounds an idle poll: the broker
answers as soon as data is there. The embedded broker holds a fetch for half of a long wait
even when data is there (and for all of a short one): measured with aiokafka on it, a record
every 50 ms reached the consumer after a median 390 ms (p99 746 ms) at 1500, 19 ms (p99 51 ms)
at 100. The processors read every alarm and status, so that wait was theirs on every record.

faust's table recovery reads each changelog partition up to its high watermark, which the
embedded broker reports as the last batch's base offset + 1: with batched changelogs a
restarted worker came back with 991 of 1,000 counts (BROKER.md). The worker consumer here
answers with the real ends (:func:`bus.kafka.ends.ends_past_last_batch`), so faust's producer
may batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as driver
from faust.types import TP

from bus.kafka.config import KafkaSettings
from bus.kafka.ends import ends_past_last_batch


def embedded_transport(settings: KafkaSettings, fetch_max_wait_ms: int) -> type[driver.Transport]:
    """faust's aiokafka ``Transport`` whose worker consumer waits at most
    ``fetch_max_wait_ms`` for a fetch and reports the real ends of partitions to faust's
    recovery; everything else is the driver's own."""

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # The driver passes 1500 to the constructor, which keeps it here until start()
            # builds the fetcher from it: the one place to change it without copying the driver.
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

        async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
            reported = await super()._highwaters(partitions)
            if self.consumer.in_transaction:
                return reported  # last stable offsets: a transaction's marker ends it exactly
            known = {(tp.topic, tp.partition): v for tp, v in reported.items() if v is not None}
            # a blocking read: off this thread's event loop, which also beats the group's heartbeat
            ends = await asyncio.get_running_loop().run_in_executor(None, ends_past_last_batch, settings, known)
            return {tp: ends.get((tp.topic, tp.partition), v) for tp, v in reported.items()}

    class EmbeddedConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        Consumer = EmbeddedConsumer

    return Transport
