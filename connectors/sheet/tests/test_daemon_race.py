"""The daemon (`Engine.run_forever`, not `run --once`) syncs a csv file with a second app while
a person in another process saves that file a thousand times; once everyone is quiet, nothing
is lost and nobody is doubled.

The person (`_editor.py`, waiting for one daemon round every 20 saves) adds rows without ids and edits them, saving by rename and in place,
holding LibreOffice's lock file while it saves. Meanwhile customers are added to the other app
(Persian names) and edited there, and the daemon writes them into the sheet. At the end:

- every row the person added holds the person's last edit, in the sheet and in the other app;
- every customer of the other app is in the sheet with its last edit;
- each person is held once by each app and once by the store.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from customer_sync_connectors.sheet import CsvConnector
from customer_sync_connectors.sheet.tests.test_concurrent_saves import (
    BOM,
    SAVES,
    Editor,
    expected_editor_rows,
    read_table,
)
from sqlalchemy import select

from customer_sync.config import load_config
from customer_sync.engine.runner import Engine, RoundResult
from customer_sync.store.db import open_store
from customer_sync.store.tables import CustomerRow, OutboxItem
from customer_sync.testing.fake_connector import FakeApp, FakeConnector

APPS = ("crm", "sheet")
FIELDS = {"email": "email", "first_name": "first_name", "last_name": "last_name"}


def _now() -> datetime:
    return datetime.now(UTC)


class DaemonClock:
    """The daemon's clock: real time, moved on by `skip` so that writes the busy file put off
    (backing off up to 5 minutes) are due again without the test waiting for them."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead

    def skip(self) -> None:
        self.ahead += timedelta(minutes=6)


async def test_the_daemon_and_a_person_saving_a_thousand_times_lose_nothing(
        tmp_path: Path) -> None:
    """Every row and edit the person saved and every customer and edit of the other app is in
    both apps once, after a thousand saves raced the daemon's polls and writes."""
    path = tmp_path / "customers.csv"
    path.write_bytes(BOM + b"id,email,first_name,last_name,phone\r\n")
    crm = FakeApp("crm-daemon-race", clock=_now)
    config = load_config(data={
        "daemon": {"store_url": "sqlite://", "normalize_workers": 0, "list_in_worker": False},
        "apps": {
            "crm": {"connector": "fake", "settings": {"page_size": 50}, "fields": FIELDS,
                    "poll_interval_s": 0.05},
            "sheet": {"connector": "csv", "settings": {"path": str(path)}, "fields": FIELDS,
                      "poll_interval_s": 0.05},
        },
    }, connectors={"fake": FakeConnector, "csv": CsvConnector})
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    connectors: dict[str, Any] = {
        "crm": FakeConnector(config.apps["crm"].connector_settings, app="crm", data=crm),  # type: ignore[arg-type]
        "sheet": CsvConnector(config.apps["sheet"].connector_settings, app="sheet"),  # type: ignore[arg-type]
    }
    ours: dict[str, str] = {}  # crm email -> its last name, as last edited
    crm_ids: dict[str, str] = {}
    clock = DaemonClock()
    engine = Engine(config, store, connectors=connectors, clock=clock)
    stop = asyncio.Event()
    try:
        async with engine:
            task = asyncio.create_task(engine.run_forever(stop, dispatch_interval_s=0.05))
            editor = await Editor.start(path)
            i = 0
            async with asyncio.timeout(300):  # a hang fails with a message, not a stuck CI
                while not editor.done.is_set():
                    mark = engine.rounds
                    await engine.wait_round(lambda r, m=mark: r.number > m or task.done())
                    if task.done():
                        task.result()
                    if i % 3 == 0:
                        email = f"crm{i}@example.org"
                        crm_ids[email] = crm.put({"email": email, "first_name": f"مشتری {i}",
                                                  "last_name": "L0"})
                        ours[email] = "L0"
                    elif ours:
                        email = sorted(ours)[i % len(ours)]
                        crm.edit(crm_ids[email], last_name=f"L{i}")
                        ours[email] = f"L{i}"
                    i += 1
                    if editor.asks.is_set():  # it waited, holding no lock, for this round
                        editor.asks.clear()
                        editor.stdin.write(b"x")
                        await editor.stdin.drain()
                assert 0 == await editor.process.wait()
                assert f"saved {SAVES}" == editor.said
                await _caught_up(engine, task, clock)
            stop.set()
            await task
    finally:
        store.close()

    _, rows = read_table(path)
    sheet: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        sheet.setdefault(row["email"], []).append(row)
    editor_rows = expected_editor_rows(SAVES)
    assert set(editor_rows) | set(ours) == set(sheet)
    assert [] == [e for e, held in sheet.items() if len(held) != 1], "a row twice in the sheet"
    in_crm: dict[str, list[dict[str, Any]]] = {}
    for fields in crm.live().values():
        in_crm.setdefault(fields["email"], []).append(fields)
    assert set(sheet) == set(in_crm)
    assert [] == [e for e, held in in_crm.items() if len(held) != 1], "a record twice in crm"
    for email, last_name in editor_rows.items():
        assert last_name == sheet[email][0]["last_name"] == in_crm[email][0]["last_name"], email
    for email, last_name in ours.items():
        assert last_name == sheet[email][0]["last_name"] == in_crm[email][0]["last_name"], email
    with store.transaction() as conn:
        customers = conn.execute(select(CustomerRow.__table__.c["values"]).where(
            CustomerRow.__table__.c.deleted_at.is_(None))).scalars().all()
    assert len(sheet) == len(customers)


async def _caught_up(engine: Engine, task: asyncio.Task[None], clock: DaemonClock) -> None:
    """Wait until no write is waiting in the outbox and, after every app was polled to the end,
    a round polling both was quiet. Writes put off by the busy file are made due at once."""
    mark = engine.rounds
    polled: set[str] = set()
    outbox = OutboxItem.__table__
    while True:
        clock.skip()
        r: RoundResult = await engine.wait_round(lambda r, m=mark: r.number > m or task.done())
        if task.done():
            task.result()
        mark = r.number
        with engine.store.transaction() as conn:
            waiting = conn.execute(select(outbox.c.seq).where(
                outbox.c.state.in_(("pending", "sending")))).first()
        if waiting is None and polled >= set(APPS) and r.quiet and r.polled >= set(APPS):
            return
        polled |= r.polled - r.more
