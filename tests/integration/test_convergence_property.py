"""Property: any interleaving of creates, edits and deletes on three `sql` apps converges.

Hypothesis drives people editing three SQLite-backed `sql` apps while the daemon syncs at random
moments (a fresh engine each time, as after a restart). Once the daemon has run to quiet:
every linked record holds the canonical values, nobody exists twice, and a further round
writes nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData, Table, create_engine, delete, func, insert, select, update

from customer_sync.config import Config, load_config
from customer_sync.engine.runner import Engine
from customer_sync.store.db import open_store
from customer_sync.store.tables import CustomerRow, LinkRow

APPS = ("crm", "desk", "shop")
PEOPLE = ("ann@x.io", "bob@x.io", "cy@x.io", "di@x.io")
VALUES = {
    "first_name": ("Ann", "Bea", "Cid", None),
    "phone": ("+14155550100", "(415) 555-0101", "+14155550102", None),
    "tags": ("a", "a,b", "b,c", ""),
}
COLUMNS = {"email": "text", "first_name": "text", "phone": "text", "tags": "text"}
FIELDS = {"email": "email", "first_name": "first_name", "phone": "phone",
          "tags": {"field": "tags", "transform": "csv"}}

app_st = st.sampled_from(APPS)
person_st = st.sampled_from(PEOPLE)
field_st = st.sampled_from(sorted(VALUES))
op_st = st.one_of(
    st.tuples(st.just("create"), app_st, person_st, st.fixed_dictionaries(
        {k: st.sampled_from(v) for k, v in VALUES.items()})),
    st.tuples(st.just("edit"), app_st, person_st, field_st.flatmap(
        lambda f: st.tuples(st.just(f), st.sampled_from(VALUES[f])))),
    st.tuples(st.just("delete"), app_st, person_st),
    st.tuples(st.just("sync")),
)


class Apps:
    """The three apps' tables, edited as people using them would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.engines = {a: create_engine(f"sqlite:///{folder}/{a}.db") for a in APPS}
        self.tables: dict[str, Table] = {}

    def table(self, app: str) -> Table:
        if app not in self.tables:
            self.tables[app] = Table("people", MetaData(), autoload_with=self.engines[app])
        return self.tables[app]

    def live_id(self, app: str, email: str) -> Any:
        t = self.table(app)
        with self.engines[app].connect() as conn:
            return conn.execute(select(t.c.id).where(func.lower(t.c.email) == email)).scalar()

    def create(self, app: str, email: str, fields: dict[str, Any]) -> None:
        if self.live_id(app, email) is not None:
            return  # a person is entered once per app; the daemon must not duplicate either
        t = self.table(app)
        with self.engines[app].begin() as conn:
            conn.execute(insert(t).values(id=str(uuid.uuid4()), email=email.upper() if app == "desk" else email,
                                          updated_at=_now(), **fields))

    def edit(self, app: str, email: str, field: str, value: Any) -> None:
        rid = self.live_id(app, email)
        if rid is None:
            return
        t = self.table(app)
        with self.engines[app].begin() as conn:
            conn.execute(update(t).where(t.c.id == rid).values({field: value, "updated_at": _now()}))

    def delete(self, app: str, email: str) -> None:
        rid = self.live_id(app, email)
        if rid is None:
            return
        t = self.table(app)
        with self.engines[app].begin() as conn:
            conn.execute(delete(t).where(t.c.id == rid))

    def rows(self, app: str) -> list[dict[str, Any]]:
        t = self.table(app)
        with self.engines[app].connect() as conn:
            return [dict(r) for r in conn.execute(select(t)).mappings()]

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _config(folder: Path) -> Config:
    return load_config(data={
        "daemon": {"store_url": f"sqlite:///{folder}/store.db", "default_region": "US"},
        "conflicts": {"default": "last_writer"},
        "apps": {
            app: {"connector": "sql", "fields": FIELDS, "settings": {
                "url": f"sqlite:///{folder}/{app}.db", "table": "people", "create_table": True,
                "column_types": COLUMNS, "page_size": 3}}
            for app in APPS
        },
    })


async def _sync(config: Config, store: Any) -> Any:
    async with Engine(config, store) as engine:
        return await engine.run_once(reconcile=True)  # hard deletes are found by reconciling


async def _scenario(folder: Path, ops: list[tuple[Any, ...]]) -> None:
    config = _config(folder)
    store = open_store(config.daemon.store_url)
    apps = Apps(folder)
    try:
        await _sync(config, store)  # creates the apps' tables
        for op in ops:
            if op[0] == "create":
                apps.create(op[1], op[2], op[3])
            elif op[0] == "edit":
                apps.edit(op[1], op[2], *op[3])
            elif op[0] == "delete":
                apps.delete(op[1], op[2])
            else:
                await _sync(config, store)
        last = await _sync(config, store)
        assert {} == last.failed_apps
        _assert_converged(config, store, apps)
        again = await _sync(config, store)
        assert (0, 0, 0) == (again.dispatch.written, again.dispatch.created, again.process.planned)
    finally:
        store.close()
        apps.close()


def _assert_converged(config: Config, store: Any, apps: Apps) -> None:
    with store.transaction() as conn:
        customers = {r["customer_id"]: r["values"] for r in conn.execute(
            select(CustomerRow.__table__).where(CustomerRow.__table__.c.deleted_at.is_(None))).mappings()}
        links = [dict(r) for r in conn.execute(select(LinkRow.__table__).where(
            LinkRow.__table__.c.state == "active")).mappings()]
    emails = [v.get("email") for v in customers.values()]
    assert len(emails) == len(set(emails)), "a person exists twice in the store"
    for app in APPS:
        live = [str(r["email"]).lower() for r in apps.rows(app)]
        assert len(live) == len(set(live)), f"{app} holds a person twice"
    rows = {(app, str(r["id"])): r for app in APPS for r in apps.rows(app)}
    for link in links:
        values = customers.get(link["customer_id"])
        if values is None:
            continue
        row = rows.get((link["app"], link["app_record_id"]))
        assert row is not None, f"{link['app']} lost a linked record"
        held, errors = config.apps[link["app"]].mapping.to_canonical(row)
        assert [] == errors
        for name, value in held.items():
            assert (value or None) == (values.get(name) or None), (link["app"], name)


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=st.lists(op_st, min_size=1, max_size=14))
def test_any_interleaving_of_edits_converges_without_duplicates_or_echoes(tmp_path_factory, ops):
    """Whatever people do in the three apps and whenever the daemon runs, it ends converged."""
    asyncio.run(_scenario(tmp_path_factory.mktemp("apps"), ops))
