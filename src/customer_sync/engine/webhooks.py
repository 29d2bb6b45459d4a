"""Webhook intake: verify a delivery, read its changes, and commit them to the inbox, or refuse it.

The API answers 2xx only after the inbox commit, so an acknowledged delivery is durable. The
commit never runs on the event loop (which also answers `/healthz` and every other delivery):
it runs on one of `INTAKE_THREADS` threads, in a transaction that waits for the store's write
lock only `LOCK_WAIT_S` (SQLite: the connection's busy timeout; PostgreSQL: `lock_timeout` and
`statement_timeout`, local to the transaction). A busy store is a `StoreBusy`, which the API
answers with 503 and `Retry-After` so that the vendor delivers again later.

The answer always follows the transaction's own outcome, never a timer racing it: a job still
queued after `QUEUE_WAIT_S` is cancelled before it touches the store, and a job that started is
awaited to its end (commit, or rollback on the short lock wait). So a delivery answered 503 is
never committed afterwards, and one answered 200 is committed. (One case stays unknowable: a
PostgreSQL connection lost during COMMIT. It is answered 503, and if the commit did land, the
vendor's retry is a duplicate, which the engine's content comparison makes harmless.)
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import insert, select
from sqlalchemy.exc import DBAPIError, OperationalError

from customer_sync.errors import AuthError, ConnectorError, StoreBusy, StoreError
from customer_sync.sdk.connector import AppRecord, Capability, Change
from customer_sync.store.inbox import inbox_row
from customer_sync.store.tables import AppState, InboxItem

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.engine import Connection

    from customer_sync.engine.runner import Engine
    from customer_sync.store.db import Store

__all__ = [
    "INTAKE_THREADS",
    "LOCK_WAIT_S",
    "QUEUE_WAIT_S",
    "accept_webhook",
    "is_store_busy",
    "parked_apps",
]

T = TypeVar("T")

#: Threads that write deliveries to the store, for the whole process. SQLite takes one writer
#: at a time, so more threads would only queue on its lock; four let a PostgreSQL store take a
#: burst of deliveries (HubSpot's default is 10 concurrent requests, webhooks-v3.json
#: `throttling`) while each waits briefly for its lock.
INTAKE_THREADS = 4
#: How long a delivery's transaction waits for the store's write lock before giving up.
LOCK_WAIT_S = 0.5
#: How long a delivery waits for a free intake thread before it is refused as busy.
QUEUE_WAIT_S = 0.5

_threads = ThreadPoolExecutor(max_workers=INTAKE_THREADS, thread_name_prefix="webhook-intake")
_inbox = InboxItem.__table__
_app_state = AppState.__table__
# SQLite result codes (the low byte of an extended code) that mean another connection holds a
# lock; PostgreSQL SQLSTATEs for lock_not_available, query_canceled (statement_timeout) and
# deadlock_detected.
_SQLITE_BUSY_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
_PG_BUSY_STATES = frozenset({"55P03", "57014", "40P01"})
_SELECT_PARKED = select(_app_state.c.app).where(_app_state.c.parked.is_(True))


async def accept_webhook(
    engine: Engine,
    app: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    url: str = "",
    method: str = "POST",
) -> int:
    """Verify a delivery to `app`, and commit its changes to the inbox; returns how many.

    The signature check and the parsing run on the event loop (both are bounded by the body's
    size); the inbox commit runs off it (see the module docstring). A delivery with no change
    for us (events about other objects) touches no store at all.

    Raises:
        AuthError: the signature does not verify, or is stale (answer 401).
        WebhookRefused: the body is malformed or out of bounds (a `ConnectorError`; answer 400).
        ConnectorError: the app is not open, or takes no webhooks (answer 400).
        StoreBusy: the store's lock was not had in time, or every intake thread was busy;
            nothing was written (answer 503 with `Retry-After`).
        StoreError: the store failed otherwise; nothing was written (answer 503).
    """
    connector = engine.connectors.get(app)
    if connector is None:
        raise ConnectorError("no such app is open", app=app)
    if Capability.WEBHOOKS not in connector.capabilities:
        raise ConnectorError("app does not take webhooks", app=app, connector=connector.name)
    if not connector.verify_webhook(headers, body, url=url, method=method):
        raise AuthError("webhook signature rejected", app=app, connector=connector.name)
    changes = connector.parse_webhook(body)
    if not changes:
        return 0
    rows = _inbox_rows(app, changes, now=engine.clock())
    await _in_store(engine.store, lambda conn: conn.execute(insert(_inbox), rows))
    return len(rows)


async def parked_apps(engine: Engine) -> list[str]:
    """The apps parked in the store, read in a transaction that takes the locks a delivery's
    commit would (for `/readyz`): a store that could not take a delivery now is busy, not ready.

    SQLite: the transaction's BEGIN IMMEDIATE takes the write lock. PostgreSQL: the inbox is
    locked in ROW EXCLUSIVE mode, the lock an INSERT takes, which waits only behind locks that
    would stop a delivery too (a migration, `LOCK TABLE`). Nothing is written.

    Raises:
        StoreBusy: the lock was not had in time, or every intake thread was busy.
        StoreError: the store cannot be reached.
    """
    postgres = engine.store.dialect_name == "postgresql"

    def read(conn: Connection) -> list[str]:
        if postgres:
            conn.exec_driver_sql("LOCK TABLE inbox IN ROW EXCLUSIVE MODE")
        return list(conn.execute(_SELECT_PARKED).scalars())

    return await _in_store(engine.store, read)


def _inbox_rows(app: str, changes: Sequence[Change], *, now: datetime) -> list[dict[str, Any]]:
    """One pending inbox row per change. A delete carries a deleted record at the time the
    vendor reported; an upsert carries the record when the delivery held it, else none (the
    engine reads it)."""
    rows = []
    for change in changes:
        record = change.record
        if change.kind == "delete":
            record = AppRecord(app_record_id=change.app_record_id, deleted=True,
                               modified_at=change.occurred_at)
        rows.append(inbox_row(app, record, "webhook", now, app_record_id=change.app_record_id))
    return rows


async def _in_store(store: Store, work: Callable[[Connection], T]) -> T:
    """`work` in one short transaction on an intake thread; its result, or why it failed.

    A job that has not started after `QUEUE_WAIT_S` is cancelled, so it never runs; a job that
    started is awaited to its end, which the short lock wait bounds.
    """
    job = _threads.submit(_run_briefly, store, work)
    outcome = asyncio.wrap_future(job)
    done, _ = await asyncio.wait({outcome}, timeout=QUEUE_WAIT_S)
    if not done and job.cancel():
        raise StoreBusy("every webhook intake thread is busy")
    return await outcome


def _run_briefly(store: Store, work: Callable[[Connection], T]) -> T:
    try:
        with _brief_transaction(store) as conn:
            return work(conn)
    except OperationalError as exc:
        if _is_busy(exc):
            raise StoreBusy(f"the store was busy for {LOCK_WAIT_S} s") from None
        raise StoreError(f"the store failed: {type(exc.orig).__name__}") from None


@contextlib.contextmanager
def _brief_transaction(store: Store) -> Iterator[Connection]:
    """A transaction that waits at most `LOCK_WAIT_S` for a lock, committed when the block ends.

    SQLite: the pooled connection's busy timeout is shortened before BEGIN IMMEDIATE (which
    takes the write lock) and restored after, set on the driver's connection directly because
    any statement through SQLAlchemy would begin the transaction first. PostgreSQL: `SET LOCAL`
    limits end with the transaction.
    """
    wait_ms = int(LOCK_WAIT_S * 1000)
    with store.engine.connect() as conn:
        if store.dialect_name != "sqlite":
            with conn.begin():
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = {wait_ms}")
                conn.exec_driver_sql(f"SET LOCAL statement_timeout = {2 * wait_ms}")
                yield conn
            return
        driver = conn.connection.dbapi_connection
        assert driver is not None
        (usual_ms,) = driver.execute("PRAGMA busy_timeout").fetchone()
        driver.execute(f"PRAGMA busy_timeout = {wait_ms}")
        try:
            with conn.begin():
                yield conn
        finally:
            try:
                driver.execute(f"PRAGMA busy_timeout = {int(usual_ms)}")
            except sqlite3.Error:
                conn.invalidate()  # never hand the pool a connection with the short wait


def is_store_busy(exc: DBAPIError) -> bool:
    """Whether a database error means a lock was not had in time: the store is busy, and the
    same work succeeds later (the dashboard answers such a read with a 503 page)."""
    return _is_busy(exc)


def _is_busy(exc: DBAPIError) -> bool:
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _SQLITE_BUSY_CODES
    return getattr(orig, "sqlstate", None) in _PG_BUSY_STATES
