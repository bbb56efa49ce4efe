"""The faust app of the stateful processors: camera registry, enrichment, storms.

Design (the router reads canonical topics only, and a processor that wrote back into
``city.events.camera_alarm`` would read its own output and make the router deliver
every alarm twice): the processors read the canonical ``camera_alarm`` and
``camera_status`` topics and write every alarm, enriched and storm-merged, to
``<ns.>city.events.camera_alarm.enriched`` in the canonical encoding (wire format, the
canonical schema registered under ``<topic>-value``, CloudEvents headers with
``ce_source`` = the event type's owner). Routing departments from the enriched topic is
the router's side: it reads that topic instead of the raw one for ``camera_alarm``.

Linkage: every alarm published to the enriched topic also goes through the linkage rules
(``linkage.DEFAULT_RULES``); the city_case events they make go to the canonical city_case
topic, encoded as ``Publisher`` does (``ce_source`` = city_case's owner), so the router
routes them like any case.

Tables:
- ``cameras``: camera_id -> CameraInfo as JSON, fed by ``camera_status`` and by the
  registry import topic ``<ns.>city.processors.camera_import`` (``import_cameras``); it has
  as many partitions as ``camera_status`` (faust requires co-partitioned sources).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import faust
import structlog
from confluent_kafka import Producer

from bus.consume.decoder import Decoder
from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.config import KafkaSettings, faust_settings, producer_config
from bus.processors.cameras import CameraInfo, camera_from_status, enrich_alarm
from bus.processors.encoding import DerivedEncoder, derived_ce_id
from bus.processors.exceptions import ProcessorError
from bus.processors.linkage import DEFAULT_RULES, LinkageRule, cases_for
from bus.processors.storms import StormConfig, StormMerger, event_time_ms
from bus.registry.client import registry_client
from bus.schemas.records import to_json
from bus.topology.models import Topology, topic_name

log = structlog.get_logger(__name__)

ENRICHED_SUFFIX = "enriched"
IMPORT_TOPIC = "city.processors.camera_import"


@dataclass(frozen=True)
class ProcessorTopics:
    alarms: str
    statuses: str
    enriched: str
    camera_import: str
    status_partitions: int
    alarm_partitions: int


def processor_topics(topology: Topology) -> ProcessorTopics:
    alarm, status = topology.event_type("camera_alarm"), topology.event_type("camera_status")
    return ProcessorTopics(
        alarms=alarm.topic,
        statuses=status.topic,
        enriched=f"{alarm.topic}.{ENRICHED_SUFFIX}",
        camera_import=topic_name(topology.namespace, IMPORT_TOPIC),
        status_partitions=status.partitions,
        alarm_partitions=alarm.partitions,
    )


def app_id(topology: Topology) -> str:
    return topic_name(topology.namespace, "bus-processors")


def ensure_processor_topics(topology: Topology, settings: KafkaSettings) -> ProcessorTopics:
    topics = processor_topics(topology)
    ensure_topics(
        settings,
        [
            TopicSpec(topics.alarms, topics.alarm_partitions),
            TopicSpec(topics.statuses, topics.status_partitions),
            TopicSpec(topics.enriched, topics.alarm_partitions),
            TopicSpec(topics.camera_import, topics.status_partitions),
            TopicSpec(topology.event_type("city_case").topic, topology.event_type("city_case").partitions),
        ],
    )
    return topics


def import_cameras(topology: Topology, settings: KafkaSettings, cameras: list[CameraInfo]) -> int:
    """Send registry import rows to the import topic (keyed by camera id, JSON values);
    the running processors merge them into the camera table. Returns the number acknowledged."""
    topics = ensure_processor_topics(topology, settings)
    producer = Producer(producer_config(settings, client_id="bus-camera-import"))
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    for camera in cameras:
        while True:
            try:
                producer.produce(
                    topics.camera_import,
                    key=camera.camera_id.encode("utf-8"),
                    value=json.dumps(camera.to_json()).encode("utf-8"),
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(settings.connect_timeout_s + 60)
    if failures or remaining:
        raise ProcessorError(
            f"{len(failures) + remaining} of {len(cameras)} camera records were not acknowledged by "
            f"{settings.bootstrap_servers}" + (f": {failures[0]}" if failures else "")
        )
    return len(cameras)


def build_app(
    topology: Topology,
    settings: KafkaSettings,
    *,
    storms: StormConfig | None = None,
    idle_flush_s: float | None = 30.0,
    linkage: tuple[LinkageRule, ...] | None = DEFAULT_RULES,
) -> faust.App:
    """The processors' faust app. ``idle_flush_s``: close every open storm window when no
    alarm arrived for that long (wall clock, only so that a quiet city's last alarms are not
    held forever; window membership is always event time). None: never.
    ``linkage``: rules that turn the published alarms into city_case events on the canonical
    city_case topic (deterministic case ids); None: no linkage."""
    topics = processor_topics(topology)
    app = faust.App(
        app_id(topology),
        **faust_settings(settings),
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        # the camera table's keys (camera ids) and values are JSON; every topic says "raw" itself
        # (with raw table keys, faust's changelog recovery fails: "Expecting value: line 1 column 1")
        key_serializer="json",
        value_serializer="json",
        topic_partitions=topics.status_partitions,
        topic_replication_factor=1,
    )
    status_topic = app.topic(topics.statuses, key_serializer="raw", value_serializer="raw")
    import_topic = app.topic(topics.camera_import, key_serializer="raw", value_serializer="raw")
    alarm_topic = app.topic(topics.alarms, key_serializer="raw", value_serializer="raw")
    enriched_topic = app.topic(topics.enriched, key_serializer="raw", value_serializer="raw")
    case_topic = app.topic(topology.event_type("city_case").topic, key_serializer="raw", value_serializer="raw")
    case_encoder = DerivedEncoder(topology, settings, "city_case", topology.event_type("city_case").topic)
    cameras = app.Table("cameras", default=None, partitions=topics.status_partitions)
    decoder = Decoder(registry_client(settings))
    encoder = DerivedEncoder(topology, settings, "camera_alarm", topics.enriched)
    merger = StormMerger(storms)
    last_alarm = [time.monotonic()]

    def update(key: str, newer: CameraInfo) -> None:
        held = cameras.get(key)
        merged = CameraInfo.from_json(held).merged(newer) if held else newer
        cameras[key] = merged.to_json()

    @app.agent(status_topic)
    async def camera_status(stream: Any) -> None:
        async for event in stream.events():
            try:
                record = to_json(decoder.decode(event.value))
                info = camera_from_status(record, event_time_ms(record["reported_at"]))
            except Exception as exc:  # a bad record is logged and skipped, never fatal
                log.warning("camera_status record skipped", error=str(exc), offset=event.message.offset)
                continue
            update(info.camera_id, info)

    @app.agent(import_topic)
    async def camera_import(stream: Any) -> None:
        async for event in stream.events():
            try:
                info = CameraInfo.from_json(json.loads(event.value))
            except Exception as exc:
                log.warning("camera import record skipped", error=str(exc), offset=event.message.offset)
                continue
            update(info.camera_id, info)

    async def publish(alarms: list[dict[str, Any]]) -> None:
        for alarm in alarms:
            try:
                key, value, headers = encoder.encode(alarm, ce_id=derived_ce_id(alarm))
            except Exception as exc:
                log.error("derived alarm not encodable", error=str(exc), alarm_id=alarm.get("alarm_id"))
                continue
            await enriched_topic.send(key=key, value=value, headers=headers)
            for case in cases_for(alarm, linkage) if linkage else ():
                try:
                    key, value, headers = case_encoder.encode(case, ce_id=case["case_id"])
                except Exception as exc:
                    log.error("linkage case not encodable", error=str(exc), case_id=case.get("case_id"))
                    continue
                await case_topic.send(key=key, value=value, headers=headers)

    @app.agent(alarm_topic)
    async def camera_alarm(stream: Any) -> None:
        async for event in stream.events():
            last_alarm[0] = time.monotonic()
            try:
                alarm = to_json(decoder.decode(event.value))
                held = cameras.get(alarm["camera_id"])
                alarm, _ = enrich_alarm(alarm, CameraInfo.from_json(held) if held else None)
                out = merger.add(alarm, partition=event.message.partition)
            except Exception as exc:
                log.warning("camera_alarm record skipped", error=str(exc), offset=event.message.offset)
                continue
            await publish(out)

    if idle_flush_s is not None:

        @app.timer(max(0.5, idle_flush_s / 4))
        async def idle_flush() -> None:
            if merger.open_windows and time.monotonic() - last_alarm[0] >= idle_flush_s:
                await publish(merger.flush())

    app.bus_merger = merger  # type: ignore[attr-defined]  # for inspection
    return app


def run_worker(topology: Topology, settings: KafkaSettings, *, loglevel: str = "WARNING", **kwargs: Any) -> None:
    """Run the processors in the foreground until interrupted."""
    ensure_processor_topics(topology, settings)
    app = build_app(topology, settings, **kwargs)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
