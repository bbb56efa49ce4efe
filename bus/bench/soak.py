"""`bus bench soak`: the load-and-soak benchmark (issue 6, section 3).

Mixed traffic at ``rate`` events/s for ``seconds`` through the whole bus on one machine,
run as `bus up` runs it: the router (and its lanes), the processors (`bus process`, a child
process) and the connectors of a temporary copy of ``topology.yaml``, on a broker started here
(``SoakParams.engine``: a local Apache Kafka node in the soak's temporary folder by default, or
the embedded broker) and an embedded registry, or on the ones ``settings`` or
``BUS_BOOTSTRAP_SERVERS`` name. The copy changes only what a
throwaway run needs: its own namespace; every source becomes an ``http_ingest`` of its
department (the load comes over HTTP); webhook sinks point at local endpoints; PostgreSQL
sinks write to databases created for the run and dropped after it.

- Load: child processes POST JSON-lines batches of the four event types in the demo city's
  proportions (camera statuses of a 6,400-camera fleet, its steady alarm mix, cases,
  population changes) to the ingest connectors, retrying 429/503 as a real sender does.
- Endpoints: the departments' webhook receivers (:class:`DepartmentEndpoints`: HMAC checked,
  each ``Idempotency-Key`` counted once) in a process of their own, also recording each
  record's id and its delay since it was published (``ce-time``).
- Every ``sample_s``: time lag of every consumer group (router, lanes, processors, sinks;
  :class:`bus.ops.lag.LagMonitor`; by default the age of each partition's first unconsumed
  record, from its timestamp, see ``SoakParams.time_lag``) and the resident
  memory of the bus processes (this process: router, connectors, registry; and the
  processors' child). The broker is reported apart: its memory-only storage holds every
  record by design. A progress line every ``progress_s``.
- Loss, after a drain: for each sink, the records it is entitled to that it did not get,
  counted at the sink by the record's id. Entitled = the accepted (202) records passing the
  subscription's filter; for a type routed from the processors' output (camera alarms) the
  processors' alarms passing it, and separately every accepted alarm must be in that output
  (itself, or absorbed into the storm window of an alarm of the same camera and type).

Targets: time lag < ``lag_target_s``, RSS growth after ``warmup_s`` < ``rss_target_pct``,
zero loss, and the rate achieved (>= 95% of ``rate``). Returns the figures (one JSON line
from the CLI, exit 1 when a target fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import random
import secrets
import tempfile
import threading
import time
import uuid
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import httpx
import psutil
import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from psycopg import sql
from ruamel.yaml import YAML

from bus.bench.brokers import drop_namespace
from bus.consume.decoder import Decoder
from bus.demo.samples import city_case, population_change
from bus.demo.simulators.base import Pacer, now_iso
from bus.demo.simulators.cameras import CameraPlatform
from bus.demo.simulators.databases import DEFAULT_ADMIN_DSN, DemoDatabases
from bus.demo.simulators.endpoints import DepartmentEndpoints
from bus.demo.simulators.fleet import FAULT_REASONS, CameraFleet
from bus.kafka.config import KafkaSettings, consumer_config
from bus.kafka.local import LocalKafka
from bus.ops.lag import Directory, GroupSelection, LagMonitor, LagOptions, TimeLagMethod, bus_groups
from bus.ops.offsets import OffsetReader
from bus.processors.app import app_id
from bus.processors.storms import StormConfig, event_time_ms
from bus.registry.client import registry_client
from bus.routing.plan import build_route
from bus.runtime.up import RunningCity, run_city
from bus.schemas.records import to_datum
from bus.topology.models import Topology
from bus.topology.names import router_group

ROOT = Path(__file__).resolve().parents[2]
Say = Callable[[str], None]

#: Share of each event type in the traffic: the demo city's camera platform sends statuses
#: and alarms in about equal numbers; cases and population changes are the rest.
MIX = {"camera_status": 0.45, "camera_alarm": 0.40, "city_case": 0.10, "population_change": 0.05}
#: The field that identifies a record at a sink (an upsert table keeps one row per key, so
#: person ids are made unique per record).
ID_FIELDS = {"camera_alarm": "alarm_id", "city_case": "case_id", "population_change": "change_id"}
BATCH_MAX = 500


@dataclass(frozen=True)
class SoakParams:
    rate: int = 2000
    seconds: float = 300.0
    #: RSS growth is measured from the first sample after this many seconds of load.
    warmup_s: float = 60.0
    clients: int = 2
    tick_s: float = 0.25
    sample_s: float = 2.5
    progress_s: float = 10.0
    drain_timeout_s: float = 120.0
    lag_target_s: float = 2.0
    rss_target_pct: float = 10.0
    rate_target_share: float = 0.95
    cameras: int = 6400
    seed: int = 2026
    postgres_dsn: str = DEFAULT_ADMIN_DSN
    #: None: as `bus up` runs (the embedded profile: the state single-record, the data path batched);
    #: False: everything batched.
    exact_watermarks: bool | None = None
    #: The broker the soak starts when none is named (BUS_BOOTSTRAP_SERVERS): a local Apache
    #: Kafka node in the soak's temporary folder, or the embedded one.
    engine: Literal["kafka", "embedded"] = "kafka"
    #: How a sample's time lag is taken (``LagOptions.time_lag``): "record", the first
    #: unconsumed record's own timestamp (exact; one small read per lagging partition), or
    #: "table", interpolated in the offset-time table (no reads; its resolution is the
    #: sample interval, above the 2 s target at a 2.5 s interval).
    time_lag: TimeLagMethod = "record"


def run_soak_benchmark(
    rate: int = 2000,
    seconds: float = 300.0,
    warmup_s: float = 60.0,
    *,
    params: SoakParams | None = None,
    settings: KafkaSettings | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """Run the soak (see the module docstring) and return its figures. ``settings``: an
    existing broker and registry (tests); default: embedded ones started here."""
    params = params or SoakParams(rate=rate, seconds=seconds, warmup_s=warmup_s)
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="citybus-soak-")))
        namespace = f"soak_{uuid.uuid4().hex[:6]}"
        databases = DemoDatabases(params.postgres_dsn, prefix=f"citybus_{namespace}")
        stack.callback(databases.drop_all)
        endpoints = stack.enter_context(_Endpoints.serving(_webhook_sinks(), say))
        plan = _write_topology(folder, namespace, endpoints.urls, databases)
        if settings is not None:  # after the city stopped: deleting topics under live clients crashes librdkafka
            stack.callback(drop_namespace, settings, namespace)
        city = stack.enter_context(_city(plan.path, settings, params, say))
        return _Soak(params, city, plan, endpoints, say).run()


# -- the city of the soak ------------------------------------------------------------------------


@dataclass
class _Plan:
    """The topology copy and what the load and the accounting need of it."""

    path: Path
    tokens: dict[str, str]  # ingest connector -> bearer token
    ingest_of: dict[str, str]  # event type -> its ingest connector
    tables: dict[str, tuple[str, str]]  # postgres sink -> (DSN, table)
    topology: Topology | None = None


def shipped_topology() -> dict[str, Any]:
    """The shipped ``topology.yaml`` as a document, to copy and change."""
    with (ROOT / "topology.yaml").open() as handle:
        return YAML(typ="safe").load(handle)


def _webhook_sinks() -> dict[str, str]:
    """Webhook sink name -> department, of the shipped topology."""
    return {c["name"]: c["department"] for c in shipped_topology().get("connectors", []) if c["type"] == "http_webhook_sink"}


def _secret(folder: Path, name: str, value: str) -> str:
    path = folder / f"secret-{name}"
    path.write_text(value)
    path.chmod(0o600)
    return f"file:{path}"


def _write_topology(folder: Path, namespace: str, urls: dict[str, tuple[str, str]], databases: DemoDatabases) -> _Plan:
    """The shipped topology with the soak's namespace and connectors (see the module docstring)."""
    doc = shipped_topology()
    doc["namespace"] = namespace
    doc["schemas_dir"] = str(ROOT / "schemas")
    plan = _Plan(folder / "topology.yaml", {}, {}, {})
    connectors: list[dict[str, Any]] = []
    ingest_of_department: dict[str, dict[str, Any]] = {}
    for connector in doc.get("connectors", []):
        if connector["type"] in ("http_ingest", "mqtt_source", "rest_poller", "postgres_source", "file_drop"):
            _as_ingest(folder, connector, ingest_of_department, connectors, plan)
        elif connector["type"] == "http_webhook_sink":
            url, key = urls[connector["name"]]
            connector["config"].update(url=url, hmac_key=_secret(folder, connector["name"], key))
            connectors.append(connector)
        elif connector["type"] == "postgres_sink":
            dsn = databases.create(connector["name"].replace("-", "_"))
            connector["config"]["dsn"] = _secret(folder, connector["name"], dsn)
            plan.tables[connector["name"]] = (dsn, connector["config"]["table"])
            connectors.append(connector)
        else:
            connectors.append(connector)
    doc["connectors"] = connectors
    with plan.path.open("w") as out:
        YAML().dump(doc, out)
    return plan


