"""The embedded broker: starts on a free port, serves, stops, reports what went wrong."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from bus.kafka.admin import TopicSpec, ensure_topics, wait_for_broker
from bus.kafka.broker import EmbeddedBroker, port_open
from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.kafka.exceptions import BrokerUnreachable, EmbeddedBrokerError

# The embedded broker's own tests: CI's embedded run takes them too.
pytestmark = [pytest.mark.embedded, pytest.mark.integration]


def test_start_serve_and_stop_on_a_free_port() -> None:
    broker = EmbeddedBroker().start()
    try:
        settings = KafkaSettings().with_broker(broker.bootstrap_servers, embedded=True)
        ensure_topics(settings, [TopicSpec("probe", 2)])
        producer = Producer(producer_config(settings, client_id="probe"))
        for i in range(3):
            producer.produce("probe", key=b"k", value=str(i).encode())
        assert producer.flush(10) == 0
        consumer = Consumer(consumer_config(settings, group_id="probe", client_id="probe"))
        partitions = [TopicPartition("probe", p) for p in range(2)]
        ends = [consumer.get_watermark_offsets(tp, timeout=5)[1] for tp in partitions]
        consumer.close()
        # One record per batch on the embedded profile: the high watermark counts every record.
        assert sum(ends) == 3
    finally:
        broker.stop()
    assert not port_open(broker.host, broker.port)


def test_a_taken_port_is_reported_not_hung() -> None:
    with EmbeddedBroker() as first:
        with pytest.raises(EmbeddedBrokerError, match=first.bootstrap_servers):
            EmbeddedBroker(first.port).start()


def test_unreachable_broker_names_the_address_within_the_bounded_wait() -> None:
    settings = KafkaSettings(connect_timeout_s=1.5).with_broker("127.0.0.1:1", embedded=False)
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable) as info:
        wait_for_broker(settings)
    assert time.monotonic() - started < 10
    assert "127.0.0.1:1" in str(info.value)
    assert "BUS_BOOTSTRAP_SERVERS" in str(info.value)
