"""`bus bench soak` at a low rate for a few seconds, on the test session's broker and registry:
the whole city runs (router, processors child, connectors of the shipped topology's copy),
nothing is lost at any sink, every group has a time lag figure, RSS was sampled, and the
figures agree with each other."""

from __future__ import annotations

import pytest

from bus.bench.soak import MIX, SoakParams, CpuMark, run_soak_benchmark
from bus.kafka.config import KafkaSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

SINKS = ("fire-dispatch-webhook", "traffic-checkpoint-webhook", "emergency-wall-webhook", "liunan-cases-webhook",
         "statistics-population-base", "health-population-base")


def test_a_short_soak_at_a_low_rate_loses_nothing_and_reports_every_figure(registry_settings: KafkaSettings) -> None:
    params = SoakParams(rate=80, seconds=9, warmup_s=3, sample_s=1.0, progress_s=3, drain_timeout_s=20)
    said: list[str] = []
    result = run_soak_benchmark(params=params, settings=registry_settings, say=said.append)

    # the load: every type sent, nothing refused, about the rate asked for
    assert result["refused"] == 0, result["load_errors"]
    assert set(result["accepted_by_type"]) == set(MIX) and all(n > 0 for n in result["accepted_by_type"].values())
    assert sum(result["accepted_by_type"].values()) == result["accepted"]
    assert 0.5 * 80 * 9 <= result["accepted"] <= 1.2 * 80 * 9
    assert result["achieved_rate_eps"] == pytest.approx(result["accepted"] / 9, rel=0.01)
    assert result["routed_in"] >= result["accepted"]  # lanes and the processors' cases are routed too

    # zero loss, counted at each sink, and the processors' stage accounts for every alarm
    assert result["lost"] == 0, result["loss"]
    assert set(SINKS) <= set(result["loss"])
    for name, figures in result["loss"].items():
        assert figures["lost"] == 0 and figures["received"] == figures["entitled"], (name, figures)
    assert result["loss"]["processors (camera_alarm)"]["entitled"] == result["accepted_by_type"]["camera_alarm"]
    assert result["loss"]["statistics-population-base"]["entitled"] == result["accepted_by_type"]["population_change"]
    assert result["targets"]["loss"] == "PASS"

    # lag of every kind of group, and the worst of them
    groups = result["lag_seconds"]
    assert "bus-router" in groups and "bus-processors" in groups
    assert {f"bus-connector-{name}" for name in SINKS} <= set(groups)
    for figures in groups.values():
        assert 0 <= figures["p99_s"] <= figures["max_s"] and figures["samples"] >= 1
    assert result["worst_lag_s"] == max(g["max_s"] for g in groups.values())
    assert result["delivery_delay_s"]["count"] > 0

    # memory sampled all along, from the warmup on
    assert result["rss_samples"] >= 3
    rss = result["rss_mb"]
    assert rss["bus_at_warmup"] > 50 and rss["bus_peak_after_warmup"] >= rss["bus_at_warmup"]
    assert rss["last"]["processors"] > 0

    # CPU of each process while the load ran (the broker is the test session's, not the soak's)
    cpu = result["cpu"]
    shares = cpu["pct_of_a_core"]
    assert set(shares) == {"bus", "processors", "broker", "load", "endpoints"}
    assert shares["broker"] is None
    assert all(shares[part] > 0 for part in ("bus", "processors", "load", "endpoints")), shares
    assert 0 < cpu["machine_busy_pct"] <= 100 and cpu["cores"] >= 1
    assert any(line.startswith("cpu while the load ran (% of one core): bus ") for line in said)

    assert set(result["targets"]) == {"rate", "lag", "rss", "loss"}
    assert result["pass"] == all(v == "PASS" for v in result["targets"].values())
    assert sum(1 for line in said if "ingest" in line and "accepted" in line) >= 2  # progress, never silent


def test_cpu_shares_count_only_processes_alive_and_unchanged_between_the_marks() -> None:
    """A process that was replaced (a restarted child) or is gone has no share: its CPU time
    would be another process's."""
    start = CpuMark(at=100.0, parts={"bus": ([10], [5.0]), "processors": ([20], [1.0]), "load": ([30, 31], [2.0, 3.0]),
                                      "broker": ([40], [7.0])}, machine=(1000.0, 4000.0))
    end = CpuMark(at=110.0, parts={"bus": ([10], [8.0]), "processors": ([21], [0.5]), "load": ([30, 31], [3.0, 5.0]),
                                    "broker": ([40], [None])}, machine=(2500.0, 6000.0))
    share = end.share_since(start)
    assert share["pct_of_a_core"] == {"bus": 30.0, "processors": None, "load": 30.0, "broker": None}
    assert share["machine_busy_pct"] == 75.0
