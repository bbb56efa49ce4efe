"""HTTP ingest against the real broker and registry, over real HTTP on loopback."""

from __future__ import annotations

import http.client
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
import pytest
from structlog.testing import capture_logs

from bus.connect import ConnectorRunner
from bus.connect.signing import sign, sign_request
from bus.consume.tail import tail
from bus.demo.samples import GENERATORS
from bus.kafka.broker import EmbeddedBroker
from bus.topology.models import Connector
from tests.connectors.support import entry_points, wait_until
from tests.fixtures.city import City

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@dataclass
class Ingest:
    runner: ConnectorRunner
    url: str
    token: str
    hmac_key: str

    def post(self, event_type: str, body: bytes, *, batch: bool = False, headers: dict[str, str] | None = None,
             auth: bool = True) -> httpx.Response:
        all_headers = {"Content-Type": "application/x-ndjson" if batch else "application/json"}
        if auth:
            all_headers["Authorization"] = f"Bearer {self.token}"
        all_headers.update(headers or {})
        path = f"{self.url}/{event_type}" + ("/batch" if batch else "")
        return httpx.post(path, content=body, headers=all_headers, timeout=30)


@pytest.fixture
def start_ingest(connector_city: City, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Ingest]]:
    runners: list[ConnectorRunner] = []

    def start(*, settings=None, report_status: bool = True, **config: object) -> Ingest:
        token, key = f"tok-{random.getrandbits(64):x}", f"key-{random.getrandbits(64):x}"
        monkeypatch.setenv("TEST_INGEST_TOKEN", token)
        monkeypatch.setenv("TEST_INGEST_HMAC_KEY", key)
        connector = Connector.model_validate({
            "name": "skynet-platform", "type": "http_ingest", "department": "police",
            "publishes": ["camera_alarm", "camera_status"],
            "config": {"port": 0, "auth": {"token": "env:TEST_INGEST_TOKEN", "hmac_key": "env:TEST_INGEST_HMAC_KEY"},
                       **config},
        })
        runner = ConnectorRunner(connector, connector_city.topology, settings or connector_city.settings,
                                 entry_points=entry_points(), report_status=report_status)
        runners.append(runner.start())
        return Ingest(runner, runner.instance.url, token, key)  # type: ignore[union-attr]

    yield start
    for runner in runners:
        runner.stop()


def alarm(seed: int = 1) -> dict:
    return GENERATORS["camera_alarm"](random.Random(seed))


def body(record: object) -> bytes:
    return json.dumps(record).encode()


def test_a_record_lands_on_its_canonical_topic_with_cloud_events_headers_after_the_ack(
    start_ingest: Callable[..., Ingest], connector_city: City
) -> None:
    ingest = start_ingest()
    record = alarm()
    answer = ingest.post("camera_alarm", body(record), headers={"traceparent": TRACEPARENT})
    assert answer.status_code == 202, answer.text
    ack = answer.json()
    assert ack["key"] == record["camera_id"]
    assert ack["trace_id"] == TRACEPARENT.split("-")[1]

    topic = connector_city.topology.event_type("camera_alarm").topic
    got = [r for r in tail(connector_city.settings, [topic], exit_at_end=True)]
    assert [(r.partition, r.offset) for r in got] == [(ack["partition"], ack["offset"])]  # there when 202 came
    seen = got[0]
    assert seen.value["alarm_id"] == record["alarm_id"]
    assert seen.key == record["camera_id"]
    assert seen.headers["ce_source"] == "police"
    assert seen.headers["ce_type"] == "camera_alarm"
    assert seen.headers["ce_specversion"] == "1.0"
    assert seen.headers["ce_id"] == ack["ce_id"]
    assert seen.headers["content-type"] == "application/avro"
    assert seen.headers["ce_traceparent"] == TRACEPARENT


