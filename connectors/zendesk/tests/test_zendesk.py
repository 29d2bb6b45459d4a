"""Behaviour of the Zendesk connector against the Zendesk simulator, beyond the conformance suite.

Export paging and resuming, bulk jobs, identities, names, staff protection, auth, rate limits,
webhooks and request budgets. The simulator and the connector share a manual clock, and the
connector's sleep moves that clock instead of waiting, so no test sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr, ValidationError

from customer_sync.sandbox._common import ManualClock
from customer_sync.sandbox.zendesk import ZendeskSimulator, sign
from customer_sync.sdk import (
    AuthError,
    Change,
    ConnectorError,
    Cursor,
    RecordGone,
    RecordRejected,
    TransientError,
    WebhookRefused,
    WriteOp,
)
from customer_sync_connectors.zendesk import ZendeskConnector, ZendeskSettings
from customer_sync_connectors.zendesk._fields import NBSP, join_name, split_name

from .conftest import WEBHOOK_URL, FakeSleep, RecordingTransport, settings_for  # noqa: TID252

EXPORT = "GET /api/v2/incremental/users/cursor"
IDENTITIES = "GET /api/v2/users/{id}/identities"
SENTINEL = "sentinel.zendesk.5151@example.org"

MakeConnector = Callable[..., ZendeskConnector]


async def collect(connector: ZendeskConnector, since: Cursor | None = None) -> list[Any]:
    return [page async for page in connector.list_changes(since)]


def user_of(sim: ZendeskSimulator, user_id: int | str) -> dict[str, Any]:
    user = sim.get_user(int(user_id))
    assert user is not None
    return user


def seed_users(sim: ZendeskSimulator, n: int, *, start: int = 0, **extra: Any) -> list[str]:
    return [str(sim.add_user(name=f"Person {i}", email=f"person{i}@example.org", **extra))
            for i in range(start, start + n)]


# ---------------------------------------------------------------------------- listing


async def test_export_pages_to_end_of_stream_and_resumes_after_the_stored_cursor(
    sim: ZendeskSimulator, make_connector: MakeConnector, transport: RecordingTransport,
    clock: ManualClock,
) -> None:
    """Listing pages the export to end_of_stream; its last cursor resumes with only newer users."""
    seeded = seed_users(sim, 25)
    clock.advance(60)
    async with make_connector(page_size=10) as connector:
        pages = await collect(connector)
        first_pass = transport.exchanges[:]
        resumed = await collect(connector, pages[-1].cursor)
        newer = seed_users(sim, 1, start=100)
        after_new = await collect(connector, pages[-1].cursor)

    assert 3 == len(pages)
    assert seeded == [r.app_record_id for p in pages for r in p.records]  # the owner is staff
    exports = [req for req, _ in first_pass if req.url.path.endswith("/incremental/users/cursor")]
    assert ["0", None, None] == [req.url.params.get("start_time") for req in exports]
    assert [None, True, True] == [bool(req.url.params.get("cursor")) or None for req in exports]
    assert [[]] == [list(p.records) for p in resumed]
    assert newer == [r.app_record_id for p in after_new for r in p.records]


async def test_users_sharing_one_updated_at_are_all_listed_when_resuming_page_by_page(
    sim: ZendeskSimulator, make_connector: MakeConnector,
) -> None:
    """Twelve users updated in one second are each listed once, resuming after every page."""
    at = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)
    seeded = [str(sim.add_user(name=f"Same {i}", email=f"same{i}@example.org", updated_at=at))
              for i in range(12)]
    seen: list[str] = []
    cursor: Cursor | None = None
    async with make_connector(page_size=5) as connector:
        for _ in range(10):
            page = await anext(aiter(connector.list_changes(cursor)))
            seen += [r.app_record_id for r in page.records]
            cursor = page.cursor
            if not page.records:
                break

    assert sorted(seeded) == sorted(seen)
    assert len(seen) == len(set(seen))


async def test_a_refused_cursor_is_a_connector_error_that_says_how_to_recover(
    connector: ZendeskConnector,
) -> None:
    """A cursor Zendesk refuses is not blamed on a record: the error names the resync."""
    with pytest.raises(ConnectorError, match="resync") as raised:
        await collect(connector, Cursor(value="bm90IGEgY3Vyc29y"))

    assert not isinstance(raised.value, RecordRejected)


async def test_deleted_users_are_listed_as_deleted_records(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """A soft-deleted user comes back from the export as a deleted record without fields."""
    (rid,) = seed_users(sim, 1)
    pages = await collect(connector)
    sim.delete_user(int(rid))

    (record,) = [r for p in await collect(connector, pages[-1].cursor) for r in p.records]

    assert (rid, True, {}) == (record.app_record_id, record.deleted, dict(record.fields))
    assert record.modified_at is not None


async def test_without_deleted_users_in_the_export_the_webhook_still_reports_the_delete(
    clock: ManualClock, fake_sleep: FakeSleep,
) -> None:
    """UNVERIFIED (CONTRACTS.md): should Zendesk leave deleted users out of the export, the
    user.deleted webhook is what reports the delete."""
    sim = ZendeskSimulator(clock=clock, export_deleted=False, webhook_url=WEBHOOK_URL)
    (rid,) = seed_users(sim, 1)
    connector = ZendeskConnector(settings_for(sim), app="helpdesk",
                                 transport=RecordingTransport(sim), clock=clock, sleep=fake_sleep)
    async with connector:
        pages = await collect(connector)
        sim.delete_user(int(rid))
        listed = [r for p in await collect(connector, pages[-1].cursor) for r in p.records]
        event = next(e for e in sim.pending_webhooks if e["type"].endswith(".deleted"))
        headers, body = sim.signed_webhook(event)

        assert connector.verify_webhook(headers, body, url=WEBHOOK_URL)
        changes = connector.parse_webhook(body)

    assert [] == listed
    assert [("delete", rid)] == [(c.kind, c.app_record_id) for c in changes]


# ---------------------------------------------------------------------------- identities


async def test_identities_become_other_emails_and_other_phones(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """Secondary email and phone identities are listed and read as sorted lists, primaries
    left out."""
    rid = sim.add_user(name="Ann Lee", email="ann@example.com", phone="+15551234567")
    sim.add_identity(rid, "email", "Ann.Work@example.com")
    sim.add_identity(rid, "email", "ann.home@example.com")
    sim.add_identity(rid, "phone_number", "+15557654321")
    sim.add_identity(rid, "twitter", "annlee")

    (listed,) = [r for p in await collect(connector) for r in p.records]
    (read,) = await connector.read([str(rid)])

    expected = (["ann.home@example.com", "Ann.Work@example.com"], ["+15557654321"])
    assert expected == (listed.fields["other_emails"], listed.fields["other_phones"])
    assert dict(listed.fields) == dict(read.fields)


async def test_identities_cost_one_request_per_live_end_user_and_can_be_switched_off(
    sim: ZendeskSimulator, make_connector: MakeConnector, transport: RecordingTransport,
) -> None:
    """With fetch_identities off, no identity requests are made and the fields are absent."""
    seed_users(sim, 3)
    sim.delete_user(int(seed_users(sim, 1, start=10)[0]))
    async with make_connector() as connector:
        on = [r for p in await collect(connector) for r in p.records]
        with_identities = transport.paths().count(IDENTITIES)
    async with make_connector(fetch_identities=False) as connector:
        off = [r for p in await collect(connector) for r in p.records]

    assert 3 == with_identities  # three live end users; the deleted one and the owner cost none
    assert with_identities == transport.paths().count(IDENTITIES)
    assert all("other_emails" in r.fields for r in on if not r.deleted)
    assert not any("other_emails" in r.fields for r in off)


async def test_requests_for_a_full_pass_over_a_thousand_users(
    sim: ZendeskSimulator, make_connector: MakeConnector, transport: RecordingTransport,
    record_property: Callable[[str, object], None],
) -> None:
    """A full pass over 1,000 users takes at most 5 export requests at per_page 1000, plus one
    identity request per user (reported as a property of this test)."""
    seed_users(sim, 1000)
    async with make_connector(page_size=1000) as connector:
        records = [r for p in await collect(connector) for r in p.records]
    paths = transport.paths()
    identity_requests = paths.count(IDENTITIES)
    record_property("export_requests", paths.count(EXPORT))
    record_property("identity_requests", identity_requests)

    assert 1000 == len(records)
    assert len(paths) - identity_requests <= 5
    assert 1000 == identity_requests


async def test_side_loaded_identities_need_no_request_per_user(
    sim: ZendeskSimulator, make_connector: MakeConnector, transport: RecordingTransport,
) -> None:
    """When Zendesk side-loads identities (`include=identities`, UNVERIFIED: the simulator's
    `sideload_identities`), listing and reading give the same fields as reading each user's
    identities, with no identities request."""
    rid = sim.add_user(name="Ann Lee", email="ann@example.com", phone="+15551234567")
    sim.add_identity(rid, "email", "Ann.Work@example.com")
    sim.add_identity(rid, "phone_number", "+15557654321")
    seed_users(sim, 3)
    async with make_connector() as connector:
        per_user = [r for p in await collect(connector) for r in p.records]
    sim.sideload_identities = True
    before = len(transport.paths())
    async with make_connector() as connector:
        sideloaded = [r for p in await collect(connector) for r in p.records]
        (read,) = await connector.read([str(rid)])
    paths = transport.paths()[before:]

    assert 0 == paths.count(IDENTITIES)
    assert [dict(r.fields) for r in per_user] == [dict(r.fields) for r in sideloaded]
    assert (["Ann.Work@example.com"], ["+15557654321"]) == (
        read.fields["other_emails"], read.fields["other_phones"])
    assert all("include=identities" in str(req.url) for req, _ in transport.exchanges[before:]
               if req.url.path.endswith(("/cursor", "/show_many")))


class RefuseSideloads(httpx.AsyncBaseTransport):
    """Answers 400 to any request asking for a side-load, as an account might (UNVERIFIED)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.refused = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if "include" in request.url.params:
            self.refused += 1
            return httpx.Response(400, json={"error": "InvalidValue", "description": "Invalid include"})
        return await self.inner.handle_async_request(request)


