"""Backoff and retry budget (pure logic, table-driven)."""

from __future__ import annotations

import asyncio
import random

import pytest

from bus.retry import Backoff, Restarts, RetryPolicy, retry_async, retry_call


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(1, 0.24, 0.36), (2, 0.48, 0.72), (3, 0.96, 1.44), (5, 3.84, 5.76), (12, 60.0, 60.0), (200, 60.0, 60.0)],
)
def test_delays_start_near_300_ms_double_and_are_capped(attempt: int, low: float, high: float) -> None:
    rng = random.Random(attempt)
    delays = [Backoff(max_s=60.0).delay(attempt, rng) for _ in range(200)]
    assert all(low <= d <= high for d in delays)


def test_jitter_spreads_the_delays() -> None:
    assert len({round(Backoff().delay(1), 6) for _ in range(50)}) > 10


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("timeout_ms", "elapsed_s", "retries"),
    [(0, 0.0, False), (1000, 0.5, True), (1000, 1.5, False), (-1, 10**6, True)],
    ids=["0 = never", "within budget", "budget spent", "-1 = forever"],
)
def test_the_retry_budget_is_kafka_connects(timeout_ms: int, elapsed_s: float, retries: bool) -> None:
    clock = Clock()
    state = RetryPolicy.from_kafka_connect(timeout_ms, 60_000).start(clock)
    clock.now = elapsed_s
    assert (state.next_delay() is not None) is retries


def test_a_delay_never_runs_past_the_budget() -> None:
    clock = Clock()
    state = RetryPolicy(Backoff(first_s=10.0), timeout_s=1.0).start(clock)
    clock.now = 0.75
    assert state.next_delay() == pytest.approx(0.25)


def test_retry_async_retries_what_is_retriable_and_honours_a_longer_hint() -> None:
    attempts: list[int] = []
    waits: list[float] = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise TimeoutError("slow")
        return "done"

    policy = RetryPolicy(Backoff(first_s=0.001, max_s=0.01), timeout_s=5)
    result = asyncio.run(retry_async(flaky, policy, retriable=lambda e: isinstance(e, TimeoutError),
                                     hint=lambda e: 0.005, on_retry=lambda e, d: waits.append(d)))
    assert result == "done" and len(attempts) == 3
    assert all(w >= 0.005 for w in waits)

    async def broken() -> None:
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        asyncio.run(retry_async(broken, policy, retriable=lambda e: isinstance(e, TimeoutError)))


def test_retry_call_repeats_only_what_is_retriable_and_at_most_attempts_times() -> None:
    calls: list[int] = []
    retried: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TimeoutError("not yet")
        return "done"

    assert retry_call(flaky, attempts=5, retriable=lambda e: isinstance(e, TimeoutError),
                      on_retry=lambda e, n: retried.append(n)) == "done"
    assert len(calls) == 3 and retried == [1, 2]

    calls.clear()
    with pytest.raises(TimeoutError):
        retry_call(flaky, attempts=2, retriable=lambda e: True)
    assert len(calls) == 2

    def wrong() -> None:
        calls.append(1)
        raise ValueError("not retriable")

    calls.clear()
    with pytest.raises(ValueError):
        retry_call(wrong, attempts=5, retriable=lambda e: isinstance(e, TimeoutError))
    assert len(calls) == 1


def test_restarts_double_while_failing_fast_and_start_over_after_a_stable_run() -> None:
    restarts = Restarts(min_s=0.5, max_s=3.0, stable_after_s=60.0)
    assert [restarts.after_failure(1.0) for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert restarts.after_failure(61.0) == 0.5  # it ran a minute: the wait starts over
    assert restarts.after_failure(0.1) == 1.0
    assert restarts.count == 7
