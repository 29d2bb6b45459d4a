"""Focused tests of the Mailchimp connector against the simulator: consent refusals, webhook
authentication both ways, batch per-record failures, incremental reads by `last_changed`,
creates whose answers were lost, the connection cap, tags as a set and whole addresses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from customer_sync_connectors.mailchimp import MailchimpConnector
from customer_sync_connectors.mailchimp._webhooks import subscriber_hash
from pydantic import SecretStr

from customer_sync.errors import RecordRejected, TransientError
from customer_sync.sandbox._common import ManualClock
from customer_sync.sandbox.mailchimp import MailchimpSimulator, form_body, sign
from customer_sync.sdk import WriteOp
from customer_sync.testing.conformance import LostAnswerTransport, collect

from .conftest import T0, WEBHOOK_URL, FakeSleep, RecordingTransport, settings_for

Make = Callable[..., MailchimpConnector]


def _create(i: int, email: str, **fields: object) -> WriteOp:
    return WriteOp(key=f"k{i}", op="create", idempotency_key=f"idem-{i}",
                   fields={"email_address": email, "FNAME": f"F{i}", **fields})


# ---------------------------------------------------------------------------- consent


async def test_resubscribing_an_unsubscribed_member_is_a_rejection_sent_once(
        connector: MailchimpConnector, sim: MailchimpSimulator,
        transport: RecordingTransport) -> None:
    """Mailchimp's "Member In Compliance State" is a per-record refusal, never retried, and the
    member stays unsubscribed; the message does not carry the address."""
    rid = sim.add_member("left@example.net")
    sim.unsubscribe(rid)
    before = len(transport.exchanges)

    with pytest.raises(RecordRejected) as caught:
        await connector.update(rid, {"status": "subscribed"})

    assert "Member In Compliance State" in str(caught.value)
    assert "left@example.net" not in str(caught.value)
    assert ["PATCH /3.0/lists/{id}/members/{id}"] == transport.routes()[before:]
    assert "unsubscribed" == sim.get_member(rid)["status"]  # type: ignore[index]


async def test_a_cleaned_member_is_neither_subscribed_nor_set_pending(
        connector: MailchimpConnector, sim: MailchimpSimulator) -> None:
    """A bounced address is never re-subscribed through the API, not even to pending."""
    rid = sim.add_member("bounced@example.net")
    sim.clean(rid)

    for status in ("subscribed", "pending"):
        with pytest.raises(RecordRejected, match="Compliance State"):
            await connector.update(rid, {"status": status})

    assert "cleaned" == sim.get_member(rid)["status"]  # type: ignore[index]


async def test_a_create_never_changes_the_consent_of_an_existing_member(
        connector: MailchimpConnector, sim: MailchimpSimulator) -> None:
    """A create is an upsert whose status is only `status_if_new`: an unsubscribed member it
    lands on stays unsubscribed, and its other fields are written."""
    rid = sim.add_member("Known@Example.net")
    sim.unsubscribe(rid)

    receipt = await connector.create({"email_address": "known@example.net", "status": "subscribed",
                                      "LNAME": "Fard"}, idempotency_key="c1")

    member = sim.get_member(rid)
    assert (rid, "unsubscribed", "Fard") == (receipt.app_record_id, member["status"],  # type: ignore[index]
                                             member["merge_fields"]["LNAME"])  # type: ignore[index]


async def test_a_permanently_deleted_address_is_refused_until_the_person_opts_in(
        connector: MailchimpConnector, sim: MailchimpSimulator) -> None:
    """After delete-permanent, a create is refused ("Forgotten Email Not Subscribed"); the
    person's own signup brings the address back, as subscribed."""
    rid = sim.add_member("gone@example.net")
    await connector.delete_permanently(rid)

    with pytest.raises(RecordRejected, match="Forgotten Email"):
        await connector.create({"email_address": "gone@example.net"}, idempotency_key="c2")
    sim.opt_in("gone@example.net")
    (record,) = await connector.read([rid])

    assert "subscribed" == record.fields["status"]


