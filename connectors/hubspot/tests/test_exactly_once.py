"""Creates HubSpot carried out but whose answers were lost make one contact each, and emails are
looked up without the search index.

The incident behind these tests: a batch/create of 30 contacts without an email whose answer
was lost was sent four times and made 120 contacts. Here the simulator carries each write out
and `LostAnswerTransport` then drops the answer (a read timeout, or the connection closing
before the answer), the connector raises `TransientError`, and the same writes are sent again
as the engine sends them, with `uncertain_since` set. Requests are counted by route, and the
rate limiters and retries sleep on the portal's manual clock, so nothing waits.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from customer_sync.sdk import ConfigError, RecordRejected, TransientError, WriteOp, WriteOutcome
from customer_sync.testing.conformance import LostAnswerTransport
from customer_sync_connectors.hubspot import HubSpotConnector, HubSpotSettings

from .test_hubspot import (  # noqa: TID252
    CONTACTS,
    START,
    TOKEN,
    Portal,
    _openapi,
    _spec_or_skip,
    _SpecRequest,
)

KEY = "customer_sync_id"
CREATE, UPSERT, UPDATE = (f"POST {CONTACTS}/batch/{a}" for a in ("create", "upsert", "update"))
SEARCH, READ = f"POST {CONTACTS}/search", f"POST {CONTACTS}/batch/read"
WRITES = ("/batch/create", "/batch/upsert", "/batch/update")
LOST_ERRORS = [httpx.ReadTimeout, httpx.RemoteProtocolError]


def emailless(n: int) -> list[WriteOp]:
    """`n` creates of customers without an email, told apart by name and phone, each with
    the key the engine derives from (customer, app)."""
    return [
        WriteOp(
            key=f"row-{i}",
            op="create",
            fields={"firstname": f"Anon{i}", "lastname": "Walk-in", "phone": f"+1415555{i:04d}"},
            idempotency_key=f"customer-{i}:crm",
        )
        for i in range(n)
    ]


def uncertain(ops: list[WriteOp]) -> list[WriteOp]:
    """The same writes as the engine sends them again: possibly sent already, decided at START."""
    return [op.model_copy(update={"uncertain_since": START}) for op in ops]


@pytest.fixture
def portal() -> Portal:
    return Portal()


def portal_for(id_property: str | None) -> Portal:
    return Portal(unique_properties=[KEY] if id_property else [])


def sent_routes(portal: Portal) -> Counter[str]:
    return Counter(portal.transport.paths())


def assert_one_contact_each(
    portal: Portal, ops: list[WriteOp], outcomes: list[WriteOutcome]
) -> None:
    """Exactly one live contact per create, the one its receipt names, holding its values."""
    by_key = {o.key: o for o in outcomes}
    assert len(ops) == len(portal.sim.contact_ids())
    for op in ops:
        receipt = by_key[op.key].receipt
        assert receipt is not None, by_key[op.key].error
        stored = portal.sim.get_contact(receipt.app_record_id)
        assert stored is not None and not stored["archived"]
        assert op.fields.items() <= stored["properties"].items()
    receipts = [by_key[op.key].receipt for op in ops]
    assert len(ops) == len({r.app_record_id for r in receipts if r is not None})


# --------------------------------------------------------------------------- a lost answer


@pytest.mark.parametrize("lost_as", LOST_ERRORS, ids=["read-timeout", "connection-closed"])
@pytest.mark.parametrize("id_property", [KEY, None], ids=["id-property", "search-fallback"])
async def test_thirty_creates_whose_answer_was_lost_make_thirty_contacts(
    id_property: str | None, lost_as: type[httpx.TransportError]
) -> None:
    """The incident, replayed: HubSpot makes the 30 contacts but the answer is lost, the
    connector raises TransientError having sent batch/create once (the retry policy never
    re-sends a create it cannot prove unsent), and the same 30 writes sent again with
    `uncertain_since` answer with those 30 contacts: no second contact for anyone.

    With `id_property` the writes are upserts keyed by the engine's key, which the retry
    policy may re-send (each update of the same contact) and the re-send simply updates. Without
    it the re-send finds each contact through search, one search per write."""
    portal = portal_for(id_property)
    losing = LostAnswerTransport(portal.transport, error=lost_as)
    losing.lose(None, when=lambda r: r.url.path.endswith(WRITES))
    ops = emailless(30)
    async with portal.connector(transport=losing, id_property=id_property) as connector:
        with pytest.raises(TransientError):
            await connector.create_many(ops)
        made = portal.sim.contact_ids()
        first = sent_routes(portal)
        losing.heal()
        outcomes = await connector.create_many(uncertain(ops))
    assert 30 == len(made), "HubSpot carried out the first send"
    assert_one_contact_each(portal, ops, outcomes)
    assert made == portal.sim.contact_ids()
    resent = sent_routes(portal) - first
    if id_property:
        # six attempts (the retry policy's limit), every one an upsert of the same 30 contacts
        assert ({UPSERT: 6}, {UPSERT: 1}) == (first, resent)
        assert sorted(f"customer-{i}:crm" for i in range(30)) == sorted(
            (portal.sim.get_contact(i) or {})["properties"][KEY] for i in made
        )
    else:
        assert ({CREATE: 1}, {SEARCH: 30, UPDATE: 1}) == (first, resent)


@pytest.mark.parametrize("id_property", [KEY, None], ids=["id-property", "search-fallback"])
async def test_an_answer_lost_four_times_in_a_row_still_makes_one_contact_each(
    id_property: str | None,
) -> None:
    """The same 30 writes sent four times by the engine, every answer lost (the retry policy's
    own re-sends included), then a fifth time answered: 30 contacts, none made twice, and
    batch/create sent once in all. Costs: with `id_property` only upserts (6 per lost send);
    without it 30 searches per uncertain send, at HubSpot's 4 searches a second."""
    portal = portal_for(id_property)
    losing = LostAnswerTransport(portal.transport)
    losing.lose(None, when=lambda r: r.url.path.endswith(WRITES))
    ops = emailless(30)
    async with portal.connector(transport=losing, id_property=id_property) as connector:
        for attempt in range(4):
            with pytest.raises(TransientError):
                await connector.create_many(ops if attempt == 0 else uncertain(ops))
            assert 30 == len(portal.sim.contact_ids()), f"after send {attempt + 1}"
        losing.heal()
        started = portal.clock.now
        outcomes = await connector.create_many(uncertain(ops))
        last_send_s = (portal.clock.now - started).total_seconds()
    assert_one_contact_each(portal, ops, outcomes)
    routes = sent_routes(portal)
    if id_property:
        assert {UPSERT: 4 * 6 + 1} == routes
        assert 0 == last_send_s
    else:
        assert {CREATE: 1, SEARCH: 4 * 30, UPDATE: 3 * 6 + 1} == routes
        assert 7 <= last_send_s  # 30 searches at 4 a second


