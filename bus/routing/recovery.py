"""Recovery by source position, for a broker that shows the records of aborted transactions
to read_committed readers (the embedded broker: :class:`bus.kafka.engine.Engine`).

Every output of the router carries ``bus_src`` (canonical topic, partition, offset). When a
canonical partition is assigned, and after an abort, the tail of each output partition is read
and the outputs already visible there for inputs not committed yet are noted, so that routing
those inputs again does not write them twice. On Apache Kafka aborted records are invisible and
none of this runs."""

from __future__ import annotations

import time

import structlog
from confluent_kafka import Consumer, TopicPartition

from bus.kafka.config import KafkaSettings, consumer_config
from bus.kafka.consuming import take_batch
from bus.routing.exceptions import RoutingError

log = structlog.get_logger("bus.routing.router")

#: The header each output carries: ``<canonical topic>:<partition>:<offset>`` of its input.
SRC_HEADER = "bus_src"


class VisibleOutputs:
    """The outputs already visible per output partition, by the source offset they came from."""

    def __init__(self, settings: KafkaSettings, page_size: int) -> None:
        self.settings = settings
        self.batch_size = page_size
        self.skip: dict[tuple[str, int], int] = {}  # (output topic, partition) -> source offset

    def already_written(self, output: str, partition: int, source_offset: int) -> bool:
        """True for an input whose output to ``output`` is already visible there."""
        return self.skip.get((output, partition), -1) >= source_offset

    def find(self, committed: dict[tuple[str, int], int], outputs: dict[str, list[str]]) -> None:
        """Find outputs of the assigned canonical partitions, at or after their committed
        offsets, that are already visible (aborted transactions' records, on the embedded
        broker), so that they are not written again.

        Output partition p of a route holds only the outputs of source partition p, in
        source order. Reading it backwards, page by page, until an output of an input
        before the committed offset (or the start of the log) therefore finds every
        visible output of uncommitted inputs, however many aborts left them there."""
        pending = {
            (output, p): (src_topic, c)
            for (src_topic, p), c in committed.items()
            for output in outputs.get(src_topic, [])
        }
        reader = Consumer(
            consumer_config(self.settings, group_id="bus-router-recovery", client_id="bus-router-recovery")
        )
        try:
            upper = {}
            for out in pending:
                low, high = reader.get_watermark_offsets(TopicPartition(*out), timeout=self.settings.connect_timeout_s)
                upper[out] = (low, high)
            while pending:
                pages = {out: (max(low, high - self.batch_size), high) for out, (low, high) in upper.items() if out in pending}
                pages = {out: page for out, page in pages.items() if page[1] > page[0]}
                for out in [o for o in pending if o not in pages]:
                    del pending[out]  # empty, or read back to the start of the log
                if not pages:
                    break
                found = self._read_pages(reader, pages)
                for out, sources in found.items():
                    src_topic, c = pending[out]
                    uncommitted = [o for o in sources if o >= c]
                    if uncommitted:
                        self.skip[out] = max(self.skip.get(out, -1), max(uncommitted))
                        log.info("router recovery: skipping visible outputs of uncommitted inputs",
                                 output=f"{out[0]}[{out[1]}]", up_to_source_offset=self.skip[out])
                    if len(uncommitted) < len(sources) or pages[out][0] == upper[out][0]:
                        del pending[out]  # reached a committed output, or the log start
                    else:
                        upper[out] = (upper[out][0], pages[out][0])  # all uncommitted: read further back
        finally:
            reader.close()

    def _read_pages(
        self, reader: Consumer, pages: dict[tuple[str, int], tuple[int, int]]
    ) -> dict[tuple[str, int], list[int]]:
        """The source offsets (``bus_src``) of the records in each output page."""
        found: dict[tuple[str, int], list[int]] = {out: [] for out in pages}
        reader.assign([TopicPartition(t, q, start) for (t, q), (start, _) in pages.items()])
        remaining = set(pages)
        deadline = time.monotonic() + self.settings.connect_timeout_s + 30
        while remaining and time.monotonic() < deadline:
            for msg in take_batch(reader, 1000, 0.2):
                out = (msg.topic(), msg.partition())
                if msg.error() or out not in remaining or msg.offset() >= pages[out][1]:
                    continue
                for key, value in msg.headers() or []:
                    if key == SRC_HEADER and value:
                        found[out].append(int(value.rsplit(b":", 1)[1]))
            for tp in reader.position([TopicPartition(t, q) for t, q in remaining]):
                if tp.offset >= pages[(tp.topic, tp.partition)][1]:
                    remaining.discard((tp.topic, tp.partition))
        reader.unassign()
        if remaining:
            raise RoutingError(
                f"router recovery could not read {len(remaining)} output partition(s) in time; restart the router"
            )
        return found

