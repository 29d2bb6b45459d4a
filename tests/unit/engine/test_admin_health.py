"""The dashboard's read models in `engine.admin`: an app's health in one word, and the change
log counted per app and hour (on SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from customer_sync.engine import admin
from customer_sync.store.db import Store, open_store
from customer_sync.store.tables import ConflictRow
from customer_sync.store.uow import UnitOfWork

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
KEY = b"k" * 32
HEALTHY: dict[str, Any] = {"enabled": True, "paused_until": None, "parked": False, "consecutive_failures": 0,
                           "lag_s": 20.0, "listed": True, "pending_writes": 0}


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as store:
        yield store


def _log(store: Store, at: datetime, kind: str, app: str, count: int = 1) -> None:
    with store.transaction() as conn:
        uow = UnitOfWork(conn, identity_key=KEY, now=at, run_id="r")
        for _ in range(count):
            uow.log(kind, app=app, app_record_id="1", customer_id="c")
        uow.flush()


def _conflict(store: Store, at: datetime) -> None:
    with store.transaction() as conn:
        conn.execute(insert(ConflictRow.__table__).values(kind="field", status="parked", created_at=at,
                                                          customer_id="c", field="phone"))


def test_activity_counts_writes_errors_and_conflicts_per_hour(store: Store) -> None:
    """Each entry lands in its hour; errors apart from writes; entries before the window, and
    other kinds, are not counted."""
    until = T0 + timedelta(hours=1)  # buckets: 09:00, 10:00, 11:00, 12:00
    _log(store, T0 - timedelta(hours=5), "written", "crm", 4)  # before the window
    _log(store, T0 - timedelta(hours=3), "written", "crm", 2)
    _log(store, T0 - timedelta(minutes=90), "written", "shop")
    _log(store, T0 - timedelta(minutes=90), "observed", "shop", 3)
    _log(store, T0 + timedelta(minutes=59), "written", "crm")
    _log(store, T0 + timedelta(minutes=5), "error", "shop", 2)
    _conflict(store, T0 - timedelta(hours=9))
    _conflict(store, T0 - timedelta(minutes=30))
    _conflict(store, T0 + timedelta(minutes=30))

    act = admin.activity(store, until=until, buckets=4)

    assert [T0 - timedelta(hours=3) + timedelta(hours=i) for i in range(4)] == act["starts"]
    assert {"crm": [2, 0, 0, 1], "shop": [0, 1, 0, 0]} == act["written"]
    assert {"shop": [0, 0, 0, 2]} == act["errors"]
    assert [0, 0, 1, 1] == act["conflicts"]
    assert act["truncated"] is False


def test_activity_reads_at_most_its_row_cap(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A window busier than the cap is counted up to the cap and says it was cut."""
    monkeypatch.setattr(admin, "ACTIVITY_MAX_ROWS", 2000)
    monkeypatch.setattr(admin, "_ACTIVITY_CHUNK", 500)
    _log(store, T0, "written", "crm", 2300)
    act = admin.activity(store, until=T0 + timedelta(hours=1), buckets=2)
    assert act["truncated"] is True
    assert 2000 == sum(act["written"]["crm"])


def test_activity_reads_in_chunks_to_the_window_start(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks smaller than the window still count every entry in it, and nothing before it."""
    monkeypatch.setattr(admin, "_ACTIVITY_CHUNK", 7)
    _log(store, T0 - timedelta(hours=3), "written", "crm", 30)
    _log(store, T0, "observed", "crm", 20)
    _log(store, T0, "written", "shop", 23)
    act = admin.activity(store, until=T0 + timedelta(hours=1), buckets=2)
    assert act["truncated"] is False
    assert {"shop": [0, 23]} == act["written"]


@pytest.mark.parametrize(("status", "counts", "state"), [
    ({}, (10, 0), "in sync"),
    ({"enabled": False}, (0, 0), "paused"),
    ({"paused_until": T0}, (0, 0), "paused"),
    ({"paused_by_operator_at": T0}, (0, 0), "paused"),
    ({"parked": True}, (0, 0), "failing"),
    ({"consecutive_failures": 2}, (0, 0), "failing"),
    ({}, (5, 5), "failing"),
    ({}, (0, 4), "in sync"),  # too few to call it a failing app
    ({"lag_s": None}, (0, 0), "lagging"),
    ({"listed": False}, (0, 0), "lagging"),
    ({"lag_s": 181.0}, (0, 0), "lagging"),
    ({"lag_s": 179.0}, (0, 0), "in sync"),
    ({"pending_writes": 100}, (0, 0), "lagging"),
    ({"parked": True, "enabled": False}, (0, 0), "paused"),
], ids=["healthy", "disabled", "vendor asked to wait", "operator paused", "credentials refused", "last passes failed",
        "half the changes failed", "few errors", "never polled", "first listing", "lag over 3 polls",
        "lag under 3 polls", "writes piling up", "paused wins"])
def test_app_health(status: dict[str, Any], counts: tuple[int, int], state: str) -> None:
    """Paused, then failing, then lagging, else in sync (poll every 60 s: lagging past 180 s)."""
    written, errors = counts
    got, why = admin.app_health({**HEALTHY, **status}, poll_interval_s=60, written=written, errors=errors)
    assert state == got
    assert why
