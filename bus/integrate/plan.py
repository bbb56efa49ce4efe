"""``bus plan``: what ``bus apply`` would change so that the cluster and the registry hold
what the topology implies (:mod:`bus.integrate.desired`).

The plan reads the actual state (topics and their partitions and managed settings, the
registry's subjects, versions and compatibility modes, the ACL bindings) and lists typed
actions, as terraform does: ``+`` create, ``~`` change, ``-`` delete (only with
``--prune``; otherwise shown as "would delete"), ``!`` a conflict apply cannot resolve
(fewer partitions than the topic has, a schema the registry would refuse).

Broker features the cluster lacks are reported, not failed on: without ACL support the
bindings are listed as not applied and do not count as pending changes (apply could not
make them), so that an applied topology plans empty on any broker. A broker that has ACLs
but refuses them to this client is an error, not a missing feature (see
:mod:`bus.integrate.acls`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, get_args

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from bus.integrate.acls import AclSupport, probe_create_support, read_acls
from bus.integrate.desired import (
    DEFAULT_SERVICE_PRINCIPAL,
    KAFKA_DEFAULTS,
    REGISTRY_TOPIC,
    AclBinding,
    AclOperationName,
    Desired,
    DesiredSubject,
    DesiredTopic,
    desired_state,
    managed_topic,
)
from bus.integrate.exceptions import IntegrateError
from bus.kafka.admin import wait_for_broker
from bus.kafka.config import KafkaSettings
from bus.registry.client import registry_call, registry_client, wait_for_registry
from bus.registry.registration import avro_schema
from bus.topology.models import Topology

#: Exit codes of ``bus plan`` (and ``bus apply``'s 0 / 1).
EXIT_NO_CHANGES = 0
EXIT_ERROR = 1
EXIT_CHANGES_PENDING = 2

_SCHEMA_NOT_FOUND = {40401, 40403}
_NO_SUBJECT_CONFIG = {40401, 40408}

Symbol = Literal["+", "~", "-", "!"]


# -- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """One change. ``kind`` names it in JSON; ``symbol`` and ``summary`` make the text line."""

    kind: ClassVar[str]
    symbol: ClassVar[Symbol]
    target: str

    def summary(self) -> str:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.__dict__, "summary": self.summary()}


@dataclass(frozen=True)
class CreateTopic(Action):
    kind = "create_topic"
    symbol = "+"
    partitions: int
    config: dict[str, str]
    purpose: str

    def summary(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        return (f"create topic {self.target} ({self.purpose}; {self.partitions} partition"
                f"{'s' if self.partitions != 1 else ''}, {settings}, retention: broker default)")


@dataclass(frozen=True)
class AddPartitions(Action):
    kind = "add_partitions"
    symbol = "~"
    current: int
    wanted: int

    def summary(self) -> str:
        return (f"add partitions to {self.target}: {self.current} -> {self.wanted} (records of one key written "
                "before and after land on different partitions: per-key order holds on each side only)")


@dataclass(frozen=True)
class AlterConfig(Action):
    kind = "alter_config"
    symbol = "~"
    key: str
    current: str | None
    wanted: str

    def summary(self) -> str:
        return f"alter topic {self.target}: {self.key} {self.current or '(unset)'} -> {self.wanted}"


@dataclass(frozen=True)
class RegisterSchema(Action):
    kind = "register_schema"
    symbol = "+"
    schema: str
    compatibility: str
    topic: str
    new_subject: bool
    latest_version: int | None = None

    def summary(self) -> str:
        if self.new_subject:
            return f"register schema subject {self.target} (new subject, compatibility {self.compatibility})"
        return f"register a new version of {self.target} (after version {self.latest_version}, {self.compatibility})"

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out.pop("schema")
        return out


@dataclass(frozen=True)
class SetCompatibility(Action):
    kind = "set_compatibility"
    symbol = "~"
    current: str | None
    wanted: str

    def summary(self) -> str:
        return f"set compatibility of {self.target}: {self.current or '(registry default)'} -> {self.wanted}"


@dataclass(frozen=True)
class CreateAcl(Action):
    kind = "create_acl"
    symbol = "+"
    binding: AclBinding

    def summary(self) -> str:
        return f"{self.binding.principal}: {self.binding.describe()}"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "binding": self.binding.to_json()}


@dataclass(frozen=True)
class DeleteTopic(Action):
    kind = "delete_topic"
    symbol = "-"
    def summary(self) -> str:
        return f"delete topic {self.target} (not in the topology)"


@dataclass(frozen=True)
class DeleteSubject(Action):
    kind = "delete_subject"
    symbol = "-"
    def summary(self) -> str:
        return f"delete schema subject {self.target} (not in the topology)"


@dataclass(frozen=True)
class DeleteAcl(Action):
    kind = "delete_acl"
    symbol = "-"
    binding: AclBinding

    def summary(self) -> str:
        return f"{self.binding.principal}: {self.binding.describe()} (not implied by the topology)"

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "binding": self.binding.to_json()}


@dataclass(frozen=True)
class Conflict(Action):
    kind = "conflict"
    symbol = "!"
    message: str

    def summary(self) -> str:
        return self.message


# -- the plan -----------------------------------------------------------------------------


@dataclass
class Plan:
    """What apply would do. ``deletions`` are carried out only when ``prune`` is set."""

    desired: Desired
    actions: list[Action]
    deletions: list[Action]
    conflicts: list[Conflict]
    acl_support: AclSupport
    unapplied_acls: list[AclBinding]
    prune: bool = False

    @property
    def pending(self) -> list[Action]:
        """Everything ``bus apply`` (with this plan's ``prune``) would do."""
        return self.actions + (self.deletions if self.prune else [])

    @property
    def empty(self) -> bool:
        return not self.pending and not self.conflicts

    @property
    def exit_code(self) -> int:
        return EXIT_NO_CHANGES if self.empty else EXIT_CHANGES_PENDING

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.desired.namespace,
            "changes": len(self.pending),
            "prune": self.prune,
            "actions": [a.to_json() for a in self.actions],
            "would_delete": [a.to_json() for a in self.deletions],
            "conflicts": [c.to_json() for c in self.conflicts],
            "acls": {
                "supported": self.acl_support.supported,
                "reason": self.acl_support.reason,
                "desired": [b.to_json() for b in self.desired.acls],
                "not_applied": [b.to_json() for b in self.unapplied_acls],
            },
            "exit_code": self.exit_code,
        }


