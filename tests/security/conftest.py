"""Fixtures of the security proofs: a real http_ingest connector of the police department
(bearer token and HMAC key, both from the environment) on loopback, against the embedded
broker and registry, with every topic of the test's namespace deleted afterwards."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bus.connect import ConnectorRunner
from bus.kafka.admin import admin, delete_topics
from bus.topology.models import Connector
from tests.connectors.support import entry_points
from tests.fixtures.city import City


@dataclass
class Ingest:
    runner: ConnectorRunner
    url: str
    token: str
    hmac_key: str

    def post(self, event_type: str, body: Any, *, batch: bool = False, auth: bool = True,
             headers: Mapping[str, str | bytes] | None = None) -> httpx.Response:
        """POST to the connector; header values given as bytes are sent as they are."""
        sent: dict[str, str | bytes] = {"Content-Type": "application/x-ndjson" if batch else "application/json"}
        if auth:
            sent["Authorization"] = f"Bearer {self.token}"
        sent.update(headers or {})
        raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in sent.items()}
        return httpx.post(f"{self.url}/{event_type}" + ("/batch" if batch else ""), content=body, headers=raw,
                          timeout=30)


@pytest.fixture
def security_city(city: City) -> Iterator[City]:
    """The demo city; afterwards every topic of its namespace is deleted (connector
    offsets, status and dead-letter topics included)."""
    yield city
    namespace = city.topology.namespace
    topics = admin(city.settings).list_topics(timeout=10).topics
    delete_topics(city.settings, sorted(t for t in topics if namespace and t.startswith(f"{namespace}.")))


@pytest.fixture
def start_ingest(security_city: City, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Ingest]]:
    """``start(auth=..., **config)``: the police's ingest connector (publishes camera_alarm
    and camera_status), started and serving; stopped after the test."""
    runners: list[ConnectorRunner] = []

    def start(*, auth: dict[str, str] | None = None, **config: object) -> Ingest:
        token, key = f"tok-{random.getrandbits(64):x}", f"key-{random.getrandbits(64):x}"
        monkeypatch.setenv("SECURITY_INGEST_TOKEN", token)
        monkeypatch.setenv("SECURITY_INGEST_HMAC_KEY", key)
        connector = Connector.model_validate({
            "name": "skynet-platform", "type": "http_ingest", "department": "police",
            "publishes": ["camera_alarm", "camera_status"],
            "config": {"port": 0, **config,
                       "auth": auth or {"token": "env:SECURITY_INGEST_TOKEN",
                                        "hmac_key": "env:SECURITY_INGEST_HMAC_KEY"}},
        })
        runner = ConnectorRunner(connector, security_city.topology, security_city.settings,
                                 entry_points=entry_points(), report_status=False)
        runners.append(runner.start())
        return Ingest(runner, runner.instance.url, token, key)  # type: ignore[union-attr]

    yield start
    for runner in runners:
        runner.stop()
