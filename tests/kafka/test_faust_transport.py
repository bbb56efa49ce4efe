"""The processors' faust consumer waits as long as the profile says, not faust's built-in 1,500 ms."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiokafka
import faust
import pytest

from bus.kafka.config import EMBEDDED_FETCH_WAIT_MS, KafkaSettings
from bus.kafka.faust_transport import embedded_transport
from bus.processors.app import build_app
from bus.topology.loader import load_topology
from tests.fixtures.city import REPO

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
    waiting.transport = embedded_transport(KafkaSettings(), 100)(waiting.conf.broker_consumer, waiting)
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
