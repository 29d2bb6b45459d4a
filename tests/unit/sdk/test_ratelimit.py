"""The rate limiter keeps an app under its documented quota while keeping the quota busy."""

from __future__ import annotations

import asyncio
import bisect
import math
from typing import TYPE_CHECKING

import pytest

from customer_sync.sdk.ratelimit import Limiter, MultiLimiter, RateLimiter

if TYPE_CHECKING:
    from .conftest import FakeClock


def _busiest_window(starts: list[float], per_s: float) -> int:
    """The most calls starting in any half-open window [t, t + per_s)."""
    starts = sorted(starts)
    return max(bisect.bisect_left(starts, t + per_s) - i for i, t in enumerate(starts))


def _utilization(starts: list[float], max_calls: int, per_s: float) -> float:
    """How close the last start is to the earliest the quota allows (1.0 = never idle)."""
    earliest_last_start = (math.ceil(len(starts) / max_calls) - 1) * per_s
    return earliest_last_start / max(starts) if max(starts) else 1.0


async def test_sequential_acquires_never_exceed_the_limit_in_any_window(clock: FakeClock) -> None:
    """250 calls under 100 per 10 s never put more than 100 starts in any 10 s window."""
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    starts = []

    for _ in range(250):
        await limiter.acquire()
        starts.append(clock())

    assert 100 == _busiest_window(starts, 10.0)


async def test_sequential_acquires_keep_the_quota_busy(clock: FakeClock) -> None:
    """250 calls under 100 per 10 s finish within 10% of the earliest the quota allows."""
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    starts = []

    for _ in range(250):
        await limiter.acquire()
        starts.append(clock())

    assert _utilization(starts, 100, 10.0) >= 0.9


async def test_concurrent_acquirers_are_all_served_within_the_limit(clock: FakeClock) -> None:
    """250 concurrent callers are all served, never more than 100 per 10 s, with the quota busy."""
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        starts.append(clock())

    await asyncio.gather(*(call() for _ in range(250)))

    assert 250 == len(starts)
    assert _busiest_window(starts, 10.0) <= 100
    assert _utilization(starts, 100, 10.0) >= 0.9


async def test_calls_spread_over_time_are_limited_over_the_sliding_window(clock: FakeClock) -> None:
    """Calls arriving one per 50 ms still never exceed 100 in any 10 s window."""
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    starts = []

    for _ in range(400):
        await limiter.acquire()
        starts.append(clock())
        await clock.sleep(0.05)

    assert _busiest_window(starts, 10.0) <= 100


async def test_burst_spreads_calls_at_the_average_rate(clock: FakeClock) -> None:
    """With burst=10 under 100 per 10 s, 20 calls start as 10 at once and 10 one second later."""
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep, burst=10)
    starts = []

    for _ in range(20):
        await limiter.acquire()
        starts.append(clock())

    assert [0.0] * 10 + [1.0] * 10 == starts


async def test_penalize_pauses_every_caller(clock: FakeClock) -> None:
    """After penalize(5), the next call starts 5 s later even though the quota has room."""
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    await limiter.acquire()

    limiter.penalize(5.0)
    await limiter.acquire()

    assert 5.0 == clock()


async def test_penalize_applies_to_callers_already_waiting(clock: FakeClock) -> None:
    """A penalty arriving while callers wait for the window holds them back too."""
    limiter = RateLimiter(1, 1.0, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)  # the waiter is now asleep until t=1

    limiter.penalize(30.0)
    await waiting

    assert clock() >= 30.0


async def test_shorter_penalty_does_not_shorten_a_pause(clock: FakeClock) -> None:
    """A second, shorter penalty leaves the longer pause in force."""
    limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)

    limiter.penalize(20.0)
    limiter.penalize(1.0)
    await limiter.acquire()

    assert 20.0 == clock()


async def test_acquire_more_than_the_limit_is_refused(clock: FakeClock) -> None:
    """Asking for more calls than the limit allows fails instead of waiting forever."""
    limiter = RateLimiter(10, 1.0, clock=clock, sleep=clock.sleep)

    with pytest.raises(ValueError, match="cannot acquire 11"):
        await limiter.acquire(11)


async def test_acquire_n_counts_n_calls(clock: FakeClock) -> None:
    """acquire(n) uses n slots of the window."""
    limiter = RateLimiter(10, 1.0, clock=clock, sleep=clock.sleep)

    await limiter.acquire(8)
    await limiter.acquire(3)

    assert 1.0 == clock()


async def test_multi_limiter_honours_the_lowest_limit(clock: FakeClock) -> None:
    """Search calls under the app limit and a 4 per second search limit start 4 per second."""
    app_limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    search = MultiLimiter(app_limiter, RateLimiter(4, 1.0, clock=clock, sleep=clock.sleep))
    starts = []

    for _ in range(10):
        await search.acquire()
        starts.append(clock())

    assert [0.0] * 4 + [1.0] * 4 + [2.0] * 2 == starts


