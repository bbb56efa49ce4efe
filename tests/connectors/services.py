"""Real services the connector tests use: PostgreSQL (a database of its own per test) and
a loopback TCP proxy that can cut a service off and bring it back (the peer stays real).

``BUS_TEST_POSTGRES_DSN`` points the tests at another PostgreSQL server (default
``host=127.0.0.1 port=5432 user=postgres dbname=postgres``: CI's, trust auth); the user
must be allowed to create databases. ``BUS_TEST_MQTT`` (``host:port``, default
``127.0.0.1:1883``) does the same for the MQTT broker.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

DEFAULT_POSTGRES_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def postgres_admin_dsn() -> str:
    return os.environ.get("BUS_TEST_POSTGRES_DSN") or DEFAULT_POSTGRES_DSN


def mqtt_address() -> tuple[str, int]:
    host, _, port = (os.environ.get("BUS_TEST_MQTT") or "127.0.0.1:1883").rpartition(":")
    return host or "127.0.0.1", int(port)


@dataclass
class Database:
    name: str
    dsn: str

    def connect(self):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True)

    def execute(self, statement: str) -> None:
        with self.connect() as conn:
            conn.execute(statement)

    def query(self, statement: str, params: tuple = ()) -> list[tuple]:
        with self.connect() as conn:
            return conn.execute(statement, params).fetchall()


@pytest.fixture
def database() -> Iterator[Database]:
    """A fresh database on the test PostgreSQL server, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    from psycopg.conninfo import make_conninfo

    admin = postgres_admin_dsn()
    name = f"bus_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL for the tests is not reachable ({exc}); set BUS_TEST_POSTGRES_DSN")
    yield Database(name, make_conninfo(admin, dbname=name))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target``; ``cut()`` drops every connection and
    refuses new ones, ``restore()`` accepts again on the same port."""

    target: tuple[str, int]
    port: int = 0
    _listener: socket.socket | None = None
    _sockets: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> "TcpProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.start()

    def stop(self) -> None:
        self.cut()
