"""The Chatwoot connector passes the connector conformance suite against the Chatwoot simulator.

The simulator runs on the wall clock here, with a small limit (20 requests per second, and 10
searches) so the suite's burst check runs in seconds; the connector is sized just under both.
Webhook deliveries are the simulator's own recorded contact events, signed as Chatwoot signs
them. The connector is not INCREMENTAL (Chatwoot has no changed-since filter), so the suite's
cursor checks skip; deletes are seen by the id scan.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from typing import Any

import pytest
from customer_sync_connectors.chatwoot import ChatwootConnector

from customer_sync.sandbox.chatwoot import ChatwootSimulator
from customer_sync.testing.conformance import (
    ConnectorConformance,
    LostAnswerTransport,
    WebhookDelivery,
)

from .conftest import WEBHOOK_URL, RecordingTransport, settings_for

# app fields -> what the simulator's seeding API takes
_SIM_KEYS = {"name": "name", "email": "email", "phone_number": "phone_number",
             "identifier": "identifier"}


def _sim_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {_SIM_KEYS[k]: v for k, v in fields.items() if k in _SIM_KEYS}
    custom = {k.split(".", 1)[1]: v for k, v in fields.items()
              if k.startswith("custom_attributes.")}
    if custom:
        out["custom_attributes"] = custom
    return out


class ChatwootFakeApi:
    """The conformance control surface over a `ChatwootSimulator`."""

    rate_limit = (20, 1.0)
    late_arrival_s = 0.0

    def __init__(self) -> None:
        self.sim = ChatwootSimulator(rate_limit=self.rate_limit, search_rate_limit=(10, 1.0),
                                     webhook_url=WEBHOOK_URL)
        self.recording = RecordingTransport(self.sim)
        self.transport = LostAnswerTransport(self.recording)

    def sample_fields(self, i: int) -> dict[str, Any]:
        return {"email": f"person{i}@example.org", "name": f"First{i} Last{i}",
                "phone_number": f"+4915{i:09d}", "custom_attributes.plan": f"plan-{i % 3}"}

    def seed(self, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> str:
        return str(self.sim.add_contact(**_sim_fields(fields)))

    def edit(self, app_record_id: str, fields: Mapping[str, Any], *,
             modified_at: datetime | None = None) -> None:
        self.sim.edit_contact(int(app_record_id), **_sim_fields(fields))

    def remove(self, app_record_id: str) -> None:
        self.sim.delete_contact(int(app_record_id))

    def fields_of(self, app_record_id: str) -> Mapping[str, Any] | None:
        contact = self.sim.contact(int(app_record_id))
        if contact is None:
            return None
        return {"email": contact["email"], "name": contact["name"],
                "phone_number": contact["phone_number"],
                **{f"custom_attributes.{k}": v for k, v in contact["custom_attributes"].items()}}

    def rejected_fields(self) -> dict[str, Any] | None:
        return {"email": "not an email", "name": "Refused"}

    def fail_next(self, status: int, *, times: int = 1, retry_after_s: float | None = None) -> bool:
        self.sim.fail_next(times, status, retry_after_s=retry_after_s)
        return True

    def statuses_served(self) -> list[int] | None:
        return self.recording.statuses

    def lose_answers(self, times: int) -> bool:
        """Chatwoot carries out the next `times` contact creates; their answers are lost."""
        self.transport.lose(times, when=lambda r: r.method == "POST"
                            and r.url.path.endswith("/contacts"))
        return True

    def webhook(self, app_record_id: str, *, kind: str = "upsert") -> WebhookDelivery | None:
        events = [e for e in self.sim.pending_webhooks if str(e["id"]) == app_record_id]
        if not events or kind == "delete":
            return None
        headers, body = self.sim.signed_webhook(events[-1])
        return WebhookDelivery(headers=headers, body=body, url=WEBHOOK_URL)

    def stale_webhook(self, app_record_id: str) -> WebhookDelivery | None:
        events = [e for e in self.sim.pending_webhooks if str(e["id"]) == app_record_id]
        if not events:
            return None
        headers, body = self.sim.signed_webhook(events[-1], timestamp=int(time.time()) - 3600)
        return WebhookDelivery(headers=headers, body=body, url=WEBHOOK_URL)


class TestChatwootConformance(ConnectorConformance):
    @pytest.fixture
    def fake_api(self) -> ChatwootFakeApi:
        return ChatwootFakeApi()

    @pytest.fixture
    async def connector(self, fake_api: ChatwootFakeApi) -> AsyncIterator[ChatwootConnector]:
        settings = settings_for(fake_api.sim, rate_limit=18, rate_limit_window_s=1.0,
                                search_rate_limit=9, search_rate_limit_window_s=1.0)
        async with ChatwootConnector(settings, app="inbox", transport=fake_api.transport) as c:
            yield c


def test_fake_webhooks_are_the_simulators_contact_events() -> None:
    """The deliveries the suite verifies are real recorded events, not hand-made ones."""
    api = ChatwootFakeApi()
    rid = api.seed(api.sample_fields(1))

    delivery = api.webhook(rid)

    assert delivery is not None
    assert "contact_created" == json.loads(delivery.body)["event"]
