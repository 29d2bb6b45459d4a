"""Merge duplicates inside one app with the app's own merge (`merge_in_app`).

A record that joins a customer who already holds a record of the same app (a double import) is
linked as a `duplicate`: read, never written, listed for review (see `engine.match`). For an app
with `merge_in_app = true` whose connector can merge (`Capability.MERGE`), the dispatcher then
merges each duplicate into the customer's record there, after the app's writes of the round:

- The duplicate's link is the durable intent: nothing is queued beside it. A merge whose answer
  was lost is asked again, and the connector answers with the survivor when the duplicate is
  already gone or already merged into it (`Connector.merge`).
- The store is asked again just before each call, so a duplicate promoted, moved or parked since
  is not merged.
- On success the duplicate's link and base go, and the change log says so. The surviving record
  changed in the app (it took the duplicate's values where it had none): the next read of the
  app brings it like any other edit, and the three-way merge decides it. A survivor under a new
  id takes the customer's link over.
- An app that refuses the merge (`RecordRejected`) parks the duplicate for review (a `merge`
  conflict) and it is not asked again; a transient failure leaves it for the next round; a
  survivor that is gone is left to the next read of the app, which sees the delete.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import and_, exists, select

from customer_sync.errors import RecordGone, RecordRejected, TransientError
from customer_sync.sdk.connector import Capability, Connector
from customer_sync.store.tables import ConflictRow, LinkRow
from customer_sync.store.uow import UnitOfWork, duplicate_base

if TYPE_CHECKING:
    from customer_sync.config import AppRuntime
    from customer_sync.store.db import Store

__all__ = ["MergeStats", "merge_duplicates", "merges_in_app"]

log = structlog.get_logger(__name__)

links_t = LinkRow.__table__
conflicts_t = ConflictRow.__table__


@dataclass
class MergeStats:
    merged: int = 0
    refused: int = 0
    retried: int = 0


@dataclass(frozen=True)
class _Pair:
    customer_id: str
    duplicate_id: str
    holder_id: str


def merges_in_app(rt: AppRuntime, connector: Connector) -> bool:  # type: ignore[type-arg]
    """Whether duplicates of this app are merged in the app."""
    return rt.config.merge_in_app and Capability.MERGE in connector.capabilities


async def merge_duplicates(
    store: Store,
    rt: AppRuntime,
    connector: Connector,  # type: ignore[type-arg]
    *,
    now: Callable[[], datetime],
    identity_key: bytes,
    run_id: str,
    limit: int,
) -> MergeStats:
    """Merge up to `limit` duplicates of the app into their customers' records there."""
    stats = MergeStats()
    if not merges_in_app(rt, connector):
        return stats
    pairs = await asyncio.to_thread(_waiting, store, rt.name, limit)
    for pair in pairs:
        try:
            survivor = await connector.merge(pair.holder_id, pair.duplicate_id)
        except RecordRejected as exc:
            stats.refused += 1
            await asyncio.to_thread(_settle, store, rt.name, pair, None, str(exc),
                                    identity_key=identity_key, now=now(), run_id=run_id)
            continue
        except (RecordGone, TransientError) as exc:
            # the survivor went (the next read of the app sees it), or no clear answer: the
            # duplicate's link stays, and the merge is asked again in a later round
            stats.retried += 1
            log.warning("merge_in_app_deferred", app=rt.name, app_record_id=pair.duplicate_id,
                        error=f"{type(exc).__name__}: {exc}")
            continue
        stats.merged += 1
        await asyncio.to_thread(_settle, store, rt.name, pair, survivor, None,
                                identity_key=identity_key, now=now(), run_id=run_id)
    return stats


def _waiting(store: Store, app: str, limit: int) -> list[_Pair]:
    """Duplicates of `app` whose customer holds an active record there, none parked for review."""
    dup, held = links_t.alias("dup"), links_t.alias("held")
    parked = exists().where(conflicts_t.c.app == app, conflicts_t.c.app_record_id == dup.c.app_record_id,
                            conflicts_t.c.kind == "merge", conflicts_t.c.status == "parked")
    query = (
        select(dup.c.customer_id, dup.c.app_record_id, held.c.app_record_id.label("holder"))
        .join(held, and_(held.c.app == dup.c.app, held.c.customer_id == dup.c.customer_id,
                         held.c.state == "active"))
        .where(dup.c.app == app, dup.c.state == "duplicate", ~parked)
        .order_by(dup.c.app_record_id)
        .limit(limit)
    )
    with store.transaction() as conn:
        return [_Pair(r.customer_id, r.app_record_id, r.holder) for r in conn.execute(query)]


def _settle(store: Store, app: str, pair: _Pair, survivor: str | None, refusal: str | None, *,
            identity_key: bytes, now: datetime, run_id: str) -> None:
    """Commit a merge the app made (`survivor`), or its refusal."""
    with store.transaction() as conn:
        uow = UnitOfWork(conn, identity_key=identity_key, now=now, run_id=run_id)
        uow.prefetch_links([(app, pair.duplicate_id), (app, pair.holder_id)])
        dup = uow.link(app, pair.duplicate_id)
        if refusal is not None:
            if dup is not None and dup["state"] == "duplicate":
                uow.add_conflict(kind="merge", status="parked", customer_id=pair.customer_id, app=app,
                                 app_record_id=pair.duplicate_id,
                                 detail={"reason": "merge_refused", "duplicate_of": pair.holder_id,
                                         "error": refusal[:500]})
                uow.log("conflict", app=app, app_record_id=pair.duplicate_id, customer_id=pair.customer_id,
                        reason=f"{app} refused to merge duplicate {pair.duplicate_id} into "
                               f"{pair.holder_id}: kept as a duplicate, for review")
            uow.flush()
            return
        assert survivor is not None
        if dup is not None and dup["state"] == "duplicate":
            uow.drop_link(app, pair.duplicate_id)
        uow.drop_snapshot(pair.customer_id, duplicate_base(app, pair.duplicate_id))
        held = uow.link(app, pair.holder_id)
        if survivor != pair.holder_id and held is not None and held["customer_id"] == pair.customer_id:
            uow.prefetch_links([(app, survivor)])
            if uow.link(app, survivor) is None:
                uow.drop_link(app, pair.holder_id)
                uow.add_link(app, survivor, pair.customer_id)
        uow.log("written", app=app, app_record_id=survivor, customer_id=pair.customer_id,
                reason=f"merged duplicate {pair.duplicate_id} into {pair.holder_id} in {app} (merge_in_app)")
        uow.flush()

