"""Fixtures of the integrator tooling tests: a city under its own namespace, with its own
registry storage topic name, cleaned up (topics, subjects) at the end."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus.kafka.admin import delete_topics, wait_for_broker
from bus.kafka.config import KafkaSettings
from bus.registry.client import registry_client
from tests.fixtures.city import write_city_topology


@dataclass
class Namespace:
    """One test's topology file, settings and the registry storage topic the plan manages."""

    path: Path
    name: str
    settings: KafkaSettings
    registry_topic: str


@pytest.fixture
def namespace(tmp_path: Path, registry_settings: KafkaSettings, unique_name: Callable[[str], str]) -> Iterator[Namespace]:
    name = unique_name("plan").replace("-", "_").lower()
    made = Namespace(write_city_topology(tmp_path, name), name, registry_settings, f"_bus_schemas-plan-{uuid.uuid4().hex[:8]}")
    yield made
    topics = wait_for_broker(registry_settings).list_topics(timeout=10).topics
    delete_topics(registry_settings, [t for t in topics if t.startswith(name + ".") or t == made.registry_topic])
    registry = registry_client(registry_settings)
    for subject in registry.get_subjects(subject_prefix=name + "."):
        registry.delete_subject(subject)
        registry.delete_subject(subject, permanent=True)
