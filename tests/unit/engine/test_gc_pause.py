"""The collector is paused while batches are decided, collected between them, and always
turned back on."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import pytest

from customer_sync.engine._gc import gc_paused


@pytest.fixture(autouse=True)
def _collector_on():
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_paused_inside_and_back_on_after_even_on_error():
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_nested_and_overlapping_blocks_in_two_threads():
    """The collector comes back on when the last block ends, not the first."""
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with gc_paused():
            inside.set()
            release.wait(5)

    t = threading.Thread(target=other)
    with gc_paused():
        t.start()
        assert inside.wait(5)
        with gc_paused():
            assert not gc.isenabled()
    assert not gc.isenabled(), "the other thread's block is still open"
    release.set()
    t.join(5)
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_host_stays_off():
    gc.disable()
    with gc_paused():
        pass
    assert not gc.isenabled()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_collect_young_frees_cycles_made_while_paused():
    """While paused nothing is collected by thresholds; `collect_young` collects what is young."""
    from customer_sync.engine._gc import collect_young

    with gc_paused():
        gc.collect()
        refs = [weakref.ref(_Cycle()) for _ in range(2000)]  # well past the gen-0 threshold
        assert all(r() is not None for r in refs), "nothing may be collected while paused"
        collect_young()
        assert all(r() is None for r in refs)
        assert not gc.isenabled(), "still paused after a young collection"
    assert gc.isenabled()


def test_collect_young_leaves_a_running_collector_alone(monkeypatch):
    from customer_sync.engine import _gc

    calls = []
    monkeypatch.setattr(_gc.gc, "collect", lambda *a: calls.append(a))
    _gc.collect_young()  # not paused: the collector runs by itself, nothing to do
    gc.disable()
    try:
        with gc_paused():  # paused, but the host had it off: leave it to the host
            _gc.collect_young()
    finally:
        gc.enable()
    assert calls == []


async def test_a_deferred_block_that_waits_is_still_collected_on_a_clock():
    """A poll waiting on its app does not call `collect_young`: the clock does, so cycles other
    tasks leave meanwhile are freed while the collector is paused."""
    from customer_sync.engine._gc import gc_deferred

    async with gc_deferred(every_s=0.02):
        assert not gc.isenabled()
        gc.collect()
        refs = [weakref.ref(_Cycle()) for _ in range(50)]
        for _ in range(100):
            if all(r() is None for r in refs):
                break
            await asyncio.sleep(0.02)
        assert all(r() is None for r in refs), "the clock did not collect"
        assert not gc.isenabled()
    assert gc.isenabled()


async def test_a_deferred_block_collects_everything_every_so_often(monkeypatch):
    from customer_sync.engine import _gc

    generations: list[int] = []
    real = _gc.gc.collect
    monkeypatch.setattr(_gc.gc, "collect", lambda generation=2: generations.append(generation) or real(generation))
    async with _gc.gc_deferred(every_s=0.01, full_every=3):
        for _ in range(200):
            if generations.count(2) >= 2:
                break
            await asyncio.sleep(0.01)
    assert generations.count(2) >= 2
    assert generations[:3] == [1, 1, 2], "two young collections, then a full one"
    assert gc.isenabled()
