"""Metrics: hooks update them, the exposition parses back, lag from a real poll shows up."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus.kafka.config import KafkaSettings
from bus.ops.burrow import Status
from bus.ops.lag import GroupSelection, LagMonitor
from bus.ops.metrics import CONTENT_TYPE, BusMonitor, PartitionSample, exported_names
from tests.ops.helpers import commit, past_now, produce
from bus.ops.offsets import OffsetReader

T0 = past_now()  # a fixed "now" (an hour ago: Kafka refuses record timestamps ahead of its clock)


def scrape(monitor: BusMonitor) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition: (name, labels) -> value."""
    text = monitor.render().decode("utf-8")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_hooks_render_as_parseable_exposition() -> None:
    monitor = BusMonitor()
    monitor.on_record_in("city.events.camera_alarm", 3)
    monitor.on_record_out("city.sub.fire_brigade.fire-alarms", department="fire_brigade", subscription="fire-alarms")
    fire = "city.sub.fire_brigade.fire-alarms"
    monitor.on_dead_letter(connector="fire-dispatch-webhook", topic=fire, error="HTTPError")
    monitor.on_connector_error("fire-dispatch-webhook", "task_put")
    for seconds in (0.004, 0.03, 0.2):
        monitor.on_transaction(seconds)
    monitor.set_availability(97, 100, district="LIUNAN")
    monitor.set_availability(0, 0, district="YUFENG")

    samples = scrape(monitor)
    assert value(samples, "bus_records_in_total", topic="city.events.camera_alarm") == 3
    assert value(samples, "bus_records_out_total", topic="city.sub.fire_brigade.fire-alarms",
                 department="fire_brigade", subscription="fire-alarms") == 1
    assert value(samples, "bus_dead_letters_total", connector="fire-dispatch-webhook",
                 topic="city.sub.fire_brigade.fire-alarms", error="HTTPError") == 1
    assert value(samples, "bus_connector_errors_total", connector="fire-dispatch-webhook", stage="task_put") == 1
    assert value(samples, "bus_router_transaction_seconds_count") == 3
    assert value(samples, "bus_router_transaction_seconds_sum") == pytest.approx(0.234)
    assert value(samples, "bus_router_transaction_seconds_bucket", le="0.01") == 1
    assert value(samples, "bus_camera_fleet_availability", district="LIUNAN") == pytest.approx(0.97)
    assert math.isnan(value(samples, "bus_camera_fleet_availability", district="YUFENG"))  # no cameras: no alert
    assert {name for name, _ in samples} <= exported_names(monitor.metrics)
    assert CONTENT_TYPE.startswith("text/plain")


def test_lag_series_follow_the_group_s_partitions() -> None:
    monitor = BusMonitor()
    first = PartitionSample("g", "t", 0, 3, 10, 7, 12.5, Status.STALL, "fire_brigade", "fire-alarms")
    second = PartitionSample("g", "t", 1, 5, 5, 0, 0.0, Status.OK, "fire_brigade", "fire-alarms")
    for sample in (first, second):
        monitor.set_lag(sample)
    monitor.set_group("g", status=Status.ERR, maxlag=7, maxlag_seconds=12.5, totallag=7, complete=0.5,
                      partitions=[first, second])
    labels = {"group": "g", "topic": "t", "department": "fire_brigade", "subscription": "fire-alarms"}
    samples = scrape(monitor)
    assert value(samples, "kafka_consumergroup_group_lag", partition="0", **labels) == 7
    assert value(samples, "kafka_consumergroup_group_lag_seconds", partition="0", **labels) == 12.5
    assert value(samples, "bus_consumergroup_partition_status", partition="0", status="STALL", **labels) == 1
    assert value(samples, "bus_consumergroup_partition_status", partition="0", status="OK", **labels) == 0
    assert value(samples, "bus_consumergroup_status", group="g", status="ERR") == 1
    assert value(samples, "kafka_consumergroup_group_max_lag", group="g") == 7
    assert value(samples, "bus_consumergroup_complete", group="g") == 0.5

    # Partition 1 is gone from the group: its series go; the whole group can go too.
    monitor.set_group("g", status=Status.ERR, maxlag=7, maxlag_seconds=12.5, totallag=7, complete=1.0,
                      partitions=[first])
    assert ("kafka_consumergroup_group_lag", frozenset({**labels, "partition": "1"}.items())) not in scrape(monitor)
    monitor.forget_group("g")
    assert not [name for name, labelset in scrape(monitor) if ("group", "g") in labelset]


