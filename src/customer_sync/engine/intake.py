"""Intake: process what waits in the inbox, in batches, each batch in one transaction.

The inbox holds webhook deliveries, records that queued behind an older change of the same
record, deletes found by an id scan, and records the dispatcher sent back for the merge (a
record changed in the app since its base, or a record it found in the app instead of creating
one). A notification that carries only an id is read from its app first (`_hydrate`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import delete, func, select

from customer_sync.engine._gc import gc_paused
from customer_sync.engine.process import ProcessStats, process_items
from customer_sync.errors import ConnectorError
from customer_sync.sdk.connector import AppRecord
from customer_sync.store.tables import InboxItem
from customer_sync.store.uow import UnitOfWork

if TYPE_CHECKING:
    from customer_sync.engine.runner import Engine

__all__ = ["pending_inbox", "process_inbox"]

log = structlog.get_logger("customer_sync.engine")
inbox_t = InboxItem.__table__


async def process_inbox(engine: Engine, *, limit: int | None = None,
                        held: Collection[str] = ()) -> ProcessStats:
    """Process pending inbox items in batches of `daemon.batch_size`; returns what they did.

    Items of an app that is not open stay (a notification that needs a read from it waits), and
    so do items of the `held` apps (paused by the operator or until a vendor's Retry-After):
    nothing from a paused app is read or decided until it is resumed.
    """
    async with engine._inbox_lock:  # one processor of changes per process
        total = ProcessStats()
        batch = engine.config.daemon.batch_size
        done = 0
        after = -1
        while limit is None or done < limit:
            items = await engine.db(_pending_items, engine, after, batch, held)
            if not items:
                break
            after = items[-1]["seq"]
            await _hydrate(engine, items)
            ready = [i for i in items if i["payload"] is not None]
            if not ready:
                continue
            if engine._offload:
                stats = await asyncio.to_thread(_process_batch, engine, ready)
            else:
                stats = _process_batch(engine, ready)
            total.add(stats)
            done += len(ready)
            engine.faults("after_merge")
        return total


def pending_inbox(engine: Engine, apps: list[str]) -> int:
    """Inbox items of these apps still waiting."""
    with engine.store.transaction() as conn:
        return conn.execute(select(func.count()).select_from(inbox_t).where(
            inbox_t.c.state == "pending", inbox_t.c.app.in_(apps))).scalar_one()


def _pending_items(engine: Engine, after: int, limit: int,
                   held: Collection[str] = ()) -> list[dict[str, Any]]:
    q = select(inbox_t).where(inbox_t.c.state == "pending", inbox_t.c.seq > after)
    if held:
        q = q.where(inbox_t.c.app.not_in(sorted(held)))
    with engine.store.transaction() as conn:
        return [dict(r) for r in conn.execute(q.order_by(inbox_t.c.seq).limit(limit)).mappings()]


def _process_batch(engine: Engine, items: list[dict[str, Any]]) -> ProcessStats:
    with gc_paused(), engine.store.transaction() as conn:
        now = engine.clock()
        uow = UnitOfWork(conn, identity_key=engine.identity_key, now=now, run_id=engine.run_id)
        stats = process_items(uow, items, engine.apps, engine.config.conflicts, now=now)
        uow.flush()
        conn.execute(delete(inbox_t).where(inbox_t.c.seq.in_([i["seq"] for i in items])))
    apps = {i["app"] for i in items}  # counted once committed, by the app they came from
    engine.metrics.decisions(apps.pop() if len(apps) == 1 else engine.metrics.MIXED, stats)
    return stats


async def _hydrate(engine: Engine, items: list[dict[str, Any]]) -> None:
    """Webhook notifications may carry only an id: read those records from their app. When the
    app cannot be read, its items keep no payload and wait for the next pass."""
    missing: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        if item["payload"] is None and item["app"] in engine.connectors:
            missing.setdefault(item["app"], []).append(item)
    for app, group in missing.items():
        try:
            records = await engine.connectors[app].read([i["app_record_id"] for i in group])
        except ConnectorError as exc:  # these wait for the next pass; other apps' items go on
            log.warning("inbox.read_failed", app=app, count=len(group), error=type(exc).__name__)
            continue
        found = {r.app_record_id: r for r in records}
        for item in group:
            rec = found.get(item["app_record_id"]) or AppRecord(app_record_id=item["app_record_id"], deleted=True)
            item["payload"] = rec.model_dump(mode="json")
