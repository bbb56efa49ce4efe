"""`bus bench connectors` with tiny counts, on the test session's broker and registry: the
JSON line has every figure, each positive, and the ratios agree with the rates."""

from __future__ import annotations

import pytest

from bus.bench.connectors import ConnectorBenchParams, run_connectors_benchmark
from bus.kafka.config import KafkaSettings

pytestmark = pytest.mark.integration

RATES = ("raw_produce_eps", "ingest_single_eps", "ingest_batch_eps", "webhook_eps")


def test_the_benchmark_reports_positive_rates_and_their_ratios_to_raw(registry_settings: KafkaSettings) -> None:
    params = ConnectorBenchParams(records=200, ingest_single_records=40, clients=4, ingest_batch_records=120,
                                  batch_records=50, batch_clients=2, webhook_records=60, webhook_concurrency=8)
    said: list[str] = []
    result = run_connectors_benchmark(params, settings=registry_settings, say=said.append)

    for name in RATES:
        assert result[name] > 0, name
    for name in RATES[1:]:
        ratio = result[name.replace("_eps", "_ratio")]
        assert ratio > 0 and ratio == pytest.approx(result[name] / result["raw_produce_eps"], rel=0.01, abs=0.002)
    assert (result["records"], result["ingest_single_records"], result["ingest_batch_records"],
            result["webhook_records"]) == (200, 40, 120, 60)
    assert (result["clients"], result["batch_records"], result["webhook_concurrency"]) == (4, 50, 8)
    assert 80 < result["record_bytes"] < 2000  # a realistic wire-format alarm
    assert result["single_record_batches"] == "none"
    assert any("webhook" in line for line in said)
