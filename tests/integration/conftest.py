"""A small world for engine tests: fake apps, a config over them, a real SQLite store, a clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from customer_sync.config import Config, load_config
from customer_sync.engine.runner import Engine, RunSummary
from customer_sync.store.db import Store
from customer_sync.store.tables import ChangeLogEntry, ConflictRow, CustomerRow, LinkRow, OutboxItem
from customer_sync.testing.fake_connector import FakeApp, FakeConnector

FIELDS: dict[str, Any] = {
    "email": "email",
    "first_name": "first",
    "last_name": "last",
    "phone": "phone",
    "address.country": "country",
    "tags": {"field": "tags", "transform": "csv"},
}


class Clock:
    """A shared fake clock: every reading is one second after the previous one."""

    def __init__(self) -> None:
        self.t = datetime(2026, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


class World:
    """Three (or more) fake apps synced through one engine and a real store."""

    def __init__(
        self,
        store: Store,
        *,
        apps: tuple[str, ...] = ("crm", "desk", "shop"),
        app_options: Mapping[str, Mapping[str, Any]] | None = None,
        conflicts: Mapping[str, Any] | None = None,
        custom_fields: Mapping[str, str] | None = None,
        fields: Mapping[str, Any] = FIELDS,
    ) -> None:
        self.store = store
        self.clock = Clock()
        self.apps = {name: FakeApp(f"{name}-{id(self)}", clock=self.clock) for name in apps}
        data = {
            "daemon": {"store_url": "sqlite://", "default_region": "US", "batch_size": 7},
            "conflicts": dict(conflicts or {}),
            "custom_fields": dict(custom_fields or {}),
            "apps": {
                name: {"connector": "fake", "settings": {"page_size": 5}, "fields": dict(fields),
                       **dict((app_options or {}).get(name, {}))}
                for name in apps
            },
        }
        self.config: Config = load_config(data=data, connectors={"fake": FakeConnector})

    def connectors(self) -> dict[str, FakeConnector]:
        return {
            name: FakeConnector(rt.connector_settings, app=name, data=self.apps[name])  # type: ignore[arg-type]
            for name, rt in self.config.apps.items()
        }

    def engine(self, *, faults: Callable[[str], None] | None = None) -> Engine:
        kw: dict[str, Any] = {"connectors": self.connectors(), "clock": self.clock}
        if faults is not None:
            kw["faults"] = faults
        return Engine(self.config, self.store, **kw)

    async def run(self, **kw: Any) -> RunSummary:
        async with self.engine() as engine:
            return await engine.run_once(**kw)

    # -- views -------------------------------------------------------------------------------------

    def rows(self, table: Any, *where: Any) -> list[dict[str, Any]]:
        with self.store.transaction() as conn:
            return [dict(r) for r in conn.execute(select(table.__table__).where(*where)).mappings()]

    def customers(self) -> list[dict[str, Any]]:
        return self.rows(CustomerRow, CustomerRow.__table__.c.deleted_at.is_(None))

    def links(self) -> list[dict[str, Any]]:
        return self.rows(LinkRow)

    def conflicts(self) -> list[dict[str, Any]]:
        return self.rows(ConflictRow)

    def outbox(self) -> list[dict[str, Any]]:
        return self.rows(OutboxItem)

    def changelog(self, kind: str | None = None) -> list[dict[str, Any]]:
        t = ChangeLogEntry.__table__
        return self.rows(ChangeLogEntry, *([t.c.kind == kind] if kind else []))

    def by_email(self, app: str) -> dict[str, dict[str, Any]]:
        """An app's live records keyed by lower-cased email."""
        return {str(f.get("email", "")).lower(): f for f in self.apps[app].live().values()}


def make_world(tmp_path: Path, open_store: Callable[[str], Store], **kw: Any) -> World:
    return World(open_store(f"sqlite:///{tmp_path}/store.db"), **kw)


import pytest  # noqa: E402


@pytest.fixture
def store(tmp_path: Path):
    """A real SQLite store, migrated, in the test's own folder."""
    from customer_sync.store.db import open_store

    s = open_store(f"sqlite:///{tmp_path}/store.db")
    yield s
    s.close()


@pytest.fixture
def world(store: Store, tmp_path: Path) -> Callable[..., World]:
    """Build a World over the test's store: `world(apps=(...), conflicts={...}, ...)`.
    `own_store=True` gives that world a store of its own (for a reference run)."""
    from customer_sync.store.db import open_store

    opened: list[Store] = []

    def build(*, own_store: bool = False, **kw: Any) -> World:
        if not own_store:
            return World(store, **kw)
        extra = open_store(f"sqlite:///{tmp_path}/store-{len(opened)}.db")
        opened.append(extra)
        return World(extra, **kw)

    yield build
    for s in opened:
        s.close()


@pytest.fixture
def base_fields() -> dict[str, Any]:
    """The default field map of the fake apps."""
    return dict(FIELDS)


@pytest.fixture
def world_cls() -> type[World]:
    """The World class, for tests that open their own store."""
    return World
