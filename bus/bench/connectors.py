"""`bus bench connectors`: what the HTTP connectors cost, as ratios to the broker's own
produce rate measured in the same run, on the same broker, with the same records.

- raw produce: a plain confluent-kafka producer (acks=all, idempotent, the bus's
  producer configuration) sending pre-encoded camera alarms in the wire format;
- HTTP ingest, single: one record per POST, several concurrent httpx clients; each
  answer (202) comes after the broker acknowledged the record;
- HTTP ingest, batch: JSON-lines batches (``.../camera_alarm/batch``);
- webhook sink: deliveries per second to an endpoint on loopback (a bare ASGI app that
  answers 200), from the first delivery to the last (the consumer group join before it
  is not counted).

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

from bus.bench.route import PARTITIONS, Say, _infrastructure, bench_topology
from bus.connectors import ConnectorRunner
from bus.demo.samples import camera_alarm
from bus.kafka.admin import TopicSpec, admin, delete_topics, ensure_topics
from bus.kafka.config import KafkaSettings, producer_config
from bus.publish import Publisher
from bus.topology.models import Topology
from bus.web.serving import bind, uvicorn_config

INGEST = "bench-ingest"
WEBHOOK = "bench-webhook"
SUBSCRIPTION = "bench-alarms"

RATES = ("raw_produce_eps", "ingest_single_eps", "ingest_batch_eps", "webhook_eps")

#: A record ready to produce: key, wire-format value, CloudEvents headers.
Wire = tuple[bytes, bytes, list[tuple[str, bytes]]]


@dataclass(frozen=True)
class ConnectorBenchParams:
    #: Records of the raw produce baseline.
    records: int = 20_000
    ingest_single_records: int = 2_000
    clients: int = 8
    #: Records POSTed in JSON-lines batches, in all, and per batch.
    ingest_batch_records: int = 10_000
    batch_records: int = 500
    batch_clients: int = 4
    webhook_records: int = 3_000
    webhook_concurrency: int = 16
    seed: int = 7
    exact_watermarks: bool = False


def run_connectors_benchmark(
    params: ConnectorBenchParams = ConnectorBenchParams(),
    *,
    settings: KafkaSettings | None = None,
    say: Say = print,
) -> dict[str, Any]:
    """The figures as a dict (one JSON line's worth). ``settings`` names a broker and
    registry to use; without it, the configured ones, or embedded ones started here."""
    with contextlib.ExitStack() as stack:
        if settings is None:
            settings = stack.enter_context(_infrastructure(say))
        settings = settings.with_exact_watermarks(params.exact_watermarks)
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        endpoint = stack.enter_context(_Endpoint().serving())
        token = uuid.uuid4().hex
        topology = _topology(folder, f"bench_conn_{uuid.uuid4().hex[:6]}", token, endpoint.url, params)
        stack.callback(_drop_namespace, settings, topology.namespace)
        return _measure(topology, settings, params, token, endpoint, say)


def _measure(topology: Topology, settings: KafkaSettings, params: ConnectorBenchParams, token: str,
             endpoint: "_Endpoint", say: Say) -> dict[str, Any]:
    rng = random.Random(params.seed)
    canonical = topology.event_type("camera_alarm").topic
    say(f"encoding {params.records} camera alarms ...")
    prepared = _prepare(topology, settings, [camera_alarm(rng) for _ in range(params.records)])
    results: dict[str, Any] = {}

    say("raw produce ...")
    results["raw_produce_eps"] = _raw_produce(settings, canonical, prepared)

    with ConnectorRunner(topology.connector(INGEST), topology, settings, report_status=False) as ingest:
        url = ingest.status().detail["url"]
        say(f"ingest, one record per POST, {params.clients} clients ...")
        singles = [camera_alarm(rng) for _ in range(params.ingest_single_records)]
        results["ingest_single_eps"] = _in_child(_singles_process, url, token, singles, params.clients)
        say(f"ingest, JSON-lines batches of {params.batch_records}, {params.batch_clients} clients ...")
        lines = [camera_alarm(rng) for _ in range(params.ingest_batch_records)]
        batches = [lines[i:i + params.batch_records] for i in range(0, len(lines), params.batch_records)]
        results["ingest_batch_eps"] = _in_child(_batches_process, url, token, batches, params.batch_clients)

    say(f"webhook sink, {params.webhook_records} deliveries ...")
    sub_topic = topology.subscription(SUBSCRIPTION).topic
    ensure_topics(settings, [TopicSpec(sub_topic, PARTITIONS)])
    _raw_produce(settings, sub_topic, (prepared * (params.webhook_records // len(prepared) + 1))[: params.webhook_records])
    with ConnectorRunner(topology.connector(WEBHOOK), topology, settings, report_status=False):
        results["webhook_eps"] = endpoint.rate(params.webhook_records, timeout_s=120)

    say("  ".join(f"{name}: {results[name]:,.0f}/s" for name in RATES))
    for name in RATES[1:]:
        results[name.replace("_eps", "_ratio")] = results[name] / results["raw_produce_eps"]
    results.update(
        records=params.records,
        record_bytes=round(statistics.mean(len(value) for _, value, _ in prepared)),
        ingest_single_records=params.ingest_single_records,
        clients=params.clients,
        ingest_batch_records=params.ingest_batch_records,
        batch_records=params.batch_records,
        batch_clients=params.batch_clients,
        webhook_records=params.webhook_records,
        webhook_concurrency=params.webhook_concurrency,
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


def _drop_namespace(settings: KafkaSettings, namespace: str | None) -> None:
    topics = admin(settings).list_topics(timeout=10).topics
    delete_topics(settings, sorted(t for t in topics if namespace and t.startswith(f"{namespace}.")))


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


# -- HTTP ingest -----------------------------------------------------------------------------------


async def _post_singles(url: str, token: str, records: list[dict[str, Any]], clients: int) -> float:
    todo = iter(records)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients), timeout=60) as client:
        async def worker() -> None:
            for record in todo:
                answer = await client.post(f"{url}/camera_alarm", content=json.dumps(record), headers=headers)
                if answer.status_code != 202:
                    raise RuntimeError(f"ingest answered {answer.status_code}: {answer.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return len(records) / (time.perf_counter() - started)


async def _post_batches(url: str, token: str, batches: list[list[dict[str, Any]]], clients: int) -> float:
    bodies = iter(["\n".join(json.dumps(r) for r in batch) for batch in batches])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients), timeout=120) as client:
        async def worker() -> None:
            for body in bodies:
                answer = await client.post(f"{url}/camera_alarm/batch", content=body, headers=headers)
                if answer.status_code != 202:
                    raise RuntimeError(f"ingest answered {answer.status_code}: {answer.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return sum(len(b) for b in batches) / (time.perf_counter() - started)


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

    def rate(self, expected: int, timeout_s: float) -> float:
        """Deliveries/s from the first arrival to the ``expected``-th (the last one sent)."""
        deadline = time.monotonic() + timeout_s
        while self._count.value < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the webhook sink delivered {self._count.value} of {expected} records "
                                   f"within {timeout_s:g} s")
            time.sleep(0.05)
        first, last = self._first.value, self._last.value
        return (expected - 1) / (last - first) if last > first else float(expected)


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


def _in_child(function: Callable[..., float], *args: Any) -> float:
    """``function(*args)`` in a fresh process: the HTTP clients do not compete with the
    connector under test for this process's interpreter lock."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result(timeout=600)


def _singles_process(url: str, token: str, records: list[dict[str, Any]], clients: int) -> float:
    return asyncio.run(_post_singles(url, token, records, clients))


def _batches_process(url: str, token: str, batches: list[list[dict[str, Any]]], clients: int) -> float:
    return asyncio.run(_post_batches(url, token, batches, clients))
