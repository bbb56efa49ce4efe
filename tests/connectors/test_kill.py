"""A sink connector SIGKILLed in the middle of a batch, twice: every record still
reaches the endpoint, in per-key order of first delivery, and the repeats a kill causes
carry the same idempotency key, so the department's system sees each record once in effect.

`bus connector run` runs in a child process against the real broker, registry and a real
loopback endpoint that holds requests, so each kill lands while deliveries are in flight.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ruamel.yaml import YAML

from bus.kafka.admin import TopicSpec, ensure_topics
from tests.connectors.support import Endpoint, committed, produce_wire_records, wait_until
from tests.connectors.test_webhook_sink import alarms, first_deliveries, per_key_order
from tests.fixtures.city import REPO, City

HMAC_KEY = "kill-test-hmac-key"
KILLS = 2
RECORDS = 60


def _topology_with_endpoint(city: City, url: str, folder: Path) -> Path:
    yaml = YAML()
    data = yaml.load(city.path.read_text(encoding="utf-8"))
    for connector in data["connectors"]:
        if connector["name"] == "fire-dispatch-webhook":
            connector["config"] = {"url": url, "hmac_key": "env:KILL_TEST_HMAC_KEY", "timeout_s": 5,
                                   "errors.retry.delay.max.ms": 500}
    path = folder / "topology.yaml"
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return path


def _run_connector(city: City, path: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(city.settings.to_environ(), KILL_TEST_HMAC_KEY=HMAC_KEY, BUS_LOG_LEVEL="WARNING")
    return subprocess.Popen(
        [sys.executable, "-m", "bus", "connector", "run", "fire-dispatch-webhook", "--topology", str(path)],
        env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def test_a_sink_killed_mid_batch_loses_nothing_and_repeats_only_under_the_same_key(
    connector_city: City, make_endpoint: Callable[..., Endpoint], tmp_path: Path
) -> None:
    city = connector_city
    subscription = city.topology.subscription("fire-alarms")
    ensure_topics(city.settings, [TopicSpec(subscription.topic, city.topology.event_type("camera_alarm").partitions)])
    produced = produce_wire_records(city.settings, city.topology, subscription.topic, alarms(RECORDS))
    endpoint = make_endpoint(hmac_key=HMAC_KEY)
    path = _topology_with_endpoint(city, endpoint.url, tmp_path)
    group = f"{city.topology.namespace}.bus-connector-fire-dispatch-webhook"
    partitions = city.topology.event_type("camera_alarm").partitions

    for kill in range(KILLS):
        # Let a few more requests through, then hold the rest: the kill lands mid-batch.
        endpoint.gate.clear()
        endpoint.hold_after = len(endpoint.snapshot()) + 5 + 3 * kill
        child = _run_connector(city, path)
        try:
            wait_until(lambda: len(endpoint.snapshot()) >= endpoint.hold_after or child.poll() is not None,
                       60, f"deliveries before kill {kill + 1}")
            assert child.poll() is None, child.stderr.read().decode()[-3000:] if child.stderr else ""
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(10)
        endpoint.gate.set()  # held requests finish now: delivered, but their offsets were never committed

    endpoint.hold_after = None
    final = _run_connector(city, path)
    try:
        wait_until(lambda: endpoint.accepted_keys() >= {p.ce_id for p in produced} or final.poll() is not None,
                   90, "every record delivered after the kills")
        assert final.poll() is None, final.stderr.read().decode()[-3000:] if final.stderr else ""
        wait_until(lambda: sum(max(o, 0) for o in committed(city.settings, group, subscription.topic, partitions))
                   == RECORDS, 30, "every offset committed")
    finally:
        final.terminate()
        final.wait(30)

    accepted = endpoint.accepted()
    assert endpoint.accepted_keys() == {p.ce_id for p in produced}  # nothing lost
    assert all(endpoint.signed(r) for r in accepted)
    # Repeats happened (the kills cut deliveries whose offsets were not committed), and every
    # repeat carries the idempotency key of its first delivery: one record, once in effect.
    assert len(accepted) > RECORDS
    assert first_deliveries(endpoint) == per_key_order(produced)