def _as_ingest(folder: Path, connector: dict[str, Any], by_department: dict[str, dict[str, Any]],
               connectors: list[dict[str, Any]], plan: _Plan) -> None:
    """One ``http_ingest`` per publishing department, publishing what its sources publish."""
    department = connector["department"]
    ingest = by_department.get(department)
    if ingest is None:
        token = secrets.token_urlsafe(24)
        ingest = {"name": connector["name"], "type": "http_ingest", "department": department, "publishes": [],
                  "description": f"soak load for {department}",
                  "config": {"host": "127.0.0.1", "port": 0, "path": "/ingest",
                             "auth": {"token": _secret(folder, connector["name"], token)}}}
        by_department[department] = ingest
        plan.tokens[connector["name"]] = token
        connectors.append(ingest)
    for event_type in connector.get("publishes", []):
        if event_type not in ingest["publishes"]:
            ingest["publishes"].append(event_type)
            plan.ingest_of[event_type] = ingest["name"]


@contextlib.contextmanager
def _city(path: Path, settings: KafkaSettings | None, params: SoakParams, say: Say) -> Iterator[RunningCity]:
    """`bus up` without the page: router, processors, connectors."""
    own = settings is None
    settings = settings or KafkaSettings()
    if params.exact_watermarks is not None:
        settings = settings.model_copy(update={"exact_watermarks": params.exact_watermarks})
    with run_city(path, settings=settings, start_broker=own and not os.environ.get("BUS_BOOTSTRAP_SERVERS"),
                  engine=params.engine, data_dir=path.parent / "kafka",
                  start_registry=own and not os.environ.get("BUS_REGISTRY_URL"),
                  with_connectors=True, with_processors=True, say=say) as city:
        if city.connectors is not None and city.connectors.failed:
            raise RuntimeError(f"connectors did not start: {city.connectors.failed}")
        yield city


