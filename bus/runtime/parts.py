"""The parts `bus up` runs beside the router: the connectors of the topology (threads of
this process) and the stateful processors (a child process: faust owns its event loop
and signal handlers, which do not share a process with the rest of the bus).

A connector that cannot start (its secret is not set) is reported and left out; the rest
of the bus keeps serving, and `bus connector status` and the ops endpoints show what is
missing. The processors' process is supervised: when it dies it is started again after a
short back-off (:mod:`bus.runtime.supervisor`), and the status line says so.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bus.connect.runner import ConnectorRunner
from bus.errors import BusError
from bus.kafka.config import KafkaSettings
from bus.ops.metrics import BusMonitor
from bus.runtime.supervisor import PartSpec, Supervisor, bus_command, child_environ
from bus.topology.models import Topology

Say = Callable[[str], None]


@dataclass
class Connectors:
    """The connectors `bus up` started, and those it could not start (name -> why)."""

    running: dict[str, ConnectorRunner] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def states(self) -> dict[str, str]:
        states = {name: runner.state for name, runner in self.running.items()}
        states.update({name: "failed" for name in self.failed})
        return states


@contextlib.contextmanager
def running_connectors(
    topology: Topology,
    settings: KafkaSettings,
    monitor: BusMonitor,
    say: Say,
    *,
    only: list[str] | None = None,
    start_timeout_s: float = 30.0,
) -> Iterator[Connectors]:
    """Start the topology's connectors (or ``only`` those), sources last so that every sink
    is consuming before new records arrive; stop them all, sources first, at the end."""
    chosen = [c for c in topology.connectors if only is None or c.name in only]
    chosen.sort(key=lambda c: c.side == "source")
    connectors = Connectors()
    try:
        for connector in chosen:
            runner = ConnectorRunner(connector, topology, settings, metrics=monitor)
            try:
                runner.start(start_timeout_s)
            except BusError as exc:
                connectors.failed[connector.name] = str(exc)
                say(f"connector: {connector.name} ({connector.type}) NOT started: {exc}")
                continue
            connectors.running[connector.name] = runner
            detail = runner.status().detail
            where = detail.get("url") or detail.get("topic") or ""
            say(f"connector: {connector.name} ({connector.type}, {connector.side}) running"
                + (f" on {where}" if where else ""))
        yield connectors
    finally:
        for name in sorted(connectors.running, key=lambda n: connectors.running[n].connector.side != "source"):
            connectors.running[name].stop()


@dataclass
class Processors:
    """The processors' child process (supervised: started again when it dies) and its log."""

    supervisor: Supervisor

    NAME = "processors"

    @property
    def alive(self) -> bool:
        return self.supervisor.alive(self.NAME)

    @property
    def log_path(self) -> Path:
        return self.supervisor.log_path(self.NAME)

    def describe(self) -> str:
        return self.supervisor.describe(self.NAME)

    def tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@contextlib.contextmanager
def running_processors(
    topology_path: Path, settings: KafkaSettings, say: Say, *, log_dir: Path | None = None
) -> Iterator[Processors]:
    """``bus process`` as a supervised child process on the same broker and registry; it is
    started again when it dies, and dies with us."""
    folder = log_dir or Path(tempfile.gettempdir())
    env = child_environ({**settings.to_environ(), "BUS_LOG_LEVEL": os.environ.get("BUS_LOG_LEVEL", "INFO")})
    spec = PartSpec(Processors.NAME, bus_command("process", "--topology", str(topology_path)), env,
                    folder / f"bus-processors-{os.getpid()}.log")
    with Supervisor([spec], say=say) as supervisor:
        processors = Processors(supervisor)
        say(f"processors: started (pid {supervisor.pid(Processors.NAME)}; log {spec.log_path}); "
            "restarted if they die")
        yield processors
