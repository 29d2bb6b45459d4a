"""The Zendesk connector passes the connector conformance suite against the Zendesk simulator.

The simulator runs on the wall clock here, with a small account limit (20 requests per second)
and export limit (10 per second) so the suite's burst check runs in seconds; the connector is
sized just under both. Webhook deliveries are the simulator's own recorded user events, signed
as Zendesk signs them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from customer_sync.sandbox.zendesk import ZendeskSimulator, sign
from customer_sync.testing.conformance import (
    ConnectorConformance,
    LostAnswerTransport,
    WebhookDelivery,
)
from customer_sync_connectors.zendesk import ZendeskConnector
from customer_sync_connectors.zendesk._fields import join_name, split_name

from .conftest import WEBHOOK_URL, RecordingTransport, settings_for  # noqa: TID252


def _sim_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """App fields as the simulator's seeding API takes them (one `name`)."""
    out = {k: v for k, v in fields.items() if k not in ("first_name", "last_name")}
    if "first_name" in fields or "last_name" in fields:
        out["name"] = join_name(fields.get("first_name"), fields.get("last_name"))
    return out


class ZendeskFakeApi:
    """The conformance control surface over a `ZendeskSimulator`."""

    rate_limit = (20, 1.0)
    late_arrival_s = 0.0  # the export cursor is a position: nothing arrives behind it

    def __init__(self) -> None:
        self.sim = ZendeskSimulator(rate_limit=self.rate_limit, export_rate_limit=(10, 1.0),
                                    webhook_url=WEBHOOK_URL)
        self.recording = RecordingTransport(self.sim)
        # A lost create_or_update_many still runs its job: Zendesk queued it before the
        # answer was lost, and works its queue whether or not anyone polls.
        self.transport = LostAnswerTransport(
            self.recording, after_lost=lambda request: self.sim.complete_jobs()
        )

    def sample_fields(self, i: int) -> dict[str, Any]:
        return {"email": f"person{i}@example.org", "first_name": f"First{i}",
                "last_name": f"Last{i}", "phone": f"+1555{i:07d}", "tags": [f"t{i % 3}"]}

    def seed(self, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> str:
        return str(self.sim.add_user(updated_at=modified_at, **_sim_fields(fields)))

    def edit(self, app_record_id: str, fields: Mapping[str, Any], *,
             modified_at: datetime | None = None) -> None:
        self.sim.edit_user(int(app_record_id), **_sim_fields(fields))

    def remove(self, app_record_id: str) -> None:
        self.sim.delete_user(int(app_record_id))

    def fields_of(self, app_record_id: str) -> Mapping[str, Any] | None:
        user = self.sim.get_user(int(app_record_id))
        if user is None or not user["active"]:
            return None
        first, last = split_name(user["name"], email=user["email"], phone=user["phone"])
        return {"email": user["email"], "first_name": first, "last_name": last,
                "phone": user["phone"], "tags": user["tags"]}

    def rejected_fields(self) -> dict[str, Any] | None:
        return {"email": "not-an-email-address", "first_name": "Refused"}

    def fail_next(self, status: int, *, times: int = 1, retry_after_s: float | None = None) -> bool:
        # The simulator sends Retry-After as given: 0 for a 5xx, so retries do not wait 7 s.
        wait_s = 0 if retry_after_s is None else retry_after_s
        self.sim.fail_next(times, status, retry_after_s=wait_s)  # type: ignore[arg-type]
        return True

    def statuses_served(self) -> list[int] | None:
        return self.recording.statuses

    def lose_answers(self, times: int) -> bool:
        """Zendesk carries out the next `times` user upserts; their answers are lost."""
        self.transport.lose(times, when=lambda r: r.method == "POST" and "create_or_update"
                            in r.url.path)
        return True

    def webhook(self, app_record_id: str, *, kind: str = "upsert") -> WebhookDelivery | None:
        subject = f"zen:user:{app_record_id}"
        wanted = "deleted" if kind == "delete" else None
        events = [e for e in self.sim.pending_webhooks if e["subject"] == subject
                  and (wanted is None or e["type"].endswith(wanted))]
        if not events:
            return None
        headers, body = self.sim.signed_webhook(events[-1])
        return WebhookDelivery(headers=headers, body=body, url=WEBHOOK_URL)

    def stale_webhook(self, app_record_id: str) -> WebhookDelivery | None:
        delivery = self.webhook(app_record_id)
        if delivery is None:
            return None
        timestamp = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = {"Content-Type": "application/json",
                   "X-Zendesk-Webhook-Signature": sign(self.sim.webhook_secret, timestamp,
                                                       delivery.body),
                   "X-Zendesk-Webhook-Signature-Timestamp": timestamp}
        return WebhookDelivery(headers=headers, body=delivery.body, url=WEBHOOK_URL)


class TestZendeskConformance(ConnectorConformance):
    @pytest.fixture
    def fake_api(self) -> ZendeskFakeApi:
        return ZendeskFakeApi()

    @pytest.fixture
    async def connector(self, fake_api: ZendeskFakeApi) -> AsyncIterator[ZendeskConnector]:
        settings = settings_for(
            fake_api.sim, page_size=10, rate_limit=18, rate_limit_window_s=1.0,
            export_rate_limit=9, export_rate_limit_window_s=1.0, job_poll_interval_s=0.01,
            job_timeout_s=5.0,
        )
        async with ZendeskConnector(settings, app="helpdesk", transport=fake_api.transport) as c:
            yield c


def test_fake_webhooks_are_the_simulators_user_events() -> None:
    """The deliveries the suite verifies are real recorded events, not hand-made ones."""
    api = ZendeskFakeApi()
    rid = api.seed(api.sample_fields(1))

    delivery = api.webhook(rid)

    assert delivery is not None
    assert "zen:event-type:user.created" == json.loads(delivery.body)["type"]
