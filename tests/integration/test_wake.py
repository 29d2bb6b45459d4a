"""The daemon's stages wake each other: a webhook committed to the inbox wakes its processing, a
planned write is dispatched at once, wakes coalesce, and a wake after the stop starts nothing.

The daemon (`Engine.run_forever`) runs with every app's poll interval and the safety-net tick
(`dispatch_interval_s`) set to an hour, so a change that reaches the other app within the
tests' deadline was carried there by a wake. HubSpot and Zendesk are their simulators behind
`httpx.ASGITransport`; webhooks go through the daemon's own HTTP intake (`create_app`), signed
by the simulator. Nothing here asserts a duration: `bench/webhook_latency.py` measures speed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from customer_sync.api.app import create_app
from customer_sync.engine.runner import STAGES, Engine, RunSummary
from customer_sync.store.db import Store
from customer_sync.store.tables import InboxItem, OutboxItem
from tests.integration.test_vendor_e2e import Vendors

HOUR = 3600
DEADLINE_S = 60  # generous on a busy machine, and far below every interval


class Daemon:
    """HubSpot and Zendesk synced by a running daemon whose clocks never fire within a test."""

    def __init__(self, store: Store, *, batch_size: int = 500) -> None:
        quiet = {"poll_interval_s": HOUR, "reconcile_interval_s": 0}
        self.v = Vendors(store, crm_options=quiet, desk_options=quiet)
        self.v.config.daemon.normalize_workers = 0  # no worker processes: a small, fast test
        self.v.config.daemon.batch_size = batch_size
        for i in range(40):
            self.v.hubspot.add_contact({"email": f"p{i}@example.com", "firstname": f"P{i}",
                                        "lastname": "Hub"})
        self.engine: Engine = self.v.engine()
        self.stop = asyncio.Event()
        self.intake = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(self.engine)),
                                        base_url="http://sync.test")
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.engine.run_forever(self.stop, dispatch_interval_s=HOUR))
        await self.idle()  # the first round polls every app, then the daemon settles
        # the seeded contacts' creation events, which the first poll has already read
        await self.deliver()
        await self.until(lambda: self.count(InboxItem) == 0)
        await self.idle()

    async def next_start(self) -> RunSummary:
        """The daemon started again, on the same store and apps (here a `run --once`)."""
        async with self.v.engine() as engine:
            return await engine.run_once(reconcile=False)

    async def idle(self) -> None:
        """Wait until the last round that started has ended, quiet."""
        async with asyncio.timeout(DEADLINE_S):
            await self.engine.wait_round(lambda r: r.number == self.engine.rounds and r.quiet)

    async def ended(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout=DEADLINE_S)

    async def until(self, done: Callable[[], bool]) -> None:
        """Poll `done()` with a deadline; the daemon must not have failed meanwhile. `done` runs
        in a thread, as the daemon's own store calls do: a store transaction begun on the event
        loop would wait for the write lock with the loop stopped."""
        async with asyncio.timeout(DEADLINE_S):
            while not await asyncio.to_thread(done):
                assert self.task is not None
                if self.task.done():
                    self.task.result()
                    raise AssertionError("the daemon stopped")
                await asyncio.sleep(0.02)

    def edit(self, contact_id: str, first: str) -> None:
        self.v.later()  # each edit its own modified time
        self.v.hubspot.edit_contact(contact_id, {"firstname": first})

    async def deliver(self) -> int:
        """HubSpot posts its pending events as one signed delivery; every one is answered 2xx."""
        delivered = await self.v.hubspot.flush_webhooks(self.intake)
        assert [] == self.v.hubspot.pending_webhooks
        return delivered

    def zendesk_first(self, contact_id: str) -> str:
        email = self.v.hubspot.get_contact(contact_id)["properties"]["email"]  # type: ignore[index]
        user = self.v.zendesk_user(email)
        return "" if user is None else str(user["name"]).split(" ")[0]

    def count(self, table: Any) -> int:
        """Rows in a store table (call it in a thread while the daemon runs; see `until`)."""
        with self.v.store.transaction() as conn:
            return conn.execute(select(func.count()).select_from(table.__table__)).scalar_one()

    async def rows(self, table: Any) -> int:
        return await asyncio.to_thread(self.count, table)


@pytest.fixture
async def daemon(store: Store) -> AsyncIterator[Daemon]:
    d = Daemon(store)
    async with d.engine:
        try:
            yield d
        finally:
            d.stop.set()
            if d.task is not None:
                await asyncio.wait_for(d.task, timeout=DEADLINE_S)
            await d.intake.aclose()


async def test_a_webhook_reaches_the_other_app_without_waiting_for_a_tick(daemon: Daemon) -> None:
    """Polls and the tick are an hour away: the edit can only arrive by the webhook's wake."""
    await daemon.start()
    ann = daemon.v.hubspot.contact_ids()[0]
    assert "P0" == daemon.zendesk_first(ann)
    passes = dict(daemon.engine.passes)

    daemon.edit(ann, "Annabel")
    assert await daemon.deliver()

    await daemon.until(lambda: daemon.zendesk_first(ann) == "Annabel")
    await daemon.idle()
    assert daemon.engine.passes["inbox"] > passes["inbox"]
    assert daemon.engine.passes["dispatch"] > passes["dispatch"]
    assert (0, 0) == (await daemon.rows(OutboxItem), await daemon.rows(InboxItem))


