"""The engine: polls apps into the inbox, processes it, dispatches the outbox — once or forever.

`Engine.run_once()` repeats rounds (poll every app, process the inbox, dispatch the outbox)
until a round finds nothing to write: that is "quiet". `Engine.run_forever()` schedules one poll
job per app at its interval and one dispatcher with APScheduler, and stops gracefully.

Every stage commits before the next begins, so a crash anywhere resumes without losing or
duplicating a change. `faults` is a test hook called at the named points between stages
(`after_inbox`, `after_merge`, `mid_dispatch`, `before_confirm`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import bindparam, delete, func, insert, select, update

from customer_sync.engine.dispatch import DispatchStats, dispatch_app
from customer_sync.engine._gc import collect_young, gc_deferred, gc_paused
from customer_sync.engine._list_worker import ListSpec
from customer_sync.engine.listing import ListingWorker, WorkerGone, can_list_in_worker
from customer_sync.engine.normalizing import Normalized, PageNormalizer, default_workers
from customer_sync.engine.process import ProcessStats, process_items, process_records, record_fingerprint
from customer_sync.engine import webhooks
from customer_sync.errors import AuthError, ConnectorError
from customer_sync.sdk.connector import AppRecord, Capability, ChangePage, Connector, Cursor
from customer_sync.sdk.ratelimit import collecting
from customer_sync.store.tables import AppState, CursorRow, InboxItem, LinkRow, OutboxItem
from customer_sync.store.uow import UnitOfWork

if TYPE_CHECKING:
    from customer_sync.config import Config
    from customer_sync.store.db import Store

__all__ = ["Engine", "RunSummary", "default_identity_key"]

log = structlog.get_logger("customer_sync.engine")
inbox_t = InboxItem.__table__
outbox_t = OutboxItem.__table__
cursors_t = CursorRow.__table__
app_state_t = AppState.__table__
links_t = LinkRow.__table__

# Pages a poll reads ahead of the one being decided. Memory is bounded in records (two batches,
# see `poll`); this cap only stops a run of empty pages from queueing without end. It is high
# enough that the records bound is the one that binds: with HubSpot's 50-contact history pages,
# a cap of 8 pages held each transaction to 400 records instead of a full batch.
_READ_AHEAD = 32


def default_identity_key() -> bytes:
    """The key of identity hashes: `CUSTOMER_SYNC_IDENTITY_KEY`, else a fixed default.

    Changing it makes existing identities unmatchable, so set it once, before the first run.
    """
    return os.environ.get("CUSTOMER_SYNC_IDENTITY_KEY", "customer-sync/identity/v1").encode()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _no_fault(point: str) -> None:
    return None


@dataclass
class RunSummary:
    """What a run did, for `run --once` and the tests."""

    rounds: int = 0
    polled: int = 0
    process: ProcessStats = field(default_factory=ProcessStats)
    dispatch: DispatchStats = field(default_factory=DispatchStats)
    failed_apps: dict[str, str] = field(default_factory=dict)
    waiting: int = 0
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds, "polled": self.polled, **self.process.as_dict(),
            **{f"dispatch_{k}": v for k, v in self.dispatch.as_dict().items()},
            "failed_apps": self.failed_apps, "waiting": self.waiting,
            "duration_s": round(self.duration_s, 3),
        }


class Engine:
    """Wires the config, the store and one connector per app; use as an async context manager."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        connectors: dict[str, Connector] | None = None,  # type: ignore[type-arg]
        clock: Callable[[], datetime] = _utcnow,
        faults: Callable[[str], None] = _no_fault,
        identity_key: bytes | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.faults = faults
        self.identity_key = identity_key or default_identity_key()
        self.apps = {name: rt for name, rt in config.apps.items() if rt.config.enabled}
        self._given = connectors or {}
        self.connectors: dict[str, Connector] = {}  # type: ignore[type-arg]
        self._stack = contextlib.AsyncExitStack()
        self.run_id = str(uuid.uuid4())
        self.unopened: dict[str, str] = {}  # app -> why its connector could not open
        self._offload = True  # process batches in a worker thread (not in dry-run)
        self._inbox_lock = asyncio.Lock()  # one inbox processor per process
        self.intake = ProcessStats()  # what polled pages did (processed as they were read)
        workers = config.daemon.normalize_workers
        self.normalizer = PageNormalizer(default_workers() if workers is None else workers,
                                         identity_key=self.identity_key)
        listing = config.daemon.list_in_worker
        self._list_in_worker = self.normalizer.workers > 0 if listing is None else listing
        self.listing: dict[str, ListingWorker] = {}  # app -> its listing worker, when it has one

    async def __aenter__(self) -> Engine:
        # One app that cannot open (bad credentials, a broken database) must not stop the
        # others: it is recorded as failed and left out, and retried on the next start.
        for name, rt in self.apps.items():
            with structlog.contextvars.bound_contextvars(app=name, run_id=self.run_id):
                try:
                    with collecting() as limiters:  # its limiters, for a listing worker to share
                        connector = self._given.get(name) or rt.make_connector()
                        self.connectors[name] = await self._stack.enter_async_context(connector)
                    if self._list_in_worker and name not in self._given and can_list_in_worker(connector):
                        d = self.config.daemon
                        self.listing[name] = ListingWorker(
                            ListSpec(app=name, connector_cls=type(connector), settings=connector.settings,
                                     limiters=len(limiters), mapping=rt.mapping,
                                     identity_key=self.identity_key),
                            limiters, (d.log_level, d.log_format, d.redact_logs))
                except Exception as exc:  # per-app failure, as in _guarded
                    self.unopened[name] = f"{type(exc).__name__}: {exc}"
                    self._record_app_error(name, exc, parked=isinstance(exc, AuthError))
                    log.error("app.open_failed", reason=type(exc).__name__, error=str(exc))
        return self

    def _live_apps(self) -> list[str]:
        return [a for a in self.apps if a in self.connectors]

    async def __aexit__(self, *exc: object) -> None:
        try:
            for worker in self.listing.values():
                await worker.aclose()
            await self._stack.aclose()
        finally:
            await asyncio.to_thread(self.normalizer.close)

    # -- stages ------------------------------------------------------------------------------------

    async def poll(self, app: str) -> int:
        """Read an app's changes since its cursor and decide them; returns how many records
        were received.

        Pages are read ahead (up to two batches' worth of records, and `_READ_AHEAD` pages)
        while earlier ones are decided, so waiting for the app overlaps with our own work. A
        listing worker (see `engine.listing`) reads up to one batch more. Pages already waiting are decided
        together, up to `daemon.batch_size` records, in one transaction that also stores the
        cursor of the last of them: a crash before that commit re-reads them all.

        Raises:
            Whatever the connector raised, after the pages it listed before failing are
            committed.
        """
        connector = self.connectors[app]
        with self.store.transaction() as conn:
            raw = conn.execute(select(cursors_t.c.value).where(cursors_t.c.app == app)).scalar()
        cursor = Cursor(value=raw) if raw is not None else None
        # each page comes with its normalization: under way in a worker as soon as it was read,
        # or done already by the app's listing worker
        pages: asyncio.Queue[tuple[ChangePage, asyncio.Future[Any] | None] | None] = asyncio.Queue(
            maxsize=_READ_AHEAD)
        failed: list[BaseException] = []
        # Read-ahead is bounded in records too, so memory does not grow with the page size:
        # the reader waits while two batches' worth are queued and not yet taken.
        budget = 2 * self.config.daemon.batch_size
        queued = 0
        room = asyncio.Event()

        async def read() -> None:
            nonlocal queued
            try:
                async for page, normalizing in self._listed(app, connector, cursor, self.config.daemon.batch_size):
                    while queued >= budget:
                        room.clear()
                        await room.wait()
                    queued += len(page.records)
                    await pages.put((page, normalizing))
            except Exception as exc:  # re-raised by poll once what came before is committed
                failed.append(exc)
            finally:
                with contextlib.suppress(asyncio.QueueFull):
                    pages.put_nowait(None)  # the reader is done (a full queue is drained first)

        reader = asyncio.create_task(read(), name=f"poll-{app}")
        count = 0
        try:
            # the collector runs between batches, not by its own thresholds (see `_gc`)
            async with gc_deferred():
                done = False
                while not done:
                    first = await pages.get()
                    if first is None:
                        break
                    group = [first]
                    size = len(first[0].records)
                    while size < self.config.daemon.batch_size and not pages.empty():
                        item = pages.get_nowait()
                        if item is None:
                            done = True
                            break
                        group.append(item)
                        size += len(item[0].records)
                    if done is False and reader.done() and pages.empty():
                        done = True  # the end marker did not fit: the queue was full when it ended
                    queued -= size
                    room.set()
                    normalized: dict[int, Normalized] = {}
                    for page, pending in group:
                        normalized.update(await self.normalizer.collect(app, page.records, pending))
                    taken = [page for page, _ in group]
                    async with self._inbox_lock:  # one processor of changes per process
                        if self._offload:
                            fresh = await asyncio.to_thread(self._take_pages, app, taken, normalized)
                        else:
                            fresh = self._take_pages(app, taken, normalized)
                    count += fresh
                    self.faults("after_inbox")  # the pages are durable...
                    self.faults("after_merge")  # ...and so is what was decided from them
                    log.debug("app.pages_taken", app=app, pages=len(group), count=size, fresh=fresh)
                    del group, taken, normalized  # freed before the collector walks what is alive
                    collect_young()
        finally:
            if not reader.done():
                reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        if failed:
            raise failed[0]
        return count

    async def _listed(
        self, app: str, connector: Connector, cursor: Cursor | None, max_ahead: int,  # type: ignore[type-arg]
    ) -> AsyncIterator[tuple[ChangePage, asyncio.Future[Any] | None]]:
        """The app's pages from `cursor`, each with its normalization under way (or None).

        Listed in the engine's process until the app's listing worker is ready (a page of 50+
        records starts it), then in the worker from the cursor of the last page listed here. A
        worker that dies hands the listing back the same way.
        """
        worker = self.listing.get(app)
        mapping = self.apps[app].mapping
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
            try:
                async for page in listed:
                    yield page, self.normalizer.submit(mapping, page.records)
                    cursor = page.cursor
                    if worker is not None:
                        if len(page.records) >= self.normalizer.min_records:
                            worker.start()
                        if worker.ready:
                            break  # hand over at this page's cursor
                else:
                    return
            finally:
                await listed.aclose()  # type: ignore[attr-defined]

    def _take_pages(
        self, app: str, pages: Sequence[ChangePage], normalized: Mapping[int, Normalized] | None = None
    ) -> int:
        """Commit polled pages with the cursor after the last of them, in one transaction.

        Echoes are dropped; records with older changes still waiting in the inbox queue up
        behind them there; everything else is processed right here, so the pages' effects and
        their cursor commit together (a crash before the commit re-reads the pages).
        `normalized` holds records' canonical values already worked out, by `id(record)`.
        """
        now = self.clock()
        records = [rec for page in pages for rec in page.records]
        with self.store.transaction() as conn:  # the poll has the collector paused already
            # one unit of work: what the echo check loaded serves the processing too
            uow = UnitOfWork(conn, identity_key=self.identity_key, now=now, run_id=self.run_id)
            fresh, waiting = self._drop_echoes(uow, app, records, normalized)
            queued = [rec for rec in fresh if rec.app_record_id in waiting]
            direct = [rec for rec in fresh if rec.app_record_id not in waiting]
            if queued:
                conn.execute(insert(inbox_t), [_inbox_row(app, rec, "poll", now) for rec in queued])
            if direct:
                self.intake.add(process_records(uow, [(app, rec) for rec in direct], self.apps,
                                                self.config.conflicts, now=now, normalized=normalized))
                uow.flush()
            _upsert(conn, cursors_t, {"app": app}, {"value": pages[-1].cursor.value, "updated_at": now})
        return len(fresh)

    def _drop_echoes(
        self, uow: UnitOfWork, app: str, records: Sequence[AppRecord],
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
        rt = self.apps[app]
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
                self.intake.echoes += 1
                self.intake.read += 1
                continue
            fresh.append(rec)
        return fresh, waiting

    async def scan_deletes(self, app: str) -> int:
        """Compare an app's live ids with its links; a linked record that is gone is a delete."""
        connector = self.connectors[app]
        if Capability.ID_SCAN not in connector.capabilities:
            return 0
        live: set[str] = set()
        async for chunk in connector.list_ids():
            live.update(chunk)
        now = self.clock()
        with self.store.transaction() as conn:
            linked = conn.execute(
                select(links_t.c.app_record_id).where(links_t.c.app == app, links_t.c.state == "active")
            ).scalars().all()
            gone = [rid for rid in linked if rid not in live]
            if gone:
                conn.execute(insert(inbox_t), [
                    _inbox_row(app, AppRecord(app_record_id=rid, deleted=True, modified_at=now), "scan", now)
                    for rid in gone
                ])
        return len(gone)

    async def process_inbox(self, *, limit: int | None = None) -> ProcessStats:
        """Process pending inbox items in batches, each batch in one transaction."""
        async with self._inbox_lock:
            return await self._process_inbox(limit)

    async def _process_inbox(self, limit: int | None) -> ProcessStats:
        total = ProcessStats()
        batch = self.config.daemon.batch_size
        done = 0
        after = -1
        while limit is None or done < limit:
            with self.store.transaction() as conn:
                items = [dict(r) for r in conn.execute(
                    select(inbox_t).where(inbox_t.c.state == "pending", inbox_t.c.seq > after)
                    .order_by(inbox_t.c.seq).limit(batch)
                ).mappings()]
            if not items:
                break
            after = items[-1]["seq"]
            await self._hydrate(items)
            # A notification that still needs a read from an app that is not open waits.
            ready = [i for i in items if i["payload"] is not None]
            if not ready:
                continue
            if self._offload:
                stats = await asyncio.to_thread(self._process_batch, ready)
            else:
                stats = self._process_batch(ready)
            total.add(stats)
            done += len(ready)
            self.faults("after_merge")
        return total

    def _process_batch(self, items: list[dict[str, Any]]) -> ProcessStats:
        with gc_paused(), self.store.transaction() as conn:
            now = self.clock()
            uow = UnitOfWork(conn, identity_key=self.identity_key, now=now, run_id=self.run_id)
            stats = process_items(uow, items, self.apps, self.config.conflicts, now=now)
            uow.flush()
            conn.execute(delete(inbox_t).where(inbox_t.c.seq.in_([i["seq"] for i in items])))
        return stats

    async def _hydrate(self, items: list[dict[str, Any]]) -> None:
        """Webhook notifications may carry only an id: read those records from their app."""
        missing: dict[str, list[dict[str, Any]]] = {}
        for item in items:
            if item["payload"] is None and item["app"] in self.connectors:
                missing.setdefault(item["app"], []).append(item)
        for app, group in missing.items():
            found = {r.app_record_id: r for r in await self.connectors[app].read([i["app_record_id"] for i in group])}
            for item in group:
                rec = found.get(item["app_record_id"]) or AppRecord(app_record_id=item["app_record_id"], deleted=True)
                item["payload"] = rec.model_dump(mode="json")

    async def dispatch(self, app: str) -> DispatchStats:
        """Send one app's ready outbox rows."""
        return await dispatch_app(
            self.store, self.apps[app], self.connectors[app], now=self.clock,
            identity_key=self.identity_key, run_id=self.run_id,
            batch_size=min(self.config.daemon.batch_size, max(self.connectors[app].batch_size, 1) * 10),
            max_attempts=self.config.daemon.max_attempts, faults=self.faults,
        )

    async def accept_webhook(
        self, app: str, headers: Mapping[str, str], body: bytes, *, url: str = "", method: str = "POST"
    ) -> int:
        """Verify a webhook delivery and commit its changes to the inbox (see `engine.webhooks`)."""
        return await webhooks.accept_webhook(self, app, headers, body, url=url, method=method)

    async def dry_run(self) -> list[dict[str, Any]]:
        """Read every app and decide, but write nothing, to the apps or to the store.

        Everything runs in one transaction that is rolled back. Returns the plan: one entry per
        write (customer, app, operation, fields old -> new, and why).
        """
        real = self.store
        with real.engine.connect() as conn:
            outer = conn.begin()
            self.store = _OneTransaction(conn)  # type: ignore[assignment]
            self._offload = False
            try:
                summary = RunSummary()
                for app in self._live_apps():
                    await self._guarded(app, summary, self.poll(app), record=False)
                await self.process_inbox()
                plan = _read_plan(conn)
                for app, error in {**self.unopened, **summary.failed_apps}.items():
                    plan.append({"app": app, "op": "error", "reason": error})
                return plan
            finally:
                outer.rollback()
                self.store = real
                self._offload = True

    # -- passes ------------------------------------------------------------------------------------

    async def run_once(self, *, max_rounds: int = 25, scan_deletes: bool = True) -> RunSummary:
        """Poll, process and dispatch in rounds until a round has nothing left to write."""
        summary = RunSummary()
        summary.failed_apps.update(self.unopened)
        started = time.perf_counter()
        intake_before = ProcessStats()
        intake_before.add(self.intake)
        if scan_deletes:
            for app in self._live_apps():
                await self._guarded(app, summary, self.scan_deletes(app))
        for _ in range(max_rounds):
            summary.rounds += 1
            for app in self._live_apps():
                polled = await self._guarded(app, summary, self.poll(app))
                summary.polled += polled or 0
            stats = await self.process_inbox()
            stats.add(self._intake_since(intake_before))
            intake_before = ProcessStats()
            intake_before.add(self.intake)
            summary.process.add(stats)
            wrote = DispatchStats()
            for app in self._live_apps():
                if app in summary.failed_apps:
                    continue
                result = await self._guarded(app, summary, self.dispatch(app))
                if result is not None:
                    wrote.add(result)
            summary.dispatch.add(wrote)
            activity = stats.planned + stats.updated + stats.created + stats.deleted + wrote.written + wrote.deleted
            if activity == 0 and self._ready_outbox() == 0:
                break
        summary.waiting = self._waiting_outbox()
        summary.duration_s = time.perf_counter() - started
        line = {k: v for k, v in summary.as_dict().items() if k != "failed_apps"}
        line["failed_apps"] = sorted(summary.failed_apps)
        log.info("sync.pass_finished", run_id=self.run_id, **line)
        return summary

    def _intake_since(self, before: ProcessStats) -> ProcessStats:
        delta = ProcessStats()
        delta.add(self.intake)
        for f in dataclass_fields(ProcessStats):
            setattr(delta, f.name, getattr(delta, f.name) - getattr(before, f.name))
        return delta

    async def _guarded(self, app: str, summary: RunSummary, work: Any, *, record: bool = True) -> Any:
        """The one place a per-app failure is caught: logged, recorded, and the others go on."""
        if app in summary.failed_apps:
            work.close()
            return None
        with structlog.contextvars.bound_contextvars(app=app, run_id=self.run_id):
            try:
                result = await work
            except AuthError as exc:
                if record:
                    self._record_app_error(app, exc, parked=True)
                summary.failed_apps[app] = f"{type(exc).__name__}: {exc}"
                log.error("app.parked", reason=type(exc).__name__, error=str(exc))
                return None
            except Exception as exc:  # per-app pass: log with traceback, mark failed, go on
                if record:
                    self._record_app_error(app, exc, parked=False)
                summary.failed_apps[app] = f"{type(exc).__name__}: {exc}"
                log.exception("sync.pass_failed", reason=type(exc).__name__)
                return None
            if record:
                self._record_app_ok(app)
            return result

    def _record_app_ok(self, app: str) -> None:
        now = self.clock()
        with self.store.transaction() as conn:
            _upsert(conn, app_state_t, {"app": app}, {
                "last_poll_at": now, "last_success_at": now, "last_error": None,
                "parked": False, "consecutive_failures": 0})

    def _record_app_error(self, app: str, exc: Exception, *, parked: bool) -> None:
        now = self.clock()
        with self.store.transaction() as conn:
            row = conn.execute(select(app_state_t).where(app_state_t.c.app == app)).mappings().first()
            failures = (row["consecutive_failures"] if row else 0) + 1
            _upsert(conn, app_state_t, {"app": app}, {
                "last_poll_at": now, "last_error": f"{type(exc).__name__}: {exc}"[:1000],
                "parked": parked, "consecutive_failures": failures,
                "last_success_at": row["last_success_at"] if row else None})

    def _ready_outbox(self) -> int:
        now = self.clock()
        with self.store.transaction() as conn:
            return conn.execute(select(func.count()).select_from(outbox_t).where(
                outbox_t.c.state.in_(("pending", "sending")),
                (outbox_t.c.next_attempt_at.is_(None)) | (outbox_t.c.next_attempt_at <= now),
                outbox_t.c.app.in_([a for a in self.apps]),
            )).scalar_one()

    def _waiting_outbox(self) -> int:
        with self.store.transaction() as conn:
            return conn.execute(select(func.count()).select_from(outbox_t).where(
                outbox_t.c.state.in_(("pending", "sending")))).scalar_one()

    async def run_forever(self, stop: asyncio.Event, *, dispatch_interval_s: float = 2.0) -> None:
        """Schedule one poll job per app and one dispatcher until `stop` is set."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        scheduler = AsyncIOScheduler(timezone=UTC)
        summary = RunSummary()

        async def poll_job(app: str) -> None:
            started = time.perf_counter()
            before = ProcessStats()
            before.add(self.intake)
            await self._guarded(app, summary, self.poll(app))
            summary.failed_apps.pop(app, None)
            stats = await self.process_inbox()
            stats.add(self._intake_since(before))
            if stats.read or stats.echoes:  # the canonical log line of one app's pass
                log.info("sync.pass_finished", app=app, run_id=self.run_id, **stats.as_dict(),
                         duration_ms=round((time.perf_counter() - started) * 1000))

        async def dispatch_job() -> None:
            for app in self._live_apps():
                result = await self._guarded(app, summary, self.dispatch(app))
                summary.failed_apps.pop(app, None)
                if result is not None and (result.written or result.deleted):
                    log.info("dispatch.finished", app=app, **result.as_dict())

        for app in self._live_apps():
            scheduler.add_job(poll_job, "interval", args=[app], seconds=self.config.poll_interval_s(app),
                              id=f"poll:{app}", max_instances=1, coalesce=True, next_run_time=datetime.now(UTC))
        async def inbox_job() -> None:
            # webhook deliveries land in the inbox between polls
            stats = await self.process_inbox()
            if stats.read:
                log.info("sync.inbox_processed", **stats.as_dict())

        scheduler.add_job(dispatch_job, "interval", seconds=dispatch_interval_s, id="dispatch",
                          max_instances=1, coalesce=True)
        scheduler.add_job(inbox_job, "interval", seconds=dispatch_interval_s, id="inbox",
                          max_instances=1, coalesce=True)
        # The workers take about a second to spawn and import; started now, the initial pull's
        # first pages find them ready instead of being read and normalized in this process.
        await self.normalizer.start()
        for worker in self.listing.values():
            await worker.wait_ready()
        scheduler.start()
        log.info("sync.daemon_started", apps=sorted(self.apps), run_id=self.run_id,
                 normalize_workers=self.normalizer.workers if self.normalizer.ready else 0,
                 listing_workers=sorted(app for app, w in self.listing.items() if w.ready))
        try:
            await stop.wait()
        finally:
            scheduler.shutdown(wait=False)
            # let in-flight jobs finish within a grace period
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and "job" in repr(t.get_coro())]
            if pending:
                await asyncio.wait(pending, timeout=30)
            log.info("sync.daemon_stopped", run_id=self.run_id)


def _inbox_row(app: str, rec: AppRecord | None, source: str, now: datetime, *, app_record_id: str | None = None) -> dict[str, Any]:
    return {
        "app": app,
        "app_record_id": rec.app_record_id if rec is not None else app_record_id,
        "payload": rec.model_dump(mode="json") if rec is not None else None,
        "deleted": bool(rec is not None and rec.deleted),
        "source": source, "received_at": now, "state": "pending", "error": None,
    }


def _upsert(conn: Any, table: Any, key: dict[str, Any], values: dict[str, Any]) -> None:
    """Portable upsert by primary key (update, insert when nothing was updated)."""
    update_stmt, insert_stmt = _upsert_statements(table, tuple(key), tuple(values))
    params = {**{f"k_{k}": v for k, v in key.items()}, **{f"v_{k}": v for k, v in values.items()}}
    if conn.execute(update_stmt, params).rowcount == 0:
        conn.execute(insert_stmt, params)


@functools.cache
def _upsert_statements(table: Any, key: tuple[str, ...], names: tuple[str, ...]) -> tuple[Any, Any]:
    """`_upsert`'s statements for these columns, built once: the cursor is upserted with every
    polled transaction, and building them cost more than running them (~0.3 ms a time)."""
    keys = {k: bindparam(f"k_{k}") for k in key}
    values = {k: bindparam(f"v_{k}") for k in names}
    return (update(table).where(*(table.c[k] == p for k, p in keys.items())).values(values),
            insert(table).values({**keys, **values}))


class _OneTransaction:
    """A store stand-in whose every transaction is one outer transaction (dry-run)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.engine = conn.engine

    @contextlib.contextmanager
    def transaction(self) -> Any:
        yield self.conn


def _read_plan(conn: Any) -> list[dict[str, Any]]:
    from customer_sync.store.tables import CustomerRow, SnapshotRow

    customers_t, snapshots_t = CustomerRow.__table__, SnapshotRow.__table__
    out = []
    rows = conn.execute(select(outbox_t).where(outbox_t.c.state == "pending").order_by(outbox_t.c.seq)).mappings()
    for row in rows:
        values = conn.execute(select(customers_t.c["values"]).where(
            customers_t.c.customer_id == row["customer_id"])).scalar() or {}
        base = conn.execute(select(snapshots_t.c["values"]).where(
            snapshots_t.c.customer_id == row["customer_id"], snapshots_t.c.app == row["app"])).scalar() or {}
        out.append({
            "customer_id": row["customer_id"], "customer": values.get("email") or values.get("phone"),
            "app": row["app"], "op": row["op"], "app_record_id": row["app_record_id"],
            "fields": {f: [base.get(f), v] for f, v in row["fields"].items()}, "reason": row["reason"],
        })
    return out