# -- the departments' webhook endpoints, in a process of their own ------------------------------


class _RecordingEndpoints(DepartmentEndpoints):
    """The demo's endpoints, also noting each new record's id and its delay since published."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: dict[str, set[str]] = defaultdict(set)
        self.delays: list[float] = []
        self._noting = threading.Lock()

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        status, answer = super().receive(path, headers, body)
        if status == 200 and answer.get("status") == "accepted":
            self._note(path.rsplit("/", 1)[-1], headers, body)
        return status, answer

    def _note(self, name: str, headers: dict[str, str], body: bytes) -> None:
        record = json.loads(body)
        ident = next((record[f] for f in ID_FIELDS.values() if f in record), "")
        published = headers.get("ce-time")
        delay = None
        if published:
            with contextlib.suppress(ValueError):
                delay = time.time() - dt.datetime.fromisoformat(unquote(published)).timestamp()
        with self._noting:
            self.ids[name].add(str(ident))
            if delay is not None:
                self.delays.append(delay)


class _Endpoints:
    """Parent side of the endpoints' process: ``urls`` (sink -> (URL, HMAC key)), counts, ids."""

    def __init__(self, conn: Any, process: Any, urls: dict[str, tuple[str, str]]) -> None:
        self._conn, self._process, self.urls = conn, process, urls
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @classmethod
    @contextlib.contextmanager
    def serving(cls, sinks: dict[str, str], say: Say) -> Iterator["_Endpoints"]:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        keys = {name: secrets.token_hex(32) for name in sinks}
        process = context.Process(target=_serve_endpoints, args=(child, sinks, keys), name="soak-endpoints",
                                  daemon=True)
        process.start()
        try:
            if not parent.poll(60):
                raise RuntimeError("the soak's webhook endpoints did not start within 60 s")
            urls = {name: (url, keys[name]) for name, url in parent.recv().items()}
            say(f"endpoints: {len(urls)} department webhook receivers (pid {process.pid})")
            yield cls(parent, process, urls)
        finally:
            with contextlib.suppress(OSError, EOFError):
                parent.send(("stop", None))
            process.join(10)
            if process.is_alive():
                process.kill()

    def ask(self, what: str) -> Any:
        with self._lock:
            self._conn.send((what, None))
            return self._conn.recv()


def _serve_endpoints(conn: Any, sinks: dict[str, str], keys: dict[str, str]) -> None:
    endpoints = _RecordingEndpoints()
    endpoints.start()
    conn.send({name: endpoints.add(name, department, keys[name]) for name, department in sinks.items()})
    while True:
        what, _ = conn.recv()
        if what == "stats":
            conn.send(endpoints.stats())
        elif what == "ids":
            with endpoints._noting:
                conn.send(({k: set(v) for k, v in endpoints.ids.items()}, list(endpoints.delays)))
        else:
            break
    endpoints.stop()


# -- the load, in processes of their own ---------------------------------------------------------


@dataclass(frozen=True)
class _LoadSpec:
    index: int
    urls: dict[str, str]  # event type -> ingest URL (without the type)
    tokens: dict[str, str]  # event type -> bearer token
    rates: dict[str, float]  # event type -> records/s of this client
    seconds: float
    tick_s: float
    seed: int
    cameras: int


@dataclass
class _LoadResult:
    accepted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    retried: int = 0
    last_error: str | None = None
    alarms: list[tuple[str, str, str, int]] = field(default_factory=list)  # id, camera, type, event ms
    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))  # cases, changes


class Traffic:
    """Records of each type as the departments' systems send them (``index``: which of
    several senders; each makes its own records of the same fleet)."""

    def __init__(self, index: int = 0, seed: int = 2026, cameras: int = 6400) -> None:
        self.rng = random.Random(seed + index)
        self.fleet = CameraFleet(cameras, seed=seed)
        self.platform = CameraPlatform("http://unused", "", self.fleet, seed=seed + 3 + index)
        self._next_camera = index
        self._people = 0
        self._index = index

    def make(self, event_type: str) -> dict[str, Any]:
        if event_type == "camera_alarm":
            return self.platform.steady_alarm()
        if event_type == "camera_status":
            return self._status()
        if event_type == "city_case":
            return city_case(self.rng)
        record = population_change(self.rng)
        self._people += 1
        record["person_id"] = f"P{self._index + 1}{self._people:09d}"  # one row per change in an upsert table
        return record

    def _status(self) -> dict[str, Any]:
        """Heartbeats of the fleet in turn; now and then a camera fails or is repaired."""
        camera = self.fleet.cameras[self._next_camera % len(self.fleet)]
        self._next_camera += 1
        reason = None
        if self.rng.random() < 0.02:
            state = "ONLINE" if camera.state != "ONLINE" else self.rng.choice(["OFFLINE", "DEGRADED"])
            self.fleet.set_state(camera, state)
            reason = None if state == "ONLINE" else self.rng.choice(FAULT_REASONS)
        return camera.status(now_iso(), reason=reason)


