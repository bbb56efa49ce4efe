"""`bus bench route`: the router's throughput as ratios to a plain confluent-kafka
consume -> produce passthrough on the same broker, in the same run, on the same records;
and publish -> subscription topic latency at a steady rate.

(a) raw passthrough, (b) one subscription that does not touch content, (c) one
subscription with a filter, a field selection and masking, (d) fan-out to 10
subscriptions (output records/s). Prints one JSON line.
"""

from __future__ import annotations

import contextlib
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from ruamel.yaml import YAML

from bus.demo.samples import camera_alarm
from bus.kafka.admin import TopicSpec, delete_topics, ensure_topics
from bus.kafka.broker import EmbeddedBroker
from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.kafka.consuming import take_batch
from bus.publish import Publisher
from bus.registry.server import EmbeddedRegistry
from bus.routing.router import Router
from bus.topology.loader import load_topology
from bus.topology.models import Topology

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
PARTITIONS = 4
Say = Callable[[str], None]

_MASKED_SELECTION = ["alarm_id", "camera_id", "alarm_type", "severity", "occurred_at", "location", "plate_number"]


def _subscription(name: str, kind: str) -> dict[str, Any]:
    sub: dict[str, Any] = {"name": name, "department": "bench_sink", "event_type": "camera_alarm",
                           "description": f"benchmark: {kind}"}
    if kind == "filtered":
        sub["filter"] = {"and": [{"field": "severity", "ne": "LOW"},
                                 {"field": "alarm_type", "in": ["INTRUSION", "WATCHLIST_VEHICLE", "FIRE_SMOKE", "CAMERA_OFFLINE"]}]}
    if kind in ("filtered", "masked"):
        sub["fields"] = _MASKED_SELECTION
        sub["masks"] = {"plate_number": "hash"}
    return sub


def bench_topology(
    folder: Path, namespace: str, subscriptions: list[dict[str, Any]], connectors: list[dict[str, Any]] | None = None
) -> Topology:
    """The benchmarks' city: camera alarms published by the police, read by ``bench_sink``."""
    doc = {
        "version": 1,
        "city": {"name": "Benchmark"},
        "namespace": namespace,
        "schemas_dir": str(SCHEMAS),
        "departments": [
            {"name": "police", "title": "Police"},
            {"name": "bench_sink", "title": "Benchmark subscriber",
             "entitlements": {"camera_alarm": {"plate_number": "clear", "snapshot_url": "clear"}}},
        ],
        "event_types": [{"name": "camera_alarm", "schema": "surveillance/camera_alarm.avsc", "owner": "police",
                         "key": "camera_id", "partitions": PARTITIONS}],
        "subscriptions": subscriptions,
        "connectors": connectors or [],
    }
    path = folder / f"{namespace}.yaml"
    with path.open("w") as out:
        YAML().dump(doc, out)
    return load_topology(path)


def _load_records(topology: Topology, settings: KafkaSettings, count: int, seed: int) -> None:
    rng = random.Random(seed)
    with Publisher(topology, settings, client_id="bench-load") as publisher:
        summary = publisher.publish_each("camera_alarm", "police", ((i, camera_alarm(rng)) for i in range(count)))
    if summary.rejected:
        raise RuntimeError(f"benchmark records rejected: {summary.rejected[:3]}")


def _raw_passthrough(settings: KafkaSettings, source: str, count: int) -> float:
    """(a): consume -> produce, no decoding, no transactions. Records/s."""
    sink = f"{source}.raw-{uuid.uuid4().hex[:6]}"
    ensure_topics(settings, [TopicSpec(sink, PARTITIONS)])
    consumer = Consumer(consumer_config(settings, group_id=f"bench-raw-{uuid.uuid4().hex[:6]}", client_id="bench-raw"))
    producer = Producer(producer_config(settings, client_id="bench-raw"))
    consumer.assign([TopicPartition(source, p, 0) for p in range(PARTITIONS)])
    done = 0
    started = None
    while done < count:
        for msg in take_batch(consumer, 1000, 1.0):
            if msg.error():
                continue
            started = started or time.perf_counter()
            while True:
                try:
                    producer.produce(sink, key=msg.key(), value=msg.value(), headers=msg.headers())
                    break
                except BufferError:
                    producer.poll(0.01)
            done += 1
        producer.poll(0)
    producer.flush(60)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    delete_topics(settings, [sink])
    return count / elapsed


def _routed(topology: Topology, settings: KafkaSettings, count: int) -> tuple[float, float]:
    """Run a router over ``count`` preloaded records: (input records/s, output records/s)."""
    router = Router(topology, settings, batch_size=1000, environ={"BUS_HASH_MASTER_KEY": "bench"})
    router.prepare()
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    if not router.assigned.wait(60):
        raise RuntimeError("the router was not assigned its partitions within 60 s")
    started = time.perf_counter()
    while router.stats.committed_in < count:  # to the commit, as the baseline's flush
        time.sleep(0.002)
    in_s = time.perf_counter() - started
    out = router.stats.committed_out
    stop.set()
    thread.join(60)
    return count / in_s, out / in_s


