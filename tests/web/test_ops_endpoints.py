"""The ops endpoints on a real loopback server: probes, readiness with real checks,
metrics scraped and parsed, and the token rule."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus.kafka.config import KafkaSettings
from bus.ops.metrics import BusMonitor
from bus.web.ops import OpsServer, broker_check, registry_check
from bus.serving import ServeError


def test_probes_and_metrics(registry_settings: KafkaSettings) -> None:
    monitor = BusMonitor()
    monitor.on_record_in("city.events.camera_alarm", 7)
    checks = {"broker": broker_check(registry_settings), "registry": registry_check(registry_settings)}
    with OpsServer(monitor, checks) as server:
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
        ready = httpx.get(f"{server.url}/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        scraped = httpx.get(f"{server.url}/metrics")
        assert scraped.status_code == 200
        values = {
            (s.name, s.labels.get("topic")): s.value
            for family in text_string_to_metric_families(scraped.text)
            for s in family.samples
        }
        assert values[("bus_records_in_total", "city.events.camera_alarm")] == 7


def test_not_ready_names_what_is_missing(kafka_settings: KafkaSettings) -> None:
    dead_registry = kafka_settings.with_registry("http://127.0.0.1:1")
    checks = {"broker": broker_check(kafka_settings), "registry": registry_check(dead_registry, timeout_s=0.5)}
    with OpsServer(BusMonitor(), checks) as server:
        answer = httpx.get(f"{server.url}/readyz")
        assert answer.status_code == 503
        body = answer.json()
        assert body["checks"]["broker"]["ok"] is True
        assert body["checks"]["registry"]["ok"] is False and "127.0.0.1:1" in body["checks"]["registry"]["detail"]
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # alive even when not ready


def test_beyond_loopback_needs_a_token() -> None:
    with pytest.raises(ServeError, match="BUS_WEB_TOKEN"):
        OpsServer(BusMonitor(), {}, host="0.0.0.0")


def test_with_a_token_metrics_refuse_requests_without_it() -> None:
    with OpsServer(BusMonitor(), {}, token="s3cret-token") as server:
        assert httpx.get(f"{server.url}/metrics").status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        assert httpx.get(f"{server.url}/healthz").status_code == 200


def test_a_taken_port_is_a_clear_error() -> None:
    with OpsServer(BusMonitor(), {}) as first:
        with pytest.raises(ServeError, match=f"127.0.0.1:{first.port}"):
            OpsServer(BusMonitor(), {}, port=first.port).start()


def test_readiness_never_shows_registry_credentials(kafka_settings: KafkaSettings) -> None:
    """/readyz is open to probes: a registry URL with userinfo is shown without it."""
    dead_registry = kafka_settings.with_registry("http://bus:s3cret-registry-pw@127.0.0.1:1")
    with OpsServer(BusMonitor(), {"registry": registry_check(dead_registry, timeout_s=0.5)}) as server:
        answer = httpx.get(f"{server.url}/readyz")
    detail = answer.json()["checks"]["registry"]["detail"]
    assert answer.status_code == 503 and detail.startswith("http://127.0.0.1:1")
    assert "s3cret-registry-pw" not in answer.text and "bus:" not in answer.text
