"""Client-side rate limits, so an app's documented quota is respected before the vendor answers 429.

A `RateLimiter` is a sliding-window log: in *any* interval of `per_s` seconds at most `max_calls`
calls start, which is the promise vendors make ("100 requests per 10 seconds") and the one a
token bucket cannot keep at its edges. Callers wait in FIFO order, and `penalize()` pauses every
caller after the vendor answered 429 anyway. `MultiLimiter` holds a call until several limits all
allow it (per 10 s *and* per day; or a lower limit for one endpoint on top of the app's limit).

One limiter is shared by every request of one app; the engine never sleeps for rate limits
itself. Size limits a little under the vendor's: the vendor counts arrivals, we count departures,
and the network moves them closer together.

That holds across processes too. The engine may rebuild a connector in a worker process to list
an app there (see `Connector.lists_in_worker`). It creates the connector inside `collecting()`
both times. The worker's limiters are then bound to a `LimiterGate` with `defer_to`: each of
their calls waits for the daemon's limiter at the same position, so the app keeps one budget.
Connectors need do nothing for this beyond creating their limiters while they are constructed
or opened, in the same order every time.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from contextvars import ContextVar
from typing import Protocol, runtime_checkable

__all__ = ["Limiter", "LimiterGate", "MultiLimiter", "RateLimiter", "collecting", "defer_to"]

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_ids = itertools.count()


@runtime_checkable
class Limiter(Protocol):
    """What `ApiClient` needs from a limiter: wait for a slot, and back off after a 429."""

    async def acquire(self, n: int = 1) -> None: ...

    def penalize(self, retry_after_s: float) -> None: ...


@runtime_checkable
class LimiterGate(Protocol):
    """Where limiters bound by `defer_to` take their turns: the limiters at these positions of
    another process's `collecting()` list (see `engine.listing`)."""

    async def acquire(self, positions: Sequence[int], n: int) -> None: ...

    def penalize(self, positions: Sequence[int], retry_after_s: float) -> None: ...


_collected: ContextVar[list[RateLimiter] | None] = ContextVar("customer_sync_limiters", default=None)


@contextmanager
def collecting() -> Iterator[list[RateLimiter]]:
    """Collect the `RateLimiter`s created inside the block, in the order they are created."""
    made: list[RateLimiter] = []
    token = _collected.set(made)
    try:
        yield made
    finally:
        _collected.reset(token)


def defer_to(limiters: Sequence[RateLimiter], gate: LimiterGate) -> None:
    """From now on, each of these limiters (a `collecting()` list) counts nothing itself: its
    calls wait at `gate` for the limiter at the same position there, and its penalties go there."""
    for position, limiter in enumerate(limiters):
        limiter._gate, limiter._position = gate, position


class _Window:
    """A log of call start times for one limit, merged into buckets so that a per-day limit of a
    million calls does not keep a million floats.

    Calls that start within `resolution_s` of a bucket's first call share the bucket and are
    recorded at the *latest* start among them: they expire a little later than they could, never
    earlier, so the limit holds and at most `resolution_s / per_s` of the quota is given away.
    """

    __slots__ = ("_buckets", "_used", "max_calls", "per_s", "resolution_s")

    def __init__(self, max_calls: int, per_s: float) -> None:
        if max_calls < 1 or per_s <= 0:
            raise ValueError("a rate limit needs max_calls >= 1 and per_s > 0")
        self.max_calls = max_calls
        self.per_s = per_s
        self.resolution_s = per_s / 1000
        # [first_start, last_start, count], oldest first
        self._buckets: deque[list[float]] = deque()
        self._used = 0

    def _expire(self, now: float) -> None:
        while self._buckets and self._buckets[0][1] + self.per_s <= now:
            self._used -= int(self._buckets.popleft()[2])

    def wait_s(self, now: float, n: int) -> float:
        """Seconds until `n` more calls may start; 0 when they may start now."""
        self._expire(now)
        excess = self._used + n - self.max_calls
        if excess <= 0:
            return 0.0
        freed = 0
        for _first, last, count in self._buckets:
            freed += int(count)
            if freed >= excess:
                return last + self.per_s - now
        raise AssertionError("unreachable: n <= max_calls is checked by the limiter")

    def record(self, now: float, n: int) -> None:
        if self._buckets and now - self._buckets[-1][0] < self.resolution_s:
            bucket = self._buckets[-1]
            bucket[1] = now
            bucket[2] += n
        else:
            self._buckets.append([now, now, n])
        self._used += n


