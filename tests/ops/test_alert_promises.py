"""The alert rules that watch the city's promises fire where a promise is broken, and only
there: promtool's unit tests (``tests/ops/alerts_promises.test.yml``) evaluate the shipped
rules on series of the bus's own metrics."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bus.ops.metrics import BusMetrics, exported_names

HERE = Path(__file__).resolve().parent
TESTS = HERE / "alerts_promises.test.yml"
PROMISES = ("BusCameraFaultNotAnswered", "BusCameraFaultNotRepaired", "BusSharingBelowTarget",
            "BusCameraFleetAvailabilityLow")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_unit_tests_of_the_promises_pass() -> None:
    done = subprocess.run(["promtool", "test", "rules", TESTS.name], cwd=HERE, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_promise_has_a_firing_and_a_quiet_case() -> None:
    tests = YAML(typ="safe").load(TESTS.read_text(encoding="utf-8"))["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for alert in PROMISES:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{alert}: no case where it stays quiet"


def test_the_series_are_metrics_the_bus_exports() -> None:
    exported = exported_names(BusMetrics())
    tests = YAML(typ="safe").load(TESTS.read_text(encoding="utf-8"))["tests"]
    names = {re.match(r"[a-z_]+", series["series"]).group(0)  # type: ignore[union-attr]
             for test in tests for series in test["input_series"]}
    assert names <= exported, sorted(names - exported)
