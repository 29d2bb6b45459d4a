"""Normalizing large polled pages on another core while the engine decides the pages before.

Normalization (email-validator, phonenumbers, transforms) is pure CPU work on each record's app
fields: about a quarter of deciding a page of new records. In the engine's process it cannot
overlap with the store work (the interpreter lock), so a page that is big enough is sent to a
worker process as soon as it is read; by the time the engine decides it, its canonical values
are waiting. The engine's own process then only matches, merges, plans and writes.

Small pages (quiet rounds, incremental polls) are normalized in place: the round trip would
cost more than it saves. Until the worker has started, and if it ever fails, pages are
normalized in place too: the worker makes a pull faster, never different.

`daemon.normalize_workers` sets the number of worker processes; by default one when the
machine has two or more cores, none otherwise. Each is `python -m customer_sync.engine._worker
normalize` (`engine._spawn`): it imports the canonical schema and the field maps, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog

from customer_sync.engine._normalize_worker import Wire, normalize_fields
from customer_sync.engine._spawn import WorkerProcess
from customer_sync.errors import MappingError

if TYPE_CHECKING:
    from customer_sync.mapping.compile import AppMapping
    from customer_sync.sdk.connector import AppRecord

__all__ = ["Normalized", "PageNormalizer", "default_workers", "normalize_fields"]

log = structlog.get_logger("customer_sync.engine")

class Normalized(NamedTuple):
    """What the worker worked out for one record."""

    values: dict[str, Any]  # canonical values
    errors: list[MappingError]  # per-field errors
    fingerprint: str  # of the app fields the map covers
    hashes: list[tuple[str, str, bytes]]  # (kind, value, keyed hash) of each identity


def default_workers() -> int:
    """No worker process unless `daemon.normalize_workers` asks for some.

    Measured as a user measures it (`bench/pull_tree.py`: `run --once`, wall time from start to
    exit, peak RSS of the whole process tree), on HubSpot pulls on a 2-core machine, workers
    on against off: a 10k pull's tree peaked at 192 against 133 MB, for no wall time saved on
    plain pages (off/on 0.96, off faster in 4 of 5 pairs) and 9% with property history (off
    slower in 3 of 4); at 50k, 13% with history and none on plain pages. The worker also stays
    resident for the daemon's life while only big pulls use it. So it is off by default, and
    worth turning on for big initial pulls with property history.
    """
    return 0


class PageNormalizer:
    """Normalizes big pages in worker processes; `submit` returns None when the caller should
    normalize in place instead.

    Args:
        workers: worker processes; 0 turns the worker off.
        min_records: pages with fewer records are normalized in place.
    """

    def __init__(self, workers: int, *, min_records: int = 50, identity_key: bytes | None = None) -> None:
        self.workers = workers
        self.min_records = min_records
        self.identity_key = identity_key  # identities are hashed with it in the worker too
        self._procs: list[_Worker] | None = None
        self._warm: Future[bool] | None = None
        self._failed = False
        self._jobs = itertools.count()

    @property
    def ready(self) -> bool:
        """The worker has started and has not failed."""
        return (not self._failed and self._warm is not None and self._warm.done()
                and self._warm.exception() is None)

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (none before they start)."""
        return [w.process.pid for w in self._procs or []]

    def _start(self) -> None:
        # A fresh interpreter, not a fork: the daemon has threads (scheduler, HTTP server, store
        # workers) and a forked child would inherit their locks in whatever state they were in.
        warm: Future[bool] = Future()  # done when every worker is ready, or one failed
        waiting = [self.workers]
        lock = threading.Lock()

        def on_ready() -> None:
            with lock:
                waiting[0] -= 1
                if waiting[0] == 0 and not warm.done():
                    warm.set_result(True)

        def on_gone(exc: BaseException) -> None:
            with lock:
                if not warm.done():
                    warm.set_exception(exc)

        self._warm = warm
        self._procs = []
        try:
            for _ in range(self.workers):
                self._procs.append(_Worker(WorkerProcess("normalize"), on_ready, on_gone))
        except Exception as exc:  # noqa: BLE001 - no processes here: normalize in place
            on_gone(exc)

    async def start(self) -> None:
        """Start the workers and wait until they can take pages (`submit` starts them too,
        without waiting)."""
        if self.workers <= 0 or self._failed:
            return
        if self._procs is None:
            self._start()
        assert self._warm is not None
        try:
            await asyncio.wrap_future(self._warm)
        except Exception as exc:
            self._fail(exc)

    def submit(self, mapping: AppMapping, records: Sequence[AppRecord]) -> asyncio.Future[Wire] | None:
        """Start normalizing these records in a worker, or return None (normalize in place)."""
        if self.workers <= 0 or self._failed or len(records) < self.min_records:
            return None
        if self._procs is None:
            self._start()  # this page is normalized in place while the worker starts
            return None
        if not self.ready:
            if self._warm is not None and self._warm.done():
                self._fail(self._warm.exception())
            return None
        assert self._procs
        worker = min(self._procs, key=lambda w: len(w.jobs))  # the least busy
        try:
            return asyncio.wrap_future(worker.submit(
                next(self._jobs), mapping, [r.fields for r in records], self.identity_key))
        except Exception as exc:  # a value that cannot be pickled, or a worker gone
            self._fail(exc)
            return None

    async def collect(
        self, app: str, records: Sequence[AppRecord], pending: asyncio.Future[Wire] | None
    ) -> dict[int, Normalized]:
        """The worker's results for these records, keyed by `id(record)`; empty when there is
        no result (normalize in place)."""
        if pending is None:
            return {}
        try:
            wire = await pending
        except Exception as exc:  # the worker died, or the mapping could not be sent to it
            self._fail(exc)
            return {}
        return {
            id(rec): Normalized(values, [MappingError(message, field=field, app=app, raw_value=raw)
                                         for field, message, raw in errors], fp, hashes)
            for rec, (values, errors, fp, hashes) in zip(records, wire, strict=True)
        }

    def _fail(self, exc: BaseException | None) -> None:
        if not self._failed:
            self._failed = True
            log.warning("normalize.worker_failed", error=f"{type(exc).__name__}: {exc}",
                        fallback="normalizing in the engine's process")

    def close(self) -> None:
        """Stop the workers (pages not yet taken are dropped: their polls were cancelled)."""
        procs, self._procs = self._procs, None
        for worker in procs or []:
            worker.close()
            worker.reader.join(5)


