"""Consent, email sets and email lists, end to end: real `sql` apps (SQLite files) synced
through the engine and the real SQLite store, as an operator would run them.

Three apps: a CRM with one email field, a helpdesk that holds each user's addresses (`email`
and `other_emails`), and an email list whose records are addresses (`requires_email`), which
collects consent (`consent_source`). Issue 14's defects 4 (emails are one value), 6 (consent is
an ordinary field) and 8c (an email list gets members without an email).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, Table, create_engine, func, insert, select, update

from customer_sync.config import Config, load_config
from customer_sync.engine.runner import Engine, RunSummary
from customer_sync.store.db import Store, open_store
from customer_sync.store.tables import ChangeLogEntry, ConflictRow, CustomerRow

APPS = ("crm", "desk", "list")
COLUMNS = {
    "crm": {"email": "text", "first_name": "text", "phone": "text", "email_consent": "text"},
    "desk": {"email": "text", "other_emails": "text", "first_name": "text", "email_consent": "text"},
    "list": {"email": "text", "first_name": "text", "email_consent": "text", "email_consent_at": "text"},
}
FIELDS = {
    "crm": {"email": "email", "first_name": "first_name", "phone": "phone", "email_consent": "email_consent"},
    "desk": {"email": "email", "other_emails": {"field": "other_emails", "transform": "csv"},
             "first_name": "first_name", "email_consent": "email_consent"},
    "list": {"email": "email", "first_name": "first_name", "email_consent": "email_consent",
             "email_consent_at": "email_consent_at"},
}


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Apps:
    """The three apps' tables, edited as the people using them would."""

    def __init__(self, folder: Path) -> None:
        self.engines = {a: create_engine(f"sqlite:///{folder}/{a}.db") for a in APPS}
        self.tables: dict[str, Table] = {}

    def table(self, app: str) -> Table:
        if app not in self.tables:
            self.tables[app] = Table("people", MetaData(), autoload_with=self.engines[app])
        return self.tables[app]

    def add(self, app: str, **fields: Any) -> str:
        rid = str(uuid.uuid4())
        with self.engines[app].begin() as conn:
            conn.execute(insert(self.table(app)).values(id=rid, updated_at=_now(), **fields))
        return rid

    def edit(self, app: str, who: str, /, **fields: Any) -> None:
        """Change `fields` of the one record of `app` whose email is `who`."""
        t = self.table(app)
        with self.engines[app].begin() as conn:
            done = conn.execute(update(t).where(func.lower(t.c.email) == who)
                                .values(updated_at=_now(), **fields))
        assert 1 == done.rowcount, f"{app} holds no single record of that email"

    def rows(self, app: str) -> list[dict[str, Any]]:
        t = self.table(app)
        with self.engines[app].connect() as conn:
            return [dict(r) for r in conn.execute(select(t).order_by(t.c.email)).mappings()]

    def consent(self) -> dict[str, list[Any]]:
        return {app: [r["email_consent"] for r in self.rows(app)] for app in APPS}

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()


class World:
    """The apps, the daemon's config and store; `sync()` runs the daemon until it is quiet."""

    def __init__(self, folder: Path, conflicts: dict[str, Any], list_options: dict[str, Any] | None = None) -> None:
        self.config: Config = load_config(data={
            "daemon": {"store_url": f"sqlite:///{folder}/store.db", "normalize_workers": 0},
            "conflicts": conflicts,
            "apps": {
                app: {"connector": "sql", "fields": FIELDS[app], "settings": {
                    "url": f"sqlite:///{folder}/{app}.db", "table": "people", "create_table": True,
                    "column_types": COLUMNS[app]},
                      **({"requires_email": True, **(list_options or {})} if app == "list" else {})}
                for app in APPS
            },
        })
        self.store: Store = open_store(self.config.daemon.store_url)
        self.apps = Apps(folder)

    async def sync(self) -> RunSummary:
        """Run passes until one writes and plans nothing (at most five)."""
        for _ in range(5):
            async with Engine(self.config, self.store) as engine:
                summary = await engine.run_once()
            assert {} == summary.failed_apps
            if (summary.dispatch.written, summary.process.planned) == (0, 0):
                return summary
        raise AssertionError("the daemon did not come to rest in five passes")

    def customers(self) -> list[dict[str, Any]]:
        t = CustomerRow.__table__
        with self.store.transaction() as conn:
            return [dict(r) for r in conn.execute(select(t).where(t.c.deleted_at.is_(None))).mappings()]

    def changelog(self, kind: str) -> list[dict[str, Any]]:
        t = ChangeLogEntry.__table__
        with self.store.transaction() as conn:
            return [dict(r) for r in conn.execute(select(t).where(t.c.kind == kind).order_by(t.c.seq)).mappings()]

    def conflicts(self) -> list[dict[str, Any]]:
        with self.store.transaction() as conn:
            return [dict(r) for r in conn.execute(select(ConflictRow.__table__)).mappings()]

    def close(self) -> None:
        self.store.close()
        self.apps.close()