class RateLimiter:
    """At most `max_calls` calls start in any `per_s` seconds; callers are served in FIFO order.

    Args:
        max_calls: calls allowed per window, from the vendor's documented limit.
        per_s: the window length in seconds.
        clock: monotonic clock in seconds; injected by tests.
        sleep: async sleep; injected by tests together with `clock`.
        burst: at most this many calls start back to back; later calls are spread at the
            average rate (`burst` calls per `burst * per_s / max_calls` seconds). None lets a
            whole window start at once, which is what the vendor allows.

    Example:
        HubSpot's 100 requests per 10 s: `RateLimiter(100, 10.0)`.
    """

    def __init__(
        self,
        max_calls: int,
        per_s: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        burst: int | None = None,
    ) -> None:
        self.max_calls = max_calls
        self.per_s = per_s
        self._clock = clock
        self._sleep = sleep
        self._windows = [_Window(max_calls, per_s)]
        if burst is not None and burst < max_calls:
            self._windows.append(_Window(burst, burst * per_s / max_calls))
        self._paused_until = float("-inf")
        self._lock = asyncio.Lock()  # asyncio.Lock hands over in FIFO order: no caller starves
        self._order = next(_ids)  # global lock order, so MultiLimiters never deadlock
        self._gate: LimiterGate | None = None  # see `defer_to`
        self._position = -1
        if (made := _collected.get()) is not None:
            made.append(self)

    def __repr__(self) -> str:
        return f"RateLimiter({self.max_calls}, {self.per_s})"

    async def acquire(self, n: int = 1) -> None:
        """Wait until `n` calls may start, then count them as started.

        Raises:
            ValueError: `n` is larger than the limit, so it could never be served.
        """
        await _acquire_all([self], n, self._clock, self._sleep)

    def try_acquire(self, n: int = 1) -> bool:
        """Count `n` calls as started and return True if they may start now and nobody is
        waiting; else count nothing and return False."""
        return _try_acquire_all([self], n, self._clock)

    def penalize(self, retry_after_s: float) -> None:
        """Hold every caller back for `retry_after_s` seconds (the vendor answered 429).

        A later, shorter penalty never shortens a pause already in force. `ApiClient` never asks
        for more than its `max_retry_after_s`: a longer wait parks the app instead.
        """
        if self._gate is not None:
            self._gate.penalize([self._position], retry_after_s)
            return
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, retry_after_s))

    def _wait_s(self, now: float, n: int) -> float:
        return max(self._paused_until - now, *(w.wait_s(now, n) for w in self._windows))

    def _record(self, now: float, n: int) -> None:
        for window in self._windows:
            window.record(now, n)

    def _check(self, n: int) -> None:
        if n < 1 or any(n > w.max_calls for w in self._windows):
            raise ValueError(f"cannot acquire {n} calls from {self!r}")


class MultiLimiter:
    """A call starts only when every one of several limiters allows it, and counts in all of them.

    Share the component limiters: HubSpot's search endpoint uses
    `MultiLimiter(app_limiter, RateLimiter(4, 1.0))` while other calls use `app_limiter` alone.
    A waiting call holds its place in the queue of every component, so calls through the app
    limiter alone may wait behind it.

    Args:
        limiters: the limits to honour; at least one. The first one's clock and sleep are used.
    """

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("MultiLimiter needs at least one limiter")
        self.limiters: Sequence[RateLimiter] = limiters

    def __repr__(self) -> str:
        return f"MultiLimiter{tuple(self.limiters)!r}"

    async def acquire(self, n: int = 1) -> None:
        """Wait until every limiter allows `n` calls, then count them in all of them."""
        first = self.limiters[0]
        await _acquire_all(self.limiters, n, first._clock, first._sleep)

    def try_acquire(self, n: int = 1) -> bool:
        """Count `n` calls as started and return True if every limiter allows them now and
        nobody is waiting; else count nothing and return False."""
        return _try_acquire_all(self.limiters, n, self.limiters[0]._clock)

    def penalize(self, retry_after_s: float) -> None:
        """Pause every component: a 429 does not say which of the limits was hit."""
        for limiter in self.limiters:
            limiter.penalize(retry_after_s)


def _try_acquire_all(limiters: Sequence[RateLimiter], n: int, clock: Clock) -> bool:
    for limiter in limiters:
        limiter._check(n)
    if any(limiter._gate is not None or limiter._lock.locked() for limiter in limiters):
        return False  # someone is queued (or the count is kept elsewhere): wait in line
    now = clock()
    if any(limiter._wait_s(now, n) > 0 for limiter in limiters):
        return False
    for limiter in limiters:
        limiter._record(now, n)
    return True


async def _acquire_all(limiters: Sequence[RateLimiter], n: int, clock: Clock, sleep: Sleep) -> None:
    for limiter in limiters:
        limiter._check(n)
    gate = limiters[0]._gate
    if gate is not None:
        if any(limiter._gate is not gate for limiter in limiters):
            raise ValueError("limiters deferring to different gates cannot be acquired together")
        await gate.acquire([limiter._position for limiter in limiters], n)
        return
    async with AsyncExitStack() as stack:
        # The head of each queue holds its lock while it sleeps: the next caller cannot slip in
        # ahead, and re-checking after every sleep picks up a penalty that arrived meanwhile.
        for limiter in sorted(set(limiters), key=lambda lim: lim._order):
            await stack.enter_async_context(limiter._lock)
        while True:
            now = clock()
            wait_s = max(limiter._wait_s(now, n) for limiter in limiters)
            if wait_s <= 0:
                for limiter in limiters:
                    limiter._record(now, n)
                return
            await sleep(wait_s)
