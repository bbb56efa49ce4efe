"""Publish -> subscription topic latency: the router's commit interval, and the latency
part of `bus bench route` (what it measures and what it leaves out).

Not timed tests (latency on a shared machine is the benchmark's to report): they check
that records arriving within the commit interval share a transaction, that every measured
record is accounted for, that the percentiles are nearest-rank ones, and that a new
Publisher's cold start is reported apart instead of inside the figures.
"""

from __future__ import annotations

import math
import random
import threading
import time
import uuid
from pathlib import Path

import pytest

from bus.bench.connectors import _drop_namespace
from bus.bench.route import LatencyRun, _latency, _passing_alarm, _subscription, bench_topology
from bus.kafka.config import EMBEDDED_MIN_COMMIT_INTERVAL_S, KafkaSettings, router_commit_interval_s
from bus.publish import Publisher
from bus.routing.router import Router

ENV = {"BUS_HASH_MASTER_KEY": "test"}


def test_only_the_embedded_profile_puts_a_floor_under_the_commit_interval() -> None:
    embedded = KafkaSettings(kafka_profile="embedded")
    cluster = KafkaSettings(bootstrap_servers="kafka-1:9092", kafka_profile="cluster")

    assert router_commit_interval_s(embedded) == EMBEDDED_MIN_COMMIT_INTERVAL_S > 0
    assert router_commit_interval_s(cluster) == 0.0


def _wait_until(condition, timeout_s: float, what: str) -> None:  # noqa: ANN001 (a predicate)
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(0.02)


@pytest.mark.integration
def test_records_arriving_within_the_commit_interval_share_one_transaction(
    registry_settings: KafkaSettings, tmp_path: Path
) -> None:
    topology = bench_topology(tmp_path, f"interval_{uuid.uuid4().hex[:8]}", [_subscription("paced", "filtered")])
    router = Router(topology, registry_settings, environ=ENV, commit_interval_s=1.5)
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    rng = random.Random(11)
    try:
        router.prepare()
        thread.start()
        assert router.assigned.wait(60), "the router was not assigned its partitions"
        with Publisher(topology, registry_settings) as publisher:
            publisher.publish("camera_alarm", "police", _passing_alarm(rng))
            _wait_until(lambda: router.stats.transactions == 1, 30, "the first transaction")
            for _ in range(20):  # well within the interval: they wait for it, then go together
                publisher.publish("camera_alarm", "police", _passing_alarm(rng))
        _wait_until(lambda: router.stats.committed_in == 21, 30, "all 21 records committed")
    finally:
        stop.set()
        thread.join(60)
        _drop_namespace(registry_settings, topology.namespace)

    assert router.stats.committed_out == 21
    # One transaction for the first record, then the 20 together (two, should publishing
    # them have straddled the end of the interval on a busy machine).
    assert router.stats.transactions in (2, 3)


def test_percentiles_are_nearest_rank_over_the_measured_records() -> None:
    run = LatencyRun(delays_ms=[float(v) for v in range(1, 1001)], first_publish_ms=900.0,
                     first_arrival_ms=950.0, load_1m=0.5)

    summary = run.summary()

    assert (summary["p50_ms"], summary["p99_ms"], summary["max_ms"]) == (500.5, 990.0, 1000.0)
    assert summary["latency_samples"] == 1000
    assert (summary["first_publish_ms"], summary["first_arrival_ms"]) == (900.0, 950.0)


def test_no_records_give_no_figures_rather_than_an_error() -> None:
    summary = LatencyRun(delays_ms=[], first_publish_ms=math.nan, first_arrival_ms=math.nan, load_1m=0.0).summary()

    assert summary["latency_samples"] == 0
    assert math.isnan(summary["p50_ms"]) and math.isnan(summary["p99_ms"])


@pytest.mark.integration
def test_every_measured_record_arrives_and_the_cold_start_is_reported_apart(
    registry_settings: KafkaSettings, tmp_path: Path
) -> None:
    topology = bench_topology(tmp_path, f"latency_{uuid.uuid4().hex[:8]}", [_subscription("latency", "filtered")])
    try:
        run = _latency(topology, registry_settings, rate=200, seconds=1.0, seed=3, warmup_s=0.2)
    finally:
        _drop_namespace(registry_settings, topology.namespace)

    # 200 records/s for 1 s (the pacing loop sends at both ends of the interval): every
    # one read back from the subscription topic, none of the warm-up ones among them.
    assert run.summary()["latency_samples"] in (200, 201)
    assert all(delay > 0 for delay in run.delays_ms)
    assert run.delays_ms == sorted(run.delays_ms)
    # The publishing part of each delay (to the broker's acknowledgement) is timed too.
    assert len(run.ack_delays_ms) == len(run.delays_ms)
    assert all(delay > 0 for delay in run.ack_delays_ms)
    # The first record (the Publisher's producer id, the router's first transaction) is
    # timed on its own and waited for end to end before the measurement starts.
    assert run.first_publish_ms > 0 and run.first_arrival_ms > 0
