"""The engine and its one loop: rounds of poll, reconcile, intake and dispatch.

A **round** does each stage once, in this order, every stage committing before the next:
1. poll the apps that are due (concurrently; a long listing stops at its time slice and goes on
   in the next round),
2. reconcile the apps whose reconciliation is due (`engine.reconcile`),
3. process the inbox (`engine.intake`),
4. dispatch every app's ready writes (`engine.dispatch`; no create goes to an app before its
   first complete listing has been processed).

There is one loop that runs rounds (`Engine._loop`), and two schedules that tell it when:
- `run_once()` (`customer-sync run --once`, cron, tests): every app is due in every round, and
  the loop ends at the first quiet round (nothing read that changed anything, nothing planned or
  written, no write ready, nothing waiting in the inbox);
- `run_forever()` (`customer-sync run`, the daemon): the loop sleeps until something wakes it.
  A webhook committed to the inbox wakes it for the inbox stage (`Engine.wake("inbox")`), and
  an operator's action that plans writes for dispatch (`Engine.wake("dispatch")`); a round that
  processes the inbox and plans writes dispatches them in the same round. APScheduler marks
  each app due at its poll interval, and a tick every `dispatch_interval_s` runs every stage: a
  safety net, so nothing depends on a wake being delivered. Wakes coalesce: a wake while a
  round runs makes one more round after it, and rounds start at most every
  `daemon.coalesce_s`, so a burst of webhooks is one or a few rounds (each taking at most
  `daemon.batch_size` inbox items) and one read of their records, not one of each per
  delivery. The first round at start polls every app. A round that did something is followed
  by another (every stage) as soon as the gap allows.
So the daemon and `run --once` decide, order and commit the same work the same way.

A failure in one app is caught in `_guarded` (the one place that catches broad exceptions),
recorded on the app, and the other apps go on. `faults` is a test hook called at the named
points between stages (`after_inbox`, `after_merge`, `mid_dispatch`, `before_confirm`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog

from customer_sync.engine import webhooks
from customer_sync.engine._identity import default_identity_key
from customer_sync.engine._list_worker import ListSpec
from customer_sync.engine.dispatch import DispatchStats, creating_apps, dispatch_app, ready_writes
from customer_sync.engine.dry_run import dry_run
from customer_sync.engine.intake import pending_inbox, process_inbox
from customer_sync.engine.listing import ListingWorker, can_list_in_worker
from customer_sync.engine.normalizing import Normalized, PageNormalizer, default_workers
from customer_sync.engine.poll import PollResult, poll_app, take_pages
from customer_sync.engine.process import ProcessStats
from customer_sync.engine.reconcile import due_for_reconcile, reconcile_app, scan_ids
from customer_sync.errors import AuthError, ConnectorError, RateLimited, TransientError
from customer_sync.progress import DEFAULT_EVERY_S, ProgressListener, PullProgress
from customer_sync.sdk.connector import ChangePage, Connector
from customer_sync.sdk.ratelimit import collecting
from customer_sync.store import app_state

if TYPE_CHECKING:
    from customer_sync.config import Config
    from customer_sync.metrics import EngineMetrics
    from customer_sync.store.db import Store

__all__ = ["STAGES", "Engine", "RoundResult", "RunSummary", "default_identity_key"]

log = structlog.get_logger("customer_sync.engine")
T = TypeVar("T")
# The longest an app is paused for a vendor's Retry-After: a day's quota resets within one.
_LONGEST_PAUSE_S = 86_400.0
#: The stages a wake can ask for (`Engine.wake`): process the inbox, dispatch ready writes.
STAGES: frozenset[str] = frozenset({"inbox", "dispatch"})


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


@dataclass
class Due:
    """What a round is to do: the apps to poll and to reconcile, and the stages to run.

    A round without the inbox stage leaves the inbox for the next; a round without the dispatch
    stage still dispatches when it polled an app or planned a write (every app is dispatched
    then). `inbox_limit` bounds the inbox items one round takes (None: all of them).
    """

    polls: set[str] = field(default_factory=set)
    reconciles: set[str] = field(default_factory=set)
    stages: frozenset[str] = STAGES
    inbox_limit: int | None = None


@dataclass
class RoundResult:
    """What one round did, and whether it was quiet."""

    number: int
    started_at: float  # time.monotonic()
    polled: set[str] = field(default_factory=set)
    reconciled: set[str] = field(default_factory=set)
    more: set[str] = field(default_factory=set)  # polls cut at their slice: more is waiting
    fresh: int = 0
    found: int = 0  # changes found by reconciliation
    process: ProcessStats = field(default_factory=ProcessStats)
    dispatch: DispatchStats = field(default_factory=DispatchStats)
    waiting: int = 0  # writes ready and inbox items pending after the round
    failed: set[str] = field(default_factory=set)

    @property
    def active(self) -> bool:
        """The round changed something, or left work that is ready now."""
        p, d = self.process, self.dispatch
        return bool(self.more or self.waiting or p.planned or p.updated or p.created or p.deleted
                    or d.written or d.created or d.deleted or d.deferred or d.adopted or d.merged)

    @property
    def quiet(self) -> bool:
        return not self.active


class _Schedule(Protocol):
    """When the loop runs a round, and when it ends."""

    summary: RunSummary

    async def next_round(self, engine: Engine) -> Due | None: ...

    def finished(self, engine: Engine, result: RoundResult) -> None: ...


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
        self._inbox_lock = asyncio.Lock()  # one processor of changes per process
        self.intake = ProcessStats()  # what polled pages did (processed as they were read)
        workers = config.daemon.normalize_workers
        self.normalizer = PageNormalizer(default_workers() if workers is None else workers,
                                         identity_key=self.identity_key)
        listing = config.daemon.list_in_worker
        self._list_in_worker = self.normalizer.workers > 0 if listing is None else listing
        self.listing: dict[str, ListingWorker] = {}  # app -> its listing worker, when it has one
        self.rounds = 0
        self.last_round: RoundResult | None = None
        self._round_done = asyncio.Condition()
        self._failing: set[str] = set()  # apps with an error recorded since they last succeeded
        self._waker: Callable[[str], None] | None = None  # the daemon's schedule, while it runs
        self.passes: dict[str, int] = dict.fromkeys(sorted(STAGES), 0)  # stage -> rounds that started it
        self.stopping: asyncio.Event | None = None  # the daemon's stop: polls end at a page
        from customer_sync.metrics import EngineMetrics  # prometheus-client: not for `--help`

        self.metrics: EngineMetrics = EngineMetrics(self.apps, clock)  # served at /metrics
        self.pulls: dict[str, PullProgress] = {}  # app -> its initial pull under way
        self.progress_every_s = DEFAULT_EVERY_S  # how often an initial pull logs its progress
        self.progress_listeners: list[ProgressListener] = []  # e.g. the CLI's progress bar

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
                                     identity_key=self.identity_key,
                                     max_retry_after_s=connector.max_retry_after_s),
                            limiters, (d.log_level, d.log_format, d.redact_logs))
                except Exception as exc:  # per-app failure, as in _guarded
                    self.unopened[name] = f"{type(exc).__name__}: {exc}"
                    await self._record_app_error(name, exc, parked=isinstance(exc, AuthError))
                    log.error("app.open_failed", reason=type(exc).__name__, error=str(exc))
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            for worker in self.listing.values():
                await worker.aclose()
            await self._stack.aclose()
        finally:
            self.metrics.close()
            await asyncio.to_thread(self.normalizer.close)

    def live_apps(self) -> list[str]:
        """The enabled apps whose connector opened."""
        return [a for a in self.apps if a in self.connectors]

    # -- the stages (each in its own module) ------------------------------------------------------

    async def poll(self, app: str, *, full: bool = False, slice_s: float | None = None) -> PollResult:
        """Read an app's changes since its cursor and decide them (see `engine.poll`)."""
        started, t0 = self.clock(), time.perf_counter()
        result = await poll_app(self, app, full=full, slice_s=slice_s)
        self.metrics.polled(app, started=started, duration_s=time.perf_counter() - t0,
                            fresh=result.fresh, complete=result.complete and not full)
        return result

    async def start_pull(self, app: str) -> PullProgress:
        """The progress of an initial pull of `app` that starts now, with the app's record count
        when its connector can tell. A refused count is no failure of the pull; an app that is
        unreachable, rate limited or refusing the credentials fails the poll here as its
        listing would (and so takes no more of the app's retries than the listing would)."""
        total = None
        try:
            total = await self.connectors[app].count_records()
        except (TransientError, AuthError):
            raise
        except ConnectorError as exc:
            log.info("pull.count_unknown", app=app, reason=type(exc).__name__)
        log.info("pull.started", app=app, total=total)
        return PullProgress(app, total=total, every_s=self.progress_every_s,
                            listeners=list(self.progress_listeners))

    def _take_pages(
        self, app: str, pages: Sequence[ChangePage], normalized: Mapping[int, Normalized] | None = None,
        full: bool = False,
    ) -> int:
        """Commit polled pages with their cursor (see `engine.poll.take_pages`)."""
        before = _copy(self.intake)  # only one processor of changes runs at a time
        fresh = take_pages(self, app, pages, normalized, full)
        self.metrics.decisions(app, _since(self.intake, before))
        return fresh

    async def reconcile(self, app: str) -> int:
        """Compare the whole app with the store: hard deletes and missed edits (see `engine.reconcile`)."""
        return await reconcile_app(self, app)

    async def scan_deletes(self, app: str) -> int:
        """Compare an app's live ids with its links; a linked record that is gone is a delete."""
        return await scan_ids(self, app)

    async def process_inbox(self, *, limit: int | None = None, held: Collection[str] = ()) -> ProcessStats:
        """Process pending inbox items in batches, but those of the `held` apps (see
        `engine.intake`)."""
        return await process_inbox(self, limit=limit, held=held)

    async def dispatch(self, app: str, *, creates: bool = True) -> DispatchStats:
        """Send one app's ready outbox rows (see `engine.dispatch`); creates only with
        `creates` (the round has just read the app to the end)."""
        t0 = time.perf_counter()
        stats: DispatchStats | None = None
        try:
            stats = await dispatch_app(
                self.store, self.apps[app], self.connectors[app], now=self.clock, creates=creates,
                identity_key=self.identity_key, run_id=self.run_id,
                batch_size=min(self.config.daemon.batch_size, max(self.connectors[app].batch_size, 1) * 10),
                max_attempts=self.config.daemon.max_attempts, faults=self.faults,
            )
        finally:
            self.metrics.dispatched(app, stats, time.perf_counter() - t0)
        return stats

    async def accept_webhook(
        self, app: str, headers: Mapping[str, str], body: bytes, *, url: str = "", method: str = "POST"
    ) -> int:
        """Verify a webhook delivery and commit its changes to the inbox (see `engine.webhooks`);
        once committed, the daemon's inbox stage is woken (`wake("inbox")`)."""
        count = await webhooks.accept_webhook(self, app, headers, body, url=url, method=method)
        self.metrics.webhook(app, count)
        if count:
            self.wake("inbox")
        return count

    async def dry_run(self) -> list[dict[str, Any]]:
        """Read every app and decide, but write nothing (see `engine.dry_run`)."""
        return await dry_run(self)

    async def db(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a blocking store call in a thread (inline in a dry run, whose one transaction
        lives on one connection): a busy store must never stall the event loop, which serves
        webhook intake and /healthz while a round runs."""
        if self._offload:
            return await asyncio.to_thread(fn, *args, **kw)
        return fn(*args, **kw)

    def wake(self, stage: str) -> None:
        """Ask the running daemon for a round of `stage` now instead of at its next tick.

        Call it on the event loop, after committing what the stage is to find:
        - `"inbox"`: items committed to the inbox (`accept_webhook` does this itself);
        - `"dispatch"`: writes planned in the outbox outside a round, e.g. by an operator
          resolving a conflict or replaying a dead letter (`engine.admin`).

        Wakes coalesce: wakes that arrive while a round runs, or within `daemon.coalesce_s`
        of its start, make one more round, which takes everything committed by then. The wake
        is a hint, never the only way the work is found: the daemon's tick (`dispatch_interval_s`)
        runs every stage anyway. Outside the daemon (`run --once`, a stopped daemon) and once
        the daemon's stop is set, a wake does nothing: the work waits in the store.

        Raises:
            ValueError: `stage` is not one of `STAGES`.
        """
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {sorted(STAGES)}")
        if self._waker is not None:
            self._waker(stage)

    def notify(self) -> None:
        """Wake every stage of the running daemon (see `wake`)."""
        for stage in sorted(STAGES):
            self.wake(stage)

    # -- the loop ---------------------------------------------------------------------------------

    async def run_once(self, *, max_rounds: int = 100, reconcile: bool | None = None) -> RunSummary:
        """Run rounds, every app due in each, until a round is quiet (at most `max_rounds`).

        Args:
            reconcile: None (the default) reconciles the apps whose interval has passed, as the
                daemon would now; True every app that has reconciliation on, in the first
                round (`run --once --reconcile`); False none.
        """
        schedule = _UntilQuiet(max_rounds=max_rounds, reconcile=reconcile)
        schedule.summary.failed_apps.update(self.unopened)
        started = time.perf_counter()
        await self._loop(schedule)
        summary = schedule.summary
        summary.waiting = await self.db(ready_writes, self.store, self.live_apps(), self.clock(), ready_only=False)
        summary.duration_s = time.perf_counter() - started
        line = {k: v for k, v in summary.as_dict().items() if k != "failed_apps"}
        line["failed_apps"] = sorted(summary.failed_apps)
        log.info("sync.pass_finished", run_id=self.run_id, **line)
        return summary

    async def run_forever(self, stop: asyncio.Event, *, dispatch_interval_s: float = 2.0) -> None:
        """Run rounds until `stop` is set: each app polled at its interval, the inbox at once
        after a webhook, ready writes at once after they are planned (see `wake`), and every
        stage every `dispatch_interval_s` in any case (the safety net)."""
        # The workers take about a second to spawn and import; started now, the initial pull's
        # first pages find them ready instead of being read and normalized in this process.
        # The normalizing worker serves only apps listed here: none when every app has a
        # listing worker (which normalizes its own pages); it starts later if one fails.
        if any(app not in self.listing for app in self.live_apps()):
            await self.normalizer.start()
        for worker in self.listing.values():
            await worker.wait_ready()
        self.stopping = stop
        schedule = _OnClock(self, stop, dispatch_interval_s=dispatch_interval_s)
        log.info("sync.daemon_started", apps=sorted(self.apps), run_id=self.run_id,
                 normalize_workers=self.normalizer.workers if self.normalizer.ready else 0,
                 listing_workers=sorted(app for app, w in self.listing.items() if w.ready))
        try:
            await self._loop(schedule)
        finally:
            await schedule.aclose()
            log.info("sync.daemon_stopped", run_id=self.run_id, rounds=self.rounds)

    async def _loop(self, schedule: _Schedule) -> None:
        """The one loop: ask the schedule for a round, run it, tell the schedule how it went."""
        while (due := await schedule.next_round(self)) is not None:
            result = await self._round(due, schedule.summary)
            schedule.finished(self, result)
            async with self._round_done:
                self.last_round = result
                self._round_done.notify_all()

    async def wait_round(self, predicate: Callable[[RoundResult], bool]) -> RoundResult:
        """Wait until a round ends for which `predicate` holds (tests drive the daemon by this)."""
        async with self._round_done:
            await self._round_done.wait_for(
                lambda: self.last_round is not None and predicate(self.last_round))
            assert self.last_round is not None
            return self.last_round

    async def _round(self, due: Due, summary: RunSummary) -> RoundResult:
        self.rounds += 1
        summary.rounds += 1
        result = RoundResult(number=self.rounds, started_at=time.monotonic())
        # paused by the operator, or until the vendor's Retry-After: neither polled nor
        # dispatched, and what their webhooks brought waits in the inbox
        paused = await self.db(app_state.held_apps, self.store, self.clock())
        live = [a for a in self.live_apps() if a not in paused]
        slice_s = self.config.daemon.poll_slice_s
        intake_before = _copy(self.intake)

        polls = [a for a in live if a in due.polls and a not in summary.failed_apps]
        polled = await asyncio.gather(*(
            self._guarded(a, summary, self.poll(a, slice_s=slice_s)) for a in polls))
        for app, outcome in zip(polls, polled, strict=True):
            if outcome is None:
                continue
            result.polled.add(app)
            result.fresh += outcome.fresh
            summary.polled += outcome.fresh
            if not outcome.complete:
                result.more.add(app)

        if self._stopped():
            return result  # what is committed stays; the rest waits for the next start
        for app in (a for a in live if a in due.reconciles and a not in summary.failed_apps):
            found = await self._guarded(app, summary, self.reconcile(app))
            if found is not None:
                result.reconciled.add(app)
                result.found += found

        stats = ProcessStats()
        if "inbox" in due.stages:
            self.passes["inbox"] += 1
            stats = await self.process_inbox(limit=due.inbox_limit, held=paused)
        stats.add(_since(self.intake, intake_before))
        result.process = stats
        summary.process.add(stats)

        if self._stopped():
            return result
        # A write planned in this round (by a poll or the inbox) is dispatched in it.
        if "dispatch" in due.stages or polls or result.reconciled or stats.planned:
            # Creates go only to an app this round has read to the end: a record added there
            # since it was last read is then linked instead of created a second time.
            self.passes["dispatch"] += 1
            targets = [a for a in live if a not in summary.failed_apps]
            read = result.polled - result.more
            sent = await asyncio.gather(*(
                self._guarded(a, summary, self.dispatch(a, creates=a in read), record_ok=False)
                for a in targets))
            for outcome in sent:
                if outcome is not None:
                    result.dispatch.add(outcome)
            summary.dispatch.add(result.dispatch)

        ready = [a for a in live if a not in summary.failed_apps]
        result.waiting = (await self.db(ready_writes, self.store, ready, self.clock())
                          + await self.db(pending_inbox, self, ready))
        result.failed = {a for a in summary.failed_apps if a in self.apps}
        if result.active:
            log.info("sync.round_finished", round=result.number, polled=sorted(result.polled),
                     reconciled=sorted(result.reconciled), fresh=result.fresh, found=result.found,
                     **stats.as_dict(), **{f"dispatch_{k}": v for k, v in result.dispatch.as_dict().items()},
                     waiting=result.waiting, more=sorted(result.more),
                     duration_ms=round((time.monotonic() - result.started_at) * 1000))
        return result

    def _stopped(self) -> bool:
        return self.stopping is not None and self.stopping.is_set()

    # -- per-app failures -------------------------------------------------------------------------

    async def _guarded(self, app: str, summary: RunSummary, work: Awaitable[T], *,
                       record: bool = True, record_ok: bool = True) -> T | None:
        """The one place a per-app failure is caught: logged, recorded, and the others go on.

        Args:
            record: write the outcome to the app's state (not in a dry run).
            record_ok: write a success too (a dispatch with nothing to send writes none,
                unless the app was failing).
        """
        if app in summary.failed_apps:
            work.close()  # type: ignore[attr-defined]
            return None
        with structlog.contextvars.bound_contextvars(app=app, run_id=self.run_id):
            try:
                result = await work
            except AuthError as exc:
                await self._record_app_error(app, exc, parked=True, record=record)
                summary.failed_apps[app] = f"{type(exc).__name__}: {exc}"
                log.error("app.parked", reason=type(exc).__name__, error=str(exc))
                return None
            except RateLimited as exc:
                # The vendor asked to wait longer than one request may sleep (the SDK's cap):
                # leave the app alone until then; the other apps go on.
                wait_s = exc.retry_after_s if exc.retry_after_s else self.config.poll_interval_s(app)
                wait_s = min(wait_s, _LONGEST_PAUSE_S)  # a daily quota, not a year of silence
                resume_at = self.clock() + timedelta(seconds=wait_s)
                summary.failed_apps[app] = f"{type(exc).__name__}: {exc}"
                if record:
                    await self.db(app_state.pause_until, self.store, app, resume_at,
                                  f"{type(exc).__name__}: {exc}", self.clock())
                    self._failing.add(app)
                log.warning("app.paused", reason=type(exc).__name__, resume_at=resume_at.isoformat(),
                            retry_after_s=wait_s)
                return None
            except Exception as exc:  # per-app pass: log with traceback, mark failed, go on
                await self._record_app_error(app, exc, parked=False, record=record)
                summary.failed_apps[app] = f"{type(exc).__name__}: {exc}"
                log.exception("sync.pass_failed", reason=type(exc).__name__)
                return None
            if record and (record_ok or app in self._failing):
                await self.db(app_state.record_ok, self.store, app, self.clock())
                self._failing.discard(app)
            return result

    async def _record_app_error(self, app: str, exc: Exception, *, parked: bool, record: bool = True) -> None:
        if record:
            await self.db(app_state.record_error, self.store, app, f"{type(exc).__name__}: {exc}",
                          self.clock(), parked=parked)
            self._failing.add(app)


class _UntilQuiet:
    """`run --once`: every app due in every round; the loop ends at the first quiet round."""

    def __init__(self, *, max_rounds: int, reconcile: bool | None) -> None:
        self.summary = RunSummary()
        self.max_rounds = max_rounds
        self.reconcile = reconcile
        self.last: RoundResult | None = None

    async def next_round(self, engine: Engine) -> Due | None:
        if self.last is not None and (self.last.quiet or self.summary.rounds >= self.max_rounds):
            return None
        apps = engine.live_apps()
        due = Due(polls=set(apps))
        if self.reconcile is not False:
            # reconcile=True: in the first round every app that has reconciliation on, whatever
            # its interval (then it is not due again in this run)
            force = self.reconcile is True and self.last is None
            due.reconciles = await engine.db(due_for_reconcile, engine, apps, engine.clock(), force=force)
        return due

    def finished(self, engine: Engine, result: RoundResult) -> None:
        self.last = result


class _OnClock:
    """The daemon: APScheduler marks apps due at their poll intervals and ticks every stage; the
    loop waits between rounds for one of those, a wake (`Engine.wake`), or the stop."""

    def __init__(self, engine: Engine, stop: asyncio.Event, *, dispatch_interval_s: float) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        self.summary = RunSummary()
        self.stop = stop
        self.wake = asyncio.Event()
        engine._waker = self._request
        self.due: set[str] = set(engine.live_apps())  # the first round polls every app at start
        self.stages: set[str] = set(STAGES)  # the stages asked for since the last round started
        self.gap_s = engine.config.daemon.coalesce_s
        self.inbox_limit = engine.config.daemon.batch_size
        self.started_at: float | None = None  # time.monotonic() of the last round's start
        self._engine = engine
        self.wake.set()
        self._jobs: set[asyncio.Task[Any]] = set()  # the scheduler's job tasks not yet done
        # The jobs only mark work due and wake the loop; they never do the work themselves, so
        # they run the moment they fire (no misfire to drop) and never overlap with a round.
        self.scheduler = AsyncIOScheduler(timezone=UTC, job_defaults={
            "misfire_grace_time": None, "coalesce": True, "max_instances": 1})
        for app in engine.live_apps():
            self.scheduler.add_job(self._mark_due, "interval", args=[app], id=f"poll:{app}",
                                   seconds=engine.config.poll_interval_s(app))
        self.scheduler.add_job(self._tick, "interval", id="tick", seconds=dispatch_interval_s)
        self.scheduler.start()
        self._stop_waiter = asyncio.ensure_future(stop.wait())

    # coroutines, so that APScheduler runs them on the loop (a plain function runs in a thread);
    # each registers the task APScheduler runs it in, so that `aclose` can let it finish
    async def _mark_due(self, app: str) -> None:
        self._track()
        self.due.add(app)
        self._request_all()

    async def _tick(self) -> None:
        self._track()
        self._request_all()

    def _request(self, stage: str) -> None:
        if not self.stop.is_set():  # the daemon drains: nothing new is started
            self.stages.add(stage)
            self.wake.set()

    def _request_all(self) -> None:
        for stage in STAGES:
            self._request(stage)

    def _track(self) -> None:
        task = asyncio.current_task()
        if task is not None and not task.done():
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)

    async def next_round(self, engine: Engine) -> Due | None:
        if not self.stop.is_set() and not self.wake.is_set():
            waker = asyncio.ensure_future(self.wake.wait())
            await asyncio.wait({waker, self._stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
            waker.cancel()
        # Coalesce: a round starts at most every `coalesce_s`; what is woken meanwhile joins it.
        if self.started_at is not None and not self.stop.is_set():
            rest = self.started_at + self.gap_s - time.monotonic()
            if rest > 0:
                await asyncio.wait({self._stop_waiter}, timeout=rest)
        if self.stop.is_set():
            return None
        self.started_at = time.monotonic()
        self.wake.clear()
        self.summary = RunSummary()  # a round's failures keep an app out of that round only
        due, self.due = self.due, set()
        stages, self.stages = frozenset(self.stages), set()
        apps = engine.live_apps()
        # an app about to receive creates is read first, in the same round (see `dispatch`)
        due |= await engine.db(creating_apps, engine.store, apps, engine.clock())
        reconciles = await engine.db(due_for_reconcile, engine, apps, engine.clock())
        return Due(polls=due & set(apps), reconciles=reconciles, stages=stages,
                   inbox_limit=self.inbox_limit)

    def finished(self, engine: Engine, result: RoundResult) -> None:
        self.due |= result.more  # a listing cut at its slice goes on in the next round
        if result.active:
            self._request_all()  # what the round left ready goes next, every stage

    async def aclose(self) -> None:
        """Stop the scheduler once the jobs it started have finished: its shutdown cancels a
        job's task that is still pending, and logs that cancellation as a failed job (an ERROR
        with a traceback, at every stop that lands while a job is due)."""
        self.scheduler.pause()  # no job is handed to the loop from now on
        await asyncio.sleep(0)  # one handed over already starts, and registers
        while self._jobs:
            await asyncio.wait(set(self._jobs))
        await asyncio.sleep(0)  # APScheduler's done callbacks run before it forgets the tasks
        self.scheduler.shutdown(wait=False)
        self._stop_waiter.cancel()
        if self._engine._waker == self._request:
            self._engine._waker = None


def _copy(stats: ProcessStats) -> ProcessStats:
    out = ProcessStats()
    out.add(stats)
    return out


def _since(now: ProcessStats, before: ProcessStats) -> ProcessStats:
    delta = _copy(now)
    for f in dataclass_fields(ProcessStats):
        setattr(delta, f.name, getattr(delta, f.name) - getattr(before, f.name))
    return delta
