"""The README's worked example: a department joins the running bus by configuration only.

`docs/examples/new-department.yaml` is appended to the city's topology, validated and
published (what `bus apply` does); the router, already serving everyone else, picks the
new subscription up, and the department's webhook connector delivers exactly the alarms
its filter selects, in the fields it asked for.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bus.connectors import ConnectorRunner
from bus.demo.samples import GENERATORS
from bus.publish import Publisher
from bus.routing.service import RoutingService
from bus.topology.loader import load_topology
from bus.topology.published import publish_topology
from tests.connectors.support import Endpoint, all_entry_points, wait_until
from tests.fixtures.city import REPO, City

EXAMPLE = REPO / "docs" / "examples" / "new-department.yaml"


def _join(city: City, endpoint_url: str, folder: Path) -> Path:
    """The city's topology with the example's entries appended (the endpoint on loopback)."""
    yaml = YAML()
    data = yaml.load(city.path.read_text(encoding="utf-8"))
    example = yaml.load(EXAMPLE.read_text(encoding="utf-8"))
    for section in ("departments", "subscriptions", "connectors"):
        data[section].extend(example[section])
    data["connectors"][-1]["config"]["url"] = endpoint_url
    path = folder / "topology.yaml"
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return path


def _alarms(kinds: list[str], seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [GENERATORS["camera_alarm"](rng) | {"alarm_type": kind} for kind in kinds]


def test_a_department_joins_the_running_bus_by_configuration_only(
    connector_city: City, make_endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    city = connector_city
    monkeypatch.setenv("WATER_AFFAIRS_HMAC_KEY", "water-affairs-test-key")
    endpoint: Endpoint = make_endpoint(hmac_key="water-affairs-test-key")
    kinds = ["CROWD_GATHERING", "INTRUSION", "CROWD_GATHERING", "FIRE_SMOKE", "CROWD_GATHERING"]
    with RoutingService(city.topology, city.settings, environ={"BUS_HASH_MASTER_KEY": "join-test"}) as routing:
        assert routing.wait_assigned(60)
        with Publisher(city.topology, city.settings) as publisher:
            before = [publisher.publish("camera_alarm", "police", a) for a in _alarms(kinds, 1)]
        wait_until(lambda: routing.routers[None].stats.records_in >= len(before), 60, "the city routing")

        joined = load_topology(_join(city, endpoint.url, tmp_path))  # validated with the schemas
        _, digest = publish_topology(city.settings, tmp_path / "topology.yaml")
        wait_until(lambda: digest in routing.applied, 60, "the router to follow the published topology")
        wait_until(lambda: "embankment-crowds" in routing.routers[None].subscriptions, 30, "the new route")

        with ConnectorRunner(joined.connector("water-affairs-webhook"), joined, city.settings,
                             entry_points=all_entry_points()):
            with Publisher(joined, city.settings) as publisher:
                after = [(a, publisher.publish("camera_alarm", "police", a)) for a in _alarms(kinds, 2)]
            crowds = [(a, p) for a, p in after if a["alarm_type"] == "CROWD_GATHERING"]
            wait_until(lambda: len(endpoint.accepted()) >= len(crowds), 60, "the department's deliveries")

    delivered = {r.key: r.json() for r in endpoint.accepted()}
    # From the moment it joined (start: now): its crowd alarms, none of the others, none from before.
    assert set(delivered) == {p.ce_id for _, p in crowds}
    for alarm, published in crowds:
        body = delivered[published.ce_id]
        assert body["alarm_id"] == alarm["alarm_id"] and body["alarm_type"] == "CROWD_GATHERING"
        assert set(body) <= {"alarm_id", "camera_id", "alarm_type", "severity", "occurred_at", "location", "count"}
    assert all(endpoint.signed(r) for r in endpoint.accepted())
