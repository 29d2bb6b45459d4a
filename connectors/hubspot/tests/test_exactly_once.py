"""Creates HubSpot carried out but whose answers were lost make one contact each.

The incident behind these tests: a batch/create of 30 contacts without an email whose answer
was lost was sent four times and made 120 contacts. Here the simulator carries each write out
and `LostAnswerTransport` then drops the answer (a read timeout, or the connection closing
before the answer), the connector raises `TransientError`, and the same writes are sent again
as the engine sends them, with `uncertain_since` set. Requests are counted by route, and the
rate limiters and retries sleep on the portal's manual clock, so nothing waits.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from customer_sync.sdk import ConfigError, RecordRejected, TransientError, WriteOp, WriteOutcome
from customer_sync.testing.conformance import LostAnswerTransport
from customer_sync_connectors.hubspot import HubSpotConnector, HubSpotSettings

from .test_hubspot import CONTACTS, START, TOKEN, Portal  # noqa: TID252

KEY = "customer_sync_id"
UPSERT = f"POST {CONTACTS}/batch/upsert"


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
