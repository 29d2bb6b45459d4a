"""The one retry policy: a tenacity value that retries transient connector errors and nothing else.

`retry_policy()` retries `TransientError` (network failures, timeouts, 5xx, and `RateLimited`),
waits with exponential backoff and full jitter but never less than the vendor's `Retry-After`,
and gives up after a number of attempts or when the next wait would overrun the time budget; it
then re-raises the last error, so callers see a `ConnectorError`, never a `tenacity.RetryError`.
Each scheduled retry logs `http.retry_scheduled`. Nothing else in customer-sync sleeps and loops.

A `RateLimited` whose `retry_after_s` is longer than `max_retry_after_s` (15 minutes by default)
is not retried at all: it is raised at once, carrying the vendor's full wait, for the engine to
park the app until then instead of holding a call (and the app's rate limiter) for a day.

The strategies are small values (`RetryTransient`, `FullJitterBackoff`, `StopBeforeBudget`) that
can be tested as functions of a `tenacity.RetryCallState`, as tenacity tests its own.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
import tenacity
from tenacity.retry import retry_base
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from customer_sync.errors import ConnectorError, RateLimited, TransientError
from customer_sync.sdk.settings import DEFAULT_MAX_RETRY_AFTER_S

if TYPE_CHECKING:
    from tenacity import RetryCallState

__all__ = [
    "DEFAULT_MAX_RETRY_AFTER_S",
    "FullJitterBackoff",
    "RetryTransient",
    "StopBeforeBudget",
    "is_beyond_retry_cap",
    "retry_policy",
]

_log = structlog.get_logger("customer_sync.http")


def is_beyond_retry_cap(error: BaseException | None, max_retry_after_s: float) -> bool:
    """Whether `error` is a `RateLimited` asking to wait longer than `max_retry_after_s`.

    Such an error is never slept on or retried: it goes up to the engine as it is.
    """
    if not isinstance(error, RateLimited) or error.retry_after_s is None:
        return False
    return error.retry_after_s > max_retry_after_s


@dataclass(frozen=True)
class RetryTransient(retry_base):
    """Retry a `TransientError`, except a `RateLimited` whose wait is beyond the cap.

    Args:
        max_retry_after_s: the longest vendor `Retry-After` worth waiting for.
    """

    max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S

    def __call__(self, retry_state: RetryCallState) -> bool:
        error = _error_of(retry_state)
        return isinstance(error, TransientError) and not is_beyond_retry_cap(
            error, self.max_retry_after_s
        )


@dataclass(frozen=True)
class FullJitterBackoff(wait_base):
    """Wait a random time in `[0, min(max_backoff_s, base_s * 2 ** (attempt - 1))]`, and at
    least the failed attempt's `retry_after_s` when the error carries one.

    The vendor's `Retry-After` is not capped by `max_backoff_s`: waiting less only earns another
    429. A wait longer than the retry budget makes `StopBeforeBudget` give up instead.

    Args:
        base_s: the backoff ceiling after the first failed attempt.
        max_backoff_s: the largest backoff ceiling.
        uniform: draws the jitter, `random.uniform` by default; tests pass a fixed one.
    """

    base_s: float = 0.5
    max_backoff_s: float = 30.0
    uniform: Callable[[float, float], float] = random.uniform

    def __call__(self, retry_state: RetryCallState) -> float:
        ceiling = min(self.max_backoff_s, self.base_s * 2 ** (retry_state.attempt_number - 1))
        wait_s = self.uniform(0.0, ceiling)
        retry_after_s = getattr(_error_of(retry_state), "retry_after_s", None)
        if retry_after_s is not None:
            wait_s = max(wait_s, float(retry_after_s))
        return wait_s


@dataclass(frozen=True)
class StopBeforeBudget(stop_base):
    """Stop after `max_attempts` attempts, or when the upcoming wait would end past `max_total_s`
    seconds since the first attempt (a daily quota's hour-long `Retry-After` fails at once)."""

    max_attempts: int = 6
    max_total_s: float = 120.0

    def __call__(self, retry_state: RetryCallState) -> bool:
        if retry_state.attempt_number >= self.max_attempts:
            return True
        return retry_state.seconds_since_start + retry_state.upcoming_sleep > self.max_total_s


OnRetry = Callable[["RetryCallState"], Awaitable[None] | None]


def retry_policy(
    *,
    max_attempts: int = 6,
    max_total_s: float = 120.0,
    base_s: float = 0.5,
    max_backoff_s: float = 30.0,
    max_retry_after_s: float = DEFAULT_MAX_RETRY_AFTER_S,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_retry: OnRetry | None = None,
    uniform: Callable[[float, float], float] = random.uniform,
) -> tenacity.AsyncRetrying:
    """Build the retry policy for connector calls.

    Use one copy per call (`policy.copy()`, or `await policy(fn, ...)`): `ApiClient` does.
    A tenacity object shares its iteration state across coroutines of one thread.

    Args:
        max_attempts: attempts in all, the first one included.
        max_total_s: time budget from the first attempt to the end of the last wait.
        base_s: backoff ceiling after the first failure; doubles with each attempt.
        max_backoff_s: cap of the backoff ceiling (not of a vendor's `Retry-After`).
        max_retry_after_s: a `RateLimited` asking to wait longer than this is raised at once,
            not retried (`ApiClient` applies its own `max_retry_after_s` on top of any policy).
        sleep: async sleep; tests inject one that does not sleep.
        on_retry: called with the retry state before each wait (sync or async), after the
            `http.retry_scheduled` log line; benchmarks count retries with it.
        uniform: jitter source, `random.uniform` by default.

    Returns:
        A `tenacity.AsyncRetrying` that re-raises the last error when it gives up.
    """

    async def before_sleep(retry_state: RetryCallState) -> None:
        _log_retry(retry_state)
        if on_retry is not None:
            result = on_retry(retry_state)
            if inspect.isawaitable(result):
                await result

    return tenacity.AsyncRetrying(
        sleep=sleep,
        retry=RetryTransient(max_retry_after_s=max_retry_after_s),
        wait=FullJitterBackoff(base_s=base_s, max_backoff_s=max_backoff_s, uniform=uniform),
        stop=StopBeforeBudget(max_attempts=max_attempts, max_total_s=max_total_s),
        before_sleep=before_sleep,
        reraise=True,
    )


def _error_of(retry_state: RetryCallState) -> BaseException | None:
    outcome = retry_state.outcome
    return outcome.exception() if outcome is not None and outcome.failed else None


def _log_retry(retry_state: RetryCallState) -> None:
    error = _error_of(retry_state)
    connector_error = error if isinstance(error, ConnectorError) else None
    next_action = retry_state.next_action
    wait_s = next_action.sleep if next_action else retry_state.upcoming_sleep
    _log.info(
        "http.retry_scheduled",
        app=connector_error.app if connector_error else None,
        connector=connector_error.connector if connector_error else None,
        operation=connector_error.operation if connector_error else None,
        attempt=retry_state.attempt_number,
        status_code=connector_error.status_code if connector_error else None,
        reason=type(error).__name__ if error is not None else None,
        wait_s=round(wait_s, 3),
    )
