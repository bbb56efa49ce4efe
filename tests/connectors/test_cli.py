"""`bus connector list | config | run | status`, as a user runs them."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import structlog
from ruamel.yaml import YAML
from typer.testing import CliRunner, Result

import bus.cli.connectors  # noqa: F401  (adds `bus connector` to the app)
from bus.cli.app import app
from bus.connect import ConnectorRunner
from bus.demo.samples import GENERATORS
from bus.kafka.broker import free_port
from bus.kafka.config import KafkaSettings
from tests.connectors.support import entry_points, install_entry_points, wait_until
from tests.fixtures.city import City
from bus.topology.validate import load_topology

REPO = Path(__file__).resolve().parents[2]


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    """The command run in this process. The root callback points the logs at the runner's
    captured stderr, which closes when the command ends: the log set-up is put back after."""
    saved = structlog.get_config()
    try:
        return CliRunner().invoke(app, args, env=env)
    finally:
        structlog.configure(**saved)


def bus_env(settings: KafkaSettings) -> dict[str, str]:
    return {
        "BUS_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "BUS_KAFKA_PROFILE": settings.kafka_profile or "embedded",
        "BUS_REGISTRY_URL": settings.registry_url,
    }


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The connector entry points installed (until pyproject.toml declares them)."""
    folder = install_entry_points(tmp_path / "site")
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_list_shows_the_installed_types_and_the_topologys_connectors(connector_city: City, installed: Path) -> None:
    result = invoke(["connector", "list", "-t", str(connector_city.path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "http_ingest" in out and "connectors.http_ingest:HttpIngest" in out
    assert "http_webhook_sink" in out and "sink" in out
    assert "skynet-platform" in out and "camera_alarm, camera_status" in out
    # Every connector of the shipped topology has its type installed.
    assert "camera-devices-mqtt" in out and "population-base-cdc" in out and "(type not installed)" not in out


def test_config_help_comes_from_the_model(installed: Path) -> None:
    result = invoke(["connector", "config", "http_webhook_sink"])
    assert result.exit_code == 0, result.output
    assert "hmac_key  (secret (env:NAME | file:PATH); required)" in result.output
    assert "e.g. hmac_key: env:FIRE_DISPATCH_HMAC_KEY" in result.output
    assert 'errors.tolerance  (' in result.output and 'default "all"' in result.output


def test_status_shows_what_a_runner_elsewhere_reported(connector_city: City, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRE_KEY", "k")
    topo = connector_city.topology
    webhook = topo.connector("fire-dispatch-webhook")
    webhook = webhook.model_copy(update={"config": {**webhook.config, "hmac_key": "env:FIRE_KEY"}})
    with ConnectorRunner(webhook, topo, connector_city.settings, entry_points=entry_points()):
        result = invoke(["connector", "status", "-t", str(connector_city.path)], bus_env(connector_city.settings))
    assert result.exit_code == 0, result.output
    assert "fire-dispatch-webhook: running on " in result.output
    assert "skynet-platform: never ran" in result.output

    as_json = invoke(["connector", "status", "fire-dispatch-webhook", "--json", "-t", str(connector_city.path)],
                     bus_env(connector_city.settings))
    document = json.loads(as_json.output)
    assert document["state"] == "stopped" and document["department"] == "fire_brigade"


def test_run_serves_a_connector_until_sigterm(connector_city: City, installed: Path) -> None:
    yaml = YAML()
    data = yaml.load(connector_city.path.read_text())
    port = free_port()
    skynet = next(c for c in data["connectors"] if c["name"] == "skynet-platform")
    skynet["config"] = {"port": port, "path": "/ingest/skynet", "auth": {"token": "env:SKYNET_INGEST_TOKEN"}}
    with connector_city.path.open("w") as out:
        yaml.dump(data, out)
    load_topology(connector_city.path)  # still a valid topology

    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(bus_env(connector_city.settings), SKYNET_INGEST_TOKEN="t0ken", PYTHONPATH=str(installed))
    code = "import sys; from bus.cli.app import main; import bus.cli.connectors; sys.argv[0] = 'bus'; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "connector", "run", "skynet-platform", "-t", str(connector_city.path)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        def answering() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                return False

        wait_until(answering, 60, "the ingest connector to listen")
        record = GENERATORS["camera_alarm"](random.Random(1))
        answer = httpx.post(f"http://127.0.0.1:{port}/ingest/skynet/camera_alarm", json=record,
                            headers={"Authorization": "Bearer t0ken"}, timeout=30)
        assert answer.status_code == 202, answer.text
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert "connector skynet-platform (http_ingest) running on http://127.0.0.1:" in out.decode()
    assert "connector skynet-platform stopped" in out.decode()
    assert "t0ken" not in err.decode()
