"""The collector is paused while batches are decided, collected between them, and always
turned back on; the listing worker lists with it paused too."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import threading
import weakref
from typing import ClassVar

import pytest

from customer_sync.engine._gc import gc_paused
from customer_sync.engine._list_worker import ListSpec, _Worker
from customer_sync.errors import TransientError
from customer_sync.mapping.compile import compile_mapping
from customer_sync.testing.fake_connector import FakeApp, FakeConnector, FakeSettings


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


class _WatchingConnector(FakeConnector):
    """The fake, noting at each page whether the cyclic collector is running."""

    collector_on_at_pages: ClassVar[list[bool]] = []

    async def list_changes(self, since):  # type: ignore[override]
        async for page in super().list_changes(since):
            type(self).collector_on_at_pages.append(gc.isenabled())
            yield page


def _listing_spec(data: str, *, fail: bool = False) -> ListSpec:
    app = FakeApp(data)
    for i in range(5):
        app.put({"email": f"person{i}@example.com", "phone": "+14155552671"})
    if fail:
        app.fail_next("list", TransientError("503 from the app", app="crm"))
    mapping, problems = compile_mapping("crm", {"email": "email", "phone": "phone"}, custom_fields={})
    assert [] == problems
    return ListSpec(app="crm", connector_cls=_WatchingConnector, settings=FakeSettings(page_size=2, data=data),
                    limiters=0, mapping=mapping, identity_key=b"k" * 32, max_retry_after_s=900.0)


def _sent(conn) -> list[tuple]:
    out = []
    while conn.poll():
        out.append(conn.recv())
    return out


async def test_the_listing_worker_lists_with_the_collector_paused_and_turns_it_back_on():
    """The listing worker's pages are parsed and normalized with the collector paused (by its
    thresholds it walked every page again and again), and it is on again once the listing ends."""
    _WatchingConnector.collector_on_at_pages = []
    ours, theirs = multiprocessing.Pipe()
    worker = _Worker(theirs)
    try:
        await worker._list(1, _listing_spec("gc-watch"), None, 1_000)
        assert [False, False, False] == _WatchingConnector.collector_on_at_pages
        assert gc.isenabled()
        sent = _sent(ours)
        assert ["page", "page", "page", "end"] == [m[0] for m in sent]
        assert [2, 2, 1] == [len(m[2].records) for m in sent[:3]]
        assert sent[-1][2] is None
    finally:
        if worker.connector is not None:
            await worker.connector.close()
        ours.close()
        theirs.close()


async def test_the_listing_worker_turns_the_collector_back_on_when_the_listing_fails():
    ours, theirs = multiprocessing.Pipe()
    worker = _Worker(theirs)
    try:
        await worker._list(1, _listing_spec("gc-watch-failing", fail=True), None, 1_000)
        assert gc.isenabled()
        (end,) = _sent(ours)
        assert "end" == end[0]
        assert isinstance(end[2], TransientError)
    finally:
        ours.close()
        theirs.close()
