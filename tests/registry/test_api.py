"""The embedded registry through confluent-kafka's own SchemaRegistryClient, on the real broker."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext

from bus.kafka.config import KafkaSettings
from tests.registry.helpers import avro, compact

V1 = avro(("id", "string"), ("level", "int"))
V2 = avro(("id", "string"), ("level", "int"), {"name": "severity", "type": "string", "default": "LOW"})
V2_NO_DEFAULT = avro(("id", "string"), ("level", "int"), ("severity", "string"))


def refused(call: Callable[[], Any]) -> SchemaRegistryError:
    with pytest.raises(SchemaRegistryError) as info:
        call()
    return info.value


def test_register_returns_an_id_and_the_schema_is_fetched_by_it(client: SchemaRegistryClient, subject: str) -> None:
    schema_id = client.register_schema(subject, V1)
    fetched = client.get_schema(schema_id)
    assert fetched.schema_str == compact(V1)
    assert fetched.schema_type == "AVRO"


def test_same_schema_again_same_id_and_no_new_version(client: SchemaRegistryClient, subject: str) -> None:
    first = client.register_schema(subject, V1)
    reformatted = Schema("  " + V1.schema_str.replace(", ", ",\n   "), "AVRO")
    assert registry_client_fresh(client).register_schema(subject, reformatted) == first
    assert client.get_versions(subject) == [1]


def registry_client_fresh(client: SchemaRegistryClient) -> SchemaRegistryClient:
    """A client without the caches of ``client`` (so the request reaches the registry)."""
    return SchemaRegistryClient(client.config())


def test_same_schema_under_another_subject_gets_the_same_global_id(
    client: SchemaRegistryClient, unique_name: Callable[[str], str]
) -> None:
    unique = avro(("only_here", "string"), name=unique_name("R").replace("-", "_"))
    first, second = unique_name("a") + "-value", unique_name("b") + "-value"
    schema_id = client.register_schema(first, unique)
    assert client.register_schema(second, unique) == schema_id
    usages = {(v.subject, v.version) for v in client.get_schema_versions(schema_id)}
    assert usages == {(first, 1), (second, 1)}


def test_versions_latest_and_a_given_version(client: SchemaRegistryClient, subject: str) -> None:
    id1 = client.register_schema(subject, V1)
    id2 = client.register_schema(subject, V2)
    assert id2 != id1
    assert client.get_versions(subject) == [1, 2]
    latest = client.get_latest_version(subject)
    assert (latest.subject, latest.version, latest.schema_id) == (subject, 2, id2)
    assert latest.schema.schema_str == compact(V2)
    first = client.get_version(subject, 1)
    assert (first.version, first.schema_id) == (1, id1)


def test_subjects_lists_registered_subjects(client: SchemaRegistryClient, subject: str) -> None:
    client.register_schema(subject, V1)
    assert subject in client.get_subjects()
    assert client.get_subjects(subject_prefix=subject) == [subject]


def test_lookup(client: SchemaRegistryClient, subject: str) -> None:
    client.register_schema(subject, V1)
    schema_id = client.register_schema(subject, V2)
    found = registry_client_fresh(client).lookup_schema(subject, V2)
    assert (found.subject, found.version, found.schema_id) == (subject, 2, schema_id)
    error = refused(lambda: registry_client_fresh(client).lookup_schema(subject, V2_NO_DEFAULT))
    assert (error.http_status_code, error.error_code) == (404, 40403)


def test_incompatible_registration_is_refused_with_409_naming_the_field(
    client: SchemaRegistryClient, subject: str
) -> None:
    client.register_schema(subject, V1)
    error = refused(lambda: client.register_schema(subject, V2_NO_DEFAULT))
    assert (error.http_status_code, error.error_code) == (409, 409)
    assert "field 'severity' was added without a default" in error.error_message
    assert "give it a default" in error.error_message
    assert client.get_versions(subject) == [1]


def test_compatibility_endpoint(client: SchemaRegistryClient, registry_settings: KafkaSettings, subject: str) -> None:
    client.register_schema(subject, V1)
    assert client.test_compatibility(subject, V2) is True
    assert client.test_compatibility(subject, V2_NO_DEFAULT, version=1) is False
    assert client.test_compatibility_all_versions(subject, V2_NO_DEFAULT) is False
    answer = httpx.post(
        f"{registry_settings.registry_url}/compatibility/subjects/{subject}/versions/latest?verbose=true",
        json=V2_NO_DEFAULT.to_dict(),
    ).json()
    assert answer["is_compatible"] is False
    [message] = answer["messages"]
    assert "'severity'" in message and "version 1" in message


def test_subject_compatibility_config(client: SchemaRegistryClient, subject: str) -> None:
    assert client.get_compatibility(subject) == "BACKWARD"  # the global default
    assert client.set_compatibility(subject, "forward") == {"compatibility": "FORWARD"}
    assert client.get_compatibility(subject) == "FORWARD"
    client.register_schema(subject, V1)
    client.register_schema(subject, V2_NO_DEFAULT)  # fine under FORWARD
    assert client.get_config(subject).compatibility_level.value == "FORWARD"
    assert client.delete_config(subject).compatibility_level.value == "FORWARD"
    assert client.get_compatibility(subject) == "BACKWARD"


def test_none_allows_anything(client: SchemaRegistryClient, subject: str) -> None:
    client.set_compatibility(subject, "NONE")
    client.register_schema(subject, V1)
    client.register_schema(subject, avro(("level", "bytes")))
    assert client.get_versions(subject) == [1, 2]


def test_transitive_mode_checks_every_version(client: SchemaRegistryClient, subject: str) -> None:
    client.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    client.register_schema(subject, V1)
    client.register_schema(subject, V2)
    error = refused(lambda: client.register_schema(subject, V2_NO_DEFAULT))  # fine vs v2, not vs v1
    assert error.error_code == 409 and "version 1" in error.error_message


def test_delete_subject_soft_then_permanent(client: SchemaRegistryClient, subject: str) -> None:
    unique = avro(("gone", "string"), name="Gone" + subject.replace("-", "_"))
    schema_id = client.register_schema(subject, unique)
    assert refused(lambda: client.delete_subject(subject, permanent=True)).error_code == 40405
    assert client.delete_subject(subject) == [1]
    assert subject not in client.get_subjects()
    assert subject in client.get_subjects(deleted=True)
    assert refused(lambda: client.get_versions(subject)).error_code == 40401
    assert client.get_versions(subject, deleted=True) == [1]
    assert registry_client_fresh(client).get_schema(schema_id).schema_str == compact(unique)  # still readable
    assert refused(lambda: client.delete_subject(subject)).error_code == 40404
    assert client.delete_subject(subject, permanent=True) == [1]
    assert subject not in client.get_subjects(deleted=True)
    assert refused(lambda: registry_client_fresh(client).get_schema(schema_id)).error_code == 40403


def test_delete_version(client: SchemaRegistryClient, subject: str) -> None:
    client.register_schema(subject, V1)
    client.register_schema(subject, V2)
    assert client.delete_version(subject, 2) == 2
    assert client.get_versions(subject) == [1]
    assert client.get_latest_version(subject).version == 1
    assert client.get_versions(subject, deleted=True) == [1, 2]
    assert refused(lambda: client.delete_version(subject, 1, permanent=True)).error_code == 40407
    assert client.delete_version(subject, 2, permanent=True) == 2
    assert client.get_versions(subject, deleted=True) == [1]
    assert registry_client_fresh(client).register_schema(subject, V2) > 0
    assert client.get_versions(subject) == [1, 3]  # version numbers are never reused


def test_avro_serializer_and_deserializer_work_against_it(client: SchemaRegistryClient, subject: str) -> None:
    topic = subject.removesuffix("-value")
    serializer = AvroSerializer(client, V1.schema_str)
    ctx = SerializationContext(topic, MessageField.VALUE)
    payload = serializer({"id": "cam-7", "level": 3}, ctx)
    assert payload[0] == 0  # Confluent wire format: magic byte, then the schema id
    schema_id = int.from_bytes(payload[1:5], "big")
    assert client.get_latest_version(subject).schema_id == schema_id
    decoded = AvroDeserializer(registry_client_fresh(client))(payload, ctx)
    assert decoded == {"id": "cam-7", "level": 3}


def test_responses_use_the_registry_content_type(registry_settings: KafkaSettings, subject: str) -> None:
    url = registry_settings.registry_url
    answer = httpx.post(
        f"{url}/subjects/{subject}/versions",
        content=json.dumps({"schema": V1.schema_str}),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200 and answer.json()["id"] > 0
    assert answer.headers["content-type"].startswith("application/vnd.schemaregistry.v1+json")


def test_concurrent_registrations_get_one_id_per_schema(
    client: SchemaRegistryClient, unique_name: Callable[[str], str]
) -> None:
    tag = unique_name("c").replace("-", "_")
    schemas = [avro(("f", "string"), name=f"Concurrent{i}_{tag}") for i in range(4)]
    jobs = [(unique_name(f"c{i}") + "-value", schemas[i % 4]) for i in range(12)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(lambda job: registry_client_fresh(client).register_schema(*job), jobs))
    assert len(set(ids)) == 4
    assert all(ids[i] == ids[i % 4] for i in range(12))
