"""One small business's customers across every kind of app, synced end to end.

A CRM (HubSpot), a helpdesk (Zendesk), an email list (Mailchimp), a social inbox (Chatwoot) and
a spreadsheet (a csv file) each hold some of the same people, written differently. All four
simulators run in-process behind `httpx.ASGITransport` (each checked against its vendor's
OpenAPI document in tests/contract/), on one `ManualClock` that the engine, the csv connector
and the connectors' sleeps share, so nothing really waits. Chatwoot's contact known only by an
Instagram handle is never listed by Chatwoot (CONTRACTS.md §4), so it arrives as the signed
webhook Chatwoot sends.

- Sara is in the spreadsheet with her email and Instagram handle; Chatwoot has her only by that
  handle (an Instagram conversation). One customer; the Chatwoot contact gets her email.
- Omid has two addresses in Zendesk; the list holds his second one. One customer; the list keeps
  its own address and gets no member for the other.
- Leila is only in the spreadsheet; Navid only in Chatwoot (a WhatsApp contact, no email). Each
  is created once in every app that can hold them; Navid never in the email list.
- Ann unsubscribes in the list: HubSpot hears it and keeps it over a later stale "subscribed"
  typed there; her own opt-in through the list goes through. Bob's address bounces (`cleaned`):
  he is never subscribed again.

The daemon's own loop (`run_once`, the loop run until quiet) drives every step.
"""

from __future__ import annotations

import asyncio
import csv
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from customer_sync_connectors.chatwoot import ChatwootConnector
from customer_sync_connectors.hubspot import HubSpotConnector
from customer_sync_connectors.mailchimp import MailchimpConnector
from customer_sync_connectors.sheet import CsvConnector
from customer_sync_connectors.zendesk import ZendeskConnector
from sqlalchemy import select

from customer_sync.config import load_config
from customer_sync.engine.runner import Engine, RunSummary
from customer_sync.sandbox._common import ManualClock
from customer_sync.sandbox.chatwoot import ChatwootSimulator
from customer_sync.sandbox.hubspot import HubSpotSimulator
from customer_sync.sandbox.mailchimp import MailchimpSimulator, subscriber_hash
from customer_sync.sandbox.zendesk import ZendeskSimulator
from customer_sync.store.db import open_store
from customer_sync.store.tables import CustomerRow

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
SHEET_COLUMNS = ["id", "email", "first_name", "last_name", "phone", "instagram"]