@pytest.mark.integration
@pytest.mark.embedded
def test_a_poll_publishes_lag_to_metrics(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> None:
    topic, group = topic_factory("metrics"), group_factory("metrics")
    produce(kafka_settings, topic, 0, 8, first_ms=int(T0 * 1000) - 60_000)  # record i at T0 - 60 s + i s
    commit(kafka_settings, group, topic, 0, 2)
    bus = BusMonitor()
    lag = LagMonitor(OffsetReader(kafka_settings), GroupSelection((group,)), monitor=bus)
    lag.poll(now=T0)

    samples = scrape(bus)
    labels = {"group": group, "topic": topic, "partition": "0", "department": "", "subscription": ""}
    assert value(samples, "kafka_consumergroup_group_lag", **labels) == 6
    assert value(samples, "kafka_consumergroup_group_offset", **labels) == 2
    assert value(samples, "kafka_partition_latest_offset", topic=topic, partition="0") == 8
    # One end offset seen so far: the table cannot tell, the record's timestamp does.
    assert value(samples, "kafka_consumergroup_group_lag_seconds", **labels) == pytest.approx(58.0)
    assert value(samples, "kafka_consumergroup_group_sum_lag", group=group) == 6

    # Commits the bus's own consumers report through the monitor reach the evaluator.
    for i in range(3):
        bus.on_commit(group, [(topic, 0, 2)], at=T0 + 10 * i)
    assert lag.report(now=T0 + 25).group(group).partitions[0].status == Status.STALL


def test_the_city_s_figures_render_as_gauges() -> None:
    """The figures' hooks (bus.ops.figures sets them from what it counted): one series per
    label set, NaN where there is nothing to measure (so that no alert fires on it)."""
    monitor = BusMonitor()
    monitor.set_sharing(event_types_share=0.75, records_share=None,
                        departments={"police": (10, 4, 7), "health": (0, 0, 3)})
    monitor.set_faults("all", open=2, outcomes={("answer", "kept"): 5, ("answer", "broken"): 1,
                                                ("answer", "pending"): 2}, overdue={"answer": 1, "repair": 0})
    monitor.set_throughput("camera_alarm", last_hour=7200, per_second=2.5, delivered_last_hour=14000)
    monitor.set_latency("fire_brigade", "fire-alarms", deliveries=30, quantiles={"0.5": 0.031, "0.99": None})

    samples = scrape(monitor)
    assert value(samples, "bus_sharing_share", of="event_types") == 0.75
    assert math.isnan(value(samples, "bus_sharing_share", of="records"))
    assert value(samples, "bus_sharing_records", department="police", direction="published") == 10
    assert value(samples, "bus_sharing_records", department="police", direction="shared") == 4
    assert value(samples, "bus_sharing_records", department="health", direction="received") == 3
    assert value(samples, "bus_camera_faults_open", district="all") == 2
    assert value(samples, "bus_camera_faults", district="all", deadline="answer", outcome="broken") == 1
    assert value(samples, "bus_camera_faults_overdue", district="all", deadline="answer") == 1
    assert value(samples, "bus_event_type_records_last_hour", event_type="camera_alarm", stage="published") == 7200
    assert value(samples, "bus_event_type_records_last_hour", event_type="camera_alarm", stage="delivered") == 14000
    assert value(samples, "bus_event_type_published_per_second", event_type="camera_alarm") == 2.5
    assert value(samples, "bus_subscription_delivered_last_hour", department="fire_brigade",
                 subscription="fire-alarms") == 30
    assert value(samples, "bus_delivery_latency_seconds", department="fire_brigade", subscription="fire-alarms",
                 quantile="0.5") == 0.031
    assert math.isnan(value(samples, "bus_delivery_latency_seconds", department="fire_brigade",
                            subscription="fire-alarms", quantile="0.99"))
    assert {name for name, _ in samples} <= exported_names(monitor.metrics)
