"""Listing HubSpot in a worker process (`engine.listing`), against the simulator over real HTTP.

The worker is a real spawned process: it builds its own HubSpot connector from the app's settings
and reaches the simulator, served on loopback from this process, over HTTP. What the engine
stores must not depend on where the pages were read; the app keeps one rate-limit budget; errors
and a dying worker behave as they would in place.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from customer_sync.config import Config, load_config
from customer_sync.engine.runner import Engine
from customer_sync.errors import AuthError
from customer_sync.sandbox._common import serve
from customer_sync.sandbox.hubspot import HubSpotSimulator
from customer_sync.sdk.http import api_counts
from customer_sync.store.db import Store, open_store
from customer_sync.store.tables import (
    ConflictRow,
    CursorRow,
    CustomerRow,
    IdentityRow,
    LinkRow,
    SnapshotRow,
)

TOKEN = "listing-worker-token"
START = datetime(2025, 6, 1, tzinfo=UTC)
LIST = "/crm/v3/objects/contacts"


class Served:
    """The simulator on loopback, counting the statuses it answered with and the list requests."""

    def __init__(self, sim: HubSpotSimulator) -> None:
        self.sim = sim
        self.statuses: Counter[int] = Counter()
        self.lists = 0
        self.on_list: Any = None  # called with the list request's number, before it is answered
        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            await self.app(scope, receive, send)

        self.server = serve(asgi)
        self.base_url = self.server.base_url

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == LIST:
            self.lists += 1
            if self.on_list is not None:
                self.on_list(self.lists)

        async def counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.statuses[message["status"]] += 1
            await send(message)

        await self.sim.app(scope, receive, counted)


@pytest.fixture
def hubspot() -> Iterator[Served]:
    sim = HubSpotSimulator(access_token=TOKEN, rate_limit=None, search_rate_limit=None)
    for i in range(240):
        # every 7th contact (34 of them) has no email and the phone of the contact before it:
        # each joins that contact's customer as a duplicate in the app, so there is more to
        # compare than inserts
        email = None if i % 7 == 0 else f"Person.{i}@Example.com"
        sim.add_contact(
            {"email": email, "firstname": f"First{i}", "lastname": f"Last{i}",
             "phone": f"+1415555{(i - (i % 7 == 0)) % 10000:04d}"},
            updated_at=START + timedelta(seconds=i),
        )
    served = Served(sim)
    yield served
    served.server.stop()


def config(base_url: str, *, list_in_worker: bool, page_size: int = 20,
           rate: tuple[int, float] = (1_000_000, 1.0), history: bool = True) -> Config:
    calls, window_s = rate
    data = {
        "daemon": {"store_url": "sqlite://", "batch_size": 50, "normalize_workers": 1,
                   "list_in_worker": list_in_worker, "default_region": "US"},
        "apps": {"crm": {"connector": "hubspot", "settings": {
            "base_url": base_url, "access_token": "${HUBSPOT_TOKEN}", "field_history": history,
            "page_size": page_size, "history_page_size": page_size,
            "rate_limit_calls": calls, "rate_limit_window_s": window_s, "search_per_s": 1000}}},
    }
    return load_config(data=data, env={"HUBSPOT_TOKEN": TOKEN})


def fixed_clock() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


def stored(store: Store) -> dict[str, Any]:
    """What a pull left in the store, keyed by HubSpot id (customer ids are random)."""
    with store.transaction() as conn:
        linked: dict[str, list[str]] = {}
        for r in conn.execute(select(LinkRow.__table__)):
            linked.setdefault(r.customer_id, []).append(r.app_record_id)
        links = {customer: tuple(sorted(ids)) for customer, ids in linked.items()}
        # a decided field names its conflict's id, which the store numbers in the order the
        # pull met the conflicts (as random as customer ids across two pulls): compared without it
        customers = {links[r.customer_id]: (r.values, {
            field: {k: v for k, v in source.items() if k != "conflict_id"}
            for field, source in r.provenance.items()})
                     for r in conn.execute(select(CustomerRow.__table__))}
        snapshots = {(links[r.customer_id], r.app): (r.values, r.app_fingerprint, r.source_modified_at)
                     for r in conn.execute(select(SnapshotRow.__table__))}
        identities = Counter((links[r.customer_id], r.kind, r.value_hash)
                             for r in conn.execute(select(IdentityRow.__table__)))
        cursor = conn.execute(select(CursorRow.__table__.c.value)).scalar()
        parked = sorted((r.kind, r.app_record_id or "", r.field or "", r.status, (r.detail or {}).get("reason", ""))
                        for r in conn.execute(select(ConflictRow.__table__)))
    return {"customers": customers, "snapshots": snapshots, "identities": identities,
            "cursor": cursor, "parked": parked, "links": sum(len(ids) for ids in links.values())}


async def pull(cfg: Config, store: Store, *, ready: bool = True) -> tuple[int, Engine]:
    async with Engine(cfg, store, clock=fixed_clock) as engine:
        if ready:
            for worker in engine.listing.values():
                assert await worker.wait_ready()
        return (await engine.poll("crm")).fresh, engine


async def test_a_pull_listed_in_the_worker_stores_what_a_pull_in_place_stores(hubspot: Served, tmp_path: Path):
    in_place, in_worker = open_store(f"sqlite:///{tmp_path}/a.db"), open_store(f"sqlite:///{tmp_path}/b.db")
    try:
        n_place, engine = await pull(config(hubspot.base_url, list_in_worker=False), in_place)
        assert engine.listing == {}
        requests = api_counts()["crm"]["requests"]
        n_worker, engine = await pull(config(hubspot.base_url, list_in_worker=True), in_worker)
        assert engine.listing["crm"].listings == 1  # every page came from the worker
        # the worker's calls count in the daemon's metrics: it asks the daemon's limiter first
        assert api_counts()["crm"]["requests"] - requests >= 240 // 20
        assert n_place == n_worker == 240
        expected, got = stored(in_place), stored(in_worker)
        # 34 contacts share an email with another one: each joins that customer as a duplicate
        dups = [p for p in expected["parked"] if p[0] == "match"]
        assert expected["links"] == 240 and len(dups) == 34
        assert {("decided", "duplicate_in_app")} == {(p[3], p[4]) for p in dups}
        assert got == expected
    finally:
        in_place.close()
        in_worker.close()


async def test_a_poll_hands_over_to_the_worker_once_it_is_ready(hubspot: Served, store: Store):
    cfg = config(hubspot.base_url, list_in_worker=True, page_size=50)
    async with Engine(cfg, store, clock=fixed_clock) as engine:
        worker = engine.listing["crm"]
        assert not worker.ready  # not started: the first page of 50+ records starts it

        def second_page_waits_for_the_worker(n: int) -> None:
            deadline = time.monotonic() + 30
            while n == 2 and not worker.ready and time.monotonic() < deadline:
                time.sleep(0.02)

        hubspot.on_list = second_page_waits_for_the_worker
        assert (await engine.poll("crm")).fresh == 240
        assert worker.listings == 1  # pages 3 to 5
    assert stored(store)["links"] == 240  # the 34 sharing an email joined as duplicates
    assert hubspot.lists == 5  # 240 contacts in pages of 50, each read once


async def test_the_worker_and_the_engine_share_one_rate_limit_budget(store: Store):
    # The vendor allows 40 requests per 2 s, and the client is set to 28 (it stays a little
    # under that: 27). The worker lists 30 pages while the engine's own connector makes 30 calls
    # of its own: with one budget at most 27 start in any 2 s; with two, up to 54 would, and the
    # vendor would answer 429. The margin is wide because the simulator runs in this process and
    # counts a request only when it gets the interpreter lock to handle it, which can be well
    # after the request started.
    sim = HubSpotSimulator(access_token=TOKEN, rate_limit=(40, 2.0), search_rate_limit=None)
    for i in range(300):
        sim.add_contact({"email": f"c{i}@example.com"}, updated_at=START + timedelta(seconds=i))
    served = Served(sim)
    try:
        cfg = config(served.base_url, list_in_worker=True, page_size=10, rate=(28, 2.0), history=False)
        async with Engine(cfg, store, clock=fixed_clock) as engine:
            assert await engine.listing["crm"].wait_ready()
            connector = engine.connectors["crm"]
            checks = [asyncio.create_task(connector.check()) for _ in range(30)]  # type: ignore[attr-defined]
            assert (await engine.poll("crm")).fresh == 300
            await asyncio.gather(*checks)
            assert engine.listing["crm"].listings == 1
    finally:
        served.server.stop()
    assert served.lists >= 30 + 30  # the worker's pages and the engine's checks hit one endpoint
    assert served.statuses[429] == 0
    assert served.statuses[200] == sim.request_count


async def test_an_error_in_the_worker_is_raised_by_the_poll_after_the_pages_before_it(hubspot: Served, store: Store):
    def revoke_token(n: int) -> None:
        if n == 5:
            hubspot.sim.access_token = "rotated"

    hubspot.on_list = revoke_token
    cfg = config(hubspot.base_url, list_in_worker=True)
    with pytest.raises(AuthError) as raised:
        await pull(cfg, store)
    assert raised.value.app == "crm" and raised.value.status_code == 401
    assert stored(store)["links"] == 80  # the four pages before the refusal (11 duplicates)
    assert stored(store)["cursor"] is not None


async def test_a_worker_that_dies_hands_the_listing_back_to_the_engine(hubspot: Served, store: Store):
    cfg = config(hubspot.base_url, list_in_worker=True)
    async with Engine(cfg, store, clock=fixed_clock) as engine:
        worker = engine.listing["crm"]
        assert await worker.wait_ready()
        pid = worker._process.pid  # type: ignore[union-attr]

        def kill_worker(n: int) -> None:
            if n == 4:
                os.kill(pid, signal.SIGKILL)

        hubspot.on_list = kill_worker
        assert (await engine.poll("crm")).fresh >= 240  # a page may be read twice, never lost
        assert worker.failed and not worker.ready
        hubspot.on_list = None
        await engine.poll("crm")  # in place now; it re-reads the last contacts (lookback)
        assert worker.listings == 1
    after = stored(store)
    assert after["links"] == 240 and len(after["customers"]) == 206  # nothing lost, nobody twice


def test_only_connectors_that_allow_it_and_that_the_engine_built_list_in_a_worker(tmp_path: Path):
    sql = {"connector": "sql", "fields": {"email": "email"}, "settings": {
        "url": f"sqlite:///{tmp_path}/w.db", "table": "people", "create_table": True,
        "column_types": {"email": "text"}}}
    data = {"daemon": {"store_url": "sqlite://", "list_in_worker": True, "normalize_workers": 1},
            "apps": {"crm": {"connector": "hubspot", "settings": {
                "base_url": "http://127.0.0.1:9", "access_token": "${HUBSPOT_TOKEN}"}},
                "warehouse": sql}}
    cfg = load_config(data=data, env={"HUBSPOT_TOKEN": TOKEN})
    off = load_config(data={**data, "daemon": {**data["daemon"], "list_in_worker": False}},
                      env={"HUBSPOT_TOKEN": TOKEN})
    no_workers = load_config(data={**data, "daemon": {"store_url": "sqlite://", "normalize_workers": 0}},
                             env={"HUBSPOT_TOKEN": TOKEN})

    async def listing(c: Config, **kw: Any) -> list[str]:
        store = open_store(f"sqlite:///{tmp_path}/s{id(c)}.db")
        try:
            async with Engine(c, store, **kw) as engine:
                return sorted(engine.listing)
        finally:
            store.close()

    assert asyncio.run(listing(cfg)) == ["crm"]  # the sql connector lists in place
    assert asyncio.run(listing(off)) == []
    assert asyncio.run(listing(no_workers)) == []  # by default, only with a normalizing worker
    given = cfg.apps["crm"].make_connector()
    assert asyncio.run(listing(cfg, connectors={"crm": given})) == []  # a test's connector stays here
