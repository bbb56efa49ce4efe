"""The bus's one way to try again: an operation retried with backoff (:func:`retry_async`,
:func:`retry_call`) and a part restarted after it failed (:class:`Restarts`).

Retries of one operation follow Kafka Connect's schedule: the first delay is about 300 ms, each next one
doubles, none exceeds ``errors.retry.delay.max.ms``, and retrying stops once
``errors.retry.timeout`` has passed since the first failure (0 = never retry,
-1 = retry forever). Jitter (+-20 %) keeps many failing tasks from retrying in step.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")

FIRST_DELAY_S = 0.3
JITTER = 0.2


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number ``attempt`` (1-based): ``first_s * 2**(attempt-1)``,
    +-``jitter``, capped at ``max_s``."""

    first_s: float = FIRST_DELAY_S
    max_s: float = 60.0
    jitter: float = JITTER

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        base = self.first_s * 2 ** min(max(attempt - 1, 0), 32)
        spread = 1 + (rng or random).uniform(-self.jitter, self.jitter)
        return max(0.0, min(self.max_s, base * spread))


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often to retry one failing operation."""

    backoff: Backoff = field(default_factory=Backoff)
    #: Seconds of retrying allowed after the first failure; None = forever, 0 = never.
    timeout_s: float | None = 300.0

    @classmethod
    def from_kafka_connect(cls, retry_timeout_ms: int, delay_max_ms: int) -> "RetryPolicy":
        timeout = None if retry_timeout_ms < 0 else retry_timeout_ms / 1000
        return cls(Backoff(max_s=delay_max_ms / 1000), timeout)

    def start(self, clock: Callable[[], float] = time.monotonic) -> "RetryState":
        return RetryState(self, clock)


class RetryState:
    """The retries of one operation: ``next_delay()`` until it says the budget is spent."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.attempts = 0
        self._clock = clock
        self._started = clock()

    def next_delay(self) -> float | None:
        """The wait before the next attempt, or None when no retry is left."""
        timeout = self.policy.timeout_s
        if timeout is not None and timeout <= 0:
            return None
        self.attempts += 1
        delay = self.policy.backoff.delay(self.attempts)
        if timeout is not None:
            left = self._started + timeout - self._clock()
            if left <= 0:
                return None
            delay = min(delay, left)
        return delay


async def retry_async(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    retriable: Callable[[BaseException], bool],
    hint: Callable[[BaseException], float | None] | None = None,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """``await operation()`` until it succeeds, retrying the exceptions ``retriable``
    accepts with backoff; the last exception propagates when the budget is spent.
    ``hint`` may lengthen a wait (a peer's Retry-After), never shorten it."""
    state = policy.start()
    while True:
        try:
            return await operation()
        except Exception as exc:
            if not retriable(exc):
                raise
            delay = state.next_delay()
            if delay is None:
                raise
            wanted = hint(exc) if hint is not None else None
            if wanted is not None:
                delay = max(delay, min(wanted, state.policy.backoff.max_s))
            if on_retry is not None:
                on_retry(exc, delay)
            await asyncio.sleep(delay)


def retry_call(
    operation: Callable[[], T],
    *,
    attempts: int,
    retriable: Callable[[Exception], bool],
    on_retry: Callable[[Exception, int], None] | None = None,
) -> T:
    """``operation()`` up to ``attempts`` times, at once again while ``retriable`` accepts the
    exception (for a client that waits itself, as librdkafka's transactional calls do); the
    last exception propagates."""
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except Exception as exc:
            if attempt == attempts or not retriable(exc):
                raise
            if on_retry is not None:
                on_retry(exc, attempt)
    raise AssertionError("unreachable: attempts must be at least 1")


@dataclass
class Restarts:
    """The waits before starting again a part that keeps failing (a process, a thread): from
    ``min_s``, doubling to ``max_s`` while each run fails within ``stable_after_s``; a run that
    lasted longer starts the wait over. ``count`` is the number of restarts so far."""

    min_s: float = 0.5
    max_s: float = 15.0
    stable_after_s: float = 60.0
    count: int = 0
    last_s: float = 0.0  # the last wait (0: none yet)

    def after_failure(self, ran_s: float) -> float:
        """The wait before the next start, for a run that failed after ``ran_s`` seconds."""
        self.count += 1
        stable = ran_s >= self.stable_after_s
        self.last_s = self.min_s if stable or not self.last_s else min(self.max_s, self.last_s * 2)
        return self.last_s
