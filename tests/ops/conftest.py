"""Fixtures of the ops tests: consumer groups that are deleted when the test ends."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import KafkaException

from bus.kafka.admin import admin
from bus.kafka.config import KafkaSettings


@pytest.fixture
def group_factory(kafka_settings: KafkaSettings, unique_name: Callable[[str], str]) -> Iterator[Callable[[str], str]]:
    """``group_factory("g")`` -> a unique consumer group name; the groups are deleted at the end."""
    made: list[str] = []

    def make(prefix: str = "g") -> str:
        made.append(unique_name(prefix))
        return made[-1]

    yield make
    if not made:
        return
    client = admin(kafka_settings)  # keep a reference: a collected client never completes its futures
    for future in client.delete_consumer_groups(made, request_timeout=10).values():
        try:
            future.result(timeout=10)
        except KafkaException:
            pass  # never created (no commit), or already gone