async def test_a_burst_of_deliveries_is_processed_in_a_few_passes(daemon: Daemon) -> None:
    """30 deliveries, each waking the inbox stage, while a pass runs (the test holds it): the
    wakes coalesce into one more pass, which takes them all, instead of one pass each."""
    await daemon.start()
    ids = daemon.v.hubspot.contact_ids()[:30]
    passes = daemon.engine.passes["inbox"]
    rounds = daemon.engine.rounds

    async with daemon.engine._inbox_lock:  # a pass of the inbox in progress
        for n, cid in enumerate(ids):
            daemon.edit(cid, f"Burst{n}")
            assert await daemon.deliver()  # committed, and the inbox stage woken
        assert 30 == await daemon.rows(InboxItem)

    await daemon.until(lambda: all(daemon.zendesk_first(c) == f"Burst{n}" for n, c in enumerate(ids)))
    await daemon.idle()
    taken = daemon.engine.passes["inbox"] - passes
    assert 1 <= taken <= 4, (taken, daemon.engine.rounds - rounds)
    assert 0 == await daemon.rows(InboxItem)


async def test_a_planned_write_is_dispatched_when_woken(daemon: Daemon) -> None:
    """A write planned outside any round (as an operator's action plans one) goes out on
    `wake("dispatch")`, not at the hourly tick; an unknown stage is refused."""
    await daemon.start()
    # the write is planned by the inbox processed here, outside the daemon's rounds
    ann = daemon.v.hubspot.contact_ids()[0]
    daemon.edit(ann, "Planned")
    daemon.engine._waker, waker = None, daemon.engine._waker  # this delivery wakes nobody
    try:
        assert await daemon.deliver()
    finally:
        daemon.engine._waker = waker
    stats = await daemon.engine.process_inbox()
    assert 1 == stats.planned
    assert 1 == await daemon.rows(OutboxItem)
    assert "P0" == daemon.zendesk_first(ann)

    daemon.engine.wake("dispatch")

    await daemon.until(lambda: daemon.zendesk_first(ann) == "Planned")
    await daemon.until(lambda: daemon.count(OutboxItem) == 0)
    with pytest.raises(ValueError, match="unknown stage"):
        daemon.engine.wake("poll")
    assert {"inbox", "dispatch"} == STAGES