async def test_look_alike_creates_each_find_their_own_contact() -> None:
    """Five creates holding the same values, whose batch/create answer was lost, are not all
    taken for the oldest look-alike when sent again: each finds a contact of its own."""
    portal = Portal()
    losing = LostAnswerTransport(portal.transport)
    losing.lose(1, when=lambda r: r.url.path.endswith("/batch/create"))
    ops = [
        WriteOp(key=f"row-{i}", op="create", fields={"firstname": "Anon"},
                idempotency_key=f"customer-{i}:crm")
        for i in range(5)
    ]
    async with portal.connector(transport=losing) as connector:
        with pytest.raises(TransientError):
            await connector.create_many(ops)
        outcomes = await connector.create_many(uncertain(ops))
    assert_one_contact_each(portal, ops, outcomes)


# --------------------------------------------------------------------------- id_property


async def test_with_an_id_property_creates_without_an_email_hold_the_key() -> None:
    """With `id_property`, a create without an email is an upsert keyed by the engine's key,
    which the contact then holds; one with an email is still an upsert by email; a value the
    field map gives the property itself is used as the key."""
    portal = Portal(unique_properties=[KEY])
    ops = [
        WriteOp(key="a", op="create", fields={"firstname": "A"}, idempotency_key="cust-a:crm"),
        WriteOp(key="b", op="create", fields={"email": "b@example.org"}, idempotency_key="k-b"),
        WriteOp(key="c", op="create", fields={"firstname": "C", KEY: "own-c"},
                idempotency_key="cust-c:crm"),
    ]
    async with portal.connector(id_property=KEY) as connector:
        outcomes = {o.key: o.receipt for o in await connector.create_many(ops)}
    stored = {
        k: (portal.sim.get_contact(r.app_record_id) or {})["properties"]
        for k, r in outcomes.items()
        if r is not None
    }
    assert ("cust-a:crm", "own-c") == (stored["a"][KEY], stored["c"][KEY])
    assert KEY not in stored["b"]
    assert [UPSERT, UPSERT] == portal.transport.paths()
    bodies = [json.loads(r.content) for r in portal.transport.requests]
    assert [["email"], [KEY, KEY]] == [[i["idProperty"] for i in b["inputs"]] for b in bodies]


async def test_check_passes_when_the_portal_has_the_id_property() -> None:
    """check() reads a contact by `id_property`; HubSpot takes a unique property as
    idProperty, and no contact needs to hold the value read (a 404 passes)."""
    portal = Portal(unique_properties=[KEY])
    async with portal.connector(id_property=KEY) as connector:
        await connector.check()
    assert [f"GET {CONTACTS}", f"GET {CONTACTS}/customer-sync-check"] == portal.transport.paths()


async def test_check_fails_with_a_config_error_when_the_property_is_missing(
    portal: Portal,
) -> None:
    """A portal without the property refuses it as idProperty (400 here; HubSpot's answer is
    UNVERIFIED), and check() names the setting and the operator's step."""
    async with portal.connector(id_property=KEY) as connector:
        with pytest.raises(ConfigError, match="unique values"):
            await connector.check()


