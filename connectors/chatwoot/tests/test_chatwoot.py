"""The Chatwoot connector's own behaviour: webhook signatures, the scan and its cursor, inbox
identities read into handles and phones, creates after lost answers, and the rate limit; and,
through the engine, the scan reconciled against the base by content fingerprint."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from customer_sync_connectors.chatwoot import ChatwootConnector
from customer_sync_connectors.chatwoot.connector import SCANNED
from sqlalchemy import select

from customer_sync.config import load_config
from customer_sync.engine.runner import Engine
from customer_sync.errors import ConnectorError, RecordRejected, TransientError
from customer_sync.sandbox._common import ManualClock
from customer_sync.sandbox.chatwoot import ChatwootSimulator, sign
from customer_sync.sdk import Cursor, WriteOp
from customer_sync.store.db import Store, open_store
from customer_sync.store.tables import LinkRow
from customer_sync.testing.conformance import LostAnswerTransport, collect
from customer_sync.testing.fake_connector import FakeApp, FakeConnector

from .conftest import T0, FakeSleep, RecordingTransport, settings_for

# -- webhooks -----------------------------------------------------------------------------------


def test_signature_matches_the_worked_example_in_contracts() -> None:
    """The simulator signs as CONTRACTS.md's worked example (secret, timestamp, body) says."""
    body = b'{"event":"contact_created","id":1}'

    assert ("sha256=2aa8d05af66ddd10571ec97c6d1ae53ac07b7f984f9dae7d0a863fc2d1378d25"
            == sign("my_secret", "1718000000", body))


async def test_a_signed_fresh_delivery_verifies_and_names_the_contact(
        connector: ChatwootConnector, sim: ChatwootSimulator) -> None:
    """A delivery signed with the account webhook's secret, just now, verifies and parses."""
    contact_id = sim.add_contact(name="Ann", email="ann@example.org")
    headers, body = sim.signed_webhook(sim.pending_webhooks[-1])

    assert connector.verify_webhook(headers, body)
    assert connector.verify_webhook({k.upper(): v for k, v in headers.items()}, body)
    assert [(str(contact_id), "upsert")] == [(c.app_record_id, c.kind)
                                             for c in connector.parse_webhook(body)]


@pytest.mark.parametrize("tamper", ["body", "signature", "secret", "missing", "timestamp"],
                         ids=["body-changed", "signature-changed", "other-secret",
                              "no-signature", "timestamp-changed"])
async def test_a_delivery_not_signed_with_our_secret_is_refused(
        connector: ChatwootConnector, sim: ChatwootSimulator, tamper: str) -> None:
    """Any change to the body, the signature or the signed timestamp, a delivery signed with
    another secret, or one without a signature, does not verify."""
    sim.add_contact(name="Ann", email="ann@example.org")
    headers, body = sim.signed_webhook(sim.pending_webhooks[-1])
    if tamper == "body":
        body = body.replace(b"Ann", b"Eve")
    elif tamper == "signature":
        headers["X-Chatwoot-Signature"] = headers["X-Chatwoot-Signature"][:-4] + "0000"
    elif tamper == "secret":
        stamp = headers["X-Chatwoot-Timestamp"]
        headers["X-Chatwoot-Signature"] = sign("another-secret", stamp, body)
    elif tamper == "missing":
        del headers["X-Chatwoot-Signature"]
    else:
        headers["X-Chatwoot-Timestamp"] = str(int(headers["X-Chatwoot-Timestamp"]) - 1)

    assert not connector.verify_webhook(headers, body)


@pytest.mark.parametrize(("age_s", "accepted"), [(299, True), (301, False), (-29, True),
                                                 (-31, False)],
                         ids=["just-fresh", "stale", "slightly-ahead", "from-the-future"])
async def test_a_delivery_signed_too_long_ago_or_ahead_is_refused(
        connector: ChatwootConnector, sim: ChatwootSimulator, clock: ManualClock,
        age_s: int, accepted: bool) -> None:
    """Deliveries are fresh for `webhook_max_age_s` (300 s) and may run 30 s ahead of our
    clock; a correctly signed replay outside that window is refused."""
    sim.add_contact(name="Ann", email="ann@example.org")
    stamp = int(clock().timestamp()) - age_s
    headers, body = sim.signed_webhook(sim.pending_webhooks[-1], timestamp=stamp)

    assert accepted == connector.verify_webhook(headers, body)


