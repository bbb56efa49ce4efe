"""The faust app of the stateful processors: camera registry, enrichment, storms.

Design (the router reads canonical topics only, and a processor that wrote back into
``city.events.camera_alarm`` would read its own output and make the router deliver
every alarm twice): the processors read the canonical ``camera_alarm`` and
``camera_status`` topics and write every alarm, enriched, to
``<ns.>city.events.camera_alarm.enriched`` in the canonical encoding (wire format, the
canonical schema registered under ``<topic>-value``, CloudEvents headers with
``ce_source`` = the event type's owner). Routing departments from the enriched topic is
the router's side: it reads that topic instead of the raw one for ``camera_alarm``.
Storms (:mod:`bus.processors.storms`): the first alarm of a storm is written as soon as it is
read (offline alarms after the flap window), a storm's update with the same ``alarm_id`` when
its window closes; the CloudEvents id (``derived_ce_id``) differs between the two, so sinks
idempotent on it keep both and upsert by ``alarm_id``. The windows' alarms' offsets are
committed when read, so what a window holds unpublished is also kept in the table
``storm_windows`` (restored after a crash; an entry is removed once its emission is
acknowledged), and a worker that stops or loses its partitions closes every window first and
publishes what it held (``release_windows``).

Linkage: every alarm published to the enriched topic also goes through the linkage rules
of ``topology.yaml`` (``linkage:``); the city_case events they make go to the canonical
city_case topic, encoded as ``Publisher`` does (``ce_source`` = city_case's owner), so the
router routes them like any case. A storm's update opens only the cases of rules its first
version did not match (:func:`bus.processors.linkage.cases_for`).

Maintenance SLA (``sla``): camera_status feeds the ``camera_sla`` table directly; updates of
CAMERA_FAULT cases (keyed by case id on city_case) are forwarded, keyed by camera, to the
internal topic ``<ns.>city.processors.camera_sla`` on the camera's own partition, and
applied there. Breaches (escalation cases) go to the city_case topic like linkage cases.
The SLA clock is event time: whenever the latest event time read (alarms, statuses, cases)
moves on by ``tick_ms``, a tick record carrying it goes to every partition of the internal
topic, and each partition checks its own cameras' open faults against it (a table is only
written while processing a record of the key's partition).

Fleet availability: every ``availability_interval_s`` the cameras table is counted; changed
figures go to the monitor (when given) and to the compacted topic
``<ns.>bus-camera-availability`` (key district or ``all``, JSON value).

Tables:
- ``cameras``: camera_id -> CameraInfo as JSON, fed by ``camera_status`` and by the
  registry import topic ``<ns.>city.processors.camera_import`` (``import_cameras``); it has
  as many partitions as ``camera_status`` (faust requires co-partitioned sources).
- ``camera_sla``: camera_id -> CameraSla as JSON, co-partitioned the same way.
- ``storm_windows``: the storm merger's store (window entry -> state as JSON), as many
  partitions as ``camera_alarm``; an entry is written to its camera's partition whatever writes
  it (:class:`WindowsTable`).

Limit: the availability figures count the cameras of the partitions this worker holds;
they are the city's with one worker (every partition), partial with several.
"""

from __future__ import annotations

import asyncio
import atexit
import datetime as dt
import json
import shutil
import tempfile
import time
from typing import Any

import faust
import structlog
from confluent_kafka import Producer

from bus.consume.decoder import Decoder
from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.config import KafkaSettings, faust_fetch_wait_ms, faust_settings, producer_config
from bus.kafka.faust_transport import faust_credentials, processors_transport
from bus.processors.cameras import CameraInfo, camera_from_status, enrich_alarm
from bus.processors.encoding import DerivedEncoder, derived_ce_id
from bus.processors.exceptions import ProcessorError
from bus.processors.linkage import cases_for, compile_rules
from bus.processors.sla import (
    FAULT_CATEGORY,
    AvailabilityMonitor,
    AvailabilityReporter,
    SlaPolicy,
    SlaTracker,
    cameras_of,
    key_partition,
)
from bus.processors.topics import (
    CAMERAS_TABLE,
    SLA_TABLE,
    WINDOWS_TABLE,
    ProcessorTopics,
    app_id,
    changelog_partitions,
    processor_topics,
)
from bus.processors.storms import Emission, StormConfig, StormMerger, entry_camera, event_time_ms
from bus.registry.client import registry_client
from bus.schemas.records import to_json
from bus.topology.models import Topology

