"""What the connector tests share: a real HTTP endpoint on loopback, waiting on conditions
with deadlines, wire-format records produced onto a test topic, and the entry points."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from bus.connect.conformance import WireFeeder, committed, read_all, text_headers, wait_until  # noqa: F401 (the tests use them from here)
from bus.connect.signing import verify
from bus.demo.simulators.base import JsonHandler, QuietHTTPServer
from bus.kafka.config import KafkaSettings, producer_config
from bus.publish import Publisher
from bus.topology.models import Topology

#: Exactly the lines of pyproject.toml's [project.entry-points."bus.connectors"].
ENTRY_POINTS = {
    "http_ingest": "connectors.http_ingest:HttpIngest",
    "http_webhook_sink": "connectors.webhook_sink:WebhookSink",
}


def entry_points() -> list[EntryPoint]:
    return [EntryPoint(name, value, "bus.connectors") for name, value in ENTRY_POINTS.items()]


def install_entry_points(folder: Path) -> Path:
    """A distribution declaring the connector entry points, as pip would install it; put
    ``folder`` on sys.path (or PYTHONPATH) and importlib.metadata finds them."""
    dist = folder / "citybus_connectors_test-0.0.0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: citybus-connectors-test\nVersion: 0.0.0\n")
    lines = "".join(f"{name} = {value}\n" for name, value in ENTRY_POINTS.items())
    (dist / "entry_points.txt").write_text(f"[bus.connect]\n{lines}")
    return folder


# -- an endpoint --------------------------------------------------------------------------


@dataclass
class Receipt:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def key(self) -> str:
        return self.headers.get("idempotency-key", "")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Endpoint:
    """A department's webhook endpoint: records every request and answers as told.

    ``answer(receipt_number, headers, body) -> status`` decides (200 by default);
    ``gate`` set to a cleared Event holds every request from ``hold_after`` on until set.
    ``port``: 0 picks a free one. ``go_down()`` refuses new connections and drops kept-alive
    ones without an answer (a server that died); ``come_back()`` serves again on the same
    port, keeping what it received.
    """

    hmac_key: str
    answer: Callable[[int, dict[str, str], bytes], int] = lambda n, h, b: 200
    hold_after: int | None = None
    gate: threading.Event = field(default_factory=threading.Event)
    receipts: list[Receipt] = field(default_factory=list)
    server: QuietHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0
    down: bool = False

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/bus/alarms"

    def start(self) -> "Endpoint":
        endpoint = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                if endpoint.down:  # a dead server: the connection drops, nothing is answered
                    self.close_connection = True
                    return
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with endpoint.lock:
                    number = len(endpoint.receipts)
                    held = endpoint.hold_after is not None and number >= endpoint.hold_after
                if held:
                    endpoint.gate.wait(30)
                # A body cut short (the client died while sending) is refused, as a server would.
                status = endpoint.answer(number, headers, body) if len(body) == length else 400
                with endpoint.lock:
                    endpoint.receipts.append(Receipt(headers, body, status))
                self.reply(status, b'{"ok": true}' if status < 300 else b'{"error": "refused by the test endpoint"}')

        self.server = QuietHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.gate.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def go_down(self) -> None:
        self.down = True
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def come_back(self) -> None:
        self.down = False
        self.start()

    def snapshot(self) -> list[Receipt]:
        with self.lock:
            return list(self.receipts)

    def accepted(self) -> list[Receipt]:
        return [r for r in self.snapshot() if 200 <= r.status < 300]

    def accepted_keys(self) -> set[str]:
        return {r.key for r in self.accepted()}

    def signed(self, receipt: Receipt) -> bool:
        return verify(self.hmac_key, receipt.body, receipt.headers.get("x-bus-signature-256"))


# -- records on a topic ---------------------------------------------------------------------


@dataclass(frozen=True)
class Produced:
    key: str
    ce_id: str
    record: dict[str, Any]
    partition: int
    offset: int


def produce_wire_records(
    settings: KafkaSettings,
    topology: Topology,
    topic: str,
    records: list[dict[str, Any]],
    *,
    event_type: str = "camera_alarm",
    department: str = "police",
) -> list[Produced]:
    """Encode ``records`` as the publisher does (wire format, CloudEvents headers) and
    produce them onto ``topic``, as the router will fill a subscription topic."""
    producer = Producer(producer_config(settings, client_id="test-wire-records"))
    acks: dict[int, tuple[int, int]] = {}
    prepared = []
    with Publisher(topology, settings) as publisher:
        for i, record in enumerate(records):
            p = publisher.prepare(event_type, department, record)
            prepared.append(p)
            producer.produce(
                topic, key=p.key.encode(), value=p.value, headers=p.headers,
                on_delivery=lambda err, msg, i=i: acks.__setitem__(i, (msg.partition(), msg.offset())),
            )
    producer.flush(30)
    assert len(acks) == len(records), "the broker did not acknowledge every test record"
    return [Produced(p.key, p.ce_id, r, *acks[i]) for i, (p, r) in enumerate(zip(prepared, records))]


def produce_raw(settings: KafkaSettings, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer(producer_config(settings, client_id="test-raw-records"))
    producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


# -- every connector type of this repository --------------------------------------------------

#: The entry points of every connector type this repository ships (pyproject.toml's
#: [project.entry-points."bus.connectors"] once all are declared there).
ALL_ENTRY_POINTS = {
    **ENTRY_POINTS,
    "postgres_sink": "connectors.postgres_sink:PostgresSink",
    "mqtt_source": "connectors.mqtt_source:MqttSource",
    "file_drop": "connectors.file_drop:FileDrop",
    "jsonl_file_sink": "connectors.jsonl_sink:JsonlFileSink",
}


def all_entry_points() -> list[EntryPoint]:
    return [EntryPoint(name, value, "bus.connectors") for name, value in ALL_ENTRY_POINTS.items()]


