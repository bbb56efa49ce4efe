"""Lag and Burrow status against the real broker: consumers made to fall behind, stall,
stop and rewind. Commits are real; time is driven by passing poll and commit times."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from bus.kafka.admin import TopicSpec, delete_topics, ensure_topics
from bus.kafka.config import PROBE_FETCH, KafkaSettings, consumer_config, producer_config
from bus.kafka.exceptions import BrokerUnreachable
from bus.ops.burrow import Status
from bus.ops.exceptions import UnknownGroup
from bus.ops.lag import Directory, GroupSelection, LagMonitor, LagOptions, bus_groups, measure
from bus.ops.lag_report import render_table
from bus.ops.offsets import OffsetReader, Stretch
from bus.topology.models import Topology
from tests.fixtures.city import write_city_topology
from tests.ops.helpers import commit, last_stable_offset, past_now, produce, send, wait_until
from bus.topology.names import connector_group, router_group
from bus.topology.validate import load_topology

T0 = past_now()  # a fixed "now" for the windows (epoch seconds, an hour ago: see past_now)

pytestmark = [pytest.mark.integration, pytest.mark.embedded]  # lag must read the same on both engines


def monitor_for(settings: KafkaSettings, *groups: str, **kwargs) -> LagMonitor:
    return LagMonitor(OffsetReader(settings), GroupSelection(groups), **kwargs)


def test_committed_end_lag_and_seconds_from_record_timestamps(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    topic, group = topic_factory("alarms", partitions=2), group_factory("sink")
    first_ms = int(T0 * 1000) - 100_000  # record i produced at T0 - 100 s + i s
    produce(kafka_settings, topic, 0, 10, first_ms=first_ms)
    produce(kafka_settings, topic, 1, 4, first_ms=first_ms)
    commit(kafka_settings, group, topic, 0, 3)
    commit(kafka_settings, group, topic, 1, 4)

    report = monitor_for(kafka_settings, group, options=LagOptions(time_lag="record")).poll(now=T0)

    behind, caught_up = report.group(group).partitions
    assert (behind.partition, behind.committed, behind.end, behind.lag) == (0, 3, 10, 7)
    assert behind.lag_seconds == pytest.approx(97.0)  # now - timestamp of record 3
    assert (caught_up.committed, caught_up.end, caught_up.lag, caught_up.lag_seconds) == (4, 4, 0, 0.0)
    assert report.group(group).totallag == 7
    assert report.group(group).maxlag == behind


def test_the_probe_reads_records_larger_than_its_fetch_size(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str]
) -> None:
    """The probe asks for little per partition (PROBE_FETCH); records bigger than that, behind
    a backlog of big ones, are still read (the broker returns the first batch whole)."""
    topic = topic_factory("big", partitions=1)
    first_ms = int(T0 * 1000) - 60_000
    producer = Producer(producer_config(kafka_settings, client_id="lag-test-producer"))
    for i in range(6):
        send(producer, topic, bytes(200_000), partition=0, timestamp=first_ms + i * 1000)
    assert PROBE_FETCH["max.partition.fetch.bytes"] < 200_000

    read = OffsetReader(kafka_settings).read_stretches({(topic, 0): [(2, 6)]}, {(topic, 0): 6}, timeout_s=20)

    assert read == {(topic, 0): [Stretch(2, 6, tuple((i, (first_ms + i * 1000) / 1000.0) for i in range(2, 6)))]}


def test_falling_behind_is_warn_and_catching_up_is_ok(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    topic, group = topic_factory("cases"), group_factory("slow")
    monitor = monitor_for(kafka_settings, group)
    stamp = int(T0 * 1000)
    for step, (produced, committed) in enumerate([(10, 2), (5, 4), (5, 6)]):
        produce(kafka_settings, topic, 0, produced, first_ms=stamp)
        commit(kafka_settings, group, topic, 0, committed)
        report = monitor.poll(now=T0 + 10 * step)
    slow = report.group(group).partitions[0]
    assert (slow.committed, slow.end, slow.lag) == (6, 20, 14)  # lag 8, 11, 14: never decreasing
    assert slow.status == Status.WARN and report.group(group).status == Status.WARN
    # Time lag from the offset-time table: ends 10, 15, 20 seen at T0, T0+10, T0+20;
    # offset 6 lies before the table, extrapolated along (10, T0)-(20, T0+20): T0 - 8.
    assert slow.lag_seconds == pytest.approx(28.0)
    assert report.exit_code == 2

    commit(kafka_settings, group, topic, 0, 20)
    done = monitor.poll(now=T0 + 30).group(group)
    assert (done.status, done.partitions[0].lag, done.partitions[0].lag_seconds) == (Status.OK, 0, 0.0)


def test_committing_the_same_offset_while_behind_is_stall(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    """Commits reported by the consumer itself (the router's and connectors' hook)."""
    topic, group = topic_factory("stall"), group_factory("stuck")
    produce(kafka_settings, topic, 0, 10, first_ms=int(T0 * 1000))
    monitor = monitor_for(kafka_settings, group)
    for i in range(4):
        commit(kafka_settings, group, topic, 0, 3)
        monitor.on_commit(group, [(topic, 0, 3)], at=T0 + 10 * i)
        monitor.poll(now=T0 + 10 * i + 1)
    stuck = monitor.report(now=T0 + 35).group(group)
    assert [p.status for p in stuck.partitions] == [Status.STALL]
    assert stuck.partitions[0].commits == 4
    assert stuck.status == Status.ERR


def test_a_live_consumer_that_does_not_move_stalls_then_stops_when_it_leaves(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    """Commits seen only by polling: a group with members whose offset stands still is
    STALL; once its consumer is gone and nothing moves for longer than the window, STOP."""
    topic, group = topic_factory("live"), group_factory("live")
    produce(kafka_settings, topic, 0, 10, first_ms=int(T0 * 1000))
    consumer = Consumer(consumer_config(kafka_settings, group_id=group, client_id="stuck-consumer"))
    consumer.subscribe([topic])
    try:
        wait_until(lambda: bool(consumer.poll(0.1) or consumer.assignment()), 20, "joining the group")
        consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
        monitor = monitor_for(kafka_settings, group)
        for i in range(3):
            report = monitor.poll(now=T0 + 10 * i)
        assert report.group(group).partitions[0].status == Status.STALL
    finally:
        consumer.close()
    wait_until(lambda: not monitor.reader.live([group])[group], 15, "the group to have no members")
    monitor.poll(now=T0 + 30)
    late = monitor.poll(now=T0 + 60).group(group)  # 40 s after the last live commit; the window spans 20 s
    assert late.partitions[0].status == Status.STOP
    assert late.partitions[0].commits == 3  # nothing was added while nobody was there


def test_stopping_commits_while_behind_is_stop(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    topic, group = topic_factory("stop"), group_factory("quit")
    produce(kafka_settings, topic, 0, 10, first_ms=int(T0 * 1000))
    monitor = monitor_for(kafka_settings, group)
    commit(kafka_settings, group, topic, 0, 2)
    monitor.poll(now=T0)
    commit(kafka_settings, group, topic, 0, 4)
    assert monitor.poll(now=T0 + 10).group(group).partitions[0].status == Status.OK  # lag fell: 8 -> 6
    assert monitor.poll(now=T0 + 20).group(group).partitions[0].status == Status.OK  # 10 s since: not yet
    stopped = monitor.poll(now=T0 + 21).group(group)
    assert stopped.partitions[0].status == Status.STOP
    assert stopped.status == Status.ERR
    assert stopped.partitions[0].commits == 2


def test_committing_a_lower_offset_is_rewind(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    topic, group = topic_factory("rewind"), group_factory("back")
    produce(kafka_settings, topic, 0, 10, first_ms=int(T0 * 1000))
    monitor = monitor_for(kafka_settings, group)
    for step, offset in enumerate([5, 7, 3]):
        commit(kafka_settings, group, topic, 0, offset)
        report = monitor.poll(now=T0 + 10 * step)
    back = report.group(group)
    assert back.partitions[0].status == Status.REWIND
    assert (back.status, back.partitions[0].lag) == (Status.ERR, 7)
    assert "REWIND" in render_table(report)


def test_one_shot_measure_judges_a_group_without_members(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    topic, behind, done = topic_factory("oneshot"), group_factory("behind"), group_factory("done")
    now_ms = int(time.time() * 1000)
    produce(kafka_settings, topic, 0, 6, first_ms=now_ms - 60_000, step_ms=10_000)
    commit(kafka_settings, group=behind, topic=topic, partition=0, offset=1)
    commit(kafka_settings, group=done, topic=topic, partition=0, offset=6)
    quick = LagOptions(samples=2, sample_interval_s=0.05)
    report = measure(kafka_settings, GroupSelection((behind, done)), options=quick)
    assert report.group(behind).partitions[0].status == Status.STOP  # nobody there, not moving
    assert report.group(behind).partitions[0].lag_seconds == pytest.approx(50.0, abs=5.0)  # record 1: 50 s ago
    assert report.group(done).status == Status.OK
    assert report.exit_code == 2


def test_unknown_group_is_a_clear_error(kafka_settings: KafkaSettings, group_factory: Callable[[str], str]) -> None:
    missing = group_factory("never-created")
    with pytest.raises(UnknownGroup, match=missing) as info:
        monitor_for(kafka_settings, missing).poll()
    assert kafka_settings.bootstrap_servers in str(info.value)


def test_unreachable_broker_names_the_address_within_the_bounded_wait() -> None:
    settings = KafkaSettings(connect_timeout_s=1.5).with_broker("127.0.0.1:1", embedded=False)
    started = time.monotonic()
    with pytest.raises(BrokerUnreachable, match="127.0.0.1:1"):
        OffsetReader(settings)
    assert time.monotonic() - started < 10


@pytest.fixture
def city_topology(
    tmp_path: Path, kafka_settings: KafkaSettings, unique_name: Callable[[str], str]
) -> Iterator[Topology]:
    """The demo city under a unique namespace, with the fire brigade's subscription topic."""
    topo = load_topology(write_city_topology(tmp_path, unique_name("city").replace("-", "_").lower()))
    topic = topo.subscription("fire-alarms").topic
    ensure_topics(kafka_settings, [TopicSpec(topic)])
    yield topo
    delete_topics(kafka_settings, [topic])


