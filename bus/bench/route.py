"""`bus bench route`: the router's throughput in steady state, as ratios to the fastest plain
confluent-kafka consume -> produce passthrough found (:class:`bus.bench.steady.Passthrough`),
on the same broker, in the same process, on the same records; and publish -> subscription
topic latency at a steady rate.

Scenarios: (a) the raw passthrough (the baseline), (b) one subscription that does not touch
content, (c) one subscription with a filter, a field selection and masking, (d) fan-out to
10 subscriptions with selection and masking (counted in output records).

Throughput runs in rounds: each round runs the baseline, then a router for each scenario, one
after the other, each for ``warmup_s`` (not counted) and ``seconds`` (counted, between two
commits); each scenario's ratio is the median over the rounds of its rate divided by the
baseline's rate of the same round (the machine's load drifts less within a round than across
a run). The records are a backlog in one canonical topic, written between runs as far ahead
as the next run needs: the distinct camera alarms the Publisher encoded, again and again.
Start-up (a router's producer id, group join, first fetch) is reported and left out;
:mod:`bus.bench.steady` says when a run is too short to mean anything.

Latency is measured in steady state, after a warm-up; a new Publisher's cold start (its
producer id) is reported apart. The machine's load average is reported with it: on a
shared machine the tail follows the load more than anything the bus does.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from ruamel.yaml import YAML

from bus.bench.brokers import BenchBroker, Engine, drop_namespace, given_or_started
from bus.bench.steady import BASELINE_TUNING, Marks, Passthrough, Window, load_average, median, warn_short
from bus.demo.samples import camera_alarm
from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.kafka.consuming import take_batch
from bus.publish import Publisher
from bus.routing.router import DEFAULT_BATCH_SIZE, Router
from bus.topology.models import Topology
from bus.topology.validate import load_topology

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
PARTITIONS = 4
Say = Callable[[str], None]
#: A record ready to produce: key, wire-format value, CloudEvents headers.
Wire = tuple[bytes, bytes, list[tuple[str, bytes]]]

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


#: The throughput scenarios: subscriptions of one benchmark city, each routed by a router of
#: its own (``select``) that reads the same canonical topic.
SCENARIOS: dict[str, list[tuple[str, str]]] = {
    "untouched": [("untouched", "untouched")],
    "filtered": [("filtered", "filtered")],
    "fanout10": [(f"fan-{i}", "masked") for i in range(10)],
}
#: Ratio targets on Apache Kafka (issue 17), each to the raw passthrough of the same round.
TARGETS = {"untouched_ratio": 0.7, "filtered_ratio": 0.3, "fanout10_ratio": 0.5}
P99_TARGET_MS = 50.0


@dataclass(frozen=True)
class RouteParams:
    """What `bus bench route` runs (see :func:`run_route_benchmark`)."""

    #: Measured seconds of each run, after ``warmup_s`` of work that is not counted.
    seconds: float = 15.0
    warmup_s: float = 2.0
    #: Rounds of (baseline, untouched, filtered, fan-out) runs, one after the other.
    rounds: int = 3
    #: Latency: publish rate, measured seconds, and seconds of the same rate before them.
    rate: int = 1000
    latency_seconds: float = 30.0
    latency_warmup_s: float = 5.0
    #: Distinct camera alarms encoded by the Publisher; the backlog repeats them.
    distinct: int = 20_000
    seed: int = 7
    exact_watermarks: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    #: Records written before the calibration run (the baseline's first read).
    min_backlog: int = 300_000


def _encoded(topology: Topology, settings: KafkaSettings, count: int, seed: int) -> list[Wire]:
    """``count`` camera alarms as the Publisher writes them (checked, wire format, headers)."""
    rng = random.Random(seed)
    with Publisher(topology, settings, client_id="bench-encode") as publisher:
        out = []
        for _ in range(count):
            p = publisher.prepare("camera_alarm", "police", camera_alarm(rng))
            out.append((p.key.encode("utf-8"), p.value, p.headers))
        return out


class _Backlog:
    """The canonical topic every run reads: the distinct records written again and again, as
    far ahead of its readers as the next run needs (written between runs, never during)."""

    def __init__(self, settings: KafkaSettings, topic: str, records: list[Wire]) -> None:
        self.topic, self.records = topic, records
        self.written = 0
        self._producer = Producer(producer_config(settings, client_id="bench-backlog"))

    def fill(self, total: int, say: Say) -> None:
        """Write until ``total`` records were written in all."""
        if total <= self.written:
            return
        todo = total - self.written
        say(f"  backlog: writing {todo:,} records ...")
        produce, poll, records, n = self._producer.produce, self._producer.poll, self.records, len(self.records)
        for i in range(self.written, total):
            key, value, headers = records[i % n]
            while True:
                try:
                    produce(self.topic, value, key, headers=headers)
                    break
                except BufferError:
                    poll(0.05)
        if self._producer.flush(120):
            raise RuntimeError("the broker did not acknowledge the benchmark's backlog within 120 s")
        self.written = total


def _routed(topology: Topology, settings: KafkaSettings, names: set[str], params: RouteParams,
            timeout_s: float) -> tuple[Window, int]:
    """One router run over the backlog, from where the last one stopped (all scenarios' routers
    share the group and the static member id): its window, and the records it committed."""
    marks = Marks(params.warmup_s, params.seconds)
    router = Router(topology, settings, instance="bench", batch_size=params.batch_size,
                    environ={"BUS_HASH_MASTER_KEY": "bench"}, select=lambda sub: sub.name in names,
                    on_batch=lambda stats: marks.mark(stats.committed_in, stats.committed_out))
    router.prepare()
    stop = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            router.run(stop)
        except BaseException as exc:  # noqa: BLE001 - reported in the caller's thread
            failed.append(exc)
            marks.done.set()

    marks.started = time.perf_counter()  # start-up: from run() (topics and schemas exist) to its partitions held
    thread = threading.Thread(target=run, name="bench-router", daemon=True)
    thread.start()
    if router.assigned.wait(60):
        marks.set_ready()
    finished = marks.done.wait(timeout_s)
    stop.set()
    thread.join(60)
    if failed:
        raise RuntimeError(f"the router failed: {failed[0]}") from failed[0]
    return marks.window(exhausted=not finished), router.stats.committed_in


@dataclass
class _Rounds:
    """The throughput rounds of one run: windows of the baseline and of each scenario."""

    raw: list[Window] = field(default_factory=list)
    bus: dict[str, list[Window]] = field(default_factory=lambda: {name: [] for name in SCENARIOS})
    loads: list[float] = field(default_factory=list)

    def ratio(self, name: str, i: int) -> float:
        window, raw = self.bus[name][i], self.raw[i].rate
        rate = window.out_rate if name == "fanout10" else window.rate
        return rate / raw if raw else float("nan")


def _throughput(topology: Topology, settings: KafkaSettings, backlog: _Backlog, params: RouteParams,
                say: Say) -> _Rounds:
    """Rounds of: the baseline, then each scenario's router, each run on records written for it
    beforehand. The baseline reads the backlog from its start each time; the routers go on where
    the last one stopped."""
    baseline = Passthrough(settings, {backlog.topic: PARTITIONS})
    span = params.warmup_s + params.seconds
    backlog.fill(max(len(backlog.records), params.min_backlog), say)
    say("calibration: a baseline run that is not counted (it warms the broker's caches too) ...")
    expected = {"raw": max(baseline.run(0.0, 2.0).rate, 1000.0)}
    say(f"  about {expected['raw']:,.0f} records/s")
    rounds = _Rounds()
    routed = 0
    for r in range(params.rounds):
        say(f"round {r + 1} of {params.rounds} (load average {os.getloadavg()[0]:.1f}) ...")
        backlog.fill(int(expected["raw"] * span * 2), say)
        window = baseline.run(params.warmup_s, params.seconds)
        expected["raw"] = window.rate
        rounds.raw.append(window)
        say(f"  raw passthrough: {window.rate:,.0f} records/s")
        for name, subs in SCENARIOS.items():
            ahead = expected.get(name, expected["raw"]) * (span + 5) * 2
            backlog.fill(routed + int(ahead), say)
            window, committed = _routed(topology, settings, {s for s, _ in subs}, params,
                                        timeout_s=span + 120)
            routed += committed
            window.exhausted = window.exhausted or routed >= backlog.written
            expected[name] = window.rate
            rounds.bus[name].append(window)
            out = f", {window.out_rate:,.0f} output records/s" if name == "fanout10" else ""
            say(f"  {name}: {window.rate:,.0f} records/s{out} (start-up {window.startup_s:.2f} s): "
                f"ratio {rounds.ratio(name, r):.2f}")
        rounds.loads.append(os.getloadavg()[0])
    return rounds


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
    #: records published during the warm-up (not measured)
    warmup_records: int = 0

    def too_short_reasons(self, seconds: float) -> list[str]:
        """Why a p99 of this run would not mean anything (none: it does)."""
        reasons = []
        if len(self.delays_ms) < LATENCY_MIN_SAMPLES:
            reasons.append(f"{len(self.delays_ms)} latency samples (< {LATENCY_MIN_SAMPLES}: a p99 needs ten "
                           "records beyond it at least)")
        if seconds < LATENCY_MIN_SECONDS:
            reasons.append(f"measured {seconds:g} s (< {LATENCY_MIN_SECONDS:g} s)")
        return reasons

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


#: A p99 over fewer records, or a shorter time, says little.
LATENCY_MIN_SAMPLES = 1000
LATENCY_MIN_SECONDS = 10.0


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
    router = Router(topology, settings, environ={"BUS_HASH_MASTER_KEY": "bench"})  # as `bus route` runs it
    router.prepare()
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        if not router.assigned.wait(60):
            raise RuntimeError("the router was not assigned its partitions within 60 s")
        return _measure_latency(topology, settings, topology.subscriptions[0].topic, rate, seconds, seed, warmup_s)
    finally:
        stop.set()
        thread.join(60)


def _measure_latency(topology: Topology, settings: KafkaSettings, arrive_at: str, rate: int, seconds: float,
                     seed: int, warmup_s: float) -> LatencyRun:
    """Publish at ``rate`` (after the cold start and ``warmup_s``, see :func:`_latency`) and time
    each record's arrival in ``arrive_at``."""
    arrivals = _Arrivals(settings, arrive_at)
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
        arrivals.close()
    return LatencyRun(
        delays_ms=_delays(sent.at, arrivals.times),
        first_publish_ms=first_publish * 1000,
        first_arrival_ms=first_arrival * 1000,
        load_1m=os.getloadavg()[0],
        ack_delays_ms=_delays(sent.at, sent.acked),
        warmup_records=len(warm.at) + 1,
    )


