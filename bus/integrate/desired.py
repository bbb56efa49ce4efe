"""What the cluster and the registry should hold for a topology: topics, schema subjects,
ACL bindings.

Everything here is derived with the same functions the running bus uses to name and
create things (``Route`` for subscription schemas, ``router_dlq_topic``, ``dlq_topic``,
``offsets_topic``...), so that ``bus apply`` creates exactly what the router and the
connectors would otherwise create on their own, and nothing they would then find wrong.

The topology does not declare retention or cleanup policies. The bus's topics are what
the code creates today (``TopicSpec``): event and subscription topics and dead-letter
topics are ``cleanup.policy=delete`` with the broker's default retention; the connector
offsets and status topics and the embedded registry's storage topic are compacted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bus.processors.topics import changelog_partitions, processor_topics, runs_processors
from bus.registry.store import DEFAULT_TOPIC as REGISTRY_TOPIC
from bus.routing.plan import build_routes
from bus.schemas.catalog import schema_json
from bus.topology.models import CANONICAL_PREFIX, SUBSCRIPTION_PREFIX, Topology, topic_name
from bus.topology.names import (
    BUS_GROUP_PREFIX,
    connector_group,
    department_group_prefix,
    dlq_topic,
    offsets_topic,
    replayed_topic,
    router_dlq_topic,
    status_topic,
    topology_topic,
)

__all__ = ["REGISTRY_TOPIC", "DEFAULT_SERVICE_PRINCIPAL", "AclBinding", "Desired", "DesiredSubject", "DesiredTopic",
           "department_group_prefix", "desired_state", "managed_topic"]

DEFAULT_SERVICE_PRINCIPAL = "User:bus"

TopicPurpose = Literal["canonical", "enriched", "subscription", "dead-letter", "connector-offsets", "connector-status",
                       "registry", "applied-topology", "processors"]
ResourceKind = Literal["topic", "group", "transactional_id"]
AclOperationName = Literal["READ", "WRITE", "DESCRIBE", "CREATE"]

#: Kafka's own default of every topic setting the bus manages: a broker that lists only
#: the settings given at creation (the embedded one) means these when a key is absent.
KAFKA_DEFAULTS: dict[str, str] = {"cleanup.policy": "delete"}
DELETE = {"cleanup.policy": "delete"}
COMPACT = {"cleanup.policy": "compact"}

#: The plan never hashes anything; a fixed master key keeps ``build_routes`` from warning
#: that the development key is in use (keys matter only to the running router).
_PLAN_ENVIRON = {"BUS_HASH_MASTER_KEY": "bus-integrate-plan-derives-schemas-only"}


@dataclass(frozen=True)
class DesiredTopic:
    name: str
    partitions: int
    config: dict[str, str]
    purpose: TopicPurpose
    event_type: str | None = None


@dataclass(frozen=True)
class DesiredSubject:
    subject: str
    schema: str  # the JSON the bus registers (schema_json)
    compatibility: str
    topic: str


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW binding for any host. ``prefixed`` matches every name starting with ``name``."""

    principal: str
    resource: ResourceKind
    name: str
    operation: AclOperationName
    prefixed: bool = False

    def describe(self) -> str:
        pattern = " (prefix)" if self.prefixed else ""
        return f"ALLOW {self.operation} on {self.resource.replace('_', ' ')} {self.name}{pattern}"

    def to_json(self) -> dict[str, object]:
        return {"principal": self.principal, "resource": self.resource, "name": self.name,
                "pattern": "PREFIXED" if self.prefixed else "LITERAL", "operation": self.operation,
                "permission": "ALLOW", "host": "*"}


@dataclass(frozen=True)
class Desired:
    topics: list[DesiredTopic]
    subjects: list[DesiredSubject]
    acls: list[AclBinding]
    principals: list[str]  # every principal the bindings are for: departments, then the service
    namespace: str | None = None

    def topic(self, name: str) -> DesiredTopic | None:
        return next((t for t in self.topics if t.name == name), None)


