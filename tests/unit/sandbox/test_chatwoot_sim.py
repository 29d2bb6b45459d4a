"""Behaviour of the Chatwoot simulator that the contract tests do not show: which writes send
a webhook and what it carries, what the API refuses that a channel may store, and uniqueness.

Every test drives the simulator over HTTP in-process; none sleeps.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from customer_sync.sandbox.chatwoot import ChatwootSimulator

ROOT = "/api/v1/accounts/1"


@pytest.fixture
def sim() -> ChatwootSimulator:
    return ChatwootSimulator(webhook_url="https://sync.example.org/webhooks/inbox")


@pytest.fixture
async def api(sim: ChatwootSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=sim.app),
                                 base_url="https://app.chatwoot.com",
                                 headers={"api_access_token": sim.api_access_token}) as client:
        yield client


async def test_an_update_that_changes_nothing_sends_no_webhook(
        api: httpx.AsyncClient, sim: ChatwootSimulator) -> None:
    """Chatwoot sends contact_updated only with changed attributes, and names them."""
    contact_id = sim.add_contact(name="Ann", email="ann@example.org")
    await api.put(f"{ROOT}/contacts/{contact_id}", json={"name": "Ann"})
    await api.put(f"{ROOT}/contacts/{contact_id}", json={"name": "Ann Lee"})

    events = [(e["event"], e.get("changed_attributes")) for e in sim.pending_webhooks]

    assert [("contact_created", None),
            ("contact_updated", [{"name": {"previous_value": "Ann", "current_value": "Ann Lee"}}])
            ] == events
    assert {"account", "email", "id", "identifier", "name", "phone_number",
            "custom_attributes", "additional_attributes"} <= set(sim.pending_webhooks[-1])


async def test_the_api_refuses_a_phone_a_channel_may_have_stored(
        api: httpx.AsyncClient, sim: ChatwootSimulator) -> None:
    """A phone in Persian digits is kept when a channel stored it, refused through the API; the
    model's check is not anchored at the start, so text before an E.164 number passes."""
    stored = sim.add_contact(name="Sara", phone_number="۰۹۱۲۷۶۵۴۳۲۱")
    refused = await api.post(f"{ROOT}/contacts", json={"name": "S", "phone_number": "۰۹۱۲۷۶۵۴۳۲۱"})
    loose = await api.post(f"{ROOT}/contacts", json={"name": "L", "phone_number": "tel +4915112345678"})

    assert "۰۹۱۲۷۶۵۴۳۲۱" == sim.contact(stored)["phone_number"]  # type: ignore[index]
    assert (422, ["phone_number"]) == (refused.status_code, refused.json()["attributes"])
    assert 200 == loose.status_code


async def test_email_phone_and_identifier_are_unique_per_account(
        api: httpx.AsyncClient, sim: ChatwootSimulator) -> None:
    """A second contact with a taken email (any case), phone or identifier is refused, and an
    update cannot take another contact's email either."""
    sim.add_contact(name="Ann", email="ann@example.org", phone_number="+4915112345678",
                    identifier="crm-1")
    other = sim.add_contact(name="Bob", email="bob@example.org")

    create = await api.post(f"{ROOT}/contacts", json={
        "name": "Dup", "email": "ANN@example.org", "phone_number": "+4915112345678",
        "identifier": "crm-1"})
    update = await api.put(f"{ROOT}/contacts/{other}", json={"email": "ann@example.org"})

    assert ["email", "identifier", "phone_number"] == sorted(create.json()["attributes"])
    assert (422, ["email"]) == (update.status_code, update.json()["attributes"])
    assert "bob@example.org" == sim.contact(other)["email"]  # type: ignore[index]
