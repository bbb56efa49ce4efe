"""What a topology implies, without a broker: which topics plan may prune, and the state
derived from the shipped city."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.integrate.desired import acl_bindings, desired_state, managed_topic
from tests.fixtures.city import REPO, write_city_topology
from bus.topology.names import department_group_prefix
from bus.topology.validate import load_topology


@pytest.mark.parametrize(("name", "namespace", "managed"), [
    ("city.events.camera_alarm", None, True),
    ("city.events.camera_alarm.enriched", None, False),  # the processors' output: never pruned by prefix
    ("city.sub.police.camera-maintenance", None, True),
    ("city.sub.police", None, False),
    ("city.sub.police.a.b", None, False),
    ("bus-dlq-skynet-platform", None, True),
    ("bus-connector-offsets", None, False),
    ("_bus_schemas", None, False),
    ("ns.city.events.camera_alarm", None, False),  # another namespace's
    ("ns.city.events.camera_alarm", "ns", True),
    ("city.events.camera_alarm", "ns", False),
    ("ns.bus-dlq-x", "ns", True),
    ("orders", None, False),
])
def test_only_topics_named_like_the_bus_makes_them_are_managed(name: str, namespace: str | None, managed: bool) -> None:
    assert managed_topic(name, namespace) is managed


def test_the_city_implies_every_topic_once_with_the_source_partition_count() -> None:
    topology = load_topology(REPO / "topology.yaml")
    desired = desired_state(topology)
    names = [t.name for t in desired.topics]
    assert len(names) == len(set(names))
    for sub in topology.subscriptions:
        assert desired.topic(sub.topic).partitions == topology.event_type(sub.event_type).partitions  # type: ignore[union-attr]
    compacted = {t.name for t in desired.topics if t.config["cleanup.policy"] == "compact"}
    assert compacted == {"bus-connector-offsets", "bus-connector-status", "_bus_schemas", "bus-topology",
                         "bus-camera-availability", "bus-processors-cameras-changelog",
                         "bus-processors-camera_sla-changelog", "bus-processors-storm_windows-changelog"}
    assert desired_state(topology, registry_topic=None).topic("_bus_schemas") is None
    subjects = {s.subject for s in desired.subjects}
    assert {et.subject for et in topology.event_types} | {s.subject for s in topology.subscriptions} <= subjects
    principals = {b.principal for b in desired.acls}
    assert principals <= set(desired.principals) and "User:bus" in principals
    assert {b.principal for b in desired_state(topology, service_principal="User:router").acls} >= {"User:router"}


def test_each_subscribing_department_reads_with_groups_of_its_own_prefix() -> None:
    topology = load_topology(REPO / "topology.yaml")
    groups = {(b.principal, b.name, b.prefixed) for b in desired_state(topology).acls
              if b.resource == "group" and b.operation == "READ"}
    for department in {s.department for s in topology.subscriptions}:
        assert (f"User:{department}", department_group_prefix(None, department), True) in groups
    assert department_group_prefix("ns", "police") == "ns.police."
    # No department's prefix reaches another's or the bus's groups.
    prefixes = [name for principal, name, prefixed in groups if prefixed and principal != "User:bus"]
    assert not [(a, b) for a in prefixes for b in prefixes if a != b and b.startswith(a)]
    assert not any(name.startswith(tuple(prefixes)) for principal, name, _ in groups if principal == "User:bus")


def test_the_embedded_registry_storage_is_granted_to_the_service_principal_when_planned() -> None:
    topology = load_topology(REPO / "topology.yaml")
    granted = {(b.resource, b.name, b.operation) for b in desired_state(topology).acls if b.principal == "User:bus"}
    assert {("topic", "_bus_schemas", op) for op in ("READ", "WRITE", "DESCRIBE")} <= granted
    assert ("group", "bus-", "READ") in granted  # the registry's loader reads in bus-registry-loader-<random>
    assert not any(b.name == "_bus_schemas" for b in desired_state(topology, registry_topic=None).acls)


def test_the_processors_topics_are_made_and_granted_to_the_service_principal(tmp_path: Path) -> None:
    topology = load_topology(write_city_topology(tmp_path, "ns"))
    desired = desired_state(topology)
    processors = {t.name: t for t in desired.topics if t.purpose == "processors"}
    assert set(processors) == {
        "ns.city.processors.camera_import", "ns.city.processors.camera_sla", "ns.bus-camera-availability",
        "ns.bus-processors-cameras-changelog", "ns.bus-processors-camera_sla-changelog",
        "ns.bus-processors-storm_windows-changelog",
    }
    assert processors["ns.bus-processors-storm_windows-changelog"].partitions == topology.event_type("camera_alarm").partitions
    assert processors["ns.bus-processors-cameras-changelog"].config == {"cleanup.policy": "compact"}
    granted = {(b.resource, b.name, b.operation, b.prefixed) for b in desired.acls if b.principal == "User:bus"}
    for name in (*processors, "ns.city.events.camera_alarm.enriched"):
        assert {("topic", name, op, False) for op in ("READ", "WRITE", "DESCRIBE")} <= granted, name
    created = {name for kind, name, op, _ in granted if op == "CREATE"}  # faust declares its changelogs
    assert created == {name for name in processors if name.endswith("-changelog")}
    assert ("topic", "ns.city.events.city_case", "WRITE", False) in granted  # linkage opens cases
    assert ("group", "ns.bus-", "READ", True) in granted  # the processors' group ns.bus-processors
    subscriptions = [s for s in topology.subscriptions if s.event_type != "city_case"]
    without = topology.model_copy(update={
        "event_types": [et for et in topology.event_types if et.name != "city_case"], "subscriptions": subscriptions,
        "connectors": [c for c in topology.connectors if "city_case" not in (c.publishes or [])
                       and c.subscription in {s.name for s in subscriptions} | {None}]})
    assert not any(t.purpose == "processors" for t in desired_state(without).topics)
    assert not any("processors" in b.name for b in acl_bindings(without))