def _relay_latency(topology: Topology, settings: KafkaSettings, rate: int, seconds: float, seed: int,
                   warmup_s: float) -> LatencyRun:
    """The latency baseline: the same publishing and timing, through a plain consume -> produce
    loop (``take_batch``, one produce per record, ``poll(0)`` per batch; no decoding, no
    transactions, librdkafka's default linger of 5 ms) instead of the router."""
    source = topology.event_type("camera_alarm").topic
    sink = f"{source}.relay-{uuid.uuid4().hex[:6]}"
    ensure_topics(settings, [TopicSpec(source, PARTITIONS), TopicSpec(sink, PARTITIONS)])
    consumer = Consumer(consumer_config(settings, group_id=f"bench-relay-{uuid.uuid4().hex[:6]}",
                                        client_id="bench-relay", from_beginning=False))
    producer = Producer(producer_config(settings, client_id="bench-relay"))
    ends = [consumer.get_watermark_offsets(TopicPartition(source, p), 10)[1] for p in range(PARTITIONS)]
    consumer.assign([TopicPartition(source, p, end) for p, end in enumerate(ends)])
    stop = threading.Event()

    def relay() -> None:
        while not stop.is_set():
            for msg in take_batch(consumer, 1000, 0.2):
                if msg.error() is None:
                    producer.produce(sink, msg.value(), msg.key(), msg.partition(), headers=msg.headers())
            producer.poll(0)

    thread = threading.Thread(target=relay, name="bench-relay", daemon=True)
    thread.start()
    try:
        return _measure_latency(topology, settings, sink, rate, seconds, seed, warmup_s)
    finally:
        stop.set()
        thread.join(10)
        producer.flush(10)
        consumer.close()