class Shop:
    """Four vendor apps on their simulators and a csv file, synced by one engine config."""

    def __init__(self, folder: Path) -> None:
        self.clock = ManualClock(START)
        self.hubspot = HubSpotSimulator(clock=self.clock, rate_limit=None, access_token="hs-token",
                                        app_secret="hs-secret", custom_properties=["email_consent"])
        self.zendesk = ZendeskSimulator(clock=self.clock)
        self.mailchimp = MailchimpSimulator(clock=self.clock)
        self.chatwoot = ChatwootSimulator(clock=self.clock, rate_limit=None, search_rate_limit=None,
                                          webhook_url="https://sync.example.org/webhooks/inbox")
        self.sheet = folder / "customers.csv"
        with self.sheet.open("w", newline="", encoding="utf-8-sig") as f:
            csv.writer(f).writerow(SHEET_COLUMNS)
        data = {
            "daemon": {"store_url": f"sqlite:///{folder}/store.db", "default_region": "IR",
                       "normalize_workers": 0, "poll_interval_s": 30},
            "conflicts": {"default": "last_writer", "consent_source": ["list"]},
            "apps": {
                "crm": {"connector": "hubspot", "settings": {"access_token": "${HS_TOKEN}"},
                        "fields": {"email": "email", "first_name": "firstname", "last_name": "lastname",
                                   "phone": "phone", "email_consent": "email_consent"}},
                "desk": {"connector": "zendesk", "settings": {
                    "base_url": self.zendesk.base_url, "email": self.zendesk.agent_email,
                    "api_token": "${ZD_TOKEN}", "job_poll_interval_s": 1.0}},
                "list": {"connector": "mailchimp", "settings": {
                    "list_id": self.mailchimp.list_id, "api_key": "${MC_KEY}"}},
                "inbox": {"connector": "chatwoot", "settings": {
                    "base_url": self.chatwoot.base_url, "account_id": self.chatwoot.account_id,
                    "api_access_token": "${CW_TOKEN}", "webhook_secret": "${CW_SECRET}"}},
                "sheet": {"connector": "csv", "settings": {"path": str(self.sheet)},
                          "fields": {"email": "email", "first_name": "first_name",
                                     "last_name": "last_name", "phone": "phone",
                                     "social.instagram": "instagram"}},
            },
        }
        env = {"HS_TOKEN": "hs-token", "ZD_TOKEN": self.zendesk.api_token,
               "MC_KEY": self.mailchimp.api_key, "CW_TOKEN": self.chatwoot.api_access_token,
               "CW_SECRET": self.chatwoot.webhook_secret}
        self.config = load_config(data=data, env=env)
        self.store = open_store(self.config.daemon.store_url)

    async def sleep(self, seconds: float) -> None:
        self.clock.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    def engine(self) -> Engine:
        apps = self.config.apps

        def via(app: Any) -> httpx.AsyncBaseTransport:
            return httpx.ASGITransport(app=app)

        kw = {"clock": self.clock, "sleep": self.sleep}
        connectors = {
            "crm": HubSpotConnector(apps["crm"].connector_settings, app="crm",  # type: ignore[arg-type]
                                    transport=via(self.hubspot.app), **kw),
            "desk": ZendeskConnector(apps["desk"].connector_settings, app="desk",  # type: ignore[arg-type]
                                     transport=via(self.zendesk.app), **kw),
            "list": MailchimpConnector(apps["list"].connector_settings, app="list",  # type: ignore[arg-type]
                                       transport=via(self.mailchimp.app), **kw),
            "inbox": ChatwootConnector(apps["inbox"].connector_settings, app="inbox",  # type: ignore[arg-type]
                                       transport=via(self.chatwoot.app), **kw),
            "sheet": CsvConnector(apps["sheet"].connector_settings, app="sheet",  # type: ignore[arg-type]
                                  clock=self.clock),
        }
        return Engine(self.config, self.store, connectors=connectors, clock=self.clock)  # type: ignore[arg-type]

    async def sync(self, engine: Engine) -> RunSummary:
        """The daemon's loop until quiet (every app is due again: a poll is every 30 s); then a
        minute passes before anyone edits again."""
        summary = await engine.run_once()
        assert {} == summary.failed_apps
        self.clock.advance(60)
        return summary

    # -- what each app holds -----------------------------------------------------------------------

    def hubspot_people(self) -> list[dict[str, Any]]:
        return [(self.hubspot.get_contact(cid) or {})["properties"] for cid in self.hubspot.contact_ids()]

    def hubspot_consent(self, email: str) -> str | None:
        (person,) = [p for p in self.hubspot_people() if p.get("email") == email]
        return person.get("email_consent")

    def zendesk_people(self) -> list[dict[str, Any]]:
        users = [self.zendesk.get_user(uid) for uid in self.zendesk.user_ids()]
        return [u for u in users if u and u["active"] and u["role"] == "end-user"]

    def members(self) -> dict[str, str]:
        """Every member's address -> status (archived ones left out)."""
        out = {}
        for email in ("sara@example.com", "leila@example.com", "omid@work.example", "omid@home.example",
                      "ann@example.com", "bob@example.com"):
            member = self.mailchimp.get_member(subscriber_hash(email))
            if member is not None:
                out[member["email_address"]] = member["status"]
        return out

    def contacts(self) -> list[dict[str, Any]]:
        found = [self.chatwoot.contact(i) for i in range(1, 100)]
        return [c for c in found if c is not None]

    def rows(self) -> list[dict[str, str]]:
        with self.sheet.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))

    def customers(self) -> list[dict[str, Any]]:
        t = CustomerRow.__table__
        with self.store.transaction() as conn:
            return [dict(r) for r in conn.execute(select(t).where(t.c.deleted_at.is_(None))).mappings()]


def twice(values: list[Any]) -> list[Any]:
    """The values held more than once (an empty value does not count)."""
    return [v for v, n in Counter(v for v in values if v).items() if n > 1]


