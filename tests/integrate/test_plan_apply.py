"""`bus plan` / `bus apply` against the session's broker and embedded registry, on the demo
city under a namespace of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType
from ruamel.yaml import YAML

from bus.integrate.apply import apply
from bus.integrate.desired import desired_state
from bus.integrate.plan import (
    AddPartitions,
    AlterConfig,
    Conflict,
    CreateAcl,
    CreateTopic,
    DeleteSubject,
    DeleteTopic,
    Plan,
    RegisterSchema,
    SetCompatibility,
    make_plan,
    render,
)
from bus.kafka.admin import TopicSpec, ensure_topics, wait_for_broker
from bus.kafka.config import KafkaSettings
from bus.kafka.exceptions import BrokerUnreachable
from bus.topology.names import router_dlq_topic
from bus.topology.published import TopologyWatcher
from tests.integrate.conftest import Namespace
from bus.topology.validate import load_topology

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# `import bus.cli.integrate` registers the commands whether or not bus.cli.app imports it yet.
BUS = [sys.executable, "-c", "import bus.cli.integrate; from bus.cli.app import main; main()"]


def plan_of(ns: Namespace, path: Path | None = None, **kwargs: Any) -> Plan:
    return make_plan(load_topology(path or ns.path), ns.settings, registry_topic=ns.registry_topic, **kwargs)


def edited(ns: Namespace, change: Any, name: str = "edited.yaml") -> Path:
    """A copy of the namespace's topology file with ``change(data)`` applied."""
    yaml = YAML()
    data = yaml.load(ns.path.read_text(encoding="utf-8"))
    change(data)
    path = ns.path.with_name(name)
    with path.open("w", encoding="utf-8") as out:
        yaml.dump(data, out)
    return path


def kinds(actions: list[Any]) -> set[tuple[str, str]]:
    return {(a.kind, a.target) for a in actions}


def run_cli(args: list[str], settings: KafkaSettings) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    environ.update(BUS_BOOTSTRAP_SERVERS=settings.bootstrap_servers, BUS_KAFKA_PROFILE=settings.kafka_profile or "embedded",
                   BUS_REGISTRY_URL=settings.registry_url)
    return subprocess.run([*BUS, *args], capture_output=True, text=True, timeout=180, env=environ, cwd=REPO, check=False)


def test_plan_of_an_empty_namespace_lists_everything_and_apply_twice_changes_nothing(namespace: Namespace) -> None:
    topology = load_topology(namespace.path)
    desired = desired_state(topology, registry_topic=namespace.registry_topic)
    first = plan_of(namespace)

    assert first.exit_code == 2
    assert kinds([a for a in first.actions if isinstance(a, CreateTopic)]) == {("create_topic", t.name) for t in desired.topics}
    registrations = [a for a in first.actions if isinstance(a, RegisterSchema)]
    assert {a.target for a in registrations} == {s.subject for s in desired.subjects}
    assert all(a.new_subject for a in registrations)
    assert not first.conflicts and not first.deletions
    # Every binding is either to be created or reported as not applicable on this broker.
    acl_actions = [a.binding for a in first.actions if isinstance(a, CreateAcl)]
    assert sorted(acl_actions + first.unapplied_acls) == desired.acls
    assert (not first.acl_support.supported) == bool(first.unapplied_acls)
    text = render(first)
    assert f"+ create topic {namespace.name}.city.events.camera_alarm (canonical; 12 partitions, cleanup.policy=delete, retention: broker default)" in text
    assert f"+ register schema subject {namespace.name}.city.sub.fire_brigade.fire-alarms-value" in text
    assert f"Plan: {len(first.actions)} to create, 0 to change, 0 to delete." in text

    result = apply(topology, namespace.settings, registry_topic=namespace.registry_topic)
    assert result.count("failed") == 0, [o.line() for o in result.outcomes if o.status == "failed"]
    assert result.exit_code == 0
    assert result.count("done") == len(first.actions)

    second = plan_of(namespace)
    assert second.empty and second.exit_code == 0, render(second)
    assert "No changes" in render(second)
    assert apply(topology, namespace.settings, registry_topic=namespace.registry_topic).outcomes == []
    topics = wait_for_broker(namespace.settings).list_topics(timeout=10).topics
    assert len(topics[f"{namespace.name}.city.sub.fire_brigade.fire-alarms"].partitions) == 12