def _delays(start: dict[str, float], end: dict[str, float]) -> list[float]:
    """Milliseconds from ``start`` to ``end`` of every key in both, sorted."""
    return sorted((end[k] - t) * 1000 for k, t in start.items() if k in end)


def run_route_benchmark(params: RouteParams = RouteParams(), *, engine: Engine = "kafka",
                        settings: KafkaSettings | None = None, say: Say = print) -> dict[str, Any]:
    """The figures (see the module docstring). ``settings``: an existing broker and registry
    (tests); default: :func:`bus.bench.brokers.bench_broker` for ``engine``."""
    load_start = load_average()
    with given_or_started(settings, engine, say) as broker, tempfile.TemporaryDirectory() as folder:
        settings = broker.settings.with_exact_watermarks(params.exact_watermarks)
        subs = [_subscription(name, kind) for pairs in SCENARIOS.values() for name, kind in pairs]
        topology = bench_topology(Path(folder), f"bench_route_{uuid.uuid4().hex[:6]}", subs)
        latency_topology, relay_topology = (
            bench_topology(Path(folder), f"bench_{kind}_{uuid.uuid4().hex[:6]}", [_subscription("latency", "filtered")])
            for kind in ("latency", "relay"))
        try:
            say(f"encoding {params.distinct:,} distinct camera alarms ...")
            backlog = _Backlog(settings, topology.event_type("camera_alarm").topic,
                               _encoded(topology, settings, params.distinct, params.seed))
            rounds = _throughput(topology, settings, backlog, params, say)
            say(f"latency at {params.rate} records/s: {params.latency_warmup_s:g} s of warm-up, "
                f"{params.latency_seconds:g} s measured ...")
            relay = _relay_latency(relay_topology, settings, params.rate, params.latency_seconds, params.seed,
                                   warmup_s=params.latency_warmup_s)
            say(f"  raw relay: p50 {relay.summary()['p50_ms']:.1f} ms, p99 {relay.summary()['p99_ms']:.1f} ms")
            latency = _latency(latency_topology, settings, params.rate, params.latency_seconds, params.seed,
                               warmup_s=params.latency_warmup_s)
            say(f"  router: p50 {latency.summary()['p50_ms']:.1f} ms, p99 {latency.summary()['p99_ms']:.1f} ms")
        finally:
            if broker.engine == "existing":
                for namespace in (topology.namespace, latency_topology.namespace, relay_topology.namespace):
                    drop_namespace(settings, namespace)
        return _figures(params, broker, settings, backlog, rounds, latency, relay, load_start, say)