class _Worker:
    """One normalizing process, the jobs sent to it, and the thread that reads its answers."""

    def __init__(self, process: WorkerProcess, on_ready: Callable[[], None],
                 on_gone: Callable[[BaseException], None]) -> None:
        self.process = process
        self.jobs: dict[int, Future[Wire]] = {}
        self._on_ready, self._on_gone = on_ready, on_gone
        # Two locks: the reader takes only `_lock` (the jobs), never while a send may block, so
        # a worker blocked sending a big answer is always read, and can then read what we send.
        self._lock = threading.Lock()  # the jobs
        self._sending = threading.Lock()  # the pipe's writing end
        self.reader = threading.Thread(target=self._read, name="customer-sync-normalize-reader",
                                       daemon=True)
        self.reader.start()

    def submit(self, job: int, mapping: AppMapping, fields: list[Any], identity_key: bytes | None) -> Future[Wire]:
        if not self.process.is_alive():
            raise RuntimeError("the normalizing worker has ended")
        done: Future[Wire] = Future()
        with self._lock:
            self.jobs[job] = done
        try:
            with self._sending:
                self.process.conn.send(("normalize", job, mapping, fields, identity_key))
        except BaseException:
            with self._lock:
                self.jobs.pop(job, None)
            raise
        return done

    def _read(self) -> None:
        conn = self.process.conn
        try:
            while True:
                message = conn.recv()
                kind = message[0]
                if kind == "ready":
                    self._on_ready()
                    continue
                with self._lock:
                    done = self.jobs.pop(message[1], None)
                if done is None:
                    continue
                with contextlib.suppress(InvalidStateError):  # cancelled by `close` meanwhile
                    if kind == "done":
                        done.set_result(message[2])
                    else:
                        done.set_exception(message[2])
        except (EOFError, OSError) as exc:  # the worker ended (or we closed its pipe)
            gone = RuntimeError(f"the normalizing worker ended (exit code {self.process.exitcode}): "
                                f"{type(exc).__name__}")
            with self._lock:
                pending, self.jobs = list(self.jobs.values()), {}
            for done in pending:
                with contextlib.suppress(InvalidStateError):
                    done.set_exception(gone)
            self._on_gone(gone)

    def close(self) -> None:
        """Ask the worker to exit and wait for it (then kill it); jobs not answered are cancelled."""
        with self._lock:
            pending = list(self.jobs.values())
        for done in pending:
            done.cancel()
        sending = self._sending.acquire(timeout=5)  # not in the middle of a job's message
        try:
            with contextlib.suppress(Exception):
                self.process.stop(5)
        finally:
            if sending:
                self._sending.release()
