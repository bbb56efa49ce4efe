"""`bus bench process`: the stateful processors' throughput, as a ratio to a plain
confluent-kafka consume -> produce passthrough of the same records on the same broker.

The records are the soak's camera traffic (:class:`bus.bench.soak.Traffic`): statuses of a
6,400-camera fleet and its steady alarm mix, in the soak's proportions, preloaded into the
canonical topics of a copy of ``topology.yaml`` (its own namespace, no connectors). Then
`bus process` runs as `bus up` runs it (a child process) and reads them all; the rate is
taken from the moment the worker's group is stable (it holds its partitions) to the commit
of the last record, from the committed offsets. Prints one JSON line.
"""

from __future__ import annotations

import contextlib
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

from bus.bench.connectors import _drop_namespace
from bus.bench.route import _infrastructure, _raw_passthrough
from bus.bench.soak import MIX, Traffic, shipped_topology
from bus.kafka.config import KafkaSettings
from bus.ops.lag import OffsetReader
from bus.processors.app import app_id, ensure_processor_topics
from bus.publish import Publisher
from bus.topology.loader import load_topology
from bus.topology.models import Topology

Say = Callable[[str], None]
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
             timeout_s: float, say: Say) -> tuple[float, float]:
    """Run the processors until they committed every preloaded record: (records/s from the
    moment their group is stable, i.e. holds its partitions; seconds until then)."""
    topics = {topology.event_type(t).topic for t in CAMERA_TYPES}
    reader = OffsetReader(settings, timeout_s=10)
    group = app_id(topology)
    started = time.monotonic()
    deadline = started + timeout_s
    process = _processors(topology_path, settings, folder / "processors.log")
    try:
        stable_at: float | None = None
        last_said = started
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the processors exited ({process.returncode}); log: {folder / 'processors.log'}")
            now = time.monotonic()
            if stable_at is None and reader.stable(group):
                stable_at = now
            done = _committed(reader, group, topics)
            if done >= total:
                break
            if now > deadline:
                raise RuntimeError(f"the processors committed {done} of {total} records in {timeout_s:g} s; "
                                   f"log: {folder / 'processors.log'}")
            if now - last_said >= 10:
                say(f"  processors: {done} of {total} records committed")
                last_said = now
            time.sleep(0.05)
        end = time.monotonic()
        stable_at = stable_at or end
        return total / max(end - stable_at, 1e-3), stable_at - started
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_process_benchmark(records: int = 20_000, exact_watermarks: bool = False, timeout_s: float = 600.0,
                          say: Say = print, settings: KafkaSettings | None = None) -> dict[str, Any]:
    """The figures (see the module docstring). ``settings``: an existing broker and registry
    (tests); default: embedded ones started here."""
    own = None if settings is not None else _infrastructure(say)
    with (own or contextlib.nullcontext(settings)) as settings, \
            tempfile.TemporaryDirectory(prefix="citybus-bench-") as folder_name:
        folder = Path(folder_name)
        settings = settings.with_exact_watermarks(exact_watermarks)
        namespace = f"bench_proc_{uuid.uuid4().hex[:6]}"
        path = _topology(folder, namespace)
        topology = load_topology(path)
        ensure_processor_topics(topology, settings)
        counts = _preload(topology, settings, records, say)
        say("(a) raw passthrough ...")
        raw_s = 0.0
        for event_type, count in counts.items():
            et = topology.event_type(event_type)
            raw_s += count / _raw_passthrough(settings, et.topic, count, partitions=et.partitions)
        say("(b) the processors ...")
        eps, join_s = _measure(topology, path, settings, records, folder, timeout_s, say)
        if own is None:  # a broker we did not start: leave it as we found it (processors stopped)
            _drop_namespace(settings, namespace)
        raw_eps = records / raw_s
        return {
            "raw_eps": round(raw_eps, 1), "processors_eps": round(eps, 1), "processors_ratio": round(eps / raw_eps, 4),
            "join_s": round(join_s, 1), "records": records, **{f"{t}_records": c for t, c in counts.items()},
            "single_record_batches": settings.single_record_batches,
            "load_1m": round(os.getloadavg()[0], 2),
        }

