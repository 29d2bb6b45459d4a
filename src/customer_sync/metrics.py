"""The daemon's metrics, served at `GET /metrics` in the Prometheus text format.

Each engine has its own `CollectorRegistry` (never prometheus-client's global one), so two
engines in one process, or one test after another, never share or clash over a metric.

Three kinds of numbers:
- counters the engine moves as it works (changes observed, decided and written; poll and
  dispatch durations), kept in this process since it started;
- numbers read when scraped from what is already in memory: API calls per app (counted by the
  SDK's `ApiClient`, see `sdk.http.api_counts`) and the sync lag;
- depths read from the store (outbox, inbox, conflicts open, rejections open, dead letters).
  The store may be busy (a long batch, a migration, a backup): the read runs on a thread of its
  own, is given `STORE_READ_TIMEOUT_S`, and one that takes longer leaves the last values
  served and `customer_sync_store_read_ok` at 0. The event loop never waits on the store, and a
  slow read is never started twice.

Each metric, its labels and what it means are in docs/operations.md ("Metrics").
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from customer_sync.sdk.http import api_counts
from customer_sync.store.tables import ConflictRow, DeadLetter, InboxItem, OutboxItem, RejectionRow

if TYPE_CHECKING:
    from customer_sync.engine.dispatch import DispatchStats
    from customer_sync.engine.process import ProcessStats
    from customer_sync.store.db import Store

__all__ = ["CONTENT_TYPE", "MIXED", "STORE_READ_TIMEOUT_S", "EngineMetrics", "StoreDepths"]

log = structlog.get_logger("customer_sync.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: How long a scrape waits for the store's depths before it serves the last ones read.
STORE_READ_TIMEOUT_S = 1.0
#: The `app` label of decisions of an inbox batch that held changes of several apps.
MIXED = "(several)"
# Seconds: a poll slice of a long pull lasts up to `daemon.poll_slice_s`, a quiet poll ~0.1 s.
_POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_DISPATCH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# ProcessStats fields that are not a decision about a change
_NOT_DECISIONS = frozenset({"read", "planned"})
# No `_created` sample beside every counter and histogram: in the text format each is one more
# gauge series per label set, which Prometheus does not need (it sees resets by itself).
disable_created_metrics()
_outbox = OutboxItem.__table__
_inbox = InboxItem.__table__
_conflicts = ConflictRow.__table__
_rejections = RejectionRow.__table__
_dead = DeadLetter.__table__


@dataclass
class StoreDepths:
    """What is waiting in the store, by app (see the module docstring)."""

    outbox: dict[tuple[str, str], int] = field(default_factory=dict)  # (app, state) -> rows
    inbox: dict[str, int] = field(default_factory=dict)
    conflicts_open: dict[str, int] = field(default_factory=dict)  # kind -> parked conflicts
    rejections_open: dict[str, int] = field(default_factory=dict)
    dead_letters: dict[str, int] = field(default_factory=dict)


def read_depths(store: Store) -> StoreDepths:
    """Count what waits in the store, in one read-only transaction (no write lock taken)."""
    depths = StoreDepths()
    with store.engine.connect() as conn:
        rows = conn.execute(select(_outbox.c.app, _outbox.c.state, func.count())
                            .where(_outbox.c.state.in_(("pending", "sending", "failed")))
                            .group_by(_outbox.c.app, _outbox.c.state))
        depths.outbox = {(app, state): n for app, state, n in rows}
        depths.inbox = _counts(conn.execute(select(_inbox.c.app, func.count())
                                            .where(_inbox.c.state == "pending").group_by(_inbox.c.app)))
        depths.conflicts_open = _counts(conn.execute(
            select(_conflicts.c.kind, func.count()).where(_conflicts.c.status == "parked")
            .group_by(_conflicts.c.kind)))
        depths.rejections_open = _counts(conn.execute(
            select(_rejections.c.app, func.count()).where(_rejections.c.status == "open")
            .group_by(_rejections.c.app)))
        depths.dead_letters = _counts(conn.execute(
            select(_dead.c.app, func.count()).where(_dead.c.replayed_at.is_(None))  # not replayed
            .group_by(_dead.c.app)))
        conn.rollback()
    return depths


def _counts(rows: Iterable[tuple[str, int]]) -> dict[str, int]:
    return {key: n for key, n in rows}


class EngineMetrics:
    """One engine's metrics and its registry.

    Args:
        apps: the engine's enabled apps (every per-app metric has a sample for each).
        clock: the engine's clock (the sync lag is measured on it).
    """

    MIXED = MIXED

    def __init__(self, apps: Iterable[str], clock: Callable[[], datetime]) -> None:
        self.apps = sorted(apps)
        self.clock = clock
        self.started_at = clock()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.observed = Counter(
            "customer_sync_changes_observed", "Changes read from an app that were not our own "
            "writes coming back, by how they came (poll, webhook).", ["app", "source"], registry=r)
        self.decided = Counter(
            "customer_sync_changes_decided", "Changes decided, by the app they came from and the "
            "decision.", ["app", "decision"], registry=r)
        self.written = Counter(
            "customer_sync_changes_written", "Writes sent to an app, by outcome.", ["app", "outcome"],
            registry=r)
        self.poll_seconds = Histogram(
            "customer_sync_poll_duration_seconds", "Duration of one poll of an app (one slice of a "
            "long listing).", ["app"], buckets=_POLL_BUCKETS, registry=r)
        self.dispatch_seconds = Histogram(
            "customer_sync_dispatch_duration_seconds", "Duration of one dispatch of an app's ready "
            "writes.", ["app"], buckets=_DISPATCH_BUCKETS, registry=r)
        for app in self.apps:
            for source in ("poll", "webhook"):
                self.observed.labels(app, source)
            self.poll_seconds.labels(app)
            self.dispatch_seconds.labels(app)
        self._read_up_to: dict[str, datetime] = {}  # app -> start of its last complete poll
        self.depths = StoreDepths()
        self.store_ok = False
        self._reading: asyncio.Future[StoreDepths] | None = None
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metrics-store")
        self._lock = threading.Lock()
        r.register(_Scraped(self))

    # -- what the engine reports --------------------------------------------------------------

    def polled(self, app: str, *, started: datetime, duration_s: float, fresh: int, complete: bool) -> None:
        """A poll ended: `fresh` changes observed; a `complete` one read everything the app
        held when it `started`."""
        self.poll_seconds.labels(app).observe(duration_s)
        self.observed.labels(app, "poll").inc(fresh)
        if complete:
            with self._lock:
                self._read_up_to[app] = max(started, self._read_up_to.get(app, started))

    def webhook(self, app: str, count: int) -> None:
        """A webhook delivery to `app` put `count` changes in the inbox."""
        self.observed.labels(app, "webhook").inc(count)

    def decisions(self, app: str, stats: ProcessStats) -> None:
        """Changes from `app` were decided (`app` is `MIXED` for a batch of several apps)."""
        for f in fields(stats):
            n = getattr(stats, f.name)
            if n and f.name not in _NOT_DECISIONS:
                self.decided.labels(app, f.name).inc(n)

    def dispatched(self, app: str, stats: DispatchStats | None, duration_s: float) -> None:
        """A dispatch to `app` ended (`stats` None: it failed)."""
        self.dispatch_seconds.labels(app).observe(duration_s)
        if stats is None:
            return
        for f in fields(stats):
            n = getattr(stats, f.name)
            if n:
                self.written.labels(app, f.name).inc(n)

    def sync_lag_s(self, app: str) -> float:
        """Seconds since the start of the app's last complete poll (everything the app held
        then has been read), or since this engine started when none has completed yet."""
        with self._lock:
            since = self._read_up_to.get(app, self.started_at)
        return max((self.clock() - since).total_seconds(), 0.0)

    # -- scraping -----------------------------------------------------------------------------

    async def refresh(self, store: Store, *, timeout_s: float | None = None) -> bool:
        """Read the store's depths off the event loop, waiting at most `timeout_s` (default
        `STORE_READ_TIMEOUT_S`); False (and the last depths kept) when the store did not answer
        in time or failed."""
        timeout_s = STORE_READ_TIMEOUT_S if timeout_s is None else timeout_s
        if self._reading is None or self._reading.done():
            self._reading = asyncio.wrap_future(self._reader.submit(read_depths, store))
        reading = self._reading  # a read still under way from an earlier scrape is awaited
        done, _ = await asyncio.wait({reading}, timeout=timeout_s)
        if not done:
            log.warning("metrics.store_slow", timeout_s=timeout_s)
            self.store_ok = False
            return False
        try:
            self.depths = reading.result()
        except SQLAlchemyError as exc:  # the store failed: served as store_read_ok 0
            log.warning("metrics.store_failed", reason=type(exc).__name__)
            self.store_ok = False
            return False
        self.store_ok = True
        return True

    async def render(self, store: Store) -> bytes:
        """The text exposition of every metric, with the store's depths as fresh as it allows."""
        await self.refresh(store)
        return generate_latest(self.registry)

    def close(self) -> None:
        self._reader.shutdown(wait=False, cancel_futures=True)


