"""Fixtures of the demo tests: the demo city under a unique namespace whose topics
(canonical, connector offsets, status, dead letters) are deleted afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bus.kafka.admin import admin, delete_topics
from tests.connectors.services import database  # noqa: F401 (fixture)
from tests.fixtures.city import City


@pytest.fixture
def demo_city(city: City) -> Iterator[City]:
    yield city
    namespace = city.topology.namespace
    topics = admin(city.settings).list_topics(timeout=10).topics
    delete_topics(city.settings, sorted(t for t in topics if namespace and t.startswith(f"{namespace}.")))
