"""The in-memory FakeConnector runs the conformance suite too, so the suite stays honest."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest

from customer_sync.sdk.connector import AppRecord, WriteReceipt, fingerprint
from customer_sync.testing.conformance import ConnectorConformance
from customer_sync.testing.fake_connector import FakeApp, FakeConnector, FakeSettings


class FakeAppApi:
    """The conformance control surface over a FakeApp."""

    rate_limit = None
    late_arrival_s = 0.0

    def __init__(self) -> None:
        self.app = FakeApp(f"conformance-{id(self)}")

    def sample_fields(self, i: int) -> dict[str, Any]:
        return {"email": f"person{i}@example.org", "first": f"First{i}", "tags": f"t{i % 3}"}

    def seed(self, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> str:
        return self.app.put(fields, modified_at=modified_at)

    def edit(self, app_record_id: str, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> None:
        self.app.edit(app_record_id, **fields)
        if modified_at is not None:
            self.app.records[app_record_id]["modified_at"] = modified_at

    def remove(self, app_record_id: str) -> None:
        self.app.remove(app_record_id)

    def fields_of(self, app_record_id: str) -> Mapping[str, Any] | None:
        return self.app.live().get(app_record_id)

    def rejected_fields(self) -> dict[str, Any] | None:
        return {"email": "refused@example.org", "first": "__reject__"}

    def fail_next(self, status: int, *, times: int = 1, retry_after_s: float | None = None) -> bool:
        return False  # not an HTTP fake

    def lose_answers(self, times: int) -> bool:
        self.app.lose_answers("create", times)
        return True

    def statuses_served(self) -> list[int] | None:
        return None

    def webhook(self, app_record_id: str, *, kind: str = "upsert") -> None:
        return None  # the in-memory fake sends no webhooks

    def stale_webhook(self, app_record_id: str) -> None:
        return None


class TestFakeConnectorConformance(ConnectorConformance):
    @pytest.fixture
    def fake_api(self) -> FakeAppApi:
        return FakeAppApi()

    @pytest.fixture
    async def connector(self, fake_api: FakeAppApi):
        async with FakeConnector(FakeSettings(page_size=5), app="fake", data=fake_api.app) as c:
            yield c


# ------------------------------------------------------------------ the new checks catch bugs


class KeylessConnector(FakeConnector):
    """A connector whose create honours no idempotency key: every send makes a record."""

    async def create(self, fields: Mapping[str, Any], *, idempotency_key: str) -> WriteReceipt:
        self.data._maybe_fail("create")
        rid = self.data.put(fields)
        self.data._maybe_lose_answer("create")
        rec = self.data.records[rid]
        return WriteReceipt(app_record_id=rid, modified_at=rec["modified_at"],
                            fingerprint=fingerprint(fields))


class DeadRecordSearch(FakeConnector):
    """A connector whose email search also returns deleted records."""

    async def search_by_email(self, email: str) -> list[AppRecord]:
        return [self._record(rid) for rid, r in self.data.records.items()
                if str(r["fields"].get("email", "")).lower() == email.lower()]


@pytest.mark.parametrize("lost", [1, 3], ids=["lost-once", "lost-three-times"])
@pytest.mark.parametrize("on_the_wire", [True, False], ids=["lost-answers", "sent-again"])
async def test_the_lost_answer_check_catches_a_create_that_honours_no_key(
    lost: int, on_the_wire: bool
) -> None:
    """The suite's lost-answer check fails a connector that makes a record per send, whether
    the fake loses answers or the check only sends again."""
    api = FakeAppApi()
    if not on_the_wire:
        api.lose_answers = None  # type: ignore[assignment, method-assign]
    suite = ConnectorConformance()
    async with KeylessConnector(FakeSettings(page_size=5), app="fake", data=api.app) as connector:
        with pytest.raises(AssertionError):
            await suite.test_creates_whose_answers_were_lost_make_one_record_each(
                connector, api, lost)


async def test_the_email_search_check_catches_deleted_records() -> None:
    """The suite's search_by_emails check fails a connector that returns deleted records."""
    api = FakeAppApi()
    suite = ConnectorConformance()
    async with DeadRecordSearch(FakeSettings(page_size=5), app="fake", data=api.app) as connector:
        with pytest.raises(AssertionError):
            await suite.test_search_by_emails_finds_the_live_records_holding_them(connector, api)
