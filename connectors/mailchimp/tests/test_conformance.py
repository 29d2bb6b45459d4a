"""The Mailchimp connector passes the connector conformance suite against the Mailchimp simulator.

The simulator runs on the wall clock with its documented limit of 10 simultaneous connections
and a small latency per request, so concurrent calls really overlap and the burst check tests
the connector's connection cap. Webhook deliveries are the simulator's own recorded events,
signed as Mailchimp signs them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from customer_sync_connectors.mailchimp import MailchimpConnector

from customer_sync.sandbox.mailchimp import MailchimpSimulator, parse_form, subscriber_hash
from customer_sync.testing.conformance import (
    ConnectorConformance,
    LostAnswerTransport,
    WebhookDelivery,
)

from .conftest import WEBHOOK_URL, RecordingTransport, settings_for

_MERGE = ("FNAME", "LNAME", "PHONE")


class MailchimpFakeApi:
    """The conformance control surface over a `MailchimpSimulator`."""

    rate_limit = (10, 1.0)  # 10 requests in flight at once (a connection limit, not a window)
    late_arrival_s = 300.0  # the connector's window for members that show up late

    def __init__(self) -> None:
        self.sim = MailchimpSimulator(latency_s=0.002, batch_polls=2)
        self.recording = RecordingTransport(self.sim)
        # A lost POST /batches still runs: Mailchimp queued it before the answer was lost.
        self.transport = LostAnswerTransport(
            self.recording, after_lost=lambda request: self.sim.complete_batches())

    def sample_fields(self, i: int) -> dict[str, Any]:
        return {"email_address": f"person{i}@example.org", "FNAME": f"First{i}",
                "LNAME": f"Last{i}", "PHONE": f"+1555{i:07d}", "status": "subscribed",
                "tags": [f"t{i % 3}"]}

    def seed(self, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> str:
        return self.sim.add_member(
            fields["email_address"], status=fields.get("status", "subscribed"),
            merge_fields={k: v for k, v in fields.items() if k in _MERGE},
            tags=list(fields.get("tags", [])), last_changed=modified_at)

    def edit(self, app_record_id: str, fields: Mapping[str, Any], *,
             modified_at: datetime | None = None) -> None:
        self.sim.edit_member(app_record_id, merge_fields={k: v for k, v in fields.items()
                                                          if k in _MERGE},
                             tags=fields.get("tags"), last_changed=modified_at)

    def remove(self, app_record_id: str) -> None:
        self.sim.archive(app_record_id)

    def fields_of(self, app_record_id: str) -> Mapping[str, Any] | None:
        member = self.sim.get_member(app_record_id)
        if member is None or member["status"] == "archived":
            return None
        return {"email_address": member["email_address"], "status": member["status"],
                **{k: member["merge_fields"][k] for k in _MERGE},
                "tags": sorted(t["name"] for t in member["tags"])}

    def rejected_fields(self) -> dict[str, Any] | None:
        return {"email_address": "not-an-email-address@", "FNAME": "Refused"}

    def fail_next(self, status: int, *, times: int = 1, retry_after_s: float | None = None) -> bool:
        self.sim.fail_next(times, status, retry_after_s=retry_after_s)
        return True

    def statuses_served(self) -> list[int] | None:
        return self.recording.statuses

    def lose_answers(self, times: int) -> bool:
        """Mailchimp carries out the next `times` member upserts; their answers are lost."""
        self.transport.lose(times, when=lambda r: r.method in ("PUT", "POST")
                            and ("/members/" in r.url.path or r.url.path.endswith("/batches")))
        return True

    def webhook(self, app_record_id: str, *, kind: str = "upsert") -> WebhookDelivery | None:
        for pairs in reversed(self.sim.pending_webhooks):
            form = dict(pairs)
            email = form.get("data[email]")
            if email and subscriber_hash(email) == app_record_id:
                headers, body = self.sim.webhook_delivery(pairs)
                return WebhookDelivery(headers=headers, body=body, url=WEBHOOK_URL)
        return None

    def stale_webhook(self, app_record_id: str) -> WebhookDelivery | None:
        delivery = self.webhook(app_record_id)
        if delivery is None:
            return None
        headers, body = self.sim.webhook_delivery(
            parse_form(delivery.body), signed_at=datetime.now(UTC) - timedelta(hours=1))
        return WebhookDelivery(headers=headers, body=body, url=WEBHOOK_URL)


class TestMailchimpConformance(ConnectorConformance):
    @pytest.fixture
    def fake_api(self) -> MailchimpFakeApi:
        return MailchimpFakeApi()

    @pytest.fixture
    async def connector(self, fake_api: MailchimpFakeApi) -> AsyncIterator[MailchimpConnector]:
        settings = settings_for(fake_api.sim, page_size=10, batch_threshold=3,
                                batch_poll_interval_s=0.01, batch_timeout_s=5.0)
        async with MailchimpConnector(settings, app="list", transport=fake_api.transport) as c:
            yield c


def test_fake_webhooks_are_the_simulators_member_events() -> None:
    """The deliveries the suite verifies are real recorded events, not hand-made ones."""
    api = MailchimpFakeApi()
    rid = api.seed(api.sample_fields(1))

    delivery = api.webhook(rid)

    assert delivery is not None
    assert "subscribe" == dict(parse_form(delivery.body))["type"]


def test_simulator_is_the_one_the_tests_configure() -> None:
    """The conformance simulator keeps Mailchimp's documented connection limit."""
    assert 10 == MailchimpSimulator().max_connections