def desired_state(
    topology: Topology,
    *,
    service_principal: str = DEFAULT_SERVICE_PRINCIPAL,
    registry_topic: str | None = REGISTRY_TOPIC,
) -> Desired:
    """The state a topology implies. ``registry_topic`` is the embedded registry's storage
    topic (None when the registry is another one, which keeps its own storage)."""
    ns = topology.namespace
    routes = build_routes(topology, _PLAN_ENVIRON)
    topics = [DesiredTopic(et.topic, et.partitions, DELETE, "canonical", et.name) for et in topology.event_types]
    subjects = [
        DesiredSubject(et.subject, topology.schema_for(et.name).canonical_json(), str(et.compatibility), et.topic)
        for et in topology.event_types
    ]
    for et in topology.event_types:
        if et.routed_topic != et.topic:  # route_from: enriched (the processors write it, the router reads it)
            topics.append(DesiredTopic(et.routed_topic, et.partitions, DELETE, "enriched", et.name))
            subjects.append(DesiredSubject(f"{et.routed_topic}-value", topology.schema_for(et.name).canonical_json(),
                                           str(et.compatibility), et.routed_topic))
    for sub in topology.subscriptions:
        route = next(r for r in routes[sub.event_type] if r.subscription == sub.name)
        topics.append(DesiredTopic(route.topic, route.partitions, DELETE, "subscription", sub.event_type))
        subjects.append(DesiredSubject(route.subject, schema_json(route.schema), route.compatibility, route.topic))
    topics.append(DesiredTopic(router_dlq_topic(topology.namespace), 1, DELETE, "dead-letter"))
    for connector in topology.connectors:
        configured = connector.config.get("errors.deadletterqueue.topic.name")
        name = dlq_topic(ns, connector.name, configured if isinstance(configured, str) else None)
        topics.append(DesiredTopic(name, 1, DELETE, "dead-letter"))
    if topology.connectors:
        topics.append(DesiredTopic(offsets_topic(ns), 1, COMPACT, "connector-offsets"))
        topics.append(DesiredTopic(status_topic(ns), 1, COMPACT, "connector-status"))
    topics.append(DesiredTopic(topology_topic(ns), 1, COMPACT, "applied-topology"))
    topics.extend(_processor_topics(topology, {t.name for t in topics}))
    if registry_topic:
        topics.append(DesiredTopic(registry_topic, 1, COMPACT, "registry"))
    acls = acl_bindings(topology, service_principal, registry_topic)
    principals = [f"User:{d.name}" for d in topology.departments] + [service_principal]
    return Desired(topics, subjects, acls, principals, ns)




