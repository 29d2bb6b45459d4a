"""Shared fixtures of the Mailchimp connector tests: the simulator behind a recording transport.

Every request the connector sends goes through `RecordingTransport` into the in-process
`MailchimpSimulator`, so tests can count requests by route and status. Nothing here reaches
the network.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from customer_sync_connectors.mailchimp import MailchimpConnector, MailchimpSettings
from pydantic import SecretStr

from customer_sync.sandbox._common import ManualClock
from customer_sync.testing.clocks import FakeSleep
from customer_sync.testing.transports import RecordingTransport as _Recording
from customer_sync.sandbox.mailchimp import MailchimpSimulator

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
WEBHOOK_URL = "https://sync.example.org/webhooks/list"


class RecordingTransport(_Recording):
    """The shared recording transport, naming requests the way these tests compare them."""

    def routes(self) -> list[str]:
        """`METHOD path` of every request, ids replaced by `{id}`, in order."""
        out = []
        for request, _ in self.exchanges:
            parts = ["{id}" if len(p) in (10, 32) and p.isalnum() else p
                     for p in request.url.path.split("/")]
            out.append(f"{request.method} {'/'.join(parts)}")
        return out


def settings_for(sim: MailchimpSimulator, **overrides: object) -> MailchimpSettings:
    values: dict[str, object] = {
        "list_id": sim.list_id,
        "api_key": SecretStr(sim.api_key),
        "webhook_signing_secret": (SecretStr(sim.webhook_signing_secret)
                                   if sim.webhook_signing_secret else None),
        **overrides,
    }
    return MailchimpSettings.model_validate(values)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def fake_sleep(clock: ManualClock) -> FakeSleep:
    return FakeSleep(clock)


@pytest.fixture
def sim(clock: ManualClock) -> MailchimpSimulator:
    return MailchimpSimulator(clock=clock)


@pytest.fixture
def transport(sim: MailchimpSimulator) -> RecordingTransport:
    return RecordingTransport(sim)


@pytest.fixture
def make_connector(sim: MailchimpSimulator, transport: RecordingTransport, clock: ManualClock,
                   fake_sleep: FakeSleep) -> Callable[..., MailchimpConnector]:
    """Build (not open) a connector on the simulator, the manual clock and the fake sleep."""

    def make(**overrides: object) -> MailchimpConnector:
        return MailchimpConnector(settings_for(sim, **overrides), app="list",
                                  transport=transport, clock=clock, sleep=fake_sleep)

    return make


@pytest.fixture
async def connector(make_connector: Callable[..., MailchimpConnector]
                    ) -> AsyncIterator[MailchimpConnector]:
    async with make_connector(batch_poll_interval_s=1.0) as c:
        yield c
