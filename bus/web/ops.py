"""The ops endpoints: ``/healthz`` (alive), ``/readyz`` (inputs and outputs connected),
``/metrics`` (Prometheus exposition of the bus's monitor).

Bound to 127.0.0.1 by default. Bound anywhere else it refuses to start without a token
(``BUS_WEB_TOKEN``), and then every endpoint but the two probes needs
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bus.kafka.config import KafkaSettings, admin_config
from bus.ops.metrics import CONTENT_TYPE, BusMonitor
from bus.serving import ThreadedServer

log = structlog.get_logger(__name__)

Check = Callable[[], tuple[bool, str]]


def broker_check(settings: KafkaSettings, timeout_s: float = 2.0) -> Check:
    from confluent_kafka.admin import AdminClient

    client = AdminClient(admin_config(settings, client_id="bus-readyz"))

    def check() -> tuple[bool, str]:
        try:
            client.list_topics(timeout=timeout_s)
            return True, settings.bootstrap_servers
        except Exception as exc:  # any failure means "not ready", with the reason
            return False, f"{settings.bootstrap_servers}: {exc}"

    return check


def registry_check(settings: KafkaSettings, timeout_s: float = 2.0) -> Check:
    """The registry answers (with its basic auth when configured). ``/readyz`` is open to
    probes, so the detail never shows credentials: no userinfo, no error text echoing the URL."""
    parts = urlsplit(settings.registry_url)
    shown = urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    auth = None
    if settings.registry_username and settings.registry_password:
        auth = (settings.registry_username, settings.registry_password.get_secret_value())

    def check() -> tuple[bool, str]:
        try:
            httpx.get(f"{settings.registry_url.rstrip('/')}/subjects", timeout=timeout_s, auth=auth).raise_for_status()
            return True, shown
        except httpx.HTTPStatusError as exc:
            return False, f"{shown}: answered {exc.response.status_code}"
        except httpx.HTTPError as exc:
            return False, f"{shown}: {type(exc).__name__}"

    return check


def create_ops_app(monitor: BusMonitor, checks: dict[str, Check], token: str | None = None) -> Starlette:
    def authorised(request: Request) -> bool:
        if token is None:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(request: Request) -> Response:
        results = {name: check() for name, check in checks.items()}
        ready = all(ok for ok, _ in results.values())
        body = {"ready": ready, "checks": {n: {"ok": ok, "detail": d} for n, (ok, d) in results.items()}}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics(request: Request) -> Response:
        if not authorised(request):
            return JSONResponse({"error": "send Authorization: Bearer <BUS_WEB_TOKEN>"}, status_code=401)
        return Response(monitor.render(), media_type=CONTENT_TYPE)

    return Starlette(routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)])


@dataclass
class OpsServer:
    """The ops endpoints served from a background thread (part of ``bus up``)."""

    monitor: BusMonitor
    checks: dict[str, Check]
    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None

    def __post_init__(self) -> None:
        self._serving = ThreadedServer(create_ops_app(self.monitor, self.checks, self.token), host=self.host,
                                       port=self.port, what="ops endpoints", token=self.token)

    @property
    def url(self) -> str:
        return self._serving.url

    def start(self, timeout_s: float = 10.0) -> "OpsServer":
        self._serving.start(timeout_s)
        self.port = self._serving.port
        log.info("ops endpoints serving", url=self.url, token_required=self.token is not None)
        return self

    def stop(self) -> None:
        self._serving.stop()

    def __enter__(self) -> "OpsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
