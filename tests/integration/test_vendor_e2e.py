"""The engine end to end with the real `hubspot` and `zendesk` connectors against their simulators.

Both simulators run in-process behind `httpx.ASGITransport`, on one `ManualClock` that the
engine shares too; the connectors' rate limiters, retries and job polls sleep through a fake
`sleep` that advances that clock, so nothing really waits and the vendors' documented limits
(HubSpot: 100 requests per 10 s) can be used as they are. Webhooks go through the daemon's own
HTTP intake (`create_app`), signed by the simulator for the URL they are posted to.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from customer_sync.api.app import create_app
from customer_sync.config import Config, load_config
from customer_sync.engine.runner import Engine
from customer_sync.sandbox._common import ManualClock
from customer_sync.sandbox.hubspot import HubSpotSimulator
from customer_sync.sandbox.zendesk import ZendeskSimulator
from customer_sync.store.db import Store
from customer_sync.store.tables import ConflictRow, CustomerRow, DeadLetter, LinkRow
from customer_sync.testing.conformance import LostAnswerTransport
from customer_sync_connectors.hubspot import HubSpotConnector
from customer_sync_connectors.zendesk import ZendeskConnector

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HUBSPOT_TOKEN = "e2e-hubspot-token"
HUBSPOT_SECRET = "e2e-hubspot-secret"
CRM_HOOK = "http://sync.test/webhooks/crm"
DESK_HOOK = "http://sync.test/webhooks/desk"

HUBSPOT_WRITES = frozenset({
    "POST /crm/v3/objects/contacts", "PATCH /crm/v3/objects/contacts/{contactId}",
    "DELETE /crm/v3/objects/contacts/{contactId}", "POST /crm/v3/objects/contacts/batch/create",
    "POST /crm/v3/objects/contacts/batch/update", "POST /crm/v3/objects/contacts/batch/upsert",
    "POST /crm/v3/objects/contacts/batch/archive", "POST /crm/v3/objects/contacts/merge",
})
ZENDESK_WRITES = frozenset({
    "POST /api/v2/users/create_or_update", "POST /api/v2/users/create_or_update_many",
    "POST /api/v2/users", "PUT /api/v2/users/{user_id}", "DELETE /api/v2/users/{user_id}",
    "POST /api/v2/users/{user_id}/identities",
})


class StatusCounter(httpx.AsyncBaseTransport):
    """Passes requests to a simulator and counts the statuses it answered with."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.statuses: Counter[int] = Counter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        self.statuses[response.status_code] += 1
        return response