async def test_no_delivery_verifies_without_a_webhook_secret(
        make_connector: Callable[..., ChatwootConnector], sim: ChatwootSimulator) -> None:
    """Without a configured secret nothing is trusted."""
    sim.add_contact(name="Ann", email="ann@example.org")
    headers, body = sim.signed_webhook(sim.pending_webhooks[-1])
    async with make_connector(webhook_secret=None) as connector:
        assert not connector.verify_webhook(headers, body)


async def test_conversation_events_are_no_customer_change(connector: ChatwootConnector) -> None:
    """A message or conversation event parses to no change; a contact event without an id is
    refused."""
    assert [] == connector.parse_webhook(b'{"event":"message_created","id":7}')
    with pytest.raises(ConnectorError):
        connector.parse_webhook(b'{"event":"contact_updated"}')


# -- the scan -----------------------------------------------------------------------------------


async def test_a_scan_costs_one_request_per_15_contacts(
        connector: ChatwootConnector, sim: ChatwootSimulator,
        transport: RecordingTransport) -> None:
    """31 contacts are 3 pages; 30 are 2 (the count says page 2 is the last)."""
    for i in range(30):
        sim.add_contact(name=f"P{i}", email=f"p{i}@example.org")
    pages, records = await collect(connector)
    assert (2, 30) == (len(pages), len(records))
    assert [SCANNED] == [p.cursor.value for p in pages][-1:]

    sim.add_contact(name="P30", email="p30@example.org")
    before = len(transport.exchanges)
    pages, records = await collect(connector)
    assert (3, 31, 3) == (len(pages), len(records), len(transport.exchanges) - before)


async def test_a_poll_after_a_complete_scan_costs_nothing_and_a_cut_scan_resumes(
        connector: ChatwootConnector, sim: ChatwootSimulator,
        transport: RecordingTransport) -> None:
    """From `scanned` a poll sends no request; from `page:1` the scan goes on at page 2."""
    ids = [str(sim.add_contact(name=f"P{i}", email=f"p{i}@example.org")) for i in range(20)]

    before = len(transport.exchanges)
    pages, _ = await collect(connector, Cursor(value=SCANNED))
    assert ([], 0) == (pages, len(transport.exchanges) - before)

    _, records = await collect(connector, Cursor(value="page:1"))
    assert ids[15:] == [r.app_record_id for r in records]


async def test_a_contact_known_only_by_instagram_is_read_into_its_handle(
        connector: ChatwootConnector, sim: ChatwootSimulator) -> None:
    """A contact an Instagram inbox made (no email, phone or identifier) is not listed, as
    Chatwoot lists resolved contacts only, yet reads by id with its handle, and its webhook
    names it."""
    contact_id = sim.add_contact(
        name="آنا کریمی", inboxes=[(2, "17841400000000001")],
        additional_attributes={"social_profiles": {"instagram": "ana.karimi"},
                               "social_instagram_user_name": "ana.karimi"})
    older = sim.add_contact(name="Old IG", inboxes=[(2, "17841400000000002")],
                            additional_attributes={"social_instagram_user_name": "old.ig"})

    _, listed = await collect(connector)
    (read, old) = await connector.read([str(contact_id), str(older)])
    changes = connector.parse_webhook(sim.signed_webhook(sim.pending_webhooks[0])[1])

    assert [] == listed
    assert "ana.karimi" == read.fields["social_profiles.instagram"]
    assert "آنا کریمی" == read.fields["name"]
    assert (None, None) == (read.fields["email"], read.fields["phone_number"])
    assert "old.ig" == old.fields["social_profiles.instagram"]  # the fallback
    assert [str(contact_id)] == [c.app_record_id for c in changes]


async def test_a_whatsapp_contact_reads_its_number_and_a_persian_digit_phone_as_stored(
        connector: ChatwootConnector, sim: ChatwootSimulator) -> None:
    """The WhatsApp inbox identity becomes `whatsapp` in E.164; a phone a channel stored in
    Persian digits is read as it is (the engine normalizes it)."""
    wa = sim.add_contact(name="Reza", phone_number="+989121234567",
                         inboxes=[(3, "989121234567")])
    fa = sim.add_contact(name="Sara", phone_number="۰۹۱۲۷۶۵۴۳۲۱")

    by_id = {r.app_record_id: r.fields for r in await connector.read([str(wa), str(fa)])}

    assert "+989121234567" == by_id[str(wa)]["whatsapp"]
    assert "۰۹۱۲۷۶۵۴۳۲۱" == by_id[str(fa)]["phone_number"]
    assert by_id[str(fa)]["whatsapp"] is None


