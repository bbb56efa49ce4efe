"""The supervisor starts a part again when it dies, backs off when it keeps dying, and
leaves it dead when asked to stop."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from bus.runtime.supervisor import PartSpec, Supervisor
from tests.connectors.support import wait_until

SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(600)"]
CRASHER = [sys.executable, "-c", "import sys; print('dying', flush=True); sys.exit(3)"]


def _spec(tmp_path: Path, name: str, argv: list[str]) -> PartSpec:
    return PartSpec(name, argv, dict(os.environ), tmp_path / f"{name}.log")


def test_a_killed_part_is_started_again_and_stop_leaves_it_stopped(tmp_path: Path) -> None:
    lines: list[str] = []
    supervisor = Supervisor([_spec(tmp_path, "worker", SLEEPER)], say=lines.append, backoff_min_s=0.1)
    with supervisor:
        log = tmp_path / "worker.log"
        first = wait_until(lambda: "up" in log.read_text() and supervisor.pid("worker"), 10, "the part to start")
        os.kill(first, signal.SIGKILL)
        second = wait_until(lambda: log.read_text().count("up") == 2 and supervisor.pid("worker"),
                            10, "the part to be started again")
        assert second != first
        assert supervisor.restarts("worker") == 1
        assert supervisor.exits("worker") == [-signal.SIGKILL]
        assert supervisor.describe("worker") == "running (1 restarts)"
    with pytest.raises(ProcessLookupError):
        os.kill(second, 0)  # stopped with the supervisor, and not started again
    assert supervisor.pid("worker") is None and supervisor.restarts("worker") == 1
    assert any("killed by SIGKILL" in line and "worker.log" in line for line in lines), lines


def test_a_part_that_keeps_dying_backs_off_and_the_others_keep_running(tmp_path: Path) -> None:
    lines: list[str] = []
    parts = [_spec(tmp_path, "crasher", CRASHER), _spec(tmp_path, "steady", SLEEPER)]
    supervisor = Supervisor(parts, say=lines.append, backoff_min_s=0.05, backoff_max_s=0.4, stable_after_s=60)
    with supervisor:
        steady = wait_until(lambda: supervisor.pid("steady"), 10, "the steady part to start")
        wait_until(lambda: supervisor.restarts("crasher") >= 5, 20, "five restarts of the crashing part")
        assert supervisor.pid("steady") == steady  # never touched
        assert set(supervisor.exits("crasher")) == {3}
    waits = [float(line.split("again in ")[1].split(" s")[0]) for line in lines if "again in" in line]
    assert waits[:4] == [0.05, 0.1, 0.2, 0.4] and max(waits) == 0.4, waits


def test_part_names_must_be_unique(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor([_spec(tmp_path, "a", SLEEPER), _spec(tmp_path, "a", SLEEPER)])


@pytest.mark.integration
def test_parts_and_the_broker_are_out_of_reach_of_the_terminals_ctrl_c(tmp_path: Path) -> None:
    """Ctrl-C signals the terminal's whole foreground process group. The parts and the
    embedded broker have sessions of their own, so only `bus up` gets it and stops them in
    order (before, the broker died at once under parts still flushing to it)."""
    from bus.kafka.broker import EmbeddedBroker

    with Supervisor([_spec(tmp_path, "worker", SLEEPER)]) as supervisor, EmbeddedBroker() as broker:
        pid = wait_until(lambda: supervisor.pid("worker"), 10, "the part to start")
        assert broker.pid is not None
        for child in (pid, broker.pid):
            assert os.getpgid(child) != os.getpgid(0) and os.getsid(child) == child
