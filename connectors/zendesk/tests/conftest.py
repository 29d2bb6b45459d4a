"""Shared fixtures of the Zendesk connector tests: the simulator behind a recording transport.

Every request the connector sends goes through `RecordingTransport` into the in-process
`ZendeskSimulator`, so tests can count requests by route and status, and validate each one
against Zendesk's OpenAPI description. Nothing here reaches the network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from customer_sync.sandbox._common import ManualClock
from customer_sync.testing.clocks import FakeSleep
from customer_sync.testing.transports import RecordingTransport as _Recording
from customer_sync.sandbox.zendesk import ZendeskSimulator
from customer_sync_connectors.zendesk import ZendeskConnector, ZendeskSettings

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
WEBHOOK_URL = "https://sync.example.org/webhooks/helpdesk"


class RecordingTransport(_Recording):
    """The shared recording transport, naming requests the way these tests compare them."""

    def paths(self) -> list[str]:
        """`METHOD path` of every request, ids replaced by `{id}`, in order."""
        out = []
        for request, _ in self.exchanges:
            parts = ["{id}" if p.isdigit() or len(p) == 32 else p
                     for p in request.url.path.split("/")]
            out.append(f"{request.method} {'/'.join(parts)}")
        return out


def settings_for(sim: ZendeskSimulator, **overrides: object) -> ZendeskSettings:
    values: dict[str, object] = {
        "base_url": sim.base_url,
        "email": sim.agent_email,
        "api_token": SecretStr(sim.api_token),
        "webhook_secret": SecretStr(sim.webhook_secret),
        **overrides,
    }
    return ZendeskSettings.model_validate(values)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def fake_sleep(clock: ManualClock) -> FakeSleep:
    return FakeSleep(clock)


@pytest.fixture
def sim(clock: ManualClock) -> ZendeskSimulator:
    """A simulator on the manual clock with the vendor's default limits."""
    return ZendeskSimulator(clock=clock, webhook_url=WEBHOOK_URL)


@pytest.fixture
def transport(sim: ZendeskSimulator) -> RecordingTransport:
    return RecordingTransport(sim)


@pytest.fixture
def make_connector(
    sim: ZendeskSimulator, transport: RecordingTransport, clock: ManualClock,
    fake_sleep: FakeSleep,
) -> Callable[..., ZendeskConnector]:
    """Build (not open) a connector on the simulator, the manual clock and the fake sleep."""

    def make(**overrides: object) -> ZendeskConnector:
        return ZendeskConnector(settings_for(sim, **overrides), app="helpdesk",
                                transport=transport, clock=clock, sleep=fake_sleep)

    return make


@pytest.fixture
async def connector(make_connector: Callable[..., ZendeskConnector]
                    ) -> AsyncIterator[ZendeskConnector]:
    """An opened connector with the default settings but small job polls."""
    async with make_connector(job_poll_interval_s=1.0) as c:
        yield c
