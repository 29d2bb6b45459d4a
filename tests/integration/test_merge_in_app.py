"""`merge_in_app`: duplicates inside one app merged there with the app's own merge.

An email-less double import in HubSpot (two contacts seconds apart sharing a phone) joins one
customer (issue 14's contract); with `merge_in_app = true` on the HubSpot app, the daemon's loop
then merges the two contacts through HubSpot's merge endpoint (CONTRACTS.md §1, `POST
/crm/v3/objects/contacts/merge`), against the HubSpot simulator. Nothing is deleted anywhere else,
a lost answer does not make the merge fail, and a refused merge is parked for review, not retried.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from customer_sync.config import load_config
from customer_sync.errors import ConfigError
from customer_sync.store.tables import ChangeLogEntry, ConflictRow, LinkRow

from .test_vendor_e2e import START, Vendors, _losing

MERGE_ROUTE = "POST /crm/v3/objects/contacts/merge"


def seed_double_import(v: Vendors) -> tuple[str, str]:
    """Ida Moss imported twice into HubSpot without an email, and Jo Park once with one."""
    earlier = START - timedelta(days=1)
    first = v.hubspot.add_contact({"firstname": "Ida", "lastname": "Moss", "phone": "+14155550120"},
                                  updated_at=earlier)
    second = v.hubspot.add_contact({"firstname": "Ida", "lastname": "Moss", "phone": "+1 415 555 0120",
                                    "company": "Moss & Co"}, updated_at=earlier + timedelta(seconds=3))
    v.hubspot.add_contact({"email": "jo@example.com", "firstname": "Jo", "lastname": "Park"},
                          updated_at=earlier)
    return first, second


def links(v: Vendors, state: str) -> list[dict[str, Any]]:
    return v.rows(LinkRow, LinkRow.__table__.c.state == state)


async def test_a_double_import_is_merged_in_the_app_once_and_nothing_else_goes(store):
    v = Vendors(store, crm_options={"merge_in_app": True})
    first, second = seed_double_import(v)
    async with v.engine() as engine:
        summary = await engine.run_once()
        assert {} == summary.failed_apps
        v.later()
        quiet = await engine.run_once()

    # HubSpot holds one Ida: the survivor took the duplicate's company, as HubSpot's merge does
    ida = [cid for cid in v.hubspot.contact_ids()
           if (v.hubspot.get_contact(cid) or {})["properties"].get("firstname") == "Ida"]
    assert 1 == len(ida)
    survivor = v.hubspot.get_contact(ida[0])
    assert survivor is not None
    assert {first, second} - {ida[0]} <= set(survivor["properties"]["hs_merged_object_ids"].split(";"))
    assert "Moss & Co" == survivor["properties"]["company"]
    # one customer, linked once per app; no duplicate link left, nothing deleted in Zendesk
    idas = [c for c in v.customers() if c["values"].get("first_name") == "Ida"]
    assert 1 == len(idas)
    assert [] == links(v, "duplicate")
    crm = [lk for lk in v.active_links() if lk["customer_id"] == idas[0]["customer_id"] and lk["app"] == "crm"]
    assert [ida[0]] == [lk["app_record_id"] for lk in crm]
    assert 2 == v.end_users()  # Ida and Jo, each once
    assert 0 == v.hubspot.count_by_route.get("POST /crm/v3/objects/contacts/batch/archive", 0)
    # the change log says what was merged, and the round after is quiet
    logged = v.rows(ChangeLogEntry, ChangeLogEntry.__table__.c.customer_id == idas[0]["customer_id"])
    assert any("merge_in_app" in (row["reason"] or "") for row in logged)
    assert 1 == v.hubspot.count_by_route[MERGE_ROUTE]
    assert 0 == quiet.dispatch.written + quiet.dispatch.created + quiet.dispatch.merged


async def test_without_merge_in_app_the_duplicate_stays_linked_for_review(store):
    v = Vendors(store)
    seed_double_import(v)
    async with v.engine() as engine:
        await engine.run_once()
    assert 3 == len(v.hubspot.contact_ids())
    assert 1 == len(links(v, "duplicate"))
    assert 0 == v.hubspot.count_by_route.get(MERGE_ROUTE, 0)


async def test_a_merge_whose_answer_was_lost_is_asked_again_and_ends_done(store):
    v = Vendors(store, crm_options={"merge_in_app": True})
    seed_double_import(v)
    v.hubspot_http = _losing(v.hubspot_http, MERGE_ROUTE, 1)  # type: ignore[assignment]
    async with v.engine() as engine:
        await engine.run_once()
        v.later()
        await engine.run_once()
    assert 1 == len(v.hubspot_http.lost)  # type: ignore[attr-defined]
    assert 2 == len(v.hubspot.contact_ids())  # Ida once, Jo
    assert [] == links(v, "duplicate")
    assert [] == v.rows(ConflictRow, ConflictRow.__table__.c.kind == "merge")


async def test_a_refused_merge_is_parked_for_review_and_not_asked_again(store):
    v = Vendors(store, crm_options={"merge_in_app": True})
    seed_double_import(v)
    v.hubspot.fail_next(1, 400, route=MERGE_ROUTE)
    async with v.engine() as engine:
        await engine.run_once()
        v.later()
        await engine.run_once()
    assert 1 == v.hubspot.count_by_route[MERGE_ROUTE]
    assert 3 == len(v.hubspot.contact_ids())
    (dup,) = links(v, "duplicate")
    (parked,) = v.rows(ConflictRow, ConflictRow.__table__.c.kind == "merge")
    assert ("parked", dup["app_record_id"], "merge_refused") == (
        parked["status"], parked["app_record_id"], parked["detail"]["reason"])


async def test_a_zendesk_double_import_is_merged_there(store):
    """Zendesk's MergeEndUsers (CONTRACTS.md §2): the duplicate end user is merged into the
    customer's user, which keeps its id; HubSpot gets Ida once."""
    v = Vendors(store, desk_options={"merge_in_app": True})
    earlier = START - timedelta(days=1)
    kept = v.zendesk.add_user(name="Ida Moss", phone="+14155550120", updated_at=earlier)
    twin = v.zendesk.add_user(name="Ida Moss", phone="+1 (415) 555-0120",
                              updated_at=earlier + timedelta(seconds=3))
    async with v.engine() as engine:
        await engine.run_once()
        v.later()
        await engine.run_once()
    assert (True, False) == ((v.zendesk.get_user(kept) or {})["active"], (v.zendesk.get_user(twin) or {})["active"])
    assert 1 == len(v.hubspot.contact_ids())
    assert [] == links(v, "duplicate")
    (customer,) = v.customers()
    desk = [lk for lk in v.active_links() if lk["app"] == "desk"]
    assert [(customer["customer_id"], str(kept))] == [(lk["customer_id"], lk["app_record_id"]) for lk in desk]


def test_merge_in_app_is_refused_for_a_connector_that_cannot_merge():
    data = {"daemon": {"store_url": "sqlite://"},
            "apps": {"db": {"connector": "sql", "merge_in_app": True,
                            "settings": {"url": "sqlite://", "table": "customers"}}}}
    with pytest.raises(ConfigError) as info:
        load_config(data=data, env={})
    assert any("apps.db.merge_in_app" in p for p in info.value.problems)