async def test_writing_one_social_profile_keeps_the_others(
        connector: ChatwootConnector, sim: ChatwootSimulator) -> None:
    """Chatwoot merges additional_attributes one level deep, so `social_profiles` is sent whole:
    changing the Twitter handle keeps the Instagram one."""
    contact_id = sim.add_contact(name="Ann", email="ann@example.org", additional_attributes={
        "city": "Tehran", "social_profiles": {"instagram": "ann.k", "twitter": "old"}})

    await connector.update(str(contact_id), {"social_profiles.twitter": "ann_k",
                                             "additional_attributes.company_name": "Acme"})

    extra = sim.contact(contact_id)["additional_attributes"]  # type: ignore[index]
    assert {"instagram": "ann.k", "twitter": "ann_k"} == extra["social_profiles"]
    assert ("Tehran", "Acme") == (extra["city"], extra["company_name"])


# -- creates ------------------------------------------------------------------------------------


@pytest.fixture
def lossy(sim: ChatwootSimulator) -> LostAnswerTransport:
    return LostAnswerTransport(RecordingTransport(sim))


@pytest.fixture
async def lossy_connector(sim: ChatwootSimulator, lossy: LostAnswerTransport, clock: ManualClock,
                          fake_sleep: FakeSleep) -> AsyncIterator[ChatwootConnector]:
    async with ChatwootConnector(settings_for(sim), app="inbox", transport=lossy, clock=clock,
                                 sleep=fake_sleep) as c:
        yield c


@pytest.mark.parametrize("fields", [
    {"email": "neda@example.org", "name": "Neda"},
    {"phone_number": "+989351112233", "name": "Neda"},
], ids=["by-email", "by-phone-only"])
async def test_a_create_resent_after_a_lost_answer_answers_with_the_first_contact(
        lossy_connector: ChatwootConnector, lossy: LostAnswerTransport, sim: ChatwootSimulator,
        fields: dict[str, Any]) -> None:
    """Chatwoot made the contact but the answer was lost; the engine sends the create again
    (same key, `uncertain_since` set) and gets that contact back, and no second one exists."""
    lossy.lose(1, when=lambda r: r.method == "POST")
    op = WriteOp(key="k", op="create", fields=fields, idempotency_key="cust-1:inbox")
    with pytest.raises(TransientError):
        await lossy_connector.write_many([op])
    assert 1 == sim.contact_count

    resent = op.model_copy(update={"uncertain_since": T0})
    (outcome,) = await lossy_connector.write_many([resent])
    (plain,) = await lossy_connector.write_many([op])  # even without the flag

    assert outcome.receipt is not None, outcome.error
    assert plain.receipt is not None, plain.error
    first = "1"  # the simulator numbers contacts from 1
    assert 1 == sim.contact_count
    assert (first, first) == (outcome.receipt.app_record_id, plain.receipt.app_record_id)


async def test_a_create_whose_phone_another_contact_holds_is_refused_not_linked(
        connector: ChatwootConnector, sim: ChatwootSimulator) -> None:
    """Chatwoot keeps one contact per phone: a contact holding it that the sync did not create
    is someone else's record, so the create is refused (the next scan links it by phone)."""
    holder = sim.add_contact(name="Walk-in", phone_number="+989351112233", identifier="shop-77")

    (outcome,) = await connector.write_many([WriteOp(
        key="k", op="create", fields={"phone_number": "+989351112233", "name": "Neda"},
        idempotency_key="cust-2:inbox")])

    assert isinstance(outcome.error, RecordRejected)
    assert "phone_number" in str(outcome.error)
    assert f"contact {holder}" in str(outcome.error)
    assert "+989" not in str(outcome.error)
    assert 1 == sim.contact_count


