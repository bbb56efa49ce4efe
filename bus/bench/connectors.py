"""`bus bench connectors`: what the HTTP connectors cost, as ratios to the broker's own
produce rate measured in the same run, on the same broker, with the same records.

- raw produce (the baseline): a plain confluent-kafka producer (acks=all, idempotent, the
  bus's producer configuration; ``PRODUCE_TUNING``) sending pre-encoded camera alarms in the
  wire format, again and again;
- HTTP ingest, single: one record per POST, several concurrent httpx clients; each
  answer (202) comes after the broker acknowledged the record;
- HTTP ingest, batch: JSON-lines batches (``.../camera_alarm/batch``);
- webhook sink: deliveries per second to an endpoint on loopback (a bare ASGI app that
  answers 200), of records preloaded into its subscription topic.

Each part runs ``warmup_s`` (not counted) and then ``seconds`` (counted); start-up (the
consumer group join before the first delivery, the clients' first answer) is reported and
left out (:mod:`bus.bench.steady`). The webhook part ends early, flagged too short, when it
delivered every preloaded record before its time was up.

The HTTP clients and the endpoint run in processes of their own, as a department's
systems do; the connectors run in this one, as `bus connector run` runs them.

Prints one JSON line. The embedded broker's single-record batches are off for baseline and
connectors alike (``exact_watermarks``), as in ``bus bench route``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import multiprocessing
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from confluent_kafka import Producer

from bus.bench.brokers import Engine, drop_namespace as _drop_namespace, given_or_started
from bus.bench.steady import Window, load_average, warn_short
from bus.bench.route import PARTITIONS, Say, bench_topology
from bus.connect import ConnectorRunner
from bus.demo.samples import camera_alarm
from bus.kafka.admin import TopicSpec, ensure_topics
from bus.kafka.config import KafkaSettings, producer_config
from bus.publish import Publisher
from bus.topology.models import Topology
from bus.serving import bind, uvicorn_config

INGEST = "bench-ingest"
WEBHOOK = "bench-webhook"
SUBSCRIPTION = "bench-alarms"

RATES = ("raw_produce_eps", "ingest_single_eps", "ingest_batch_eps", "webhook_eps")

#: A record ready to produce: key, wire-format value, CloudEvents headers.
Wire = tuple[bytes, bytes, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class ConnectorBenchParams:
    #: Measured seconds of each part, after ``warmup_s`` of the same work (not counted).
    seconds: float = 10.0
    warmup_s: float = 2.0
    #: Distinct camera alarms encoded for the raw produce baseline (it sends them again and again).
    records: int = 20_000
    clients: int = 8
    #: Records per JSON-lines batch, and concurrent clients POSTing batches.
    batch_records: int = 500
    batch_clients: int = 4
    #: Records preloaded for the webhook sink (it stops when it delivered them all).
    webhook_records: int = 80_000
    webhook_concurrency: int = 16
    seed: int = 7
    exact_watermarks: bool = False


def run_connectors_benchmark(
    params: ConnectorBenchParams = ConnectorBenchParams(),
    *,
    settings: KafkaSettings | None = None,
    engine: Engine = "kafka",
    say: Say = print,
) -> dict[str, Any]:
    """The figures as a dict (one JSON line's worth). ``settings`` names a broker and
    registry to use; without it, :func:`bus.bench.brokers.bench_broker` for ``engine``."""
    load_start = load_average()
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(given_or_started(settings, engine, say))
        settings = broker.settings.with_exact_watermarks(params.exact_watermarks)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        endpoint = stack.enter_context(_Endpoint().serving())
        token = uuid.uuid4().hex
        topology = _topology(folder, f"bench_conn_{uuid.uuid4().hex[:6]}", token, endpoint.url, params)
        if broker.engine == "existing":
            stack.callback(_drop_namespace, settings, topology.namespace)
        results = _measure(topology, settings, params, token, endpoint, say)
        return {"benchmark": "connectors", **broker.report(), **results, "load_average_start": load_start,
                "load_average_end": load_average()}


def _measure(topology: Topology, settings: KafkaSettings, params: ConnectorBenchParams, token: str,
             endpoint: "_Endpoint", say: Say) -> dict[str, Any]:
    rng = random.Random(params.seed)
    canonical = topology.event_type("camera_alarm").topic
    say(f"encoding {params.records} camera alarms ...")
    prepared = _prepare(topology, settings, [camera_alarm(rng) for _ in range(params.records)])
    windows: dict[str, Window] = {}
    span = f"{params.warmup_s:g} s of warm-up, {params.seconds:g} s measured"

    say(f"raw produce ({span}) ...")
    windows["raw_produce_eps"] = _raw_produce_window(settings, canonical, prepared, params.warmup_s, params.seconds)

    with ConnectorRunner(topology.connector(INGEST), topology, settings, report_status=False) as ingest:
        url = ingest.status().detail["url"]
        say(f"ingest, one record per POST, {params.clients} clients ({span}) ...")
        windows["ingest_single_eps"] = _in_child(_post_process, url, token, params.clients, 1, params.warmup_s,
                                                 params.seconds, params.seed + 1)
        say(f"ingest, JSON-lines batches of {params.batch_records}, {params.batch_clients} clients ({span}) ...")
        windows["ingest_batch_eps"] = _in_child(_post_process, url, token, params.batch_clients, params.batch_records,
                                                params.warmup_s, params.seconds, params.seed + 2)

    say(f"webhook sink, up to {params.webhook_records:,} deliveries ({span}) ...")
    sub_topic = topology.subscription(SUBSCRIPTION).topic
    ensure_topics(settings, [TopicSpec(sub_topic, PARTITIONS)])
    copies = (prepared * (params.webhook_records // len(prepared) + 1))[: params.webhook_records]
    _raw_produce(settings, sub_topic, copies)
    started = time.monotonic()
    with ConnectorRunner(topology.connector(WEBHOOK), topology, settings, report_status=False):
        windows["webhook_eps"] = endpoint.window(started, params.webhook_records, params.warmup_s, params.seconds,
                                                 timeout_s=params.warmup_s + params.seconds + 120)

    results: dict[str, Any] = {name: window.rate for name, window in windows.items()}
    say("  ".join(f"{name}: {results[name]:,.0f}/s" for name in RATES))
    for name in RATES[1:]:
        results[name.replace("_eps", "_ratio")] = results[name] / results["raw_produce_eps"]
    short = [warn_short(name.removesuffix("_eps"), [window], say) for name, window in windows.items()]
    results.update(
        too_short=any(short),
        runs={name.removesuffix("_eps"): window.report() for name, window in windows.items()},
        seconds=params.seconds,
        warmup_s=params.warmup_s,
        records=params.records,
        record_bytes=round(statistics.mean(len(value) for _, value, _ in prepared)),
        clients=params.clients,
        batch_records=params.batch_records,
        batch_clients=params.batch_clients,
        webhook_records=params.webhook_records,
        webhook_concurrency=params.webhook_concurrency,
        baseline=PRODUCE_TUNING,
        single_record_batches=settings.single_record_batches,
    )
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in results.items()}


# -- the city of the benchmark ------------------------------------------------------------------


def _topology(folder: Path, namespace: str, token: str, webhook_url: str, params: ConnectorBenchParams) -> Topology:
    """One event type, one untouched subscription, an ingest source and a webhook sink
    (secrets in files of ``folder``)."""
    (folder / "token").write_text(token)
    (folder / "hmac").write_text(uuid.uuid4().hex)
    subscriptions = [{"name": SUBSCRIPTION, "department": "bench_sink", "event_type": "camera_alarm",
                      "description": "benchmark: every alarm, untouched"}]
    connectors = [
        {"name": INGEST, "type": "http_ingest", "department": "police", "publishes": ["camera_alarm"],
         "config": {"port": 0, "auth": {"token": f"file:{folder / 'token'}"}}},
        {"name": WEBHOOK, "type": "http_webhook_sink", "department": "bench_sink", "subscription": SUBSCRIPTION,
         "config": {"url": webhook_url, "hmac_key": f"file:{folder / 'hmac'}",
                    "max_concurrency": params.webhook_concurrency}},
    ]
    return bench_topology(folder, namespace, subscriptions, connectors)


# -- raw produce ----------------------------------------------------------------------------------


def _prepare(topology: Topology, settings: KafkaSettings, records: list[dict[str, Any]]) -> list[Wire]:
    """Records encoded as the Publisher encodes them (checked, wire format, CloudEvents headers)."""
    with Publisher(topology, settings, client_id="bench-encode") as publisher:
        out = []
        for record in records:
            p = publisher.prepare("camera_alarm", "police", record)
            out.append((p.key.encode("utf-8"), p.value, p.headers))
        return out


def _raw_produce(settings: KafkaSettings, topic: str, prepared: list[Wire]) -> float:
    """Records/s of a plain producer, to the last acknowledgement."""
    producer = Producer(producer_config(settings, client_id="bench-raw-produce"))
    failed: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(err.str())

    started = time.perf_counter()
    for key, value, headers in prepared:
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(120)
    elapsed = time.perf_counter() - started
    if failed or left:
        raise RuntimeError(f"the broker did not acknowledge {len(failed) + left} benchmark records: {failed[:1]}")
    return len(prepared) / elapsed


#: How the produce baseline is tuned (reported in the JSON).
PRODUCE_TUNING = {
    "loop": "produce() per pre-encoded record (key, wire-format value, CloudEvents headers) -> poll(0) every "
            "1000 records; flush() at the end of the warm-up and of the measured window (counted)",
    "producer": "the bus's producer configuration (idempotent, acks=all), librdkafka's batching defaults; "
                "delivery reports for failures only (delivery.report.only.error), so no Python callback per record",
}


def _raw_produce_window(settings: KafkaSettings, topic: str, prepared: list[Wire], warmup_s: float,
                        seconds: float) -> Window:
    """The produce baseline: the encoded records again and again, ``warmup_s`` then ``seconds``."""
    failed: list[str] = []
    conf = producer_config(settings, client_id="bench-raw-produce")
    # The benchmark's own tuning of the baseline (PRODUCE_TUNING), not a configuration of the bus.
    conf.update({"delivery.report.only.error": True, "on_delivery": lambda err, _msg: failed.append(err.str())})
    producer = Producer(conf)
    produce, poll, n = producer.produce, producer.poll, len(prepared)
    started = time.perf_counter()
    marks = [(started, 0)]
    phase_end, done = started + warmup_s, 0
    while len(marks) < 3:
        for i in range(done, done + 1000):
            key, value, headers = prepared[i % n]
            while True:
                try:
                    produce(topic, value, key, headers=headers)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    poll(0.05)
        done += 1000
        poll(0)
        if time.perf_counter() >= phase_end:
            if producer.flush(120):
                raise RuntimeError("the broker did not acknowledge the benchmark's records within 120 s")
            marks.append((time.perf_counter(), done))
            phase_end = marks[-1][0] + seconds
    if failed:
        raise RuntimeError(f"the broker refused {len(failed)} benchmark records: {failed[0]}")
    (t0, _), (t1, n1), (t2, n2) = marks
    return Window(startup_s=0.0, warmup_s=t1 - t0, warmup_records=n1, measured_s=t2 - t1,
                  measured_records=n2 - n1, measured_out=n2 - n1)


# -- HTTP ingest -----------------------------------------------------------------------------------


async def _post_for(url: str, token: str, clients: int, per_post: int, warmup_s: float, seconds: float,
                    seed: int) -> Window:
    """``clients`` concurrent senders POSTing camera alarms (one per request, or JSON-lines batches
    of ``per_post``) for ``warmup_s``, then ``seconds``; the records accepted (202) in each part."""
    rng = random.Random(seed)
    single = per_post == 1
    target = f"{url}/camera_alarm" if single else f"{url}/camera_alarm/batch"
    headers = {"Authorization": f"Bearer {token}",
               "Content-Type": "application/json" if single else "application/x-ndjson"}
    accepted = 0
    started = time.perf_counter()
    first: float | None = None
    marks: list[tuple[float, int]] = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients), timeout=120) as client:
        async def worker() -> None:
            nonlocal accepted, first
            while len(marks) < 2:
                records = [camera_alarm(rng) for _ in range(per_post)]
                body = json.dumps(records[0]) if single else "\n".join(json.dumps(r) for r in records)
                answer = await client.post(target, content=body, headers=headers)
                if answer.status_code != 202:
                    raise RuntimeError(f"ingest answered {answer.status_code}: {answer.text[:300]}")
                accepted += per_post
                if first is None:
                    first = time.perf_counter()

        async def clock() -> None:
            while first is None:
                await asyncio.sleep(0.01)
            await asyncio.sleep(max(0.0, first + warmup_s - time.perf_counter()))
            marks.append((time.perf_counter(), accepted))
            await asyncio.sleep(seconds)
            marks.append((time.perf_counter(), accepted))

        await asyncio.gather(clock(), *(worker() for _ in range(clients)))
    assert first is not None
    (t1, n1), (t2, n2) = marks
    return Window(startup_s=first - started, warmup_s=t1 - first, warmup_records=n1, measured_s=t2 - t1,
                  measured_records=n2 - n1, measured_out=n2 - n1)


# -- the webhook's endpoint --------------------------------------------------------------------------


class _Endpoint:
    """A bare ASGI endpoint on loopback, in a process of its own (as a department's server
    is: sharing this process's interpreter lock would slow both sides), that answers 200
    and counts deliveries with the time of the first and of the last."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._port = context.Value("i", 0)
        self._count = context.Value("q", 0)
        self._first = context.Value("d", 0.0)
        self._last = context.Value("d", 0.0)
        self._ready = context.Event()
        self._process = context.Process(
            target=_serve_endpoint, args=(self._port, self._count, self._first, self._last, self._ready),
            name="bench-endpoint", daemon=True,
        )
        self.url = ""

    @contextlib.contextmanager
    def serving(self) -> Iterator["_Endpoint"]:
        self._process.start()
        try:
            if not self._ready.wait(60):
                raise RuntimeError("the benchmark's webhook endpoint did not start within 60 s")
            self.url = f"http://127.0.0.1:{self._port.value}/bench/alarms"
            yield self
        finally:
            self._process.terminate()
            self._process.join(10)

    def window(self, started: float, expected: int, warmup_s: float, seconds: float, timeout_s: float) -> Window:
        """Deliveries from the first on (``started``: when the sink was started, time.monotonic()):
        ``warmup_s`` not counted, then ``seconds``, or up to the ``expected``-th (the last one sent)."""
        deadline = time.monotonic() + timeout_s
        samples: list[tuple[float, int]] = []  # (when the count was seen to change, the count)
        while self._count.value < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the webhook sink delivered {self._count.value} of {expected} records "
                                   f"within {timeout_s:g} s")
            count = self._count.value
            if count and (not samples or count > samples[-1][1]):
                samples.append((time.monotonic(), count))
                if samples[-1][0] - self._first.value >= warmup_s + seconds:
                    break
            time.sleep(0.02)
        if not samples or samples[-1][1] < self._count.value:
            samples.append((max(self._last.value, samples[-1][0] if samples else 0.0), self._count.value))
        first = self._first.value
        end = samples[-1]
        # ran out during the warm-up: all of it counts as measured (and is flagged too short)
        warm = next((x for x in samples if x[0] - first >= warmup_s and x is not end), (first, 0))
        return Window(startup_s=first - started, warmup_s=warm[0] - first, warmup_records=warm[1],
                      measured_s=end[0] - warm[0], measured_records=end[1] - warm[1],
                      measured_out=end[1] - warm[1], exhausted=end[0] - warm[0] < seconds)


def _serve_endpoint(port: Any, count: Any, first: Any, last: Any, ready: Any) -> None:
    """The endpoint's process: uvicorn serving an ASGI app that answers every POST 200."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})
        now = time.monotonic()
        with count.get_lock():
            count.value += 1
            if count.value == 1:
                first.value = now
            last.value = now

    sock = bind("127.0.0.1", 0, what="benchmark webhook endpoint")
    sock.listen(1024)
    port.value = sock.getsockname()[1]
    ready.set()
    uvicorn.Server(uvicorn_config(app)).run(sockets=[sock])


# -- clients in a process of their own ---------------------------------------------------------------


def _in_child(function: Callable[..., Window], *args: Any) -> Window:
    """``function(*args)`` in a fresh process: the HTTP clients do not compete with the
    connector under test for this process's interpreter lock."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result(timeout=600)


def _post_process(url: str, token: str, clients: int, per_post: int, warmup_s: float, seconds: float,
                  seed: int) -> Window:
    return asyncio.run(_post_for(url, token, clients, per_post, warmup_s, seconds, seed))
