"""The processors' faust consumer: it waits as long as the profile says, not faust's built-in
1,500 ms, and it loses no record when a worker resumes (:class:`FlowSafeConsumer`).

The consumer's fetching thread is replaced here by :class:`ThreadStandIn`, which records what
the consumer asks of it: the races these guard against need a rebalance at the right
millisecond; the fault test (``tests/e2e/test_faults.py``) meets them with real kills."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
from collections.abc import Iterator

import aiokafka
import faust
import pytest
from faust.types import TP

from bus.kafka.config import EMBEDDED_FETCH_WAIT_MS, KafkaSettings
from bus.kafka.faust_transport import OVERRIDDEN, WRITTEN_FOR, FlowSafeConsumer, processors_transport
from bus.processors.app import build_app
from bus.topology.validate import load_topology
from tests.fixtures.city import REPO

# faust's transport holds on both engines.
pytestmark = pytest.mark.embedded

FAUST_BUILT_IN_WAIT_MS = 1500


async def _ignore(*_: object) -> None:
    return None


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


def worker_consumer(app: faust.App, loop: asyncio.AbstractEventLoop) -> aiokafka.AIOKafkaConsumer:
    """The aiokafka consumer the app's worker would start (built, never started: no broker)."""

    async def build() -> aiokafka.AIOKafkaConsumer:
        consumer = app.transport.create_consumer(
            callback=_ignore, on_partitions_revoked=_ignore, on_partitions_assigned=_ignore
        )
        return consumer._new_consumer_thread()._create_worker_consumer(app.transport)

    return loop.run_until_complete(build())


def test_the_transport_changes_the_fetch_wait_and_nothing_else(loop: asyncio.AbstractEventLoop) -> None:
    plain = faust.App("bus-test-plain", broker="kafka://127.0.0.1:1")
    waiting = faust.App("bus-test-plain", broker="kafka://127.0.0.1:1")
    waiting.transport = processors_transport(KafkaSettings(), 100)(waiting.conf.broker_consumer, waiting)
    theirs, ours = worker_consumer(plain, loop), worker_consumer(waiting, loop)
    assert theirs._fetch_max_wait_ms == FAUST_BUILT_IN_WAIT_MS
    assert ours._fetch_max_wait_ms == 100
    scalar = (int, float, str, bool, type(None))
    differ = {
        name for name, value in vars(theirs).items()
        if isinstance(value, scalar) and getattr(ours, name) != value
    }
    assert differ == {"_fetch_max_wait_ms"}


@pytest.mark.parametrize(
    ("settings", "wait_ms"),
    [
        (KafkaSettings(kafka_profile="embedded"), EMBEDDED_FETCH_WAIT_MS),
        (KafkaSettings(bootstrap_servers="kafka-1.city.local:9092"), FAUST_BUILT_IN_WAIT_MS),
    ],
    ids=["embedded", "cluster"],
)
def test_the_processors_wait_as_the_profile_says(
    settings: KafkaSettings, wait_ms: int, loop: asyncio.AbstractEventLoop
) -> None:
    app = build_app(load_topology(REPO / "topology.yaml"), settings)
    assert worker_consumer(app, loop)._fetch_max_wait_ms == wait_ms
    assert issubclass(app.transport.Consumer, FlowSafeConsumer)  # whatever the profile


class ThreadStandIn:
    """What :class:`FlowSafeConsumer` asks of faust's fetching thread, recorded. ``during_fetch``
    runs while a fetch is awaited, as faust's own code does on the event loop meanwhile."""

    def __init__(self, assignment: set[TP]) -> None:
        self._assignment = assignment
        self.fetched_for: list[object] = []
        self.during_fetch = lambda: None

    async def getmany(self, active_partitions: object, timeout: float) -> dict:
        self.fetched_for.append(active_partitions)
        self.during_fetch()
        return {}

    def assignment(self) -> set[TP]:
        return set(self._assignment)

    async def seek_to_committed(self) -> dict:
        return {}


def flow_safe_consumer(loop: asyncio.AbstractEventLoop, assignment: set[TP]) -> tuple[FlowSafeConsumer, ThreadStandIn]:
    app = build_app(load_topology(REPO / "topology.yaml"), KafkaSettings(kafka_profile="embedded"))

    async def build() -> FlowSafeConsumer:
        return app.transport.create_consumer(
            callback=_ignore, on_partitions_revoked=_ignore, on_partitions_assigned=_ignore
        )

    consumer = loop.run_until_complete(build())
    assert isinstance(consumer, FlowSafeConsumer)
    consumer._thread = thread = ThreadStandIn(assignment)
    return consumer, thread


def test_the_fetching_thread_gets_the_active_partitions_as_they_were_when_asked(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """faust changes its set of active partitions in place while a fetch is awaited; aiokafka
    takes an emptied set for every partition, and faust then dropped the records of the
    partitions it had not asked for, past which aiokafka had moved (alarms lost in the fault
    test, 4 runs out of 4, before this)."""
    alarms = TP("city.events.camera_alarm", 3)
    consumer, thread = flow_safe_consumer(loop, {alarms})
    active = {alarms}
    thread.during_fetch = active.clear  # a rebalance pauses everything meanwhile
    loop.run_until_complete(consumer._getmany(active, 1.0))
    assert thread.fetched_for == [frozenset({alarms})]  # a snapshot: still the partition asked for
    assert loop.run_until_complete(consumer._getmany(set(), 1.0)) == {}
    assert len(thread.fetched_for) == 1, "an empty set reached aiokafka, which reads it as every partition"


def test_stream_partitions_are_fetched_only_after_the_seek_and_the_flow_resumed(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """faust resumes the stream partitions before it seeks them to their committed offsets and
    before its flow control's resume clears the streams' queues: what is fetched in between is
    read from where the last assignment stopped, or queued and then cleared."""
    alarms, changelog = TP("city.events.camera_alarm", 3), TP("bus-processors-storm_windows-changelog", 3)
    consumer, _ = flow_safe_consumer(loop, {alarms, changelog})
    assert changelog.topic in consumer.app.tables.changelog_topics
    consumer.pause_partitions({alarms, changelog})  # as faust does when partitions are assigned
    consumer.resume_partitions({alarms, changelog})
    active = consumer._get_active_partitions()
    assert changelog in active, "a changelog is read during the recovery, before any seek"
    assert alarms not in active, "a stream partition was fetched before the seek"
    consumer.resume_flow()
    assert alarms not in consumer._get_active_partitions(), "resumed by a flow resumed before the seek"
    loop.run_until_complete(consumer.perform_seek())
    consumer.resume_flow()
    assert alarms in consumer._get_active_partitions()


def test_the_patches_run_on_the_faust_and_aiokafka_they_were_written_for() -> None:
    # Upgrading either: read bus/kafka/faust_transport.py against the new driver first, then
    # move WRITTEN_FOR. A private method renamed or reshaped would break the patches quietly.
    installed = {name: importlib.metadata.version(name) for name in WRITTEN_FOR}
    assert installed == WRITTEN_FOR, f"faust's patches were written for {WRITTEN_FOR}, {installed} is installed"
    for cls, names in OVERRIDDEN.items():
        for name in names:
            assert callable(getattr(cls, name, None)), f"{cls.__name__}.{name} is gone"
    assert "_fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
