"""The `acmecrm` connector passes customer-sync's conformance suite against the AcmeCRM fake.

The fake runs in-process behind `httpx.ASGITransport`. It enforces a small rate limit (20 calls
per second), and the connector is configured with the same limit, so the suite's burst check
takes about a second instead of ten.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from customer_sync.testing.conformance import ConnectorConformance, WebhookDelivery
from customer_sync_acmecrm import AcmeCrmConnector, AcmeCrmSettings
from customer_sync_acmecrm.fake import FIELDS, AcmeCrmFake

TOKEN = "conformance-token-0001"
SECRET = "conformance-webhook-secret"
RATE_LIMIT = (20, 1.0)
MAX_AGE_S = 300.0


class AcmeCrmApi:
    """The conformance suite's control surface (`FakeApi`) over an `AcmeCrmFake`."""

    rate_limit = RATE_LIMIT
    late_arrival_s = 0.0  # the fake stamps each change as it commits it: nothing arrives late

    def __init__(self) -> None:
        self.fake = AcmeCrmFake(api_token=TOKEN, webhook_secret=SECRET, rate_limit=RATE_LIMIT)
        self.transport = httpx.ASGITransport(app=self.fake)

    def sample_fields(self, i: int) -> dict[str, Any]:
        return {
            "email": f"person{i}@example.org",
            "first_name": f"First{i}",
            "last_name": f"Last{i}",
            "company": f"Company{i}",
        }

    def seed(self, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> str:
        return str(self.fake.put(fields, updated_at=modified_at)["id"])

    def edit(
        self, app_record_id: str, fields: Mapping[str, Any], *, modified_at: datetime | None = None
    ) -> None:
        self.fake.change(app_record_id, fields, updated_at=modified_at)

    def remove(self, app_record_id: str) -> None:
        self.fake.remove(app_record_id)

    def fields_of(self, app_record_id: str) -> Mapping[str, Any] | None:
        contact = self.fake.contacts.get(app_record_id)
        if contact is None or contact["deleted"]:
            return None
        return {k: v for k, v in contact.items() if k in FIELDS}

    def rejected_fields(self) -> dict[str, Any] | None:
        return {"email": "not-an-email-address", "first_name": "Refused"}

    def fail_next(self, status: int, *, times: int = 1, retry_after_s: float | None = None) -> bool:
        self.fake.fail_next(status, times=times, retry_after_s=retry_after_s)
        return True

    def statuses_served(self) -> list[int] | None:
        return list(self.fake.statuses)

    def webhook(self, app_record_id: str, *, kind: str = "upsert") -> WebhookDelivery | None:
        return self._delivery(app_record_id, time.time())

    def stale_webhook(self, app_record_id: str) -> WebhookDelivery | None:
        return self._delivery(app_record_id, time.time() - MAX_AGE_S - 60)

    def _delivery(self, app_record_id: str, signed_at: float) -> WebhookDelivery | None:
        """The fake's own events about the record, signed as AcmeCRM signs them."""
        events = [e for e in self.fake.events if e["contact_id"] == app_record_id]
        if not events:
            return None
        headers, body = self.fake.signed_delivery(events, signed_at=signed_at)
        return WebhookDelivery(headers=headers, body=body)


class TestAcmeCrmConformance(ConnectorConformance):
    """Every conformance check, against the AcmeCRM fake."""

    @pytest.fixture
    def fake_api(self) -> AcmeCrmApi:
        return AcmeCrmApi()

    # pytest_asyncio.fixture works in pytest-asyncio's strict mode too (the default).
    @pytest_asyncio.fixture
    async def connector(self, fake_api: AcmeCrmApi) -> AsyncIterator[AcmeCrmConnector]:
        settings = AcmeCrmSettings(
            base_url="https://api.acmecrm.example/v1",
            api_token=SecretStr(TOKEN),
            webhook_secret=SecretStr(SECRET),
            page_size=5,  # small pages, so the suite's listings cross page boundaries
            rate_limit_calls=RATE_LIMIT[0],
            rate_limit_window_s=RATE_LIMIT[1],
            webhook_max_age_s=MAX_AGE_S,
        )
        async with AcmeCrmConnector(settings, app="crm", transport=fake_api.transport) as c:
            yield c
