"""The retry policy, tested as functions of the retry state (as tenacity tests its own)."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

import pytest
import structlog
import tenacity

from customer_sync.errors import AuthError, RateLimited, RecordRejected, TransientError
from customer_sync.sdk.retry import (
    DEFAULT_MAX_RETRY_AFTER_S,
    FullJitterBackoff,
    RetryTransient,
    StopBeforeBudget,
    retry_policy,
)


def _state(
    attempt: int,
    error: BaseException | None = None,
    *,
    elapsed_s: float = 0.0,
    upcoming_sleep: float = 0.0,
) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(
        retry_object=tenacity.AsyncRetrying(), fn=None, args=(), kwargs={}
    )
    state.attempt_number = attempt
    state.set_exception((type(error), error, None)) if error else state.set_result(None)
    state.start_time = 0.0
    state.outcome_timestamp = elapsed_s
    state.upcoming_sleep = upcoming_sleep
    return state


def _highest(low: float, high: float) -> float:
    return high


def _transient() -> TransientError:
    return TransientError("HTTP 503", app="crm", status_code=503)


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0)],
    ids=["first", "second", "third", "fourth", "fifth"],
)
def test_backoff_ceiling_doubles_with_each_attempt(attempt: int, expected: float) -> None:
    """The backoff ceiling is base_s doubled for each attempt after the first."""
    wait = FullJitterBackoff(base_s=0.5, max_backoff_s=30.0, uniform=_highest)

    assert expected == wait(_state(attempt, _transient()))


def test_backoff_ceiling_is_capped() -> None:
    """The backoff ceiling never exceeds max_backoff_s, however many attempts failed."""
    wait = FullJitterBackoff(base_s=0.5, max_backoff_s=30.0, uniform=_highest)

    assert 30.0 == wait(_state(20, _transient()))


def test_jitter_is_drawn_between_zero_and_the_ceiling() -> None:
    """Full jitter draws every wait from [0, ceiling]."""
    draws: list[tuple[float, float]] = []

    def recording_uniform(low: float, high: float) -> float:
        draws.append((low, high))
        return random.Random(7).uniform(low, high)

    wait_s = FullJitterBackoff(base_s=0.5, uniform=recording_uniform)(_state(4, _transient()))

    assert [(0.0, 4.0)] == draws
    assert 0.0 <= wait_s <= 4.0


def test_jittered_waits_spread_over_the_whole_range() -> None:
    """With a real random source, waits fill [0, ceiling] instead of clustering at one value."""
    wait = FullJitterBackoff(base_s=1.0, uniform=random.Random(42).uniform)

    waits = [wait(_state(3, _transient())) for _ in range(200)]

    assert all(0.0 <= w <= 4.0 for w in waits)
    assert min(waits) < 1.0 and max(waits) > 3.0


def test_wait_is_at_least_retry_after() -> None:
    """A vendor's Retry-After longer than the backoff sets the wait."""
    wait = FullJitterBackoff(base_s=0.5, uniform=_highest)

    assert 7.0 == wait(_state(1, RateLimited("HTTP 429", retry_after_s=7.0)))


def test_retry_after_shorter_than_backoff_keeps_backoff() -> None:
    """A Retry-After shorter than the drawn backoff does not shorten the wait."""
    wait = FullJitterBackoff(base_s=0.5, uniform=_highest)

    assert 4.0 == wait(_state(4, RateLimited("HTTP 429", retry_after_s=1.0)))


def test_retry_after_is_not_capped_by_max_backoff() -> None:
    """The vendor's Retry-After is honoured even beyond max_backoff_s."""
    wait = FullJitterBackoff(base_s=0.5, max_backoff_s=30.0, uniform=_highest)

    assert 45.0 == wait(_state(1, RateLimited("HTTP 429", retry_after_s=45.0)))


@pytest.mark.parametrize(
    ("attempt", "expected"), [(2, False), (3, True)], ids=["below-limit", "at-limit"]
)
def test_stop_after_max_attempts(attempt: int, expected: bool) -> None:
    """The policy stops once max_attempts attempts have failed."""
    stop = StopBeforeBudget(max_attempts=3, max_total_s=120.0)

    assert expected == stop(_state(attempt, _transient()))


@pytest.mark.parametrize(
    ("elapsed_s", "upcoming_sleep", "expected"),
    [(10.0, 5.0, False), (100.0, 30.0, True), (0.0, 3600.0, True)],
    ids=["within-budget", "wait-overruns-budget", "daily-quota-retry-after"],
)
def test_stop_before_the_wait_overruns_the_budget(
    elapsed_s: float, upcoming_sleep: float, expected: bool
) -> None:
    """The policy gives up when the next wait would end past max_total_s."""
    stop = StopBeforeBudget(max_attempts=6, max_total_s=120.0)

    state = _state(2, _transient(), elapsed_s=elapsed_s, upcoming_sleep=upcoming_sleep)

    assert expected == stop(state)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RateLimited("HTTP 429", retry_after_s=5.0), True),
        (RateLimited("HTTP 429", retry_after_s=900.0), True),
        (RateLimited("HTTP 429", retry_after_s=900.5), False),
        (RateLimited("HTTP 429", retry_after_s=86400.0), False),
        (RateLimited("HTTP 429"), True),
        (TransientError("HTTP 503"), True),
        (RecordRejected("HTTP 422"), False),
    ],
    ids=["5 s", "exactly the cap", "just over the cap", "a day", "no Retry-After", "5xx",
         "rejected"],
)
def test_retry_transient_stops_at_a_retry_after_beyond_the_cap(
    error: Exception, expected: bool
) -> None:
    """A transient error is retried unless it is a 429 asking to wait longer than the cap."""
    assert expected == RetryTransient(max_retry_after_s=900.0)(_state(1, error))


