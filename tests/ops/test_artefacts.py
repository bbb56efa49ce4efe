"""The ops artefacts: Prometheus alert rules and the Grafana dashboard speak only of
metrics the bus exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bus.ops.metrics import BusMetrics, exported_names

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "ops" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "ops" / "grafana" / "city-bus.json"

#: Metric names are the bus's own (bus_*) and kafka-lag-exporter's (kafka_*).
METRIC = re.compile(r"\b(?:bus|kafka)_[a-z0-9_]+\b")
EXPORTED = exported_names(BusMetrics())

#: The alerts the issue asks for, by what they watch.
REQUIRED_ALERTS = {
    "BusConsumerLagGrowing": 'status="WARN"',
    "BusConsumerStalled": 'status="STALL"',
    "BusConsumerStopped": 'status="STOP"',
    "BusDeadLetters": "bus_dead_letters_total",
    "BusCameraFleetAvailabilityLow": "< 0.95",
    "BusConsumerTimeLagHigh": "kafka_consumergroup_group_max_lag_seconds",
}


def load_rules() -> list[dict[str, Any]]:
    data = YAML(typ="safe").load(ALERTS.read_text(encoding="utf-8"))
    assert isinstance(data, dict) and set(data) == {"groups"}, "top level is `groups:` only"
    rules = []
    for group in data["groups"]:
        assert set(group) == {"name", "rules"}, f"group keys: {sorted(group)}"
        assert isinstance(group["rules"], list) and group["rules"]
        rules.extend(group["rules"])
    return rules


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rules_have_the_structure_prometheus_loads() -> None:
    rules = load_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names are unique"
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule.get("alert")
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
        assert re.fullmatch(r"\d+[smhd]", rule["for"]), f"{rule['alert']}: for: {rule['for']}"
        assert rule["labels"].get("severity") in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_every_rule_watches_exported_metrics() -> None:
    for rule in load_rules():
        used = set(METRIC.findall(rule["expr"]))
        assert used, f"{rule['alert']} mentions no metric of the bus"
        assert used <= EXPORTED, f"{rule['alert']}: not exported: {sorted(used - EXPORTED)}"


def test_the_issue_s_alerts_are_there() -> None:
    by_name = {r["alert"]: r["expr"] for r in load_rules()}
    for name, needle in REQUIRED_ALERTS.items():
        assert name in by_name, f"missing alert {name}"
        assert needle in by_name[name], f"{name} should watch {needle}"


def _expressions(node: Any) -> list[str]:
    """Every PromQL expression of a dashboard: targets' expr, variables' queries."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            elif key == "query" and isinstance(value, dict) and isinstance(value.get("query"), str):
                found.append(value["query"])
            else:
                found.extend(_expressions(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_expressions(item))
    return found


def test_dashboard_references_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
    expressions = _expressions(dashboard)
    used = {name for expr in expressions for name in METRIC.findall(expr)}
    assert used <= EXPORTED, f"not exported: {sorted(used - EXPORTED)}"
    # Every kind of metric the issue names has a panel.
    for needed in ("kafka_consumergroup_group_lag", "kafka_consumergroup_group_lag_seconds", "bus_records_in_total",
                   "bus_records_out_total", "bus_dead_letters_total", "bus_connector_errors_total",
                   "bus_router_transaction_seconds_bucket", "bus_camera_fleet_availability",
                   "bus_consumergroup_partition_status"):
        assert needed in used, f"no panel shows {needed}"


def test_dashboard_panels_have_targets_and_do_not_overlap() -> None:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
        pos = panel["gridPos"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        assert pos["x"] + pos["w"] <= 24
        cells |= mine
