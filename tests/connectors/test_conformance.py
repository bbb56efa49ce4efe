"""Every connector type of this repository through the conformance suite
(:mod:`bus.connect.conformance`, the suite outside adapter authors run too) with its
harness (``harnesses.py``): its config model, start/stop/restart without loss or repeat,
dead letters, secrets.

The tests share one city (a topic namespace of this module): each connector has a name
of its own, so its group, dead-letter topic and position are its own too."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.connect.registry import installed
from bus.kafka.admin import admin, delete_topics
from bus.kafka.config import KafkaSettings
from bus.connect.conformance import Env, Harness, check_config_model, check_live
from tests.connectors.harnesses import HARNESSES, PENDING, conformance_entry_points
from tests.connectors.services import database  # noqa: F401 (fixture of the postgres harnesses)
from tests.fixtures.city import City, write_city_topology
from bus.topology.validate import load_topology

TYPES = sorted(HARNESSES)


@pytest.fixture(scope="module")
def shared_city(tmp_path_factory: pytest.TempPathFactory, registry_settings: KafkaSettings) -> Iterator[City]:
    namespace = f"conformance_{uuid.uuid4().hex[:8]}"
    path = write_city_topology(tmp_path_factory.mktemp("conformance"), namespace)
    yield City(path, load_topology(path), registry_settings)
    topics = admin(registry_settings).list_topics(timeout=10).topics
    delete_topics(registry_settings, sorted(t for t in topics if t.startswith(f"{namespace}.")))


@pytest.fixture(params=TYPES)
def harness(request: pytest.FixtureRequest, shared_city: City, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Harness:
    return HARNESSES[request.param](Env(shared_city, tmp_path, monkeypatch, request))


def test_every_installed_connector_type_has_a_harness() -> None:
    types = set(installed(conformance_entry_points()))
    missing = sorted(types - set(HARNESSES) - set(PENDING))
    assert not missing, f"connector types without a conformance harness: {missing}; add one to harnesses.py"


@pytest.mark.parametrize("kind", TYPES)
def test_the_config_model_describes_every_setting_and_refuses_unknown_keys(kind: str) -> None:
    check_config_model(HARNESSES[kind], entry_points=conformance_entry_points())


def test_runs_dead_letters_bad_input_stops_and_restarts_without_loss_or_repeat_and_never_shows_a_secret(
    harness: Harness,
) -> None:
    check_live(harness, entry_points=conformance_entry_points())
