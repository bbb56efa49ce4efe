"""Every topic, consumer group and transactional id the bus names, in one place.

A topology's ``namespace`` prefixes them all (``<namespace>.<name>``), so that several cities
(or test runs) share a cluster without meeting. Department-facing names (canonical and
subscription topics, schema subjects) are derived in :mod:`bus.topology.models` from these
prefixes; the names here are the bus's own."""

from __future__ import annotations

#: ``<ns.>city.events.<event type>``: what a department publishes (the canonical topics).
CANONICAL_PREFIX = "city.events"
#: ``<ns.>city.sub.<department>.<subscription>``: what a department receives.
SUBSCRIPTION_PREFIX = "city.sub"
#: The suffix of the processors' output topic for an event type (``route_from: enriched``).
ENRICHED_SUFFIX = "enriched"

#: Every consumer group of the bus starts so (after the namespace and its dot).
BUS_GROUP_PREFIX = "bus-"
ROUTER_GROUP = "bus-router"
CONNECTOR_GROUP_PREFIX = "bus-connector-"
#: A connector's client id prefix (``bus-connector-<name>``).
CONNECTOR_CLIENT_PREFIX = "bus-connector"

DLQ_PREFIX = "bus-dlq"
REGISTRY_TOPIC = "_bus_schemas"
OFFSETS_TOPIC = "bus-connector-offsets"
STATUS_TOPIC = "bus-connector-status"
TOPOLOGY_TOPIC = "bus-topology"
ROUTER_DLQ_TOPIC = "bus-router-dlq"
REPLAYED_TOPIC = f"{DLQ_PREFIX}-replayed"

IMPORT_TOPIC = "city.processors.camera_import"
SLA_TOPIC = "city.processors.camera_sla"
AVAILABILITY_TOPIC = "bus-camera-availability"
PROCESSORS_APP = "bus-processors"


def topic_name(namespace: str | None, *parts: str) -> str:
    """``parts`` joined by dots, under ``namespace`` when there is one."""
    name = ".".join(parts)
    return f"{namespace}.{name}" if namespace else name


# -- consumer groups and transactional ids --------------------------------------------------


def router_group(namespace: str | None, lane: str | None = None) -> str:
    """The router's consumer group: ``bus-router``, or ``<namespace>.bus-router``; a lane's
    (one subscription with a start point, see bus.routing.service) is ``bus-router.<lane>``.
    Its transactional ids are the group's name followed by ``-<instance>``."""
    return topic_name(namespace, ROUTER_GROUP if lane is None else f"{ROUTER_GROUP}.{lane}")


def connector_group(namespace: str | None, connector: str) -> str:
    """A sink connector's group: ``bus-connector-<name>``, or ``<namespace>.bus-connector-<name>``."""
    return topic_name(namespace, CONNECTOR_GROUP_PREFIX + connector)


def processors_group(namespace: str | None) -> str:
    """The processors' faust app id, which is also their consumer group."""
    return topic_name(namespace, PROCESSORS_APP)


def department_group_prefix(namespace: str | None, department: str) -> str:
    """The consumer groups a department's own consumers may use: ``<namespace>.<department>.``
    followed by anything (``<department>.`` without a namespace). Department names are
    snake_case, so no department's prefix is another's or one of the bus's groups."""
    return topic_name(namespace, department) + "."


# -- the bus's own topics -----------------------------------------------------------------------


def dlq_topic(namespace: str | None, connector: str, configured: str | None = None) -> str:
    """A connector's ``errors.deadletterqueue.topic.name`` (default ``bus-dlq-<connector>``)."""
    return topic_name(namespace, configured or f"{DLQ_PREFIX}-{connector}")


def router_dlq_topic(namespace: str | None) -> str:
    return topic_name(namespace, ROUTER_DLQ_TOPIC)


def replayed_topic(namespace: str | None) -> str:
    """The log of dead letters already replayed (``bus dlq replay``)."""
    return topic_name(namespace, REPLAYED_TOPIC)


def offsets_topic(namespace: str | None) -> str:
    """The source connectors' positions."""
    return topic_name(namespace, OFFSETS_TOPIC)


def status_topic(namespace: str | None) -> str:
    """The connectors' status reports."""
    return topic_name(namespace, STATUS_TOPIC)


def topology_topic(namespace: str | None) -> str:
    """The topology `bus apply` published, which the router follows."""
    return topic_name(namespace, TOPOLOGY_TOPIC)


def changelog_topic(namespace: str | None, table: str) -> str:
    """The changelog faust writes a table of the processors to (faust's own naming)."""
    return f"{processors_group(namespace)}-{table}-changelog"
