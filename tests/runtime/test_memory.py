"""The native-memory housekeeping every ``bus`` process runs (bus.runtime.memory)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from bus.runtime import memory

pytestmark = pytest.mark.skipif(memory._glibc() is None, reason="glibc's malloc only")


def _run(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=environ, timeout=120, check=True)
    return done.stdout.strip()


def test_a_trim_hands_freed_memory_back_to_the_system() -> None:
    out = _run("""
        from bus.runtime import memory
        def rss():
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1]) // 1024
        held = [bytearray(1000) for _ in range(200_000)]   # about 200 MB in malloc's small chunks
        for _ in range(4):                                 # 15 in 16 freed, scattered: the heap cannot shrink
            del held[::2]
        before = rss()
        released = memory.trim()
        print(before, rss(), released)
    """)
    before, after, released = out.split()
    assert released == "True"
    assert int(after) < int(before) - 50, f"RSS {before} MB -> {after} MB after malloc_trim"


def test_arenas_are_capped_unless_the_operator_set_malloc_arena_max() -> None:
    code = "from bus.runtime import memory; print(memory.limit_arenas())"
    assert _run(code) == "True"
    assert _run(code, MALLOC_ARENA_MAX="4") == "False"


def test_trimming_runs_in_a_daemon_thread_that_stops_when_told() -> None:
    stop = memory.start_trimming(0.01)
    assert stop is not None
    trimmer = next(t for t in threading.enumerate() if t.name == "bus-malloc-trim")
    assert trimmer.daemon
    stop.set()
    trimmer.join(5)
    assert not trimmer.is_alive()
