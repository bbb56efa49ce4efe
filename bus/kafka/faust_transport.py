"""faust's aiokafka transport for the processors: no record skipped when a worker resumes after
a restart or a rebalance and, on the embedded broker, the worker consumer's fetch wait chosen
by the bus and changelog ends read past the broker's too-low high watermark.

A restarted or rebalanced faust worker could skip records (:class:`FlowSafeConsumer`):

- faust hands the fetching thread its own set of active partitions and changes that set in
  place while the fetch is awaited (a pause at a rebalance, the end of a table recovery).
  aiokafka reads an emptied set as *every* partition: it returned their records, moving their
  positions past them, and faust dropped those of partitions it had not asked for. Measured in
  the fault test (a processors worker killed 7 times while alarms flow): its successors skipped
  alarms in 4 runs out of 4, up to 13 consecutive offsets of a partition; none in 9 runs with
  the set snapshotted.
- After a recovery faust resumes the stream partitions *before* it seeks them to their
  committed offsets, and its flow control's resume, after the seek, clears the streams'
  queues: what was fetched in between came from where the last assignment stopped, and what
  was queued was cleared while the position had passed it. Found by reading faust's order;
  not observed apart from the first. Here stream partitions are fetched only after the seek.

faust-streaming builds its worker consumer with ``fetch_max_wait_ms=1500`` written into the
driver, with no setting to change it. On Kafka that only bounds an idle poll: the broker
answers as soon as data is there. The embedded broker holds a fetch for half of a long wait
even when data is there (and for all of a short one): measured with aiokafka on it, a record
every 50 ms reached the consumer after a median 390 ms (p99 746 ms) at 1500, 19 ms (p99 51 ms)
at 100. The processors read every alarm and status, so that wait was theirs on every record.

faust's table recovery reads each changelog partition up to its high watermark, which the
embedded broker reports as the last batch's base offset + 1: with batched changelogs a
restarted worker came back with 991 of 1,000 counts (docs/embedded-broker.md). The worker consumer here
answers with the real ends (:func:`bus.kafka.ends.ends_past_last_batch`), so faust's producer
may batch.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

import aiokafka
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from faust.types.auth import CredentialsT

from bus.kafka.config import KafkaSettings
from bus.kafka.ends import ends_past_last_batch
from bus.kafka.exceptions import KafkaError

#: The versions these patches were written and tested for. They override private methods of
#: faust's aiokafka driver (``Consumer._getmany``, ``resume_flow``, ``perform_seek``,
#: ``_new_consumer_thread``; ``AIOKafkaConsumerThread._create_worker_consumer``,
#: ``_highwaters``) and set aiokafka's ``AIOKafkaConsumer._fetch_max_wait_ms``:
#: tests/kafka/test_faust_transport.py fails on any other version, so that they are read again
#: before an upgrade.
WRITTEN_FOR = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}
#: The private methods overridden here, by class.
OVERRIDDEN = {
    driver.Consumer: ("_getmany", "perform_seek", "resume_flow", "_new_consumer_thread", "on_partitions_assigned",
                      "resume_partitions", "pause_partitions"),
    driver.AIOKafkaConsumerThread: ("_create_worker_consumer", "_highwaters"),
}


class FlowSafeConsumer(driver.Consumer):
    """faust's consumer, except that after an assignment the stream partitions are fetched
    only once they were sought to their committed offsets and the flow resumed (faust calls
    :meth:`resume_flow` right after its flow control's resume, which clears the queues):
    nothing is fetched for them before, when it would be put in a queue about to be cleared
    or read from where the previous assignment had left off."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: set[TP] = set()  # stream partitions faust resumed, waiting for the seek and the flow
        self._sought = False  # since the last assignment

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._sought = False
        self._held.clear()
        await super().on_partitions_assigned(assigned, generation_id)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        if not self._sought:
            streams = {tp for tp in tps if not self._is_changelog_tp(tp)}
            self._held |= streams
            tps -= streams
        super().resume_partitions(tps)

    def pause_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        self._held -= tps
        super().pause_partitions(tps)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        # faust hands its own set to the fetching thread and changes it in place meanwhile; an
        # emptied set makes aiokafka return the records of every partition, which faust drops
        # (not active) after aiokafka moved their positions past them
        frozen = None if active_partitions is None else frozenset(active_partitions)
        if frozen is not None and not frozen:
            return {}  # to aiokafka, no partition means every partition
        return await super()._getmany(frozen, timeout)  # type: ignore[arg-type]

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self._sought = True

    def resume_flow(self) -> None:
        super().resume_flow()
        if self._sought and self._held:
            held, self._held = self._held, set()
            super().resume_partitions(held & self.assignment())


def processors_transport(settings: KafkaSettings, fetch_max_wait_ms: int | None) -> type[driver.Transport]:
    """faust's aiokafka ``Transport`` with :class:`FlowSafeConsumer`; with ``fetch_max_wait_ms``
    (the embedded profile), its worker consumer also waits at most that long for a fetch and
    reports the real ends of partitions to faust's recovery. Everything else is the driver's own."""
    if fetch_max_wait_ms is None:

        class Transport(driver.Transport):
            Consumer = FlowSafeConsumer

        return Transport
    wait_ms = fetch_max_wait_ms

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # The driver passes 1500 to the constructor, which keeps it here until start()
            # builds the fetcher from it: the one place to change it without copying the driver.
            consumer._fetch_max_wait_ms = wait_ms
            return consumer

        async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
            reported = await super()._highwaters(partitions)
            if self.consumer.in_transaction:
                return reported  # last stable offsets: a transaction's marker ends it exactly
            known = {(tp.topic, tp.partition): v for tp, v in reported.items() if v is not None}
            # a blocking read: off this thread's event loop, which also beats the group's heartbeat
            ends = await asyncio.get_running_loop().run_in_executor(None, ends_past_last_batch, settings, known)
            return {tp: ends.get((tp.topic, tp.partition), v) for tp, v in reported.items()}

    class EmbeddedConsumer(FlowSafeConsumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class EmbeddedTransport(driver.Transport):
        Consumer = EmbeddedConsumer

    return EmbeddedTransport


def faust_credentials(settings: KafkaSettings) -> CredentialsT | None:
    """The processors' credentials for faust's aiokafka clients, from the same settings as
    every other client of the bus (SASL over plaintext or TLS, or TLS alone); None on plaintext."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=settings.ssl_ca_location) if protocol.endswith("SSL") else None
    if protocol == "SSL":
        return SSLCredentials(context)
    if settings.sasl_mechanism is None or settings.sasl_username is None or settings.sasl_password is None:
        raise KafkaError(f"BUS_SECURITY_PROTOCOL={protocol} needs BUS_SASL_MECHANISM, BUS_SASL_USERNAME and "
                         "BUS_SASL_PASSWORD")
    return SASLCredentials(username=settings.sasl_username, password=settings.sasl_password.get_secret_value(),
                           mechanism=settings.sasl_mechanism, ssl_context=context)
