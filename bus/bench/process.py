"""`bus bench process`: the stateful processors' throughput, as a ratio to a plain
confluent-kafka consume -> produce passthrough of the same records on the same broker.

The records are the soak's camera traffic (:class:`bus.bench.soak.Traffic`): statuses of a
6,400-camera fleet and its steady alarm mix, in the soak's proportions, preloaded into the
canonical topics of a copy of ``topology.yaml`` (its own namespace, no connectors). Then
`bus process` runs as `bus up` runs it (a child process) and reads them all. Its start-up
(process start until its consumer group is stable: Python, faust, group join) is reported
and left out, and so is a warm-up (``warmup_s``, 10 s, table recovery and first commits
among it); the rate is taken from the committed offsets, between the first commit after the
warm-up and the commit of the last record (faust commits every few seconds: the window runs
from one commit to another).

The baseline (:class:`bus.bench.steady.Passthrough`) passes the same records through, again
and again for ``raw_seconds``, before and after the processors run; the ratio is to the
median of the two (both are reported: a drift between them is the machine's). Prints one
JSON line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from bus.bench.brokers import Engine, drop_namespace, given_or_started
from bus.bench.steady import BASELINE_TUNING, Passthrough, Window, load_average, median, warn_short
from bus.bench.soak import MIX, Traffic, shipped_topology
from bus.kafka.config import KafkaSettings
from bus.ops.offsets import OffsetReader
from bus.processors.app import app_id, ensure_processor_topics
from bus.publish import Publisher
from bus.topology.models import Topology
from bus.topology.validate import load_topology

Say = Callable[[str], None]
RAW_WARMUP_S = 1.0
CAMERA_TYPES = ("camera_status", "camera_alarm")


def _topology(folder: Path, namespace: str) -> Path:
    doc = shipped_topology()
    doc.update(namespace=namespace, schemas_dir=str(Path(__file__).resolve().parents[2] / "schemas"), connectors=[])
    path = folder / "topology.yaml"
    with path.open("w") as out:
        YAML().dump(doc, out)
    return path


def _preload(topology: Topology, settings: KafkaSettings, records: int, say: Say) -> dict[str, int]:
    """``records`` camera statuses and alarms in the soak's proportions. Returns each type's count."""
    share = {t: MIX[t] / sum(MIX[t] for t in CAMERA_TYPES) for t in CAMERA_TYPES}
    counts = {"camera_status": round(records * share["camera_status"])}
    counts["camera_alarm"] = records - counts["camera_status"]
    traffic = Traffic()
    with Publisher(topology, settings, client_id="bench-process-load") as publisher:
        for event_type, count in counts.items():
            say(f"loading {count} {event_type} records ...")
            owner = topology.event_type(event_type).owner
            summary = publisher.publish_each(event_type, owner, ((i, traffic.make(event_type)) for i in range(count)))
            if summary.rejected:
                raise RuntimeError(f"benchmark records rejected: {summary.rejected[:3]}")
    return counts


def _processors(topology_path: Path, settings: KafkaSettings, log: Path) -> subprocess.Popen:
    env = {**os.environ, **settings.to_environ(), "BUS_LOG_LEVEL": "WARNING"}
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "bus.processors", str(topology_path), "none"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _committed(reader: OffsetReader, group: str, topics: set[str]) -> int:
    return sum(offset for tp, offset in reader.committed(group).items() if tp[0] in topics)


def _measure(topology: Topology, topology_path: Path, settings: KafkaSettings, total: int, folder: Path,
             warmup_s: float, timeout_s: float, say: Say) -> tuple[Window, float]:
    """Run the processors until they committed every preloaded record: their window (start-up:
    to the first commit; warm-up; measured: between the first commit after the warm-up and the
    last, from the committed offsets), and the seconds until their group was stable."""
    topics = {topology.event_type(t).topic for t in CAMERA_TYPES}
    reader = OffsetReader(settings, timeout_s=10)
    group = app_id(topology)
    started = time.monotonic()
    deadline = started + timeout_s
    process = _processors(topology_path, settings, folder / "processors.log")
    try:
        stable_at: float | None = None
        changes: list[tuple[float, int]] = []  # (when the committed offsets were seen to move, their sum)
        last_said = started
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the processors exited ({process.returncode}); log: {folder / 'processors.log'}")
            now = time.monotonic()
            if stable_at is None and reader.stable(group):
                stable_at = now
            done = _committed(reader, group, topics)
            if done > (changes[-1][1] if changes else 0):
                changes.append((now, done))
            if done >= total:
                break
            if now > deadline:
                raise RuntimeError(f"the processors committed {done} of {total} records in {timeout_s:g} s; "
                                   f"log: {folder / 'processors.log'}")
            if now - last_said >= 10:
                say(f"  processors: {done:,} of {total:,} records committed")
                last_said = now
            time.sleep(0.05)
        # start-up ends when the group is stable (the worker holds its partitions), else at the first commit
        origin = min(stable_at, changes[0][0]) if stable_at is not None else changes[0][0]
        end = changes[-1]
        warm = next((c for c in changes[:-1] if c[0] - origin >= warmup_s), None)
        if warm is None:  # all committed within the warm-up (a run flagged too short): measured from the start-up's
            warm = (origin, 0) if end[0] > origin else (started, 0)  # end, or from the launch for a single commit
        window = Window(startup_s=origin - started, warmup_s=warm[0] - origin, warmup_records=warm[1],
                        measured_s=end[0] - warm[0], measured_records=end[1] - warm[1],
                        measured_out=end[1] - warm[1], ready_s=(stable_at or end[0]) - started)
        return window, (stable_at or end[0]) - started
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_process_benchmark(records: int = 200_000, exact_watermarks: bool = False, timeout_s: float = 1800.0,
                          say: Say = print, settings: KafkaSettings | None = None, *, engine: Engine = "kafka",
                          warmup_s: float = 10.0, raw_seconds: float = 10.0) -> dict[str, Any]:
    """The figures (see the module docstring). ``settings``: an existing broker and registry
    (tests); default: :func:`bus.bench.brokers.bench_broker` for ``engine``."""
    load_start = load_average()
    with given_or_started(settings, engine, say) as broker, \
            tempfile.TemporaryDirectory(prefix="citybus-bench-") as folder_name:
        folder = Path(folder_name)
        settings = broker.settings.with_exact_watermarks(exact_watermarks)
        namespace = f"bench_proc_{uuid.uuid4().hex[:6]}"
        path = _topology(folder, namespace)
        topology = load_topology(path)
        ensure_processor_topics(topology, settings)
        counts = _preload(topology, settings, records, say)
        sources = {topology.event_type(t).topic: topology.event_type(t).partitions for t in CAMERA_TYPES}
        baseline = Passthrough(settings, sources)
        # The baseline passes the same records through (again and again: they take it a second or
        # two) before and after the processors, for ``raw_seconds`` after a warm-up of its own.
        say(f"(a) raw passthrough, before ({raw_seconds:g} s) ...")
        raw = [baseline.run(RAW_WARMUP_S, raw_seconds, wrap=True)]
        say(f"  {raw[0].rate:,.0f} records/s")
        say("(b) the processors ...")
        window, join_s = _measure(topology, path, settings, records, folder, warmup_s, timeout_s, say)
        say(f"  {window.rate:,.0f} records/s (start-up {window.startup_s:.1f} s, group stable after {join_s:.1f} s)")
        say(f"(a) raw passthrough, after ({raw_seconds:g} s) ...")
        raw.append(baseline.run(RAW_WARMUP_S, raw_seconds, wrap=True))
        say(f"  {raw[1].rate:,.0f} records/s")
        if broker.engine == "existing":  # a broker we did not start: leave it as we found it (processors stopped)
            drop_namespace(settings, namespace)
        short = warn_short("raw passthrough", raw, say) | warn_short("processors", [window], say)
        raw_eps = median(w.rate for w in raw)
        return {
            "benchmark": "process", **broker.report(),
            "raw_eps": round(raw_eps, 1), "raw_eps_before_after": [round(w.rate, 1) for w in raw],
            "processors_eps": round(window.rate, 1), "processors_ratio": round(window.rate / raw_eps, 4),
            "join_s": round(join_s, 1), "records": records, **{f"{t}_records": c for t, c in counts.items()},
            "too_short": short,
            "runs": {"raw": [w.report() for w in raw], "processors": [window.report()]},
            "baseline": BASELINE_TUNING,
            "single_record_batches": settings.single_record_batches,
            "load_average_start": load_start, "load_average_end": load_average(),
            "load_1m": round(os.getloadavg()[0], 2),
        }
