"""The `hubspot` connector passes the connector conformance suite against the HubSpot simulator.

The simulator runs in-process behind `httpx.ASGITransport`, on the wall clock, with a small rate
limit (20 calls per second, enforced with 429s) that the connector is configured with too, so
the suite's burst check takes about a second instead of ten. The suite runs twice: as the
connector is by default (creates without an email go to batch/create, found again by search),
and with `id_property` set on a portal that has that unique property (they are upserts).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from customer_sync.sandbox._common import epoch_ms
from customer_sync.sandbox.hubspot import HubSpotSimulator, sign_v3
from customer_sync.testing.conformance import (
    ConnectorConformance,
    LostAnswerTransport,
    WebhookDelivery,
)
from customer_sync_connectors.hubspot import HubSpotConnector, HubSpotSettings

TOKEN = "conformance-token-0001"
SECRET = "conformance-app-secret"
WEBHOOK_URL = "https://sync.example.org/webhooks/crm"
RATE_LIMIT = (20, 1.0)
LOOKBACK_S = 2.0
MAX_AGE_S = 300.0

ID_PROPERTY = "customer_sync_id"
_WRITES = ("/batch/create", "/batch/upsert", "/batch/update")

_UPSERT_EVENTS = ("contact.creation", "contact.propertyChange", "contact.restore")
_DELETE_EVENTS = ("contact.deletion", "contact.privacyDeletion")


class RecordingTransport(httpx.AsyncBaseTransport):
    """Passes requests on and notes every response's status code."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


class SimulatorApi:
    """The conformance suite's control surface over a `HubSpotSimulator`."""

    rate_limit = RATE_LIMIT
    late_arrival_s = LOOKBACK_S

    def __init__(self, *, unique_properties: tuple[str, ...] = ()) -> None:
        self.sim = HubSpotSimulator(
            rate_limit=RATE_LIMIT,
            app_secret=SECRET,
            access_token=TOKEN,
            webhook_url=WEBHOOK_URL,
            unique_properties=unique_properties,
        )
        self.losing = LostAnswerTransport(httpx.ASGITransport(app=self.sim.app))
        self.transport = RecordingTransport(self.losing)

    def sample_fields(self, i: int) -> dict[str, Any]:
        return {
            "email": f"person{i}@example.org",
            "firstname": f"First{i}",
            "lastname": f"Last{i}",
            "city": f"City{i}",
        }

    def seed(self, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> str:
        return self.sim.add_contact(fields, updated_at=modified_at)

    def edit(
        self, app_record_id: str, fields: Mapping[str, Any], *, modified_at: datetime | None = None
    ) -> None:
        if modified_at is not None:
            raise NotImplementedError("the simulator stamps edits with its own clock")
        self.sim.edit_contact(app_record_id, fields)

    def remove(self, app_record_id: str) -> None:
        self.sim.archive(app_record_id)

    def fields_of(self, app_record_id: str) -> Mapping[str, Any] | None:
        contact = self.sim.get_contact(app_record_id)
        if contact is None or contact["archived"]:
            return None
        return dict(contact["properties"])

    def rejected_fields(self) -> dict[str, Any] | None:
        return {"email": "not-an-email-address", "firstname": "Refused"}

    def fail_next(self, status: int, *, times: int = 1, retry_after_s: float | None = None) -> bool:
        # HubSpot sends no Retry-After (UNVERIFIED); the simulator neither, so retry_after_s is
        # not passed on: the connector has to wait without being told how long.
        self.sim.fail_next(times, status)
        return True

    def statuses_served(self) -> list[int] | None:
        return list(self.transport.statuses)

    def lose_answers(self, times: int) -> bool:
        """HubSpot carries out the next `times` batch writes; their answers are lost."""
        self.losing.lose(
            times, when=lambda r: r.method == "POST" and r.url.path.endswith(_WRITES)
        )
        return True

    def webhook(self, app_record_id: str, *, kind: str = "upsert") -> WebhookDelivery | None:
        return self._delivery(app_record_id, kind, datetime.now(UTC))

    def stale_webhook(self, app_record_id: str) -> WebhookDelivery | None:
        signed_at = datetime.now(UTC) - timedelta(seconds=MAX_AGE_S + 60)
        return self._delivery(app_record_id, "upsert", signed_at)

    def _delivery(
        self, app_record_id: str, kind: str, signed_at: datetime
    ) -> WebhookDelivery | None:
        """The simulator's own recorded events about the record, signed as it signs them."""
        types = _UPSERT_EVENTS if kind == "upsert" else _DELETE_EVENTS
        events = [
            e
            for e in self.sim.pending_webhooks
            if str(e["objectId"]) == app_record_id and e["subscriptionType"] in types
        ]
        if not events:
            return None
        body = json.dumps(events, separators=(",", ":")).encode()
        timestamp = str(epoch_ms(signed_at))
        headers = {
            "Content-Type": "application/json",
            "X-HubSpot-Request-Timestamp": timestamp,
            "X-HubSpot-Signature-v3": sign_v3(SECRET, "POST", WEBHOOK_URL, body, timestamp),
        }
        return WebhookDelivery(headers=headers, body=body, url=WEBHOOK_URL)


class TestHubSpotConformance(ConnectorConformance):
    """Every conformance check, against the HubSpot simulator."""

    @pytest.fixture
    def fake_api(self) -> SimulatorApi:
        return SimulatorApi()

    #: the connector's `id_property` setting
    id_property: str | None = None

    @pytest.fixture
    async def connector(self, fake_api: SimulatorApi) -> AsyncIterator[HubSpotConnector]:
        settings = HubSpotSettings(
            access_token=SecretStr(TOKEN),
            app_secret=SecretStr(SECRET),
            page_size=5,  # small pages, so the suite's listings cross page boundaries
            rate_limit_calls=RATE_LIMIT[0],
            rate_limit_window_s=RATE_LIMIT[1],
            lookback_s=LOOKBACK_S,
            webhook_max_age_s=MAX_AGE_S,
            id_property=self.id_property,
        )
        async with HubSpotConnector(settings, app="crm", transport=fake_api.transport) as c:
            yield c


class TestHubSpotConformanceWithIdProperty(TestHubSpotConformance):
    """Every conformance check again, with creates without an email keyed by `id_property`."""

    id_property = ID_PROPERTY

    @pytest.fixture
    def fake_api(self) -> SimulatorApi:
        return SimulatorApi(unique_properties=(ID_PROPERTY,))
