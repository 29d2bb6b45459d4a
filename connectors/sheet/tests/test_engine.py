"""A csv app synced by the engine with another app: rows without ids get ids and customers,
a one-column name maps through `full_name`, Persian names cross unchanged, a person's later
edits in the sheet and the other app's edits both land, and a quiet second pass writes
nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from customer_sync_connectors.sheet import CsvConnector
from customer_sync_connectors.sheet.tests.person import BOM, SheetPerson
from sqlalchemy import create_engine, select

from customer_sync.config import load_config
from customer_sync.engine.runner import Engine
from customer_sync.store.db import open_store
from customer_sync.store.tables import DeadLetter
from customer_sync.testing.fake_connector import FakeApp, FakeConnector

CRM_FIELDS = {"email": "email", "first_name": "first", "last_name": "last", "phone": "phone"}
SHEET_FIELDS = {"email": "email", "full_name": "name", "phone": "phone"}


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 3, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


@pytest.fixture
def world(tmp_path: Path):
    path = tmp_path / "customers.csv"
    path.write_bytes(BOM + (
        "name,email,phone\r\n"  # a person's own sheet: no id column yet
        "Bob Brown,bob@example.org,\r\n"
        "سارا احمدی,sara@example.org,+989121234567\r\n").encode())
    clock = Clock()
    crm = FakeApp("crm-sheet-test", clock=clock)
    data: dict[str, Any] = {
        "daemon": {"store_url": "sqlite://", "default_region": "US"},
        "apps": {
            "crm": {"connector": "fake", "settings": {"page_size": 5}, "fields": CRM_FIELDS},
            "sheet": {"connector": "csv", "settings": {"path": str(path), "delete_confirm_s": 0},
                      "fields": SHEET_FIELDS},
        },
    }
    config = load_config(data=data, connectors={"fake": FakeConnector, "csv": CsvConnector})
    store = open_store(f"sqlite:///{tmp_path}/store.db")

    async def run() -> Any:
        connectors = {
            "crm": FakeConnector(config.apps["crm"].connector_settings, app="crm", data=crm),  # type: ignore[arg-type]
            "sheet": CsvConnector(config.apps["sheet"].connector_settings, app="sheet",  # type: ignore[arg-type]
                                  clock=clock),
        }
        async with Engine(config, store, connectors=connectors, clock=clock) as engine:
            return await engine.run_once()

    person = SheetPerson.__new__(SheetPerson)
    person.path, person.kind = path, "csv"
    yield run, crm, person, clock
    store.close()


def _by_email(table: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {row["email"]: row for row in table.values()}


async def test_a_sheet_and_a_crm_converge_and_stay_quiet(world) -> None:
    """Both apps end up holding the same three customers, once each, and a second pass
    writes nothing."""
    run, crm, person, _ = world
    crm.put({"email": "ann@example.org", "first": "Ann", "last": "Lee"})
    first = await run()
    assert {} == first.failed_apps
    header, table = person.table()
    sheet = _by_email(table)
    assert "id" in header and all(row["id"] for row in table.values())
    assert {"ann@example.org", "bob@example.org", "sara@example.org"} == set(sheet)
    assert "Ann Lee" == sheet["ann@example.org"]["name"]
    in_crm = {f["email"]: f for f in crm.live().values()}
    assert ("Bob", "Brown") == (in_crm["bob@example.org"]["first"], in_crm["bob@example.org"]["last"])
    assert ("سارا", "احمدی") == (in_crm["sara@example.org"]["first"],
                                 in_crm["sara@example.org"]["last"])
    again = await run()
    assert 0 == again.dispatch.written
    assert 3 == len(crm.live()) == len(person.table()[1])


async def test_edits_in_the_sheet_and_the_crm_both_land(world) -> None:
    """A name a person edits in the sheet reaches the crm, and a phone edited in the crm
    reaches the sheet, without undoing each other."""
    run, crm, person, _ = world
    ann = crm.put({"email": "ann@example.org", "first": "Ann", "last": "Lee"})
    await run()
    _, table = person.table()
    bob_id = _by_email(table)["bob@example.org"]["id"]
    rows = person.load()
    name = rows[0].index("name")
    for row in rows[1:]:
        if row[rows[0].index("id")] == bob_id:
            row[name] = "Robert Brown"
    person.save(rows)
    crm.edit(ann, phone="+14155552671")
    summary = await run()
    assert {} == summary.failed_apps
    sheet = _by_email(person.table()[1])
    in_crm = {f["email"]: f for f in crm.live().values()}
    assert "Robert" == in_crm["bob@example.org"]["first"]
    assert "+14155552671" == sheet["ann@example.org"]["phone"]
    assert "Robert Brown" == sheet["bob@example.org"]["name"]


async def test_writes_wait_while_the_sheet_is_open_and_land_after(world, tmp_path: Path) -> None:
    """While LibreOffice has the sheet open the engine's writes wait, however many passes that
    takes, and are not given up as dead letters; the person's own saved rows still sync; once
    the file is closed the writes land."""
    run, crm, person, clock = world
    lock = tmp_path / ".~lock.customers.csv#"
    lock.write_text("Person,desk,,2026-03-01T10:00;")
    crm.put({"email": "ann@example.org", "first": "Ann", "last": "Lee"})
    for _ in range(10):  # more passes than max_attempts
        await run()
    in_crm = {f["email"] for f in crm.live().values()}
    assert {"ann@example.org"} == in_crm  # the sheet's rows wait for their ids too
    assert "ann@example.org" not in _by_email(person.table()[1])
    lock.unlink()
    clock.t += timedelta(minutes=10)  # past the longest backoff (5 minutes) of the put-off writes
    await run()
    await run()
    assert {"ann@example.org", "bob@example.org", "sara@example.org"} == \
        set(_by_email(person.table()[1]))
    assert {"ann@example.org", "bob@example.org", "sara@example.org"} == \
        {f["email"] for f in crm.live().values()}
    engine = create_engine(f"sqlite:///{tmp_path}/store.db")
    with engine.connect() as conn:
        assert [] == list(conn.execute(select(DeadLetter.__table__)))
    engine.dispose()
