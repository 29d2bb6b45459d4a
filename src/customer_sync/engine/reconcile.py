"""Reconciliation: compare a whole app with what the store believes, to find what a cursor misses.

An incremental listing trusts the app's modified times. Two kinds of change slip past it:
- **hard deletes**, which leave no row to list: found by comparing the app's live ids with the
  links (`scan_ids`, for connectors with `ID_SCAN`);
- **edits saved with a modified time older than the cursor** (a writer whose clock is behind,
  a row committed late, an import that keeps old timestamps): found by listing the whole app
  and comparing each record's content with its base (`poll_app(full=True)`). Unchanged records
  are recognised by their fingerprint before any normalization, so a scan costs the reading.

How often an app is reconciled is `reconcile_interval_s` (per app; the connector declares a
default, and 0 turns it off). The first complete listing of an app counts as one.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import insert, select

from customer_sync.engine.poll import poll_app
from customer_sync.sdk.connector import AppRecord, Capability
from customer_sync.store import app_state
from customer_sync.store.inbox import inbox_row
from customer_sync.store.tables import InboxItem, LinkRow

if TYPE_CHECKING:
    from customer_sync.engine.runner import Engine

__all__ = ["due_for_reconcile", "reconcile_app", "scan_ids"]

log = structlog.get_logger("customer_sync.engine")
inbox_t = InboxItem.__table__
links_t = LinkRow.__table__


def due_for_reconcile(engine: Engine, apps: list[str], now: datetime, *, force: bool = False) -> set[str]:
    """Those of `apps` whose reconciliation is due: listed once already, reconciliation on,
    and the interval passed since the last (`force`: whatever the interval)."""
    states = app_state.read(engine.store)
    due = set()
    for app in apps:
        interval = engine.config.reconcile_interval_s(app)
        st = states.get(app)
        if not interval or st is None or st["listed_at"] is None:
            continue  # off, or never listed: the first listing is a full one anyway
        last = st["reconciled_at"]
        if force or last is None or now - last >= timedelta(seconds=interval):
            due.add(app)
    return due


async def reconcile_app(engine: Engine, app: str) -> int:
    """Scan the app for hard deletes and for edits the cursor passed over; returns how many
    records it found changed (deletes included)."""
    started = engine.clock()
    gone = await scan_ids(engine, app)
    result = await poll_app(engine, app, full=True)
    await engine.db(app_state.mark_reconciled, engine.store, app, started)
    if gone or result.fresh:
        log.info("app.reconciled", app=app, deletes=gone, changed=result.fresh)
    return gone + result.fresh


async def scan_ids(engine: Engine, app: str) -> int:
    """Compare an app's live ids with its links; a linked record that is gone is a delete.

    The ids are read before the links: a record linked after the scan began is not taken for
    gone (its create may have reached the app after the id listing passed it). A linked id the
    scan did not see is read once more before it counts as gone: an id scan over page numbers
    can skip a live record when a delete shifts the pages under it, and some apps leave records
    out of their listing (Chatwoot lists only contacts with an email, phone or identifier).
    """
    connector = engine.connectors[app]
    if Capability.ID_SCAN not in connector.capabilities:
        return 0
    started = engine.clock()
    live: set[str] = set()
    async for chunk in connector.list_ids():
        live.update(chunk)
    missing = await engine.db(_missing, engine, app, live, started)
    if missing:
        still = {r.app_record_id for r in await connector.read(missing) if not r.deleted}
        missing = [rid for rid in missing if rid not in still]
    return await engine.db(_queue_gone, engine, app, missing)


def _missing(engine: Engine, app: str, live: set[str], started: datetime) -> list[str]:
    """The records linked before `started` that are not among `live`."""
    with engine.store.transaction() as conn:
        linked = conn.execute(
            select(links_t.c.app_record_id).where(
                links_t.c.app == app, links_t.c.state.in_(("active", "duplicate")), links_t.c.linked_at < started)
        ).scalars().all()
    return [rid for rid in linked if rid not in live]


def _queue_gone(engine: Engine, app: str, gone: list[str]) -> int:
    """Queue a delete for each of `gone`."""
    now = engine.clock()
    with engine.store.transaction() as conn:
        if gone:
            conn.execute(insert(inbox_t), [
                inbox_row(app, AppRecord(app_record_id=rid, deleted=True, modified_at=now), "scan", now)
                for rid in gone
            ])
    return len(gone)
