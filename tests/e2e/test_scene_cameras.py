"""The README's worked example: four temporary cameras join the running bus by configuration
only, and the emergency command centre's wall shows them the same day.

`docs/examples/scene-cameras.csv` holds the cameras for the camera registry (so that their
alarms are located and owned, as the processors do from it); `docs/examples/scene-cameras.yaml`
is appended to the city's topology, validated and published (what `bus apply` does); the
router, already serving everyone else, picks the new subscription up, and the wall's webhook
connector delivers exactly the scene's alarms, in the fields asked for.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bus.connect import ConnectorRunner
from bus.demo.samples import GENERATORS
from bus.processors.cameras import DISTRICTS, CameraInfo, enrich_alarm, load_camera_file
from bus.publish import Publisher
from bus.routing.service import RoutingService
from bus.topology.published import publish_topology
from tests.connectors.support import Endpoint, all_entry_points, wait_until
from tests.fixtures.city import REPO, City
from bus.topology.validate import load_topology

EXAMPLE = REPO / "docs" / "examples" / "scene-cameras.yaml"
CAMERAS = REPO / "docs" / "examples" / "scene-cameras.csv"
FIELDS = {"alarm_id", "camera_id", "alarm_type", "severity", "occurred_at", "location", "owner_department",
          "snapshot_url", "description", "count"}


def _join(city: City, endpoint_url: str, folder: Path) -> Path:
    """The city's topology with the example's entries appended (the wall on loopback)."""
    yaml = YAML()
    data = yaml.load(city.path.read_text(encoding="utf-8"))
    example = yaml.load(EXAMPLE.read_text(encoding="utf-8"))
    for section in ("subscriptions", "connectors"):
        data[section].extend(example[section])
    data["connectors"][-1]["config"]["url"] = endpoint_url
    path = folder / "topology.yaml"
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return path


def _alarms(cameras: list[str], registry: dict[str, CameraInfo], seed: int) -> list[dict]:
    """One alarm per camera. The platform pushes the scene's without a place or owner; the
    processors fill them in from the camera registry (enrich_alarm), as here."""
    rng = random.Random(seed)
    out = []
    for camera in cameras:
        alarm = GENERATORS["camera_alarm"](rng) | {"camera_id": camera}
        if camera in registry:
            alarm = {k: v for k, v in alarm.items() if k not in ("location", "owner_department", "plate_number")}
            alarm |= {"alarm_type": rng.choice(["INTRUSION", "CROWD_GATHERING", "TAMPERING"]),
                      "snapshot_url": f"https://skynet.city.local/snapshots/{alarm['alarm_id']}.jpg"}
            alarm, _ = enrich_alarm(alarm, registry[camera])
        out.append(alarm)
    return out


def test_the_scene_cameras_are_the_four_temporary_cameras_the_wall_s_filter_names() -> None:
    cameras = load_camera_file(CAMERAS)
    example = YAML(typ="safe").load(EXAMPLE.read_text(encoding="utf-8"))
    (subscription,) = example["subscriptions"]
    assert [c.camera_id for c in cameras] == subscription["filter"]["in"] and len(cameras) == 4
    assert {(c.kind, c.owner_department) for c in cameras} == {("TEMPORARY", "environmental_protection")}
    assert {c.district for c in cameras} <= set(DISTRICTS)
    assert subscription["department"] == "emergency_management" and set(subscription["fields"]) == FIELDS


def test_four_temporary_cameras_join_the_running_bus_by_configuration_and_reach_the_wall(
    connector_city: City, make_endpoint, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    city = connector_city
    registry = {c.camera_id: c for c in load_camera_file(CAMERAS)}
    scene = list(registry)
    monkeypatch.setenv("EMERGENCY_WALL_HMAC_KEY", "emergency-wall-test-key")
    wall: Endpoint = make_endpoint(hmac_key="emergency-wall-test-key")
    with RoutingService(city.topology, city.settings, environ={"BUS_HASH_MASTER_KEY": "join-test"}) as routing:
        assert routing.wait_assigned(60)
        with Publisher(city.topology, city.settings) as publisher:
            before = [publisher.publish("camera_alarm", "police", a)
                      for a in _alarms([scene[0], "CAM-CZ-00012", scene[1]], registry, 1)]
        wait_until(lambda: routing.routers[None].stats.records_in >= len(before), 60, "the city routing")

        joined = load_topology(_join(city, wall.url, tmp_path))  # validated with the schemas
        _, digest = publish_topology(city.settings, tmp_path / "topology.yaml")
        wait_until(lambda: digest in routing.applied, 60, "the router to follow the published topology")
        wait_until(lambda: "longjiang-scene" in routing.routers[None].subscriptions, 30, "the new route")

        with ConnectorRunner(joined.connector("longjiang-scene-wall"), joined, city.settings,
                             entry_points=all_entry_points()):
            cameras = [scene[0], "CAM-YF-00044", scene[1], scene[2], "CAM-LN-00012", scene[3]]
            with Publisher(joined, city.settings) as publisher:
                after = [(a, publisher.publish("camera_alarm", "police", a)) for a in _alarms(cameras, registry, 2)]
            shown = [(a, p) for a, p in after if a["camera_id"] in registry]
            wait_until(lambda: len(wall.accepted()) >= len(shown), 60, "the scene on the wall")

    delivered = {r.key: r.json() for r in wall.accepted()}
    # From the moment it joined (start: now): the four cameras' alarms, no other camera's, none from before.
    assert set(delivered) == {p.ce_id for _, p in shown}
    for alarm, published in shown:
        body = delivered[published.ce_id]
        camera = registry[alarm["camera_id"]]
        assert body["alarm_id"] == alarm["alarm_id"] and body["snapshot_url"] == alarm["snapshot_url"]
        assert (body["location"], body["owner_department"]) == (camera.location, "environmental_protection")
        assert set(body) <= FIELDS
    assert all(wall.signed(r) for r in wall.accepted())
