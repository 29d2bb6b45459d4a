"""Behaviour of the HubSpot contacts simulator: paging, search, batches, errors, rate limits,
merges, archives and signed webhooks, driven through its ASGI app with a manual clock."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from customer_sync.sandbox._common import ManualClock, epoch_ms, iso_from_ms, serve
from customer_sync.sandbox.hubspot import CONTACTS, HubSpotSimulator, sign_v1, sign_v3

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BASE = "https://api.hubapi.com"
AUTH = {"Authorization": "Bearer test-token"}
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def sim(clock: ManualClock) -> HubSpotSimulator:
    return HubSpotSimulator(clock=clock, rate_limit=None, search_rate_limit=None)


def client_for(sim: HubSpotSimulator, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=sim.app),
        base_url=BASE,
        headers=AUTH if headers is None else headers,
    )


@pytest.fixture
async def client(sim: HubSpotSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(sim) as http:
        yield http


def seed(
    sim: HubSpotSimulator, n: int, *, at: datetime | None = None, prefix: str = "user"
) -> list[str]:
    return [
        sim.add_contact({"email": f"{prefix}{i}@example.com", "firstname": f"F{i}"}, updated_at=at)
        for i in range(n)
    ]


def stored(sim: HubSpotSimulator, contact_id: str) -> dict[str, str]:
    """The stored properties of a contact that must exist."""
    contact = sim.get_contact(contact_id)
    assert contact is not None
    properties: dict[str, str] = contact["properties"]
    return properties


def search_body(
    *filters: dict[str, Any], limit: int = 100, after: str | None = None, sorts: Any = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "filterGroups": [{"filters": list(filters)}] if filters else [],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
        if sorts is None
        else sorts,
        "properties": ["email"],
        "limit": limit,
    }
    if after is not None:
        body["after"] = after
    return body


def modified(op: str, at: datetime) -> dict[str, str]:
    return {"propertyName": "lastmodifieddate", "operator": op, "value": str(epoch_ms(at))}


# --------------------------------------------------------------------------- list and read


async def test_list_pages_to_the_end(sim: HubSpotSimulator, client: httpx.AsyncClient) -> None:
    """Following paging.next.after visits every contact once and the last page has no next."""
    ids = seed(sim, 25)
    seen: list[str] = []
    pages = 0
    params: dict[str, Any] = {"limit": 10}
    while True:
        response = await client.get(CONTACTS, params=params)
        assert 200 == response.status_code
        data = response.json()
        seen += [r["id"] for r in data["results"]]
        pages += 1
        if "paging" not in data:
            break
        params = {"limit": 10, "after": data["paging"]["next"]["after"]}
    assert (ids, 3) == (seen, pages)


async def test_list_rejects_limit_over_page_cap(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """limit above 100 is a 400 (the cap itself is UNVERIFIED in CONTRACTS.md; it is an option)."""
    response = await client.get(CONTACTS, params={"limit": 101})
    assert (400, "VALIDATION_ERROR") == (response.status_code, response.json()["category"])


async def test_default_and_requested_properties(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """Without `properties` the defaults come back; with it, the named ones plus the always-returned three."""
    contact_id = sim.add_contact(
        {"email": "a@example.com", "firstname": "Ann", "phone": "+1 555 0100"}
    )
    default = (await client.get(f"{CONTACTS}/{contact_id}")).json()["properties"]
    named = (
        await client.get(f"{CONTACTS}/{contact_id}", params={"properties": "phone,city"})
    ).json()["properties"]
    assert {"createdate", "email", "firstname", "hs_object_id", "lastmodifieddate"} == set(default)
    assert {"createdate", "hs_object_id", "lastmodifieddate", "phone"} == set(named)


async def test_properties_with_history_newest_first_with_source(
    sim: HubSpotSimulator, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """History lists every value newest first, telling a person's edit from an API write."""
    contact_id = sim.add_contact({"email": "h@example.com", "firstname": "One"})
    clock.advance(1)
    sim.edit_contact(contact_id, {"firstname": "Two"})
    clock.advance(1)
    await client.patch(f"{CONTACTS}/{contact_id}", json={"properties": {"firstname": "Three"}})
    data = (
        await client.get(f"{CONTACTS}/{contact_id}", params={"propertiesWithHistory": "firstname"})
    ).json()
    history = data["propertiesWithHistory"]["firstname"]
    assert ["Three", "Two", "One"] == [h["value"] for h in history]
    assert ["INTEGRATION", "CRM_UI", "IMPORT"] == [h["sourceType"] for h in history]


async def test_read_by_email_id_property(sim: HubSpotSimulator, client: httpx.AsyncClient) -> None:
    """`idProperty=email` reads a contact by its email, case-insensitively."""
    contact_id = sim.add_contact({"email": "Mixed@Example.com"})
    response = await client.get(f"{CONTACTS}/mixed@example.com", params={"idProperty": "email"})
    assert (200, contact_id) == (response.status_code, response.json()["id"])


