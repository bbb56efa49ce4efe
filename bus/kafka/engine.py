"""What the broker the bus talks to gets wrong, in one object. Code that must work around a
broker asks this object, never the profile's name: Apache Kafka gets nothing here wrong; the
embedded broker (tansu 0.6.0, memory only) gets each of these wrong, each shown by a test run
on both engines (tests/kafka/test_engines.py) and described in docs/embedded-broker.md. The
client settings that tune around its fetch and batch costs stay in :mod:`bus.kafka.config`."""

from __future__ import annotations

from dataclasses import dataclass

from bus.kafka.config import KafkaSettings


@dataclass(frozen=True)
class Engine:
    name: str
    #: A read_committed reader still gets the records of aborted transactions: a router that
    #: routes a batch again after an abort must not write what the aborted attempt left visible.
    shows_aborted_records: bool
    #: ListOffsets by timestamp answers 0 for every time: a start point in time cannot be sought.
    answers_offsets_for_times: bool
    #: A transaction that carries only consumer offsets (no record) is kept once, then ignored:
    #: a batch without outputs commits its position from the consumer instead.
    keeps_offsets_only_transactions: bool


APACHE_KAFKA = Engine("Apache Kafka", shows_aborted_records=False, answers_offsets_for_times=True,
                      keeps_offsets_only_transactions=True)
EMBEDDED = Engine("embedded broker", shows_aborted_records=True, answers_offsets_for_times=False,
                  keeps_offsets_only_transactions=False)


def engine_of(settings: KafkaSettings) -> Engine:
    """The engine the settings' profile names (``embedded``, or a Kafka cluster)."""
    return EMBEDDED if settings.embedded else APACHE_KAFKA