def _figures(params: RouteParams, broker: BenchBroker, settings: KafkaSettings, backlog: _Backlog,
             rounds: _Rounds, latency: LatencyRun, relay: LatencyRun, load_start: list[float],
             say: Say) -> dict[str, Any]:
    results: dict[str, Any] = {"benchmark": "route", **broker.report()}
    results["raw_eps"] = round(median(w.rate for w in rounds.raw), 1)
    for name in SCENARIOS:
        windows = rounds.bus[name]
        results[f"{name}_eps"] = round(median(w.rate for w in windows), 1)
        if name == "fanout10":
            results["fanout10_out_eps"] = round(median(w.out_rate for w in windows), 1)
        results[f"{name}_ratio"] = round(median(rounds.ratio(name, i) for i in range(len(windows))), 3)
        results[f"{name}_ratios"] = [round(rounds.ratio(name, i), 3) for i in range(len(windows))]
    results.update({k: round(v, 3) if isinstance(v, float) else v for k, v in latency.summary().items()})
    latency_short = latency.too_short_reasons(params.latency_seconds)
    results["latency"] = {"rate": params.rate, "warmup_s": params.latency_warmup_s, "seconds": params.latency_seconds,
                          "warmup_records": latency.warmup_records, "too_short": bool(latency_short),
                          "raw_relay": {k: round(v, 3) if isinstance(v, float) else v
                                        for k, v in relay.summary().items()},
                          "raw_relay_loop": "take_batch(1000, 0.2) -> produce() per record -> poll(0) per batch; "
                                            "no decoding, no transactions, linger.ms 5 (librdkafka's default)"}
    short = [warn_short("raw passthrough", rounds.raw, say)]
    short += [warn_short(name, rounds.bus[name], say) for name in SCENARIOS]
    for reason in latency_short:
        say(f"WARNING: the latency run is too short to mean anything: {reason}")
    targets = {name: {"target": f">= {target:g}", "value": results[name], "met": results[name] >= target}
               for name, target in TARGETS.items()}
    p99 = results["p99_ms"]
    targets["p99_ms"] = {"target": f"< {P99_TARGET_MS:g} at {params.rate} records/s", "value": p99,
                         "met": bool(p99 == p99 and p99 < P99_TARGET_MS)}
    results.update(
        targets=targets,
        too_short=any(short) or bool(latency_short),
        rounds=params.rounds, seconds=params.seconds, warmup_s=params.warmup_s,
        router_batch_size=params.batch_size,
        backlog_records=backlog.written, distinct_records=len(backlog.records),
        runs={"raw": [w.report() for w in rounds.raw], **{n: [w.report() for w in ws] for n, ws in rounds.bus.items()}},
        baseline=BASELINE_TUNING,
        single_record_batches=settings.single_record_batches,
        load_average_start=load_start, load_average_rounds=[round(x, 2) for x in rounds.loads],
        load_average_end=load_average(),
    )
    say("  ".join(f"{name} {v['value']} ({'met' if v['met'] else 'MISSED'})" for name, v in targets.items()))
    return results

