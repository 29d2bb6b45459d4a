"""Polling: read an app's changes since its cursor and decide them, page by page.

A poll lists the app from its stored cursor, reads pages ahead while earlier ones are decided,
and commits each group of pages with the cursor after the last of them, in one transaction:
a crash before that commit re-reads them all. Echoes (records whose mapped fields hash to the
fingerprint of what we last wrote or read there) are dropped before any normalization.

The same listing, from no cursor and without storing one, is the content scan of
`engine.reconcile`: every record compared with its base, so an edit the cursor passed over
(saved with a modified time older than the cursor) is found.

A poll says whether it read the app to the end (`PollResult.complete`): it may stop early at a
time slice, leaving the rest for the next round, so that one long initial pull does not hold up
every other app. The first complete listing of an app is remembered (`app_state.listed_at`):
no create is sent to an app before it (see `engine.dispatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import insert, select

from customer_sync.engine._gc import collect_young, gc_deferred
from customer_sync.engine.dispatch import settle_uncertain_updates
from customer_sync.engine.listing import WorkerGone
from customer_sync.engine.process import process_records, record_fingerprint
from customer_sync.sdk.connector import AppRecord, ChangePage, Connector, Cursor
from customer_sync.store import app_state
from customer_sync.store.bulk import upsert_row
from customer_sync.store.inbox import inbox_row
from customer_sync.store.tables import CursorRow, InboxItem
from customer_sync.store.uow import UnitOfWork

if TYPE_CHECKING:
    from customer_sync.engine.normalizing import Normalized
    from customer_sync.engine.runner import Engine

__all__ = ["PollResult", "poll_app", "take_pages"]

log = structlog.get_logger("customer_sync.engine")
inbox_t = InboxItem.__table__
cursors_t = CursorRow.__table__

# Pages a poll reads ahead of the one being decided. Memory is bounded in records (two batches,
# see `poll_app`); this cap only stops a run of empty pages from queueing without end. It is high
# enough that the records bound is the one that binds: with HubSpot's 50-contact history pages,
# a cap of 8 pages held each transaction to 400 records instead of a full batch.
_READ_AHEAD = 32


@dataclass(frozen=True)
class PollResult:
    """What one poll did: records received that were not echoes, and whether it listed the app
    to the end (False: it stopped at its time slice and more is waiting)."""

    fresh: int
    complete: bool


async def poll_app(
    engine: Engine, app: str, *, full: bool = False, slice_s: float | None = None,
) -> PollResult:
    """Read an app's changes since its cursor and decide them.

    Pages are read ahead (up to two batches' worth of records, and `_READ_AHEAD` pages)
    while earlier ones are decided, so waiting for the app overlaps with our own work. A
    listing worker (see `engine.listing`) reads up to one batch more. Pages already waiting
    are decided together, up to `daemon.batch_size` records, in one transaction that also
    stores the cursor of the last of them.

    Args:
        full: list the whole app from no cursor, and store no cursor (the content scan of a
            reconciliation); the stored cursor is left as it is.
        slice_s: stop taking pages after about this many seconds; the cursor of the last
            page taken is stored, and the result says the listing is not complete.

    Raises:
        Whatever the connector raised, after the pages it listed before failing are
        committed.
    """
    connector = engine.connectors[app]
    batch_size = engine.config.daemon.batch_size
    # our own unanswered updates are settled first, so the listing does not take them for edits
    await settle_uncertain_updates(engine.store, engine.apps[app], connector, now=engine.clock(),
                                   identity_key=engine.identity_key, run_id=engine.run_id)
    cursor: Cursor | None = None
    if not full:
        raw = await engine.db(_stored_cursor, engine, app)
        cursor = Cursor(value=raw) if raw is not None else None
    # an initial pull says how far it is, across the rounds that take it in slices
    progress = engine.pulls.get(app) if not full else None
    if progress is None and cursor is None and not full:
        progress = engine.pulls[app] = await engine.start_pull(app)
    # each page comes with its normalization: under way in a worker as soon as it was read,
    # or done already by the app's listing worker
    pages: asyncio.Queue[tuple[ChangePage, asyncio.Future[Any] | None] | None] = asyncio.Queue(
        maxsize=_READ_AHEAD)
    failed: list[BaseException] = []
    # Read-ahead is bounded in records too, so memory does not grow with the page size:
    # the reader waits while two batches' worth are queued and not yet taken.
    budget = 2 * batch_size
    queued = 0
    room = asyncio.Event()

    async def read() -> None:
        nonlocal queued
        try:
            async for page, normalizing in _listed(engine, app, connector, cursor, batch_size):
                while queued >= budget:
                    room.clear()
                    await room.wait()
                queued += len(page.records)
                await pages.put((page, normalizing))
        except Exception as exc:  # re-raised by the poll once what came before is committed
            failed.append(exc)
        finally:
            with contextlib.suppress(asyncio.QueueFull):
                pages.put_nowait(None)  # the reader is done (a full queue is drained first)

    reader = asyncio.create_task(read(), name=f"poll-{app}")
    count = 0
    complete = False
    started = time.monotonic()
    try:
        # the collector runs between batches, not by its own thresholds (see `_gc`)
        async with gc_deferred():
            while True:
                if slice_s is not None and time.monotonic() - started >= slice_s:
                    break  # the rest waits for the next round; the cursor is where we stopped
                if engine.stopping is not None and engine.stopping.is_set():
                    break  # the daemon is stopping: what is taken is committed, with its cursor
                first = await pages.get()
                if first is None:
                    complete = True
                    break
                group = [first]
                size = len(first[0].records)
                ended = False
                while size < batch_size and not pages.empty():
                    item = pages.get_nowait()
                    if item is None:
                        ended = True
                        break
                    group.append(item)
                    size += len(item[0].records)
                if not ended and reader.done() and pages.empty():
                    ended = True  # the end marker did not fit: the queue was full when it ended
                queued -= size
                room.set()
                normalized: dict[int, Normalized] = {}
                for page, pending in group:
                    normalized.update(await engine.normalizer.collect(app, page.records, pending))
                taken = [page for page, _ in group]
                async with engine._inbox_lock:  # one processor of changes per process
                    if engine._offload:
                        fresh = await asyncio.to_thread(engine._take_pages, app, taken, normalized, full)
                    else:
                        fresh = engine._take_pages(app, taken, normalized, full)
                count += fresh
                if progress is not None:
                    progress.add(size)
                engine.faults("after_inbox")  # the pages are durable...
                engine.faults("after_merge")  # ...and so is what was decided from them
                log.debug("app.pages_taken", app=app, pages=len(group), count=size, fresh=fresh)
                del group, taken, normalized  # freed before the collector walks what is alive
                collect_young()
                if ended:
                    complete = True
                    break
    finally:
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    if failed:
        raise failed[0]
    if complete and not full:
        await engine.db(app_state.mark_listed, engine.store, app, engine.clock())
        if progress is not None:
            engine.pulls.pop(app, None)
            progress.finish()
    return PollResult(fresh=count, complete=complete)


def _stored_cursor(engine: Engine, app: str) -> str | None:
    with engine.store.transaction() as conn:
        return conn.execute(select(cursors_t.c.value).where(cursors_t.c.app == app)).scalar()


async def _listed(
    engine: Engine, app: str, connector: Connector, cursor: Cursor | None, max_ahead: int,  # type: ignore[type-arg]
) -> AsyncIterator[tuple[ChangePage, asyncio.Future[Any] | None]]:
    """The app's pages from `cursor`, each with its normalization under way (or None).

    Listed in the engine's process until the app's listing worker is ready (a page of 50+
    records starts it), then in the worker from the cursor of the last page listed here. A
    worker that dies hands the listing back the same way.
    """
    worker = engine.listing.get(app)
    mapping = engine.apps[app].mapping
    normalizer = engine.normalizer
    loop = asyncio.get_running_loop()
    while True:
        if worker is not None and worker.ready:
            try:
                async for page, wire in worker.pages(cursor, max_ahead):
                    done: asyncio.Future[Any] = loop.create_future()
                    done.set_result(wire)
                    yield page, done
                    cursor = page.cursor
                return
            except WorkerGone:
                pass  # go on here from the last page the worker sent
        listed = connector.list_changes(cursor)
        # An app with a listing worker has its pages normalized there: the few read here while
        # it starts are normalized in place, rather than starting a normalizing worker (a
        # process, ~35-55 MB) that would have nothing to do once the listing worker is ready.
        # One whose listing worker failed goes on here, and uses the normalizing worker.
        normalize_here = worker is not None and not worker.failed
        try:
            async for page in listed:
                yield page, None if normalize_here else normalizer.submit(mapping, page.records)
                cursor = page.cursor
                if worker is not None:
                    if len(page.records) >= normalizer.min_records:
                        worker.start()
                    if worker.ready:
                        break  # hand over at this page's cursor
            else:
                return
        finally:
            await listed.aclose()  # type: ignore[attr-defined]


def take_pages(
    engine: Engine, app: str, pages: Sequence[ChangePage],
    normalized: Mapping[int, Normalized] | None = None, full: bool = False,
) -> int:
    """Commit polled pages with the cursor after the last of them, in one transaction
    (no cursor for a content scan, `full`).

    Echoes are dropped; records with older changes still waiting in the inbox queue up
    behind them there; everything else is processed right here, so the pages' effects and
    their cursor commit together (a crash before the commit re-reads the pages).
    `normalized` holds records' canonical values already worked out, by `id(record)`.
    """
    now = engine.clock()
    records = [rec for page in pages for rec in page.records]
    source = "scan" if full else "poll"
    with engine.store.transaction() as conn:  # the poll has the collector paused already
        # one unit of work: what the echo check loaded serves the processing too
        uow = UnitOfWork(conn, identity_key=engine.identity_key, now=now, run_id=engine.run_id)
        fresh, waiting = _drop_echoes(engine, uow, app, records, normalized)
        queued = [rec for rec in fresh if rec.app_record_id in waiting]
        direct = [rec for rec in fresh if rec.app_record_id not in waiting]
        if queued:
            conn.execute(insert(inbox_t), [inbox_row(app, rec, source, now) for rec in queued])
        if direct:
            engine.intake.add(process_records(uow, [(app, rec) for rec in direct], engine.apps,
                                              engine.config.conflicts, now=now, normalized=normalized))
            uow.flush()
        if not full:
            upsert_row(conn, cursors_t, {"app": app}, {"value": pages[-1].cursor.value, "updated_at": now})
    return len(fresh)


def _drop_echoes(
    engine: Engine, uow: UnitOfWork, app: str, records: Sequence[AppRecord],
    normalized: Mapping[int, Normalized] | None = None,
) -> tuple[list[AppRecord], set[str]]:
    """Records that are not our own writes coming back (nor unchanged re-reads), and the
    ids among them with older changes still waiting in the inbox.

    An echo matches its base's fingerprint and needs no processing. A record with an older
    change waiting in the inbox is kept, and goes behind it: that change must not be
    applied after the record's current state.
    """
    if not records:
        return [], set()
    rt = engine.apps[app]
    conn = uow.conn
    keys = [(app, rec.app_record_id) for rec in records]
    uow.prefetch_links(keys)
    linked = {k: lk for k in keys if (lk := uow.link(*k)) is not None and lk["state"] == "active"}
    if not linked:
        return list(records), set()
    uow.load_bases([(lk["customer_id"], app) for lk in linked.values()])
    waiting: set[str] = set()
    ids = [rid for _, rid in linked]
    for i in range(0, len(ids), 400):
        waiting.update(conn.execute(select(inbox_t.c.app_record_id).where(
            inbox_t.c.app == app, inbox_t.c.app_record_id.in_(ids[i:i + 400]),
            inbox_t.c.state == "pending")).scalars())
    fresh = []
    for rec in records:
        link = linked.get((app, rec.app_record_id))
        snap = uow.snapshot(link["customer_id"], app) if link is not None else None
        if (snap is not None and not rec.deleted and rec.merged_into is None
                and rec.app_record_id not in waiting
                and snap["app_fingerprint"] == record_fingerprint(
                    rt, rec, normalized.get(id(rec)) if normalized else None)):
            engine.intake.echoes += 1
            engine.intake.read += 1
            continue
        fresh.append(rec)
    return fresh, waiting