async def test_every_kind_of_app_converges_without_duplicates_and_consent_holds(tmp_path: Path) -> None:
    shop = Shop(tmp_path)
    earlier = START - timedelta(days=1)
    with shop.sheet.open("a", newline="", encoding="utf-8-sig") as f:
        writer = csv.writer(f)
        writer.writerow(["", "sara@example.com", "Sara", "Karimi", "", "sara.k"])
        writer.writerow(["", "leila@example.com", "Leila", "Ahmadi", "۰۹۱۲ ۳۴۵ ۶۷۸۹", ""])
    sara_ig = shop.chatwoot.add_contact(
        name="Sara K", inboxes=[(2, "17841400000000042")],
        additional_attributes={"social_instagram_user_name": "sara.k"})
    shop.chatwoot.add_contact(name="Navid Rahimi", phone_number="+989121112233",
                              inboxes=[(3, "989121112233")])
    shop.zendesk.add_user(name="Omid Rezaei", email="omid@work.example", updated_at=earlier,
                          identities=[{"type": "email", "value": "omid@home.example"}])
    shop.mailchimp.add_member("omid@home.example", merge_fields={"FNAME": "Omid"}, last_changed=earlier)
    ann_member = shop.mailchimp.add_member("ann@example.com", merge_fields={"FNAME": "Ann"},
                                           last_changed=earlier)
    bob_member = shop.mailchimp.add_member("bob@example.com", merge_fields={"FNAME": "Bob"},
                                           last_changed=earlier)
    shop.hubspot.add_contact({"email": "ann@example.com", "firstname": "Ann", "lastname": "Lee",
                              "email_consent": "subscribed"}, updated_at=earlier)
    shop.hubspot.add_contact({"email": "bob@example.com", "firstname": "Bob", "lastname": "Stone",
                              "email_consent": "subscribed"}, updated_at=earlier)

    async with shop.engine() as engine:
        # Sara's Instagram contact is never listed by Chatwoot: its webhook is how it arrives
        event = next(e for e in shop.chatwoot.pending_webhooks if e["id"] == sara_ig)
        assert 1 == await engine.accept_webhook("inbox", *shop.chatwoot.signed_webhook(event))
        await shop.sync(engine)

        # -- one customer per person, once in every app ----------------------------------------
        assert 6 == len(shop.customers())
        people = shop.hubspot_people()
        assert 6 == len(people) and [] == twice([p.get("email") for p in people])
        assert 1 == len([p for p in people if p.get("email") in ("omid@work.example", "omid@home.example")])
        desk = shop.zendesk_people()
        assert 6 == len(desk) and [] == twice([u.get("email") for u in desk])
        # the list: its own address for Omid, no member for his other one, none without an email
        assert {"sara@example.com", "leila@example.com", "omid@home.example", "ann@example.com",
                "bob@example.com"} == set(shop.members())
        contacts = shop.contacts()
        assert 6 == len(contacts) and [] == twice([c.get("email") for c in contacts])
        sara = shop.chatwoot.contact(sara_ig)
        assert sara is not None and "sara@example.com" == sara["email"]
        rows = shop.rows()
        assert 6 == len(rows) and [] == twice([r["email"] for r in rows]) and all(r["id"] for r in rows)
        navid = [r for r in rows if r["first_name"] == "Navid"]
        assert [("", "+989121112233")] == [(r["email"], r["phone"]) for r in navid]
        leila = [p for p in people if p.get("email") == "leila@example.com"]
        assert ["+989123456789"] == [p.get("phone") for p in leila]  # Persian digits, in E.164

        # -- consent: the list's unsubscribe reaches the CRM and outlives a stale edit there ---
        shop.mailchimp.unsubscribe(ann_member)
        await shop.sync(engine)
        assert "unsubscribed" == shop.hubspot_consent("ann@example.com")
        (ann,) = [cid for cid in shop.hubspot.contact_ids()
                  if (shop.hubspot.get_contact(cid) or {})["properties"].get("email") == "ann@example.com"]
        shop.hubspot.edit_contact(ann, {"email_consent": "subscribed"})
        await shop.sync(engine)
        assert ("unsubscribed", "unsubscribed") == (
            shop.hubspot_consent("ann@example.com"), shop.members()["ann@example.com"])
        # her own opt-in, through the list, goes through
        shop.mailchimp.opt_in("ann@example.com")
        await shop.sync(engine)
        assert ("subscribed", "subscribed") == (
            shop.hubspot_consent("ann@example.com"), shop.members()["ann@example.com"])

        # -- a bounced address is never subscribed again -------------------------------------
        shop.mailchimp.clean(bob_member)
        await shop.sync(engine)
        (bob,) = [cid for cid in shop.hubspot.contact_ids()
                  if (shop.hubspot.get_contact(cid) or {})["properties"].get("email") == "bob@example.com"]
        shop.hubspot.edit_contact(bob, {"email_consent": "subscribed"})
        await shop.sync(engine)
        assert ("cleaned", "cleaned") == (
            shop.hubspot_consent("bob@example.com"), shop.members()["bob@example.com"])

        # -- and then nothing more to do ----------------------------------------------------------
        quiet = await shop.sync(engine)
        assert 0 == quiet.dispatch.written + quiet.dispatch.created
    assert 6 == len(shop.customers()) and 6 == len(shop.rows()) and 6 == len(shop.contacts())
