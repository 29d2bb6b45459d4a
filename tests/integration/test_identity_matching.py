"""Defects 3 and 5 of the identity contract, through the engine (docs/matching.md).

3. Records that carry only a handle or a WhatsApp number match the customer whose email records
   hold it, instead of becoming new customers created as duplicates in every other app.
5. An email-less double import inside one app joins one customer, instead of being parked as an
   ambiguous match with a single candidate.
"""

from __future__ import annotations

from typing import Any

import pytest

FIELDS: dict[str, Any] = {
    "email": "email",
    "first_name": "first",
    "phone": "phone",
    "social.instagram": "ig",
    "social.whatsapp": "wa",
}


async def test_a_record_known_only_by_handle_or_whatsapp_joins_the_customer_holding_it(world):
    w = world(apps=("crm", "inbox"), fields=FIELDS)
    w.apps["crm"].put({"email": "sara@x.io", "first": "Sara", "ig": "sara.k", "wa": "+989121234567"})
    w.apps["crm"].put({"email": "omid@x.io", "first": "Omid", "phone": "+989351234567"})
    w.apps["inbox"].put({"first": "Sara", "ig": "@Sara.K"})  # the handle as typed, with @
    w.apps["inbox"].put({"first": "Omid", "wa": "00989351234567"})  # WhatsApp = his phone
    await w.run()
    assert 2 == len(w.customers())
    # nobody was created twice: the CRM still holds its two people, the inbox its two
    assert 2 == len(w.apps["crm"].live()) and 2 == len(w.apps["inbox"].live())
    assert {"crm": 2, "inbox": 2} == _active_links(w)
    assert [] == [c for c in w.conflicts() if c["kind"] == "match"]
    again = await w.run()
    assert 0 == again.dispatch.written


async def test_a_handle_pointing_to_one_customer_and_a_phone_to_another_is_parked(world):
    w = world(apps=("crm", "inbox"), fields=FIELDS)
    w.apps["crm"].put({"email": "sara@x.io", "ig": "sara.k"})
    w.apps["crm"].put({"email": "omid@x.io", "phone": "+989351234567"})
    rid = w.apps["inbox"].put({"ig": "sara.k", "wa": "+989351234567"})
    await w.run()
    (parked,) = [c for c in w.conflicts() if c["kind"] == "match"]
    assert ("inbox", rid, "parked", "phone_and_handle_disagree") == (
        parked["app"], parked["app_record_id"], parked["status"], parked["detail"]["reason"])
    assert 2 == len(w.apps["crm"].live()), "nothing is created for a parked record"


async def test_an_email_less_double_import_in_one_app_joins_one_customer(world):
    w = world(apps=("inbox", "crm"), fields=FIELDS)
    first = w.apps["inbox"].put({"first": "Reza", "wa": "+989121112233"})
    second = w.apps["inbox"].put({"first": "Reza", "wa": "+98 912 111 2233"})
    await w.run()
    (customer,) = w.customers()
    links = {lk["app_record_id"]: lk["state"] for lk in w.links() if lk["app"] == "inbox"}
    assert {first, second} == set(links) and ["active", "duplicate"] == sorted(links.values())
    (dup,) = [c for c in w.conflicts() if c["kind"] == "match"]
    assert ("decided", "duplicate_in_app") == (dup["status"], dup["detail"]["reason"])
    assert 1 == len(w.apps["crm"].live()), "created once in the other app, not once per record"
    assert 2 == len(w.apps["inbox"].live()), "the app's own duplicate is left for a person to merge"
    again = await w.run()
    assert 0 == again.dispatch.written


async def test_a_duplicate_deleted_without_a_trace_is_found_by_the_id_scan(world):
    """A hard delete of the duplicate (no tombstone) is seen by reconciliation's id scan: its
    link goes, and the customer and its record in every app stay."""
    w = world(apps=("inbox", "crm"), fields=FIELDS, app_options={"inbox": {"reconcile_interval_s": 60}})
    first = w.apps["inbox"].put({"first": "Reza", "wa": "+989121112233"})
    second = w.apps["inbox"].put({"first": "Reza", "wa": "+98 912 111 2233"})
    await w.run()
    (dup,) = [lk["app_record_id"] for lk in w.links() if lk["state"] == "duplicate"]
    del w.apps["inbox"].records[dup]  # gone from the table, no trace left
    await w.run(reconcile=True)
    assert {first, second} - {dup} == {lk["app_record_id"] for lk in w.links() if lk["app"] == "inbox"}
    assert 1 == len(w.customers()) and 1 == len(w.apps["crm"].live())
    assert any("duplicate deleted in inbox" == e["reason"] for e in w.changelog("deleted"))


def _active_links(w: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for lk in w.links():
        if lk["state"] == "active":
            out[lk["app"]] = out.get(lk["app"], 0) + 1
    return out


@pytest.mark.parametrize("apps", [("crm", "inbox"), ("inbox", "crm")])
async def test_normalize_in_apps_writes_the_normalized_form_back_and_is_off_by_default(world, apps):
    w = world(apps=apps, fields=FIELDS, app_options={"crm": {"normalize_in_apps": True}})
    crm = w.apps["crm"].put({"email": "Nima@X.io", "phone": "+98 912 123 4567", "ig": "@Nima.R"})
    inbox = w.apps["inbox"].put({"email": "nima@x.io", "wa": "0098 912 765 4321", "ig": "@nima.r"})
    await w.run()
    assert {"email": "nima@x.io", "phone": "+989121234567", "ig": "nima.r"}.items() <= w.apps["crm"].live()[crm].items()
    assert "0098 912 765 4321" == w.apps["inbox"].live()[inbox]["wa"], "off by default: left as typed"
    assert "@nima.r" == w.apps["inbox"].live()[inbox]["ig"]
    again = await w.run()
    assert 0 == again.dispatch.written
