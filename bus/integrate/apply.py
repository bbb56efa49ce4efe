"""``bus apply``: carry out a plan, idempotently, and say what happened to each action.

Apply works from a fresh plan (or the one given), so running it twice changes nothing the
second time. Every action gets an outcome: ``done``, ``not supported`` (the broker does not
implement the request: reported, not failed on, as the embedded broker (docs/embedded-broker.md) does for
CreatePartitions) or ``failed`` (with the broker's or registry's message). Conflicts are
never acted on. Deletions happen only with ``prune``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    ResourceType,
)
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bus.errors import BusError
from bus.integrate.acls import to_filter, to_kafka
from bus.integrate.desired import DEFAULT_SERVICE_PRINCIPAL, REGISTRY_TOPIC
from bus.integrate.plan import (
    EXIT_ERROR,
    EXIT_NO_CHANGES,
    Action,
    AddPartitions,
    AlterConfig,
    CreateAcl,
    CreateTopic,
    DeleteAcl,
    DeleteSubject,
    DeleteTopic,
    Plan,
    RegisterSchema,
    SetCompatibility,
    make_plan,
)
from bus.kafka.admin import TopicSpec, delete_topics, ensure_topics, wait_for_broker
from bus.kafka.config import KafkaSettings
from bus.registry.client import registry_call, registry_client
from bus.registry.registration import ensure_registered
from bus.topology.models import Topology

Status = Literal["done", "not supported", "failed"]
#: How long new topics may take until every partition has a leader that answers. A city's
#: first apply creates about 400 partitions at once, which a single broker on a busy 2-core
#: machine may take longer than ``ensure_topics``' default (15 s) to lead.
TOPIC_CREATE_TIMEOUT_S = 90.0
_UNSUPPORTED = {"_UNSUPPORTED_FEATURE", "UNSUPPORTED_VERSION", "SECURITY_DISABLED"}


@dataclass(frozen=True)
class Outcome:
    action: Action
    status: Status
    detail: str = ""

    def line(self) -> str:
        return f"{self.action.symbol} {self.action.summary()}: {self.status}{': ' + self.detail if self.detail else ''}"

    def to_json(self) -> dict[str, Any]:
        return {**self.action.to_json(), "status": self.status, "detail": self.detail}


@dataclass
class ApplyResult:
    plan: Plan
    outcomes: list[Outcome]

    def count(self, status: Status) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        """Nothing failed and no conflict stands (unsupported features do not count)."""
        return not self.count("failed") and not self.plan.conflicts

    @property
    def exit_code(self) -> int:
        return EXIT_NO_CHANGES if self.ok else EXIT_ERROR

    def summary(self) -> str:
        parts = [f"{self.count('done')} done", f"{self.count('not supported')} not supported by this broker",
                 f"{self.count('failed')} failed"]
        if self.plan.conflicts:
            parts.append(f"{len(self.plan.conflicts)} conflict(s) left")
        if self.plan.unapplied_acls:
            parts.append(f"ACLs not supported by this broker ({len(self.plan.unapplied_acls)} bindings not applied)")
        return "Apply: " + ", ".join(parts) + "."

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan.to_json(), "outcomes": [o.to_json() for o in self.outcomes],
                "done": self.count("done"), "not_supported": self.count("not supported"),
                "failed": self.count("failed"), "exit_code": self.exit_code}


def apply(
    topology: Topology,
    settings: KafkaSettings,
    *,
    prune: bool = False,
    service_principal: str = DEFAULT_SERVICE_PRINCIPAL,
    registry_topic: str | None = REGISTRY_TOPIC,
    plan: Plan | None = None,
) -> ApplyResult:
    """Make the cluster and the registry match ``topology``; returns what was done.

    ``plan`` (from :func:`make_plan`, whose ``prune`` then decides) skips re-reading the
    state, for a caller that just showed it; otherwise a fresh plan is made."""
    plan = plan or make_plan(topology, settings, prune=prune, service_principal=service_principal,
                             registry_topic=registry_topic)
    client = wait_for_broker(settings)
    timeout = settings.connect_timeout_s
    outcomes: list[Outcome] = []
    todo = plan.pending
    outcomes += _create_topics(settings, [a for a in todo if isinstance(a, CreateTopic)])
    outcomes += _add_partitions(client, [a for a in todo if isinstance(a, AddPartitions)], timeout)
    outcomes += _alter_configs(client, [a for a in todo if isinstance(a, AlterConfig)], timeout)
    outcomes += _subjects(settings, [a for a in todo if isinstance(a, (SetCompatibility, RegisterSchema))])
    outcomes += _create_acls(client, [a for a in todo if isinstance(a, CreateAcl)], timeout)
    outcomes += _delete_acls(client, [a for a in todo if isinstance(a, DeleteAcl)], timeout)
    outcomes += _delete_subjects(settings, [a for a in todo if isinstance(a, DeleteSubject)])
    outcomes += _delete_topics(settings, [a for a in todo if isinstance(a, DeleteTopic)])
    return ApplyResult(plan, outcomes)


def _kafka_outcome(action: Action, future: Any, timeout_s: float) -> Outcome:
    try:
        future.result(timeout=timeout_s)
    except KafkaException as exc:
        error = exc.args[0]
        status: Status = "not supported" if error.name() in _UNSUPPORTED else "failed"
        return Outcome(action, status, f"{error.name()}: {error.str()}")
    return Outcome(action, "done")


def _create_topics(settings: KafkaSettings, actions: list[CreateTopic]) -> list[Outcome]:
    if not actions:
        return []
    try:
        ensure_topics(settings, [TopicSpec(a.target, a.partitions, config=dict(a.config)) for a in actions],
                      timeout_s=TOPIC_CREATE_TIMEOUT_S)
    except BusError as exc:
        return [Outcome(a, "failed", str(exc)) for a in actions]
    return [Outcome(a, "done") for a in actions]


def _add_partitions(client: AdminClient, actions: list[AddPartitions], timeout_s: float) -> list[Outcome]:
    if not actions:
        return []
    futures = client.create_partitions([NewPartitions(a.target, a.wanted) for a in actions], request_timeout=timeout_s)
    return [_kafka_outcome(a, futures[a.target], timeout_s) for a in actions]


def _alter_configs(client: AdminClient, actions: list[AlterConfig], timeout_s: float) -> list[Outcome]:
    by_topic: dict[str, list[AlterConfig]] = {}
    for a in actions:
        by_topic.setdefault(a.target, []).append(a)
    outcomes: list[Outcome] = []
    for topic, changes in by_topic.items():
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
            ConfigEntry(a.key, a.wanted, incremental_operation=AlterConfigOpType.SET) for a in changes])
        future = next(iter(client.incremental_alter_configs([resource], request_timeout=timeout_s).values()))
        first = _kafka_outcome(changes[0], future, timeout_s)
        outcomes += [Outcome(a, first.status, first.detail) for a in changes]
    return outcomes


def _subjects(settings: KafkaSettings, actions: list[SetCompatibility | RegisterSchema]) -> list[Outcome]:
    registry = registry_client(settings)
    outcomes: list[Outcome] = []
    for action in actions:
        try:
            if isinstance(action, SetCompatibility):
                registry_call(registry, partial(registry.set_compatibility, action.target, action.wanted))
                outcomes.append(Outcome(action, "done"))
            else:
                schema_id = ensure_registered(registry, action.target, action.schema, action.compatibility)
                outcomes.append(Outcome(action, "done", f"schema id {schema_id}"))
        except (SchemaRegistryError, BusError) as exc:
            outcomes.append(Outcome(action, "failed", str(exc)))
    return outcomes


def _create_acls(client: AdminClient, actions: list[CreateAcl], timeout_s: float) -> list[Outcome]:
    if not actions:
        return []
    bindings = [to_kafka(a.binding) for a in actions]
    futures = client.create_acls(bindings, request_timeout=timeout_s)
    return [_kafka_outcome(a, futures[b], timeout_s) for a, b in zip(actions, bindings, strict=True)]


def _delete_acls(client: AdminClient, actions: list[DeleteAcl], timeout_s: float) -> list[Outcome]:
    if not actions:
        return []
    filters = [to_filter(a.binding) for a in actions]
    futures = client.delete_acls(filters, request_timeout=timeout_s)
    return [_kafka_outcome(a, futures[f], timeout_s) for a, f in zip(actions, filters, strict=True)]


def _delete_subjects(settings: KafkaSettings, actions: list[DeleteSubject]) -> list[Outcome]:
    registry = registry_client(settings)
    outcomes: list[Outcome] = []
    for action in actions:
        try:
            registry_call(registry, partial(registry.delete_subject, action.target))
            outcomes.append(Outcome(action, "done", "soft-deleted: its ids stay readable"))
        except (SchemaRegistryError, BusError) as exc:
            outcomes.append(Outcome(action, "failed", str(exc)))
    return outcomes


def _delete_topics(settings: KafkaSettings, actions: list[DeleteTopic]) -> list[Outcome]:
    if not actions:
        return []
    try:
        delete_topics(settings, [a.target for a in actions])
    except BusError as exc:
        return [Outcome(a, "failed", str(exc)) for a in actions]
    return [Outcome(a, "done") for a in actions]