@pytest.fixture
async def make_world(tmp_path: Path):
    """Build a World (with its tables created by a first, empty pass)."""
    made: list[World] = []

    async def build(conflicts: dict[str, Any], **kw: Any) -> World:
        world = World(tmp_path, conflicts, **kw)
        made.append(world)
        await world.sync()
        return world

    yield build
    for world in made:
        world.close()


PRIORITY = {"default": "priority", "priority": ["list", "desk", "crm"], "consent_source": ["list"]}
LAST_WRITER = {"default": "last_writer", "consent_source": ["list"]}
BOTH = pytest.mark.parametrize("conflicts", [PRIORITY, LAST_WRITER], ids=["priority", "last_writer"])


# -- defect 4: emails are a set ------------------------------------------------------------------


@BOTH
async def test_a_helpdesk_users_two_addresses_and_a_list_members_address_all_survive(make_world, conflicts):
    """Defect 4: a helpdesk user with two addresses, one of them a list member's (the list
    edited last, and listed first under priority): the list member keeps its address, the
    helpdesk keeps both, the CRM gets the primary, and no address is lost."""
    w = await make_world(conflicts)
    w.apps.add("desk", email="ann@work.io", other_emails="ann@list.io", first_name="Ann")
    w.apps.add("list", email="ann@list.io", email_consent="subscribed")

    await w.sync()

    [customer] = w.customers()
    assert ("ann@work.io", ["ann@list.io"]) == (customer["values"]["email"], customer["values"]["other_emails"])
    assert [("ann@list.io", "subscribed")] == [(r["email"], r["email_consent"]) for r in w.apps.rows("list")]
    assert [("ann@work.io", "ann@list.io")] == [(r["email"], r["other_emails"]) for r in w.apps.rows("desk")]
    assert [("ann@work.io", "Ann")] == [(r["email"], r["first_name"]) for r in w.apps.rows("crm")]
    assert [] == [c for c in w.conflicts() if c["field"] == "email"]


@BOTH
async def test_a_conflict_on_the_primary_keeps_the_losing_address(make_world, conflicts):
    """Defect 4: the CRM changes the customer's email while the helpdesk makes another address
    primary (keeping the old one): the helpdesk, which holds the set, gives the primary; the
    CRM's address is not dropped but joins the helpdesk's other addresses."""
    w = await make_world(conflicts)
    w.apps.add("crm", email="bo@old.io", first_name="Bo")
    await w.sync()

    w.apps.edit("crm", "bo@old.io", email="bo@new.io")
    w.apps.edit("desk", "bo@old.io", email="bo@desk.io", other_emails="bo@old.io")
    await w.sync()

    [customer] = w.customers()
    values = customer["values"]
    assert ("bo@desk.io", ["bo@new.io", "bo@old.io"]) == (values["email"], values["other_emails"])
    assert [("bo@desk.io", "bo@new.io,bo@old.io")] == [(r["email"], r["other_emails"]) for r in w.apps.rows("desk")]
    assert ["bo@desk.io"] == [r["email"] for r in w.apps.rows("crm")]
    assert [("email", "desk", "crm", "bo@new.io")] == [
        (c["field"], c["winner_app"], c["loser_app"], c["loser_value"]) for c in w.conflicts()]


async def test_an_address_the_helpdesk_replaces_leaves_the_customer(make_world):
    """The helpdesk holds the customer's set of addresses: an address it replaces (and does
    not keep among the others) is no longer the customer's, in any app that holds the set."""
    w = await make_world(LAST_WRITER)
    w.apps.add("desk", email="bo@old.io", other_emails="bo@home.io", first_name="Bo")
    await w.sync()

    w.apps.edit("desk", "bo@old.io", email="bo@new.io")
    await w.sync()

    [customer] = w.customers()
    assert ("bo@new.io", ["bo@home.io"]) == (customer["values"]["email"], customer["values"]["other_emails"])
    assert ["bo@new.io"] == [r["email"] for r in w.apps.rows("crm")]


