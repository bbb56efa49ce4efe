"""A restarted registry rebuilds its state from its Kafka topic: same ids, versions, configs."""

from __future__ import annotations

from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from tests.fixtures.registry import RegistryFactory
from tests.registry.helpers import avro, compact

V1 = avro(("id", "string"))
V2 = avro(("id", "string"), {"name": "level", "type": "int", "default": 0})
OTHER = avro(("x", "double"), name="Other")
GONE = avro(("y", "double"), name="Gone")


def client_of(registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry_url})


def test_restart_keeps_ids_versions_configs_and_deletions(registry_factory: RegistryFactory) -> None:
    first = registry_factory()
    client = client_of(first.url)
    id1 = client.register_schema("alarms-value", V1)
    id2 = client.register_schema("alarms-value", V2)
    id_other = client.register_schema("cases-value", OTHER)
    assert client.register_schema("copies-value", V1) == id1
    client.set_compatibility("cases-value", "FULL")
    client.set_compatibility(level="FORWARD")
    client.register_schema("gone-value", GONE)
    client.delete_subject("gone-value")
    client.delete_subject("gone-value", permanent=True)
    client.register_schema("soft-value", OTHER)
    client.delete_subject("soft-value")
    first.stop()

    second = registry_factory(first.topic)
    again = client_of(second.url)
    assert again.get_subjects() == ["alarms-value", "cases-value", "copies-value"]
    assert again.get_subjects(deleted=True) == ["alarms-value", "cases-value", "copies-value", "soft-value"]
    assert again.get_versions("alarms-value") == [1, 2]
    latest = again.get_latest_version("alarms-value")
    assert (latest.version, latest.schema_id, latest.schema.schema_str) == (2, id2, compact(V2))
    assert again.get_version("alarms-value", 1).schema_id == id1
    assert again.get_latest_version("cases-value").schema_id == id_other
    assert again.get_schema(id1).schema_str == compact(V1)
    assert again.get_compatibility("cases-value") == "FULL"
    assert again.get_compatibility() == "FORWARD"
    assert again.lookup_schema("copies-value", V1).schema_id == id1


def test_restart_never_reuses_an_id(registry_factory: RegistryFactory) -> None:
    first = registry_factory()
    client = client_of(first.url)
    client.register_schema("keep-value", V1)
    gone_id = client.register_schema("gone-value", GONE)
    client.delete_subject("gone-value")
    client.delete_subject("gone-value", permanent=True)
    first.stop()

    second = registry_factory(first.topic)
    again = client_of(second.url)
    try:
        again.get_schema(gone_id)
        raise AssertionError("a permanently deleted schema is still served")
    except SchemaRegistryError as exc:
        assert exc.error_code == 40403
    assert again.register_schema("new-value", OTHER) == gone_id + 1
    assert again.register_schema("gone-value", GONE) == gone_id + 2