async def test_a_resubscribe_through_the_list_itself_goes_through(
        connector: MailchimpConnector, sim: MailchimpSimulator) -> None:
    """The member's own opt-in is listed as `subscribed` with a newer `last_changed`."""
    rid = sim.add_member("back@example.net")
    sim.unsubscribe(rid)
    pages, _ = await collect(connector)
    sim.clock.advance(60)  # type: ignore[attr-defined]
    sim.opt_in("back@example.net")

    _, records = await collect(connector, pages[-1].cursor)

    assert [(rid, "subscribed")] == [(r.app_record_id, r.fields["status"]) for r in records]


async def test_archive_and_permanent_delete_follow_delete_mode(
        make_connector: Make, sim: MailchimpSimulator) -> None:
    """`delete` archives by default (the member can come back); with delete_mode = permanent the
    address is erased and can never be imported again by the API."""
    archived, erased = sim.add_member("a@example.net"), sim.add_member("b@example.net")
    async with make_connector() as c:
        await c.delete(archived)
    async with make_connector(delete_mode="permanent") as c:
        await c.delete(erased)

    assert "archived" == sim.get_member(archived)["status"]  # type: ignore[index]
    assert (None, True) == (sim.get_member(erased), sim.is_forgotten("b@example.net"))


# ---------------------------------------------------------------------------- webhooks


def _event(email: str, kind: str = "profile", **data: str) -> list[tuple[str, str]]:
    return [("type", kind), ("fired_at", "2026-03-02 09:00:00"), ("data[list_id]", "a6b5da1054"),
            ("data[email]", email), *((f"data[{k}]", v) for k, v in data.items())]


async def test_signed_webhooks_verify_over_the_raw_body(
        connector: MailchimpConnector, sim: MailchimpSimulator, clock: ManualClock) -> None:
    """A delivery signed `t=..,v1=HMAC(secret, "t.body")` verifies; a changed body, another
    secret, no header or a signature older than five minutes do not."""
    body = form_body(_event("ann@example.net"))
    t = int(clock().timestamp())
    good = {"X-Mailchimp-Signature": sign(sim.webhook_signing_secret or "", t, body)}

    assert connector.verify_webhook(good, body, url=WEBHOOK_URL)
    assert not connector.verify_webhook(good, body + b"&x=1", url=WEBHOOK_URL)
    assert not connector.verify_webhook({"X-Mailchimp-Signature": sign("other", t, body)}, body)
    assert not connector.verify_webhook({}, body, url=WEBHOOK_URL)
    stale = {"X-Mailchimp-Signature": sign(sim.webhook_signing_secret or "", t - 301, body)}
    assert not connector.verify_webhook(stale, body, url=WEBHOOK_URL)


def test_the_documented_signature_example_is_reproduced() -> None:
    """CONTRACTS.md's computed example: secret `my_secret`, t 1718000000."""
    body = b"type=subscribe&fired_at=2009-03-26+21%3A35%3A57&data%5Bid%5D=8a25ff1d98"
    assert ("t=1718000000,v1=c32d52d1a47f1ff1cb8bfcb5cc1fc66aafd26dfe7b79b4e11bd339b06892f57f"
            == sign("my_secret", 1718000000, body))


async def test_unsigned_webhooks_are_authenticated_by_the_secret_in_their_url(
        make_connector: Make, sim: MailchimpSimulator) -> None:
    """Without a signing secret, the URL must carry `secret=`; it is compared in constant time,
    and a signature header is no substitute for it."""
    sim.webhook_signing_secret = None
    headers, body = sim.webhook_delivery(_event("ann@example.net"))
    async with make_connector(webhook_signing_secret=None,
                              webhook_url_secret=SecretStr("s3cret-in-url")) as c:
        assert c.verify_webhook(headers, body, url=f"{WEBHOOK_URL}?secret=s3cret-in-url")
        assert not c.verify_webhook(headers, body, url=f"{WEBHOOK_URL}?secret=s3cret-in-ur")
        assert not c.verify_webhook(headers, body, url=WEBHOOK_URL)
    async with make_connector(webhook_signing_secret=None) as c:
        assert not c.verify_webhook(headers, body, url=f"{WEBHOOK_URL}?secret=s3cret-in-url")


