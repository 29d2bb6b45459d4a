"""`GET /metrics` while the daemon syncs fake apps: the counters and gauges move with the work,
the text parses as Prometheus exposition, and a busy store never stalls the scrape."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from customer_sync import metrics as metrics_mod
from customer_sync.api.app import create_app
from customer_sync.engine.runner import Engine, RoundResult
from tests.integration.conftest import World

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Running:
    """The daemon (`run_forever`) over a world's fake apps, and its HTTP surface in process."""

    def __init__(self, world: World) -> None:
        world.config.daemon.normalize_workers = 0  # no worker processes: a fast, small test
        self.world = world
        self.engine: Engine = world.engine()
        self.stop = asyncio.Event()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(self.engine)),
                                      base_url="http://sync.test")

    async def scrape(self) -> Samples:
        response = await self.http.get("/metrics")
        assert 200 == response.status_code
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        return parse(response.text)

    async def until(self, done: Callable[[], bool]) -> None:
        """Wait for rounds until `done()` holds (the daemon's own pace, no sleeps)."""
        async with asyncio.timeout(60):
            while not done():
                await self.engine.wait_round(partial(self._after, self.engine.rounds))
                if self.task.done():
                    self.task.result()

    def _after(self, mark: int, r: RoundResult) -> bool:
        return r.number > mark or self.task.done()

    async def quiet(self) -> RoundResult:
        mark = self.engine.rounds
        async with asyncio.timeout(60):
            return await self.engine.wait_round(lambda r: r.number > mark and r.quiet)


@pytest.fixture
async def daemon(world: Callable[..., World]) -> AsyncIterator[Running]:
    # polled every 0.2 s, so an edit is read soon after it is made
    running = Running(world(apps=("crm", "desk"), app_options={
        app: {"poll_interval_s": 0.2} for app in ("crm", "desk")}))
    async with running.engine:
        running.task = asyncio.create_task(running.engine.run_forever(running.stop, dispatch_interval_s=0.05))
        try:
            yield running
        finally:
            running.stop.set()
            await asyncio.wait_for(running.task, timeout=60)
            await running.http.aclose()


async def test_metrics_move_while_the_daemon_syncs(daemon: Running) -> None:
    """Changes observed, decided and written, durations and depths follow the daemon's work."""
    w = daemon.world
    before = await daemon.scrape()
    assert 0 == value(before, "customer_sync_changes_written_total", app="desk", outcome="created")
    for i in range(12):
        w.apps["crm"].put({"email": f"c{i}@example.com", "first": f"C{i}"})
    daemon.engine.notify()
    await daemon.until(lambda: len(w.apps["desk"].live()) == 12)
    await daemon.quiet()

    synced = await daemon.scrape()
    assert 12 <= value(synced, "customer_sync_changes_observed_total", app="crm", source="poll")
    assert 12 == value(synced, "customer_sync_changes_decided_total", app="crm", decision="created")
    assert 12 == value(synced, "customer_sync_changes_written_total", app="desk", outcome="created")
    assert 0 < value(synced, "customer_sync_poll_duration_seconds_count", app="crm")
    assert 0 < value(synced, "customer_sync_dispatch_duration_seconds_count", app="desk")
    assert 0 == value(synced, "customer_sync_outbox_depth", app="desk", state="pending")
    assert 1 == value(synced, "customer_sync_store_read_ok")
    assert ("customer_sync_sync_lag_seconds", (("app", "crm"),)) in synced

    rid = next(iter(w.apps["desk"].live()))
    w.apps["desk"].edit(rid, first="Edited")
    daemon.engine.notify()
    await daemon.until(lambda: any(f.get("first") == "Edited" for f in w.apps["crm"].live().values()))
    await daemon.quiet()

    edited = await daemon.scrape()
    assert 1 <= (value(edited, "customer_sync_changes_observed_total", app="desk", source="poll")
                 - value(synced, "customer_sync_changes_observed_total", app="desk", source="poll"))
    assert 1 == (value(edited, "customer_sync_changes_written_total", app="crm", outcome="written")
                 - value(synced, "customer_sync_changes_written_total", app="crm", outcome="written"))


async def test_a_busy_store_serves_the_last_depths_without_stalling(
        daemon: Running, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store read that hangs makes the scrape answer after the short wait, with
    `customer_sync_store_read_ok 0`, while the event loop goes on serving."""
    release = threading.Event()
    real = metrics_mod.read_depths

    def stuck(store: Any) -> metrics_mod.StoreDepths:
        release.wait(30)
        return real(store)

    await daemon.quiet()
    monkeypatch.setattr(metrics_mod, "read_depths", stuck)
    monkeypatch.setattr(metrics_mod, "STORE_READ_TIMEOUT_S", 0.05)
    try:
        scrape = asyncio.create_task(daemon.scrape())
        health = await daemon.http.get("/healthz")  # the loop answers while the read hangs
        assert 200 == health.status_code
        samples = await scrape
        assert 0 == value(samples, "customer_sync_store_read_ok")
        assert ("customer_sync_outbox_depth", (("app", "crm"), ("state", "pending"))) in samples
    finally:
        release.set()
    async with asyncio.timeout(30):
        while not await daemon.engine.metrics.refresh(daemon.engine.store):
            pass  # the stuck read ends; the next scrape reads the store again
    assert 1 == value(await daemon.scrape(), "customer_sync_store_read_ok")