def acl_bindings(
    topology: Topology, service_principal: str = DEFAULT_SERVICE_PRINCIPAL, registry_topic: str | None = None
) -> list[AclBinding]:
    """The bindings the topology implies, sorted.

    A department's principal ``User:<department>`` may write (and describe) the canonical
    topics of the event types it owns, read its subscription topics with consumer groups of
    its own (every group named ``<namespace>.<department>.<anything>``, see
    :func:`department_group_prefix`), and read with the consumer groups of its sink
    connectors (a department may run a sink under its own identity). The service principal
    runs the router (reads every canonical topic, reads and writes the ``.enriched`` topic of a
    ``route_from: enriched`` type, writes every subscription topic, the router's dead-letter
    topic and its transactional ids), the processors (read the camera topics, write the city's
    cases, read and write their own topics and changelogs), the connectors (sources write the
    types they publish; sinks read their subscription; every connector writes its dead-letter
    topic and reads and writes the offsets and status topics) and the embedded registry
    (``registry_topic``: reads and writes its storage topic); it uses every consumer group
    named ``[<namespace>.]bus-<...>`` and, in a namespace, ``bus-<...>`` (see
    :data:`BUS_GROUP_PREFIX`)."""
    ns = topology.namespace
    out: set[AclBinding] = set()

    def allow(principal: str, resource: ResourceKind, name: str, *ops: AclOperationName, prefixed: bool = False) -> None:
        out.update(AclBinding(principal, resource, name, op, prefixed) for op in ops)

    for et in topology.event_types:
        allow(f"User:{et.owner}", "topic", et.topic, "WRITE", "DESCRIBE")
        allow(service_principal, "topic", et.topic, "READ", "DESCRIBE")
        if et.routed_topic != et.topic:
            allow(service_principal, "topic", et.routed_topic, "READ", "WRITE", "DESCRIBE")
    for sub in topology.subscriptions:
        allow(f"User:{sub.department}", "topic", sub.topic, "READ", "DESCRIBE")
        # A consumer needs READ on its group too (JoinGroup, OffsetCommit; FindCoordinator
        # asks for DESCRIBE, which READ implies): without one a department cannot read at all.
        allow(f"User:{sub.department}", "group", department_group_prefix(ns, sub.department), "READ", prefixed=True)
        allow(service_principal, "topic", sub.topic, "WRITE", "DESCRIBE")
    allow(service_principal, "topic", router_dlq_topic(topology.namespace), "WRITE", "DESCRIBE")
    # The bus's groups (the router's and its lanes', the sink connectors', the processors', the
    # topology watch) are named <namespace>.bus-<...>; its readers that only assign partitions
    # (the registry's loader, the ends of a topic, the page's counters) never join a group or
    # commit, but librdkafka needs a group id and looks up its coordinator: bus-<...>.
    allow(service_principal, "group", topic_name(ns, BUS_GROUP_PREFIX), "READ", prefixed=True)
    if ns:
        allow(service_principal, "group", BUS_GROUP_PREFIX, "READ", prefixed=True)
    # Transactional ids: bus-router-<instance> and the lanes' bus-router.<subscription>-<instance>.
    allow(service_principal, "transactional_id", topic_name(ns, "bus-router"), "WRITE", "DESCRIBE", prefixed=True)
    allow(service_principal, "topic", topology_topic(ns), "READ", "WRITE", "DESCRIBE")
    for connector in topology.connectors:
        configured = connector.config.get("errors.deadletterqueue.topic.name")
        allow(service_principal, "topic", dlq_topic(ns, connector.name, configured if isinstance(configured, str) else None),
              "WRITE", "DESCRIBE")
        if connector.publishes is not None:
            for name in connector.publishes:
                allow(service_principal, "topic", topology.event_type(name).topic, "WRITE", "DESCRIBE")
        elif connector.subscription is not None:
            group = connector_group(ns, connector.name)
            allow(service_principal, "topic", topology.subscription(connector.subscription).topic, "READ", "DESCRIBE")
            allow(f"User:{connector.department}", "group", group, "READ")
    if topology.connectors:
        for name in (offsets_topic(ns), status_topic(ns)):
            allow(service_principal, "topic", name, "READ", "WRITE", "DESCRIBE")
    if registry_topic:
        allow(service_principal, "topic", registry_topic, "READ", "WRITE", "DESCRIBE")
    if runs_processors(topology):  # they read the canonical camera topics (above), write cases
        topics = processor_topics(topology)
        allow(service_principal, "topic", topics.cases, "WRITE", "DESCRIBE")
        for name in (topics.enriched, topics.camera_import, topics.sla, topics.availability):
            allow(service_principal, "topic", name, "READ", "WRITE", "DESCRIBE")
        for name in changelog_partitions(topology):
            # faust declares its tables' changelogs at every start: with CREATE, Kafka answers that
            # they exist (made by `bus apply`); without it, that the request is not authorized.
            allow(service_principal, "topic", name, "READ", "WRITE", "DESCRIBE", "CREATE")
    return sorted(out)


def _processor_topics(topology: Topology, listed: set[str]) -> list[DesiredTopic]:
    """The processors' own topics (and the enriched one when no event type routes from it)."""
    if not runs_processors(topology):
        return []
    topics = processor_topics(topology)
    wanted = [
        DesiredTopic(topics.enriched, topics.alarm_partitions, DELETE, "enriched", "camera_alarm"),
        DesiredTopic(topics.camera_import, topics.status_partitions, DELETE, "processors"),
        DesiredTopic(topics.sla, topics.status_partitions, DELETE, "processors"),
        DesiredTopic(topics.availability, 1, COMPACT, "processors"),
        *(DesiredTopic(name, partitions, COMPACT, "processors") for name, partitions in changelog_partitions(topology).items()),
    ]
    return [t for t in wanted if t.name not in listed]


def managed_topic(name: str, namespace: str | None) -> bool:
    """True for a topic named like one the bus makes from a topology (an event type's,
    a subscription's, a connector's dead-letter topic): only such topics are ever listed
    as "would delete". Topics derived from an event type's (``<canonical>.enriched`` of
    the processors) and everything else on the cluster are left alone."""
    canonical = topic_name(namespace, CANONICAL_PREFIX) + "."
    subscription = topic_name(namespace, SUBSCRIPTION_PREFIX) + "."
    if name.startswith(canonical):
        return "." not in name[len(canonical):]
    if name.startswith(subscription):
        return name[len(subscription):].count(".") == 1
    return name.startswith(topic_name(namespace, "bus-dlq-")) and name != replayed_topic(namespace)
