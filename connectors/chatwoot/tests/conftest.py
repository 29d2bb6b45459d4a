"""Shared fixtures of the Chatwoot connector tests: the simulator behind a recording transport.

Every request the connector sends goes through `RecordingTransport` into the in-process
`ChatwootSimulator`, so tests can count requests by route and status. Nothing here reaches the
network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from customer_sync_connectors.chatwoot import ChatwootConnector, ChatwootSettings
from pydantic import SecretStr

from customer_sync.sandbox._common import ManualClock
from customer_sync.testing.clocks import FakeSleep
from customer_sync.testing.transports import RecordingTransport as _Recording
from customer_sync.sandbox.chatwoot import ChatwootSimulator

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
WEBHOOK_URL = "https://sync.example.org/webhooks/inbox"


class RecordingTransport(_Recording):
    """The shared recording transport, naming requests the way these tests compare them."""

    def paths(self) -> list[str]:
        """`METHOD path` of every request after the account prefix, ids as `{id}`, in order."""
        out = []
        for request, _ in self.exchanges:
            tail = request.url.path.split("/", 5)[-1]
            parts = ["{id}" if p.isdigit() else p for p in tail.split("/")]
            out.append(f"{request.method} /{'/'.join(parts)}")
        return out


def settings_for(sim: ChatwootSimulator, **overrides: object) -> ChatwootSettings:
    values: dict[str, object] = {
        "base_url": sim.base_url,
        "account_id": sim.account_id,
        "api_access_token": SecretStr(sim.api_access_token),
        "webhook_secret": SecretStr(sim.webhook_secret),
        "inbox_id": 1,
        **overrides,
    }
    return ChatwootSettings.model_validate(values)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def fake_sleep(clock: ManualClock) -> FakeSleep:
    return FakeSleep(clock)


@pytest.fixture
def sim(clock: ManualClock) -> ChatwootSimulator:
    """A simulator on the manual clock with Chatwoot's default limits."""
    return ChatwootSimulator(clock=clock, webhook_url=WEBHOOK_URL)


@pytest.fixture
def transport(sim: ChatwootSimulator) -> RecordingTransport:
    return RecordingTransport(sim)


@pytest.fixture
def make_connector(sim: ChatwootSimulator, transport: RecordingTransport, clock: ManualClock,
                   fake_sleep: FakeSleep) -> Callable[..., ChatwootConnector]:
    """Build (not open) a connector on the simulator, the manual clock and the fake sleep."""

    def make(**overrides: object) -> ChatwootConnector:
        return ChatwootConnector(settings_for(sim, **overrides), app="inbox",
                                 transport=transport, clock=clock, sleep=fake_sleep)

    return make


@pytest.fixture
async def connector(make_connector: Callable[..., ChatwootConnector]
                    ) -> AsyncIterator[ChatwootConnector]:
    async with make_connector() as c:
        yield c
