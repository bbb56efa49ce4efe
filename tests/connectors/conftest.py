"""Fixtures of the connector tests: endpoints on loopback and the clean-up of the
connector topics (offsets, status, dead letters) of a test's namespace."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from bus.kafka.admin import admin, delete_topics
from tests.connectors.support import Endpoint
from tests.fixtures.city import City


@pytest.fixture
def make_endpoint() -> Iterator[Callable[..., Endpoint]]:
    started: list[Endpoint] = []

    def make(**kwargs: object) -> Endpoint:
        endpoint = Endpoint(hmac_key=str(kwargs.pop("hmac_key", "test-hmac-key")), **kwargs).start()  # type: ignore[arg-type]
        started.append(endpoint)
        return endpoint

    yield make
    for endpoint in started:
        endpoint.stop()


@pytest.fixture
def connector_city(city: City) -> Iterator[City]:
    """The demo city; afterwards every topic of its namespace is deleted (connector
    offsets, status and dead-letter topics included)."""
    yield city
    namespace = city.topology.namespace
    topics = admin(city.settings).list_topics(timeout=10).topics
    delete_topics(city.settings, sorted(t for t in topics if namespace and t.startswith(f"{namespace}.")))
