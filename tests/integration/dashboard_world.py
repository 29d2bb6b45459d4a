"""A small synced world for the dashboard tests: two real `sql` apps (SQLite files), the real
SQLite store, customers with Persian, Arabic and hostile names, a parked phone conflict and a
rejected phone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, create_engine, func, insert, select, update

from customer_sync.config import Config, load_config
from customer_sync.engine.runner import Engine
from customer_sync.store.db import Store, open_store
from customer_sync.store.tables import ConflictRow

APPS = ("crm", "shop")
COLUMNS = {"email": "text", "first_name": "text", "last_name": "text", "phone": "text"}
FIELDS = {"email": "email", "first_name": "first_name", "last_name": "last_name", "phone": "phone"}
TOKEN = "dashboard-test-token-0123456789"
PERSIAN = ("مریم", "رضایی")
ARABIC = ("فاطمة", "الزهراء")
HOSTILE = "<script>alert('x')</script>"


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class DashboardWorld:
    """The apps, the daemon's config and store, and the seeding that gives every dashboard
    section something to show."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.config: Config = load_config(data={
            "daemon": {"store_url": f"sqlite:///{folder}/store.db", "normalize_workers": 0,
                       "list_in_worker": False},
            "conflicts": {"default": "last_writer", "fields": {"phone": {"rule": "manual"}}},
            "apps": {app: {"connector": "sql", "fields": FIELDS, "poll_interval_s": 60, "settings": {
                "url": f"sqlite:///{folder}/{app}.db", "table": "people", "create_table": True,
                "column_types": COLUMNS}} for app in APPS},
        })
        self.store: Store = open_store(self.config.daemon.store_url)
        self.engines = {a: create_engine(f"sqlite:///{folder}/{a}.db") for a in APPS}
        self._tables: dict[str, Table] = {}

    def table(self, app: str) -> Table:
        if app not in self._tables:
            self._tables[app] = Table("people", MetaData(), autoload_with=self.engines[app])
        return self._tables[app]

    def add(self, app: str, **fields: Any) -> str:
        rid = str(uuid.uuid4())
        with self.engines[app].begin() as conn:
            conn.execute(insert(self.table(app)).values(id=rid, updated_at=_now(), **fields))
        return rid

    def edit(self, app: str, email: str, **fields: Any) -> None:
        t = self.table(app)
        with self.engines[app].begin() as conn:
            done = conn.execute(update(t).where(func.lower(t.c.email) == email).values(updated_at=_now(), **fields))
        assert 1 == done.rowcount

    def rows(self, app: str) -> list[dict[str, Any]]:
        t = self.table(app)
        with self.engines[app].connect() as conn:
            return [dict(r) for r in conn.execute(select(t).order_by(t.c.email)).mappings()]

    def conflicts(self, status: str = "parked") -> list[dict[str, Any]]:
        t = ConflictRow.__table__
        with self.store.transaction() as conn:
            return [dict(r) for r in conn.execute(select(t).where(t.c.status == status)).mappings()]

    async def sync(self) -> None:
        """Run passes until one writes and plans nothing (at most five)."""
        for _ in range(5):
            async with Engine(self.config, self.store) as engine:
                summary = await engine.run_once()
            assert {} == summary.failed_apps
            if (summary.dispatch.written, summary.process.planned) == (0, 0):
                return
        raise AssertionError("the daemon did not come to rest in five passes")

    async def seed(self) -> None:
        """Customers synced to both apps, then a phone edited differently in each (parked by
        the `manual` rule) and an invalid phone (rejected)."""
        await self.sync()  # creates the apps' tables
        self.add("crm", email="maryam@example.com", first_name=PERSIAN[0], last_name=PERSIAN[1],
                 phone="+14155550101")
        self.add("crm", email="fatima@example.com", first_name=ARABIC[0], last_name=ARABIC[1])
        self.add("shop", email="mallory@example.com", first_name=HOSTILE, last_name="O'Brien & Co")
        self.add("shop", email="bad.phone@example.com", first_name="Bad", last_name="Phone",
                 phone="not a phone")
        await self.sync()
        self.edit("crm", "maryam@example.com", phone="+14155550102")
        self.edit("shop", "maryam@example.com", phone="+14155550103")
        await self.sync()
        assert 1 == len(self.conflicts()), "the phone conflict was not parked"

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()
        self.store.close()
