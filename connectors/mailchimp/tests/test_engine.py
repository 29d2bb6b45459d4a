"""The engine with the real `mailchimp` connector against the simulator, beside a `sql` CRM:
the default field map, `requires_email` and consent as the list states it.

The list is the consent source. Its unsubscribe reaches the CRM and survives a later stale
"subscribed" typed there; the member's own opt-in through the list goes through; a cleaned
member is never subscribed again; a customer without an email is never created in the list.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from customer_sync_connectors.mailchimp import MailchimpConnector
from sqlalchemy import MetaData, Table, create_engine, func, insert, select, update

from customer_sync.config import load_config
from customer_sync.engine.runner import Engine
from customer_sync.sandbox._common import ManualClock
from customer_sync.sandbox.mailchimp import MailchimpSimulator, subscriber_hash
from customer_sync.store.db import open_store

CRM_COLUMNS = {"email": "text", "first_name": "text", "phone": "text", "email_consent": "text"}


class World:
    def __init__(self, folder: Path) -> None:
        # The list's clock runs an hour behind the wall clock the CRM's rows are stamped with,
        # a minute per step: every list statement is older than any CRM edit made after it.
        self.clock = ManualClock(datetime.now(UTC) - timedelta(hours=1))
        self.sim = MailchimpSimulator(clock=self.clock)
        self.config = load_config(data={
            "daemon": {"store_url": f"sqlite:///{folder}/store.db", "normalize_workers": 0,
                       "default_region": "US"},
            "conflicts": {"default": "last_writer", "consent_source": ["list"]},
            "apps": {
                "crm": {"connector": "sql", "fields": {c: c for c in CRM_COLUMNS}, "settings": {
                    "url": f"sqlite:///{folder}/crm.db", "table": "people", "create_table": True,
                    "column_types": CRM_COLUMNS}},
                "list": {"connector": "mailchimp", "settings": {
                    "list_id": self.sim.list_id, "api_key": "${MAILCHIMP_KEY}"}},
            },
        }, env={"MAILCHIMP_KEY": self.sim.api_key})
        self.store = open_store(self.config.daemon.store_url)
        self.crm = create_engine(f"sqlite:///{folder}/crm.db")

    def connector(self) -> MailchimpConnector:
        settings = self.config.apps["list"].connector_settings
        return MailchimpConnector(settings, app="list",  # type: ignore[arg-type]
                                  transport=httpx.ASGITransport(app=self.sim.app))

    async def sync(self) -> None:
        for _ in range(5):
            async with Engine(self.config, self.store, connectors={"list": self.connector()}) as e:
                summary = await e.run_once()
            assert {} == summary.failed_apps
            if (summary.dispatch.written, summary.process.planned) == (0, 0):
                self.clock.advance(60)
                return
        raise AssertionError("the daemon did not come to rest in five passes")

    def table(self) -> Table:
        return Table("people", MetaData(), autoload_with=self.crm)

    def add_crm(self, **fields: Any) -> None:
        with self.crm.begin() as conn:
            conn.execute(insert(self.table()).values(
                id=str(uuid.uuid4()), updated_at=datetime.now(UTC).replace(tzinfo=None), **fields))

    def edit_crm(self, email: str, **fields: Any) -> None:
        t = self.table()
        with self.crm.begin() as conn:
            conn.execute(update(t).where(func.lower(t.c.email) == email).values(
                updated_at=datetime.now(UTC).replace(tzinfo=None), **fields))

    def crm_consent(self) -> dict[str, Any]:
        t = self.table()
        with self.crm.connect() as conn:
            return {r.email: r.email_consent for r in conn.execute(select(t)) if r.email}

    def status(self, email: str) -> str | None:
        member = self.sim.get_member(subscriber_hash(email))
        return None if member is None else member["status"]


async def test_the_list_is_the_consent_source_and_holds_only_addresses(tmp_path: Path) -> None:
    """Unsubscribes and bounces in the list reach the CRM and outlive stale edits there; the
    member's own opt-in goes through; no email-less customer becomes a member."""
    world = World(tmp_path)
    async with Engine(world.config, world.store, connectors={"list": world.connector()}) as e:
        await e.run_once()  # creates the CRM's table
    ann = world.sim.add_member("ann@example.net", merge_fields={"FNAME": "Ann"})
    world.sim.unsubscribe(ann)
    world.clock.advance(60)
    world.add_crm(email="ann@example.net", first_name="Ann", email_consent="subscribed")
    world.add_crm(email="bob@example.net", first_name="Bob", email_consent="subscribed")
    world.add_crm(first_name="Carol", phone="+14155552671", email_consent="subscribed")

    await world.sync()
    assert {"ann@example.net": "unsubscribed", "bob@example.net": "subscribed"} == world.crm_consent()
    assert ("unsubscribed", "subscribed", 2) == (
        world.status("ann@example.net"), world.status("bob@example.net"), world.sim.member_count)
    bob = world.sim.get_member(subscriber_hash("bob@example.net"))
    assert "Bob" == bob["merge_fields"]["FNAME"]  # type: ignore[index]

    world.edit_crm("ann@example.net", email_consent="subscribed")  # stale, and not the source
    await world.sync()
    assert ("unsubscribed", "unsubscribed") == (
        world.crm_consent()["ann@example.net"], world.status("ann@example.net"))

    world.sim.opt_in("ann@example.net")  # the member's own opt-in, through the list
    await world.sync()
    assert ("subscribed", "subscribed") == (
        world.crm_consent()["ann@example.net"], world.status("ann@example.net"))

    world.sim.clean(subscriber_hash("bob@example.net"))
    await world.sync()
    world.edit_crm("bob@example.net", email_consent="subscribed")
    await world.sync()
    assert ("cleaned", "cleaned") == (
        world.crm_consent()["bob@example.net"], world.status("bob@example.net"))
    assert 2 == world.sim.member_count