def test_bus_groups_in_department_terms(
    kafka_settings: KafkaSettings, city_topology: Topology, group_factory: Callable[[str], str]
) -> None:
    topo = city_topology
    ns = topo.namespace
    assert router_group(ns) == f"{ns}.bus-router" and router_group(None) == "bus-router"
    assert connector_group(None, "fire-dispatch-webhook") == "bus-connector-fire-dispatch-webhook"
    groups = bus_groups(topo)
    sink = connector_group(ns, "fire-dispatch-webhook")
    assert groups[0] == router_group(ns) and sink in groups
    assert connector_group(ns, "skynet-platform") not in groups  # a source has no group

    sub = topo.subscription("fire-alarms")
    produce(kafka_settings, sub.topic, 0, 5, first_ms=int(T0 * 1000))
    commit(kafka_settings, sink, sub.topic, 0, 2)
    monitor = LagMonitor(OffsetReader(kafka_settings), GroupSelection.of_topology(topo), Directory(topo))
    report = monitor.poll(now=T0)

    fire = report.group(sink)
    assert (fire.department, fire.subscription) == ("fire_brigade", "fire-alarms")
    row = fire.partitions[0]
    assert (row.department, row.subscription, row.event_type) == ("fire_brigade", "fire-alarms", "camera_alarm")
    assert row.lag == 3
    # The router and the other sinks are not running: reported, not an error.
    assert report.group(router_group(ns)).status == Status.NOTFOUND
    assert report.exit_code == 2
    table = render_table(report)
    assert "fire_brigade" in table and "not found on the cluster" in table