def test_a_signed_json_lines_batch_is_published_whole(start_ingest: Callable[..., Ingest], connector_city: City) -> None:
    ingest = start_ingest()
    records = [GENERATORS["camera_status"](random.Random(i)) for i in range(5)]
    payload = b"\n".join(body(r) for r in records) + b"\n"
    answer = ingest.post("camera_status", payload, batch=True, auth=False,
                         headers=sign_request(ingest.hmac_key, payload))
    assert answer.status_code == 202, answer.text
    assert answer.json()["accepted"] == 5
    traced = [GENERATORS["camera_status"](random.Random(10 + i)) for i in range(2)]
    answer = ingest.post("camera_status", b"\n".join(body(r) for r in traced), batch=True,
                         headers={"traceparent": TRACEPARENT})
    assert answer.status_code == 202, answer.text

    topic = connector_city.topology.event_type("camera_status").topic
    got = list(tail(connector_city.settings, [topic], exit_at_end=True))
    assert sorted(g.value["camera_id"] for g in got) == sorted(r["camera_id"] for r in records + traced)
    traced_ids = {r["camera_id"] for r in traced}
    assert {g.headers["ce_traceparent"] for g in got if g.value["camera_id"] in traced_ids} == {TRACEPARENT}


def test_field_errors_are_answered_400_with_every_problem(start_ingest: Callable[..., Ingest]) -> None:
    ingest = start_ingest()
    record = alarm() | {"camera_id": 42}
    del record["severity"]
    answer = ingest.post("camera_alarm", body(record))
    assert answer.status_code == 400
    problems = {p["path"]: p["problem"] for p in answer.json()["problems"]}
    assert problems["camera_id"].startswith("expected a string")
    assert "required field is missing" in problems["severity"]

    lines = [body(alarm(1)), body(alarm(2) | {"alarm_type": "EXPLOSION"}), b"{broken", body(alarm(3))]
    answer = ingest.post("camera_alarm", b"\n".join(lines), batch=True)
    assert answer.status_code == 400
    listed = answer.json()["problems"]
    assert [(p["line"], p["path"]) for p in listed] == [(2, "alarm_type"), (3, "")]
    assert "nothing was published" in answer.json()["error"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": "Basic dXNlcjpwYXNz"},
     {"X-Bus-Signature-256": "sha256=" + "0" * 64}],
    ids=["no credentials", "bad token", "not bearer", "bad signature"],
)
def test_unauthenticated_requests_are_answered_401_and_no_secret_is_logged(
    start_ingest: Callable[..., Ingest], headers: dict[str, str]
) -> None:
    ingest = start_ingest()
    with capture_logs() as logs:
        answer = ingest.post("camera_alarm", body(alarm()), auth=False, headers=headers)
        accepted = ingest.post("camera_alarm", body(alarm()))
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert accepted.status_code == 202
    assert any(line.get("audit") and line["event"] == "ingest unauthenticated" for line in logs)
    text = json.dumps(logs, default=str)
    assert ingest.token not in text and ingest.hmac_key not in text


def test_a_type_the_department_may_not_publish_is_403_with_an_audit_line(start_ingest: Callable[..., Ingest]) -> None:
    ingest = start_ingest()
    record = GENERATORS["population_change"](random.Random(1))
    with capture_logs() as logs:
        answer = ingest.post("population_change", body(record))
    assert answer.status_code == 403
    assert "'police' may not publish population_change" in answer.json()["error"]
    audit = [line for line in logs if line.get("audit") and line["event"] == "ingest refused"]
    assert len(audit) == 1
    assert audit[0]["department"] == "police"
    assert audit[0]["connector"] == "skynet-platform"
    assert audit[0]["event_type"] == "population_change"
    assert audit[0]["remote"].startswith("127.0.0.1:")

    assert ingest.post("camera_alarms", body(alarm())).status_code == 404