async def test_search_by_phone_matches_the_digits(connector: ChatwootConnector,
                                                  sim: ChatwootSimulator) -> None:
    """A phone search finds the contact holding the number, and no contact holding a longer
    number that contains it."""
    wanted = sim.add_contact(name="A", phone_number="+4915112345678")
    sim.add_contact(name="B", phone_number="+49151123456789")

    found = await connector.search_by_phone("+49 151 12345678")

    assert [str(wanted)] == [r.app_record_id for r in found]


async def test_a_phone_chatwoot_refuses_is_a_rejected_record(connector: ChatwootConnector) -> None:
    """A phone not ending in E.164 is refused by Chatwoot (422) and named, value withheld."""
    with pytest.raises(RecordRejected) as refused:
        await connector.create({"name": "Sara", "phone_number": "۰۹۱۲۷۶۵۴۳۲۱"},
                               idempotency_key="cust-3:inbox")
    assert "e164" in str(refused.value)


# -- rate limits --------------------------------------------------------------------------------


async def test_rack_attacks_429_without_retry_after_is_waited_out(
        make_connector: Callable[..., ChatwootConnector], clock: ManualClock,
        fake_sleep: FakeSleep, sim: ChatwootSimulator) -> None:
    """A throttled request (429, plain text, no Retry-After) pauses the app and is retried once
    the clock-aligned window has turned."""
    contact_id = sim.add_contact(name="Ann", email="ann@example.org")
    sim.fail_next(1, 429)

    async with make_connector() as connector:
        (record,) = await connector.read([str(contact_id)])

    assert str(contact_id) == record.app_record_id
    assert sum(fake_sleep.waits) >= 15.0 - 1e-3  # the backoff, then the rest of the 15 s pause


async def test_the_search_stays_under_its_own_limit(
        make_connector: Callable[..., ChatwootConnector], sim: ChatwootSimulator,
        transport: RecordingTransport, fake_sleep: FakeSleep) -> None:
    """Searches are spaced to the search's own budget, under the account's larger one."""
    sim.add_contact(name="Ann", email="ann@example.org")
    async with make_connector(search_rate_limit=5, search_rate_limit_window_s=60.0) as c:
        for i in range(12):
            await c.search_by_email(f"nobody{i}@example.org")

    assert 429 not in transport.statuses
    assert sum(fake_sleep.waits) >= 60.0 - 1e-3  # a whole window waited at least once


# -- through the engine: the scan reconciled by content fingerprint -----------------------------

CRM_FIELDS = {"email": "email", "first_name": "first", "last_name": "last", "phone": "phone",
              "social.instagram": "instagram"}


class _Run:
    """A Chatwoot app (on the simulator) and a fake CRM synced by one engine and store."""

    def __init__(self, store: Store, sim: ChatwootSimulator, transport: httpx.AsyncBaseTransport,
                 clock: ManualClock) -> None:
        self.store, self.sim, self.transport, self.manual = store, sim, transport, clock
        self.crm = FakeApp(f"crm-{id(self)}", clock=self.clock)
        data = {
            "daemon": {"store_url": "sqlite://", "default_region": "IR", "batch_size": 50,
                       "normalize_workers": 0},
            "apps": {
                "inbox": {"connector": "chatwoot", "settings": {
                    "base_url": sim.base_url, "account_id": sim.account_id,
                    "api_access_token": "${CW_TOKEN}", "webhook_secret": "${CW_SECRET}"}},
                "crm": {"connector": "fake", "settings": {"page_size": 50},
                        "fields": CRM_FIELDS},
            },
        }
        self.config = load_config(data=data, env={"CW_TOKEN": sim.api_access_token,
                                                  "CW_SECRET": sim.webhook_secret},
                                  connectors={"fake": FakeConnector})

    def engine(self) -> Engine:
        rt = self.config.apps
        chatwoot = ChatwootConnector(rt["inbox"].connector_settings, app="inbox",  # type: ignore[arg-type]
                                     transport=self.transport, clock=self.manual)
        crm = FakeConnector(rt["crm"].connector_settings, app="crm", data=self.crm)  # type: ignore[arg-type]
        return Engine(self.config, self.store, connectors={"inbox": chatwoot, "crm": crm},
                      clock=self.clock)

    def clock(self) -> datetime:
        """The engine's clock: a second passes at every reading."""
        return self.manual.advance(1)

    def active_links(self, app: str) -> set[str]:
        t = LinkRow.__table__
        with self.store.transaction() as conn:
            return set(conn.execute(select(t.c.app_record_id).where(
                t.c.app == app, t.c.state == "active")).scalars())


