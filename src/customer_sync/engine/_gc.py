"""Running Python's cyclic garbage collector between batches instead of by its thresholds.

Deciding a batch allocates tens of thousands of small dicts and lists that live until the batch
is flushed, and a poll keeps up to two batches of pages read ahead. By its own thresholds the
collector runs every 700 net allocations and walks whatever young objects are alive: the same
pages and half-decided batch over and over, and every so often the whole heap. Measured on the
HubSpot pull benchmark, that was a tenth of the daemon's CPU. Paused for a batch, and for a whole
poll (which collects the young generations after each batch, right after freeing it), the
collector walks each object about once; reference counting frees nearly everything anyway, so
memory stays bounded by what a batch and its read-ahead hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import AsyncIterator, Iterator

__all__ = ["collect_young", "gc_deferred", "gc_paused"]

_lock = threading.Lock()
_depth = 0  # batches being decided now, in any thread
_was_enabled = False
_last_young = 0.0  # monotonic time of the last `collect_young`


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic collector off for the block (nestable, and across threads); it is turned
    back on when the last such block ends, unless it was off before the first began."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()



def collect_young() -> None:
    """While paused, collect the young generations now.

    Objects that outlive a collection are promoted and not walked again by young collections.
    Does nothing when the collector is not paused by us (it runs by itself then).
    """
    global _last_young
    if _depth and _was_enabled:
        gc.collect(1)
        _last_young = time.monotonic()


@contextlib.asynccontextmanager
async def gc_deferred(every_s: float = 1.0, full_every: int = 60) -> AsyncIterator[None]:
    """Pause the collector for a long block of work (a whole poll), and collect on a clock.

    The block calls `collect_young` at its quiet points (between batches). Should it not for
    `every_s` seconds (it waits on its app), the clock does; and it collects everything every
    `full_every` ticks, so that cycles other tasks of the daemon leave behind meanwhile are
    still freed, however long the block lasts. The clock runs on the event loop that entered
    the block.
    """

    async def clock() -> None:
        ticks = 0
        while True:
            await asyncio.sleep(every_s)
            ticks += 1
            if ticks % full_every == 0:
                if _depth and _was_enabled:
                    gc.collect()
            elif time.monotonic() - _last_young >= every_s:
                collect_young()

    with gc_paused():
        task = asyncio.create_task(clock(), name="gc-clock")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