def make_plan(
    topology: Topology,
    settings: KafkaSettings,
    *,
    prune: bool = False,
    service_principal: str = DEFAULT_SERVICE_PRINCIPAL,
    registry_topic: str | None = REGISTRY_TOPIC,
) -> Plan:
    """Read the cluster and the registry, and diff them with what ``topology`` implies."""
    desired = desired_state(topology, service_principal=service_principal, registry_topic=registry_topic)
    client = wait_for_broker(settings)
    wait_for_registry(settings)
    registry = registry_client(settings)  # a fresh client: its caches must not hide changes
    timeout = settings.connect_timeout_s
    actions: list[Action] = []
    deletions: list[Action] = []
    conflicts: list[Conflict] = []

    # ACLs are read first: a client that may not manage them hears that before anything else.
    actual, support = read_acls(client, timeout)
    missing = list(desired.acls) if actual is None else [b for b in desired.acls if b not in actual]
    if actual is not None and missing:
        support = probe_create_support(settings)
        if support.denied:
            who = f"User:{settings.sasl_username}" if settings.sasl_username else "this client"
            raise IntegrateError(
                f"{who} may not manage ACLs on {settings.bootstrap_servers} ({support.reason}): run bus plan / "
                "bus apply as a principal allowed DESCRIBE and ALTER on the cluster (a super user). Kafka shows "
                "a client without DESCRIBE on the cluster no ACLs at all, so no plan of ACLs can be made as this one"
            )

    topics = {name: meta for name, meta in client.list_topics(timeout=timeout).topics.items() if not meta.error}
    configs = _configs(client, [t.name for t in desired.topics if t.name in topics], timeout)
    for want in desired.topics:
        if want.name not in topics:
            actions.append(CreateTopic(want.name, want.partitions, dict(want.config), want.purpose))
            continue
        actions += _topic_changes(want, len(topics[want.name].partitions), configs.get(want.name, {}), conflicts)
    wanted_names = {t.name for t in desired.topics}
    deletions += [DeleteTopic(name) for name in sorted(topics)
                  if name not in wanted_names and managed_topic(name, desired.namespace)]

    subjects = set(registry_call(registry, registry.get_subjects))
    for subject in desired.subjects:
        actions += _subject_changes(registry, subject, subject.subject in subjects, conflicts)
    wanted_subjects = {s.subject for s in desired.subjects}
    deletions += [DeleteSubject(s) for s in sorted(subjects)
                  if s not in wanted_subjects and s.endswith("-value") and managed_topic(s[:-6], desired.namespace)]

    unapplied: list[AclBinding] = []
    if actual is None:
        unapplied = missing
    else:
        if support.supported:
            actions += [CreateAcl(b.principal, b) for b in missing]
        else:
            unapplied = missing
        deletions += [DeleteAcl(b.principal, b) for b in sorted(actual - set(desired.acls))
                      if _ours(b, desired)]
    return Plan(desired, actions, deletions, conflicts, support, unapplied, prune)


