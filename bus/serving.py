"""Serving ASGI apps with uvicorn on a socket bound up front (shared by the registry and the
ops endpoints)."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

import uvicorn

from bus.errors import BusError


class ServeError(BusError):
    """An HTTP surface cannot listen where it was asked to."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int, *, what: str, error: type[BusError] = ServeError) -> socket.socket:
    """A listening-ready socket, so the port is ours before uvicorn starts (no race)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted sockets only when the proto
    # says TCP; without it every answer waits ~40 ms on Nagle and delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise error(
            f"the {what} cannot listen on {host}:{port}: {exc.strerror or exc}; stop what "
            "listens there or choose another port"
        ) from exc
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: Any) -> uvicorn.Config:
    # log_config=None: the bus configures logging (structlog); uvicorn must not replace it.
    return uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="off",
        log_level="warning",
        timeout_graceful_shutdown=2,
    )


class ThreadedServer:
    """An ASGI app served by uvicorn from a background thread, on a socket bound up front;
    loopback only unless a token protects it (the ops endpoints, the page)."""

    def __init__(self, app: Any, *, host: str, port: int, what: str, token: str | None) -> None:
        if not is_loopback(host) and not token:
            raise ServeError(f"refusing to serve the {what} on {host} without a token: set BUS_WEB_TOKEN, "
                             "or bind to 127.0.0.1")
        self.app = app
        self.host = host
        self.port = port
        self.what = what
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout_s: float = 10.0) -> None:
        sock = bind(self.host, self.port, what=self.what)
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn_config(self.app))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"bus-web-{self.what}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise ServeError(f"the {self.what} did not start on {self.url} within {timeout_s:g} s")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None