def test_default_cap_is_fifteen_minutes() -> None:
    """Without a configured cap, a wait up to 15 minutes is retried and a longer one is not."""
    retry = RetryTransient()

    assert 900.0 == DEFAULT_MAX_RETRY_AFTER_S
    assert retry(_state(1, RateLimited("HTTP 429", retry_after_s=900.0)))
    assert not retry(_state(1, RateLimited("HTTP 429", retry_after_s=901.0)))


async def test_policy_raises_a_retry_after_beyond_the_cap_at_once_without_sleeping() -> None:
    """A day-long Retry-After is raised on the first attempt, whatever the time budget."""
    slept: list[float] = []
    calls: list[int] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def quota_exhausted() -> None:
        calls.append(1)
        raise RateLimited("HTTP 429", retry_after_s=86400.0)

    policy = retry_policy(max_total_s=10 * 86400.0, sleep=sleep)

    with pytest.raises(RateLimited) as caught:
        await policy(quota_exhausted)

    assert (86400.0, [1], []) == (caught.value.retry_after_s, calls, slept)


def _rate_limited_once(calls: list[int], retry_after_s: float) -> Callable[[], Awaitable[str]]:
    """A call that answers 429 with `retry_after_s` once, then succeeds; counts into `calls`."""

    async def call() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RateLimited("HTTP 429", retry_after_s=retry_after_s)
        return "ok"

    return call


async def test_policy_with_a_lower_cap_raises_a_wait_it_would_otherwise_retry() -> None:
    """Under `max_retry_after_s=10`, a 20 s Retry-After is raised on the first attempt."""
    calls: list[int] = []
    policy = retry_policy(max_retry_after_s=10.0, sleep=_no_sleep)

    with pytest.raises(RateLimited):
        await policy(_rate_limited_once(calls, 20.0))

    assert 1 == len(calls)


async def test_policy_with_a_higher_cap_retries_that_wait() -> None:
    """Under `max_retry_after_s=30`, the same 20 s Retry-After is waited for and retried."""
    calls: list[int] = []
    policy = retry_policy(max_retry_after_s=30.0, sleep=_no_sleep)

    assert "ok" == await policy(_rate_limited_once(calls, 20.0))
    assert 2 == len(calls)


async def test_policy_reraises_the_last_error_after_max_attempts() -> None:
    """After max_attempts transient failures the last error itself is raised, not RetryError."""
    calls: list[int] = []

    async def failing() -> None:
        calls.append(1)
        raise TransientError(f"HTTP 503 #{len(calls)}")

    policy = retry_policy(max_attempts=4, sleep=_no_sleep)

    with pytest.raises(TransientError, match="#4"):
        await policy(failing)
    assert 4 == len(calls)


@pytest.mark.parametrize(
    "error",
    [RecordRejected("HTTP 422"), AuthError("HTTP 401"), ValueError("bug")],
    ids=["rejected", "auth", "programming-error"],
)
async def test_policy_does_not_retry_other_errors(error: Exception) -> None:
    """Only TransientError is retried; anything else is raised on the first attempt."""
    calls: list[int] = []

    async def failing() -> None:
        calls.append(1)
        raise error

    with pytest.raises(type(error)):
        await retry_policy(sleep=_no_sleep)(failing)
    assert 1 == len(calls)


async def test_policy_returns_the_result_after_a_transient_failure() -> None:
    """A transient failure followed by a success returns the success."""
    outcomes: list[Exception | str] = [_transient(), "ok"]

    async def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert "ok" == await retry_policy(sleep=_no_sleep)(flaky)


async def test_policy_logs_retry_scheduled_before_sleeping() -> None:
    """Each scheduled retry logs http.retry_scheduled with app, attempt, status, reason and wait."""
    outcomes: list[Exception | str] = [
        RateLimited("HTTP 429", app="crm", status_code=429, retry_after_s=2.0),
        "ok",
    ]

    async def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with structlog.testing.capture_logs() as logs:
        await retry_policy(sleep=_no_sleep, uniform=_highest)(flaky)

    [entry] = [e for e in logs if e["event"] == "http.retry_scheduled"]
    assert {
        "app": "crm",
        "attempt": 1,
        "status_code": 429,
        "reason": "RateLimited",
        "wait_s": 2.0,
    } == {k: entry[k] for k in ("app", "attempt", "status_code", "reason", "wait_s")}


async def test_policy_calls_on_retry_and_sleeps_the_computed_wait() -> None:
    """on_retry sees each retry, and the policy sleeps exactly the wait it computed."""
    slept: list[float] = []
    seen: list[int] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async def failing() -> None:
        raise _transient()

    policy = retry_policy(
        max_attempts=3,
        sleep=sleep,
        uniform=_highest,
        on_retry=lambda state: seen.append(state.attempt_number),
    )
    with pytest.raises(TransientError):
        await policy(failing)

    assert [0.5, 1.0] == slept
    assert [1, 2] == seen


async def _no_sleep(seconds: float) -> None:
    return None