@pytest.mark.parametrize("name", ["", "  ", "email", "hs_object_id", "two words"])
def test_settings_refuse_an_id_property_that_cannot_hold_the_key(name: str) -> None:
    """`id_property` must name a custom property: email and HubSpot's own ids are refused."""
    with pytest.raises(ValidationError):
        HubSpotSettings.model_validate({"access_token": TOKEN, "id_property": name})


def test_the_default_settings_leave_creates_without_an_email_unkeyed() -> None:
    """`id_property` is off unless the operator sets it: the portal must hold the property."""
    settings = HubSpotSettings.model_validate({"access_token": TOKEN})
    assert None is settings.id_property
    assert None is HubSpotConnector(settings, app="crm").settings.id_property


async def test_a_refused_write_keyed_by_id_property_fails_alone() -> None:
    """A batch of keyed upserts HubSpot refuses whole for one bad value is split until the bad
    write stands alone; the others are created."""
    portal = Portal(unique_properties=[KEY])
    ops = emailless(3)
    ops.insert(1, WriteOp(key="bad", op="create", fields={"firstname": "X", "no_such": "y"},
                          idempotency_key="customer-bad:crm"))
    async with portal.connector(id_property=KEY) as connector:
        outcomes = {o.key: o for o in await connector.create_many(ops)}
    assert isinstance(outcomes.pop("bad").error, RecordRejected)
    assert_one_contact_each(portal, ops[:1] + ops[2:], list(outcomes.values()))


# --------------------------------------------------------------------------- search_by_emails


async def test_search_by_emails_reads_by_email_in_one_request_per_hundred(portal: Portal) -> None:
    """250 emails (in any case, some twice) cost three batch/reads with idProperty=email and
    no search; each contact holding one comes back once."""
    ids = portal.seed(250)
    emails = [f"PERSON{i}@example.org" for i in range(250)] + ["person0@example.org"]
    async with portal.connector() as connector:
        found = await connector.search_by_emails(emails)
    assert sorted(ids) == sorted(r.app_record_id for r in found)
    assert {READ: 3} == sent_routes(portal)
    bodies = [json.loads(r.content) for r in portal.transport.requests]
    assert [100, 100, 50] == [len(b["inputs"]) for b in bodies]
    assert {"email"} == {b["idProperty"] for b in bodies}


async def test_search_by_emails_leaves_out_the_missing_and_the_archived(portal: Portal) -> None:
    """A 207 naming the emails no contact holds is an answer, not an error: the found contacts
    come back, and an archived contact's email finds nothing (archived contacts are not read);
    none found at all is an empty list."""
    live, archived = portal.seed(2)
    portal.sim.archive(archived)
    async with portal.connector() as connector:
        mixed = await connector.search_by_emails(
            ["person0@example.org", "person1@example.org", "nobody@example.org"]
        )
        nothing = await connector.search_by_emails(["nobody@example.org"])
        empty = await connector.search_by_emails([])
    assert ([live], [], []) == ([r.app_record_id for r in mixed], nothing, empty)
    assert [207, 207] == portal.transport.statuses
    assert "person0@example.org" == mixed[0].fields["email"]


async def test_search_by_emails_finds_a_contact_created_a_moment_ago(portal: Portal) -> None:
    """batch/read reads the contact store, not the search index: a contact made by the
    previous write is found at once (search would need the index to have taken it in)."""
    async with portal.connector() as connector:
        (made,) = await connector.create_many(
            [WriteOp(key="k", op="create", fields={"email": "fresh@example.org"})]
        )
        (found,) = await connector.search_by_emails(["fresh@example.org"])
    assert made.receipt is not None and made.receipt.app_record_id == found.app_record_id


# --------------------------------------------------------------------------- the vendor contract


async def test_requests_of_keyed_creates_and_email_reads_are_operations_of_the_spec() -> None:
    """The probe of check(), upserts keyed by `id_property` and batch/read by email are
    valid operations of HubSpot's contacts v3 OpenAPI file."""
    openapi = _openapi(_spec_or_skip())
    portal = Portal(unique_properties=[KEY])
    portal.seed(2)
    async with portal.connector(id_property=KEY) as connector:
        await connector.check()
        await connector.create_many(emailless(2))
        await connector.search_by_emails(["person0@example.org", "nobody@example.org"])
    problems: dict[str, Any] = {}
    for request in portal.transport.requests:
        errors = list(openapi.iter_request_errors(_SpecRequest(request)))
        if errors:
            problems[f"{request.method} {request.url.path}"] = [str(e) for e in errors]
    assert {} == problems
    assert {f"GET {CONTACTS}", f"GET {CONTACTS}/customer-sync-check", UPSERT, READ} == set(
        portal.transport.paths()
    )
