"""`bus bench route`: the router's throughput as ratios to a plain confluent-kafka
consume -> produce passthrough on the same broker, in the same run, on the same records;
and publish -> subscription topic latency at a steady rate.

(a) raw passthrough, (b) one subscription that does not touch content, (c) one
subscription with a filter, a field selection and masking, (d) fan-out to 10
subscriptions (output records/s). Prints one JSON line.

Latency is measured in steady state, after a warm-up; a new Publisher's cold start (its
producer id) is reported apart. The machine's load average is reported with it: on a
shared machine the tail follows the load more than anything the bus does.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
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


def _raw_passthrough(settings: KafkaSettings, source: str, count: int, partitions: int = PARTITIONS) -> float:
    """(a): consume -> produce, no decoding, no transactions. Records/s."""
    sink = f"{source}.raw-{uuid.uuid4().hex[:6]}"
    ensure_topics(settings, [TopicSpec(sink, partitions)])
    consumer = Consumer(consumer_config(settings, group_id=f"bench-raw-{uuid.uuid4().hex[:6]}", client_id="bench-raw"))
    producer = Producer(producer_config(settings, client_id="bench-raw"))
    consumer.assign([TopicPartition(source, p, 0) for p in range(partitions)])
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


@dataclass
class LatencyRun:
    """Publish -> subscription topic delays (ms, sorted) of the measured records, and the
    cold start the measurement leaves out."""

    delays_ms: list[float]
    first_publish_ms: float  # a new Publisher's first acknowledged record
    first_arrival_ms: float  # the same record, published -> read from the subscription topic
    load_1m: float  # the machine's 1-minute load average when the measurement ended
    #: publish -> the broker's acknowledgement (ms, sorted): the publishing part of the delay
    ack_delays_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        delays = self.delays_ms
        return {
            "p50_ms": statistics.median(delays) if delays else float("nan"),
            "p99_ms": _p99(delays),
            "max_ms": delays[-1] if delays else float("nan"),
            "publish_ack_p99_ms": _p99(self.ack_delays_ms),
            "latency_samples": len(delays),
            "first_publish_ms": self.first_publish_ms,
            "first_arrival_ms": self.first_arrival_ms,
            "load_1m": self.load_1m,
        }


def _p99(sorted_ms: list[float]) -> float:
    """Nearest-rank 99th percentile of sorted values (NaN for none)."""
    return sorted_ms[max(0, math.ceil(len(sorted_ms) * 0.99) - 1)] if sorted_ms else float("nan")


class _Arrivals:
    """A read_committed reader of the subscription topic, from its end, on its own thread:
    the time each ``ce_id`` arrived."""

    def __init__(self, settings: KafkaSettings, topic: str) -> None:
        self.times: dict[str, float] = {}
        self._stop = threading.Event()
        self._reader = Consumer(consumer_config(settings, group_id=f"bench-lat-{uuid.uuid4().hex[:6]}",
                                                client_id="bench-lat", max_fetch_wait_ms=5))
        ends = [self._reader.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in range(PARTITIONS)]
        self._reader.assign([TopicPartition(topic, p, end) for p, end in enumerate(ends)])
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            msg = self._reader.poll(0.01)
            if msg is not None and not msg.error():
                self.times[dict(msg.headers() or [])["ce_id"].decode()] = time.perf_counter()

    def wait_for(self, ce_ids: Iterable[str], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        pending = [k for k in ce_ids if k not in self.times]
        while pending and time.monotonic() < deadline:
            time.sleep(0.005)
            pending = [k for k in pending if k not in self.times]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._reader.close()


def _passing_alarm(rng: random.Random) -> dict[str, Any]:
    """A camera alarm that the latency subscription's filter lets through."""
    return camera_alarm(rng) | {"severity": "HIGH", "alarm_type": "INTRUSION"}


@dataclass
class _Sent:
    """When each record (by ``ce_id``) was handed to the Publisher, and when the broker
    acknowledged it (perf_counter seconds)."""

    at: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)


