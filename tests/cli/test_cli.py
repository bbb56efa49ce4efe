"""The `bus` command as a user runs it: real processes, real broker and registry."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bus.demo.samples import GENERATORS
from bus.kafka.broker import free_port
from bus.kafka.config import KafkaSettings
from tests.fixtures.city import City

BUS = [sys.executable, "-m", "bus"]
REPO = Path(__file__).resolve().parents[2]


def run(args: list[str | bytes], settings: KafkaSettings | None = None, timeout: float = 120, **env: str):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    if settings is not None:
        environ.update(
            BUS_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
            BUS_KAFKA_PROFILE=settings.kafka_profile or "embedded",
            BUS_REGISTRY_URL=settings.registry_url,
        )
    environ.update(env)
    return subprocess.run(
        [*BUS, *args], capture_output=True, timeout=timeout, env=environ, cwd=REPO, check=False
    )


def test_help_lists_the_commands() -> None:
    result = run(["--help"])
    assert result.returncode == 0
    for command in ("up", "broker", "registry", "validate", "publish", "tail", "schemas"):
        assert command in result.stdout.decode()


def test_publish_then_tail_shows_the_record(city: City) -> None:
    record = GENERATORS["camera_alarm"](random.Random(42))
    published = run(["publish", "camera_alarm", "--as", "police", "--json", json.dumps(record), "-t", str(city.path)], city.settings)
    assert published.returncode == 0, published.stderr.decode()
    assert "published camera_alarm" in published.stdout.decode()

    tailed = run(["tail", "camera_alarm", "--headers", "--exit", "-t", str(city.path)], city.settings)
    assert tailed.returncode == 0, tailed.stderr.decode()
    lines = [json.loads(line) for line in tailed.stdout.decode().splitlines()]
    assert len(lines) == 1
    assert lines[0]["value"]["alarm_id"] == record["alarm_id"]
    assert lines[0]["key"] == record["camera_id"]
    assert lines[0]["headers"]["ce_source"] == "police"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--json", '{"alarm_id": '], "invalid JSON"),
        (["--json", b'{"camera_id": "\xff"}'], "not valid UTF-8"),
        (["--json", '{"camera_id": 5}'], "camera_id: expected a string"),
        ([], "give exactly one of --json TEXT or --file FILE.jsonl"),
    ],
    ids=["invalid json", "non-utf8", "wrong type", "no input"],
)
def test_bad_input_is_a_clear_error_without_traceback(city: City, args: list, message: str) -> None:
    result = run(["publish", "camera_alarm", "--as", "police", *args, "-t", str(city.path)], city.settings)
    assert result.returncode != 0
    err = result.stderr.decode()
    assert message in err
    assert "Traceback" not in err


def test_refused_department_exit_code_and_message(city: City) -> None:
    record = GENERATORS["camera_alarm"](random.Random(1))
    result = run(["publish", "camera_alarm", "--as", "health", "--json", json.dumps(record), "-t", str(city.path)], city.settings)
    assert result.returncode == 1
    assert "'health' may not publish camera_alarm" in result.stderr.decode()


def test_publish_file_prints_the_summary(city: City, tmp_path: Path) -> None:
    rng = random.Random(9)
    path = tmp_path / "statuses.jsonl"
    path.write_text("\n".join([json.dumps(GENERATORS["camera_status"](rng)), "{oops", json.dumps(GENERATORS["camera_status"](rng))]) + "\n")
    result = run(["publish", "camera_status", "--as", "police", "--file", str(path), "-t", str(city.path)], city.settings)
    out = result.stdout.decode()
    assert result.returncode == 1
    assert "2 published, 1 rejected" in out
    assert "line 2: invalid JSON" in out


def test_unreachable_broker_names_the_address(city: City) -> None:
    settings = city.settings.with_broker("127.0.0.1:1", embedded=False)
    record = GENERATORS["camera_alarm"](random.Random(1))
    result = run(["publish", "camera_alarm", "--as", "police", "--json", json.dumps(record), "-t", str(city.path)],
                 settings, BUS_CONNECT_TIMEOUT_S="2")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "127.0.0.1:1" in err and "Traceback" not in err


@pytest.mark.integration
def test_up_demo_starts_broker_and_registry_and_publishes_every_type(tmp_path: Path) -> None:
    result = run(
        ["up", "--demo", "--samples", "2", "--exit-after-start",
         "--broker-port", str(free_port()), "--registry-port", str(free_port()), "--web-port", str(free_port()),
         "--page-port", str(free_port())],
        timeout=180,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    for event_type in GENERATORS:
        assert f"published 2 {event_type}" in out
    assert "ready: broker" in out
    assert "router: assigned, routing" in out
    assert "ops: http://127.0.0.1:" in out
    assert "page: http://127.0.0.1:" in out
    # 8 samples published; those of the types routed as published went through the router
    # at once (camera alarms are routed from the processors' output).
    status = re.search(r"status: (\d+) published, (\d+) routed in", out)  # samples and the simulators' records
    assert status and int(status.group(1)) >= 8 and int(status.group(2)) >= 6, out[-2000:]
    # The processors run beside it, and every connector of the topology, attached to the
    # simulated departments' systems (their secrets generated for the run).
    assert "processors: started" in out and "processors running" in out
    assert "connector: camera-devices-mqtt (mqtt_source, source) running" in out
    assert "connector: case-system-poller (rest_poller, source) running on http://127.0.0.1:" in out
    assert "connectors 10/10 running" in out and "demo: the camera platform (HTTP ingest)" in out
    assert "dead letters" in out and "delivered" in out


def test_the_registry_refuses_to_listen_beyond_loopback() -> None:
    result = run(["registry", "--host", "0.0.0.0", "--port", str(free_port())], timeout=60)
    assert result.returncode == 1
    assert "refusing to serve the schema registry on 0.0.0.0" in result.stderr.decode()
