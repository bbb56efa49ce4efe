"""faust's aiokafka transport with the worker consumer's fetch wait chosen by the bus.

faust-streaming builds its worker consumer with ``fetch_max_wait_ms=1500`` written into the
driver, with no setting to change it. On Kafka that only bounds an idle poll: the broker
answers as soon as data is there. The embedded broker holds a fetch for half of a long wait
even when data is there (and for all of a short one): measured with aiokafka on it, a record
every 50 ms reached the consumer after a median 390 ms (p99 746 ms) at 1500, 19 ms (p99 51 ms)
at 100. The processors read every alarm and status, so that wait was theirs on every record.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as driver


def transport_with_fetch_wait(fetch_max_wait_ms: int) -> type[driver.Transport]:
    """faust's aiokafka ``Transport`` whose worker consumer waits at most
    ``fetch_max_wait_ms`` for a fetch; everything else is the driver's own."""

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # The driver passes 1500 to the constructor, which keeps it here until start()
            # builds the fetcher from it: the one place to change it without copying the driver.
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            return consumer

    class WaitingConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        Consumer = WaitingConsumer

    return Transport
