"""What every simulator shares: threads started and stopped together, counters for the
`bus up` status line, a seeded random generator, and pacing at a rate.

A simulator stands for a department's system. Its loops run on daemon threads; an
exception in a loop is counted and logged (``last_error`` in :meth:`Simulator.stats`) and
the loop goes on after a short pause, as a real system keeps retrying its peer.
"""

from __future__ import annotations

import collections
import datetime as dt
import random
import socket
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import structlog

CHINA = dt.timezone(dt.timedelta(hours=8))

log = structlog.get_logger("bus.demo.simulators")


class QuietHTTPServer(ThreadingHTTPServer):
    """A departments' system on loopback: a client that hung up (a connector stopping, a
    connection dropped) is normal here and not worth a traceback on the terminal."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class JsonHandler(BaseHTTPRequestHandler):
    """A request handler of a departments' system: HTTP/1.1, JSON answers, no access log."""

    protocol_version = "HTTP/1.1"
    #: The status line and headers go out in one write and the body in another; with Nagle's
    #: algorithm the body would wait for the client's delayed ACK (40 ms on Linux), about 23
    #: requests/s per keep-alive connection at most (docs/connectors.md).
    disable_nagle_algorithm = True

    def reply(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


def now_iso() -> str:
    """The current time as the departments' systems write it: RFC 3339, milliseconds, UTC+8."""
    return dt.datetime.now(CHINA).isoformat(timespec="milliseconds")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, for a server that binds it later (a connector)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Pacer:
    """Spreads ``rate`` events per second over time: :meth:`due` says how many are due
    since the last call (fractions carry over), so a loop waking every tick sends an even
    flow whatever its tick. At most one second's worth is due at once: events that fell
    due while the loop was held up (its peer away) are not made up in a flood."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._last = time.monotonic()
        self._carry = 0.0

    def due(self) -> int:
        now = time.monotonic()
        self._carry = min(self._carry + (now - self._last) * self.rate, max(1.0, self.rate))
        self._last = now
        whole = int(self._carry)
        self._carry -= whole
        return whole


class Simulator:
    """Base of the simulators: ``start()`` opens the simulator (servers, connections) and
    starts its loops; ``stop()`` ends them and closes; ``stats()`` returns its counters."""

    name = "simulator"
    #: Seconds a loop waits after an unexpected error before going on.
    error_pause_s = 1.0

    def __init__(self, *, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counts: collections.Counter[str] = collections.Counter()
        self._counts_lock = threading.Lock()
        self.last_error: str | None = None
        self.started = False

    # -- counters --------------------------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        with self._counts_lock:
            self._counts[name] += n

    def counted(self, name: str) -> int:
        with self._counts_lock:
            return self._counts[name]

    def stats(self) -> dict[str, Any]:
        """Counters (events sent, accepted, retried...) and the last error, if any."""
        with self._counts_lock:
            out: dict[str, Any] = dict(sorted(self._counts.items()))
        if self.last_error is not None:
            out["last_error"] = self.last_error
        return out

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Acquire what the loops need (servers, connections); raises SimulatorError."""

    def close(self) -> None:
        """Release what :meth:`open` acquired."""

    def loops(self) -> list[Callable[[], None]]:
        """The loops to run on threads of their own; each returns when ``stopping`` is set."""
        return []

    def start(self) -> Self:
        if self.started:
            return self
        self.stopping.clear()
        self.open()
        self.started = True
        for loop in self.loops():
            thread = threading.Thread(target=self._guarded, args=(loop,), daemon=True,
                                      name=f"bus-demo-{self.name}-{loop.__name__.strip('_')}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the loops and close. Safe to call twice."""
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = []
        if self.started:
            self.started = False
            self.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _guarded(self, loop: Callable[[], None]) -> None:
        while not self.stopping.is_set():
            try:
                loop()
                return
            except Exception as exc:  # a simulator keeps going, as the real system retries
                self.note_error(exc)
                self.stopping.wait(self.error_pause_s)

    def note_error(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        self.count("errors")
        log.warning("simulator error", simulator=self.name, error=self.last_error)