log = structlog.get_logger(__name__)


def ensure_processor_topics(topology: Topology, settings: KafkaSettings) -> ProcessorTopics:
    """Create the processors' topics, faust's changelogs included. faust would create those as
    its tables start, moments before its consumer joins the group; on Apache Kafka the new topics
    were then missing from the consumer's metadata (``not found in cluster metadata``): the
    assignor left their partitions to nobody ("Ignoring missing topic") until the metadata's
    refresh, up to 5 minutes, and the first camera_status record written to ``camera_sla``
    crashed its agent (``PartitionsMismatch``: the changelog "has 0 partitions"), losing that
    record's SLA entry. Created here, they exist (and are visible) before the worker starts,
    with the cluster's default replication rather than faust's ``topic_replication_factor``."""
    topics = processor_topics(topology)
    ensure_topics(
        settings,
        [
            TopicSpec(topics.alarms, topics.alarm_partitions),
            TopicSpec(topics.statuses, topics.status_partitions),
            TopicSpec(topics.enriched, topics.alarm_partitions),
            TopicSpec(topics.camera_import, topics.status_partitions),
            TopicSpec(topics.sla, topics.status_partitions),
            TopicSpec.compacted(topics.availability),
            TopicSpec(topics.cases, topics.case_partitions),
            *(TopicSpec.compacted(name, partitions) for name, partitions in changelog_partitions(topology).items()),
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


class WindowsTable(faust.Table):
    """The storm merger's store (:mod:`bus.processors.storms`): an entry lives in its camera's
    partition, the partition of the camera's alarms, whichever event or timer writes it, so
    that it can be written outside an alarm's processing (idle flush, shutdown, forgetting
    what was acknowledged) and is recovered by the worker that reads that camera."""

    def partition_for_key(self, key: Any) -> int:
        return key_partition(entry_camera(key), self.partitions)


class _WindowsWriter(faust.Sensor):
    """Writes the storm merger's changes to its table as an offset commit starts: faust then
    flushes its producer (the changelog records) before it commits, so the table is never
    behind the alarms whose offsets are committed, and a window absorbing a burst writes its
    entry once per commit (every 0.5 s), not once per alarm."""

    def __init__(self, merger: StormMerger) -> None:
        super().__init__()
        self.merger = merger

    def on_commit_initiated(self, consumer: Any) -> Any:
        self.merger.write_pending()


def _scratch_folder(name: str) -> str:
    """A folder of this process's own, removed when it exits."""
    folder = tempfile.mkdtemp(prefix=f"{name}-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


class CityProcessors:
    """The processors' faust app (:attr:`app`): one method per agent and timer, their state in
    attributes. ``idle_flush_s``: close every open storm window when no alarm arrived for that
    long (wall clock, only so that a quiet city's last storm updates and offline alarms awaiting
    the flap decision are not held forever; window membership is always event time; no other
    alarm waits for it). None: never. ``linkage``: apply the topology's linkage rules to the
    published alarms. ``sla``: the maintenance deadlines (default: the topology's CAMERA_FAULT
    linkage rule, else 24 h / 72 h). ``monitor``: receives the fleet availability. ``tick_ms``:
    event time between SLA ticks."""

    def __init__(
        self,
        topology: Topology,
        settings: KafkaSettings,
        *,
        storms: StormConfig | None = None,
        idle_flush_s: float | None = 30.0,
        linkage: bool = True,
        sla: SlaPolicy | None = None,
        monitor: AvailabilityMonitor | None = None,
        availability_interval_s: float = 5.0,
        tick_ms: int = 60_000,
    ) -> None:
        self.topics = topics = processor_topics(topology)
        self.tick_ms = tick_ms
        self.idle_flush_s = idle_flush_s
        self.app = app = faust.App(
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
            # faust commits every 2.8 s by default: the group's time lag never read under ~3 s,
            # above the bus's 2 s target, even when idle. Every 0.5 s costs two commits a second
            # and keeps the committed position within half a second of the work done.
            broker_commit_interval=0.5,
            broker_credentials=faust_credentials(settings),
            # no agent or timer runs on the leader only: no `<app id>-__assignor-__leader` topic, which
            # faust would make itself (the bus's principal may not create topics)
            topic_disable_leader=True,
            # the memory store keeps nothing on disk, but faust makes its folders: a temporary one,
            # not `<app id>-data` in the working directory
            datadir=_scratch_folder(app_id(topology)),
        )
        # before the first topic: app.topic() builds the transport
        app.transport = processors_transport(settings, faust_fetch_wait_ms(settings))(app.conf.broker_consumer, app)
        raw = {"key_serializer": "raw", "value_serializer": "raw"}
        self.status_topic = app.topic(topics.statuses, **raw)
        self.import_topic = app.topic(topics.camera_import, **raw)
        self.alarm_topic = app.topic(topics.alarms, **raw)
        self.enriched_topic = app.topic(topics.enriched, **raw)
        self.case_topic = app.topic(topics.cases, **raw)
        self.sla_topic = app.topic(topics.sla, **raw)
        self.availability_topic = app.topic(topics.availability, **raw)
        self.cameras = app.Table(CAMERAS_TABLE, default=None, partitions=topics.status_partitions)
        self.sla_table = app.Table(SLA_TABLE, default=None, partitions=topics.status_partitions)
        self.windows = app.tables.add(WindowsTable(app, name=WINDOWS_TABLE, default=None, beacon=app.tables.beacon,
                                                   partitions=topics.alarm_partitions,
                                                   help="Open storm and flap windows' unpublished alarms."))
        self.decoder = Decoder(registry_client(settings))
        self.encoder = DerivedEncoder(topology, settings, "camera_alarm", topics.enriched)
        self.case_encoder = DerivedEncoder(topology, settings, "city_case", topics.cases)
        self.merger = StormMerger(storms, store=self.windows)
        app.sensors.add(_WindowsWriter(self.merger))
        #: sends of emissions that publish store entries, and those entries: forgotten once acknowledged
        self.unsettled: list[tuple[list[Any], tuple[tuple[str, int], ...]]] = []
        self.rules = compile_rules(topology) if linkage else ()
        self.tracker = SlaTracker(self.sla_table, sla or SlaPolicy.from_topology(topology))
        self.last_alarm = time.monotonic()
        self.last_tick: int | None = None
        self.reporter = AvailabilityReporter(monitor)

        app.agent(self.status_topic, name="camera_status")(self.camera_status)
        app.agent(self.import_topic, name="camera_import")(self.camera_import)
        app.agent(self.case_topic, name="city_case")(self.city_case)
        app.agent(self.sla_topic, name="camera_sla")(self.camera_sla)
        app.agent(self.alarm_topic, name="camera_alarm")(self.camera_alarm)
        self.windows.on_recover(self.restore)
        app.timer(1.0, name="settle_windows")(self.settle_windows)
        app.timer(availability_interval_s, name="availability")(self.availability)
        if idle_flush_s is not None:
            app.timer(max(0.5, idle_flush_s / 4), name="idle_flush")(self.idle_flush)
        app.on_before_shutdown.connect(self.on_stop)
        app.on_partitions_revoked.connect(self.on_revoked)

    # -- the camera table ----------------------------------------------------------------------

    def update(self, key: str, newer: CameraInfo) -> None:
        """Merge into the camera's entry; written (a changelog record) only when it changed:
        most statuses are heartbeats."""
        held = self.cameras.get(key)
        merged = (CameraInfo.from_json(held).merged(newer) if held else newer).to_json()
        if merged != held:
            self.cameras[key] = merged

    async def camera_status(self, stream: Any) -> None:
        async for event in stream.events():
            try:
                record = to_json(self.decoder.decode(event.value))
                at = event_time_ms(record["reported_at"])
                info = camera_from_status(record, at)
            except Exception as exc:  # a bad record is logged and skipped, never fatal
                log.warning("camera_status record skipped", error=str(exc), offset=event.message.offset)
                continue
            self.update(info.camera_id, info)
            await self.open_cases(self.tracker.status(record))
            await self.tick(at)

    async def camera_import(self, stream: Any) -> None:
        async for event in stream.events():
            try:
                info = CameraInfo.from_json(json.loads(event.value))
            except Exception as exc:
                log.warning("camera import record skipped", error=str(exc), offset=event.message.offset)
                continue
            self.update(info.camera_id, info)

    # -- cases and the maintenance SLA ---------------------------------------------------------

    async def open_cases(self, cases: list[dict[str, Any]]) -> list[Any]:
        """Send the cases; returns their sends' futures (done when acknowledged)."""
        sent = []
        for case in cases:
            try:
                key, value, headers = self.case_encoder.encode(case, ce_id=case["case_id"])
            except Exception as exc:
                log.error("case not encodable", error=str(exc), case_id=case.get("case_id"))
                continue
            sent.append(await self.case_topic.send(key=key, value=value, headers=headers))
        return sent

    async def tick(self, at: int) -> None:
        """Send the SLA clock to every partition when it moved on by ``tick_ms``."""
        if self.last_tick is not None and at < self.last_tick + self.tick_ms:
            return
        self.last_tick = at
        value = json.dumps({"tick": at}).encode("utf-8")
        for partition in range(self.topics.status_partitions):
            await self.sla_topic.send(key=b"tick", value=value, partition=partition)

    async def city_case(self, stream: Any) -> None:
        """Forward CAMERA_FAULT case updates to the SLA topic, keyed and partitioned by camera."""
        async for event in stream.events():
            try:
                record = to_json(self.decoder.decode(event.value))
                at = event_time_ms(record["updated_at"])
            except Exception as exc:
                log.warning("city_case record skipped", error=str(exc), offset=event.message.offset)
                continue
            camera_id = record.get("component_id")
            if record["category"] == FAULT_CATEGORY and camera_id:
                await self.sla_topic.send(
                    key=camera_id.encode("utf-8"),
                    value=json.dumps({"camera_id": camera_id, "case": record}).encode("utf-8"),
                    partition=key_partition(camera_id, self.topics.status_partitions),
                )
            await self.tick(at)

    async def camera_sla(self, stream: Any) -> None:
        async for event in stream.events():
            try:
                message = json.loads(event.value)
                if "tick" in message:
                    partition = event.message.partition
                    mine = [k for k in list(self.sla_table.keys())
                            if key_partition(k, self.topics.status_partitions) == partition]
                    breaches = self.tracker.due(int(message["tick"]), mine)
                else:
                    breaches = self.tracker.case(message["camera_id"], message["case"])
            except Exception as exc:
                log.warning("camera_sla record skipped", error=str(exc), offset=event.message.offset)
                continue
            await self.open_cases(breaches)

    # -- alarms, storms and linkage ------------------------------------------------------------

    async def camera_alarm(self, stream: Any) -> None:
        async for event in stream.events():
            self.last_alarm = time.monotonic()
            try:
                alarm = to_json(self.decoder.decode(event.value))
                held = self.cameras.get(alarm["camera_id"])
                alarm, _ = enrich_alarm(alarm, CameraInfo.from_json(held) if held else None)
                out = self.merger.add(alarm, partition=event.message.partition)
            except Exception as exc:
                log.warning("camera_alarm record skipped", error=str(exc), offset=event.message.offset)
                continue
            await self.publish(out)
            await self.tick(event_time_ms(alarm["occurred_at"]))

    async def publish(self, emissions: list[Emission]) -> None:
        for emission in emissions:
            alarm = emission.alarm
            try:
                key, value, headers = self.encoder.encode(alarm, ce_id=derived_ce_id(alarm))
            except Exception as exc:
                log.error("derived alarm not encodable", error=str(exc), alarm_id=alarm.get("alarm_id"))
                self.merger.forget(emission.discharges)  # it never will be: keeping it would re-fail at every restart
                continue
            sent = [await self.enriched_topic.send(key=key, value=value, headers=headers)]
            sent += await self.open_cases(cases_for(alarm, self.rules, first=emission.first))
            if emission.discharges:
                self.unsettled.append((sent, emission.discharges))

    async def settle(self, wait: bool = False) -> None:
        """Forget the store entries whose emissions were acknowledged (``wait``: wait for all).
        Not before: a crash in between would lose what only the entry still holds."""
        if wait and self.unsettled:
            await asyncio.gather(*(f for sent, _ in self.unsettled for f in sent), return_exceptions=True)
        pending = []
        for sent, discharges in self.unsettled:
            if not all(f.done() for f in sent):
                pending.append((sent, discharges))
            elif not any(f.cancelled() or f.exception() for f in sent):
                self.merger.forget(discharges)
            # failed: the entry stays, and the next restart publishes it again
        self.unsettled = pending

    async def settle_windows(self) -> None:
        await self.settle()

    async def restore(self) -> None:
        """After the tables' recovery (start, rebalance), before the streams resume."""
        due = self.merger.restore()
        if self.merger.open_windows or due:
            log.info("storm windows restored", open_windows=self.merger.open_windows, closed_to_publish=len(due))
        await self.publish(due)

    async def release_windows(self, reason: str) -> None:
        """Close every open window now and publish what it held: the offline alarms awaiting
        the flap decision and the storms' updates. The table would keep them for the next worker
        (their input offsets were committed when read, nobody reads them again), but they would
        wait for it and for event time to close them there; at a stop they go out now."""
        held = self.merger.open_windows
        if held:
            emissions = self.merger.flush()
            log.info("storm windows closed early", reason=reason, open_windows=held, alarms=len(emissions))
            await self.publish(emissions)
        await self.settle(wait=True)  # what was published need not come back after a restart
        self.merger.write_pending()

    async def on_stop(self, sender: Any, **_: Any) -> None:
        # faust flushes its producer right after this signal, before the worker exits
        await self.release_windows("the worker is stopping")

    async def on_revoked(self, sender: Any, revoked: Any, **_: Any) -> None:
        if revoked:  # another worker takes them over and never sees what this one held
            await self.release_windows("partitions revoked")

    async def idle_flush(self) -> None:
        assert self.idle_flush_s is not None
        if self.merger.open_windows and time.monotonic() - self.last_alarm >= self.idle_flush_s:
            await self.publish(self.merger.flush())

    # -- fleet availability --------------------------------------------------------------------

    async def availability(self) -> None:
        """Count the fleet; publish the figures that changed (compacted topic, monitor)."""
        now = dt.datetime.now(dt.timezone.utc)  # when the figures were counted, for the page
        for key, value in self.reporter.report(cameras_of(self.cameras.values()), now):
            await self.availability_topic.send(key=key.encode("utf-8"), value=json.dumps(value).encode("utf-8"))


def build_app(topology: Topology, settings: KafkaSettings, **options: Any) -> faust.App:
    """The processors' faust app (see :class:`CityProcessors` for the options)."""
    return CityProcessors(topology, settings, **options).app


def run_worker(topology: Topology, settings: KafkaSettings, *, loglevel: str = "WARNING", **kwargs: Any) -> None:
    """Run the processors in the foreground until interrupted."""
    ensure_processor_topics(topology, settings)
    app = build_app(topology, settings, **kwargs)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
