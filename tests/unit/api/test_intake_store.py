"""The intake's store writes: off the event loop, with a short lock wait, and never committed
after the delivery was answered 503 (`engine/webhooks.py`), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from customer_sync.api.app import RETRY_AFTER_S, create_app
from customer_sync.engine import webhooks
from customer_sync.engine.runner import Engine
from customer_sync.errors import StoreBusy
from customer_sync.store.db import Store, open_store

from .conftest import BASE_URL, inbox, server_script, signed  # noqa: TID252


def delivery(object_id: int) -> bytes:
    return json.dumps([{"subscriptionType": "contact.creation", "objectId": object_id}]).encode()


@pytest.fixture
async def engine_on(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    """An opened engine with the intake's two apps over the store URL the test names."""
    url = request.getfixturevalue(request.param)
    config = server_script.intake_config(url)
    store = open_store(url)
    async with Engine(config, store, connectors=server_script.intake_connectors(config)) as engine:
        yield engine
    store.close()


def sqlite_path(store: Store) -> Path:
    return Path(str(store.engine.url.database))


@pytest.mark.parametrize("engine_on", ["sqlite_url"], indirect=True)
async def test_deliveries_answered_busy_are_never_committed_later(engine_on: Engine) -> None:
    """With another connection holding the write lock, twice as many deliveries as there are
    intake threads arrive at once: every one is refused as busy (some waited for the lock, the
    rest for a thread), and none of them is in the inbox afterwards, once the lock is free and
    a later delivery has gone through."""
    engine = engine_on
    count = 2 * webhooks.INTAKE_THREADS
    lock = sqlite3.connect(sqlite_path(engine.store), isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        url = f"{BASE_URL}/webhooks/crm"
        outcomes = await asyncio.gather(
            *(engine.accept_webhook("crm", signed("crm", BASE_URL, delivery(i)), delivery(i),
                                    url=url)
              for i in range(1, count + 1)),
            return_exceptions=True)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert [StoreBusy] * count == [type(o) for o in outcomes]
    assert {"every webhook intake thread is busy", "the store was busy for 0.5 s"} >= {
        str(o) for o in outcomes}
    later = count + 1
    assert 1 == await engine.accept_webhook("crm", signed("crm", BASE_URL, delivery(later)),
                                            delivery(later), url=url)
    assert [str(later)] == [row["app_record_id"] for row in inbox(engine.store)]


@pytest.mark.parametrize("engine_on", ["sqlite_url"], indirect=True)
async def test_the_pooled_connection_keeps_its_usual_busy_timeout(engine_on: Engine) -> None:
    """The short lock wait is the intake's alone: after a busy delivery, the pool's connections
    wait as long as the store configured (10 s) for the engine's own transactions."""
    engine = engine_on
    lock = sqlite3.connect(sqlite_path(engine.store), isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreBusy):
            await engine.accept_webhook("crm", signed("crm", BASE_URL, delivery(1)), delivery(1),
                                        url=f"{BASE_URL}/webhooks/crm")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    with engine.store.engine.connect() as conn:
        driver = conn.connection.dbapi_connection
        assert driver is not None
        assert (10_000,) == driver.execute("PRAGMA busy_timeout").fetchone()


@pytest.mark.parametrize("engine_on", ["pg_store_url"], indirect=True)
async def test_a_locked_postgresql_inbox_is_a_quick_503_and_the_redelivery_is_kept(
    engine_on: Engine,
) -> None:
    """PostgreSQL: while another session holds the inbox table locked, a delivery gets 503 with
    Retry-After within 2 s (lock_timeout, local to the intake's transaction), /healthz answers
    and /readyz says busy; after the lock is released the re-delivery is stored once."""
    engine = engine_on
    url = engine.store.engine.url
    other = create_engine(url, poolclass=NullPool)
    body = delivery(42)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(engine)),
                                 base_url=BASE_URL) as http:
        with other.connect() as holder:
            holder.execute(text("LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE"))
            started = time.monotonic()
            refused = await http.post("/webhooks/crm", content=body,
                                      headers=signed("crm", BASE_URL, body))
            took = time.monotonic() - started
            health = await http.get("/healthz")
            ready = await http.get("/readyz")
            holder.rollback()
        accepted = await http.post("/webhooks/crm", content=body,
                                   headers=signed("crm", BASE_URL, body))
    other.dispose()
    assert (503, str(RETRY_AFTER_S)) == (refused.status_code, refused.headers["retry-after"])
    assert took < 2.0, f"answered after {took:.2f} s"
    assert 200 == health.status_code
    assert (503, "store busy") == (ready.status_code, ready.json()["status"])
    assert (200, {"accepted": 1}) == (accepted.status_code, accepted.json())
    assert [("crm", "42", "webhook")] == [(r["app"], r["app_record_id"], r["source"])
                                         for r in inbox(engine.store)]