async def test_missing_id_is_404_with_error_body(client: httpx.AsyncClient) -> None:
    """An unknown id answers 404 with HubSpot's error body shape."""
    response = await client.get(f"{CONTACTS}/999999")
    body = response.json()
    assert (404, "error", "OBJECT_NOT_FOUND") == (
        response.status_code,
        body["status"],
        body["category"],
    )
    assert {"status", "message", "correlationId", "category"} <= set(body)


# --------------------------------------------------------------------------- writes


async def test_create_duplicate_email_is_409_naming_existing_id(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """Creating a contact with a taken email (any case) is a 409 CONFLICT naming the owner."""
    existing = sim.add_contact({"email": "dup@example.com"})
    response = await client.post(
        CONTACTS, json={"properties": {"email": "DUP@example.com"}, "associations": []}
    )
    body = response.json()
    assert (409, "CONFLICT") == (response.status_code, body["category"])
    assert f"Contact already exists. Existing ID: {existing}" == body["message"]


async def test_create_unknown_or_read_only_property_is_400(client: httpx.AsyncClient) -> None:
    """Unknown and read-only properties are rejected (batch/update description: "will result in an error")."""
    unknown = await client.post(CONTACTS, json={"properties": {"no_such_prop": "x"}})
    read_only = await client.post(CONTACTS, json={"properties": {"lastmodifieddate": "0"}})
    assert [400, 400] == [unknown.status_code, read_only.status_code]
    assert "PROPERTY_DOESNT_EXIST" in unknown.json()["message"]


async def test_custom_properties_are_writable(clock: ManualClock) -> None:
    """Names passed as custom_properties are accepted like standard ones."""
    sim = HubSpotSimulator(clock=clock, custom_properties=["loyalty_tier"])
    async with client_for(sim) as http:
        response = await http.post(CONTACTS, json={"properties": {"loyalty_tier": "gold"}})
    assert (201, "gold") == (
        response.status_code,
        stored(sim, response.json()["id"])["loyalty_tier"],
    )


async def test_lastmodifieddate_moves_on_every_write(
    sim: HubSpotSimulator, client: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Each write, even one that changes no value, moves updatedAt and lastmodifieddate to now."""
    contact_id = sim.add_contact({"email": "w@example.com", "firstname": "W"})
    clock.advance(5)
    same = (
        await client.patch(f"{CONTACTS}/{contact_id}", json={"properties": {"firstname": "W"}})
    ).json()
    clock.advance(5)
    sim.edit_contact(contact_id, {"lastname": "X"})
    after_edit = (await client.get(f"{CONTACTS}/{contact_id}")).json()
    assert "2026-03-01T12:00:05.000Z" == same["updatedAt"] == same["properties"]["lastmodifieddate"]
    assert (
        "2026-03-01T12:00:10.000Z"
        == after_edit["updatedAt"]
        == after_edit["properties"]["lastmodifieddate"]
    )


async def test_patch_by_email_and_clear_with_empty_string(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """PATCH with idProperty=email updates; an empty string clears a property."""
    contact_id = sim.add_contact({"email": "p@example.com", "phone": "123"})
    response = await client.patch(
        f"{CONTACTS}/p@example.com",
        params={"idProperty": "email"},
        json={"properties": {"phone": ""}},
    )
    assert 200 == response.status_code
    assert "phone" not in stored(sim, contact_id)


async def test_archive_hides_contact_until_archived_true(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """DELETE archives: the id 404s, and shows up (archived, with archivedAt) only with archived=true."""
    contact_id = sim.add_contact({"email": "gone@example.com"})
    deleted = await client.delete(f"{CONTACTS}/{contact_id}")
    plain = await client.get(f"{CONTACTS}/{contact_id}")
    archived = (await client.get(CONTACTS, params={"archived": "true"})).json()["results"]
    assert (204, 404) == (deleted.status_code, plain.status_code)
    assert [(contact_id, True)] == [(r["id"], r["archived"]) for r in archived]
    assert "archivedAt" in archived[0]


async def test_delete_of_unknown_id_is_204(client: httpx.AsyncClient) -> None:
    """Archiving is idempotent: an unknown id answers 204 (UNVERIFIED in CONTRACTS.md)."""
    assert 204 == (await client.delete(f"{CONTACTS}/424242")).status_code


async def test_gdpr_delete_of_unknown_email_blocklists_it(client: httpx.AsyncClient) -> None:
    """gdpr-delete of an unknown email blocklists it, so it cannot be used afterwards (spec)."""
    purge = await client.post(
        f"{CONTACTS}/gdpr-delete", json={"objectId": "erased@example.com", "idProperty": "email"}
    )
    create = await client.post(CONTACTS, json={"properties": {"email": "erased@example.com"}})
    assert (204, 400) == (purge.status_code, create.status_code)


# --------------------------------------------------------------------------- batches


async def test_batch_read_partial_failure_is_207(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """A batch read naming a missing id returns the found ones and a 207 error listing the missing."""
    contact_id = sim.add_contact({"email": "r@example.com"})
    response = await client.post(
        f"{CONTACTS}/batch/read",
        json={
            "inputs": [{"id": contact_id}, {"id": "999999"}],
            "properties": ["email"],
            "propertiesWithHistory": [],
        },
    )
    body = response.json()
    assert (207, [contact_id], 1) == (
        response.status_code,
        [r["id"] for r in body["results"]],
        body["numErrors"],
    )
    assert ("OBJECT_NOT_FOUND", {"ids": ["999999"]}) == (
        body["errors"][0]["category"],
        body["errors"][0]["context"],
    )


async def test_batch_read_by_email(sim: HubSpotSimulator, client: httpx.AsyncClient) -> None:
    """Batch read with idProperty=email takes emails as ids; all found is a plain 200."""
    ids = seed(sim, 2)
    response = await client.post(
        f"{CONTACTS}/batch/read",
        json={
            "inputs": [{"id": "user0@example.com"}, {"id": "user1@example.com"}],
            "idProperty": "email",
            "properties": [],
            "propertiesWithHistory": ["email"],
        },
    )
    assert (200, ids) == (response.status_code, [r["id"] for r in response.json()["results"]])
    assert "propertiesWithHistory" in response.json()["results"][0]


async def test_batch_update_partial_failure_is_207(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """batch/update applies the good inputs and reports a missing id as a 207 error."""
    contact_id = sim.add_contact({"email": "u@example.com"})
    response = await client.post(
        f"{CONTACTS}/batch/update",
        json={
            "inputs": [
                {"id": contact_id, "properties": {"city": "Oslo"}},
                {"id": "999999", "properties": {"city": "X"}},
            ]
        },
    )
    assert (207, "Oslo") == (response.status_code, stored(sim, contact_id)["city"])
    assert ["999999"] == response.json()["errors"][0]["context"]["ids"]


async def test_batch_create_duplicate_is_per_item_conflict(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """batch/create creates the new contacts and reports a taken email as a CONFLICT item (207)."""
    existing = sim.add_contact({"email": "taken@example.com"})
    response = await client.post(
        f"{CONTACTS}/batch/create",
        json={
            "inputs": [
                {"properties": {"email": "new@example.com"}, "associations": []},
                {"properties": {"email": "taken@example.com"}, "associations": []},
            ]
        },
    )
    body = response.json()
    assert (207, 1, "CONFLICT") == (
        response.status_code,
        len(body["results"]),
        body["errors"][0]["category"],
    )
    assert [existing] == body["errors"][0]["context"]["existingId"]
    assert 2 == len(sim.contact_ids())


async def test_batch_create_all_new_is_201(client: httpx.AsyncClient) -> None:
    """A fully successful batch/create answers 201, as the spec documents."""
    response = await client.post(
        f"{CONTACTS}/batch/create",
        json={"inputs": [{"properties": {"email": "c@example.com"}, "associations": []}]},
    )
    assert (201, "COMPLETE") == (response.status_code, response.json()["status"])


async def test_batch_upsert_by_email_flags_new(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """Upsert by email updates the existing contact (new: false) and creates the other (new: true)."""
    existing = sim.add_contact({"email": "old@example.com"})
    response = await client.post(
        f"{CONTACTS}/batch/upsert",
        json={
            "inputs": [
                {
                    "id": "old@example.com",
                    "idProperty": "email",
                    "properties": {"firstname": "Old"},
                },
                {
                    "id": "fresh@example.com",
                    "idProperty": "email",
                    "properties": {"firstname": "Fresh"},
                },
            ]
        },
    )
    results = response.json()["results"]
    assert 200 == response.status_code
    assert [(existing, False), (results[1]["id"], True)] == [(r["id"], r["new"]) for r in results]
    assert "fresh@example.com" == stored(sim, results[1]["id"])["email"]


async def test_batch_update_rejects_duplicate_ids(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """The same id twice in one batch/update fails the whole batch with a 400."""
    contact_id = sim.add_contact({"email": "d@example.com"})
    inputs = [{"id": contact_id, "properties": {}}, {"id": contact_id, "properties": {}}]
    assert (
        400 == (await client.post(f"{CONTACTS}/batch/update", json={"inputs": inputs})).status_code
    )


async def test_batch_over_cap_is_400(client: httpx.AsyncClient) -> None:
    """More than 100 inputs in a batch is rejected (the 100 is UNVERIFIED; it is an option)."""
    inputs = [{"id": str(i)} for i in range(101)]
    assert (
        400 == (await client.post(f"{CONTACTS}/batch/archive", json={"inputs": inputs})).status_code
    )


async def test_batch_archive(sim: HubSpotSimulator, client: httpx.AsyncClient) -> None:
    """batch/archive archives the named contacts and answers 204."""
    ids = seed(sim, 3)
    response = await client.post(
        f"{CONTACTS}/batch/archive", json={"inputs": [{"id": ids[0]}, {"id": ids[2]}]}
    )
    assert (204, [ids[1]], [ids[0], ids[2]]) == (
        response.status_code,
        sim.contact_ids(),
        sim.contact_ids(archived=True),
    )


# --------------------------------------------------------------------------- search


async def test_search_gte_includes_equal_timestamps_in_id_order(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """GTE on lastmodifieddate keeps every contact at the boundary time; ties sort by id."""
    before = seed(sim, 1, at=T0 - timedelta(seconds=1), prefix="before")
    tied = seed(sim, 3, at=T0, prefix="tied")
    later = seed(sim, 1, at=T0 + timedelta(seconds=1), prefix="later")
    sim.edit_contact(tied[0], {})  # a write at T0 again: still tied, still first by id
    gte = (await client.post(f"{CONTACTS}/search", json=search_body(modified("GTE", T0)))).json()
    gt = (await client.post(f"{CONTACTS}/search", json=search_body(modified("GT", T0)))).json()
    eq = (await client.post(f"{CONTACTS}/search", json=search_body(modified("EQ", T0)))).json()
    lt = (await client.post(f"{CONTACTS}/search", json=search_body(modified("LT", T0)))).json()
    assert (tied + later, 4) == ([r["id"] for r in gte["results"]], gte["total"])
    assert later == [r["id"] for r in gt["results"]]
    assert tied == [r["id"] for r in eq["results"]]
    assert before == [r["id"] for r in lt["results"]]


async def test_search_sorts_by_lastmodifieddate(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """Results follow lastmodifieddate ascending or descending, in the object or the spec's string form."""
    late = sim.add_contact({"email": "late@example.com"}, updated_at=T0 + timedelta(minutes=5))
    early = sim.add_contact({"email": "early@example.com"}, updated_at=T0)
    asc = (
        await client.post(f"{CONTACTS}/search", json=search_body(sorts=["lastmodifieddate"]))
    ).json()
    desc = (
        await client.post(
            f"{CONTACTS}/search",
            json=search_body(
                sorts=[{"propertyName": "lastmodifieddate", "direction": "DESCENDING"}]
            ),
        )
    ).json()
    assert [early, late] == [r["id"] for r in asc["results"]]
    assert [late, early] == [r["id"] for r in desc["results"]]


async def test_search_pages_with_offset_cursor(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """Search paging via `after` walks all matches in order, then stops."""
    ids = seed(sim, 5, at=T0)
    seen: list[str] = []
    after = None
    while True:
        data = (
            await client.post(
                f"{CONTACTS}/search", json=search_body(modified("GTE", T0), limit=2, after=after)
            )
        ).json()
        seen += [r["id"] for r in data["results"]]
        if "paging" not in data:
            break
        after = data["paging"]["next"]["after"]
    assert ids == seen


async def test_search_by_email_eq(sim: HubSpotSimulator, client: httpx.AsyncClient) -> None:
    """An email EQ filter finds the one contact, ignoring case."""
    seed(sim, 3)
    target = sim.add_contact({"email": "Find.Me@example.com"})
    body = search_body({"propertyName": "email", "operator": "EQ", "value": "find.me@EXAMPLE.com"})
    data = (await client.post(f"{CONTACTS}/search", json=body)).json()
    assert ([target], 1) == ([r["id"] for r in data["results"]], data["total"])


async def test_search_or_of_filter_groups(sim: HubSpotSimulator, client: httpx.AsyncClient) -> None:
    """Filter groups are ORed; filters inside a group are ANDed."""
    a = sim.add_contact({"email": "a@example.com", "city": "Oslo"}, updated_at=T0)
    b = sim.add_contact({"email": "b@example.com", "city": "Rome"}, updated_at=T0)
    sim.add_contact({"email": "c@example.com", "city": "Oslo"}, updated_at=T0 - timedelta(days=1))
    body = search_body()
    body["filterGroups"] = [
        {
            "filters": [
                modified("GTE", T0),
                {"propertyName": "city", "operator": "EQ", "value": "oslo"},
            ]
        },
        {"filters": [{"propertyName": "email", "operator": "EQ", "value": "b@example.com"}]},
    ]
    data = (await client.post(f"{CONTACTS}/search", json=body)).json()
    assert [a, b] == [r["id"] for r in data["results"]]


async def test_search_stops_at_10000_results(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """Paging a search past 10,000 results is a 400; `total` counts all (cap UNVERIFIED in CONTRACTS)."""
    seed(sim, 10_050, at=T0)
    after: str | None = "9800"
    statuses = []
    data: dict[str, Any] = {}
    while after is not None:
        response = await client.post(
            f"{CONTACTS}/search", json=search_body(modified("GTE", T0), limit=200, after=after)
        )
        statuses.append(response.status_code)
        data = response.json()
        after = (
            data.get("paging", {}).get("next", {}).get("after")
            if response.status_code == 200
            else None
        )
    assert [200, 400] == statuses
    assert "VALIDATION_ERROR" == data["category"]
    first = (
        await client.post(f"{CONTACTS}/search", json=search_body(modified("GTE", T0), limit=1))
    ).json()
    assert 10_050 == first["total"]


async def test_search_limit_over_200_is_400(client: httpx.AsyncClient) -> None:
    """Search `limit` is "up to 200" (spec)."""
    assert 400 == (await client.post(f"{CONTACTS}/search", json=search_body(limit=201))).status_code


# --------------------------------------------------------------------------- merge


async def test_merge_removes_secondary_and_records_it(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """After a merge the secondary is gone from lists, its id is in hs_merged_object_ids, and its
    email is an additional email of the primary that still finds the primary."""
    primary = sim.add_contact({"email": "p@example.com", "firstname": "P"})
    secondary = sim.add_contact({"email": "s@example.com", "phone": "555"})
    assert primary == sim.merge(primary, secondary)
    listed = [r["id"] for r in (await client.get(CONTACTS)).json()["results"]]
    merged = (
        await client.get(
            f"{CONTACTS}/{primary}",
            params={"properties": "hs_merged_object_ids,hs_additional_emails,phone"},
        )
    ).json()
    by_old_email = await client.get(f"{CONTACTS}/s@example.com", params={"idProperty": "email"})
    assert [primary] == listed
    assert {
        "hs_merged_object_ids": secondary,
        "hs_additional_emails": "s@example.com",
        "phone": "555",
    }.items() <= merged["properties"].items()
    assert primary == by_old_email.json()["id"]


@pytest.mark.parametrize(
    ("resolve", "expected"), [(True, 200), (False, 404)], ids=["resolves", "404s"]
)
async def test_reading_a_merged_away_id(clock: ManualClock, resolve: bool, expected: int) -> None:
    """A merged-away id reads as the primary, or 404s (HubSpot's choice is UNVERIFIED: both offered)."""
    sim = HubSpotSimulator(clock=clock, resolve_merged_ids=resolve)
    primary = sim.add_contact({"email": "p@example.com"})
    secondary = sim.add_contact({"email": "s@example.com"})
    async with client_for(sim) as http:
        merged = await http.post(
            f"{CONTACTS}/merge", json={"primaryObjectId": primary, "objectIdToMerge": secondary}
        )
        response = await http.get(f"{CONTACTS}/{secondary}")
    assert (200, expected) == (merged.status_code, response.status_code)
    if resolve:
        assert primary == response.json()["id"]


# ------------------------------------------------------------------- unique custom properties

KEY = "customer_sync_id"


@pytest.fixture
def keyed(clock: ManualClock) -> HubSpotSimulator:
    """A portal where the operator created `customer_sync_id` with unique values."""
    return HubSpotSimulator(
        clock=clock, rate_limit=None, search_rate_limit=None, unique_properties=[KEY]
    )


def upsert_by_key(key: str, **properties: str) -> dict[str, Any]:
    return {"id": key, "idProperty": KEY, "properties": properties}


async def test_upsert_by_a_unique_property_creates_then_updates(keyed: HubSpotSimulator) -> None:
    """batch/upsert with a unique custom `idProperty` creates a contact holding the id as that
    property's value, and the same id sent again updates that contact (new: false)."""
    async with client_for(keyed) as http:
        first = await http.post(
            f"{CONTACTS}/batch/upsert", json={"inputs": [upsert_by_key("c-1", firstname="A")]}
        )
        again = await http.post(
            f"{CONTACTS}/batch/upsert", json={"inputs": [upsert_by_key("c-1", firstname="B")]}
        )
    (created,), (updated,) = first.json()["results"], again.json()["results"]
    assert [(200, True), (200, False)] == [
        (first.status_code, created["new"]),
        (again.status_code, updated["new"]),
    ]
    assert [created["id"]] == keyed.contact_ids()
    assert {KEY: "c-1", "firstname": "B"}.items() <= stored(keyed, created["id"]).items()


async def test_a_unique_property_reads_and_patches_by_id_property(
    keyed: HubSpotSimulator,
) -> None:
    """GET and PATCH by id, and batch/read, take the unique property as `idProperty`; an unknown
    value is a 404 or a 207 naming it."""
    contact_id = keyed.add_contact({KEY: "c-7", "firstname": "Seven"})
    async with client_for(keyed) as http:
        one = await http.get(f"{CONTACTS}/c-7", params={"idProperty": KEY})
        patched = await http.patch(
            f"{CONTACTS}/c-7", params={"idProperty": KEY}, json={"properties": {"city": "Oslo"}}
        )
        missing = await http.get(f"{CONTACTS}/c-8", params={"idProperty": KEY})
        batch = await http.post(
            f"{CONTACTS}/batch/read",
            json={
                "inputs": [{"id": "c-7"}, {"id": "c-8"}],
                "idProperty": KEY,
                "properties": [KEY],
                "propertiesWithHistory": [],
            },
        )
    assert [200, 200, 404, 207] == [
        r.status_code for r in (one, patched, missing, batch)
    ]
    assert contact_id == one.json()["id"] == batch.json()["results"][0]["id"]
    assert ["c-8"] == batch.json()["errors"][0]["context"]["ids"]
    assert "Oslo" == stored(keyed, contact_id)["city"]


@pytest.mark.parametrize(
    "write",
    ["create", "batch-create", "batch-update", "patch", "upsert-by-email"],
)
async def test_a_value_another_contact_holds_is_refused_whole(
    keyed: HubSpotSimulator, write: str
) -> None:
    """Every write that would give a second contact a unique value is a 400 that writes
    nothing (the error's exact shape is UNVERIFIED; it follows HubSpot's property errors)."""
    keyed.add_contact({KEY: "taken", "firstname": "Holder"})
    other = keyed.add_contact({"email": "other@example.com"})
    before = {i: stored(keyed, i) for i in keyed.contact_ids()}
    taken = {KEY: "taken"}
    async with client_for(keyed) as http:
        if write == "create":
            response = await http.post(CONTACTS, json={"properties": taken})
        elif write == "batch-create":
            inputs = [{"properties": {"firstname": "Fine"}}, {"properties": taken}]
            response = await http.post(f"{CONTACTS}/batch/create", json={"inputs": inputs})
        elif write == "batch-update":
            inputs = [{"id": other, "properties": taken}]
            response = await http.post(f"{CONTACTS}/batch/update", json={"inputs": inputs})
        elif write == "patch":
            response = await http.patch(f"{CONTACTS}/{other}", json={"properties": taken})
        else:
            inputs = [{"id": "new@example.com", "idProperty": "email", "properties": taken}]
            response = await http.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    body = response.json()
    assert (400, "VALIDATION_ERROR") == (response.status_code, body["category"])
    assert "VALUE_NOT_UNIQUE" in body["message"]
    assert before == {i: stored(keyed, i) for i in keyed.contact_ids()}


async def test_one_unique_value_twice_in_an_upsert_batch_is_refused(
    keyed: HubSpotSimulator,
) -> None:
    """An upsert batch naming one unique value twice is refused, as batch/update refuses an
    id named twice (UNVERIFIED for upsert); nothing is created."""
    inputs = [upsert_by_key("c-1", firstname="A"), upsert_by_key("c-1", firstname="B")]
    async with client_for(keyed) as http:
        response = await http.post(f"{CONTACTS}/batch/upsert", json={"inputs": inputs})
    assert (400, []) == (response.status_code, keyed.contact_ids())


async def test_an_archived_contact_frees_its_unique_value(keyed: HubSpotSimulator) -> None:
    """An archived contact no longer holds its unique value, as it no longer holds its email
    (UNVERIFIED); restoring it while another contact holds the value is refused."""
    old = keyed.add_contact({KEY: "c-1"})
    keyed.archive(old)
    async with client_for(keyed) as http:
        response = await http.post(
            f"{CONTACTS}/batch/upsert", json={"inputs": [upsert_by_key("c-1")]}
        )
        archived = await http.get(
            f"{CONTACTS}/c-1", params={"idProperty": KEY, "archived": "true"}
        )
    (created,) = response.json()["results"]
    assert (True, old) == (created["new"], archived.json()["id"])
    with pytest.raises(ValueError, match="unique property"):
        keyed.restore(old)


def test_a_merge_carries_a_unique_value_to_a_primary_without_one(keyed: HubSpotSimulator) -> None:
    """A merged-away contact's unique value moves to a primary that has none, like any other
    property it lacks (UNVERIFIED for unique properties); the value still finds one contact."""
    primary = keyed.add_contact({"email": "p@example.com"})
    secondary = keyed.add_contact({KEY: "c-1"})
    keyed.merge(primary, secondary)
    assert "c-1" == stored(keyed, primary)[KEY]
    with pytest.raises(ValueError, match="unique property"):
        keyed.add_contact({KEY: "c-1"})


def test_a_standard_property_cannot_be_declared_unique(clock: ManualClock) -> None:
    """Only custom properties are made unique here; email is unique by HubSpot's own rules."""
    with pytest.raises(ValueError, match="not custom"):
        HubSpotSimulator(clock=clock, unique_properties=["email"])


# --------------------------------------------------------------------------- auth, limits, failures


async def test_missing_or_wrong_token_is_401(clock: ManualClock) -> None:
    """No bearer token, or not the configured one, is a 401 INVALID_AUTHENTICATION."""
    sim = HubSpotSimulator(clock=clock, access_token="right")
    async with (
        client_for(sim, headers={}) as anonymous,
        client_for(sim, {"Authorization": "Bearer wrong"}) as wrong,
        client_for(sim, {"Authorization": "Bearer right"}) as right,
    ):
        statuses = [(await c.get(CONTACTS)).status_code for c in (anonymous, wrong, right)]
        body = (await wrong.get(CONTACTS)).json()
    assert [401, 401, 200] == statuses
    assert "INVALID_AUTHENTICATION" == body["category"]


async def test_429_at_100_per_10_seconds_with_headers(clock: ManualClock) -> None:
    """The 101st request inside 10 s is a 429 naming the policy; the window slides with the clock."""
    sim = HubSpotSimulator(clock=clock)
    async with client_for(sim) as http:
        first = await http.get(CONTACTS)
        for _ in range(49):
            await http.get(CONTACTS)
        clock.advance(5)
        for _ in range(50):
            ok = await http.get(CONTACTS)
        limited = await http.get(CONTACTS)
        clock.advance(5)  # the first 50 have left the window
        again = await http.get(CONTACTS)
    assert (200, "99") == (first.status_code, first.headers["X-HubSpot-RateLimit-Remaining"])
    assert (200, "0") == (ok.status_code, ok.headers["X-HubSpot-RateLimit-Remaining"])
    assert 429 == limited.status_code
    assert ("100", "10000", "0") == tuple(
        limited.headers[f"X-HubSpot-RateLimit-{h}"]
        for h in ("Max", "Interval-Milliseconds", "Remaining")
    )
    assert ("TEN_SECONDLY_ROLLING", "RATE_LIMITS") == (
        limited.json()["policyName"],
        limited.json()["category"],
    )
    assert (200, "49") == (again.status_code, again.headers["X-HubSpot-RateLimit-Remaining"])


async def test_search_has_its_own_lower_limit(clock: ManualClock) -> None:
    """Search allows 5 requests per second, and its responses carry no rate-limit headers."""
    sim = HubSpotSimulator(clock=clock)
    async with client_for(sim) as http:
        statuses = [
            (await http.post(f"{CONTACTS}/search", json=search_body())).status_code
            for _ in range(6)
        ]
        listed = await http.get(CONTACTS)
        clock.advance(1)
        after_a_second = await http.post(f"{CONTACTS}/search", json=search_body())
    assert [200] * 5 + [429] == statuses
    assert (200, 200) == (listed.status_code, after_a_second.status_code)
    assert not any(h.lower().startswith("x-hubspot-ratelimit") for h in after_a_second.headers)


async def test_fail_next_injects_failures_per_route(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """fail_next answers the next n requests to a route with the status, then recovers."""
    sim.fail_next(2, 500, route=f"POST {CONTACTS}/search")
    listed = await client.get(CONTACTS)
    searches = [
        (await client.post(f"{CONTACTS}/search", json=search_body())).status_code for _ in range(3)
    ]
    assert (200, [500, 500, 200]) == (listed.status_code, searches)


@pytest.mark.parametrize(
    ("status", "category"),
    [(429, "RATE_LIMITS"), (401, "INVALID_AUTHENTICATION"), (503, "INTERNAL_ERROR")],
)
async def test_fail_next_uses_hubspot_error_bodies(
    sim: HubSpotSimulator, client: httpx.AsyncClient, status: int, category: str
) -> None:
    """Injected failures carry the error body HubSpot sends for that status."""
    sim.fail_next(1, status)
    response = await client.get(CONTACTS)
    assert (status, category) == (response.status_code, response.json()["category"])


async def test_requests_are_counted_by_route(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """Every request is counted, in total and under its route template."""
    contact_id = sim.add_contact({"email": "c@example.com"})
    await client.get(CONTACTS)
    await client.get(f"{CONTACTS}/{contact_id}")
    await client.get(f"{CONTACTS}/{contact_id}")
    assert 3 == sim.request_count
    assert {f"GET {CONTACTS}": 1, f"GET {CONTACTS}/{{contactId}}": 2} == dict(sim.count_by_route)


# --------------------------------------------------------------------------- webhooks


def test_sign_v3_matches_documented_vector() -> None:
    """sign_v3 reproduces the official SDK test vector quoted in CONTRACTS.md."""
    assert "HPW73RUtKmcYoEDADG0s6MmGFWUzWJKAW07r8RDgcQw=" == sign_v3(
        "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy",
        "POST",
        "https://www.example.com/webhook_uri",
        "{'example_field':'example_value'}",
        "15000000",
    )


def test_sign_v1_matches_documented_vector() -> None:
    """sign_v1 reproduces the v1 doc vector in CONTRACTS.md (the docs' secret, the example event body)."""
    body = (
        '[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
        '"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM",'
        '"changeFlag":"NEW","appId":54321}]'
    )
    assert "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de" == sign_v1(
        "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy", body
    )


async def test_webhooks_are_delivered_signed(clock: ManualClock) -> None:
    """flush_webhooks POSTs an event array whose v3 signature checks out independently."""
    url = "https://hooks.example.test/hubspot"
    sim = HubSpotSimulator(clock=clock, webhook_url=url, app_secret="s3cret")
    received: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(204)

    contact_id = sim.add_contact({"email": "w@example.com"})
    clock.advance(1)
    sim.edit_contact(contact_id, {"firstname": "Wendy"})
    clock.advance(1)
    sim.archive(contact_id)
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as hooks:
        delivered = await sim.flush_webhooks(hooks)
    (request,) = received
    timestamp = request.headers["X-HubSpot-Request-Timestamp"]
    expected = base64.b64encode(
        hmac.new(
            b"s3cret",
            ("POST" + url + request.content.decode() + timestamp).encode(),
            hashlib.sha256,
        ).digest()
    ).decode()
    events = json.loads(request.content)
    assert (4, str(epoch_ms(clock())), expected) == (
        delivered,
        timestamp,
        request.headers["X-HubSpot-Signature-v3"],
    )
    assert [
        ("contact.creation", None),
        ("contact.propertyChange", "email"),
        ("contact.propertyChange", "firstname"),
        ("contact.deletion", None),
    ] == [(e["subscriptionType"], e.get("propertyName")) for e in events]
    assert {int(contact_id)} == {e["objectId"] for e in events}
    assert ("CRM_UI", "Wendy") == (events[2]["changeSource"], events[2]["propertyValue"])
    assert [] == sim.pending_webhooks


def test_merge_event_names_both_ids(clock: ManualClock) -> None:
    """A merge queues a contact.merge event naming the primary and the merged-away id."""
    sim = HubSpotSimulator(clock=clock, webhook_url="https://hooks.example.test/h")
    primary = sim.add_contact({"email": "p@example.com"})
    secondary = sim.add_contact({"email": "s@example.com"})
    sim.merge(primary, secondary)
    (event,) = [e for e in sim.pending_webhooks if e["subscriptionType"] == "contact.merge"]
    assert (int(primary), [int(secondary)]) == (event["primaryObjectId"], event["mergedObjectIds"])


async def test_failed_delivery_is_retried_with_higher_attempt_number(clock: ManualClock) -> None:
    """A batch the receiver refuses stays queued with attemptNumber + 1 and goes out on the next flush."""
    sim = HubSpotSimulator(clock=clock, webhook_url="https://hooks.example.test/h")
    statuses = iter([500, 200])
    attempts: list[list[int]] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        attempts.append([e["attemptNumber"] for e in json.loads(request.content)])
        return httpx.Response(next(statuses))

    sim.add_contact({"firstname": "Only"})
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as hooks:
        first = await sim.flush_webhooks(hooks)
        second = await sim.flush_webhooks(hooks)
    assert (0, 2, [[0, 0], [1, 1]]) == (first, second, attempts)


def test_no_webhook_url_records_no_events(sim: HubSpotSimulator) -> None:
    """Without a webhook_url nothing is queued (seeding 100k contacts stays cheap)."""
    sim.add_contact({"email": "q@example.com"})
    assert [] == sim.pending_webhooks


# --------------------------------------------------------------------------- loopback server


def test_serve_answers_on_loopback(sim: HubSpotSimulator) -> None:
    """serve() runs the app under uvicorn on a free loopback port until stopped."""
    contact_id = sim.add_contact({"email": "net@example.com"})
    base_url, stop = serve(sim.app)
    try:
        response = httpx.get(f"{base_url}{CONTACTS}/{contact_id}", headers=AUTH, timeout=5)
    finally:
        stop()
    assert base_url.startswith("http://127.0.0.1:")
    assert (200, contact_id) == (response.status_code, response.json()["id"])


def test_serve_refuses_non_loopback(sim: HubSpotSimulator) -> None:
    """The sandbox never listens beyond loopback."""
    with pytest.raises(ValueError, match="loopback"):
        serve(sim.app, host="0.0.0.0")


# --------------------------------------------------------------------------- speed


async def test_pages_records_at_5000_per_second(
    sim: HubSpotSimulator, client: httpx.AsyncClient
) -> None:
    """Listing 20,000 contacts and searching 10,000 run in-process well above 5,000 records/s."""
    seed(sim, 20_000, at=T0)
    started = time.perf_counter()
    listed, params = 0, {"limit": 100}
    while True:
        data = (await client.get(CONTACTS, params=params)).json()
        listed += len(data["results"])
        if "paging" not in data:
            break
        params = {"limit": 100, "after": data["paging"]["next"]["after"]}
    list_rate = listed / (time.perf_counter() - started)
    started = time.perf_counter()
    found, after = 0, "0"
    while after != "10000":
        body = search_body(modified("GTE", T0), limit=200, after=after)
        data = (await client.post(f"{CONTACTS}/search", json=body)).json()
        found += len(data["results"])
        after = data["paging"]["next"]["after"]
    search_rate = found / (time.perf_counter() - started)
    assert (20_000, 10_000) == (listed, found)
    assert list_rate >= 5_000, f"list pages at {list_rate:.0f} records/s"
    assert search_rate >= 5_000, f"search pages at {search_rate:.0f} records/s"


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "1970-01-01T00:00:00.000Z"), (1735689600123, "2025-01-01T00:00:00.123Z"),
     (1735689599999, "2024-12-31T23:59:59.999Z"), (253402300799999, "9999-12-31T23:59:59.999Z")],
)
def test_timestamps_render_as_utc_iso_with_milliseconds(ms: int, text: str) -> None:
    """The form HubSpot puts in JSON; `epoch_ms` reads it back."""
    assert text == iso_from_ms(ms)
    assert ms == epoch_ms(datetime.fromisoformat(text))
