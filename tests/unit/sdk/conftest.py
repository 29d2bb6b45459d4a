"""Fixtures for the SDK plumbing tests: a fake clock that sleeps instantly, and a retry policy
that waits on it, so no test sleeps for real."""

from __future__ import annotations

import asyncio

import pytest
import tenacity

from customer_sync.sdk.retry import retry_policy


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)  # let other tasks run, as a real sleep would


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def fast_retry(clock: FakeClock) -> tenacity.AsyncRetrying:
    """The real policy with jitter pinned to the ceiling and sleeps on the fake clock."""
    return retry_policy(sleep=clock.sleep, uniform=lambda low, high: high)