def test_a_consumer_that_read_every_record_of_a_transaction_is_caught_up(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    """Transactional topics (the router writes in transactions): a consumer that read every
    record has the commit marker's offset ahead of it, and nothing to read. Lag 0, OK."""
    topic, group = topic_factory("tx"), group_factory("tx")
    producer = Producer(producer_config(kafka_settings, client_id="lag-test-tx", transactional_id=f"tx-{group}"))
    producer.init_transactions(10)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(topic, value=b"x", partition=0, timestamp=int(T0 * 1000) + i)
    producer.commit_transaction(10)  # records 0-2, marker at 3, end 4
    # Kafka's coordinator writes the marker after commit_transaction() returns: the end
    # (high watermark, and the last stable offset a read_committed reader stops at) reaches
    # 4 a moment later.
    wait_until(lambda: last_stable_offset(kafka_settings, topic, 0) == 4, 10, "the commit marker to land")
    commit(kafka_settings, group, topic, 0, 3)
    started = time.monotonic()
    monitor = monitor_for(kafka_settings, group, options=LagOptions(time_lag="record"))
    rows = [monitor.poll(now=T0 + 60 + 10 * i).group(group).partitions[0] for i in range(3)]
    assert [(r.committed, r.end, r.lag, r.lag_seconds, r.status) for r in rows] == [(3, 4, 0, 0.0, Status.OK)] * 3
    assert monitor.report(now=T0 + 600).exit_code == 0  # gone for long, but nothing waits for it: not STOP
    assert time.monotonic() - started < 5  # the probe saw the end; it did not wait for a record