async def test_a_wake_after_the_stop_starts_no_round(daemon: Daemon) -> None:
    """The stop is set (SIGTERM): a delivery accepted during the drain is committed, but the
    wakes it and an operator make start no round; the next start processes it."""
    await daemon.start()
    ann = daemon.v.hubspot.contact_ids()[0]
    rounds = daemon.engine.rounds

    daemon.stop.set()
    daemon.edit(ann, "AfterStop")
    assert await daemon.deliver()
    daemon.engine.wake("dispatch")
    await daemon.ended()

    assert rounds == daemon.engine.rounds
    assert 1 == daemon.count(InboxItem)  # committed, waiting for the next start
    assert "P0" == daemon.zendesk_first(ann)
    summary = await daemon.next_start()
    assert {} == summary.failed_apps
    assert "AfterStop" == daemon.zendesk_first(ann)


async def test_a_wake_during_the_drain_of_a_round_in_flight_starts_no_other(daemon: Daemon) -> None:
    """A round is in flight when the stop comes; a delivery and an operator's wake during its
    drain add no round after it. The round commits what it decided and sends nothing more
    after the stop; the next start sends it, once."""
    await daemon.start()
    ann, bob = daemon.v.hubspot.contact_ids()[:2]
    rounds = daemon.engine.rounds

    async with daemon.engine._inbox_lock:  # holds the round the first delivery starts
        daemon.edit(ann, "InFlight")
        assert await daemon.deliver()
        await daemon.until(lambda: daemon.engine.rounds == rounds + 1)  # started, now held
        daemon.stop.set()
        daemon.edit(bob, "DuringDrain")
        assert await daemon.deliver()
        daemon.engine.wake("dispatch")
    await daemon.ended()

    assert rounds + 1 == daemon.engine.rounds  # the round in flight, and no other
    assert 0 == daemon.count(InboxItem)  # it decided both, committed
    assert 2 == daemon.count(OutboxItem)  # and sent nothing after the stop
    assert ("P0", "P1") == (daemon.zendesk_first(ann), daemon.zendesk_first(bob))
    writes = daemon.v.writes()["desk"]

    summary = await daemon.next_start()

    assert {} == summary.failed_apps
    assert ("InFlight", "DuringDrain") == (daemon.zendesk_first(ann), daemon.zendesk_first(bob))
    assert 0 == daemon.count(OutboxItem)
    assert 2 >= daemon.v.writes()["desk"] - writes  # each write sent once (or both in one batch)


async def test_a_paused_apps_webhook_waits_in_the_inbox_until_it_is_resumed(daemon: Daemon) -> None:
    """An operator's pause holds what the app's webhooks bring: accepted (the vendor gets its
    2xx and nothing is lost) but neither read from the app nor decided until the resume."""
    from customer_sync.engine import admin

    await daemon.start()
    ann = daemon.v.hubspot.contact_ids()[0]
    await asyncio.to_thread(admin.pause_app, daemon.v.store, daemon.v.config, "crm")
    reads = daemon.v.hubspot.count_by_route["POST /crm/v3/objects/contacts/batch/read"]
    rounds, passes = daemon.engine.rounds, daemon.engine.passes["inbox"]

    daemon.edit(ann, "Paused")
    assert await daemon.deliver()  # its commit wakes the inbox stage
    await daemon.until(lambda: daemon.engine.passes["inbox"] > passes)
    await daemon.idle()  # the inbox pass after the delivery ran, and left it alone
    assert daemon.engine.rounds > rounds
    assert await daemon.rows(InboxItem) > 0
    assert "P0" == daemon.zendesk_first(ann)
    assert reads == daemon.v.hubspot.count_by_route["POST /crm/v3/objects/contacts/batch/read"]

    await asyncio.to_thread(admin.resume_app, daemon.v.store, daemon.v.config, "crm")
    daemon.engine.notify()
    await daemon.until(lambda: daemon.zendesk_first(ann) == "Paused")
    await daemon.until(lambda: daemon.count(InboxItem) == 0)
