"""Steady-state measurement, shared by the benchmarks: what a measured run is, when it is too
short to mean anything, and the baseline every ratio divides by.

A run has three parts:

- **start-up**: from starting the component (a router, a worker, a loop) until it holds its
  partitions (client start, producer id, group join, committed offsets), or, where that is
  not known, to its first committed output. Reported, never measured;
- **warm-up**: the first ``warmup_s`` seconds of work after that (the first fetch and batch
  among them). Reported (its duration and records), excluded;
- **measured**: what follows, between two commit instants (a committed batch, a flushed
  producer), ``seconds`` long or to the end of the records.

A run is *too short* (``too_short`` in the JSON, a ``WARNING`` line) when its start-up is 5%
of the measured time or more (the figure would then be a start-up figure the moment anything
of it leaked into the window), when the measured part lasted under ``MIN_MEASURED_S`` or
holds fewer than ``MIN_MEASURED_RECORDS`` records, or when it ran out of records before its
time was up.

The baseline (:class:`Passthrough`) is the fastest plain confluent-kafka loop found for the
job of a router: consume -> produce, raw bytes, no decoding, no transactions
(``BASELINE_TUNING`` says how it is tuned and what was tried; docs/performance.md too).
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.config import KafkaSettings, consumer_config, producer_config

Say = Callable[[str], None]

#: Start-up may be at most this share of the measured time.
STARTUP_SHARE_MAX = 0.05
MIN_MEASURED_S = 3.0
MIN_MEASURED_RECORDS = 2_000

#: Records the baseline takes per ``consume()`` call.
BASELINE_CONSUME_BATCH = 5_000

#: How the baseline is tuned (reported in every benchmark's JSON).
BASELINE_TUNING: dict[str, Any] = {
    "loop": "consume(num_messages=5000, timeout=0.5) -> produce() per record -> poll(0) once per batch; "
            "flush() at the end of the measured window (counted)",
    "record": "raw bytes: key, value and headers passed through; output partition = source partition "
              "(no partitioner call), as the router does",
    "producer": "the bus's producer configuration (idempotent, acks=all), no transactions; librdkafka's "
                "batching defaults (linger.ms=5, batch.num.messages=10000, batch.size=1000000)",
    "consumer": "the bus's consumer configuration (read_committed, 16 MB prefetch), assigned, no group "
                "commits",
    "tried": "take_batch(1000) as the old baseline; consume(2000|10000); linger.ms 20 and 50 with a "
             "1M-message queue; acks=1 without idempotence (a weaker guarantee than the router's; not "
             "used): no setting was faster beyond the noise of this machine except acks=1",
}


@dataclass
class Window:
    """One measured run (see the module docstring). Times in seconds."""

    startup_s: float
    warmup_s: float
    warmup_records: int
    measured_s: float
    measured_records: int  # input records
    measured_out: int = 0  # output records (fan-out counts each)
    exhausted: bool = False  # ran out of records before its time
    ready_s: float | None = None  # of the start-up: until the component held its partitions

    @property
    def rate(self) -> float:
        return self.measured_records / self.measured_s if self.measured_s > 0 else 0.0

    @property
    def out_rate(self) -> float:
        return self.measured_out / self.measured_s if self.measured_s > 0 else 0.0

    def short_reasons(self) -> list[str]:
        reasons = []
        if self.startup_s >= STARTUP_SHARE_MAX * self.measured_s:
            reasons.append(f"start-up {self.startup_s:.2f} s is {self.startup_share:.0%} of the measured "
                           f"{self.measured_s:.1f} s (at most {STARTUP_SHARE_MAX:.0%})")
        if self.measured_s < MIN_MEASURED_S:
            reasons.append(f"measured {self.measured_s:.1f} s (< {MIN_MEASURED_S:g} s)")
        if self.measured_records < MIN_MEASURED_RECORDS:
            reasons.append(f"measured {self.measured_records} records (< {MIN_MEASURED_RECORDS})")
        if self.exhausted:
            reasons.append("ran out of records before its time was up")
        return reasons

    @property
    def startup_share(self) -> float:
        return self.startup_s / self.measured_s if self.measured_s > 0 else float("inf")

    def report(self) -> dict[str, Any]:
        return {
            "startup_s": round(self.startup_s, 3), "warmup_s": round(self.warmup_s, 2),
            "warmup_records": self.warmup_records, "measured_s": round(self.measured_s, 2),
            "measured_records": self.measured_records, "measured_out": self.measured_out,
            "eps": round(self.rate, 1), "out_eps": round(self.out_rate, 1),
            "startup_pct_of_measured": round(100 * self.startup_share, 2),
            **({} if self.ready_s is None else {"ready_s": round(self.ready_s, 3)}),
            "too_short": bool(self.short_reasons()),
        }


class Marks:
    """Commit instants of a running component, (time, input records, output records) since it
    started, from any thread; turns them into a :class:`Window` once ``seconds`` were measured
    after ``warmup_s`` of work.

    Start-up ends when the component holds its partitions (``ready``, its owner says when) or,
    failing that, at its first commit; the warm-up counts from there (a first batch is work,
    not start-up)."""

    def __init__(self, warmup_s: float, seconds: float) -> None:
        self.warmup_s, self.seconds = warmup_s, seconds
        self.started = time.perf_counter()
        self.ready: float | None = None  # when the component held its partitions (its owner says)
        self._marks: list[tuple[float, int, int]] = []
        self._warm: tuple[float, int, int] | None = None
        self.done = threading.Event()

    def set_ready(self) -> None:
        """The component holds its partitions now (ignored once it committed: too late to say)."""
        if not self._marks:
            self.ready = time.perf_counter()

    def _origin(self) -> tuple[float, int, int]:
        """Where the warm-up starts: (time, records in, records out)."""
        return (self.ready, 0, 0) if self.ready is not None else self._marks[0]

    def mark(self, records_in: int, records_out: int) -> None:
        now = time.perf_counter()
        if not self._marks:
            self._marks.append((now, records_in, records_out))
        if self._warm is None:
            if now - self._origin()[0] >= self.warmup_s:
                self._warm = (now, records_in, records_out)
                self._marks.append(self._warm)
        elif not self.done.is_set():
            self._marks.append((now, records_in, records_out))
            if now - self._warm[0] >= self.seconds:
                self.done.set()

    def window(self, exhausted: bool = False) -> Window:
        """The measured window (to the last mark, if ``done`` was never reached)."""
        if not self._marks:
            return Window(float("nan"), 0.0, 0, 0.0, 0, 0, exhausted=True)
        origin = self._origin()
        warm = self._warm or self._marks[0]
        last = self._marks[-1]
        return Window(
            startup_s=origin[0] - self.started,
            warmup_s=warm[0] - origin[0],
            warmup_records=warm[1] - origin[1],
            measured_s=last[0] - warm[0],
            measured_records=last[1] - warm[1],
            measured_out=last[2] - warm[2],
            exhausted=exhausted or not self.done.is_set(),
            ready_s=None if self.ready is None else self.ready - self.started,
        )


# -- the baseline ---------------------------------------------------------------------------------


class Passthrough:
    """The baseline: a plain confluent-kafka consume -> produce loop over ``sources`` (every
    partition, from the start each run) into a topic of its own (``BASELINE_TUNING``)."""

    def __init__(self, settings: KafkaSettings, sources: dict[str, int]) -> None:
        self.settings = settings
        self.sources = sources  # topic -> partitions
        self.sink = f"bench-raw-{uuid.uuid4().hex[:8]}"
        ensure_topics(settings, [TopicSpec(self.sink, max(sources.values()))])

    def run(self, warmup_s: float, seconds: float, limit: int | None = None, wrap: bool = False) -> Window:
        """Pass records through for ``warmup_s`` (not counted), then ``seconds`` (counted, to the
        flush), or until ``limit`` records in all; each run reads from the start. ``wrap``: a
        partition read to its end is read again from its start (a run longer than the records)."""
        started = time.perf_counter()
        conf = consumer_config(self.settings, group_id=f"bench-raw-{uuid.uuid4().hex[:6]}", client_id="bench-raw")
        if wrap:  # the end of a partition comes as an event (no check per record): then back to its start
            conf["enable.partition.eof"] = True
        consumer = Consumer(conf)
        producer = Producer(producer_config(self.settings, client_id="bench-raw"))
        consumer.assign([TopicPartition(t, p, 0) for t, n in self.sources.items() for p in range(n)])
        sink, produce, poll, consume = self.sink, producer.produce, producer.poll, consumer.consume
        limit = limit if limit is not None else 1 << 62
        done = 0
        marks: list[tuple[float, int]] = []  # start of work, end of warm-up, end
        phase_end = None
        ran_out = False
        last_data = started
        try:
            while done < limit:
                batch = consume(BASELINE_CONSUME_BATCH, 0.5)
                if not batch:
                    idle = time.perf_counter() - last_data
                    if not marks and idle > 60:
                        raise RuntimeError(f"the baseline read nothing from {sorted(self.sources)} in 60 s")
                    if marks and idle > 2.0:
                        ran_out = True  # nothing more to read
                        break
                    continue
                if not marks:
                    marks.append((time.perf_counter(), 0))
                    phase_end = marks[0][0] + warmup_s
                for msg in batch:
                    if msg.error() is not None:
                        if wrap and msg.error().code() == KafkaError._PARTITION_EOF:
                            consumer.seek(TopicPartition(msg.topic(), msg.partition(), 0))
                        continue
                    while True:
                        try:
                            produce(sink, msg.value(), msg.key(), msg.partition(), headers=msg.headers())
                            break
                        except BufferError:  # the local queue is full: let deliveries drain
                            poll(0.05)
                    done += 1
                poll(0)
                last_data = time.perf_counter()
                if phase_end is not None and time.perf_counter() >= phase_end:
                    producer.flush(60)
                    marks.append((time.perf_counter(), done))
                    if len(marks) == 3:
                        break
                    phase_end = marks[-1][0] + seconds
            producer.flush(60)
            if len(marks) < 3:  # the limit, or out of records (then the end is the last record's)
                marks.append((last_data if ran_out else time.perf_counter(), done))
        finally:
            consumer.close()
        if len(marks) == 2:  # ran out during the warm-up: all of it counts as measured
            marks.insert(1, marks[0])
        (t0, _), (t1, n1), (t2, n2) = marks
        return Window(startup_s=t0 - started, warmup_s=t1 - t0, warmup_records=n1, measured_s=t2 - t1,
                      measured_records=n2 - n1, measured_out=n2 - n1, exhausted=ran_out and done < limit)


# -- summaries ------------------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def warn_short(name: str, windows: Sequence[Window], say: Say) -> bool:
    """Say a WARNING line for each too-short run of ``name``; True if any was."""
    short = False
    for i, window in enumerate(windows):
        reasons = window.short_reasons()
        if reasons:
            short = True
            say(f"WARNING: {name} run {i + 1} is too short to mean anything: {'; '.join(reasons)}")
    return short


@dataclass
class Scenario:
    """The runs of one measured thing, paired with the baseline runs next to them."""

    name: str
    windows: list[Window] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
