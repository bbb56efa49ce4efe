"""`bus bench process`: a small run on the session's broker (a smoke test, not a timed one:
the figures are the benchmark's to report)."""

from __future__ import annotations

import pytest

from bus.bench.process import run_process_benchmark
from bus.kafka.config import KafkaSettings


@pytest.mark.integration
@pytest.mark.timeout(240)
def test_the_processors_read_every_preloaded_record_and_the_figures_say_so(registry_settings: KafkaSettings) -> None:
    said: list[str] = []
    result = run_process_benchmark(600, timeout_s=180, say=said.append, settings=registry_settings, warmup_s=0.5,
                                   raw_seconds=1.0)
    assert result["records"] == result["camera_status_records"] + result["camera_alarm_records"] == 600
    assert result["camera_status_records"] > 0 and result["camera_alarm_records"] > 0
    assert result["raw_eps"] > 0 and result["processors_eps"] > 0  # returned only once all 600 were committed
    assert result["processors_ratio"] == pytest.approx(result["processors_eps"] / result["raw_eps"], rel=1e-3)
    assert len(result["raw_eps_before_after"]) == 2  # the baseline runs before and after the processors
    run = result["runs"]["processors"][0]
    assert run["startup_s"] > 0 and run["measured_records"] + run["warmup_records"] <= 600
    # 600 records take far less than the processors' start-up: too short, and said so
    assert result["too_short"] is True and run["too_short"] is True
    assert any(line.startswith("WARNING: processors run 1 is too short") for line in said)
    assert any("(b) the processors" in line for line in said)
