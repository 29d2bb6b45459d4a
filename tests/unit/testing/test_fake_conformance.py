"""The in-memory FakeConnector runs the conformance suite too, so the suite stays honest."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import pytest

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