def _load_process(spec: _LoadSpec, accepted: Any, ready: Any, go: Any, conn: Any) -> None:
    traffic = Traffic(spec.index, spec.seed, spec.cameras)
    ready.release()
    go.wait()
    result = asyncio.run(_push(spec, traffic, accepted))
    conn.send(result)


async def _push(spec: _LoadSpec, traffic: Traffic, accepted: Any) -> _LoadResult:
    result = _LoadResult()
    end = time.monotonic() + spec.seconds
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=len(spec.rates) + 2)) as client:
        await asyncio.gather(*(_stream(client, spec, traffic, result, accepted, t, end) for t in spec.rates))
    return result


async def _stream(client: httpx.AsyncClient, spec: _LoadSpec, traffic: Traffic, result: _LoadResult,
                  accepted: Any, event_type: str, end: float) -> None:
    """One event type at its rate, batches in order (a sender waits for each answer)."""
    pacer = Pacer(spec.rates[event_type])
    url = f"{spec.urls[event_type]}/{event_type}/batch"
    headers = {"Authorization": f"Bearer {spec.tokens[event_type]}", "Content-Type": "application/x-ndjson"}
    next_at = time.monotonic()
    while time.monotonic() < end:
        next_at += spec.tick_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        due = pacer.due()
        for start in range(0, due, BATCH_MAX):
            records = [traffic.make(event_type) for _ in range(min(BATCH_MAX, due - start))]
            if await _post(client, url, headers, records, result, end + 30):
                _keep(result, event_type, records)
                with accepted.get_lock():
                    accepted.value += len(records)


async def _post(client: httpx.AsyncClient, url: str, headers: dict[str, str], records: list[dict[str, Any]],
                result: _LoadResult, give_up_at: float) -> bool:
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in records).encode("utf-8")
    event_type = url.rsplit("/", 2)[-2]
    while time.monotonic() < give_up_at:
        try:
            answer = await client.post(url, content=body, headers=headers)
        except httpx.TransportError as exc:
            result.retried += 1
            result.last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.5)
            continue
        if answer.status_code == 202:
            return True
        if answer.status_code in (429, 503):
            result.retried += 1
            await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            continue
        result.last_error = f"{answer.status_code}: {answer.text[:300]}"
        break
    result.refused[event_type] += len(records)
    return False


def _keep(result: _LoadResult, event_type: str, records: list[dict[str, Any]]) -> None:
    result.accepted[event_type] += len(records)
    if event_type == "camera_alarm":
        result.alarms += [(r["alarm_id"], r["camera_id"], r["alarm_type"], event_time_ms(r["occurred_at"]))
                          for r in records]
    elif event_type in ("city_case", "population_change"):
        result.records[event_type] += records


class _Load:
    """The load processes: live accepted counts, and their results at the end."""

    def __init__(self, specs: list[_LoadSpec]) -> None:
        context = multiprocessing.get_context("spawn")
        self.counters = [context.Value("q", 0) for _ in specs]
        self._ready = context.Semaphore(0)
        self._go = context.Event()
        self._pipes = [context.Pipe(duplex=False) for _ in specs]
        self._processes = [context.Process(target=_load_process, args=(spec, counter, self._ready, self._go, send),
                                           daemon=True, name=f"soak-load-{spec.index}")
                           for spec, counter, (_, send) in zip(specs, self.counters, self._pipes)]

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the processes and, once every one is ready to send, let them all go at once."""
        for process in self._processes:
            process.start()
        for process in self._processes:
            if not self._ready.acquire(timeout=timeout_s):
                raise RuntimeError(f"the load processes were not ready within {timeout_s:g} s")
        self._go.set()

    @property
    def accepted(self) -> int:
        return sum(c.value for c in self.counters)

    def results(self, timeout_s: float) -> list[_LoadResult]:
        out = []
        for (receive, _), process in zip(self._pipes, self._processes):
            if not receive.poll(timeout_s):
                raise RuntimeError(f"load process {process.name} sent no result within {timeout_s:g} s")
            out.append(receive.recv())
            process.join(10)
        return out

    def kill(self) -> None:
        for process in self._processes:
            if process.is_alive():
                process.kill()

    @property
    def pids(self) -> list[int | None]:
        return [process.pid for process in self._processes]


# -- measuring ------------------------------------------------------------------------------------


def _parts(rss: dict[str, float | None]) -> dict[str, float | None]:
    return {k: _round(v) for k, v in rss.items()}


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process in MB, None when it is gone."""
    if pid is None:
        return None
    try:
        return psutil.Process(pid).memory_info().rss / (1024 * 1024)
    except psutil.Error:
        return None


def cpu_seconds(pid: int | None) -> float | None:
    """CPU time (user + system) a process has used so far, in seconds; None when it is gone."""
    if pid is None:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in seconds."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    total = sum(times)
    return total - idle, total