class Vendors:
    """A HubSpot portal and a Zendesk account on one manual clock, synced by one engine config."""

    def __init__(
        self, store: Store, *, hubspot_limit: tuple[int, float] | None = (100, 10.0),
        crm_options: dict[str, Any] | None = None, desk_options: dict[str, Any] | None = None,
        **crm_settings: Any,
    ) -> None:
        self.store = store
        self.clock = ManualClock(START)
        self.hubspot = HubSpotSimulator(
            clock=self.clock, rate_limit=hubspot_limit, app_secret=HUBSPOT_SECRET,
            access_token=HUBSPOT_TOKEN, webhook_url=CRM_HOOK)
        self.zendesk = ZendeskSimulator(clock=self.clock, webhook_url=DESK_HOOK)
        self.hubspot_http = StatusCounter(self.hubspot.app)
        self.zendesk_http = StatusCounter(self.zendesk.app)
        self.slept: list[float] = []
        data = {
            "daemon": {"store_url": "sqlite://", "default_region": "US"},
            "conflicts": {"default": "last_writer",
                          "fields": {"phone": {"rule": "priority", "apps": ["desk", "crm"]}}},
            "apps": {
                "crm": {"connector": "hubspot", "settings": {
                    "access_token": "${HUBSPOT_TOKEN}", "app_secret": "${HUBSPOT_APP_SECRET}",
                    **crm_settings}, **(crm_options or {})},
                "desk": {"connector": "zendesk", "settings": {
                    "base_url": self.zendesk.base_url, "email": self.zendesk.agent_email,
                    "api_token": "${ZENDESK_API_TOKEN}", "webhook_secret": "${ZENDESK_WEBHOOK_SECRET}",
                    "job_poll_interval_s": 1.0}, **(desk_options or {})},
            },
        }
        env = {"HUBSPOT_TOKEN": HUBSPOT_TOKEN, "HUBSPOT_APP_SECRET": HUBSPOT_SECRET,
               "ZENDESK_API_TOKEN": self.zendesk.api_token,
               "ZENDESK_WEBHOOK_SECRET": self.zendesk.webhook_secret}
        self.config: Config = load_config(data=data, env=env)

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock.advance(max(0.0, seconds))
        await asyncio.sleep(0)

    def engine(self, **kw: Any) -> Engine:
        crm = self.config.apps["crm"].connector_settings
        desk = self.config.apps["desk"].connector_settings
        connectors = {
            "crm": HubSpotConnector(crm, app="crm", transport=self.hubspot_http,  # type: ignore[arg-type]
                                    clock=self.clock, sleep=self.sleep),
            "desk": ZendeskConnector(desk, app="desk", transport=self.zendesk_http,  # type: ignore[arg-type]
                                     clock=self.clock, sleep=self.sleep),
        }
        return Engine(self.config, self.store, connectors=connectors, clock=self.clock, **kw)  # type: ignore[arg-type]

    def later(self, seconds: float = 5) -> None:
        """Let time pass between what people do, so every change has its own modified time."""
        self.clock.advance(seconds)

    # -- views -------------------------------------------------------------------------------------

    def hubspot_by_email(self) -> dict[str, list[dict[str, Any]]]:
        """Active contacts' properties by lower-cased email (a list, to see duplicates)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for cid in self.hubspot.contact_ids():
            contact = self.hubspot.get_contact(cid)
            assert contact is not None
            props = contact["properties"]
            out.setdefault(str(props.get("email") or "").lower(), []).append(props)
        return out

    def zendesk_user(self, email: str) -> dict[str, Any] | None:
        uid = self.zendesk.find_user_id(email=email)
        return None if uid is None else self.zendesk.get_user(uid)

    def end_users(self) -> int:
        """Users in the Zendesk account besides its owner (soft-deleted ones count too)."""
        return self.zendesk.user_count - 1

    def writes(self) -> dict[str, int]:
        return {
            "crm": sum(n for r, n in self.hubspot.count_by_route.items() if r in HUBSPOT_WRITES),
            "desk": sum(n for r, n in self.zendesk.count_by_route.items() if r in ZENDESK_WRITES),
        }

    def rows(self, table: Any, *where: Any) -> list[dict[str, Any]]:
        with self.store.transaction() as conn:
            return [dict(r) for r in conn.execute(select(table.__table__).where(*where)).mappings()]

    def customers(self) -> list[dict[str, Any]]:
        return self.rows(CustomerRow, CustomerRow.__table__.c.deleted_at.is_(None))

    def active_links(self) -> list[dict[str, Any]]:
        return self.rows(LinkRow, LinkRow.__table__.c.state == "active")


# The people of part (a): (hubspot email, zendesk email, first, last, hubspot phone, zendesk phone)
PEOPLE = [
    ("Ann.Lee@Example.com", "ann.lee@example.com", "Ann", "Lee", "+14155550101", "+14155550101"),
    ("bob@example.com", "BOB@EXAMPLE.COM", "Bob", "Stone", "+14155550102", "+14155550199"),
    ("eve@example.com", "eve@example.com", "Eve", "Park", None, "+14155550105"),
    ("Cat@Example.com", None, "Cat", "Ng", "+14155550103", None),
    (None, "Dan@Example.org", "Dan", "Fox", None, "+14155550104"),
]
EMAILS = {(h or z).lower() for h, z, *_ in PEOPLE}  # type: ignore[union-attr]


def seed_people(v: Vendors) -> None:
    earlier = START - timedelta(days=1)
    for hs_email, zd_email, first, last, hs_phone, zd_phone in PEOPLE:
        if hs_email:
            props = {"email": hs_email, "firstname": first, "lastname": last}
            if hs_phone:
                props["phone"] = hs_phone
            v.hubspot.add_contact(props, updated_at=earlier)
        if zd_email:
            fields: dict[str, Any] = {"name": f"{first} {last}", "email": zd_email}
            if zd_phone:
                fields["phone"] = zd_phone
            v.zendesk.add_user(updated_at=earlier + timedelta(hours=1), **fields)


async def test_overlapping_customers_merge_into_both_apps_once(store):
    """Seeded people meet in both apps once each; the phone conflict follows its rule; quiet stays quiet."""
    v = Vendors(store)
    seed_people(v)

    async with v.engine() as engine:
        summary = await engine.run_once()
        assert {} == summary.failed_apps
        writes_after_first = v.writes()
        again = await engine.run_once()

    hubspot = v.hubspot_by_email()
    assert EMAILS == set(hubspot)
    assert {e: 1 for e in EMAILS} == {e: len(c) for e, c in hubspot.items()}
    assert len(EMAILS) == v.end_users()
    for email in EMAILS:
        assert v.zendesk_user(email) is not None, email
    # names meet in both apps, and the phone is the one the priority rule picked (desk first)
    for hs_email, zd_email, first, last, hs_phone, zd_phone in PEOPLE:
        email = (hs_email or zd_email).lower()  # type: ignore[union-attr]
        (props,) = hubspot[email]
        user = v.zendesk_user(email)
        assert (first, last) == (props["firstname"], props["lastname"])
        assert f"{first} {last}" == user["name"]  # type: ignore[index]
        expected_phone = zd_phone or hs_phone
        assert (expected_phone, expected_phone) == (props.get("phone"), user["phone"])  # type: ignore[index]

    customers = v.customers()
    assert len(EMAILS) == len(customers)
    assert EMAILS == {c["values"]["email"].lower() for c in customers}
    links = Counter((lk["customer_id"], lk["app"]) for lk in v.active_links())
    assert {(c["customer_id"], app): 1 for c in customers for app in ("crm", "desk")} == dict(links)

    (conflict,) = [c for c in v.rows(ConflictRow) if c["field"] == "phone"]
    assert ("priority", "desk", "+14155550199", "crm", "+14155550102") == (
        conflict["rule"], conflict["winner_app"], conflict["winner_value"],
        conflict["loser_app"], conflict["loser_value"])

    assert 0 == again.dispatch.written
    assert writes_after_first == v.writes()


async def test_webhook_edit_in_hubspot_reaches_zendesk(store):
    """A person's edit in HubSpot, delivered as HubSpot's signed webhook to the daemon, lands in Zendesk."""
    v = Vendors(store)
    seed_people(v)
    async with v.engine() as engine:
        await engine.run_once()
        v.later()
        (ann,) = [cid for cid in v.hubspot.contact_ids()
                  if v.hubspot.get_contact(cid)["properties"]["email"] == "Ann.Lee@Example.com"]  # type: ignore[index]
        v.hubspot.edit_contact(ann, {"lastname": "Lee-Smith", "phone": "+14155550177"})
        desk_writes = v.writes()["desk"]

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(engine))) as intake:
            delivered = await v.hubspot.flush_webhooks(intake)
        assert delivered >= 1
        assert [] == v.hubspot.pending_webhooks  # the daemon answered 2xx to every delivery
        await engine.process_inbox()
        await engine.dispatch("desk")
        user = v.zendesk_user("ann.lee@example.com")
        assert ("Ann Lee-Smith", "+14155550177") == (user["name"], user["phone"])  # type: ignore[index]
        assert v.writes()["desk"] > desk_writes
        v.later()
        after = await engine.run_once()  # polling meets the same edit, and Zendesk's echo

    assert 0 == after.dispatch.written


async def test_hubspot_webhook_with_a_bad_signature_is_refused(store):
    """A delivery signed with another secret gets a 401 from the intake and changes nothing."""
    v = Vendors(store)
    seed_people(v)
    async with v.engine() as engine:
        await engine.run_once()
        (cid, *_) = v.hubspot.contact_ids()
        v.later()
        v.hubspot.edit_contact(cid, {"firstname": "Mallory"})
        v.hubspot.app_secret = "not-the-app-secret"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(engine))) as intake:
            delivered = await v.hubspot.flush_webhooks(intake)
        stats = await engine.process_inbox()
    assert 0 == delivered
    assert 0 == stats.read
    assert v.hubspot.pending_webhooks  # refused, so HubSpot keeps them for a retry


@pytest.mark.parametrize(("case", "status"), [
    ("good", 200), ("bad signature", 401), ("stale", 401), ("malformed", 400),
    ("oversized", 413), ("unknown app", 404),
])
async def test_every_answer_the_intake_gives_a_hubspot_delivery(store, case, status):
    """HubSpot's own signed deliveries through the HTTP intake: a good one is in the inbox
    before its 200; a bad signature, one signed longer ago than `webhook_max_age_s` (300 s by
    default; CONTRACTS.md §1 asks for a replay window), a signed body that is not HubSpot's
    event array, an oversized body and an unknown app are refused with their own status and
    leave the inbox as it was. (An app whose connector takes no webhooks answers 404 too:
    tests/unit/api/test_webhook_intake.py.)"""
    from customer_sync.api.app import MAX_BODY_BYTES
    from customer_sync.sandbox._common import epoch_ms
    from customer_sync.sandbox.hubspot import sign_v3
    from customer_sync.store.tables import InboxItem

    v = Vendors(store)
    seed_people(v)
    async with v.engine() as engine:
        await engine.run_once()
        (cid, *_) = v.hubspot.contact_ids()
        v.later()
        v.hubspot.edit_contact(cid, {"firstname": "Ada"})
        events = [e for e in v.hubspot.pending_webhooks if str(e["objectId"]) == str(cid)]
        assert events
        body = json.dumps(events, separators=(",", ":")).encode()
        signed_at, path, secret = v.clock(), "/webhooks/crm", HUBSPOT_SECRET
        if case == "stale":
            signed_at -= timedelta(seconds=301)
        elif case == "bad signature":
            secret = "not-the-app-secret"
        elif case == "malformed":
            body = b'{"objectId": "not an event array"}'
        elif case == "oversized":
            body = b"[" + b" " * MAX_BODY_BYTES + b"]"
        elif case == "unknown app":
            path = "/webhooks/nope"
        timestamp = str(epoch_ms(signed_at))
        headers = {"Content-Type": "application/json", "X-HubSpot-Request-Timestamp": timestamp,
                   "X-HubSpot-Signature-v3": sign_v3(secret, "POST", CRM_HOOK, body, timestamp)}
        transport = httpx.ASGITransport(app=create_app(engine))
        async with httpx.AsyncClient(transport=transport, base_url="http://sync.test") as intake:
            response = await intake.post(path, content=body, headers=headers)

    assert status == response.status_code, response.text
    assert "Ada" not in response.text and "Traceback" not in response.text
    with store.transaction() as conn:
        waiting = list(conn.execute(select(InboxItem.__table__.c.app_record_id)).scalars())
    if case == "good":
        assert len(events) > 1 and {"accepted": 1} == response.json()  # one contact's events: one change
        assert [str(cid)] == sorted(set(waiting))
    else:
        assert [] == waiting


@pytest.mark.parametrize("seen_by", ["poll", "webhook"])
async def test_merge_of_two_hubspot_contacts_leaves_one_linked_customer(store, seen_by):
    """Two HubSpot contacts (two emails) synced to Zendesk, then merged, end as one customer
    linked once per app, whether the merge is polled or delivered by webhook."""
    v = Vendors(store)
    first = v.hubspot.add_contact({"email": "gil@example.com", "firstname": "Gil", "lastname": "Hart"})
    second = v.hubspot.add_contact({"email": "gil.hart@work.example", "firstname": "Gil",
                                    "lastname": "Hart", "phone": "+14155550111"})
    async with v.engine() as engine:
        await engine.run_once()
        assert 2 == len(v.customers())
        assert 2 == v.end_users()
        v.later()
        survivor = v.hubspot.merge(first, second)
        v.later()
        if seen_by == "webhook":
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(engine))) as intake:
                assert await v.hubspot.flush_webhooks(intake) >= 1
            await engine.process_inbox()
            await engine.dispatch("desk")
        else:
            await engine.run_once()

    assert [first] == v.hubspot.contact_ids() and survivor == first
    (customer,) = v.customers()
    links = [lk for lk in v.active_links() if lk["customer_id"] == customer["customer_id"]]
    assert {"crm", "desk"} == {lk["app"] for lk in links}
    assert [survivor] == [lk["app_record_id"] for lk in links if lk["app"] == "crm"]
    assert [] == [lk for lk in v.active_links() if lk["customer_id"] != customer["customer_id"]]


def seed_many(v: Vendors, n: int) -> None:
    """`n` people only in HubSpot and `n` only in Zendesk, and `n // 5` in both."""
    earlier = START - timedelta(days=1)
    for i in range(n):
        v.hubspot.add_contact({"email": f"hs{i}@example.com", "firstname": f"H{i}", "lastname": "Hub"},
                              updated_at=earlier + timedelta(seconds=i))
        v.zendesk.add_user(name=f"Z{i} Desk", email=f"zd{i}@example.com",
                           updated_at=earlier + timedelta(seconds=i))
    for i in range(n // 5):
        v.hubspot.add_contact({"email": f"both{i}@example.com", "firstname": f"B{i}", "lastname": "Both"},
                              updated_at=earlier + timedelta(seconds=i))
        v.zendesk.add_user(name=f"B{i} Both", email=f"BOTH{i}@example.com",
                           updated_at=earlier + timedelta(seconds=i))


@pytest.mark.parametrize("sideload", [False, True], ids=["zendesk-no-sideload", "zendesk-sideloads"])
async def test_steady_state_stays_under_hubspot_rate_limit_and_batches(store, sideload):
    """Under HubSpot's documented 100 per 10 s, a full sync draws no 429, and HubSpot's
    requests per synced customer stay far below one (batch endpoints). Zendesk's stay at
    about one (an identities request per user) unless it side-loads identities (UNVERIFIED),
    when they are far below one too."""
    v = Vendors(store, hubspot_limit=(100, 10.0))
    v.zendesk.sideload_identities = sideload
    n = 250
    seed_many(v, n)
    async with v.engine() as engine:
        summary = await engine.run_once()
        assert {} == summary.failed_apps
        customers = len(v.customers())
        hubspot_requests = v.hubspot.request_count
        zendesk_requests = v.zendesk.request_count
        quiet = await engine.run_once()

    assert 2 * n + n // 5 == customers
    assert 2 * n + n // 5 == len(v.hubspot.contact_ids())
    assert 2 * n + n // 5 == v.end_users()
    assert 0 == v.hubspot_http.statuses[429]
    assert 0 == v.zendesk_http.statuses[429]
    assert 0 == quiet.dispatch.written
    per_customer = {"crm": hubspot_requests / customers, "desk": zendesk_requests / customers}
    print(f"requests per synced customer: {per_customer}; hubspot by route: "
          f"{dict(v.hubspot.count_by_route)}; zendesk by route: {dict(v.zendesk.count_by_route)}")
    assert per_customer["crm"] < 0.1
    if sideload:
        assert per_customer["desk"] < 0.1


async def test_limiter_spreads_a_busy_sync_under_hubspot_rate_limit(store):
    """Small pages make a sync need far more than 100 HubSpot requests: the client's limiter
    spreads them over (simulated) time, and HubSpot never answers 429."""
    v = Vendors(store, hubspot_limit=(100, 10.0), page_size=5, history_page_size=5)
    n = 250
    seed_many(v, n)
    async with v.engine() as engine:
        summary = await engine.run_once()
        assert {} == summary.failed_apps
        quiet = await engine.run_once()

    assert v.hubspot.request_count > 150
    assert v.slept  # the limiter waited (on the manual clock)
    assert 0 == v.hubspot_http.statuses[429]
    assert 0 == quiet.dispatch.written
    assert 2 * n + n // 5 == len(v.customers())
    assert 2 * n + n // 5 == len(v.hubspot.contact_ids())


async def test_forced_429s_are_retried_without_loss(store):
    """HubSpot answering 429 to several calls in a row slows the sync down but loses nothing."""
    v = Vendors(store, hubspot_limit=(100, 10.0))
    n = 120
    seed_many(v, n)
    async with v.engine() as engine:
        await engine.run_once()
        v.later()
        for i in range(0, n, 3):
            uid = v.zendesk.find_user_id(email=f"zd{i}@example.com")
            v.zendesk.edit_user(uid, phone=f"+1415555{i:04d}")  # type: ignore[arg-type]
        v.later()
        v.hubspot.fail_next(2, 429)  # every route: the next calls are refused...
        v.hubspot.fail_next(3, 429, route="POST /crm/v3/objects/contacts/batch/update")  # ...and writes
        summary = await engine.run_once()
        assert {} == summary.failed_apps
        quiet = await engine.run_once()

    assert 5 == v.hubspot_http.statuses[429]
    assert 0 == quiet.dispatch.written
    hubspot = v.hubspot_by_email()
    assert {e: 1 for e in hubspot} == {e: len(c) for e, c in hubspot.items()}
    for i in range(0, n, 3):
        (props,) = hubspot[f"zd{i}@example.com"]
        assert f"+1415555{i:04d}" == props["phone"]


async def test_429s_past_the_retry_budget_fail_the_pass_and_the_next_pass_catches_up(store):
    """HubSpot refusing more calls than one request's retries cover fails that pass for HubSpot
    only; a later pass finishes the sync with nothing lost and nothing doubled."""
    v = Vendors(store, hubspot_limit=(100, 10.0))
    n = 60
    seed_many(v, n)
    async with v.engine() as engine:
        v.hubspot.fail_next(8, 429)  # one request retries 6 times (retry_policy): 2 are left over
        first = await engine.run_once()
        assert "crm" in first.failed_apps
        v.later(600)  # past every backoff
        second = await engine.run_once()
        assert {} == second.failed_apps
        quiet = await engine.run_once()

    assert 8 == v.hubspot_http.statuses[429]
    assert 0 == quiet.dispatch.written
    expected = {f"hs{i}@example.com" for i in range(n)} | {f"zd{i}@example.com" for i in range(n)} \
        | {f"both{i}@example.com" for i in range(n // 5)}
    hubspot = v.hubspot_by_email()
    assert expected == set(hubspot)
    assert {e: 1 for e in expected} == {e: len(c) for e, c in hubspot.items()}
    assert len(expected) == v.end_users()
    assert len(expected) == len(v.customers())


async def test_webhook_edit_in_zendesk_reaches_hubspot(store):
    """An agent's edit in Zendesk, delivered as Zendesk's signed webhook to the daemon, lands in HubSpot."""
    v = Vendors(store)
    seed_people(v)
    async with v.engine() as engine:
        await engine.run_once()
        v.later()
        uid = v.zendesk.find_user_id(email="dan@example.org")
        v.zendesk.edit_user(uid, name="Dan Foxworth")  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(engine))) as intake:
            responses = await v.zendesk.flush_webhooks(intake)
        assert responses and all(r.status_code == 200 for r in responses)
        await engine.process_inbox()
        await engine.dispatch("crm")

    (props,) = v.hubspot_by_email()["dan@example.org"]
    assert ("Dan", "Foxworth") == (props["firstname"], props["lastname"])


async def test_later_edit_wins_a_name_conflict_and_zendesk_wins_phone_whatever_the_time(store):
    """After the first sync both apps edit the same person: last_name goes to the later edit,
    phone to Zendesk (its priority rule) although HubSpot's edit is the later one."""
    v = Vendors(store)
    seed_people(v)
    async with v.engine() as engine:
        await engine.run_once()
        v.later(60)
        uid = v.zendesk.find_user_id(email="eve@example.com")
        v.zendesk.edit_user(uid, name="Eve Parker", phone="+14155550155")  # type: ignore[arg-type]
        v.later(60)
        (eve,) = [cid for cid in v.hubspot.contact_ids()
                  if v.hubspot.get_contact(cid)["properties"]["email"] == "eve@example.com"]  # type: ignore[index]
        v.hubspot.edit_contact(eve, {"lastname": "Parkes", "phone": "+14155550166"})
        v.later(60)
        summary = await engine.run_once()
        assert {} == summary.failed_apps
        quiet = await engine.run_once()

    (props,) = v.hubspot_by_email()["eve@example.com"]
    user = v.zendesk_user("eve@example.com")
    assert ("Parkes", "+14155550155") == (props["lastname"], props["phone"])
    assert ("Eve Parkes", "+14155550155") == (user["name"], user["phone"])  # type: ignore[index]
    conflicts = {c["field"]: c for c in v.rows(ConflictRow) if c["customer_id"] in
                 {lk["customer_id"] for lk in v.active_links() if lk["app_record_id"] == eve}}
    assert ("last_writer", "crm", "Parkes", "desk", "Parker") == tuple(
        conflicts["last_name"][k] for k in ("rule", "winner_app", "winner_value", "loser_app", "loser_value"))
    assert ("priority", "desk", "+14155550155", "crm", "+14155550166") == tuple(
        conflicts["phone"][k] for k in ("rule", "winner_app", "winner_value", "loser_app", "loser_value"))
    assert 0 == quiet.dispatch.written


