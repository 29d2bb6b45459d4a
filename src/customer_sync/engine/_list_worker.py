"""What a listing worker process runs (see `engine.listing`): one app's `list_changes`, with
each page normalized before it is sent to the daemon.

The messages on the pipe, as tuples whose first item names them:

daemon -> worker
    ("list", seq, spec, cursor, max_ahead)  list from `cursor` (a cursor value or None)
    ("took", seq, n)                        the daemon took n records off the pipe
    ("granted", request)                    the rate limiters let that request's call start
    ("stop", seq)                           stop listing `seq` (the poll ended early)
    ("exit",)                               close the connector and end
worker -> daemon
    ("ready",)                              imports done: send work
    ("page", seq, page, wire)               a `ChangePage` and its normalization (`Wire`)
    ("end", seq, error)                     listing `seq` ended; error None or the exception
    ("acquire", request, positions, n)      wait for the daemon's limiters at these positions
    ("penalize", positions, retry_after_s)  the vendor answered 429

At most `max_ahead` records are sent and not yet taken, so the worker never reads far ahead of
what the daemon decides. The worker's connector is built once, at the first listing, inside
`ratelimit.collecting()`, and its limiters defer to the daemon's through the pipe.
"""

from __future__ import annotations

import asyncio
import itertools
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from customer_sync.mapping.compile import AppMapping
    from customer_sync.sdk.connector import ChangePage, Connector

__all__ = ["ListSpec", "main"]


@dataclass(frozen=True)
class ListSpec:
    """What the worker needs to list one app as the daemon would."""

    app: str
    connector_cls: type[Connector]  # type: ignore[type-arg]
    settings: Any  # the connector's validated settings
    limiters: int  # how many rate limiters the daemon's instance created
    mapping: AppMapping
    identity_key: bytes
    max_retry_after_s: float  # the app's cap on a vendor's Retry-After, as the daemon's instance has


def main(conn: Connection, log_level: str, log_format: str, redact: bool) -> None:
    """The worker process (started by `engine._worker`, which has made it die with the
    daemon): serve listings until told to exit or the daemon goes away."""
    from customer_sync.logs import configure_logging

    configure_logging(level=log_level, fmt=log_format, redact=redact)
    asyncio.run(_Worker(conn).serve())


class _Worker:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.inbox: asyncio.Queue[tuple[Any, ...] | None] = asyncio.Queue()
        self.grants: dict[int, asyncio.Future[None]] = {}
        self.requests = itertools.count()
        self.room = asyncio.Event()
        self.unacked = 0
        self.seq = -1
        self.listing: asyncio.Task[None] | None = None
        self.connector: Connector | None = None  # type: ignore[type-arg]

    async def serve(self) -> None:
        from customer_sync.engine._normalize_worker import warm_up

        loop = asyncio.get_running_loop()
        loop.add_reader(self.conn.fileno(), self._readable)
        warm_up()
        self.send(("ready",))
        try:
            while (message := await self.inbox.get()) is not None:
                kind = message[0]
                if kind == "list":
                    await self._stop_listing()
                    self.seq, self.unacked = message[1], 0
                    self.listing = asyncio.create_task(self._list(*message[1:]))
                elif kind == "took" and message[1] == self.seq:
                    self.unacked -= message[2]
                    self.room.set()
                elif kind == "granted":
                    grant = self.grants.pop(message[1], None)
                    if grant is not None and not grant.done():
                        grant.set_result(None)
                elif kind == "stop" and message[1] == self.seq:
                    await self._stop_listing()
                elif kind == "exit":
                    break
        finally:
            await self._stop_listing()
            loop.remove_reader(self.conn.fileno())
            if self.connector is not None:
                await self.connector.close()

    def _readable(self) -> None:
        try:
            while self.conn.poll():
                self.inbox.put_nowait(self.conn.recv())
        except (EOFError, OSError):  # the daemon is gone
            asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.inbox.put_nowait(None)

    def send(self, message: tuple[Any, ...]) -> None:
        self.conn.send(message)

    async def _stop_listing(self) -> None:
        task, self.listing = self.listing, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _list(self, seq: int, spec: ListSpec, cursor: str | None, max_ahead: int) -> None:
        from customer_sync.engine._gc import gc_deferred
        from customer_sync.engine._normalize_worker import normalize_fields

        # The connector reads the next page while this one is normalized: its waits (for the
        # daemon's rate limiter, for the app) overlap with the CPU work here.
        read: asyncio.Queue[ChangePage | None] = asyncio.Queue(maxsize=2)
        reader = asyncio.create_task(self._read(spec, cursor, read))
        try:
            # By its own thresholds the cyclic collector ran every 700 allocations and walked
            # the pages being parsed and normalized, again and again: a tenth of this worker's
            # CPU on a HubSpot pull. Paused, and collected on a clock (`engine._gc`), it walks
            # only what is alive at each tick; reference counting frees the pages meanwhile.
            async with gc_deferred():
                while (page := await read.get()) is not None:
                    wire = normalize_fields(spec.mapping, [r.fields for r in page.records], spec.identity_key)
                    while self.unacked >= max_ahead:
                        self.room.clear()
                        await self.room.wait()
                    self.unacked += max(1, len(page.records))
                    self.send(("page", seq, page, wire))
                await reader  # raises what the connector raised
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.send(("end", seq, _portable(exc)))
        else:
            self.send(("end", seq, None))
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read(self, spec: ListSpec, cursor: str | None, read: asyncio.Queue[ChangePage | None]) -> None:
        from customer_sync.sdk.connector import Cursor

        try:
            connector = await self._connector(spec)
            async for page in connector.list_changes(Cursor(value=cursor) if cursor is not None else None):
                await read.put(page)
        except asyncio.CancelledError:
            raise
        except BaseException:
            await read.put(None)  # the error is raised by awaiting this task
            raise
        await read.put(None)

    async def _connector(self, spec: ListSpec) -> Connector:  # type: ignore[type-arg]
        from customer_sync.errors import ConnectorError
        from customer_sync.sdk.ratelimit import collecting, defer_to

        if self.connector is None:
            with collecting() as made:
                connector = spec.connector_cls(spec.settings, app=spec.app)
                connector.max_retry_after_s = spec.max_retry_after_s
                await connector.open()
            if len(made) != spec.limiters:
                await connector.close()
                raise ConnectorError(
                    f"the connector made {len(made)} rate limiters in the listing worker and "
                    f"{spec.limiters} in the daemon, so they cannot share a budget",
                    app=spec.app, connector=spec.connector_cls.name, operation="list_in_worker")
            defer_to(made, self)
            self.connector = connector
        return self.connector

    # -- the `LimiterGate` the connector's limiters defer to --------------------------------------

    async def acquire(self, positions: Sequence[int], n: int) -> None:
        request = next(self.requests)
        grant = asyncio.get_running_loop().create_future()
        self.grants[request] = grant
        try:
            self.send(("acquire", request, tuple(positions), n))
            await grant
        finally:
            self.grants.pop(request, None)

    def penalize(self, positions: Sequence[int], retry_after_s: float) -> None:
        self.send(("penalize", tuple(positions), retry_after_s))


def _portable(exc: Exception) -> Exception:
    """The exception itself when it survives pickling, else a ConnectorError that names it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        from customer_sync.errors import ConnectorError

        return ConnectorError(f"{type(exc).__name__}: {exc}", app=getattr(exc, "app", None),
                              operation="list_changes")
    return exc