@dataclass(frozen=True)
class CpuMark:
    """CPU used so far by each process of the soak (seconds) and by the machine, at one moment."""

    at: float
    parts: dict[str, tuple[list[int | None], list[float | None]]]
    machine: tuple[float, float]

    @classmethod
    def take(cls, pids: dict[str, list[int | None]]) -> "CpuMark":
        return cls(time.monotonic(), {part: (ps, [cpu_seconds(p) for p in ps]) for part, ps in pids.items()},
                   machine_cpu())

    def share_since(self, start: "CpuMark") -> dict[str, Any]:
        """Percent of one core each part used between ``start`` and this mark (None where one of
        its processes was gone or replaced), and how busy the machine's cores were."""
        seconds = max(self.at - start.at, 1e-9)
        parts: dict[str, float | None] = {}
        for part, (pids, used) in self.parts.items():
            before_pids, before = start.parts[part]
            if pids != before_pids or None in used or None in before:
                parts[part] = None
            else:
                parts[part] = round(100 * sum(u - b for u, b in zip(used, before)) / seconds, 1)  # type: ignore[operator]
        busy, total = (now - then for now, then in zip(self.machine, start.machine))
        return {"pct_of_a_core": parts, "machine_busy_pct": round(100 * busy / total, 1) if total else None,
                "cores": os.cpu_count()}


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(share * len(ordered))) - 1))]


@dataclass
class _Samples:
    times: list[float] = field(default_factory=list)  # seconds since the load started
    rss_bus: list[float] = field(default_factory=list)
    rss_parts: list[dict[str, float | None]] = field(default_factory=list)
    lag: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    totallag: dict[str, int] = field(default_factory=dict)
    poll_s: list[float] = field(default_factory=list)  # how long each lag poll took