async def test_webhook_events_become_changes_of_subscriber_hashes(
        connector: MailchimpConnector) -> None:
    """Events name addresses: each becomes the hash; an email change is the old member gone and
    the new one changed; an unsubscribe with action delete is an archive; campaigns and other
    audiences are not changes."""
    def parse(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(c.kind, c.app_record_id) for c in connector.parse_webhook(form_body(pairs))]

    ann = subscriber_hash("ann@example.net")
    assert [("upsert", ann)] == parse(_event("Ann@Example.net", "subscribe"))
    assert [("delete", ann)] == parse(_event("ann@example.net", "unsubscribe", action="delete"))
    assert [("upsert", ann)] == parse(_event("ann@example.net", "unsubscribe", action="unsub"))
    assert [("delete", ann), ("upsert", subscriber_hash("new@example.net"))] == parse(
        [("type", "upemail"), ("data[list_id]", "a6b5da1054"),
         ("data[old_email]", "ann@example.net"), ("data[new_email]", "new@example.net")])
    assert [] == parse([("type", "campaign"), ("data[list_id]", "a6b5da1054")])
    assert [] == parse([("type", "profile"), ("data[list_id]", "other"),
                        ("data[email]", "ann@example.net")])


# ---------------------------------------------------------------------------- batches


async def test_a_batch_maps_each_failure_to_its_own_record(
        make_connector: Make, sim: MailchimpSimulator, transport: RecordingTransport) -> None:
    """Bulk creates go through one batch, polled until finished; its results archive (fetched
    without credentials) gives each record its outcome: the refused ones fail alone."""
    rid = sim.add_member("left@example.net")
    sim.unsubscribe(rid)
    ops = [_create(i, f"bulk{i}@example.net", tags=["vip"]) for i in range(10)]
    ops.insert(3, _create(90, "left@example.net", status="subscribed"))  # lands, stays out
    ops.insert(5, _create(91, "bulk5@example.net", BIRTHDAY="31/12"))  # not MM/DD
    ops.insert(7, _create(92, "bulk7@example.net", NICKNAME="x"))  # no such merge field

    async with make_connector(batch_threshold=5) as c:
        outcomes = {o.key: o for o in await c.create_many(ops)}

    assert {"k91", "k92"} == {k for k, o in outcomes.items() if o.error is not None}
    assert isinstance(outcomes["k91"].error, RecordRejected)
    assert "BIRTHDAY" in str(outcomes["k91"].error) and "NICKNAME" in str(outcomes["k92"].error)
    assert "unsubscribed" == sim.get_member(rid)["status"]  # type: ignore[index]
    assert ["vip"] == [t["name"] for t in sim.get_member(subscriber_hash("bulk9@example.net"))["tags"]]  # type: ignore[index]
    routes = transport.routes()
    assert 2 == routes.count("POST /3.0/batches")  # members, then the tags of new members
    downloads = [r for r, _ in transport.exchanges if "batch-results" in r.url.path]
    assert downloads and all("authorization" not in r.headers for r in downloads)


async def test_an_unfinished_batch_is_transient(make_connector: Make, sim: MailchimpSimulator,
                                                fake_sleep: FakeSleep) -> None:
    """A batch still running after `batch_timeout_s` raises TransientError (the writes are sent
    again; each is idempotent)."""
    sim.batch_polls = 10_000
    async with make_connector(batch_threshold=2, batch_poll_interval_s=5.0,
                              batch_timeout_s=20.0) as c:
        with pytest.raises(TransientError, match="unfinished"):
            await c.create_many([_create(i, f"slow{i}@example.net") for i in range(3)])
    assert 4 == len(fake_sleep.waits)


