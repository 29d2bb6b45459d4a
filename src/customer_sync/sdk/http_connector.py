"""`HttpConnector`: the parts every connector of an HTTP vendor API writes the same way.

A connector over a vendor's HTTP API takes the same three test seams (an httpx transport, a
clock and a sleep), reads the wall clock for webhook freshness and a monotonic one for its rate
limits, holds an opened `ApiClient` (`self.http`) and a vendor client over it (`self.api`), closes
the former on `close()`, and turns a malformed webhook into a `WebhookRefused` that names the
app. This base holds those once; a connector subclasses it, opens `self.http` and `self._api` in
`open()`, extends `close()` when it holds more (e.g. a download client), and says how many
per-record calls `_bounded` may run at once (`max_in_flight`, usually a setting).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from customer_sync.errors import ConnectorError, WebhookRefused
from customer_sync.sdk.connector import Change, Connector, S

if TYPE_CHECKING:
    import httpx

    from customer_sync.sdk.http import ApiClient

__all__ = ["HttpConnector", "Sleep"]

Sleep = Callable[[float], Awaitable[None]]
A = TypeVar("A")  # the connector's vendor client over `self.http`
T = TypeVar("T")


class HttpConnector(Connector[S], Generic[S, A]):
    """Base of a connector over a vendor's HTTP API.

    Args:
        settings: the validated settings block.
        app: the configured app name.
        transport: the HTTP test seam (`httpx.ASGITransport` over a simulator).
        clock: wall clock (aware UTC) for webhook freshness and rate limits; tests move it.
        sleep: async sleep for rate limits and retries; tests inject it with the clock.
    """

    def __init__(self, settings: S, *, app: str, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], datetime] | None = None, sleep: Sleep | None = None) -> None:
        super().__init__(settings, app=app)
        self._transport = transport
        self._clock = clock
        self._sleep: Sleep = sleep or asyncio.sleep
        self._api: A | None = None
        self.http: ApiClient | None = None

    def _now(self) -> datetime:
        """The wall clock, aware UTC (the injected clock in tests)."""
        return self._clock() if self._clock is not None else datetime.now(UTC)

    def _monotonic(self) -> float:
        """Seconds for rate limits: the injected clock's, else a monotonic clock's."""
        return self._clock().timestamp() if self._clock is not None else time.monotonic()

    async def close(self) -> None:
        if self.http is not None:
            await self.http.aclose()
        self.http = self._api = None

    @property
    def api(self) -> A:
        """The vendor client; only while the connector is open."""
        if self._api is None:
            raise self.error(ConnectorError, "the connector is not open", operation="open")
        return self._api

    def _webhook_verdict(self, problem: str | None) -> bool:
        """`verify_webhook`'s answer for a delivery with `problem` (None: authentic); a refusal
        is logged with its reason, never with the delivery."""
        if problem is not None:
            self.log.info("webhook.rejected", reason=problem)
            return False
        return True

    def _parsed_webhook(self, parse: Callable[[], list[Change]]) -> list[Change]:
        """The changes `parse()` reads from a verified delivery; its `WebhookRefused` comes back
        naming this app, as a malformed webhook (answered 400)."""
        try:
            return parse()
        except WebhookRefused as exc:
            raise self.error(WebhookRefused, f"malformed webhook: {exc}",
                             operation="webhook.parse") from None

    @property
    def max_in_flight(self) -> int:
        """How many calls `_bounded` runs at once; a connector returns its own setting."""
        return 1

    async def _bounded(self, calls: Sequence[Awaitable[T]]) -> list[T]:
        """Run calls with at most `max_in_flight` in flight; the first error is raised once
        all have settled, so nothing is left running."""
        gate = asyncio.Semaphore(self.max_in_flight)

        async def gated(call: Awaitable[T]) -> T:
            async with gate:
                return await call

        results = await asyncio.gather(*(gated(c) for c in calls), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]