class _Soak:
    def __init__(self, params: SoakParams, city: RunningCity, plan: _Plan, endpoints: _Endpoints, say: Say) -> None:
        self.params, self.city, self.plan, self.endpoints, self.say = params, city, plan, endpoints, say
        self.topology = city.topology
        self.groups = [*bus_groups(self.topology), app_id(self.topology)]
        self.lanes = {router_group(self.topology.namespace, s.lane) for s in self.topology.subscriptions if s.lane}
        self.read_at_drain: dict[tuple[str, int], int] = {}
        selection = GroupSelection(tuple(self.groups), strict=False)
        self.lag = LagMonitor(OffsetReader(city.settings, timeout_s=10.0), selection,
                              Directory(self.topology),
                              options=LagOptions(interval_s=params.sample_s, time_lag=params.time_lag))
        self.samples = _Samples()
        self.started = 0.0
        self.cpu: dict[str, Any] = {}

    def run(self) -> dict[str, Any]:
        p = self.params
        load = _Load(self._specs())
        self.say(f"load: {p.rate:,} events/s for {p.seconds:g} s from {p.clients} processes "
                 f"({', '.join(f'{t} {s:.0%}' for t, s in MIX.items())}); RSS baseline after {p.warmup_s:g} s")
        try:
            load.start()
            self.started = time.monotonic()
            cpu_start = CpuMark.take(self._pids(load))
            self._watch(load, until=self.started + p.seconds)
            self.cpu = CpuMark.take(self._pids(load)).share_since(cpu_start)
            results = load.results(timeout_s=120)
        finally:
            load.kill()
        self.say("load stopped; draining ...")
        drained = self._drain()
        figures = self._figures(results, p.seconds, drained)
        self._print_table(figures)
        return figures

    def _specs(self) -> list[_LoadSpec]:
        p = self.params
        urls = {t: self.city.connectors.running[c].status().detail["url"] for t, c in self.plan.ingest_of.items()
                if c in self.city.connectors.running}
        tokens = {t: self.plan.tokens[c] for t, c in self.plan.ingest_of.items()}
        rates = {t: p.rate * share / p.clients for t, share in MIX.items()}
        return [_LoadSpec(i, urls, tokens, rates, p.seconds, p.tick_s, p.seed, p.cameras) for i in range(p.clients)]

    # -- while the load runs --

    def _watch(self, load: _Load, until: float) -> None:
        next_progress = self.started + self.params.progress_s
        last_accepted, last_at = 0, self.started
        while time.monotonic() < until:
            time.sleep(max(0.0, min(self.params.sample_s, until - time.monotonic())))
            self._sample()
            now = time.monotonic()
            if now >= next_progress or now >= until:
                accepted = load.accepted
                self.say(self._progress(accepted, (accepted - last_accepted) / max(now - last_at, 1e-9)))
                last_accepted, last_at = accepted, now
                next_progress += self.params.progress_s

    def _city_pids(self) -> dict[str, int | None]:
        """The bus's processes (this one, the processors child) and the broker (None: not ours)."""
        return {"bus": os.getpid(), "processors": _processors_pid(self.city.processors),
                "broker": _broker_pid(self.city.broker)}

    def _pids(self, load: _Load) -> dict[str, list[int | None]]:
        return {**{part: [pid] for part, pid in self._city_pids().items()},
                "load": load.pids, "endpoints": [self.endpoints.pid]}

    def _rss(self) -> dict[str, float | None]:
        return {part: rss_mb(pid) for part, pid in self._city_pids().items()}

    def _sample(self) -> None:
        """RSS of the bus processes, and every group's time lag (``SoakParams.time_lag``: by
        default the age of each partition's first unconsumed record, read from its timestamp).
        A partition one offset behind counts as at the end: on a transactional topic (what the
        router writes) the last offset is the commit marker, never consumed."""
        rss = self._rss()
        self.samples.times.append(time.monotonic() - self.started)
        self.samples.rss_parts.append(rss)
        self.samples.rss_bus.append((rss["bus"] or 0) + (rss["processors"] or 0))
        try:
            polled = time.monotonic()
            report = self.lag.poll()
            self.samples.poll_s.append(time.monotonic() - polled)
        except Exception as exc:  # a slow admin answer under load is a missed sample, not a failed soak
            self.say(f"lag: sample missed ({type(exc).__name__}: {exc})")
            return
        for group in report.groups:
            known = [0.0 if part.lag <= 1 else part.lag_seconds for part in group.partitions
                     if part.lag <= 1 or part.lag_seconds is not None]
            if known:
                self.samples.lag[group.group].append(max(known))
            self.samples.totallag[group.group] = group.totallag

    def _delivered(self) -> int:
        stats = self.endpoints.ask("stats")
        rows = sum(_count_rows(dsn, table) for dsn, table in self.plan.tables.values())
        return int(stats["delivered"]) + rows

    def _progress(self, accepted: int, rate: float) -> str:
        elapsed = time.monotonic() - self.started
        router = self.city.router.stats if self.city.router else None
        worst = max(((g, v[-1]) for g, v in self.samples.lag.items() if v), key=lambda gv: gv[1], default=("-", 0.0))
        base = self._baseline()
        rss = self.samples.rss_bus[-1] if self.samples.rss_bus else 0.0
        growth = f" ({(rss - base) / base * 100:+.1f}% since {self.params.warmup_s:g} s)" if base else ""
        broker = self.samples.rss_parts[-1]["broker"] if self.samples.rss_parts else None
        return (f"[{elapsed:4.0f} s] ingest {rate:,.0f}/s ({accepted:,} accepted); routed in "
                f"{router.records_in if router else 0:,}, out {router.records_out if router else 0:,}; delivered "
                f"{self._delivered():,}; worst lag {worst[1]:.2f} s ({_short(worst[0], self.topology)}); RSS bus "
                f"{rss:,.0f} MB{growth}" + (f", broker {broker:,.0f} MB" if broker else ""))

    def _baseline_sample(self) -> int | None:
        """Index of the first sample after the warm-up (the RSS baseline)."""
        return next((i for i, t in enumerate(self.samples.times) if t >= self.params.warmup_s), None)

    def _parts_at_warmup(self) -> dict[str, float | None]:
        """RSS of each process (bus, processors, broker) at the baseline sample."""
        i = self._baseline_sample()
        return self.samples.rss_parts[i] if i is not None else {}

    def _baseline(self) -> float | None:
        i = self._baseline_sample()
        return self.samples.rss_bus[i] if i is not None else None

    # -- after the load --

    def _drain(self) -> tuple[float, bool]:
        """Wait until every group caught up (lag 0 twice in a row) and deliveries stopped
        growing: (seconds it took, whether it did within the drain timeout)."""
        started = time.monotonic()
        deadline = started + self.params.drain_timeout_s
        quiet, last = 0, -1
        report = None
        next_progress = started + self.params.progress_s
        while time.monotonic() < deadline and quiet < 2:
            time.sleep(1.0)
            if time.monotonic() >= next_progress:
                next_progress += self.params.progress_s
                router = self.city.router.stats if self.city.router else None
                groups = report.groups if report else ()
                behind = [f"{_short(g.group, self.topology)} {g.totallag:,}" for g in groups
                          if g.totallag > len(g.partitions)]
                self.say(f"[drain {time.monotonic() - started:4.0f} s] routed in {router.records_in if router else 0:,}"
                         f"; delivered {last:,}; behind: {', '.join(behind) or 'none'}")
            with contextlib.suppress(Exception):
                report = self.lag.poll()
                delivered = self._delivered()
                # a transactional topic ends with a commit marker: one offset behind is at the end.
                # Router lanes are left out: a lane does not commit past records its filter drops
                # when nothing follows them, so it can stay a few records "behind" for good.
                caught_up = all(part.lag <= 1 for g in report.groups if g.group not in self.lanes
                                for part in g.partitions)
                quiet = quiet + 1 if caught_up and delivered == last else 0
                last = delivered
        took = time.monotonic() - started
        # What the router had read when the sinks were seen caught up: the sinks' entitlement.
        with contextlib.suppress(Exception):
            self.read_at_drain = OffsetReader(self.city.settings).committed(router_group(self.topology.namespace))
        behind = sorted({f"{_short(g.group, self.topology)} {p.topic.rsplit('.', 1)[-1]}[{p.partition}] lag {p.lag}"
                         for g in report.groups for p in g.partitions if p.lag > 1}) if report else []
        self.say(f"drained in {took:.0f} s" + ("" if quiet >= 2 else f" (NOT caught up: drain timeout; {behind[:6]})"))
        return took, quiet >= 2

    def _figures(self, results: list[_LoadResult], load_s: float, drain: tuple[float, bool]) -> dict[str, Any]:
        p = self.params
        accepted = {t: sum(r.accepted.get(t, 0) for r in results) for t in MIX}
        refused = sum(sum(r.refused.values()) for r in results)
        total = sum(accepted.values())
        loss, delays = self._loss(results)
        lag = {_short(g, self.topology): {"max_s": round(max(v), 3), "p99_s": round(percentile(v, 0.99) or 0, 3),
                                           "samples": len(v)}
               for g, v in sorted(self.samples.lag.items()) if v}
        base = self._baseline()
        after = [rss for t, rss in zip(self.samples.times, self.samples.rss_bus) if t >= p.warmup_s]
        peak_growth = (max(after) - base) / base * 100 if base and after else None
        end_growth = (after[-1] - base) / base * 100 if base and after else None
        router = self.city.router.stats if self.city.router else None
        rate = total / load_s if load_s else 0.0
        worst_lag = max((v["max_s"] for v in lag.values()), default=None)
        lost = sum(v["lost"] for v in loss.values())
        targets = {
            "rate": rate >= p.rate * p.rate_target_share and refused == 0,
            "lag": worst_lag is not None and worst_lag < p.lag_target_s,
            "rss": peak_growth is not None and peak_growth < p.rss_target_pct,
            "loss": lost == 0 and bool(loss),
        }
        return {
            "target_rate_eps": p.rate, "seconds": p.seconds, "warmup_s": p.warmup_s,
            "achieved_rate_eps": round(rate, 1), "accepted": total, "accepted_by_type": accepted, "refused": refused,
            "retried": sum(r.retried for r in results),
            "load_errors": [r.last_error for r in results if r.last_error],
            "routed_in": router.records_in if router else 0, "routed_out": router.records_out if router else 0,
            "delivered": self._delivered(), "drain_s": round(drain[0], 1),
            "drained": drain[1],  # False: records still in flight count as lost below
            "lag_seconds": lag, "worst_lag_s": worst_lag,
            "delivery_delay_s": {"p50": _round(percentile(delays, 0.5)), "p99": _round(percentile(delays, 0.99)),
                                 "max": _round(max(delays) if delays else None), "count": len(delays)},
            "rss_samples": len(self.samples.rss_bus), "lag_samples": len(self.samples.poll_s),
            "lag_poll_s_max": _round(max(self.samples.poll_s, default=None)),
            "rss_mb": {"bus_at_warmup": _round(base), "bus_peak_after_warmup": _round(max(after) if after else None),
                       "bus_end": _round(after[-1] if after else None),
                       "growth_pct_peak": _round(peak_growth), "growth_pct_end": _round(end_growth),
                       "at_warmup": _parts(self._parts_at_warmup()),
                       "last": _parts(self.samples.rss_parts[-1] if self.samples.rss_parts else {})},
            "loss": loss, "lost": lost,
            "single_record_batches": self.city.settings.single_record_batches,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "cpu": self.cpu,
            "targets": {k: "PASS" if v else "FAIL" for k, v in targets.items()},
            "pass": all(targets.values()),
        }

    # -- loss --

    def _loss(self, results: list[_LoadResult]) -> tuple[dict[str, dict[str, int]], list[float]]:
        """Per sink (and the processors' stage): entitled, received, lost."""
        received, delays = self.endpoints.ask("ids")
        for name, (dsn, table) in self.plan.tables.items():
            received[name] = _column(dsn, table, "change_id")
        out: dict[str, dict[str, int]] = {}
        alarms = [a for r in results for a in r.alarms]
        routed_topic = self.topology.event_type("camera_alarm").routed_topic
        enriched_at = _read_topic_at(self.city.settings, routed_topic)
        enriched = [record for _, _, record in enriched_at]
        out["processors (camera_alarm)"] = _alarm_accounting(alarms, enriched)
        # A sink is entitled to the enriched alarms the router had read when the drain ended: the
        # processors emit what their open windows still hold later (an idle spell, their stop),
        # and what was delivered is counted after the drain (a late alarm would count as lost).
        read = self.read_at_drain
        enriched = [record for p, o, record in enriched_at if o < read.get((routed_topic, p), 0)]
        for connector in self.topology.connectors:
            if connector.side != "sink" or not connector.subscription:
                continue
            sub = self.topology.subscription(connector.subscription)
            if sub.event_type not in ID_FIELDS:
                continue
            entitled = self._entitled(sub, results, enriched)
            got = received.get(connector.name, set())
            out[connector.name] = {"entitled": len(entitled), "received": len(got & entitled),
                                   "lost": len(entitled - got), "other": len(got - entitled)}
        return out, delays

    def _entitled(self, sub: Any, results: list[_LoadResult], enriched: list[dict[str, Any]]) -> set[str]:
        route = build_route(self.topology, sub, {"BUS_HASH_MASTER_KEY": "soak"})
        ident = ID_FIELDS[sub.event_type]
        if self.topology.event_type(sub.event_type).route_from == "enriched":
            return {str(d[ident]) for d in enriched if route.predicate(d)}
        schema = self.topology.schema_for(sub.event_type)
        records = (rec for r in results for rec in r.records.get(sub.event_type, []))
        return {str(rec[ident]) for rec in records if route.predicate(to_datum(schema, rec))}

    def _print_table(self, f: dict[str, Any]) -> None:
        say = self.say
        say(f"rate: {f['achieved_rate_eps']:,.0f} events/s achieved of {f['target_rate_eps']:,} "
            f"({f['accepted']:,} accepted, {f['refused']} refused) -> {f['targets']['rate']}")
        for group, v in f["lag_seconds"].items():
            say(f"lag: {group}: max {v['max_s']:.2f} s, p99 {v['p99_s']:.2f} s")
        say(f"lag: worst {f['worst_lag_s']} s (target < {self.params.lag_target_s:g} s) -> {f['targets']['lag']}")
        r = f["rss_mb"]
        say(f"rss: bus {r['bus_at_warmup']} MB at {self.params.warmup_s:g} s, peak {r['bus_peak_after_warmup']} MB, "
            f"end {r['bus_end']} MB: {r['growth_pct_peak']}% (target < {self.params.rss_target_pct:g}%) -> "
            f"{f['targets']['rss']}; at {self.params.warmup_s:g} s {r['at_warmup']}, last {r['last']}")
        if f["cpu"]:
            shares = ", ".join(f"{part} {'gone' if pct is None else f'{pct:.0f}%'}"
                               for part, pct in f["cpu"]["pct_of_a_core"].items())
            say(f"cpu while the load ran (% of one core): {shares}; the machine's {f['cpu']['cores']} cores "
                f"{f['cpu']['machine_busy_pct']}% busy")
        for name, v in f["loss"].items():
            say(f"loss: {name}: {v}")
        unsure = "" if f["drained"] else (" (the drain timed out: these were not delivered YET; in flight or lost "
                                          "is not determined)")
        say(f"loss: {f['lost']} lost{unsure} -> {f['targets']['loss']}; overall {'PASS' if f['pass'] else 'FAIL'}")


