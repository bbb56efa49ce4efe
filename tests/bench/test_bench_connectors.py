"""`bus bench connectors` with tiny runs, on the test session's broker and registry (either
engine): the JSON line has every figure, each positive, the ratios agree with the rates, and
runs this short say so."""

from __future__ import annotations

import pytest

from bus.bench.connectors import ConnectorBenchParams, run_connectors_benchmark
from bus.kafka.config import KafkaSettings

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

RATES = ("raw_produce_eps", "ingest_single_eps", "ingest_batch_eps", "webhook_eps")


def test_the_benchmark_reports_positive_rates_and_their_ratios_to_raw(registry_settings: KafkaSettings) -> None:
    params = ConnectorBenchParams(seconds=0.5, warmup_s=0.2, records=200, clients=4, batch_records=50,
                                  batch_clients=2, webhook_records=60, webhook_concurrency=8)
    said: list[str] = []
    result = run_connectors_benchmark(params, settings=registry_settings, say=said.append)

    for name in RATES:
        assert result[name] > 0, name
    for name in RATES[1:]:
        ratio = result[name.replace("_eps", "_ratio")]
        assert ratio > 0 and ratio == pytest.approx(result[name] / result["raw_produce_eps"], rel=0.01, abs=0.002)
    assert (result["records"], result["webhook_records"]) == (200, 60)
    assert (result["clients"], result["batch_records"], result["webhook_concurrency"]) == (4, 50, 8)
    assert 80 < result["record_bytes"] < 2000  # a realistic wire-format alarm
    assert result["single_record_batches"] == "none"
    assert set(result["runs"]) == {"raw_produce", "ingest_single", "ingest_batch", "webhook"}
    for run in result["runs"].values():
        assert {"startup_s", "warmup_s", "warmup_records", "measured_s", "measured_records", "too_short"} <= set(run)
    # half-second parts, 60 webhook records: too short, and said so
    assert result["too_short"] is True and result["runs"]["webhook"]["too_short"] is True
    assert any(line.startswith("WARNING: webhook run 1 is too short") for line in said)
    assert "produce()" in result["baseline"]["loop"]