# -- defect 6: consent is a legal fact -----------------------------------------------------------


async def _subscribed_everywhere(w: World) -> None:
    w.apps.add("crm", email="cy@x.io", first_name="Cy", email_consent="subscribed")
    await w.sync()
    assert {"crm": ["subscribed"], "desk": ["subscribed"], "list": ["subscribed"]} == w.apps.consent()


@pytest.mark.parametrize("conflicts", [
    PRIORITY, {**PRIORITY, "priority": ["crm", "desk", "list"]}, LAST_WRITER,
], ids=["priority, list first", "priority, crm first", "last_writer"])
async def test_an_unsubscribe_reaches_every_app_and_no_other_app_undoes_it(make_world, conflicts):
    """Defect 6: the list's unsubscribe reaches the CRM and the helpdesk; the CRM setting the
    customer back to subscribed later (its edit the newest, its app first in priority) is
    written back to unsubscribed, and the refusal is in the change log."""
    w = await make_world(conflicts)
    await _subscribed_everywhere(w)

    w.apps.edit("list", "cy@x.io", email_consent="unsubscribed")
    await w.sync()
    assert {"crm": ["unsubscribed"], "desk": ["unsubscribed"], "list": ["unsubscribed"]} == w.apps.consent()

    w.apps.edit("crm", "cy@x.io", email_consent="subscribed")
    await w.sync()

    assert {"crm": ["unsubscribed"], "desk": ["unsubscribed"], "list": ["unsubscribed"]} == w.apps.consent()
    [refused] = [c for c in w.conflicts() if c["field"] == "email_consent"]
    assert ("consent", "list", "unsubscribed", "crm", "subscribed") == (
        refused["rule"], refused["winner_app"], refused["winner_value"], refused["loser_app"], refused["loser_value"])


@BOTH
@pytest.mark.parametrize("spelling", ["cleaned", "bounced"])
async def test_a_cleaned_address_never_becomes_subscribed(make_world, conflicts, spelling):
    """Defect 6: the helpdesk records a bounce; the CRM's later subscribe does not undo it, and
    every app ends cleaned (the helpdesk keeps its own spelling, bounced)."""
    w = await make_world(conflicts)
    await _subscribed_everywhere(w)

    w.apps.edit("desk", "cy@x.io", email_consent=spelling)
    await w.sync()
    w.apps.edit("crm", "cy@x.io", email_consent="subscribed")
    await w.sync()

    assert {"crm": ["cleaned"], "desk": [spelling], "list": ["cleaned"]} == w.apps.consent()
    assert ["cleaned"] == [c["values"]["email_consent"] for c in w.customers()]


async def test_manual_keeps_the_restriction_and_the_unsubscribe_reaches_the_list(make_world):
    """Defect 6: with the documented `manual` rule for email_consent, the CRM's unsubscribe
    against the helpdesk's concurrent change is parked for review, yet it is what stands and
    it reaches the list; a later subscribe in the CRM is parked and does not stand either."""
    w = await make_world({**LAST_WRITER, "fields": {"email_consent": {"rule": "manual"}}})
    await _subscribed_everywhere(w)

    w.apps.edit("desk", "cy@x.io", email_consent="pending")
    w.apps.edit("crm", "cy@x.io", email_consent="unsubscribed")
    await w.sync()

    assert {"crm": ["unsubscribed"], "desk": ["unsubscribed"], "list": ["unsubscribed"]} == w.apps.consent()
    assert ["parked"] == [c["status"] for c in w.conflicts() if c["field"] == "email_consent"]

    w.apps.edit("crm", "cy@x.io", email_consent="subscribed")
    await w.sync()

    assert {"crm": ["unsubscribed"], "desk": ["unsubscribed"], "list": ["unsubscribed"]} == w.apps.consent()
    assert ["parked", "parked"] == [c["status"] for c in w.conflicts() if c["field"] == "email_consent"]


