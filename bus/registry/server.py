"""Running the embedded registry: in a background thread (``bus up``, tests) or in the
foreground (``bus registry``), with uvicorn, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import structlog
import uvicorn

from bus.kafka.config import KafkaSettings
from bus.registry.app import create_app
from bus.registry.exceptions import RegistryStartError
from bus.registry.store import DEFAULT_TOPIC, SchemaStore
from bus.serving import bind, uvicorn_config

log = structlog.get_logger(__name__)

DEFAULT_HOST = "127.0.0.1"


def _bind(host: str, port: int) -> socket.socket:
    return bind(host, port, what="schema registry", error=RegistryStartError)


def _uvicorn_config(store: SchemaStore) -> uvicorn.Config:
    return uvicorn_config(create_app(store))


class EmbeddedRegistry:
    """The registry served from a background thread.

    ``start()`` creates the storage topic if needed, rebuilds the index from it, serves
    HTTP and returns once a request is answered. Use one per storage topic: the store
    is the topic's only writer.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        topic: str = DEFAULT_TOPIC,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port or 0
        self.topic = topic
        self.store = SchemaStore(settings, topic)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, timeout_s: float = 30.0) -> "EmbeddedRegistry":
        if self._thread is not None:
            return self
        deadline = time.monotonic() + timeout_s
        self._socket = _bind(self.host, self.port)  # a taken port fails before Kafka is touched
        self.port = self._socket.getsockname()[1]
        try:
            self.store.open(timeout_s)
            self._server = uvicorn.Server(_uvicorn_config(self.store))
            self._thread = threading.Thread(
                target=self._server.run, kwargs={"sockets": [self._socket]}, name="bus-registry", daemon=True
            )
            self._thread.start()
            self._wait_answering(deadline, timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("schema registry started", url=self.url, topic=self.topic)
        return self

    def _wait_answering(self, deadline: float, timeout_s: float) -> None:
        with httpx.Client(timeout=1.0) as client:
            while time.monotonic() < deadline:
                if self._thread is None or not self._thread.is_alive():
                    raise RegistryStartError(f"the schema registry stopped while starting on {self.url}")
                if self._server is not None and self._server.started:
                    try:
                        if client.get(f"{self.url}/").status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                time.sleep(0.02)
        raise RegistryStartError(f"the schema registry did not answer on {self.url} within {timeout_s:g} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and close the store. Safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout_s)
            log.info("schema registry stopped", url=self.url)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        self.store.close()

    def __enter__(self) -> "EmbeddedRegistry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def address_from_url(url: str) -> tuple[str, int]:
    """``http://127.0.0.1:8081`` -> ("127.0.0.1", 8081) (port 80/443 by scheme if absent)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or DEFAULT_HOST, port


def serve_forever(
    settings: KafkaSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    topic: str = DEFAULT_TOPIC,
    timeout_s: float = 30.0,
) -> None:
    """``bus registry``: serve in the foreground until interrupted (Ctrl-C, SIGTERM).

    Host and port default to those of ``settings.registry_url`` (127.0.0.1:8081), so
    clients with the same settings find it.
    """
    default_host, default_port = address_from_url(settings.registry_url)
    host = host or default_host
    port = default_port if port is None else port
    sock = _bind(host, port)
    try:
        store = SchemaStore(settings, topic).open(timeout_s)
    except BaseException:
        sock.close()
        raise
    try:
        log.info("schema registry serving", host=host, port=sock.getsockname()[1], topic=topic)
        uvicorn.Server(_uvicorn_config(store)).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn shut down gracefully, then re-raised the Ctrl-C it caught
    finally:
        sock.close()
        store.close()
        log.info("schema registry stopped", host=host, port=port)
