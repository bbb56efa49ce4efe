"""Running the registry: foreground (`bus registry`), background thread, port conflicts."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import httpx
import pytest

from bus.kafka.admin import delete_topics
from bus.kafka.broker import free_port
from bus.kafka.config import KafkaSettings
from bus.registry.exceptions import RegistryStartError
from bus.registry.server import EmbeddedRegistry, address_from_url

ROOT = Path(__file__).resolve().parents[2]

FOREGROUND = textwrap.dedent(
    """
    import sys
    from bus.kafka.config import KafkaSettings
    from bus.registry.server import serve_forever

    settings = KafkaSettings(registry_url=sys.argv[2]).with_broker(sys.argv[1], embedded=True)
    serve_forever(settings, topic=sys.argv[3])
    """
)


def wait_answering(url: str, timeout_s: float) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(f"{url}/config", timeout=1.0)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_serve_forever_serves_at_the_settings_url_and_stops_on_ctrl_c(kafka_settings: KafkaSettings) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    topic = f"_bus_schemas-test-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(
        [sys.executable, "-c", FOREGROUND, kafka_settings.bootstrap_servers, url, topic], cwd=ROOT
    )
    try:
        assert wait_answering(url, 30).json() == {"compatibilityLevel": "BACKWARD"}
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        delete_topics(kafka_settings, [topic])


def test_port_in_use_is_a_clear_error(registry_settings: KafkaSettings, kafka_settings: KafkaSettings) -> None:
    host, port = address_from_url(registry_settings.registry_url)
    registry = EmbeddedRegistry(kafka_settings, host=host, port=port)
    with pytest.raises(RegistryStartError, match=f"cannot listen on {host}:{port}"):
        registry.start(timeout_s=10)


def test_context_manager_starts_and_stops(kafka_settings: KafkaSettings) -> None:
    topic = f"_bus_schemas-test-{uuid.uuid4().hex[:8]}"
    with EmbeddedRegistry(kafka_settings, topic=topic) as registry:
        assert registry.url.startswith("http://127.0.0.1:")
        assert httpx.get(f"{registry.url}/subjects").json() == []
        url = registry.url
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/subjects", timeout=1.0)
    delete_topics(kafka_settings, [topic])


def test_address_from_url() -> None:
    assert address_from_url("http://127.0.0.1:8081") == ("127.0.0.1", 8081)
    assert address_from_url("https://registry.city.local") == ("registry.city.local", 443)
