"""The shipped topology.yaml: valid, complete, and sharing what each department needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bus.topology import Topology, load_topology, validate_topology

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "topology.yaml"
DOMAIN_DEPARTMENTS = [
    "police", "city_management", "civil_affairs", "health", "housing", "statistics", "emergency_management",
    "fire_brigade", "traffic_police", "street_lighting", "environmental_protection",
]


@pytest.fixture(scope="module")
def city() -> Topology:
    return load_topology(SHIPPED)


def _districts() -> list[str]:
    district = json.loads((REPO / "schemas" / "common" / "district.avsc").read_text(encoding="utf-8"))
    return [str(symbol) for symbol in district["symbols"]]


def test_validates_with_zero_problems() -> None:
    assert validate_topology(SHIPPED) == []


def test_every_department_of_the_domain_and_every_district_centre(city: Topology) -> None:
    names = {d.name for d in city.departments}
    assert set(DOMAIN_DEPARTMENTS) <= names
    assert {f"district_{d.lower()}" for d in _districts()} <= names


def test_enough_subscriptions_and_every_department_is_used(city: Topology) -> None:
    assert len(city.subscriptions) >= 12
    subscribers = {s.department for s in city.subscriptions}
    publishers = {et.owner for et in city.event_types}
    assert {d.name for d in city.departments} <= subscribers | publishers


def test_event_types_owners_and_modes(city: Topology) -> None:
    assert {et.name: et.owner for et in city.event_types} == {
        "camera_alarm": "police",
        "camera_status": "police",
        "city_case": "city_management",
        "population_change": "civil_affairs",
    }
    assert city.event_type("population_change").compatibility == "FULL_TRANSITIVE"
    assert city.event_type("camera_alarm").topic == "city.events.camera_alarm"
    assert city.event_type("camera_alarm").subject == "city.events.camera_alarm-value"


@pytest.mark.parametrize("district", _districts())
def test_each_district_centre_gets_its_cases_and_alarms(city: Topology, district: str) -> None:
    centre = f"district_{district.lower()}"
    mine = {s.event_type: s for s in city.subscriptions if s.department == centre}
    assert set(mine) == {"camera_alarm", "city_case"}
    for sub in mine.values():
        assert sub.filter is not None
        assert district in sub.filter.model_dump_json()


def test_personal_data_goes_only_where_entitled(city: Topology) -> None:
    assert city.treatments("watchlist-vehicles") == {"plate_number": "clear"}
    assert city.treatments("liunan-alarms") == {"plate_number": "hash"}
    assert "plate_number" not in city.selection("critical-alarms")
    police = city.treatments("population-registry")
    assert set(police.values()) == {"clear"}
    assert "cause_of_death_category" not in city.selection("population-registry")
    health = city.treatments("births-and-deaths")
    assert health["birth_date"] == "clear" and health["cause_of_death_category"] == "clear"
    statistics = city.treatments("population-statistics")
    assert "clear" not in statistics.values()
    assert {"name", "national_id", "phone"}.isdisjoint(city.selection("population-statistics"))
    assert city.treatments("address-changes")["address"] == "generalise"


def test_connectors_attach_sources_and_sinks(city: Topology) -> None:
    kinds = {c.type for c in city.connectors}
    assert {"http_ingest", "mqtt_source", "rest_poller", "postgres_source", "http_webhook_sink",
            "postgres_sink"} <= kinds
    for connector in city.connectors:
        if connector.side == "source":
            assert all(city.may_publish(connector.department, et) for et in connector.publishes or [])
        else:
            assert city.subscription(connector.subscription or "").department == connector.department


# -- the city: Liuzhou ----------------------------------------------------------------------


def test_the_city_is_liuzhou_with_its_five_districts(city: Topology) -> None:
    assert city.city.name == "Liuzhou"
    assert _districts() == ["CHENGZHONG", "YUFENG", "LIUNAN", "LIUBEI", "LIUJIANG"]


def test_the_liunan_command_platform_works_the_city_level_platform_s_cases(city: Topology) -> None:
    platform = city.connector("case-system-poller")  # the city-level city-management platform
    assert (platform.department, platform.publishes) == ("city_management", ["city_case"])
    liunan = city.subscription(city.connector("liunan-cases-webhook").subscription or "")
    assert (liunan.department, liunan.event_type) == ("district_liunan", "city_case")
    assert liunan.filter is not None and "LIUNAN" in liunan.filter.model_dump_json()
    assert liunan.fields is None  # the same cases: every field of every step


def test_the_departments_that_reuse_the_camera_network_are_on_the_bus(city: Topology) -> None:
    names = {d.name for d in city.departments}
    assert {"city_management", "emergency_management", "street_lighting", "fire_brigade", "traffic_police",
            "environmental_protection", "internet_cafe_supervision", "housing"} <= names
    cameras = {s.department for s in city.subscriptions if s.event_type == "camera_status"}
    assert {"police", "street_lighting", "traffic_police", "city_management", "internet_cafe_supervision"} <= cameras


def test_the_scene_cameras_example_joins_the_shipped_city_with_zero_problems(tmp_path: Path) -> None:
    from ruamel.yaml import YAML

    yaml = YAML()
    data = yaml.load(SHIPPED.read_text(encoding="utf-8"))
    example = yaml.load((REPO / "docs" / "examples" / "scene-cameras.yaml").read_text(encoding="utf-8"))
    for section in ("subscriptions", "connectors"):
        data[section].extend(example[section])
    data["schemas_dir"] = str(REPO / "schemas")
    path = tmp_path / "topology.yaml"
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    assert validate_topology(path) == []