@pytest.fixture
def run(tmp_path: Any, clock: ManualClock) -> _Run:
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    sim = ChatwootSimulator(clock=clock, rate_limit=None, search_rate_limit=None,
                            webhook_url="https://sync.example.org/webhooks/inbox")
    return _Run(store, sim, RecordingTransport(sim), clock)


async def test_a_scan_finds_no_change_in_unchanged_contacts_and_writes_nothing(run: _Run) -> None:
    """After the first sync, a reconcile re-reads every page and recognises every contact by
    its fingerprint: nothing is processed or written anywhere."""
    for i in range(20):
        run.sim.add_contact(name=f"First{i} Last{i}", email=f"p{i}@example.org")
    async with run.engine() as engine:
        first = await engine.run_once()
        assert 20 == len(run.crm.live())
        again = await engine.run_once(reconcile=True)

    assert 0 == first.dispatch.rejected
    assert (0, 0, 0) == (again.process.updated, again.process.created, again.dispatch.written)
    assert again.process.echoes >= 20


async def test_an_edit_made_without_a_webhook_is_found_by_the_next_scan(run: _Run) -> None:
    """An edit that sent no webhook is not seen by a poll (which costs nothing), and is seen by
    the next reconcile, which carries it to the CRM."""
    ids = [run.sim.add_contact(name=f"First{i} Last{i}", email=f"p{i}@example.org")
           for i in range(3)]
    async with run.engine() as engine:
        await engine.run_once()
        run.sim.edit_contact(ids[1], name="Parisa Ahmadi")
        await engine.run_once(reconcile=False)
        assert {"Parisa"} != {f.get("first") for f in run.crm.live().values()}
        await engine.run_once(reconcile=True)

    firsts = {f["email"]: f["first"] for f in run.crm.live().values()}
    assert "Parisa" == firsts["p1@example.org"]


async def test_a_deleted_contact_is_found_by_the_next_scan_and_a_hidden_one_is_not(
        run: _Run) -> None:
    """A contact deleted in Chatwoot (no webhook says so) is unlinked by the next reconcile; a
    linked Instagram-only contact, which Chatwoot never lists, is read back and stays linked."""
    kept = run.sim.add_contact(name="Kept", email="kept@example.org")
    gone = run.sim.add_contact(name="Gone", email="gone@example.org")
    hidden = run.sim.add_contact(name="Insta", additional_attributes={
        "social_profiles": {"instagram": "insta.only"}}, inboxes=[(2, "1784140000009")])
    async with run.engine() as engine:
        await engine.run_once()
        headers, body = run.sim.signed_webhook(
            next(e for e in run.sim.pending_webhooks if e["id"] == hidden))
        assert 1 == await engine.accept_webhook("inbox", headers, body)
        await engine.run_once()
        assert {str(kept), str(gone), str(hidden)} == run.active_links("inbox")

        run.sim.delete_contact(gone)
        await engine.run_once(reconcile=True)

    assert {str(kept), str(hidden)} == run.active_links("inbox")
    assert "insta.only" in {f.get("instagram") for f in run.crm.live().values()}


async def test_a_contact_known_only_by_its_handle_syncs_and_matches_without_duplicates(
        run: _Run) -> None:
    """The CRM already knows a customer by Instagram handle; the Chatwoot contact an Instagram
    conversation made (no email, no phone, so never listed) reaches the sync through its
    webhook, links to that customer by handle, and no second customer or record is made."""
    run.crm.put({"email": "ana@example.org", "first": "Ana", "last": "Karimi",
                 "instagram": "@Ana.Karimi"})
    contact_id = run.sim.add_contact(
        name="Ana Karimi", inboxes=[(2, "17841400000000001")],
        additional_attributes={"social_instagram_user_name": "ana.karimi"})
    headers, body = run.sim.signed_webhook(run.sim.pending_webhooks[-1])
    async with run.engine() as engine:
        assert 1 == await engine.accept_webhook("inbox", headers, body)
        await engine.run_once()

    assert 1 == len(run.crm.live())
    assert 1 == run.sim.contact_count
    assert {str(contact_id)} == run.active_links("inbox")
    stored = run.sim.contact(contact_id)
    assert stored is not None and "ana@example.org" == stored["email"]  # the CRM's email reached it