async def test_email_case_edit_in_hubspot_is_no_change(store):
    """Re-typing an email in other case in HubSpot changes no customer and writes nothing to Zendesk."""
    v = Vendors(store)
    seed_people(v)
    async with v.engine() as engine:
        await engine.run_once()
        before = v.writes()
        v.later()
        (bob,) = [cid for cid in v.hubspot.contact_ids()
                  if v.hubspot.get_contact(cid)["properties"]["email"] == "bob@example.com"]  # type: ignore[index]
        v.hubspot.edit_contact(bob, {"email": "Bob@Example.COM"})
        summary = await engine.run_once()

    assert {} == summary.failed_apps
    assert before == v.writes()
    assert [] == v.rows(DeadLetter)
    assert len(EMAILS) == len(v.customers())


class Crash(BaseException):
    """Stands for kill -9: not an Exception, so nothing in the engine catches it."""


def crash_at(point: str, nth: int = 1) -> Any:
    seen: Counter[str] = Counter()

    def faults(where: str) -> None:
        seen[where] += 1
        if where == point and seen[where] == nth:
            raise Crash(where)

    return faults


@pytest.mark.parametrize("point", ["after_inbox", "mid_dispatch", "before_confirm"])
async def test_crash_then_restart_duplicates_nobody_in_either_vendor(store, point):
    """The daemon dies between two stages of the first sync; after a restart every person is in
    each vendor once (HubSpot's upsert by email and Zendesk's create_or_update make re-sent
    creates safe)."""
    v = Vendors(store)
    seed_people(v)
    with pytest.raises(Crash):
        async with v.engine(faults=crash_at(point)) as engine:
            await engine.run_once()
    async with v.engine() as engine:
        after = await engine.run_once()
    assert {} == after.failed_apps
    hubspot = v.hubspot_by_email()
    assert {e: 1 for e in EMAILS} == {e: len(c) for e, c in hubspot.items()}
    assert len(EMAILS) == v.end_users()
    assert len(EMAILS) == len(v.customers())