def _acknowledged(acked: dict[str, float], ce_id: str) -> Callable[[KafkaError | None, Message], None]:
    """A delivery callback noting when the broker acknowledged ``ce_id``."""

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            acked[ce_id] = time.perf_counter()

    return on_delivery


def _publish_at_rate(publisher: Publisher, rng: random.Random, rate: int, seconds: float) -> _Sent:
    """Publish camera alarms that pass the benchmark's filter at a steady ``rate``."""
    sent = _Sent()
    producer = publisher._producer
    interval = 1.0 / rate
    next_at = time.perf_counter()
    end = next_at + seconds
    while next_at < end:
        now = time.perf_counter()
        if now < next_at:
            time.sleep(next_at - now)
        record = _passing_alarm(rng)
        t0 = time.perf_counter()
        prepared = publisher.prepare("camera_alarm", "police", record)
        sent.at[prepared.ce_id] = t0
        producer.produce(prepared.topic, key=prepared.key.encode(), value=prepared.value, headers=prepared.headers,
                         on_delivery=_acknowledged(sent.acked, prepared.ce_id))
        producer.poll(0)
        next_at += interval
    producer.flush(30)
    return sent


def _latency(topology: Topology, settings: KafkaSettings, rate: int, seconds: float, seed: int,
             warmup_s: float = 1.0) -> LatencyRun:
    """Publish at ``rate`` records/s through the Publisher while the router runs; the
    latency of each record is subscription-topic arrival minus publish start.

    Steady state is measured, as a long-running publisher sees it: the path is warmed up
    first (one record published and waited for end to end, then ``warmup_s`` at the rate,
    not counted). A new idempotent producer's first record waits for its producer id:
    librdkafka retries that request on a 500 ms timer until a broker connection is up, and
    its first connection (to the bootstrap address) is dropped once the broker's node id is
    known, so the first ~1 s of records used to wait up to 1 s and fill the p99. That cold
    start is reported apart (``first_publish_ms``, ``first_arrival_ms``)."""
    router = Router(topology, settings, batch_size=100, environ={"BUS_HASH_MASTER_KEY": "bench"})
    router.prepare()
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    if not router.assigned.wait(60):
        raise RuntimeError("the router was not assigned its partitions within 60 s")
    arrivals = _Arrivals(settings, topology.subscriptions[0].topic)
    rng = random.Random(seed)
    try:
        with Publisher(topology, settings, client_id="bench-latency") as publisher:
            t0 = time.perf_counter()
            first = publisher.publish("camera_alarm", "police", _passing_alarm(rng))
            first_publish = time.perf_counter() - t0
            arrivals.wait_for([first.ce_id], 30)
            first_arrival = arrivals.times.get(first.ce_id, float("nan")) - t0
            warm = _publish_at_rate(publisher, rng, rate, warmup_s)
            sent = _publish_at_rate(publisher, rng, rate, seconds)
        arrivals.wait_for([*warm.at, *sent.at], 30)
    finally:
        stop.set()
        thread.join(60)
        arrivals.close()
    return LatencyRun(
        delays_ms=_delays(sent.at, arrivals.times),
        first_publish_ms=first_publish * 1000,
        first_arrival_ms=first_arrival * 1000,
        load_1m=os.getloadavg()[0],
        ack_delays_ms=_delays(sent.at, sent.acked),
    )


def _delays(start: dict[str, float], end: dict[str, float]) -> list[float]:
    """Milliseconds from ``start`` to ``end`` of every key in both, sorted."""
    return sorted((end[k] - t) * 1000 for k, t in start.items() if k in end)


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
        settings = settings.with_exact_watermarks(exact_watermarks)
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
        results.update(_latency(latency_topology, settings, rate, seconds, seed).summary())
        results["records"] = count
        results["single_record_batches"] = settings.single_record_batches
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