async def test_only_a_newer_opt_in_on_the_list_lifts_an_unsubscribe(make_world):
    """Defect 6: after the CRM's unsubscribe, the helpdesk's opt-in is refused; the list's
    (the consent source, and newer) lifts it everywhere. Each consent decision is in the
    change log with the app and the time it was stated."""
    w = await make_world(LAST_WRITER)
    await _subscribed_everywhere(w)
    w.apps.edit("crm", "cy@x.io", email_consent="unsubscribed")
    await w.sync()

    w.apps.edit("desk", "cy@x.io", email_consent="subscribed")
    await w.sync()
    assert {"crm": ["unsubscribed"], "desk": ["unsubscribed"], "list": ["unsubscribed"]} == w.apps.consent()

    w.apps.edit("list", "cy@x.io", email_consent="subscribed")
    await w.sync()
    assert {"crm": ["subscribed"], "desk": ["subscribed"], "list": ["subscribed"]} == w.apps.consent()

    decided = [e for e in w.changelog("decided") if "email_consent" in (e["diff"] or {})]
    assert [["subscribed", "unsubscribed"], ["unsubscribed", "subscribed"]] == [
        e["diff"]["email_consent"] for e in decided[-2:]]
    unsubscribed, lifted = decided[-2:]
    assert (unsubscribed["app"], lifted["app"]) == ("crm", "list")
    [list_row] = w.apps.rows("list")
    assert f"email_consent: consent: list at {list_row['email_consent_at']}" in lifted["reason"]
    assert "email_consent: consent: crm at " in unsubscribed["reason"]


async def test_the_time_of_consent_follows_the_value_that_stands(make_world):
    """email_consent_at in the list says when the standing consent was stated: the CRM's
    unsubscribe dates it, and a refused opt-in elsewhere does not move it."""
    w = await make_world(LAST_WRITER)
    await _subscribed_everywhere(w)

    w.apps.edit("crm", "cy@x.io", email_consent="unsubscribed")
    await w.sync()
    [after_unsubscribe] = w.apps.rows("list")
    w.apps.edit("desk", "cy@x.io", email_consent="subscribed")
    await w.sync()

    [row] = w.apps.rows("list")
    [crm] = w.apps.rows("crm")
    assert ("unsubscribed", after_unsubscribe["email_consent_at"]) == (row["email_consent"], row["email_consent_at"])
    assert datetime.fromisoformat(row["email_consent_at"]).replace(tzinfo=None) == crm["updated_at"]


# -- defect 8c: no member without an email -------------------------------------------------------


async def test_a_customer_without_an_email_is_never_created_in_the_list(make_world):
    """Defect 8c: a CRM contact with a phone but no email reaches the helpdesk but never the
    list, which the change log says once; once the contact has an email, the list gets it."""
    w = await make_world(LAST_WRITER)
    w.apps.add("crm", first_name="Dee", phone="+14155550100")
    await w.sync()
    crm_t = w.apps.table("crm")  # the contact has no email to find it by: its table has one row
    with w.apps.engines["crm"].begin() as conn:
        conn.execute(update(crm_t).values(first_name="Deanna", updated_at=_now()))
    await w.sync()

    assert [] == w.apps.rows("list")
    assert ["Deanna"] == [r["first_name"] for r in w.apps.rows("desk")]
    said = [e for e in w.changelog("decided") if (e["reason"] or "").startswith("not created in list")]
    assert 1 == len(said)

    with w.apps.engines["crm"].begin() as conn:
        conn.execute(update(crm_t).values(email="dee@x.io", updated_at=_now()))
    await w.sync()

    assert [("dee@x.io", "Deanna")] == [(r["email"], r["first_name"]) for r in w.apps.rows("list")]


async def test_a_list_members_address_is_never_rewritten(make_world):
    """The CRM changes the customer's email: the helpdesk gets the new primary, the list keeps
    its member's own address (its identity, carrying its consent), and both addresses stay."""
    w = await make_world(LAST_WRITER)
    w.apps.add("crm", email="eve@old.io", first_name="Eve", email_consent="subscribed")
    await w.sync()

    w.apps.edit("crm", "eve@old.io", email="eve@new.io")
    await w.sync()

    assert ["eve@old.io"] == [r["email"] for r in w.apps.rows("list")]
    [desk] = w.apps.rows("desk")
    assert ("eve@new.io", "eve@old.io") == (desk["email"], desk["other_emails"])
    assert 1 == len(w.customers())