def _alarm_accounting(alarms: list[tuple[str, str, str, int]], enriched: list[dict[str, Any]]) -> dict[str, int]:
    """Accepted raw alarms that are in the processors' output: by id, or absorbed into the
    storm window (same camera and type) of an alarm that is."""
    window = StormConfig().window_ms
    emitted = {str(d["alarm_id"]) for d in enriched}
    starts: dict[tuple[str, str], list[int]] = defaultdict(list)
    for d in enriched:
        starts[(str(d["camera_id"]), str(d["alarm_type"]))].append(event_time_ms(d["occurred_at"]))
    for values in starts.values():
        values.sort()
    lost = 0
    for alarm_id, camera, kind, ms in alarms:
        if alarm_id in emitted:
            continue
        values = starts.get((camera, kind), [])
        i = bisect_right(values, ms) - 1
        if i < 0 or ms >= values[i] + window:
            lost += 1
    return {"entitled": len(alarms), "received": len(alarms) - lost, "lost": lost, "other": len(emitted)}


def _read_topic(settings: KafkaSettings, topic: str, idle_s: float = 2.0) -> list[dict[str, Any]]:
    """Every record of ``topic``, decoded (read until the ends and ``idle_s`` of silence)."""
    return [record for _, _, record in _read_topic_at(settings, topic, idle_s)]