def _configs(client: AdminClient, names: list[str], timeout_s: float) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    futures = client.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names], request_timeout=timeout_s)
    out: dict[str, dict[str, str]] = {}
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=timeout_s)
        except KafkaException as exc:
            raise IntegrateError(f"could not read the settings of topic {resource.name}: {exc.args[0].str()}") from exc
        out[resource.name] = {k: e.value for k, e in entries.items() if e.value is not None}
    return out


def _topic_changes(want: DesiredTopic, partitions: int, config: dict[str, str], conflicts: list[Conflict]) -> list[Action]:
    out: list[Action] = []
    if partitions < want.partitions:
        out.append(AddPartitions(want.name, partitions, want.partitions))
    elif partitions > want.partitions:
        conflicts.append(Conflict(
            want.name,
            f"topic {want.name} has {partitions} partitions, the topology says {want.partitions}: Kafka cannot remove "
            f"partitions; set partitions: {partitions} in the topology, or recreate the topic (its records are lost)",
        ))
    for key, value in sorted(want.config.items()):
        current = config.get(key, KAFKA_DEFAULTS.get(key))
        if current != value:
            out.append(AlterConfig(want.name, key, current, value))
    return out


def _subject_changes(
    registry: SchemaRegistryClient, want: DesiredSubject, exists: bool, conflicts: list[Conflict]
) -> list[Action]:
    if not exists:
        return [RegisterSchema(want.subject, want.schema, want.compatibility, want.topic, True)]
    out: list[Action] = []
    current = _compatibility(registry, want.subject)
    if current != want.compatibility:
        out.append(SetCompatibility(want.subject, current, want.compatibility))
    schema = avro_schema(want.schema)
    try:
        registry_call(registry, lambda: registry.lookup_schema(want.subject, schema))
        return out
    except SchemaRegistryError as exc:
        if exc.error_code not in _SCHEMA_NOT_FOUND:
            raise
    latest = registry_call(registry, lambda: registry.get_latest_version(want.subject)).version
    # The registry judges with the subject's mode as it is now; a mode changed in the
    # same plan is judged by the registry at apply time.
    if current == want.compatibility and not registry_call(
        registry, lambda: registry.test_compatibility(want.subject, schema, "latest")
    ):
        conflicts.append(Conflict(
            want.subject,
            f"the schema of {want.topic} is not {want.compatibility}-compatible with version {latest} of "
            f"{want.subject}; the registry would refuse it (`bus schemas check` says why)",
        ))
        return out
    out.append(RegisterSchema(want.subject, want.schema, want.compatibility, want.topic,
                              False, latest))
    return out


