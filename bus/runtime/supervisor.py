"""Child processes that come back by themselves: a part of the bus that dies (a crash, an
out-of-memory kill, a SIGKILL) is started again after a short back-off, and the rest of
the bus never notices more than a pause.

Restarting is safe because every part resumes from what the broker holds: the router from
its transactional offsets, the processors from their committed offsets and changelogs, a
sink connector from its committed position (deliveries carry idempotency keys). The
supervisor holds no state of its own beyond counting restarts.

The back-off doubles from ``backoff_min_s`` to ``backoff_max_s`` while a part keeps dying
soon after starting, and starts over once the part has stayed up for ``stable_after_s``.
Children die with their supervisor (PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from bus.kafka.broker import set_parent_death_signal
from bus.retry import Restarts

log = structlog.get_logger(__name__)

Say = Callable[[str], None]


@dataclass(frozen=True)
class PartSpec:
    """How to run one part: its command line, environment and log file."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    cwd: Path | None = None


@dataclass
class _Part:
    spec: PartSpec
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    waits: Restarts = field(default_factory=Restarts)  # the waits before its restarts
    due_at: float | None = None  # when a dead part is started again
    exits: list[int] = field(default_factory=list)


class Supervisor:
    """Runs parts as child processes and restarts any that exits while not being stopped.

    ``say`` receives one line per exit and restart (what happened, the exit status, the
    log file to read)."""

    def __init__(
        self,
        parts: Sequence[PartSpec],
        *,
        say: Say | None = None,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 15.0,
        stable_after_s: float = 60.0,
        check_every_s: float = 0.2,
    ) -> None:
        names = [p.name for p in parts]
        if len(set(names)) != len(names):
            raise ValueError(f"part names must be unique, got {names}")
        self._parts = {p.name: _Part(p, waits=Restarts(backoff_min_s, backoff_max_s, stable_after_s)) for p in parts}
        self._say = say or (lambda line: log.info(line))
        self._check_every_s = check_every_s
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "Supervisor":
        with self._lock:
            for part in self._parts.values():
                self._launch(part)
        self._thread = threading.Thread(target=self._watch, name="bus-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every part, wait for them (SIGKILL after ``timeout_s``); no restarts."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            running = [p.process for p in self._parts.values() if p.process is not None and p.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    def __enter__(self) -> "Supervisor":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- what tests and status lines ask ----------------------------------------------------

    def pid(self, name: str) -> int | None:
        """The running process of a part, or None while it is down."""
        with self._lock:
            process = self._parts[name].process
            return process.pid if process is not None and process.poll() is None else None

    def restarts(self, name: str) -> int:
        with self._lock:
            return self._parts[name].restarts

    def alive(self, name: str) -> bool:
        return self.pid(name) is not None

    def log_path(self, name: str) -> Path:
        return self._parts[name].spec.log_path

    def exits(self, name: str) -> list[int]:
        """Exit statuses seen so far (negative: killed by that signal)."""
        with self._lock:
            return list(self._parts[name].exits)

    def describe(self, name: str) -> str:
        """``running`` or ``restarting (exit -9, 3 restarts; see LOG)``."""
        with self._lock:
            part = self._parts[name]
            if part.process is not None and part.process.poll() is None:
                return "running" + (f" ({part.restarts} restarts)" if part.restarts else "")
            last = part.exits[-1] if part.exits else None
        return f"restarting (exit {last}, {part.restarts} restarts; see {part.spec.log_path})"

    # -- the watch ---------------------------------------------------------------------------

    def _launch(self, part: _Part) -> None:
        spec = part.spec
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as log_file:
            part.process = subprocess.Popen(
                list(spec.argv), env=dict(spec.env), cwd=spec.cwd, stdout=log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, preexec_fn=set_parent_death_signal,
                # Its own session: Ctrl-C in a terminal must reach only the supervisor's process,
                # which stops the parts in order (a part dying of the terminal's SIGINT would
                # look like a crash and be started again).
                start_new_session=True,
            )
        part.started_at = time.monotonic()
        part.due_at = None

    def _watch(self) -> None:
        while not self._stopping.wait(self._check_every_s):
            with self._lock:
                for part in self._parts.values():
                    self._check(part)

    def _check(self, part: _Part) -> None:
        now = time.monotonic()
        if part.due_at is not None:
            if now >= part.due_at and not self._stopping.is_set():
                self._launch(part)
                part.restarts += 1
                self._say(f"{part.spec.name}: started again (restart {part.restarts}, pid {part.process.pid})")
            return
        code = part.process.poll() if part.process is not None else None
        if code is None:
            return
        part.exits.append(code)
        wait = part.waits.after_failure(now - part.started_at)
        part.due_at = now + wait
        self._say(f"{part.spec.name}: exited ({_exit_text(code)}); starting it again in {wait:g} s "
                  f"(log: {part.spec.log_path})")


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def bus_command(*args: str) -> list[str]:
    """The argv of a ``bus`` subcommand run with this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "bus", *args]


def child_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment plus ``extra`` (the settings the children must share)."""
    return {**os.environ, **(extra or {})}
