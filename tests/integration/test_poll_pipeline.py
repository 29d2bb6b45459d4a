"""How a poll reads ahead and groups pages: what is committed, with which cursor, in what order.

`Engine.poll` reads pages while earlier ones are decided and decides the pages already waiting
together (up to `daemon.batch_size` records) in one transaction with the last page's cursor.
A connector that lists a fixed script of pages makes the grouping deterministic: it never
really waits, so every page is queued before the first is decided.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from customer_sync.errors import TransientError
from customer_sync.sdk.connector import AppRecord, ChangePage, Cursor
from customer_sync.store.tables import ChangeLogEntry, CursorRow, IdentityRow, SnapshotRow
from customer_sync.testing.fake_connector import FakeConnector

T0 = datetime(2026, 3, 1, tzinfo=UTC)


class ScriptedConnector(FakeConnector):
    """Lists `script` (pages, then maybe an error to raise), whatever the cursor."""

    script: Sequence[ChangePage | Exception] = ()

    async def list_changes(self, since: Cursor | None) -> AsyncIterator[ChangePage]:  # type: ignore[override]
        for step in self.script:
            if isinstance(step, Exception):
                raise step
            yield step


def page(n: int, records: Sequence[tuple[str, str]]) -> ChangePage:
    return ChangePage(
        records=[AppRecord(app_record_id=rid, fields={"email": f"p{rid}@x.io", "first": first},
                           modified_at=T0 + timedelta(seconds=n)) for rid, first in records],
        cursor=Cursor(value=f"after-page-{n}"),
    )


def scripted_engine(w, script: Sequence[ChangePage | Exception]):
    connectors = w.connectors()
    crm = ScriptedConnector(w.config.apps["crm"].connector_settings, app="crm", data=w.apps["crm"])
    crm.script = script
    connectors["crm"] = crm
    from customer_sync.engine.runner import Engine

    return Engine(w.config, w.store, connectors=connectors, clock=w.clock)


def stored_cursor(w) -> str | None:
    with w.store.transaction() as conn:
        return conn.execute(select(CursorRow.__table__.c.value).where(CursorRow.__table__.c.app == "crm")).scalar()


async def test_pages_listed_before_a_failure_are_committed_with_their_cursor(world):
    """A list that fails on its fourth page: the three before it are decided and the cursor
    points after the third, so the next poll resumes there; the error still reaches the caller."""
    w = world(apps=("crm", "desk"))
    pages = [page(n, [(f"{n}{i}", f"N{n}{i}") for i in range(5)]) for n in (1, 2, 3)]
    async with scripted_engine(w, [*pages, TransientError("503 from the app", app="crm")]) as engine:
        with pytest.raises(TransientError, match="503 from the app"):
            await engine.poll("crm")
        assert gc.isenabled()
    assert 15 == len(w.customers())
    assert "after-page-3" == stored_cursor(w)


async def test_waiting_pages_are_decided_together_up_to_the_batch_size(world):
    """Seven records per transaction (the world's batch_size): pages of five are grouped two
    at a time, and every record is decided once."""
    w = world(apps=("crm", "desk"))
    pages = [page(n, [(f"{n}{i}", f"N{n}{i}") for i in range(5)]) for n in range(1, 6)]
    groups: list[int] = []
    async with scripted_engine(w, pages) as engine:
        take = engine._take_pages
        engine._take_pages = lambda app, group, *rest: groups.append(len(group)) or take(app, group, *rest)  # type: ignore[method-assign]
        assert 25 == (await engine.poll("crm")).fresh
    assert [2, 2, 1] == groups
    assert 25 == len(w.customers())
    assert "after-page-5" == stored_cursor(w)


async def test_a_record_listed_twice_in_one_group_ends_with_its_later_values(world):
    """An incremental list may repeat a record on a later page (lookback): decided in one
    transaction, the later listing wins and there is still one customer."""
    w = world(apps=("crm", "desk"))
    pages = [page(1, [("7", "Old"), ("8", "Other")]), page(2, [("7", "New")])]
    async with scripted_engine(w, pages) as engine:
        await engine.poll("crm")
        await engine.process_inbox()
    customers = {c["values"]["email"]: c for c in w.customers()}
    assert {"p7@x.io", "p8@x.io"} == set(customers)
    assert "New" == customers["p7@x.io"]["values"]["first_name"]
    observed = [e for e in w.rows(ChangeLogEntry) if e["app_record_id"] == "7" and e["kind"] == "observed"]
    assert 2 == len(observed)


async def test_a_failing_decision_stops_the_reader(world):
    """When deciding a group fails, the poll raises that error and leaves no reader running
    (the cursor stays where the last committed group put it)."""
    w = world(apps=("crm", "desk"))
    pages = [page(n, [(f"{n}{i}", f"N{n}{i}") for i in range(5)]) for n in range(1, 6)]
    async with scripted_engine(w, pages) as engine:
        take = engine._take_pages
        calls = []

        def fail_second(app, group, *rest):
            calls.append(len(group))
            if len(calls) == 2:
                raise RuntimeError("disk full")
            return take(app, group, *rest)

        engine._take_pages = fail_second  # type: ignore[method-assign]
        assert gc.isenabled()
        with pytest.raises(RuntimeError, match="disk full"):
            await engine.poll("crm")
        assert gc.isenabled(), "the poll paused the collector and must turn it back on"
    assert "after-page-2" == stored_cursor(w)
    assert 10 == len(w.customers())


async def test_pages_normalized_by_the_worker_decide_as_pages_normalized_in_place(world):
    """The same records polled with the normalizing worker on (every page sent to it) and off:
    the same customers, values and recorded field errors."""
    outcomes = []
    for workers in (1, 0):
        w = world(own_store=True, apps=("crm", "desk"))
        for i in range(23):
            w.apps["crm"].put({"email": "bad address" if i == 4 else f"P{i}@X.io", "first": f" P{i}",
                               "phone": f"(415) 555-{i:04d}", "tags": "b,a", "country": "us"})
        async with w.engine() as engine:
            engine.normalizer.workers = workers
            engine.normalizer.min_records = 1
            await engine.normalizer.start()
            assert engine.normalizer.ready is bool(workers)
            assert 23 == (await engine.poll("crm")).fresh
        customers = sorted((c["values"] for c in w.customers()), key=lambda v: v.get("phone", ""))
        errors = sorted((e["app_record_id"], e["reason"]) for e in w.changelog("error"))
        # identity hashes and fingerprints made in the worker are the ones made in place
        identities = sorted((r["kind"], r["value_hash"]) for r in w.rows(IdentityRow))
        fingerprints = sorted(r["app_fingerprint"] for r in w.rows(SnapshotRow))
        outcomes.append((customers, errors, identities, fingerprints))
    assert outcomes[0] == outcomes[1]
    assert 45 == len(outcomes[0][2]), "22 emails and 23 phones"
    assert 23 == len(outcomes[0][0])
    assert 1 == len(outcomes[0][1])


async def test_read_ahead_is_bounded_in_records(world):
    """The reader stays at most two batches' worth of records ahead of what has been decided,
    give or take the page that crossed the line and the one it holds while it waits; without
    the bound it would run eight pages ahead, whatever their size."""
    w = world(apps=("crm", "desk"))  # batch_size 7, so at most 14 records queued
    pages = [page(n, [(f"{n}-{i}", f"N{n}{i}") for i in range(5)]) for n in range(1, 21)]
    listed = [0]

    class Counting(ScriptedConnector):
        async def list_changes(self, since):  # type: ignore[override]
            async for p in super().list_changes(since):
                listed[0] += len(p.records)
                yield p

    connectors = w.connectors()
    crm = Counting(w.config.apps["crm"].connector_settings, app="crm", data=w.apps["crm"])
    crm.script = pages
    connectors["crm"] = crm
    from customer_sync.engine.runner import Engine

    ahead: list[int] = []
    decided = [0]
    async with Engine(w.config, w.store, connectors=connectors, clock=w.clock) as engine:
        take = engine._take_pages

        def watch(app, group, *rest):
            decided[0] += sum(len(p.records) for p in group)
            ahead.append(listed[0] - decided[0])
            return take(app, group, *rest)

        engine._take_pages = watch  # type: ignore[method-assign]
        assert 100 == (await engine.poll("crm")).fresh
    assert max(ahead) <= 2 * 7 + 2 * 5
    assert 100 == len(w.customers())


async def test_the_daemon_starts_its_normalizing_worker_before_the_first_poll(world):
    """`run_forever` waits for the worker before scheduling polls, so an initial pull's first
    pages are normalized there rather than in the engine's process while it spawns."""
    import asyncio

    from customer_sync.engine.normalizing import PageNormalizer
    from customer_sync.engine.poll import PollResult

    w = world(apps=("crm", "desk"))
    async with scripted_engine(w, [page(1, [("11", "A")])]) as engine:
        engine.normalizer = PageNormalizer(1, identity_key=engine.identity_key)
        stop = asyncio.Event()
        ready_at_poll: list[bool] = []

        async def poll(app: str, **kw: object) -> PollResult:
            ready_at_poll.append(engine.normalizer.ready)
            stop.set()
            return PollResult(fresh=0, complete=True)

        engine.poll = poll  # type: ignore[method-assign]
        await asyncio.wait_for(engine.run_forever(stop, dispatch_interval_s=60), timeout=60)
    assert ready_at_poll and all(ready_at_poll)
