"""`bus bench route` with tiny runs, on the test session's broker and registry (either engine):
every figure is in the JSON line, the ratios agree with the rates of their rounds, and runs
this short say that they are too short to mean anything. Not a timed test: speed is the
benchmark's to report."""

from __future__ import annotations

import os

import pytest

from bus.bench.brokers import bench_broker
from bus.bench.route import SCENARIOS, TARGETS, RouteParams, run_route_benchmark
from bus.kafka.admin import wait_for_broker
from bus.kafka.config import KafkaSettings

pytestmark = [pytest.mark.integration, pytest.mark.embedded, pytest.mark.timeout(300)]

TINY = RouteParams(seconds=0.5, warmup_s=0.2, rounds=2, latency_seconds=0.5, latency_warmup_s=0.2, distinct=300,
                   min_backlog=3_000, rate=200)


def test_a_tiny_run_reports_every_figure_and_says_it_is_too_short(registry_settings: KafkaSettings) -> None:
    said: list[str] = []
    result = run_route_benchmark(TINY, settings=registry_settings, say=said.append)

    assert result["benchmark"] == "route" and result["engine"] in ("embedded", "existing")
    assert result["raw_eps"] > 0
    for name in SCENARIOS:
        assert result[f"{name}_eps"] > 0 and len(result[f"{name}_ratios"]) == TINY.rounds
        assert len(result["runs"][name]) == TINY.rounds
        for i, (run, raw) in enumerate(zip(result["runs"][name], result["runs"]["raw"])):
            rate = run["out_eps"] if name == "fanout10" else run["eps"]
            assert rate / raw["eps"] == pytest.approx(result[f"{name}_ratios"][i], rel=0.01, abs=0.002)
            for key in ("startup_s", "warmup_s", "warmup_records", "measured_s", "measured_records", "too_short"):
                assert key in run
    # fan-out is counted in output records: ten per input
    assert result["fanout10_out_eps"] == pytest.approx(10 * result["fanout10_eps"], rel=0.05)
    assert set(result["targets"]) == {*TARGETS, "p99_ms"}
    assert result["latency_samples"] > 0 and result["p99_ms"] >= result["p50_ms"] > 0
    assert result["latency"]["raw_relay"]["latency_samples"] > 0
    # half-second runs: too short, and said so
    assert result["too_short"] is True and result["latency"]["too_short"] is True
    assert any(line.startswith("WARNING: ") and "too short" in line for line in said)
    assert "consume(num_messages" in result["baseline"]["loop"]
    assert result["backlog_records"] >= TINY.min_backlog and result["load_average_end"]


@pytest.mark.only_on("embedded", reason="starts an embedded broker of its own: cheap; a Kafka node takes seconds")
def test_the_benchmark_broker_is_the_engine_asked_for_unless_a_cluster_is_named(
    kafka_settings: KafkaSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BUS_BOOTSTRAP_SERVERS", raising=False)
    with bench_broker("embedded", say=lambda line: None) as broker:
        assert broker.engine == "embedded" and broker.settings.embedded
        wait_for_broker(broker.settings)
        assert broker.report()["cores"] == os.cpu_count()

    monkeypatch.setenv("BUS_BOOTSTRAP_SERVERS", kafka_settings.bootstrap_servers)
    with bench_broker("kafka", say=lambda line: None) as broker:  # the named cluster, whatever the engine
        assert broker.engine == "existing"
        assert broker.settings.bootstrap_servers == kafka_settings.bootstrap_servers