def test_acls_are_shown_per_department(namespace: Namespace) -> None:
    made = plan_of(namespace)
    text = render(made)
    ns = namespace.name
    police = [b for b in made.desired.acls if b.principal == "User:police"]
    assert {(b.operation, b.name) for b in police if b.name == f"{ns}.city.events.camera_alarm"} == {
        ("WRITE", f"{ns}.city.events.camera_alarm"), ("DESCRIBE", f"{ns}.city.events.camera_alarm")}
    assert not any(b.operation == "READ" and ".city.events." in b.name for b in police)  # never a canonical topic
    fire = {(b.resource, b.name, b.operation) for b in made.desired.acls if b.principal == "User:fire_brigade"}
    assert ("topic", f"{ns}.city.sub.fire_brigade.fire-alarms", "READ") in fire
    assert ("group", f"{ns}.bus-connector-fire-dispatch-webhook", "READ") in fire
    assert not any(op == "WRITE" for _, _, op in fire)  # fire brigade owns no event type
    symbol = " " if made.unapplied_acls else "+"
    assert "  User:police\n" in text
    assert f"    {symbol} ALLOW WRITE, DESCRIBE on topic {ns}.city.events.camera_alarm\n" in text
    assert f"    {symbol} ALLOW WRITE, DESCRIBE on transactional id {ns}.bus-router (prefix)" in text
    if made.unapplied_acls:
        assert f"ACLs: not supported by this broker ({len(made.desired.acls)} bindings not applied)" in text
        assert made.acl_support.reason


def test_plan_shows_exactly_a_partition_change_and_a_new_subscription(namespace: Namespace) -> None:
    topology = load_topology(namespace.path)
    apply(topology, namespace.settings, registry_topic=namespace.registry_topic)
    ns = namespace.name

    def change(data: Any) -> None:
        next(et for et in data["event_types"] if et["name"] == "camera_status")["partitions"] = 16
        data["subscriptions"].append({"name": "status-audit", "department": "statistics", "event_type": "city_case",
                                      "description": "Cases, for the yearly report", "fields": ["case_id", "status"]})

    changed = plan_of(namespace, edited(namespace, change))
    status_topics = [f"{ns}.city.events.camera_status"] + [
        s.topic for s in topology.subscriptions if s.event_type == "camera_status"] + [
        # the processors' topics keyed by camera, co-partitioned with camera_status
        f"{ns}.city.processors.camera_import", f"{ns}.city.processors.camera_sla",
        f"{ns}.bus-processors-cameras-changelog", f"{ns}.bus-processors-camera_sla-changelog"]
    new_topic, new_subject = f"{ns}.city.sub.statistics.status-audit", f"{ns}.city.sub.statistics.status-audit-value"
    expected = {("add_partitions", t) for t in status_topics} | {
        ("create_topic", new_topic), ("register_schema", new_subject)}
    non_acl = [a for a in changed.actions if not isinstance(a, CreateAcl)]
    assert kinds(non_acl) == expected
    assert all(a.current == 12 and a.wanted == 16 for a in non_acl if isinstance(a, AddPartitions))
    new_acls = {("User:statistics", new_topic, "READ"), ("User:statistics", new_topic, "DESCRIBE"),
                ("User:bus", new_topic, "WRITE"), ("User:bus", new_topic, "DESCRIBE")}
    missing = [a.binding for a in changed.actions if isinstance(a, CreateAcl)] + changed.unapplied_acls
    if changed.acl_support.supported:
        assert {(b.principal, b.name, b.operation) for b in missing} == new_acls
    assert not changed.conflicts and not changed.deletions
    assert changed.exit_code == 2

    result = apply(load_topology(changed_path := namespace.path.with_name("edited.yaml")), namespace.settings,
                   registry_topic=namespace.registry_topic)
    statuses = {o.action.target: o.status for o in result.outcomes if isinstance(o.action, AddPartitions)}
    assert set(statuses) == set(status_topics)
    assert set(statuses.values()) <= {"done", "not supported"}  # the embedded broker lacks CreatePartitions
    assert result.count("failed") == 0
    after = plan_of(namespace, changed_path)
    assert kinds(after.actions) == {("add_partitions", t) for t, s in statuses.items() if s == "not supported"}


def test_fewer_partitions_than_the_topic_has_is_a_conflict_apply_leaves_alone(namespace: Namespace) -> None:
    apply(load_topology(namespace.path), namespace.settings, registry_topic=namespace.registry_topic)

    def change(data: Any) -> None:
        next(et for et in data["event_types"] if et["name"] == "city_case")["partitions"] = 3

    path = edited(namespace, change)
    made = plan_of(namespace, path)
    assert [c.target for c in made.conflicts] == [f"{namespace.name}.city.events.city_case"] + [
        s.topic for s in load_topology(path).subscriptions if s.event_type == "city_case"]
    assert all(isinstance(c, Conflict) and "cannot remove partitions" in c.message for c in made.conflicts)
    assert made.exit_code == 2 and not made.actions
    result = apply(load_topology(path), namespace.settings, registry_topic=namespace.registry_topic, plan=made)
    assert result.outcomes == [] and result.exit_code == 1


