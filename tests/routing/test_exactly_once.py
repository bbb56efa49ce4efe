"""Kill the router with SIGKILL at random points, again and again, while departments keep
publishing: every subscription topic ends up holding every entitled record exactly once,
in per-key order."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict

from confluent_kafka import Consumer, TopicPartition

from bus.consume.decoder import Decoder
from bus.consume.tail import tail
from bus.demo.samples import GENERATORS
from bus.kafka.config import consumer_config
from bus.publish import Publisher
from bus.registry.client import registry_client
from bus.routing.plan import build_routes
from bus.ops.lag import router_group
from bus.routing.router import SRC_HEADER
from tests.fixtures.city import REPO, City
from tests.routing.test_router import _read_raw

KILLS = 10


def _env(city: City) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(
        BUS_BOOTSTRAP_SERVERS=city.settings.bootstrap_servers,
        BUS_KAFKA_PROFILE=city.settings.kafka_profile or "embedded",
        BUS_REGISTRY_URL=city.settings.registry_url,
        BUS_HASH_MASTER_KEY="exactly-once-test",
        BUS_LOG_LEVEL="WARNING",
    )
    return env


def _start_router(city: City) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bus", "route", "-t", str(city.path), "--batch-size", "25"],
        env=_env(city), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def _lag(city: City) -> int:
    consumer = Consumer(consumer_config(city.settings, group_id=router_group(city.topology.namespace), client_id="lag-probe"))
    try:
        total = 0
        tps = [TopicPartition(et.topic, p) for et in city.topology.event_types for p in range(et.partitions)]
        for tp in consumer.committed(tps, timeout=10):
            high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[1]
            total += high - max(tp.offset, 0)
        return total
    finally:
        consumer.close()


def test_router_killed_ten_times_delivers_every_record_exactly_once(city: City) -> None:
    rng = random.Random(1947)
    stop_publishing = threading.Event()
    published = []

    def publish_continuously() -> None:
        local = random.Random(7)
        with Publisher(city.topology, city.settings) as publisher:
            while not stop_publishing.is_set():
                et = local.choice(city.topology.event_types)
                published.append(publisher.publish(et.name, et.owner, GENERATORS[et.name](local)))
                time.sleep(0.005)

    publisher = threading.Thread(target=publish_continuously, daemon=True)
    publisher.start()
    lag_seen = []
    try:
        for _ in range(KILLS):
            router = _start_router(city)
            time.sleep(rng.uniform(1.5, 6.0))  # a random point: starting, joining, mid-transaction
            router.send_signal(signal.SIGKILL)
            router.wait(10)
            lag_seen.append(_lag(city))
    finally:
        stop_publishing.set()
        publisher.join(30)

    final = _start_router(city)
    try:
        deadline = time.monotonic() + 180
        while _lag(city) > 0:
            assert final.poll() is None, final.stderr.read().decode()[-3000:] if final.stderr else ""
            assert time.monotonic() < deadline, "the restarted router did not catch up"
            time.sleep(0.5)
    finally:
        final.terminate()
        final.wait(30)
    # The router made progress between kills (it was killed while working, not only idle).
    assert len(set(lag_seen)) > 1

    routes = build_routes(city.topology, {"BUS_HASH_MASTER_KEY": "exactly-once-test"})
    decoder = Decoder(registry_client(city.settings))
    for event_type, event_routes in routes.items():
        reader = city.topology.schema_for(event_type).parsed
        canonical = []
        for msg in _read_raw(city.settings, city.topology.event_type(event_type).topic):
            headers = {k: v.decode() for k, v in msg.headers()}
            canonical.append((headers["ce_id"], decoder.decode(msg.value(), reader)))
        for route in event_routes:
            expected = sorted(ce_id for ce_id, datum in canonical if route.predicate(datum))
            got = list(tail(city.settings, [route.topic], exit_at_end=True))
            ids = [g.headers["ce_id"] for g in got]
            assert len(ids) == len(set(ids)), f"{route.subscription}: {len(ids) - len(set(ids))} duplicates"
            assert sorted(ids) == expected, f"{route.subscription}: missing {set(expected) - set(ids)}"
            last_source_offset: dict[tuple, int] = defaultdict(lambda: -1)
            for g in got:
                source = g.headers[SRC_HEADER].rsplit(":", 1)
                per_key = (g.partition, g.key, source[0])
                assert int(source[1]) > last_source_offset[per_key], f"{route.subscription}: order broken for {g.key}"
                last_source_offset[per_key] = int(source[1])
    assert len(published) > 100