# ---------------------------------------------------------------------------- listing


async def test_incremental_reads_ask_since_last_changed_and_never_skip_equal_times(
        make_connector: Make, sim: MailchimpSimulator, clock: ManualClock,
        transport: RecordingTransport) -> None:
    """25 members sharing one second, read 10 a page, then an edit in the same second as the
    last listing, a new member and a late arrival: each is listed exactly once more, and every
    incremental query names `since_last_changed` and sorts by `last_changed`."""
    ids = [sim.add_member(f"eq{i}@example.net") for i in range(25)]
    async with make_connector(page_size=10) as c:
        pages, first = await collect(c)
        assert sorted(ids) == sorted(r.app_record_id for r in first)
        sim.edit_member(ids[3], merge_fields={"FNAME": "Same second"})  # clock has not moved
        clock.advance(30)
        new = sim.add_member("new@example.net")
        late = sim.add_member("late@example.net", last_changed=T0 + timedelta(seconds=10))
        before = len(transport.exchanges)
        more, second = await collect(c, pages[-1].cursor)
        _, third = await collect(c, more[-1].cursor)

    assert sorted([ids[3], new, late]) == sorted(r.app_record_id for r in second)
    assert [] == [r for r in third if not r.deleted]
    queries = [r.url.params for r, _ in transport.exchanges[before:] if r.method == "GET"]
    assert all("since_last_changed" in q and q["sort_field"] == "last_changed" for q in queries)


async def test_archived_members_are_listed_as_deleted(
        make_connector: Make, sim: MailchimpSimulator, clock: ManualClock) -> None:
    """An archive after the first pass shows as a deleted record; one before it does not."""
    old = sim.add_member("old@example.net")
    sim.archive(old)
    kept = sim.add_member("kept@example.net")
    async with make_connector() as c:
        pages, first = await collect(c)
        clock.advance(5)
        sim.archive(kept)
        _, records = await collect(c, pages[-1].cursor)

    assert [kept] == [r.app_record_id for r in first]
    assert [(kept, True)] == [(r.app_record_id, r.deleted) for r in records]


# ---------------------------------------------------------------------------- idempotence


@pytest.mark.parametrize("via_batch", [False, True], ids=["single-put", "batch"])
async def test_creates_whose_answers_were_lost_make_one_member_each(
        sim: MailchimpSimulator, clock: ManualClock, fake_sleep: FakeSleep, via_batch: bool) -> None:
    """A create Mailchimp carried out but whose answer was lost, sent again (by the client's
    retry for a PUT, by the engine after a TransientError for a batch), leaves one member."""
    recording = RecordingTransport(sim)
    lossy = LostAnswerTransport(recording, after_lost=lambda _: sim.complete_batches())
    lossy.lose(1, when=lambda r: r.method in ("PUT", "POST"))
    settings = settings_for(sim, batch_threshold=2 if via_batch else 100)
    ops = [_create(i, f"lost{i}@example.net") for i in range(3)]
    async with MailchimpConnector(settings, app="list", transport=lossy, clock=clock,
                                  sleep=fake_sleep) as c:
        try:
            outcomes = await c.create_many(ops)
        except TransientError:
            assert via_batch  # POST /batches is not resent blindly: the engine sends again
            outcomes = await c.create_many(ops)
        again = await c.create_many(ops)

    assert 1 == len(lossy.lost)
    assert 3 == sim.member_count
    assert [o.receipt.app_record_id for o in outcomes] == [  # type: ignore[union-attr]
        o.receipt.app_record_id for o in again]  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- connections


