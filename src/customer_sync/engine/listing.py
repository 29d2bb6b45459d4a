"""Listing an app in a worker process, so that reading and parsing its pages leave the engine's
process free to decide them.

On an initial pull the engine's process is the bottleneck: it reads pages (HTTP, JSON, the
connector's parsing) and decides them (matching, merging, the store) under one interpreter lock.
For a connector that declares `lists_in_worker`, a worker process builds a second instance of
the connector from the same settings and runs its `list_changes` there. It also normalizes each
page (as the normalizing worker would) and sends it with its normalization over a pipe.

- One rate-limit budget: the worker's connector creates its limiters as the engine's did, and
  each of its calls waits for the engine's limiter at the same position (`sdk.ratelimit`). So
  listing in the worker and dispatching in the engine never add up to more than the app allows.
- Bounded: the worker sends at most `max_ahead` records the engine has not taken yet.
- Never different, only faster: pages come with the same cursors and are committed in order as
  before. A poll starts in the engine's process and hands over, at a page boundary (that page's
  cursor), once the worker is ready, so a small poll never waits for a worker to start. If the
  worker dies, the poll goes on in the engine's process from the last page it received.
- Errors the connector raises in the worker are raised by the poll as they would be in place.

`daemon.list_in_worker` turns it off; by default it is on when there is a normalizing worker
(two or more cores).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import structlog

from customer_sync.engine._spawn import WorkerProcess
from customer_sync.errors import ConnectorError
from customer_sync.sdk.connector import ChangePage, Connector, Cursor
from customer_sync.sdk.http import count_api_call
from customer_sync.sdk.ratelimit import MultiLimiter, RateLimiter

if TYPE_CHECKING:
    from customer_sync.engine._list_worker import ListSpec
    from customer_sync.engine._normalize_worker import Wire

__all__ = ["ListingWorker", "WorkerGone"]

log = structlog.get_logger("customer_sync.engine")


class WorkerGone(ConnectorError):
    """The listing worker process ended in the middle of a listing."""


class ListingWorker:
    """One app's listing process, started on demand and kept for the engine's life.

    Args:
        spec: how to build the app's connector and normalize its pages in the worker.
        limiters: the engine's connector's rate limiters, in the order it created them.
        log_settings: (level, format, redact) for the worker's own logging.
    """

    def __init__(self, spec: ListSpec, limiters: Sequence[RateLimiter],
                 log_settings: tuple[str, str, bool]) -> None:
        self.spec = spec
        self.app = spec.app
        self._limiters = list(limiters)
        self._log_settings = log_settings
        self._process: WorkerProcess | None = None
        self._conn: Connection | None = None
        self._ready: asyncio.Future[bool] | None = None
        self._seq = 0
        self._pages: asyncio.Queue[tuple[Any, ...]] | None = None
        self._grants: set[asyncio.Task[None]] = set()
        self.failed = False
        self.listings = 0  # listings served (tests and logs)

    @property
    def ready(self) -> bool:
        """Started, imports done, and not failed."""
        return (not self.failed and self._ready is not None and self._ready.done()
                and not self._ready.cancelled() and self._ready.exception() is None)

    def start(self) -> None:
        """Spawn the worker unless it is running or has failed; returns at once (see `ready`)."""
        if self.failed or self._process is not None:
            return
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        # a fresh interpreter running the worker's own small module (`engine._spawn`), not a
        # fork: the daemon has threads whose locks a forked child would inherit
        try:
            process = WorkerProcess("list", *self._log_settings)
        except Exception as exc:  # noqa: BLE001 - no processes here: list in place
            self._fail(exc)
            return
        try:
            loop.add_reader(process.conn.fileno(), self._readable)
        except Exception as exc:  # a loop without add_reader
            process.kill()
            process.join(5)
            process.close()
            self._fail(exc)
            return
        self._process, self._conn = process, process.conn

    async def wait_ready(self) -> bool:
        """Start the worker if needed and wait until it can list; False when it cannot."""
        self.start()
        if self._ready is None:
            return False
        with contextlib.suppress(Exception):
            await asyncio.shield(self._ready)
        return self.ready

    async def pages(self, cursor: Cursor | None, max_ahead: int) -> AsyncIterator[tuple[ChangePage, Wire]]:
        """The app's pages listed from `cursor` in the worker, each with its normalization.

        Raises:
            WorkerGone: the worker ended; the last page received carries the cursor to go on from.
            Whatever the connector raised in the worker.
        """
        if not self.ready or self._conn is None:
            raise WorkerGone("the listing worker is not running", app=self.app, operation="list_changes")
        self._seq += 1
        seq = self._seq
        queue = self._pages = asyncio.Queue()
        self.listings += 1
        self._send(("list", seq, self.spec, cursor.value if cursor is not None else None, max_ahead))
        ended = False
        try:
            while True:
                message = await queue.get()
                if message[0] == "end":
                    ended = True
                    if message[2] is not None:
                        raise message[2]
                    return
                _, _, page, wire = message
                yield page, wire
                self._send(("took", seq, max(1, len(page.records))))
        finally:
            self._pages = None
            if not ended and not self.failed:
                self._send(("stop", seq))

    # -- the pipe -----------------------------------------------------------------------------

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._conn is None or self.failed:
            return
        try:
            self._conn.send(message)
        except (OSError, ValueError) as exc:  # the worker is gone; _readable sees it too
            self._fail(exc)

    def _readable(self) -> None:
        assert self._conn is not None
        try:
            while self._conn.poll():
                self._receive(self._conn.recv())
        except (EOFError, OSError) as exc:
            self._fail(exc)

    def _receive(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "acquire":
            _, request, positions, n = message
            count_api_call(self.app, "requests")  # the worker asks before each attempt it sends
            limiter = MultiLimiter(*(self._limiters[p] for p in positions))
            if limiter.try_acquire(n):  # the usual case: no need to wait for a turn of the loop
                self._send(("granted", request))
                return
            task = asyncio.create_task(self._grant(limiter, request, n))
            self._grants.add(task)
            task.add_done_callback(self._grants.discard)
        elif kind == "penalize":
            _, positions, retry_after_s = message
            MultiLimiter(*(self._limiters[p] for p in positions)).penalize(retry_after_s)
        elif kind in ("page", "end"):
            if self._pages is not None and message[1] == self._seq:
                self._pages.put_nowait(message)
        elif kind == "ready" and self._ready is not None and not self._ready.done():
            self._ready.set_result(True)

    async def _grant(self, limiter: MultiLimiter, request: int, n: int) -> None:
        await limiter.acquire(n)
        self._send(("granted", request))

    def _fail(self, exc: BaseException | None) -> None:
        if self.failed:
            return
        self.failed = True
        code = None
        if self._process is not None:
            self._process.join(timeout=0.5)  # it is ending: its pipe closed
            code = self._process.exitcode
        if self._conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._conn.fileno())
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerGone("the listing worker did not start", app=self.app))
        for task in self._grants:
            task.cancel()
        log.warning("listing.worker_failed", app=self.app, exit_code=code,
                    error=f"{type(exc).__name__}: {exc}" if exc is not None else None,
                    fallback="listing in the engine's process")
        if self._pages is not None:
            self._pages.put_nowait(("end", self._seq, WorkerGone(
                f"the listing worker ended (exit code {code})", app=self.app, operation="list_changes")))

    async def aclose(self) -> None:
        """Ask the worker to exit and wait for it (briefly; then it is terminated)."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        self.failed = True  # a closed worker lists nothing more
        for task in self._grants:
            task.cancel()
        if conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            with contextlib.suppress(OSError, ValueError):
                conn.send(("exit",))
        if process is not None:
            await asyncio.to_thread(process.join, 5)
            if process.is_alive():
                process.kill()  # it ignores SIGTERM (see `_orphan`)
                await asyncio.to_thread(process.join, 5)
            process.close()


def can_list_in_worker(connector: Connector) -> bool:  # type: ignore[type-arg]
    """The connector declares that its listing may run in a worker process."""
    return bool(getattr(type(connector), "lists_in_worker", False))
