"""The processors' topics and group for a topology (named in :mod:`bus.topology.names`). No
faust import: ``bus plan`` and ``bus apply`` use them to make the topics and grant the bus its
access before any worker starts."""

from __future__ import annotations

from dataclasses import dataclass

from bus.topology.models import Topology
from bus.topology.names import (
    AVAILABILITY_TOPIC,
    ENRICHED_SUFFIX,
    IMPORT_TOPIC,
    SLA_TOPIC,
    changelog_topic as changelog_in,
    processors_group,
    topic_name,
)

#: the faust tables (their changelogs are ``<app id>-<table>-changelog``)
CAMERAS_TABLE, SLA_TABLE, WINDOWS_TABLE = "cameras", "camera_sla", "storm_windows"
#: the event types the processors read and write; a topology without them runs no processors
PROCESSOR_EVENT_TYPES = ("camera_alarm", "camera_status", "city_case")


@dataclass(frozen=True)
class ProcessorTopics:
    alarms: str
    statuses: str
    enriched: str
    camera_import: str
    sla: str
    availability: str
    cases: str
    status_partitions: int
    alarm_partitions: int
    case_partitions: int


def runs_processors(topology: Topology) -> bool:
    """True when the topology has the event types the processors work on."""
    names = {et.name for et in topology.event_types}
    return all(name in names for name in PROCESSOR_EVENT_TYPES)


def processor_topics(topology: Topology) -> ProcessorTopics:
    alarm, status = topology.event_type("camera_alarm"), topology.event_type("camera_status")
    case = topology.event_type("city_case")
    return ProcessorTopics(
        alarms=alarm.topic,
        statuses=status.topic,
        enriched=f"{alarm.topic}.{ENRICHED_SUFFIX}",  # what `route_from: enriched` routes
        camera_import=topic_name(topology.namespace, IMPORT_TOPIC),
        sla=topic_name(topology.namespace, SLA_TOPIC),
        availability=topic_name(topology.namespace, AVAILABILITY_TOPIC),
        cases=case.topic,
        status_partitions=status.partitions,
        alarm_partitions=alarm.partitions,
        case_partitions=case.partitions,
    )


def app_id(topology: Topology) -> str:
    """The processors' faust app id, which is also their consumer group."""
    return processors_group(topology.namespace)


def changelog_topic(topology: Topology, table: str) -> str:
    """The changelog faust writes a table of the processors to (faust's own naming)."""
    return changelog_in(topology.namespace, table)


def changelog_partitions(topology: Topology) -> dict[str, int]:
    """Each table's changelog topic and its partitions (its source topic's)."""
    topics = processor_topics(topology)
    return {changelog_topic(topology, table): partitions
            for table, partitions in ((CAMERAS_TABLE, topics.status_partitions),
                                      (SLA_TABLE, topics.status_partitions),
                                      (WINDOWS_TABLE, topics.alarm_partitions))}