async def test_crash_before_confirm_of_an_emailless_create_makes_no_second_hubspot_contact(store):
    """A Zendesk user with a phone and no email, created in HubSpot when the daemon dies before
    confirming, is still one HubSpot contact after the restart: batch/create has no key, so
    the connector finds the contact the first send made (`uncertain_since`) and links it."""
    v = Vendors(store)
    v.zendesk.add_user(name="Nora Quinn", phone="+14155550123")
    with pytest.raises(Crash):
        async with v.engine(faults=crash_at("before_confirm")) as engine:
            await engine.run_once()
    assert 1 == len(v.hubspot.contact_ids()), "the first send reached HubSpot"
    async with v.engine() as engine:
        after = await engine.run_once()
        quiet = await engine.run_once()
    assert {} == after.failed_apps
    (contact,) = v.hubspot.contact_ids()
    assert {str(contact)} == {lk["app_record_id"] for lk in v.active_links() if lk["app"] == "crm"}
    assert 1 == len(v.customers())
    assert 0 == quiet.dispatch.written


# -- lost answers: the vendor makes the records, the answer never reaches the daemon ----------


def _losing(inner: httpx.AsyncBaseTransport, route: str, times: int) -> LostAnswerTransport:
    """The vendor applies every request; the answers to the first `times` on `route` are lost."""
    lossy = LostAnswerTransport(inner)
    lossy.lose(times, when=lambda request: f"{request.method} {request.url.path}" == route)
    return lossy


