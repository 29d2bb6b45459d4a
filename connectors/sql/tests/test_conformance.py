"""The sql connector passes the connector conformance suite, on a real SQLite table."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, DateTime, MetaData, Table, Text, create_engine, delete, insert, select, update
from sqlalchemy.pool import NullPool

from customer_sync.testing.conformance import ConnectorConformance
from customer_sync_connectors.sql import SqlConnector, SqlSettings


class SqlTableApi:
    """The conformance control surface over one SQLite table, edited as other programs would."""

    rate_limit = None
    late_arrival_s = 2.0  # the connector under test runs with lookback_s = 2

    def __init__(self, folder: Path) -> None:
        self.url = f"sqlite:///{folder}/app.db"
        self.engine = create_engine(self.url, poolclass=NullPool)
        self.table = Table(
            "people", MetaData(),
            Column("id", Text, primary_key=True),
            Column("email", Text, unique=True),  # a duplicate email is what this app refuses
            Column("first_name", Text),
            Column("last_name", Text),
            Column("updated_at", DateTime(timezone=True)),
        )
        self.table.create(self.engine)

    def sample_fields(self, i: int) -> dict[str, Any]:
        return {"email": f"person{i}@example.org", "first_name": f"First{i}", "last_name": f"Last{i}"}

    def seed(self, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> str:
        rid = str(uuid.uuid4())
        with self.engine.begin() as conn:
            conn.execute(insert(self.table).values(id=rid, updated_at=modified_at or datetime.now(UTC), **fields))
        return rid

    def edit(self, app_record_id: str, fields: Mapping[str, Any], *, modified_at: datetime | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(self.table).where(self.table.c.id == app_record_id)
                         .values(updated_at=modified_at or datetime.now(UTC), **fields))

    def remove(self, app_record_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(self.table).where(self.table.c.id == app_record_id))

    def fields_of(self, app_record_id: str) -> Mapping[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(self.table).where(self.table.c.id == app_record_id)).mappings().first()
        return dict(row) if row is not None else None

    def rejected_fields(self) -> dict[str, Any] | None:
        self.seed({"email": "taken@example.org"})
        return {"email": "taken@example.org", "first_name": "Dup"}

    def fail_next(self, status: int, *, times: int = 1, retry_after_s: float | None = None) -> bool:
        return False  # a database answers no HTTP statuses

    def statuses_served(self) -> list[int] | None:
        return None

    def webhook(self, app_record_id: str, *, kind: str = "upsert") -> None:
        return None  # databases send no webhooks

    def stale_webhook(self, app_record_id: str) -> None:
        return None


class TestSqlConformance(ConnectorConformance):
    @pytest.fixture
    def fake_api(self, tmp_path: Path):
        api = SqlTableApi(tmp_path)
        yield api
        api.engine.dispose()

    @pytest.fixture
    async def connector(self, fake_api: SqlTableApi):
        settings = SqlSettings(url=fake_api.url, table="people", page_size=5, lookback_s=2)
        async with SqlConnector(settings, app="crm") as sql:
            yield sql