async def test_multi_limiter_counts_calls_in_every_component(clock: FakeClock) -> None:
    """Calls through the MultiLimiter use up the shared app limit too."""
    app_limiter = RateLimiter(10, 10.0, clock=clock, sleep=clock.sleep)
    search = MultiLimiter(app_limiter, RateLimiter(100, 1.0, clock=clock, sleep=clock.sleep))
    for _ in range(10):
        await search.acquire()

    await app_limiter.acquire()

    assert 10.0 == clock()


async def test_multi_limiter_penalize_pauses_every_component(clock: FakeClock) -> None:
    """A 429 on a combined limit pauses the shared app limiter as well."""
    app_limiter = RateLimiter(100, 10.0, clock=clock, sleep=clock.sleep)
    search = MultiLimiter(app_limiter, RateLimiter(4, 1.0, clock=clock, sleep=clock.sleep))

    search.penalize(3.0)
    await app_limiter.acquire()

    assert 3.0 == clock()


async def test_concurrent_callers_of_shared_limiters_never_deadlock(clock: FakeClock) -> None:
    """Callers of a limiter and of MultiLimiters combining it in either order all finish."""
    a = RateLimiter(5, 1.0, clock=clock, sleep=clock.sleep)
    b = RateLimiter(3, 1.0, clock=clock, sleep=clock.sleep)
    limiters: list[Limiter] = [a, MultiLimiter(a, b), MultiLimiter(b, a)]

    await asyncio.wait_for(
        asyncio.gather(*(limiters[i % 3].acquire() for i in range(60))), timeout=5
    )

    assert clock() > 0


def test_limiters_satisfy_the_limiter_protocol() -> None:
    """Both limiters can be handed to ApiClient as a Limiter."""
    limiter = RateLimiter(1, 1.0)

    assert isinstance(limiter, Limiter) and isinstance(MultiLimiter(limiter), Limiter)


async def test_try_acquire_counts_only_what_may_start_now(clock: FakeClock) -> None:
    """try_acquire takes free slots at once and refuses, counting nothing, when the window is
    full or a caller is already waiting in line."""
    app_limiter = RateLimiter(3, 1.0, clock=clock, sleep=clock.sleep)
    search = MultiLimiter(app_limiter, RateLimiter(1, 1.0, clock=clock, sleep=clock.sleep))

    assert search.try_acquire()
    assert not search.try_acquire()  # the search limit is used up; the app limit is untouched
    assert app_limiter.try_acquire(2)
    assert not app_limiter.try_acquire()
    clock.now = 1.0
    async with app_limiter._lock:  # someone is waiting for a turn: do not jump the queue
        assert not app_limiter.try_acquire()
    assert app_limiter.try_acquire(3)
    assert 1.0 == clock() and [] == clock.sleeps


def test_collecting_gathers_the_limiters_made_inside_in_order() -> None:
    from customer_sync.sdk.ratelimit import collecting

    outside = RateLimiter(1, 1.0)
    with collecting() as made:
        first, second = RateLimiter(1, 1.0), RateLimiter(2, 1.0)
        with collecting() as inner:
            third = RateLimiter(3, 1.0)
    after = RateLimiter(4, 1.0)

    assert made == [first, second] and inner == [third]
    assert outside not in made and after not in made


class RecordingGate:
    def __init__(self) -> None:
        self.acquired: list[tuple[list[int], int]] = []
        self.penalized: list[tuple[list[int], float]] = []

    async def acquire(self, positions, n):  # type: ignore[no-untyped-def]
        self.acquired.append((list(positions), n))

    def penalize(self, positions, retry_after_s):  # type: ignore[no-untyped-def]
        self.penalized.append((list(positions), retry_after_s))


async def test_limiters_deferring_to_a_gate_count_nothing_themselves(clock: FakeClock) -> None:
    """Bound by defer_to, limiters wait at the gate (by position) instead of in their own window,
    and pass penalties on; they never take a slot of their own."""
    from customer_sync.sdk.ratelimit import LimiterGate, collecting, defer_to

    with collecting() as made:
        app_limiter = RateLimiter(1, 10.0, clock=clock, sleep=clock.sleep)
        search_limiter = RateLimiter(1, 1.0, clock=clock, sleep=clock.sleep)
    gate = RecordingGate()
    assert isinstance(gate, LimiterGate)
    defer_to(made, gate)

    for _ in range(3):  # three calls through a limit of one per 10 s: no wait here
        await app_limiter.acquire()
    await MultiLimiter(app_limiter, search_limiter).acquire(1)
    MultiLimiter(app_limiter, search_limiter).penalize(2.0)

    assert gate.acquired == [([0], 1)] * 3 + [([0, 1], 1)]
    assert gate.penalized == [([0], 2.0), ([1], 2.0)]
    assert [] == clock.sleeps
    assert not app_limiter.try_acquire()  # the count is kept at the gate
    with pytest.raises(ValueError):
        await app_limiter.acquire(2)  # still more than the limit could ever grant