def test_settings_and_compatibility_drift_are_corrected(namespace: Namespace) -> None:
    topology = load_topology(namespace.path)
    dlq = router_dlq_topic(topology.namespace)
    ensure_topics(namespace.settings, [TopicSpec.compacted(dlq)])  # made by hand with the wrong policy
    drifted = plan_of(namespace)
    alter = [a for a in drifted.actions if isinstance(a, AlterConfig)]
    assert [(a.target, a.key, a.current, a.wanted) for a in alter] == [(dlq, "cleanup.policy", "compact", "delete")]
    assert f"~ alter topic {dlq}: cleanup.policy compact -> delete" in render(drifted)
    result = apply(topology, namespace.settings, registry_topic=namespace.registry_topic, plan=drifted)
    assert result.count("failed") == 0, [o.line() for o in result.outcomes if o.status == "failed"]
    client = wait_for_broker(namespace.settings)  # kept: a collected client never completes its futures
    config = client.describe_configs([ConfigResource(ResourceType.TOPIC, dlq)])
    assert next(iter(config.values())).result(timeout=10)["cleanup.policy"].value == "delete"

    def change(data: Any) -> None:
        next(et for et in data["event_types"] if et["name"] == "camera_alarm")["compatibility"] = "FULL"

    path = edited(namespace, change)
    made = plan_of(namespace, path)
    subjects = {f"{namespace.name}.city.events.camera_alarm-value"} | {
        s.subject for s in topology.subscriptions if s.event_type == "camera_alarm"}
    assert kinds(made.actions) == {("set_compatibility", s) for s in subjects}
    assert all(a.current == "BACKWARD" and a.wanted == "FULL" for a in made.actions if isinstance(a, SetCompatibility))
    result = apply(load_topology(path), namespace.settings, registry_topic=namespace.registry_topic)
    assert result.count("done") == len(subjects)
    assert plan_of(namespace, path).empty


def test_a_removed_subscription_would_be_deleted_only_with_prune(namespace: Namespace) -> None:
    apply(load_topology(namespace.path), namespace.settings, registry_topic=namespace.registry_topic)
    ns = namespace.name

    def change(data: Any) -> None:
        data["subscriptions"] = [s for s in data["subscriptions"] if s["name"] != "deaths"]
        data["connectors"] = [c for c in data["connectors"] if c.get("subscription") != "deaths"]

    path = edited(namespace, change)
    gone = f"{ns}.city.sub.civil_affairs.deaths"
    kept = plan_of(namespace, path)
    assert kinds(kept.deletions) >= {("delete_topic", gone), ("delete_subject", f"{gone}-value")}
    assert not kept.actions and kept.exit_code == 0  # without --prune apply would not delete them
    assert f"would delete topic {gone} (not in the topology)" in render(kept)
    pruning = plan_of(namespace, path, prune=True)
    assert pruning.exit_code == 2
    result = apply(load_topology(path), namespace.settings, registry_topic=namespace.registry_topic, prune=True)
    assert {o.action.target for o in result.outcomes if isinstance(o.action, (DeleteTopic, DeleteSubject))} >= {
        gone, f"{gone}-value"}
    assert result.count("failed") == 0
    assert gone not in wait_for_broker(namespace.settings).list_topics(timeout=10).topics
    assert plan_of(namespace, path, prune=True).empty


def test_cli_plan_apply_plan_exit_codes_and_json(namespace: Namespace) -> None:
    args = ["--topology", str(namespace.path), "--registry-topic", namespace.registry_topic]
    planned = run_cli(["plan", *args, "--json"], namespace.settings)
    assert planned.returncode == 2, planned.stderr
    body = json.loads(planned.stdout)
    assert body["changes"] == len(body["actions"]) > 0 and body["exit_code"] == 2
    refused = run_cli(["apply", *args], namespace.settings)  # no terminal, no --yes
    assert refused.returncode == 1 and "--yes" in refused.stderr
    applied = run_cli(["apply", *args, "--yes"], namespace.settings)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Apply: " in applied.stdout and " 0 failed" in applied.stdout
    # What was applied is published for the running routers, which follow it.
    watcher = TopologyWatcher(namespace.settings, namespace.name)
    try:
        served = watcher.poll(5.0)
    finally:
        watcher.close()
    assert served is not None and [s.name for s in served.subscriptions] == [
        s.name for s in load_topology(namespace.path).subscriptions]
    assert f"topology published as {watcher.digest}" in applied.stdout
    again = run_cli(["plan", *args], namespace.settings)
    assert again.returncode == 0, again.stdout
    assert "No changes" in again.stdout


def test_bad_topology_is_a_clear_error(namespace: Namespace) -> None:
    def change(data: Any) -> None:
        data["subscriptions"][0]["department"] = "fire_brigad"

    path = edited(namespace, change, "bad.yaml")
    done = run_cli(["plan", "--topology", str(path)], namespace.settings)
    assert done.returncode == 1
    assert "bad.yaml:" in done.stderr and "fire_brigad" in done.stderr and "did you mean 'fire_brigade'" in done.stderr
    assert done.stdout == ""


def test_unreachable_broker_is_an_error_not_a_plan(namespace: Namespace) -> None:
    settings = namespace.settings.with_broker("127.0.0.1:1", embedded=True)
    with pytest.raises(BrokerUnreachable, match="no Kafka broker answered at 127.0.0.1:1"):
        make_plan(load_topology(namespace.path), settings.model_copy(update={"connect_timeout_s": 1.0}))