async def test_a_refused_side_load_is_never_asked_for_again(
    sim: ZendeskSimulator, transport: RecordingTransport, clock: ManualClock, fake_sleep: FakeSleep,
) -> None:
    """A 400 for the include makes the connector send the same page again without it, and
    read identities per user from then on: listing and reading still work."""
    seed_users(sim, 3)
    refusing = RefuseSideloads(transport)
    connector = ZendeskConnector(settings_for(sim, page_size=2), app="helpdesk",
                                 transport=refusing, clock=clock, sleep=fake_sleep)
    async with connector:
        records = [r for p in await collect(connector) for r in p.records]
        read = await connector.read([r.app_record_id for r in records])
    assert 1 == refusing.refused
    assert 3 == len(records) == len(read)
    assert 3 + 3 == transport.paths().count(IDENTITIES)


# ---------------------------------------------------------------------------- reads and search


async def test_read_leaves_out_unknown_deleted_and_staff_users(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """read() returns live end users only; other ids are simply absent."""
    live, gone = seed_users(sim, 2)
    sim.delete_user(int(gone))

    records = await connector.read([live, gone, str(sim.owner_id), "999", "not-an-id"])

    assert [live] == [r.app_record_id for r in records]


async def test_read_asks_show_many_for_a_hundred_ids_at_a_time(
    sim: ZendeskSimulator, make_connector: MakeConnector, transport: RecordingTransport,
) -> None:
    """Reading 150 users takes two show_many calls."""
    ids = seed_users(sim, 150)
    async with make_connector(fetch_identities=False) as connector:
        records = await connector.read(ids)

    assert 150 == len(records)
    assert ["GET /api/v2/users/show_many"] * 2 == transport.paths()


async def test_search_by_email_finds_primary_and_secondary_addresses_but_never_staff(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """search_by_email matches a user's primary or extra address, case-insensitively."""
    rid = sim.add_user(name="Bo Ray", email="bo@example.com")
    sim.add_identity(rid, "email", "bo.work@example.com")

    by_primary = await connector.search_by_email("BO@example.com")
    by_secondary = await connector.search_by_email("bo.work@example.com")
    staff = await connector.search_by_email(sim.agent_email)
    nobody = await connector.search_by_email("nobody@example.com")

    assert [str(rid)] == [r.app_record_id for r in by_primary]
    assert [str(rid)] == [r.app_record_id for r in by_secondary]
    assert ([], []) == (staff, nobody)


# ---------------------------------------------------------------------------- creates


async def test_bulk_create_polls_the_job_and_maps_a_partial_failure(
    sim: ZendeskSimulator, connector: ZendeskConnector, transport: RecordingTransport,
    fake_sleep: FakeSleep,
) -> None:
    """create_or_update_many is polled with the injected sleep; each op gets its own outcome:
    created, matched by email, or refused."""
    existing = sim.add_user(name="Old Name", email="kept@example.com")
    ops = [
        WriteOp(key="new", op="create", fields={"email": "new@example.com", "first_name": "New",
                                                "last_name": "Person"}, idempotency_key="c1"),
        WriteOp(key="bad", op="create", fields={"email": "not-an-email", "first_name": "Bad"},
                idempotency_key="c2"),
        WriteOp(key="kept", op="create", fields={"email": "kept@example.com",
                                                 "first_name": "Kept"}, idempotency_key="c3"),
    ]

    outcomes = {o.key: o for o in await connector.write_many(ops)}

    assert isinstance(outcomes["bad"].error, RecordRejected)
    assert "Email" in str(outcomes["bad"].error)
    new_id = outcomes["new"].receipt.app_record_id  # type: ignore[union-attr]
    assert sim.find_user_id(email="new@example.com") == int(new_id)
    assert str(existing) == outcomes["kept"].receipt.app_record_id  # type: ignore[union-attr]
    assert "Kept" == user_of(sim, existing)["name"]
    assert ["POST /api/v2/users/create_or_update_many", "GET /api/v2/job_statuses/{id}",
            "GET /api/v2/job_statuses/{id}"] == transport.paths()[-3:]
    assert [1.0, 1.0] == fake_sleep.waits[-2:]  # job_poll_interval_s before each poll


async def test_a_bulk_job_that_never_finishes_is_transient(
    clock: ManualClock, fake_sleep: FakeSleep,
) -> None:
    """A job still working after job_timeout_s raises TransientError, so the batch is re-sent
    (upserts make that harmless)."""
    sim = ZendeskSimulator(clock=clock, job_polls=1000)
    connector = ZendeskConnector(
        settings_for(sim, job_poll_interval_s=1.0, job_timeout_s=5.0), app="helpdesk",
        transport=RecordingTransport(sim), clock=clock, sleep=fake_sleep)
    ops = [WriteOp(key=str(i), op="create", fields={"email": f"j{i}@example.org"},
                   idempotency_key=str(i)) for i in range(2)]
    async with connector:
        with pytest.raises(TransientError, match="unfinished"):
            await connector.create_many(ops)

    assert 5 == fake_sleep.waits.count(1.0)


async def test_bulk_imports_switched_off_fall_back_to_single_upserts(
    clock: ManualClock, fake_sleep: FakeSleep,
) -> None:
    """A 403 from create_or_update_many is not an auth failure: creates go one by one, and the
    bulk endpoint is not asked again."""
    sim = ZendeskSimulator(clock=clock, bulk_import_enabled=False)
    transport = RecordingTransport(sim)
    connector = ZendeskConnector(settings_for(sim), app="helpdesk", transport=transport,
                                 clock=clock, sleep=fake_sleep)
    batch = [[WriteOp(key=f"{b}{i}", op="create", fields={"email": f"b{b}{i}@example.org"},
                      idempotency_key=f"{b}{i}") for i in range(2)] for b in range(2)]
    async with connector:
        first = await connector.create_many(batch[0])
        second = await connector.create_many(batch[1])

    assert all(o.receipt is not None for o in first + second)
    assert 1 == transport.paths().count("POST /api/v2/users/create_or_update_many")
    assert 4 == transport.paths().count("POST /api/v2/users/create_or_update")


async def test_a_refused_create_names_the_field_and_is_sent_once(
    connector: ZendeskConnector, transport: RecordingTransport,
) -> None:
    """A 422 is RecordRejected naming the refused field (never its value), not retried."""
    await connector.create({"email": "first@example.org"}, idempotency_key="warm-up")
    before = len(transport.exchanges)

    with pytest.raises(RecordRejected, match=r"fields: email\)") as refused:
        await connector.create({"email": "bad@@example"}, idempotency_key="k")

    assert ["POST /api/v2/users/create_or_update"] == transport.paths()[before:]
    assert "bad@@" not in str(refused.value)


async def test_a_create_without_an_email_is_idempotent_by_its_key(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """A phone-only customer is created with the idempotency key as external_id, so a re-sent
    create finds the same user."""
    fields = {"phone": "+15550001111", "first_name": "Phone"}

    first = await connector.create(fields, idempotency_key="cust-1:helpdesk")
    again = await connector.create(fields, idempotency_key="cust-1:helpdesk")

    assert first.app_record_id == again.app_record_id
    assert "cust-1:helpdesk" == user_of(sim, int(first.app_record_id))["external_id"]


# ---------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Juan Carlos García", ("Juan Carlos", "García")), ("Madonna", ("Madonna", None)),
     (f"Ludwig van{NBSP}Beethoven", ("Ludwig", "van Beethoven")),
     (f"Mary{NBSP}Ann Smith", ("Mary Ann", "Smith")), ("  Ann   Lee ", ("Ann", "Lee")),
     ("ann@example.com", (None, None)), ("", (None, None))],
    ids=["last-space", "one-word", "no-break-space", "no-break-space-of-old-writes",
         "extra-spaces", "email-placeholder", "empty"],
)
def test_names_split_at_the_last_ordinary_space(name: str, expected: tuple[Any, Any]) -> None:
    """The read rule: split at the last space that is not a no-break space, as every one-field
    full name is; a placeholder name is no name."""
    assert expected == split_name(name, email="Ann@Example.com")


@pytest.mark.parametrize(
    ("first", "last"),
    [("Mary Ann", "Smith"), ("Ludwig", "van Beethoven"), ("Juan Carlos", "García Márquez"),
     ("Madonna", None), ("Ann", "Lee")],
    ids=["spaced-first", "spaced-last", "spaced-both", "first-only", "plain"],
)
def test_joined_names_split_back_to_the_same_parts(first: str, last: str | None) -> None:
    """Whatever is written reads back unchanged, so our own write is recognised as an echo."""
    assert (first, last) == split_name(join_name(first, last))


async def test_a_last_name_with_a_space_survives_the_round_trip(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """"Ludwig" / "van Beethoven" is written with a no-break space and reads back as written."""
    receipt = await connector.create({"email": "lvb@example.com", "first_name": "Ludwig",
                                      "last_name": "van Beethoven"}, idempotency_key="k")

    (record,) = await connector.read([receipt.app_record_id])

    assert f"Ludwig van{NBSP}Beethoven" == user_of(sim, int(receipt.app_record_id))["name"]
    assert ("Ludwig", "van Beethoven") == (record.fields["first_name"], record.fields["last_name"])


async def test_a_first_name_with_a_space_survives_the_round_trip(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """"Mary Ann" / "Smith" is written with plain spaces and reads back as written."""
    receipt = await connector.create({"email": "ma@example.com", "first_name": "Mary Ann",
                                      "last_name": "Smith"}, idempotency_key="k")

    (record,) = await connector.read([receipt.app_record_id])

    assert "Mary Ann Smith" == user_of(sim, int(receipt.app_record_id))["name"]
    assert ("Mary Ann", "Smith") == (record.fields["first_name"], record.fields["last_name"])


async def test_updating_one_name_part_keeps_the_other(
    sim: ZendeskSimulator, connector: ZendeskConnector, transport: RecordingTransport,
) -> None:
    """A last-name change reads the current name once (show_many) and keeps the first name."""
    rid = str(sim.add_user(name="Ann Lee", email="ann@example.com"))

    await connector.update(rid, {"last_name": "Lee-Park"})

    assert "Ann Lee-Park" == user_of(sim, int(rid))["name"]
    assert ["GET /api/v2/users/show_many", "PUT /api/v2/users/{id}"] == transport.paths()


async def test_a_customer_without_a_name_is_created_with_its_email_as_name(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """Zendesk needs a name: the email stands in, and reads back as no name at all."""
    receipt = await connector.create({"email": "noname@example.com"}, idempotency_key="k")

    (record,) = await connector.read([receipt.app_record_id])

    assert "noname@example.com" == user_of(sim, int(receipt.app_record_id))["name"]
    assert (None, None) == (record.fields["first_name"], record.fields["last_name"])


# ---------------------------------------------------------------------------- updates


async def test_an_email_change_is_refused_and_the_other_fields_are_written(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """Zendesk would add a second address instead of changing the primary one: the email is
    reported as refused, nothing is added, and the other fields are written."""
    rid = str(sim.add_user(name="Ann Lee", email="ann@example.com"))

    (outcome,) = await connector.update_many([WriteOp(
        key="u", op="update", app_record_id=rid,
        fields={"email": "ann.new@example.com", "tags": ["vip"]})])

    user = user_of(sim, rid)
    assert isinstance(outcome.error, RecordRejected)
    assert "email" in str(outcome.error)
    assert ("ann@example.com", ["vip"]) == (user["email"], user["tags"])
    assert sim.find_user_id(email="ann.new@example.com") is None


async def test_read_only_and_unknown_fields_are_refused_without_a_request(
    sim: ZendeskSimulator, connector: ZendeskConnector, transport: RecordingTransport,
) -> None:
    """Writing other_emails, role or a field Zendesk does not have is refused up front."""
    rid = seed_users(sim, 1)[0]

    for fields in ({"other_emails": ["x@example.org"]}, {"role": "admin"}, {"favourite": 1}):
        with pytest.raises(RecordRejected, match=next(iter(fields))):
            await connector.update(rid, fields)

    assert [] == transport.exchanges


async def test_custom_user_fields_and_tags_are_written(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """`user_fields.KEY` app fields update single custom fields, leaving the others."""
    rid = sim.add_user(name="Cy Dee", email="cy@example.com",
                       user_fields={"plan": "gold", "seats": 5})

    await connector.update(str(rid), {"user_fields.plan": "platinum", "tags": ["b", "a"]})
    (record,) = await connector.read([str(rid)])

    fields = record.fields
    assert ("platinum", 5, ["a", "b"]) == (
        fields["user_fields.plan"], fields["user_fields.seats"], fields["tags"])


async def test_updating_a_missing_user_is_record_gone(connector: ZendeskConnector) -> None:
    """A 404 on PUT is RecordGone, and so is an id Zendesk could never have issued."""
    with pytest.raises(RecordGone):
        await connector.update("6500000099999", {"tags": ["x"]})
    with pytest.raises(RecordGone):
        await connector.update("abc", {"tags": ["x"]})


# ---------------------------------------------------------------------------- staff


async def test_staff_are_never_written_to(
    sim: ZendeskSimulator, connector: ZendeskConnector, transport: RecordingTransport,
) -> None:
    """A create matching an admin's email, and updates or deletes of an admin, are refused
    before anything is sent to them."""
    owner = sim.get_user(sim.owner_id)

    with pytest.raises(RecordRejected, match="agent or admin"):
        await connector.create({"email": sim.agent_email.upper(), "first_name": "Evil"},
                               idempotency_key="k")
    (outcome,) = await connector.create_many([WriteOp(
        key="a", op="create", fields={"email": sim.agent_email}, idempotency_key="a")])
    await collect(connector)  # listing learns the owner's id
    with pytest.raises(RecordRejected):
        await connector.update(str(sim.owner_id), {"first_name": "Evil"})
    with pytest.raises(RecordRejected):
        await connector.delete(str(sim.owner_id))

    assert isinstance(outcome.error, RecordRejected)
    assert owner == sim.get_user(sim.owner_id)
    assert not [p for p in transport.paths() if p.split()[0] in ("POST", "PUT", "DELETE")]


async def test_an_upsert_landing_on_an_agents_second_address_is_not_linked(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """Known residual risk: only staff primary emails are checked, so an upsert by an agent's
    second address reaches the agent; the outcome is refused so no customer links to them."""
    agent = sim.add_user(name="Ag Ent", email="agent@example.com", role="agent")
    sim.add_identity(agent, "email", "agent.home@example.com")

    with pytest.raises(RecordRejected, match="not linked"):
        await connector.create({"email": "agent.home@example.com"}, idempotency_key="k1")
    outcomes = await connector.create_many([
        WriteOp(key=k, op="create", fields={"email": e}, idempotency_key=k)
        for k, e in (("a", "agent.home@example.com"), ("b", "fresh@example.com"))])

    assert isinstance(outcomes[0].error, RecordRejected)
    assert outcomes[1].receipt is not None


async def test_a_customer_promoted_to_agent_leaves_the_sync(
    sim: ZendeskSimulator, connector: ZendeskConnector, transport: RecordingTransport,
) -> None:
    """Once listed as an agent, a former end user is neither listed, read nor written."""
    (rid,) = seed_users(sim, 1)
    pages = await collect(connector)
    sim.edit_user(int(rid), role="agent")

    listed = [r for p in await collect(connector, pages[-1].cursor) for r in p.records]
    with pytest.raises(RecordRejected, match="agent or admin"):
        await connector.update(rid, {"tags": ["x"]})

    assert ([], []) == (listed, await connector.read([rid]))
    assert "PUT /api/v2/users/{id}" not in transport.paths()


async def test_a_failed_staff_lookup_is_not_blamed_on_the_record(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """A refused staff search stops the create as a ConnectorError, never as RecordRejected
    (which would dead-letter a record that did nothing wrong)."""
    sim.fail_next(1, 400, route="GET /api/v2/users/search")

    with pytest.raises(ConnectorError, match="agents and admins") as raised:
        await connector.create({"email": "fine@example.org"}, idempotency_key="k")

    assert not isinstance(raised.value, RecordRejected)


async def test_with_end_users_only_off_staff_are_listed_but_still_not_written(
    sim: ZendeskSimulator, make_connector: MakeConnector,
) -> None:
    """end_users_only = false lists the owner too; writes to it are still refused."""
    async with make_connector(end_users_only=False) as connector:
        ids = [r.app_record_id for p in await collect(connector) for r in p.records]
        with pytest.raises(RecordRejected):
            await connector.update(str(sim.owner_id), {"tags": ["x"]})

    assert [str(sim.owner_id)] == ids


# ---------------------------------------------------------------------------- auth and limits


async def test_check_passes_with_an_api_token_and_with_an_oauth_token(
    sim: ZendeskSimulator, make_connector: MakeConnector,
) -> None:
    """Both documented credentials are accepted; check() verifies the owner is an admin."""
    async with make_connector() as connector:
        await connector.check()
    async with make_connector(api_token=None, email=None,
                              oauth_token=SecretStr(sim.oauth_token or "")) as connector:
        await connector.check()


async def test_check_raises_auth_error_on_401_and_on_an_anonymous_answer(
    sim: ZendeskSimulator, connector: ZendeskConnector, clock: ManualClock, fake_sleep: FakeSleep,
) -> None:
    """A 401 is AuthError; so is a 200 for an anonymous caller (id null), which Zendesk gives
    to a request whose credentials it did not take."""
    sim.fail_next(1, 401)
    with pytest.raises(AuthError):
        await connector.check()

    class DropCredentials(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            del request.headers["authorization"]
            return await httpx.ASGITransport(app=sim.app).handle_async_request(request)

    anonymous = ZendeskConnector(settings_for(sim), app="helpdesk", transport=DropCredentials(),
                                 clock=clock, sleep=fake_sleep)
    async with anonymous:
        with pytest.raises(AuthError, match="anonymous"):
            await anonymous.check()


async def test_a_429_is_waited_out_for_its_retry_after(
    sim: ZendeskSimulator, connector: ZendeskConnector, transport: RecordingTransport,
    clock: ManualClock,
) -> None:
    """A 429 with Retry-After: 7 is retried after at least 7 seconds, and the read succeeds."""
    (rid,) = seed_users(sim, 1)
    sim.fail_next(1, 429, retry_after_s=7)
    started = clock()

    (record,) = await connector.read([rid])

    assert rid == record.app_record_id
    assert [429, 200] == transport.statuses[:2]
    assert clock() - started >= timedelta(seconds=7)


async def test_the_export_keeps_under_its_own_rate_limit(
    sim: ZendeskSimulator, make_connector: MakeConnector, transport: RecordingTransport,
    clock: ManualClock,
) -> None:
    """Paging 30 export pages keeps to the export's 10 per minute: the simulator, which
    enforces it, never answers 429, and the pass takes over two minutes of (manual) time."""
    seed_users(sim, 30)
    started = clock()
    async with make_connector(page_size=1, fetch_identities=False) as connector:
        pages = await collect(connector)

    assert 31 == len(pages)
    assert 429 not in transport.statuses
    assert clock() - started > timedelta(minutes=2)


# ---------------------------------------------------------------------------- webhooks


def _delivery(secret: str, body: bytes, timestamp: str) -> dict[str, str]:
    return {"X-Zendesk-Webhook-Signature": sign(secret, timestamp, body),
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp}


def test_the_computed_contract_example_verifies(sim: ZendeskSimulator) -> None:
    """The worked example of CONTRACTS.md verifies, with header names in any case."""
    at = datetime(2024, 4, 17, 17, 18, 20, tzinfo=UTC)
    connector = ZendeskConnector(settings_for(sim, webhook_secret=SecretStr("my_secret")),
                                 app="helpdesk", clock=lambda: at)
    body = b'{"type":"zen:event-type:user.created","account_id":1}'
    headers = {"x-zendesk-webhook-signature": "W3T6D+Nm4xmf/S1NjBOWlZsVAT8rWz1j6KmNHAJQlUs=",
               "X-ZENDESK-WEBHOOK-SIGNATURE-TIMESTAMP": "2024-04-17T17:18:10Z"}

    assert connector.verify_webhook(headers, body, url=WEBHOOK_URL)


@pytest.mark.parametrize(
    ("age", "timestamp", "accepted"),
    [(timedelta(seconds=299), None, True), (timedelta(seconds=301), None, False),
     (timedelta(seconds=-301), None, False), (timedelta(0), "unix", True),
     (timedelta(0), "yesterday-ish", False)],
    ids=["fresh", "stale", "from-the-future", "unix-seconds", "unreadable"],
)
def test_deliveries_older_or_newer_than_the_max_age_are_refused(
    sim: ZendeskSimulator, clock: ManualClock, age: timedelta, timestamp: str | None,
    accepted: bool,
) -> None:
    """Freshness is checked against webhook_max_age_s (300 s) on the injected clock."""
    connector = ZendeskConnector(settings_for(sim), app="helpdesk", clock=clock)
    signed_at = clock() - age
    text = {None: signed_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "unix": str(int(signed_at.timestamp()))}.get(timestamp, timestamp)
    body = b'{"type":"zen:event-type:user.created"}'

    assert accepted == connector.verify_webhook(_delivery(sim.webhook_secret, body, text), body)


def test_without_a_secret_nothing_verifies(sim: ZendeskSimulator, clock: ManualClock) -> None:
    """No webhook_secret: every delivery is refused, however it is signed."""
    connector = ZendeskConnector(settings_for(sim, webhook_secret=None), app="helpdesk",
                                 clock=clock)
    body = b"{}"
    stamp = clock().strftime("%Y-%m-%dT%H:%M:%SZ")

    assert not connector.verify_webhook(_delivery(sim.webhook_secret, body, stamp), body)


def _event(kind: str, user_id: str = "6500000000002", **extra: Any) -> bytes:
    event = {"type": f"zen:event-type:{kind}", "account_id": 1, "id": "e1",
             "time": "2026-03-02T09:00:00Z", "subject": f"zen:user:{user_id}",
             "detail": {"id": user_id, "role": "end-user"}, "event": {}, **extra}
    return json.dumps(event).encode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [(_event("user.created"), [("upsert", "6500000000002")]),
     (_event("user.name_changed"), [("upsert", "6500000000002")]),
     (_event("user.deleted"), [("delete", "6500000000002")]),
     (_event("user.active_changed", event={"current": False, "previous": True}),
      [("delete", "6500000000002")]),
     (_event("user.active_changed", event={"current": True, "previous": False}),
      [("upsert", "6500000000002")]),
     (_event("organization.created"), []),
     (_event("user.role_changed", detail={"id": "6500000000002", "role": "agent"}), [])],
    ids=["created", "changed", "deleted", "deactivated", "reactivated", "not-a-user", "staff"],
)
def test_user_events_become_changes_naming_the_user(
    connector: ZendeskConnector, body: bytes, expected: list[tuple[str, str]],
) -> None:
    """Thin events name the user only; deletes and deactivations are deletes."""
    changes = connector.parse_webhook(body)

    assert expected == [(c.kind, c.app_record_id) for c in changes]
    assert all(isinstance(c, Change) and c.record is None for c in changes)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"subject": "zen:user:1"}', b'{"type": 5}',
     _event("user.created", subject=None, detail={})],
    ids=["not-json", "a-list", "no-type", "typed-wrong", "no-user-id"],
)
def test_malformed_webhooks_are_a_connector_error(connector: ZendeskConnector,
                                                  body: bytes) -> None:
    """Bodies that are not Zendesk events raise ConnectorError, never a crash."""
    with pytest.raises(ConnectorError, match="malformed webhook"):
        connector.parse_webhook(body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [(_event("user.created", "-5"), "detail.id: not an id"),
     (_event("user.created", "0"), "detail.id: greater_than"),
     (_event("user.created", "6500000000002", detail={"id": 6500000000002.0}), "detail.id"),
     (_event("user.created", str(2**64 + 1)), "detail.id"),
     (_event("user.created", "\u0661\u0662"), "detail.id: not an id"),
     (_event("user.created", subject=None, detail={"id": None}), "names no user id"),
     (_event("user.created", subject=f"zen:user:{2**64}", detail={}), "names no user id"),
     (_event("user.created", time="9999-12-31T23:59:59-14:00"), "time: time out of range"),
     (_event("user.created", time="0001-01-01T00:00:00+14:00"), "time: time out of range"),
     (_event("user.created", time="2026-02-30T00:00:00Z"), "time: datetime"),
     (_event("user.created", time=10**18), "time: datetime"),
     (_event("user.created").replace(b'"event": {}', b'"event": {"current": 1e400}'), "float"),
     (_event("user.created").replace(b'"account_id": 1', f'"account_id": {2**64 + 1}'.encode()),
      "64 bits"),
     (_event("user.created").replace(b'"event": {}', b'"event": ' + b"[" * 5000 + b"]" * 5000),
      "nested deeper"),
     (_event("user.created").replace(b'"event": {}', b'"event": NaN'), "not JSON"),
     (b'{"type": "zen:event-type:user.created\xff"}', "not JSON")],
    ids=["negative-id", "zero-id", "float-id", "id-2**64+1", "arabic-digits", "no-id",
         "subject-id-2**64", "year-9999", "year-1", "no-such-day", "time-huge-number",
         "1e400", "int-2**64+1", "deep-nesting", "nan", "not-utf8"],
)
def test_out_of_bounds_webhooks_are_refused(connector: ZendeskConnector, body: bytes,
                                             reason: str) -> None:
    """Signed junk (ids that are not positive 64-bit integers, times out of range, huge or
    non-finite numbers, deep nesting, bytes that are not UTF-8) is a WebhookRefused naming the
    problem, never another exception."""
    with pytest.raises(WebhookRefused, match=reason):
        connector.parse_webhook(body)


# ---------------------------------------------------------------------------- privacy, settings


async def test_personal_data_never_reaches_logs_or_error_messages(
    sim: ZendeskSimulator, connector: ZendeskConnector,
) -> None:
    """A sentinel email, listed, read, searched, written and refused, appears in no log line
    and in no error message."""
    bad = SENTINEL.replace(".org", "")  # a dotless domain: refused, and not email-shaped
    with structlog.testing.capture_logs() as logs:
        rid = sim.add_user(name="Sentinel Person", email=SENTINEL)
        sim.add_identity(rid, "email", "other." + SENTINEL)
        await collect(connector)
        await connector.read([str(rid)])
        await connector.search_by_email(SENTINEL)
        await connector.update(str(rid), {"first_name": "Changed"})
        outcomes = await connector.create_many([
            WriteOp(key=k, op="create", fields={"email": e}, idempotency_key=k)
            for k, e in (("bad", bad), ("ok", "x." + SENTINEL))])
        sim.fail_next(1, 503, retry_after_s=0)
        await connector.read([str(rid)])

    errors = [str(o.error) for o in outcomes if o.error is not None]
    assert 1 == len(errors)
    assert {"app.page_fetched", "http.request_finished", "http.retry_scheduled"} <= {
        line["event"] for line in logs}
    assert "sentinel" not in repr(logs) + " ".join(errors)


def test_settings_need_exactly_one_credential_and_an_account_root() -> None:
    """Settings errors name the problem; secrets never show in the settings' repr."""
    base = {"base_url": "https://acme.zendesk.com", "email": "a@acme.test"}
    ok = ZendeskSettings.model_validate({**base, "api_token": "tok-123456789"})

    for bad in ({**base}, {**base, "api_token": "t", "oauth_token": "o"},
                {"base_url": base["base_url"], "api_token": "t"},
                {**base, "api_token": "t", "base_url": "https://acme.zendesk.com/api/v2"},
                {**base, "api_token": "t", "page_size": 1001}):
        with pytest.raises(ValidationError):
            ZendeskSettings.model_validate(bad)
    assert "tok-123456789" not in repr(ok)
    assert "https://acme.zendesk.com" == ok.base_url


def test_the_connector_is_registered_by_entry_point() -> None:
    """`connector = "zendesk"` in config.toml finds this class through the registry."""
    from customer_sync.sdk.registry import load_connector

    assert ZendeskConnector is load_connector("zendesk")