class _Scraped(Collector):
    """The samples made when scraped: store depths, sync lag, API calls."""

    def __init__(self, metrics: EngineMetrics) -> None:
        self.m = metrics

    def describe(self) -> Iterable[Metric]:
        return []  # made at each scrape; nothing to check for clashes at registration

    def collect(self) -> Iterator[Metric]:
        m, d = self.m, self.m.depths
        yield _gauge("customer_sync_store_read_ok", "1 when the last scrape read the store's "
                     "depths in time, 0 when it served the values read before.", {(): int(m.store_ok)})
        outbox = {(app, state): 0 for app in m.apps for state in ("pending", "sending", "failed")}
        outbox.update(d.outbox)
        yield _gauge("customer_sync_outbox_depth", "Writes waiting in the outbox, by app and state.",
                     outbox, ("app", "state"))
        yield _gauge("customer_sync_inbox_depth", "Changes waiting in the inbox, by the app they "
                     "came from.", _per_app(m.apps, d.inbox), ("app",))
        yield _gauge("customer_sync_conflicts_open", "Conflicts parked for an operator, by kind "
                     "(field, match).", {(k,): n for k, n in ({"field": 0, "match": 0} | d.conflicts_open).items()},
                     ("kind",))
        yield _gauge("customer_sync_rejections_open", "Values an app holds that normalization "
                     "refused (open rejections), by app.", _per_app(m.apps, d.rejections_open), ("app",))
        yield _gauge("customer_sync_dead_letters", "Work that failed for good and was not replayed, by app.",
                     _per_app(m.apps, d.dead_letters), ("app",))
        yield _gauge("customer_sync_sync_lag_seconds", "Seconds since the start of the app's last "
                     "complete poll (or since the daemon started, before its first).",
                     {(app,): m.sync_lag_s(app) for app in m.apps}, ("app",))
        calls = api_counts()
        for name, key, text in (
            ("customer_sync_api_requests", "requests", "HTTP requests sent to an app's API, retries included."),
            ("customer_sync_api_rate_limited", "rate_limited", "429 answers from an app's API."),
            ("customer_sync_api_retries", "retries", "Requests that repeated an earlier attempt."),
        ):
            family = CounterMetricFamily(name, text, labels=["app"])
            for app in m.apps:
                family.add_metric([app], calls.get(app, {}).get(key, 0))
            yield family


def _per_app(apps: Iterable[str], counts: dict[str, int]) -> dict[tuple[str, ...], int]:
    out: dict[tuple[str, ...], int] = {(app,): 0 for app in apps}
    out.update({(app,): n for app, n in counts.items()})
    return out


def _gauge(name: str, text: str, samples: dict[tuple[str, ...], float], labels: tuple[str, ...] = ()) -> Metric:
    family = GaugeMetricFamily(name, text, labels=list(labels))
    for values, n in sorted(samples.items()):
        family.add_metric(list(values), n)
    return family
