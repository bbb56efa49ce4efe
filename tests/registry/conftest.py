"""Fixtures of the registry tests: a fresh client on the session registry, unique subjects."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.kafka.config import KafkaSettings
from bus.registry.client import registry_client


@pytest.fixture
def client(registry_settings: KafkaSettings) -> SchemaRegistryClient:
    """A new client (empty caches) on the session's registry."""
    return registry_client(registry_settings)


@pytest.fixture
def subject(unique_name: Callable[[str], str]) -> str:
    return unique_name("alarms") + "-value"
