"""The engine on both stores: the same scenarios on SQLite and on a real PostgreSQL server.

The SQL is meant to be portable; these run the paths that touch every table (matching, merge
with a conflict, dispatch with a crash before confirm, deletes, dry-run) on each backend.
"""

from __future__ import annotations

import pytest

from customer_sync.store.db import open_store
from customer_sync.store.tables import PendingDelete


class Crash(BaseException):
    """Stands for kill -9."""


@pytest.fixture
def make_world(store_url, world_cls):
    """Build Worlds on a store of the parametrized backend (SQLite, then PostgreSQL)."""
    store = open_store(store_url)
    yield lambda **kw: world_cls(store, **kw)
    store.close()


async def test_sync_conflict_crash_and_delete_on_each_backend(make_world):
    """Match, merge with a decided conflict, a crash between send and confirm, and an approved
    delete behave the same on SQLite and PostgreSQL."""
    w = make_world(conflicts={"default": "last_writer"}, app_options={"crm": {"on_delete": "approve"}})
    ann = w.apps["crm"].put({"email": "Ann@X.io", "first": "Ann", "tags": "a"})
    w.apps["desk"].put({"email": "ann@x.io", "phone": "+14155550100", "tags": "b"})
    await w.run()
    assert 1 == len(w.customers())
    for app in w.apps:
        assert "a,b" == w.by_email(app)["ann@x.io"]["tags"]

    desk_id = next(iter(w.apps["desk"].live()))
    w.apps["crm"].edit(ann, first="Anna")
    w.apps["desk"].edit(desk_id, first="Anne")
    seen = {"n": 0}

    def crash_before_confirm(point: str) -> None:
        if point == "before_confirm":
            seen["n"] += 1
            if seen["n"] == 1:
                raise Crash(point)

    with pytest.raises(Crash):
        async with w.engine(faults=crash_before_confirm) as engine:
            await engine.run_once()
    await w.run()
    names = {w.by_email(app)["ann@x.io"]["first"] for app in w.apps}
    assert {"Anne"} == names
    assert [("first_name", "decided")] == [(c["field"], c["status"]) for c in w.conflicts()]
    # explain names the rule and the conflict (its id returned by the insert on either backend)
    [conflict] = w.conflicts()
    [customer] = w.customers()
    assert {"rule": "last_writer", "conflict_id": conflict["id"]} == {
        k: customer["provenance"]["first_name"].get(k) for k in ("rule", "conflict_id")}

    w.apps["crm"].remove(ann)
    await w.run()
    (request,) = w.rows(PendingDelete)
    assert ("crm", "pending") == (request["app"], request["status"])
    again = await w.run()
    assert (0, 0) == (again.dispatch.written, again.process.planned)


async def test_dry_run_rolls_back_on_each_backend(make_world):
    """A dry run leaves the store untouched on both backends."""
    w = make_world(apps=("crm", "desk"))
    w.apps["crm"].put({"email": "t@x.io", "first": "Tia"})
    async with w.engine() as engine:
        plan = await engine.dry_run()
    assert [("desk", "create")] == [(p["app"], p["op"]) for p in plan]
    assert [] == w.customers()
