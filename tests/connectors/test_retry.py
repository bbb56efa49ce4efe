"""Backoff and retry budget (pure logic, table-driven)."""

from __future__ import annotations

import asyncio
import random

import pytest

from bus.connectors.retry import Backoff, RetryPolicy, retry_async


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