def _latency(topology: Topology, settings: KafkaSettings, rate: int, seconds: float, seed: int) -> list[float]:
    """Publish at ``rate`` records/s through the Publisher while the router runs; the
    latency of each record is subscription-topic arrival minus publish start."""
    sub_topic = topology.subscriptions[0].topic
    router = Router(topology, settings, batch_size=100, environ={"BUS_HASH_MASTER_KEY": "bench"})
    router.prepare()
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    router.assigned.wait(60)
    reader = Consumer(consumer_config(settings, group_id=f"bench-lat-{uuid.uuid4().hex[:6]}",
                                      client_id="bench-lat", max_fetch_wait_ms=5))
    reader.assign([TopicPartition(sub_topic, p, reader.get_watermark_offsets(TopicPartition(sub_topic, p), 10)[1])
                   for p in range(PARTITIONS)])
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}

    def read() -> None:
        while not stop.is_set():
            msg = reader.poll(0.01)
            if msg is not None and not msg.error():
                ce_id = dict(msg.headers())["ce_id"].decode()
                arrived[ce_id] = time.perf_counter()

    reading = threading.Thread(target=read, daemon=True)
    reading.start()
    rng = random.Random(seed)
    with Publisher(topology, settings, client_id="bench-latency") as publisher:
        interval = 1.0 / rate
        next_at = time.perf_counter()
        end = next_at + seconds
        while next_at < end:
            now = time.perf_counter()
            if now < next_at:
                time.sleep(next_at - now)
            record = camera_alarm(rng) | {"severity": "HIGH", "alarm_type": "INTRUSION"}
            t0 = time.perf_counter()
            prepared = publisher.prepare("camera_alarm", "police", record)
            sent[prepared.ce_id] = t0
            publisher._producer.produce(prepared.topic, key=prepared.key.encode(), value=prepared.value,
                                        headers=prepared.headers)
            publisher._producer.poll(0)
            next_at += interval
        publisher._producer.flush(30)
    deadline = time.monotonic() + 30
    while len(arrived) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(60)
    reading.join(5)
    reader.close()
    return sorted((arrived[k] - sent[k]) * 1000 for k in sent if k in arrived)


@contextlib.contextmanager
def _infrastructure(say: Say) -> Iterator[KafkaSettings]:
    settings = KafkaSettings()
    with contextlib.ExitStack() as stack:
        if settings.embedded:
            broker = stack.enter_context(EmbeddedBroker())
            settings = settings.with_broker(broker.bootstrap_servers, embedded=True)
        say(f"broker: {settings.bootstrap_servers} ({settings.kafka_profile} profile)")
        registry = stack.enter_context(EmbeddedRegistry(settings, topic=f"_bus_schemas_bench_{uuid.uuid4().hex[:6]}"))
        yield settings.with_registry(registry.url)


def run_route_benchmark(count: int = 20_000, rate: int = 1000, seconds: float = 10.0, seed: int = 7,
                        exact_watermarks: bool = False, say: Say = print) -> dict[str, float]:
    """Throughput and latency figures. By default the embedded broker's single-record-batch
    workaround is off for baseline and router alike, so that the ratios measure the
    router's own cost rather than that workaround's."""
    with _infrastructure(say) as settings, tempfile.TemporaryDirectory() as folder:
        settings = settings.model_copy(update={"exact_watermarks": exact_watermarks})
        scenarios = {
            "untouched": [_subscription("untouched", "untouched")],
            "filtered": [_subscription("filtered", "filtered")],
            "fanout10": [_subscription(f"fan-{i}", "masked") for i in range(10)],
        }
        results: dict[str, float] = {}
        topologies = {name: bench_topology(Path(folder), f"bench_{name}_{uuid.uuid4().hex[:6]}", subs)
                      for name, subs in scenarios.items()}
        base = topologies["untouched"]
        say(f"loading {count} camera alarms ...")
        _load_records(base, settings, count, seed)
        source = base.event_type("camera_alarm").topic
        for name, topo in topologies.items():
            if topo is not base:  # every scenario reads the same records: copy them raw
                _copy(settings, source, topo.event_type("camera_alarm").topic, count)
        say("(a) raw passthrough ...")
        results["raw_eps"] = _raw_passthrough(settings, source, count)
        for name, topo in topologies.items():
            say(f"router: {name} ...")
            eps_in, eps_out = _routed(topo, settings, count)
            results[f"{name}_eps"] = eps_out if name == "fanout10" else eps_in
        for name in scenarios:
            results[f"{name}_ratio"] = results[f"{name}_eps"] / results["raw_eps"]
        say(f"latency at {rate} records/s for {seconds:g} s ...")
        latency_topology = bench_topology(Path(folder), f"bench_latency_{uuid.uuid4().hex[:6]}", [_subscription("latency", "filtered")])
        latencies = _latency(latency_topology, settings, rate, seconds, seed)
        results["p50_ms"] = statistics.median(latencies) if latencies else float("nan")
        results["p99_ms"] = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
        results["latency_samples"] = len(latencies)
        results["records"] = count
        results["single_record_batches"] = exact_watermarks and settings.embedded
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}


def _copy(settings: KafkaSettings, source: str, target: str, count: int) -> None:
    consumer = Consumer(consumer_config(settings, group_id=f"bench-copy-{uuid.uuid4().hex[:6]}", client_id="bench-copy"))
    producer = Producer(producer_config(settings, client_id="bench-copy"))
    consumer.assign([TopicPartition(source, p, 0) for p in range(PARTITIONS)])
    done = 0
    while done < count:
        for msg in take_batch(consumer, 1000, 1.0):
            if msg.error():
                continue
            while True:
                try:
                    producer.produce(target, partition=msg.partition(), key=msg.key(), value=msg.value(), headers=msg.headers())
                    break
                except BufferError:
                    producer.poll(0.01)
            done += 1
    producer.flush(60)
    consumer.close()
