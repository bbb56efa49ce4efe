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
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from bus.consume.decoder import Decoder
from bus.consume.tail import tail
from bus.demo.samples import GENERATORS
from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.config import consumer_config
from bus.publish import Publisher
from bus.registry.client import registry_client
from bus.routing.plan import build_routes
from bus.schemas.records import to_json
from bus.routing.router import SRC_HEADER
from tests.e2e.sinks import matches, written_filters
from tests.fixtures.city import REPO, City
from tests.routing.test_router import _read_raw
from bus.topology.names import router_group

# Exactly-once on both engines (on the embedded one with the router's recovery by source position).
pytestmark = pytest.mark.embedded

KILLS = 10


def _env(city: City) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(
        BUS_BOOTSTRAP_SERVERS=city.settings.bootstrap_servers,
        BUS_KAFKA_PROFILE=city.settings.kafka_profile or "embedded",
        BUS_REGISTRY_URL=city.settings.registry_url,
        BUS_HASH_MASTER_KEY="exactly-once-test",
        BUS_LOG_LEVEL="INFO",  # assignment and recovery lines: a failure shows what each group did
    )
    return env


def _log(city: City) -> Path:
    return city.path.parent / "router.log"


def _start_router(city: City) -> subprocess.Popen:
    """``bus route`` in a child process; its output goes to a file (a pipe nobody reads
    would block the router once full)."""
    with _log(city).open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "bus", "route", "-t", str(city.path), "--batch-size", "25"],
            env=_env(city), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )


def _log_tail(city: City, lines: int = 40, since: int = 0) -> str:
    """The router log's last lines, from byte ``since`` on (one router's run)."""
    with _log(city).open("rb") as log:
        log.seek(since)
        return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


def _router_groups(city: City) -> dict[str, list]:
    """Every router group (the shared one and one lane per subscription with a start point)
    and the canonical partitions it reads."""
    def partitions(event_type: str) -> list[TopicPartition]:
        et = city.topology.event_type(event_type)
        return [TopicPartition(et.topic, p) for p in range(et.partitions)]

    ns = city.topology.namespace
    groups = {router_group(ns): sorted({s.event_type for s in city.topology.subscriptions if s.lane is None})}
    groups.update({router_group(ns, s.lane): [s.event_type] for s in city.topology.subscriptions if s.lane})
    return {group: [tp for et in types for tp in partitions(et)] for group, types in groups.items()}


def _positions(city: City) -> list[tuple[str, TopicPartition, int]]:
    """(group, committed position, high watermark) of every router group's partitions."""
    out = []
    for group, tps in _router_groups(city).items():
        # Not read_committed: such a reader asks for stable offsets, which Kafka withholds while
        # a killed router's transaction is open (until the next router fences it).
        consumer = Consumer(consumer_config(city.settings, group_id=group, client_id="lag-probe", read_committed=False))
        try:
            for tp in consumer.committed(tps, timeout=10):
                out.append((group, tp, consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[1]))
        finally:
            consumer.close()
    return out


def _progress(city: City) -> tuple[int, int]:
    """(offsets the router groups have committed in all, their lag in records)."""
    positions = _positions(city)
    return (sum(max(tp.offset, 0) for _, tp, _ in positions),
            sum(high - max(tp.offset, 0) for _, tp, high in positions))


def _lag(city: City) -> int:
    return _progress(city)[1]


def _behind(city: City) -> list[str]:
    """The partitions not caught up, for a failure message: group topic[partition] committed / high."""
    return [f"{group} {tp.topic}[{tp.partition}] committed {tp.offset} / high {high}"
            for group, tp, high in _positions(city) if high > max(tp.offset, 0)]


@pytest.mark.timeout(900)  # ten restarts of four routers (the shared one and three backfill lanes), then a catch-up
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

    ensure_topics(city.settings, [TopicSpec(et.topic, et.partitions) for et in city.topology.event_types])
    publisher = threading.Thread(target=publish_continuously, daemon=True)
    publisher.start()
    committed_after_kill = []
    try:
        for _ in range(KILLS):
            before = _progress(city)[0]
            router = _start_router(city)
            deadline = time.monotonic() + 60
            while _progress(city)[0] <= before:  # routing (a transaction committed) ...
                assert router.poll() is None, _log_tail(city)
                assert time.monotonic() < deadline, f"the router committed nothing within 60 s:\n{_log_tail(city)}"
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))  # ... then killed at a random point of its work
            router.send_signal(signal.SIGKILL)
            router.wait(10)
            committed_after_kill.append(_progress(city)[0])
    finally:
        stop_publishing.set()
        publisher.join(30)

    final_from = _log(city).stat().st_size
    final = _start_router(city)
    try:
        deadline = time.monotonic() + 300  # a loaded CI machine: two brokers, two suites' worth of clients
        while (lag := _lag(city)) > 0:
            assert final.poll() is None, _log_tail(city, since=final_from)
            assert time.monotonic() < deadline, (
                f"the restarted router did not catch up ({lag} behind: {_behind(city)}):\n"
                f"{_log_tail(city, 80, since=final_from)}")
            time.sleep(0.5)
    finally:
        final.terminate()
        final.wait(30)
    # The router committed progress between kills again and again: it was killed while
    # working, not only while starting.
    advances = sum(1 for a, b in zip([0, *committed_after_kill], committed_after_kill) if b > a)
    assert advances == KILLS, committed_after_kill

    routes = build_routes(city.topology, {"BUS_HASH_MASTER_KEY": "exactly-once-test"})  # the topics only
    filters = written_filters(city.topology)
    decoder = Decoder(registry_client(city.settings))
    for event_type, event_routes in routes.items():
        reader = city.topology.schema_for(event_type).parsed
        canonical = []
        for msg in _read_raw(city.settings, city.topology.event_type(event_type).topic):
            headers = {k: v.decode() for k, v in msg.headers()}
            canonical.append((headers["ce_id"], decoder.decode(msg.value(), reader)))
        for route in event_routes:
            expected = sorted(ce_id for ce_id, datum in canonical if matches(filters[route.subscription], to_json(datum)))
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
