"""Client-side helpers for any Confluent-compatible registry (embedded or not)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.kafka.config import KafkaSettings, registry_client_config
from bus.registry.exceptions import RegistryUnreachable

T = TypeVar("T")

# confluent-kafka's client uses httpx2 when it is installed, else httpx: catch either.
_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError,)
try:
    import httpx2

    _TRANSPORT_ERRORS += (httpx2.TransportError,)
except ImportError:  # pragma: no cover - depends on what confluent-kafka pulled in
    pass


def registry_client(settings: KafkaSettings) -> SchemaRegistryClient:
    """confluent-kafka's client, configured from the bus settings."""
    return SchemaRegistryClient(registry_client_config(settings))


def registry_call(client: SchemaRegistryClient, call: Callable[[], T]) -> T:
    """``call()``, with a registry that cannot be reached reported as RegistryUnreachable.

    The registry's own answers (``SchemaRegistryError``: not found, incompatible...) pass
    through unchanged; only transport failures (refused, timed out, DNS) are translated.
    """
    try:
        return call()
    except _TRANSPORT_ERRORS as exc:
        url = str(client.config().get("url", "?"))
        raise RegistryUnreachable(url, None, _describe(exc)) from exc


def wait_for_registry(settings: KafkaSettings, timeout_s: float | None = None) -> None:
    """Return once the registry at ``settings.registry_url`` answers HTTP, or raise
    RegistryUnreachable after ``timeout_s`` (default: ``settings.connect_timeout_s``)."""
    timeout = settings.connect_timeout_s if timeout_s is None else timeout_s
    url = settings.registry_url.rstrip("/")
    deadline = time.monotonic() + timeout
    last = "no answer"
    with httpx.Client() as http:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RegistryUnreachable(url, timeout, last)
            try:
                http.get(f"{url}/config", timeout=min(2.0, max(0.1, left)))
                return  # any HTTP answer, even 401, means a registry is there
            except httpx.TransportError as exc:
                last = _describe(exc)
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def _describe(exc: Exception) -> str:
    kind = type(exc).__name__
    if kind == "ConnectError":
        return f"cannot connect ({exc})" if str(exc) else "cannot connect"
    if "Timeout" in kind:
        return "timed out"
    return str(exc) or kind