async def test_no_more_than_ten_requests_are_in_flight(sim: MailchimpSimulator) -> None:
    """Forty reads at once never exceed Mailchimp's 10 simultaneous connections (the simulator
    would answer 429), and all succeed."""
    sim.latency_s = 0.002
    ids = [sim.add_member(f"c{i}@example.net") for i in range(40)]
    recording = RecordingTransport(sim)
    async with MailchimpConnector(settings_for(sim), app="list", transport=recording) as c:
        records = await c.read(ids)
        assert c.cap is not None and c.cap.peak <= 10

    assert 40 == len(records)
    assert 429 not in recording.statuses
    assert 1 < sim.peak_connections <= 10


# ---------------------------------------------------------------------------- fields


async def test_tags_are_written_as_a_set(connector: MailchimpConnector,
                                         sim: MailchimpSimulator) -> None:
    """Writing a tag set adds the missing tags and removes the extra ones."""
    rid = sim.add_member("t@example.net", tags=["a", "b"])

    await connector.update(rid, {"tags": ["b", "c"]})

    assert ["b", "c"] == [t["name"] for t in sim.get_member(rid)["tags"]]  # type: ignore[index]


async def test_an_address_part_is_written_with_the_rest_of_the_address(
        connector: MailchimpConnector, sim: MailchimpSimulator) -> None:
    """Mailchimp takes an address only whole: a new city keeps the member's street and zip."""
    rid = sim.add_member("addr@example.net", merge_fields={"ADDRESS": {
        "addr1": "Valiasr St 12", "city": "Tehran", "state": "Tehran", "zip": "1234567890",
        "country": "IR"}})

    await connector.update(rid, {"ADDRESS.city": "Karaj"})
    (record,) = await connector.read([rid])

    assert ("Valiasr St 12", "Karaj", "1234567890") == (
        record.fields["ADDRESS.addr1"], record.fields["ADDRESS.city"], record.fields["ADDRESS.zip"])


async def test_what_a_person_typed_is_read_as_stored(connector: MailchimpConnector,
                                                     sim: MailchimpSimulator) -> None:
    """Persian digits in PHONE and free text in names come back exactly as stored."""
    rid = sim.add_member("fa@example.net", merge_fields={
        "FNAME": "مهسا\u200cسادات", "LNAME": "o'Neil-Smith ✓", "PHONE": "۰۹۱۲ ۱۲۳ ۴۵۶۷"})

    (record,) = await connector.read([rid])

    assert ("مهسا\u200cسادات", "o'Neil-Smith ✓", "۰۹۱۲ ۱۲۳ ۴۵۶۷") == (
        record.fields["FNAME"], record.fields["LNAME"], record.fields["PHONE"])


async def test_an_address_is_never_rewritten(connector: MailchimpConnector,
                                             sim: MailchimpSimulator) -> None:
    """An update carrying another address writes the other fields and refuses the address."""
    rid = sim.add_member("keep@example.net")

    with pytest.raises(RecordRejected, match="never rewritten"):
        await connector.update(rid, {"email_address": "other@example.net", "FNAME": "Kept"})

    member = sim.get_member(rid)
    assert ("keep@example.net", "Kept") == (member["email_address"],  # type: ignore[index]
                                            member["merge_fields"]["FNAME"])  # type: ignore[index]


async def test_a_member_without_an_address_is_never_created(
        connector: MailchimpConnector, sim: MailchimpSimulator) -> None:
    """No email, no member: the create is refused before any request."""
    with pytest.raises(RecordRejected, match="email address"):
        await connector.create({"FNAME": "Nobody"}, idempotency_key="none")
    assert 0 == sim.member_count


def test_http_error_detail_is_redacted() -> None:
    """Sanity: the problem bodies the simulator sends are RFC 9457 documents."""
    response = httpx.Response(400, json={"type": "t", "title": "x", "status": 400,
                                         "detail": "d", "instance": "i"})
    assert {"type", "title", "status", "detail", "instance"} == set(response.json())
