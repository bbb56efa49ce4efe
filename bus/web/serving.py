"""Serving ASGI apps with uvicorn on a socket bound up front (shared by the registry and the
ops endpoints)."""

from __future__ import annotations

import ipaddress
import socket
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
