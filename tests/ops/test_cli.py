"""`bus lag` as a user runs it: a real process against the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bus.kafka.config import KafkaSettings
from tests.ops.helpers import commit, produce

REPO = Path(__file__).resolve().parents[2]
# The command's module is imported explicitly: bus.cli.app lists the command modules.
BUS = [sys.executable, "-c", "import bus.cli.ops; from bus.cli import main; main()"]

pytestmark = pytest.mark.integration


def bus(args: list[str], settings: KafkaSettings | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    if settings is not None:
        environ.update(BUS_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
                       BUS_KAFKA_PROFILE=settings.kafka_profile or "embedded")
    environ.update(env)
    return subprocess.run([*BUS, *args], capture_output=True, text=True, timeout=60, env=environ, cwd=REPO, check=False)


@pytest.fixture
def behind_and_done(
    kafka_settings: KafkaSettings, topic_factory: Callable[..., str], group_factory: Callable[[str], str]
) -> tuple[str, str, str]:
    """A topic of 5 records, one group 3 records behind, one at the end."""
    topic, behind, done = topic_factory("cli"), group_factory("behind"), group_factory("done")
    produce(kafka_settings, topic, 0, 5, first_ms=int(time.time() * 1000) - 30_000)
    commit(kafka_settings, behind, topic, 0, 2)
    commit(kafka_settings, done, topic, 0, 5)
    return topic, behind, done


FAST = ["--samples", "2", "--sample-interval", "0.05"]


def test_json_output_and_exit_code_2_when_a_group_is_behind(
    kafka_settings: KafkaSettings, behind_and_done: tuple[str, str, str]
) -> None:
    topic, behind, done = behind_and_done
    asked = time.time()
    result = bus(["lag", behind, done, "--json", *FAST], kafka_settings)
    took = time.time() - asked
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    groups = {g["group"]: g for g in report["groups"]}
    assert report["ok"] is False
    assert groups[behind]["status"] == "ERR" and groups[done]["status"] == "OK"
    row = groups[behind]["partitions"][0]
    assert (row["topic"], row["committed"], row["end"], row["lag"], row["status"]) == (topic, 2, 5, 3, "STOP")
    # Record 2 was stamped 28 s before the fixture produced it; the command measured it then.
    assert 27.0 <= row["lag_seconds"] <= 28.0 + took + 5.0, row


def test_table_and_exit_code_0_when_every_group_is_ok(
    kafka_settings: KafkaSettings, behind_and_done: tuple[str, str, str]
) -> None:
    _, _, done = behind_and_done
    result = bus(["lag", done, *FAST], kafka_settings)
    assert result.returncode == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    assert header == ["DEPARTMENT", "SUBSCRIPTION", "GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG",
                      "LAG_S", "STATUS"]
    assert f"group {done}: OK" in result.stdout


def test_watch_prints_one_report_per_poll(kafka_settings: KafkaSettings, behind_and_done: tuple[str, str, str]) -> None:
    _, behind, _ = behind_and_done
    result = bus(["lag", behind, "--watch", "--count", "3", "--interval", "0.1", "--json"], kafka_settings)
    assert result.returncode == 2, result.stderr
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(reports) == 3
    statuses = [r["groups"][0]["partitions"][0]["status"] for r in reports]
    assert statuses[0] == "OK" and statuses[-1] == "STOP"  # first sight is not judged; then nobody moves it


def test_unknown_group_is_a_clear_error(kafka_settings: KafkaSettings, group_factory: Callable[[str], str]) -> None:
    missing = group_factory("missing")
    result = bus(["lag", missing, *FAST], kafka_settings)
    assert result.returncode == 1
    assert f"consumer group '{missing}' does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_broker_is_a_clear_error_within_the_bounded_wait() -> None:
    started = time.monotonic()
    result = bus(["lag", "--all", *FAST], BUS_BOOTSTRAP_SERVERS="127.0.0.1:1", BUS_CONNECT_TIMEOUT_S="1")
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert "127.0.0.1:1" in result.stderr and "Traceback" not in result.stderr