def _read_topic_at(settings: KafkaSettings, topic: str, idle_s: float = 2.0) -> list[tuple[int, int, dict[str, Any]]]:
    """Every record of ``topic`` as (partition, offset, decoded value), as :func:`_read_topic`."""
    consumer = Consumer(consumer_config(settings, group_id=f"soak-read-{uuid.uuid4().hex[:6]}", client_id="soak-read"))
    decoder = Decoder(registry_client(settings))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in partitions}
        at: dict[int, int] = {}
        out: list[tuple[int, int, dict[str, Any]]] = []
        quiet_since = started = time.monotonic()
        # to the ends seen now (a producer may still be writing: what comes later is not counted),
        # or until nothing came for idle_s (a too-low high watermark, BROKER.md)
        while (time.monotonic() - quiet_since < idle_s and time.monotonic() - started < 300
               and not all(at.get(p, -1) >= e - 1 for p, e in ends.items() if e > 0)):
            batch = consumer.consume(1000, 0.2)
            for msg in batch:
                if msg.error() is None:
                    at[msg.partition()] = msg.offset()
                    if msg.value() is not None:
                        out.append((msg.partition(), msg.offset(), decoder.decode(msg.value())))
            if batch:
                quiet_since = time.monotonic()
        return out
    finally:
        consumer.close()


def _table(table: str) -> sql.Composable:
    schema_name, _, table_name = table.partition(".")
    return sql.SQL("{}.{}").format(sql.Identifier(schema_name), sql.Identifier(table_name))


def _count_rows(dsn: str, table: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_table(table))).fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:  # the sink creates its table with the first record
        return 0


def _column(dsn: str, table: str, column: str) -> set[str]:
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            rows = conn.execute(sql.SQL("SELECT {} FROM {}").format(sql.Identifier(column), _table(table))).fetchall()
            return {str(r[0]) for r in rows}
    except psycopg.errors.UndefinedTable:
        return set()


def _processors_pid(processors: Any) -> int | None:
    """The processors' child (supervised, so it may have been restarted: ask each time)."""
    if processors is None:
        return None
    supervisor = getattr(processors, "supervisor", None)
    if supervisor is not None:
        return supervisor.pid(processors.NAME)
    process = getattr(processors, "process", None)
    return process.pid if process is not None else None


def _broker_pid(broker: Any) -> int | None:
    """The broker's process when the soak started it: the embedded one, or the Kafka node."""
    if broker is None:
        return None
    if isinstance(broker, LocalKafka):
        return next(iter(broker.pids), None)
    return broker.pid


def _short(group: str, topology: Topology) -> str:
    prefix = f"{topology.namespace}." if topology.namespace else ""
    return group[len(prefix):] if group.startswith(prefix) else group


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