async def _run_until_settled(v: Vendors, engine: Engine, *, runs: int = 8) -> None:
    """Run passes, letting the writes' backoff run out between them, until nothing waits."""
    for _ in range(runs):
        summary = await engine.run_once()
        if summary.waiting == 0:
            return
        v.later(600)
    raise AssertionError("writes still waiting after the lost answers")


@pytest.mark.parametrize("id_property", [None, "customer_sync_id"], ids=["search", "id-property"])
async def test_a_lost_answer_to_emailless_hubspot_creates_makes_one_contact_each(store, id_property):
    """30 Zendesk users with neither email nor phone are created in HubSpot and the answer is
    lost (the incident re-sent such a batch 4 times: 120 contacts). The creates are kept as
    uncertain; the next poll of HubSpot takes the 30 contacts for what they made (they hold
    exactly what was sent) instead of 30 new customers; HubSpot ends with 30 contacts, each
    linked to its customer, and Zendesk gets nobody twice."""
    settings = {"id_property": id_property} if id_property else {}
    v = Vendors(store, **settings)
    if id_property:
        v.hubspot = HubSpotSimulator(
            clock=v.clock, rate_limit=(100, 10.0), app_secret=HUBSPOT_SECRET, access_token=HUBSPOT_TOKEN,
            webhook_url=CRM_HOOK, unique_properties=[id_property])
        v.hubspot_http = StatusCounter(v.hubspot.app)
    for i in range(30):
        v.zendesk.add_user(name=f"Nora Quinn{i}")
    route = ("POST /crm/v3/objects/contacts/batch/upsert" if id_property
             else "POST /crm/v3/objects/contacts/batch/create")
    lossy = _losing(v.hubspot_http, route, times=3)
    v.hubspot_http = lossy  # type: ignore[assignment]
    async with v.engine() as engine:
        await _run_until_settled(v, engine)
        quiet = await engine.run_once()
    assert 1 <= len(lossy.lost)
    assert 30 == len(v.hubspot.contact_ids())
    assert 30 == v.end_users()
    linked = {lk["app_record_id"] for lk in v.active_links() if lk["app"] == "crm"}
    assert {str(c) for c in v.hubspot.contact_ids()} == linked
    assert 30 == len(v.customers())
    assert (0, 0) == (quiet.dispatch.written, quiet.process.planned)


async def test_a_lost_answer_to_emailless_zendesk_creates_makes_one_user_each(store):
    """30 HubSpot contacts with neither email nor phone are created in Zendesk and the answer
    to the bulk upsert is lost: Zendesk ends with exactly 30 end users, each linked, and
    HubSpot gets nobody twice."""
    v = Vendors(store)
    for i in range(30):
        v.hubspot.add_contact({"firstname": f"Nora{i}", "lastname": "Quinn"},
                              updated_at=START + timedelta(seconds=i))
    lossy = _losing(v.zendesk_http, "POST /api/v2/users/create_or_update_many", times=3)
    v.zendesk_http = lossy  # type: ignore[assignment]
    async with v.engine() as engine:
        await _run_until_settled(v, engine)
        quiet = await engine.run_once()
    assert 1 <= len(lossy.lost)
    assert 30 == v.end_users()
    assert 30 == len(v.hubspot.contact_ids())
    linked = {lk["app_record_id"] for lk in v.active_links() if lk["app"] == "desk"}
    assert 30 == len(linked)
    assert 30 == len(v.customers())
    assert (0, 0) == (quiet.dispatch.written, quiet.process.planned)