def _compatibility(registry: SchemaRegistryClient, subject: str) -> str | None:
    try:
        return registry_call(registry, lambda: registry.get_compatibility(subject))
    except SchemaRegistryError as exc:
        if exc.error_code in _NO_SUBJECT_CONFIG:
            return None
        raise


def _ours(binding: AclBinding, desired: Desired) -> bool:
    """A binding of one of our principals within our namespace: the only ones pruned."""
    if binding.principal not in desired.principals:
        return False
    return desired.namespace is None or binding.name.startswith(desired.namespace + ".")


# -- text -----------------------------------------------------------------------------------


def render(plan: Plan) -> str:
    """The plan as terraform prints one."""
    lines: list[str] = []
    sections: list[tuple[str, list[Action]]] = [
        ("Topics", [a for a in plan.actions if isinstance(a, (CreateTopic, AddPartitions, AlterConfig))]),
        ("Schema subjects", [a for a in plan.actions if isinstance(a, (RegisterSchema, SetCompatibility))]),
    ]
    for title, items in sections:
        if items:
            lines.append(f"{title}:")
            lines += [f"  {a.symbol} {a.summary()}" for a in items]
    acls = [a for a in plan.actions if isinstance(a, CreateAcl)]
    if acls:
        lines.append("ACLs:")
        lines += _by_principal([a.binding for a in acls], "+")
    if plan.unapplied_acls:
        lines.append(f"ACLs: not supported by this broker ({len(plan.unapplied_acls)} bindings not applied): "
                     f"{plan.acl_support.reason}")
        lines += _by_principal(plan.unapplied_acls, " ")
    if plan.deletions:
        lines.append("Deletions (done by `bus apply --prune`):" if plan.prune else "Would delete (`--prune` to do it):")
        lines += [f"  - {'' if plan.prune else 'would '}{a.summary()}" for a in plan.deletions]
    if plan.conflicts:
        lines.append("Conflicts (apply leaves these; fix the topology or the cluster):")
        lines += [f"  ! {c.summary()}" for c in plan.conflicts]
    creates = sum(a.symbol == "+" for a in plan.actions)
    changes = sum(a.symbol == "~" for a in plan.actions)
    deletes = len(plan.deletions) if plan.prune else 0
    if plan.empty:
        lines.append("No changes: the cluster and the registry match the topology.")
    else:
        lines.append(f"Plan: {creates} to create, {changes} to change, {deletes} to delete"
                     + (f", {len(plan.conflicts)} conflict(s)" if plan.conflicts else "") + ".")
    return "\n".join(lines)


def _by_principal(bindings: list[AclBinding], symbol: str) -> list[str]:
    """``User:police`` then one line per resource: ``+ ALLOW WRITE, DESCRIBE on topic X``."""
    grouped: dict[str, dict[tuple[str, str, bool], list[str]]] = {}
    rank = list(get_args(AclOperationName))
    for b in bindings:
        grouped.setdefault(b.principal, {}).setdefault((b.resource, b.name, b.prefixed), []).append(b.operation)
    lines: list[str] = []
    for principal in sorted(grouped):
        lines.append(f"  {principal}")
        for (resource, name, prefixed), ops in sorted(grouped[principal].items()):
            order = sorted(ops, key=rank.index)
            lines.append(f"    {symbol} ALLOW {', '.join(order)} on {resource.replace('_', ' ')} {name}"
                         + (" (prefix)" if prefixed else ""))
    return lines
