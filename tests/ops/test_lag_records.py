"""Lag counts records, not offsets: transaction markers and aborted records are no lag.

Each case runs on a transactional topic (every transaction ends with a marker that takes an
offset and is never delivered, as the router writes subscription topics) and on a plain one,
across several polls, on both engines. Time is driven by passing poll times; commits are real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from prometheus_client.parser import text_string_to_metric_families

from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.ops import offsets as offsets_module
from bus.ops.burrow import Status
from bus.ops.lag import GroupSelection, LagMonitor, LagOptions
from bus.ops.metrics import BusMonitor
from tests.ops.helpers import commit, last_stable_offset, past_now, wait_until
from bus.ops.offsets import OffsetReader

T0 = past_now()  # a fixed "now" (an hour ago: Kafka refuses record timestamps ahead of its clock)
KINDS = ["transactional", "plain"]

pytestmark = [pytest.mark.integration, pytest.mark.embedded]  # must hold on both engines


class Writer:
    """Writes records to partition 0 of ``topic``: each batch in a transaction (then its marker)
    or plain; returns once a read_committed reader can read them."""

    def __init__(self, settings: KafkaSettings, topic: str, kind: str) -> None:
        self.settings, self.topic, self.kind = settings, topic, kind
        self.end = 0
        if kind == "transactional":
            self.producer = Producer(producer_config(settings, client_id="lag-test-tx", transactional_id=f"{topic}-tx"))
            self.producer.init_transactions(30)
        else:
            self.producer = Producer(producer_config(settings, client_id="lag-test-plain"))

    def write(self, count: int, first_ms: int, *, abort: bool = False) -> list[int]:
        """``count`` records stamped ``first_ms + i`` seconds; their offsets."""
        offsets: list[int] = []
        failed: list[KafkaError] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is not None:
                failed.append(err)
            else:
                offsets.append(int(msg.offset() or 0))

        tx = self.kind == "transactional"
        if tx:
            self.producer.begin_transaction()
        for i in range(count):
            self.producer.produce(self.topic, value=b"record %d" % i, partition=0, timestamp=first_ms + i * 1000,
                                  on_delivery=delivered)
            assert self.producer.flush(10) == 0  # one record per batch (the embedded broker's watermark)
        if tx and abort:
            self.producer.abort_transaction(30)
        elif tx:
            self.producer.commit_transaction(30)
        assert not failed, failed
        self.end = max(offsets) + (2 if tx else 1)  # a transaction's marker follows its records
        # Kafka writes the marker just after commit_transaction() returns.
        wait_until(lambda: last_stable_offset(self.settings, self.topic, 0) == self.end, 15,
                   f"{self.topic} readable to {self.end}")
        return sorted(offsets)

    def open(self, count: int, first_ms: int) -> None:
        """A transaction left open with ``count`` records (the caller aborts it)."""
        self.producer.begin_transaction()
        for i in range(count):
            self.producer.produce(self.topic, value=b"open %d" % i, partition=0, timestamp=first_ms + i * 1000)
        assert self.producer.flush(10) == 0


class Sink:
    """A member of ``group`` that reads ``topic`` and commits after each record, as the bus's
    sinks do (the offset after the record: on a transactional topic, its marker's)."""

    def __init__(self, settings: KafkaSettings, group: str, topic: str) -> None:
        self.consumer = Consumer(consumer_config(settings, group_id=group, client_id="lag-test-sink"))
        self.consumer.subscribe([topic])
        self.read: list[int] = []

    def read_until(self, offset: int, timeout_s: float = 30) -> None:
        """Read and commit until the record at ``offset`` is read."""
        deadline = time.monotonic() + timeout_s
        while offset not in self.read:
            assert time.monotonic() < deadline, f"record {offset} not read within {timeout_s:g} s (read {self.read})"
            msg = self.consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                self.read.append(int(msg.offset() or 0))
                self.consumer.commit(message=msg, asynchronous=False)

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def sink_factory() -> Iterator[Callable[[KafkaSettings, str, str], Sink]]:
    made: list[Sink] = []

    def make(settings: KafkaSettings, group: str, topic: str) -> Sink:
        made.append(Sink(settings, group, topic))
        return made[-1]

    yield make
    for sink in made:
        try:
            sink.close()
        except RuntimeError:
            pass  # closed by the test


def monitor_for(settings: KafkaSettings, group: str, **kwargs) -> LagMonitor:
    return LagMonitor(OffsetReader(settings), GroupSelection((group,)), **kwargs)


@pytest.mark.parametrize("kind", KINDS)
def test_a_sink_keeping_up_then_idle_then_gone_is_ok_throughout(
    kind: str, kafka_settings: KafkaSettings, topic_factory: Callable[..., str],
    group_factory: Callable[[str], str], sink_factory: Callable[[KafkaSettings, str, str], Sink],
) -> None:
    topic, group = topic_factory(f"keep-{kind[:2]}"), group_factory("keep")
    writer = Writer(kafka_settings, topic, kind)
    sink = sink_factory(kafka_settings, group, topic)
    bus = BusMonitor()
    monitor = monitor_for(kafka_settings, group, monitor=bus)
    now = T0
    rows = []
    for step in range(4):  # steady traffic: a batch between polls, read and committed by the sink
        offsets = writer.write(3, int(now * 1000) - 2000)
        sink.read_until(offsets[-1])
        report = monitor.poll(now=now)
        rows.append(report.group(group).partitions[0])
        assert report.exit_code == 0
        now += 10
    for _ in range(3):  # idle: nothing new
        report = monitor.poll(now=now)
        rows.append(report.group(group).partitions[0])
        now += 10
    marker = 1 if kind == "transactional" else 0
    assert [(r.end - r.committed, r.lag, r.lag_exact, r.lag_seconds, r.status) for r in rows] == (
        [(marker, 0, True, 0.0, Status.OK)] * 7
    ), rows
    assert rows[-1].commits == 7  # a live member: each poll counted as a commit (Burrow STALL if lag were 1)

    # The /metrics series the alert rules read.
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(bus.render().decode()) for s in family.samples
    }
    labels = {"group": group, "topic": topic, "partition": "0", "department": "", "subscription": ""}

    def metric(name: str, **more: str) -> float:
        return samples[(name, tuple(sorted({**labels, **more}.items())))]

    assert (metric("kafka_consumergroup_group_lag"), metric("kafka_consumergroup_group_lag_seconds")) == (0, 0)
    assert [metric("bus_consumergroup_partition_status", status=s) for s in ("OK", "WARN", "STALL", "STOP")] == [
        1, 0, 0, 0]
    assert samples[("bus_consumergroup_status", (("group", group), ("status", "OK")))] == 1

    sink.close()  # gone, at the end: nothing is waiting for it, so it is not STOP
    wait_until(lambda: not monitor.reader.live([group])[group], 20, "the group to have no members")
    for later in (now, now + 60, now + 600):
        gone = monitor.poll(now=later).group(group)
        assert (gone.status, gone.partitions[0].lag, gone.partitions[0].lag_seconds) == (Status.OK, 0, 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_one_record_behind_is_one_record_and_a_stopped_consumer_there_is_stop(
    kind: str, kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    topic, group = topic_factory(f"one-{kind[:2]}"), group_factory("one")
    writer = Writer(kafka_settings, topic, kind)
    first_ms = int(T0 * 1000) - 30_000
    offsets = writer.write(3, first_ms)  # the last record stamped T0 - 28 s
    commit(kafka_settings, group, topic, 0, offsets[-1])  # read all but the last record, then stopped
    monitor = monitor_for(kafka_settings, group)
    rows = [monitor.poll(now=T0 + 10 * i).group(group).partitions[0] for i in range(3)]
    assert [(r.end - r.committed, r.lag, r.lag_exact) for r in rows] == [(writer.end - offsets[-1], 1, True)] * 3
    assert [r.lag_seconds for r in rows] == pytest.approx([28.0, 38.0, 48.0])
    assert [r.status for r in rows] == [Status.OK, Status.STOP, Status.STOP]  # first sight is not judged
    report = monitor.report(now=T0 + 20)
    assert (report.group(group).status, report.exit_code) == (Status.ERR, 2)

    commit(kafka_settings, group, topic, 0, writer.end)  # it came back and read the last one
    back = monitor.poll(now=T0 + 30).group(group)
    assert (back.status, back.partitions[0].lag, back.partitions[0].lag_seconds) == (Status.OK, 0, 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_a_backlog_longer_than_the_probe_reads_counts_the_rest_as_offsets(
    kind: str, kafka_settings: KafkaSettings, topic_factory: Callable[..., str],
    group_factory: Callable[[str], str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic, group = topic_factory(f"long-{kind[:2]}"), group_factory("long")
    writer = Writer(kafka_settings, topic, kind)
    for i in range(5):
        writer.write(1, int(T0 * 1000) - 60_000 + i * 1000)
    commit(kafka_settings, group, topic, 0, 0)
    monkeypatch.setattr(offsets_module, "SCAN_OFFSETS", 4)
    row = monitor_for(kafka_settings, group).poll(now=T0).group(group).partitions[0]
    if kind == "transactional":  # records 0, 2, 4, 6, 8; markers 1, 3, 5, 7, 9; read 0-3: 2 records + 6 offsets
        assert (row.end, row.lag, row.lag_exact) == (10, 8, False)
    else:
        assert (row.end, row.lag, row.lag_exact) == (5, 5, False)
    assert row.lag_seconds == pytest.approx(60.0)  # record 0, read


def test_an_aborted_transaction_is_no_lag_where_the_broker_hides_it(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    """Records of an aborted transaction are never delivered by Kafka to a read_committed
    consumer: no lag. The embedded broker delivers them (tests/kafka/test_engines.py), so
    there they are records its consumers will read."""
    topic, group = topic_factory("abort"), group_factory("abort")
    writer = Writer(kafka_settings, topic, "transactional")
    done = writer.write(2, int(T0 * 1000))  # records 0-1, marker 2
    writer.write(3, int(T0 * 1000), abort=True)  # records 3-5, abort marker 6
    commit(kafka_settings, group, topic, 0, done[-1] + 2)  # after the first marker
    row = monitor_for(kafka_settings, group).poll(now=T0 + 5).group(group).partitions[0]
    assert (row.committed, row.end) == (3, 7)
    if kafka_settings.embedded:
        assert (row.lag, row.status) == (3, Status.OK)
    else:
        assert (row.lag, row.lag_seconds, row.status) == (0, 0.0, Status.OK)


def test_records_of_a_transaction_still_open_are_not_lag_yet(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    """A read_committed consumer reads up to the last stable offset: a sink at it has read all
    it can (Kafka's consumer counts its own lag to there too). The probe sees that end without
    waiting for the transaction, on both engines."""
    topic, group = topic_factory("open"), group_factory("open")
    writer = Writer(kafka_settings, topic, "transactional")
    writer.write(2, int(T0 * 1000))  # records 0-1, marker 2
    commit(kafka_settings, group, topic, 0, 2)
    writer.open(3, int(T0 * 1000))  # records 3-5, not committed yet
    try:
        monitor = monitor_for(kafka_settings, group)
        started = time.monotonic()
        row = monitor.poll(now=T0 + 5).group(group).partitions[0]
        assert time.monotonic() - started < 5  # the probe did not wait out its timeout
        assert (row.committed, row.end, row.lag, row.lag_seconds, row.status) == (2, 6, 0, 0.0, Status.OK)
    finally:
        writer.producer.abort_transaction(30)


REPO = Path(__file__).resolve().parents[2]


def test_bus_lag_json_says_ok_for_a_sink_caught_up_on_a_transactional_topic(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    topic, group = topic_factory("cli-tx"), group_factory("cli")
    writer = Writer(kafka_settings, topic, "transactional")
    offsets = writer.write(3, int(time.time() * 1000) - 30_000)
    commit(kafka_settings, group, topic, 0, offsets[-1] + 1)  # the marker's offset, as a sink commits
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    environ.update(BUS_BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers,
                   BUS_KAFKA_PROFILE=kafka_settings.kafka_profile or "embedded")
    result = subprocess.run(
        [sys.executable, "-c", "import bus.cli.ops; from bus.cli import main; main()",
         "lag", group, "--json", "--samples", "2", "--sample-interval", "0.05"],
        capture_output=True, text=True, timeout=60, env=environ, cwd=REPO, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    row = report["groups"][0]["partitions"][0]
    assert report["ok"] is True and report["groups"][0]["status"] == "OK"
    assert (row["committed"], row["end"], row["lag"], row["lag_exact"], row["lag_seconds"], row["status"]) == (
        3, 4, 0, True, 0.0, "OK")
