"""An httpx transport for connector tests: requests go to a simulator in-process, and every
exchange is kept so that tests can count requests by route and status or validate each one
against the vendor's OpenAPI document. Nothing reaches the network."""

from __future__ import annotations

from typing import Any, Protocol

import httpx

__all__ = ["RecordingTransport"]


class _Simulator(Protocol):
    app: Any  # an ASGI application


class RecordingTransport(httpx.AsyncBaseTransport):
    """Forwards to a simulator's ASGI app (`sim.app`) and keeps every exchange, in order.

    Subclass it to name requests the vendor's way (ids replaced by `{id}`, say)."""

    def __init__(self, sim: _Simulator) -> None:
        self._inner = httpx.ASGITransport(app=sim.app)
        self.exchanges: list[tuple[httpx.Request, httpx.Response]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        await response.aread()
        self.exchanges.append((request, response))
        return response

    @property
    def statuses(self) -> list[int]:
        return [response.status_code for _, response in self.exchanges]
