"""A sleep for connector tests that moves a manual clock instead of waiting."""

from __future__ import annotations

import asyncio

from customer_sync.sandbox._common import ManualClock

__all__ = ["FakeSleep"]


class FakeSleep:
    """An async sleep that moves the manual clock instead of waiting, and remembers each wait.

    Pass it as a connector's `sleep=` with the same clock as `clock=`: rate limits and retries
    then take no wall time, and `waits` says how long the connector asked to wait."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.clock.advance(max(0.0, seconds))
        await asyncio.sleep(0)