def test_bodies_over_the_limit_are_413_by_content_length_and_by_bytes_received(
    start_ingest: Callable[..., Ingest]
) -> None:
    ingest = start_ingest(max_body_bytes=2000, max_batch_bytes=5000)
    address = urlsplit(ingest.url)

    # Declared too large: refused before the body is read.
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    conn.putrequest("POST", f"{address.path}/camera_alarm")
    conn.putheader("Authorization", f"Bearer {ingest.token}")
    conn.putheader("Content-Length", "2000000")
    conn.endheaders(b"{")
    answer = conn.getresponse()
    assert answer.status == 413
    assert "2,000,000 bytes" in json.loads(answer.read())["error"]
    conn.close()

    # No Content-Length (chunked): counted as it streams in.
    chunks = (b" " * 500 for _ in range(6))
    streamed = httpx.post(f"{ingest.url}/camera_alarm", content=chunks,
                          headers={"Authorization": f"Bearer {ingest.token}"}, timeout=10)
    assert streamed.status_code == 413
    batch = ingest.post("camera_alarm", b"\n".join(body(alarm(i)) for i in range(30)), batch=True)
    assert batch.status_code == 413


def test_backpressure_is_429_with_retry_after_and_the_held_request_still_succeeds(
    start_ingest: Callable[..., Ingest]
) -> None:
    ingest = start_ingest(max_in_flight=1, retry_after_s=2)
    address = urlsplit(ingest.url)
    payload = body(alarm())
    held = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    held.putrequest("POST", f"{address.path}/camera_alarm")
    held.putheader("Authorization", f"Bearer {ingest.token}")
    held.putheader("Content-Type", "application/json")
    held.putheader("Content-Length", str(len(payload)))
    held.endheaders(payload[:10])  # the rest is not sent yet: the request stays in flight
    source = ingest.runner.instance
    wait_until(lambda: source.in_flight == 1, 10, "the first request to be in flight")  # type: ignore[union-attr]

    refused = ingest.post("camera_alarm", body(alarm(2)))
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"

    held.send(payload[10:])
    answer = held.getresponse()
    assert answer.status == 202
    held.close()
    assert ingest.post("camera_alarm", body(alarm(3))).status_code == 202


MALFORMED = [
    ("bad json", b'{"alarm_id": '),
    ("empty body", b""),
    ("not utf-8", b'{"camera_id": "\xff\xfe"}'),
    ("json array", b"[1, 2, 3]"),
    ("json null", b"null"),
    ("wrong types", json.dumps({"alarm_id": 5, "camera_id": [], "severity": {"x": 1}, "occurred_at": True}).encode()),
    ("deeply nested", b"[" * 100_000 + b"]" * 100_000),
    ("deeply nested field", b'{"camera_id": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"}"),
    ("huge integer", b'{"count": ' + b"9" * 5000 + b"}"),
    ("lone surrogate", body(alarm() | {"description": "\ud800"})),
    ("NaN and Infinity", body(alarm() | {"confidence": 0.5, "count": 1}).replace(b"0.5", b"NaN").replace(b": 1}", b": Infinity}")),
]


def test_malformed_bodies_are_never_answered_500(start_ingest: Callable[..., Ingest]) -> None:
    ingest = start_ingest()
    for name, payload in MALFORMED:
        for batch in (False, True):
            answer = ingest.post("camera_alarm", payload, batch=batch)
            assert 400 <= answer.status_code < 500, f"{name} (batch={batch}): {answer.status_code} {answer.text}"
            assert answer.json()["error"], name
    assert ingest.post("camera_alarm", body(alarm())).status_code == 202  # still serving


def test_paused_is_503_and_an_unreachable_broker_is_503_with_retry_after(
    start_ingest: Callable[..., Ingest], connector_city: City
) -> None:
    ingest = start_ingest()
    ingest.runner.pause()
    paused = ingest.post("camera_alarm", body(alarm()))
    assert paused.status_code == 503 and paused.headers["Retry-After"] == "1"
    ingest.runner.resume()
    assert ingest.post("camera_alarm", body(alarm())).status_code == 202

    own = EmbeddedBroker().start()  # a broker of this test alone, stopped under the connector
    try:
        settings = connector_city.settings.with_broker(own.bootstrap_servers, embedded=True).model_copy(
            update={"connect_timeout_s": 1.5})
        lonely = start_ingest(settings=settings, report_status=False)
    finally:
        own.stop(timeout_s=0.5)  # clients are connected: it is killed rather than waited for
    answer = lonely.post("camera_status", body(GENERATORS["camera_status"](random.Random(1))))
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    assert own.bootstrap_servers in answer.json()["error"]
