"""The process's native memory: fewer glibc malloc arenas, and freed pages handed back.

A bus process runs dozens of native threads (librdkafka's per client, the connectors', the
sinks' event loops). glibc gives threads up to 8 malloc arenas per core, and memory freed
in one arena is not reused by another, so a long run's resident memory creeps up although
Python's own objects stay flat (docs/performance.md, the soak's memory).
:func:`limit_arenas` caps the arenas at ``ARENAS`` unless ``MALLOC_ARENA_MAX`` is set (glibc
reads it itself); it must run before the process starts threads, so ``bus`` calls it first
thing. :func:`trim` returns free pages of every arena to the system; :func:`start_trimming`
does that every ``TRIM_INTERVAL_S`` from a daemon thread, as every ``bus`` command does. All
of it does nothing where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from functools import cache

#: Malloc arenas per process (glibc's default is 8 per core).
ARENAS = 2
#: Seconds between two trims; a trim takes milliseconds (docs/performance.md), so a few a
#: minute cost nothing noticeable.
TRIM_INTERVAL_S = 20.0
#: mallopt's parameter number for the arena cap (glibc's malloc.h).
_M_ARENA_MAX = -8


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # only glibc has it
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (unless ``MALLOC_ARENA_MAX`` is set); True if set."""
    libc = _glibc()
    if libc is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    return bool(libc.mallopt(_M_ARENA_MAX, arenas))


def trim() -> bool:
    """Hand free memory of every malloc arena back to the system; True if any was released."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def start_trimming(interval_s: float = TRIM_INTERVAL_S) -> threading.Event | None:
    """Trim every ``interval_s`` from a daemon thread until the returned event is set
    (None, and no thread, where the C library is not glibc)."""
    if _glibc() is None:
        return None
    stop = threading.Event()

    def keep_trimming() -> None:
        while not stop.wait(interval_s):
            trim()

    threading.Thread(target=keep_trimming, name="bus-malloc-trim", daemon=True).start()
    return stop
