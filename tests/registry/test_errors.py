"""Bad requests get Confluent's error codes; unreachable brokers and registries get clear,
bounded errors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bus.errors import BusError
from bus.kafka.broker import free_port
from bus.kafka.config import KafkaSettings
from bus.registry.client import registry_call, registry_client, wait_for_registry
from bus.registry.exceptions import RegistryStartError, RegistryUnreachable
from bus.registry.server import EmbeddedRegistry
from tests.registry.helpers import avro

V1 = avro(("id", "string"))


def error_of(call: Callable[[], Any]) -> tuple[int, int, str]:
    with pytest.raises(SchemaRegistryError) as info:
        call()
    return info.value.http_status_code, info.value.error_code, info.value.error_message


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ('{"type": "record", "name": ', "not valid JSON"),
        ('{"type": "record", "name": "A", "fields": [{"name": "a", "type": "strng"}]}', "strng"),
        ("", "Empty schema"),
    ],
    ids=["not-json", "unknown-type", "empty"],
)
def test_invalid_schema_is_42201_with_the_parse_error(
    client: SchemaRegistryClient, subject: str, schema: str, words: str
) -> None:
    status, code, message = error_of(lambda: client.register_schema(subject, Schema(schema, "AVRO")))
    assert (status, code) == (422, 42201)
    assert words in message


def test_other_schema_types_are_refused_with_42201(client: SchemaRegistryClient, subject: str) -> None:
    status, code, message = error_of(lambda: client.register_schema(subject, Schema('{"type":"object"}', "JSON")))
    assert (status, code) == (422, 42201)
    assert "AVRO" in message


def test_unknown_subject_is_40401(client: SchemaRegistryClient, subject: str) -> None:
    assert error_of(lambda: client.get_versions(subject))[:2] == (404, 40401)
    assert error_of(lambda: client.get_latest_version(subject))[:2] == (404, 40401)
    assert error_of(lambda: client.lookup_schema(subject, V1))[:2] == (404, 40401)
    assert error_of(lambda: client.delete_subject(subject))[:2] == (404, 40401)


def test_unknown_version_is_40402(client: SchemaRegistryClient, subject: str) -> None:
    client.register_schema(subject, V1)
    status, code, message = error_of(lambda: client.get_version(subject, 99))
    assert (status, code) == (404, 40402)
    assert "99" in message


def test_unknown_id_is_40403(client: SchemaRegistryClient) -> None:
    assert error_of(lambda: client.get_schema(2_000_000_000))[:2] == (404, 40403)


@pytest.mark.parametrize("version", ["abc", "0", "-2", "2147483648"])
def test_invalid_version_is_42202(registry_settings: KafkaSettings, subject: str, version: str) -> None:
    answer = httpx.get(f"{registry_settings.registry_url}/subjects/{subject}/versions/{version}")
    assert answer.status_code == 422
    assert answer.json()["error_code"] == 42202


def test_bad_compatibility_level_is_42203(client: SchemaRegistryClient, subject: str) -> None:
    status, code, message = error_of(lambda: client.set_compatibility(subject, "SIDEWAYS"))
    assert (status, code) == (422, 42203)
    assert "SIDEWAYS" in message and "FULL_TRANSITIVE" in message


def test_unknown_path_and_bad_body_get_error_bodies(registry_settings: KafkaSettings, subject: str) -> None:
    url = registry_settings.registry_url
    missing = httpx.get(f"{url}/no/such/thing")
    assert (missing.status_code, missing.json()["error_code"]) == (404, 404)
    bad = httpx.post(f"{url}/subjects/{subject}/versions", content=b"{oops", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "not JSON" in bad.json()["message"]


def test_unreachable_broker_on_start_is_a_clear_bounded_error(kafka_settings: KafkaSettings) -> None:
    address = f"127.0.0.1:{free_port()}"
    settings = kafka_settings.with_broker(address, embedded=True).model_copy(update={"connect_timeout_s": 1.0})
    started = time.monotonic()
    with pytest.raises(RegistryStartError) as info:
        EmbeddedRegistry(settings).start(timeout_s=2.0)
    assert time.monotonic() - started < 10
    assert isinstance(info.value, BusError)
    assert address in str(info.value) and "bus broker" in str(info.value)


def test_wait_for_registry_reports_an_unreachable_registry(kafka_settings: KafkaSettings) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable) as info:
        wait_for_registry(kafka_settings.with_registry(url), timeout_s=0.5)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert url in message and "bus registry" in message and "BUS_REGISTRY_URL" in message


def test_wait_for_registry_returns_when_it_answers(registry_settings: KafkaSettings) -> None:
    wait_for_registry(registry_settings, timeout_s=5)


def test_registry_call_translates_transport_failures(kafka_settings: KafkaSettings) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = registry_client(kafka_settings.with_registry(url))
    started = time.monotonic()
    with pytest.raises(RegistryUnreachable, match=url):
        registry_call(client, client.get_subjects)
    assert time.monotonic() - started < 5


def test_registry_call_passes_registry_answers_through(client: SchemaRegistryClient, subject: str) -> None:
    with pytest.raises(SchemaRegistryError) as info:
        registry_call(client, lambda: client.get_versions(subject))
    assert info.value.error_code == 40401


def test_error_bodies_are_confluent_shaped(registry_settings: KafkaSettings, subject: str) -> None:
    answer = httpx.get(f"{registry_settings.registry_url}/subjects/{subject}/versions")
    assert answer.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")
    assert json.loads(answer.content) == {"error_code": 40401, "message": f"Subject '{subject}' not found."}
