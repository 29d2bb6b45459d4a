"""Behaviour of the Zendesk simulator: export paging and cursors, upserts, bulk jobs, identities,
search, auth, rate limits, soft deletes and signed webhooks.

Every test drives the simulator over HTTP in-process and moves an injected clock; none sleeps.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from customer_sync.sandbox._common import ManualClock
from customer_sync.sandbox.zendesk import RecordInvalid, ZendeskSimulator, sign

BASE_URL = "https://sandbox.zendesk.com"
AUTH = httpx.BasicAuth("admin@example.com/token", "sandbox-api-token")
EXPORT = "/api/v2/incremental/users/cursor.json"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def sim(clock: ManualClock) -> ZendeskSimulator:
    # The export's own 10/min limit would stop paging tests after ten pages; it has its own test.
    return ZendeskSimulator(clock=clock, export_rate_limit=None)


def client_for(sim: ZendeskSimulator, auth: httpx.Auth | None = AUTH) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=sim.app)
    return httpx.AsyncClient(transport=transport, base_url=BASE_URL, auth=auth)


@pytest.fixture
async def api(sim: ZendeskSimulator) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(sim) as client:
        yield client


async def export_all(
    api: httpx.AsyncClient, *, start_time: int = 0, per_page: int | None = None
) -> tuple[list[list[dict[str, Any]]], str]:
    """Page the cursor export to end_of_stream; returns the pages and the last after_cursor."""
    params: dict[str, Any] = {"start_time": start_time}
    if per_page:
        params["per_page"] = per_page
    pages: list[list[dict[str, Any]]] = []
    while True:
        response = await api.get(EXPORT, params=params)
        assert 200 == response.status_code, response.text
        body = response.json()
        pages.append(body["users"])
        if body["end_of_stream"]:
            return pages, body["after_cursor"]
        params = {"cursor": body["after_cursor"], **({"per_page": per_page} if per_page else {})}


async def resume(api: httpx.AsyncClient, cursor: str) -> dict[str, Any]:
    response = await api.get(EXPORT, params={"cursor": cursor})
    assert 200 == response.status_code, response.text
    return response.json()


# ---------------------------------------------------------------------------- incremental export


async def test_export_pages_to_end_of_stream(sim: ZendeskSimulator, api: httpx.AsyncClient,
                                             clock: ManualClock) -> None:
    """The cursor export pages every user exactly once, oldest first, ending on end_of_stream."""
    seeded = []
    for i in range(25):
        clock.advance(1)
        seeded.append(sim.add_user(name=f"User {i}", email=f"user{i}@example.com"))

    pages, _ = await export_all(api, per_page=10)

    assert [10, 10, 6] == [len(p) for p in pages]  # 25 seeded + the account owner
    ids = [u["id"] for page in pages for u in page]
    assert [sim.owner_id, *seeded] == ids
    stamps = [u["updated_at"] for page in pages for u in page]
    assert sorted(stamps) == stamps


async def test_export_end_of_stream_only_on_last_page(sim: ZendeskSimulator,
                                                      api: httpx.AsyncClient) -> None:
    """end_of_stream is false while more users remain, and the after_url can be followed as is."""
    for i in range(4):
        sim.add_user(name=f"User {i}")

    first = (await api.get(EXPORT, params={"start_time": 0, "per_page": 3})).json()
    second = (await api.get(first["after_url"])).json()

    assert (False, True) == (first["end_of_stream"], second["end_of_stream"])
    assert 5 == len(first["users"]) + len(second["users"])


async def test_cursor_resume_returns_only_newer_changes(sim: ZendeskSimulator,
                                                        api: httpx.AsyncClient,
                                                        clock: ManualClock) -> None:
    """Resuming from a stored after_cursor yields exactly the users written since, no others."""
    ids = [sim.add_user(name=f"User {i}", email=f"u{i}@example.com") for i in range(5)]
    _, cursor = await export_all(api)
    clock.advance(90)
    sim.edit_user(ids[2], name="Renamed")
    new_id = sim.add_user(name="Newcomer")

    body = await resume(api, cursor)

    assert [ids[2], new_id] == [u["id"] for u in body["users"]]
    assert "Renamed" == body["users"][0]["name"]
    assert body["end_of_stream"] is True


async def test_resume_at_end_of_stream_is_empty_and_keeps_position(
    sim: ZendeskSimulator, api: httpx.AsyncClient
) -> None:
    """With nothing new, a resumed export is empty and hands back a cursor that still works."""
    sim.add_user(name="Only")
    _, cursor = await export_all(api)

    body = await resume(api, cursor)
    sim.add_user(name="Later")
    later = await resume(api, body["after_cursor"])

    assert ([], True) == (body["users"], body["end_of_stream"])
    assert ["Later"] == [u["name"] for u in later["users"]]


async def test_equal_timestamp_users_are_not_lost_across_pages(
    sim: ZendeskSimulator, api: httpx.AsyncClient
) -> None:
    """Many users in one second split over pages, and one rewritten in that same second after
    the cursor was issued, all reach the reader exactly once more."""
    ids = [sim.add_user(name=f"Same second {i}") for i in range(7)]  # the clock never moves

    pages, cursor = await export_all(api, per_page=3)
    sim.edit_user(ids[0], notes="edited within the same second")
    again = await resume(api, cursor)

    exported = [u["id"] for page in pages for u in page]
    assert [sim.owner_id, *ids] == exported
    assert [ids[0]] == [u["id"] for u in again["users"]]
    assert pages[0][0]["updated_at"] == again["users"][0]["updated_at"]


async def test_start_time_includes_its_own_second(sim: ZendeskSimulator, api: httpx.AsyncClient,
                                                  clock: ManualClock) -> None:
    """start_time is inclusive: a user updated in exactly that second is exported."""
    clock.advance(10)
    at_start = sim.add_user(name="At start")
    clock.advance(120)
    start_time = int(T0.timestamp()) + 10

    pages, _ = await export_all(api, start_time=start_time)

    assert [at_start] == [u["id"] for page in pages for u in page]


async def test_start_time_in_the_future_is_rejected(api: httpx.AsyncClient,
                                                    clock: ManualClock) -> None:
    """A start_time after now is a 400 (UNVERIFIED status); one inside the last minute is not."""
    now = int(clock().timestamp())
    future = await api.get(EXPORT, params={"start_time": now + 5})
    recent = await api.get(EXPORT, params={"start_time": now - 30})

    assert (400, "InvalidValue") == (future.status_code, future.json()["error"])
    assert 200 == recent.status_code


async def test_garbage_cursor_is_rejected(api: httpx.AsyncClient) -> None:
    """A cursor the simulator did not issue is a 400, not an empty page."""
    response = await api.get(EXPORT, params={"cursor": "not-a-cursor"})

    assert 400 == response.status_code


async def test_ten_thousand_users_page_through_in_process(sim: ZendeskSimulator,
                                                          api: httpx.AsyncClient,
                                                          clock: ManualClock) -> None:
    """A benchmark-sized account pages at the 1000-per-page maximum, each user once."""
    for i in range(10_000):
        if i % 250 == 0:
            clock.advance(1)
        sim.add_user(name=f"Bulk {i}", email=f"bulk{i}@example.com")

    pages, _ = await export_all(api, per_page=5000)  # clamped to 1000

    assert 1000 == max(len(p) for p in pages)
    assert 10_001 == len({u["id"] for page in pages for u in page})


async def time_export(api: httpx.AsyncClient, start_time: int, per_page: int) -> dict[str, Any]:
    response = await api.get("/api/v2/incremental/users.json",
                             params={"start_time": start_time, "per_page": per_page})
    assert 200 == response.status_code, response.text
    return response.json()


async def test_time_based_export_repeats_the_boundary_second(
    sim: ZendeskSimulator, api: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Each next page starts at the previous end_time, so that second comes twice; a page never
    splits one second (it grows instead), and fewer than per_page items means end_of_stream."""
    a = sim.add_user(name="A")  # same second as the owner
    clock.advance(1)
    b = [sim.add_user(name=f"B{i}") for i in range(2)]
    clock.advance(1)
    c = sim.add_user(name="C")
    clock.advance(120)

    page1 = await time_export(api, 0, 3)
    page2 = await time_export(api, page1["end_time"], 3)
    page3 = await time_export(api, page2["end_time"], 3)

    assert [sim.owner_id, a, *b] == [u["id"] for u in page1["users"]]
    assert [*b, c] == [u["id"] for u in page2["users"]]
    assert [c] == [u["id"] for u in page3["users"]]
    assert [False, False, True] == [p["end_of_stream"] for p in (page1, page2, page3)]
    assert page1["next_page"].endswith(f"start_time={page1['end_time']}")


async def test_time_based_export_holds_back_the_last_minute_and_always_advances(
    sim: ZendeskSimulator, api: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Users newer than one minute are held back; a page filled by a single second moves
    end_time one second on, so paging cannot loop."""
    same_second = [sim.add_user(name=f"S{i}") for i in range(4)]
    clock.advance(30)
    recent = sim.add_user(name="Recent")
    clock.advance(40)  # "Recent" is 40 s old: still inside the held-back minute

    page1 = await time_export(api, 0, 3)
    page2 = await time_export(api, page1["end_time"], 3)
    clock.advance(30)
    page3 = await time_export(api, page2["end_time"], 3)

    assert [sim.owner_id, *same_second] == [u["id"] for u in page1["users"]]
    assert int(T0.timestamp()) + 1 == page1["end_time"]
    assert ([], True) == (page2["users"], page2["end_of_stream"])
    assert [recent] == [u["id"] for u in page3["users"]]


# ---------------------------------------------------------------------------- reads


async def test_show_user_and_not_found_body(sim: ZendeskSimulator, api: httpx.AsyncClient) -> None:
    """GET a user renders it; an unknown id is the documented RecordNotFound body."""
    user_id = sim.add_user(name="Ann", email="ann@example.com", phone="+15551234567",
                           user_fields={"plan": "gold"}, tags=["vip"], external_id="crm-1")

    found = await api.get(f"/api/v2/users/{user_id}.json")
    missing = await api.get("/api/v2/users/1.json")

    user = found.json()["user"]
    assert ("Ann", "ann@example.com", "+15551234567", "crm-1", "end-user") == (
        user["name"], user["email"], user["phone"], user["external_id"], user["role"])
    assert ({"plan": "gold"}, ["vip"], True) == (user["user_fields"], user["tags"], user["active"])
    assert (404, {"error": "RecordNotFound", "description": "Not found"}) == (
        missing.status_code, missing.json())


async def test_show_many_by_ids_and_external_ids(sim: ZendeskSimulator,
                                                 api: httpx.AsyncClient) -> None:
    """show_many returns the known users and skips unknown ids; more than 100 ids is refused."""
    a = sim.add_user(name="A", external_id="ext-a")
    b = sim.add_user(name="B", external_id="ext-b")

    by_ids = await api.get("/api/v2/users/show_many.json", params={"ids": f"{a},{b},1"})
    by_ext = await api.get("/api/v2/users/show_many.json", params={"external_ids": "EXT-B"})
    too_many = await api.get("/api/v2/users/show_many.json",
                             params={"ids": ",".join(str(i) for i in range(1, 102))})

    assert [a, b] == [u["id"] for u in by_ids.json()["users"]]
    assert [b] == [u["id"] for u in by_ext.json()["users"]]
    assert 400 == too_many.status_code


@pytest.mark.parametrize(
    "params",
    [
        {"query": "email:ann@example.com"},
        {"query": "ann@example.com"},
        {"query": 'email:"ANN@example.com"'},
        {"query": "type:user email:second@example.com"},
        {"external_id": "CRM-1"},
    ],
    ids=["email-qualifier", "bare-address", "quoted-other-case", "secondary-email", "external-id"],
)
async def test_search_finds_user_by_email_or_external_id(
    sim: ZendeskSimulator, api: httpx.AsyncClient, params: dict[str, str]
) -> None:
    """Search Users finds a user by any of its email identities, or by external_id."""
    ann = sim.add_user(name="Ann", email="ann@example.com", external_id="crm-1")
    sim.add_identity(ann, "email", "second@example.com")
    sim.add_user(name="Bob", email="bob@example.com")

    response = await api.get("/api/v2/users/search.json", params=params)

    assert 200 == response.status_code
    assert ([ann], 1) == ([u["id"] for u in response.json()["users"]], response.json()["count"])


async def test_search_skips_deleted_users_and_pages_by_offset(sim: ZendeskSimulator,
                                                              api: httpx.AsyncClient) -> None:
    """Deleted users are not found; results page by page/per_page with next_page links."""
    gone = sim.add_user(name="Gone Smith", email="gone@example.com")
    sim.delete_user(gone)
    kept = [sim.add_user(name=f"Smith {i}") for i in range(3)]

    first = (await api.get("/api/v2/users/search", params={"query": "smith", "per_page": 2})).json()
    second = (await api.get(first["next_page"])).json()

    assert 3 == first["count"]
    assert kept == [u["id"] for u in first["users"] + second["users"]]
    assert second["next_page"] is None


# ---------------------------------------------------------------------------- writes


async def test_create_or_update_by_email_creates_then_updates(
    sim: ZendeskSimulator, api: httpx.AsyncClient, clock: ManualClock
) -> None:
    """The first upsert creates (201 + Location), the second matches the email and updates (200),
    moving updated_at."""
    body = {"user": {"name": "Cara", "email": "cara@example.com", "skip_verify_email": True}}
    created = await api.post("/api/v2/users/create_or_update.json", json=body)
    clock.advance(5)
    body["user"]["name"] = "Cara Jones"
    updated = await api.post("/api/v2/users/create_or_update.json", json=body)

    user_id = created.json()["user"]["id"]
    assert (201, f"/api/v2/users/{user_id}.json") == (created.status_code,
                                                      created.headers["location"])
    assert (200, f"/api/v2/users/{user_id}.json") == (updated.status_code,
                                                      updated.headers["location"])
    user = updated.json()["user"]
    assert (user_id, "Cara Jones", "end-user") == (user["id"], user["name"], user["role"])
    assert updated.json()["user"]["updated_at"] > created.json()["user"]["updated_at"]


async def test_create_or_update_matches_external_id_ignoring_case(
    sim: ZendeskSimulator, api: httpx.AsyncClient
) -> None:
    """External id lookup is case-insensitive and the stored case becomes the one sent."""
    user_id = sim.add_user(name="Dan", external_id="CRM-42")

    response = await api.post("/api/v2/users/create_or_update.json",
                              json={"user": {"name": "Dan", "external_id": "crm-42"}})

    assert (200, user_id, "crm-42") == (
        response.status_code, response.json()["user"]["id"], response.json()["user"]["external_id"])


async def test_update_with_new_email_adds_a_secondary_identity(
    sim: ZendeskSimulator, api: httpx.AsyncClient
) -> None:
    """On update, email does not replace the primary address: a secondary identity is added."""
    user_id = sim.add_user(name="Eve", email="eve@example.com")

    response = await api.put(f"/api/v2/users/{user_id}.json",
                             json={"user": {"email": "eve.work@example.com"}})
    identities = (await api.get(f"/api/v2/users/{user_id}/identities.json")).json()["identities"]

    assert "eve@example.com" == response.json()["user"]["email"]
    assert [("eve@example.com", True), ("eve.work@example.com", False)] == [
        (i["value"], i["primary"]) for i in identities]


async def test_update_bumps_updated_at_even_when_nothing_changes(
    sim: ZendeskSimulator, api: httpx.AsyncClient, clock: ManualClock
) -> None:
    """Every write moves updated_at and re-enters the export, as a connector's own echo would."""
    user_id = sim.add_user(name="Fay")
    _, cursor = await export_all(api)
    clock.advance(3)

    response = await api.put(f"/api/v2/users/{user_id}.json", json={"user": {"name": "Fay"}})
    body = await resume(api, cursor)

    assert (T0 + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%SZ") == (
        response.json()["user"]["updated_at"])
    assert [user_id] == [u["id"] for u in body["users"]]


@pytest.mark.parametrize(
    ("user", "field"),
    [
        ({"name": "Dup", "email": "taken@example.com"}, "email"),
        ({"name": "Bad", "email": "not-an-address"}, "email"),
        ({"email": "noname@example.com"}, "name"),
        ({"name": "Role", "email": "role@example.com", "role": "owner"}, "role"),
    ],
    ids=["duplicate-email", "malformed-email", "missing-name", "unknown-role"],
)
async def test_invalid_create_is_record_invalid(sim: ZendeskSimulator, api: httpx.AsyncClient,
                                                user: dict[str, Any], field: str) -> None:
    """A rejected create is 422 RecordInvalid with details keyed by the offending field."""
    sim.add_user(name="Holder", email="taken@example.com")

    response = await api.post("/api/v2/users.json", json={"user": user})

    body = response.json()
    assert (422, "RecordInvalid") == (response.status_code, body["error"])
    assert [field] == list(body["details"])
    assert {"description", "error"} == set(body["details"][field][0])


async def test_put_merges_user_fields_and_replaces_tags(sim: ZendeskSimulator,
                                                        api: httpx.AsyncClient) -> None:
    """user_fields keys not sent keep their values; tags are replaced as a whole."""
    user_id = sim.add_user(name="Gus", user_fields={"plan": "gold", "tier": "1"}, tags=["a", "b"])

    response = await api.put(f"/api/v2/users/{user_id}.json",
                             json={"user": {"user_fields": {"tier": "2"}, "tags": ["c"]}})

    user = response.json()["user"]
    assert ({"plan": "gold", "tier": "2"}, ["c"]) == (user["user_fields"], user["tags"])


async def test_create_or_update_many_job_lifecycle_with_partial_failure(
    sim: ZendeskSimulator, api: httpx.AsyncClient
) -> None:
    """The bulk upsert returns a queued job that polls queued -> working -> completed; results keep
    the request order and report Created, Failed and Updated rows; writes land on completion."""
    existing = sim.add_user(name="Old", email="old@example.com")
    users = [
        {"name": "New", "email": "new@example.com"},
        {"name": "Broken", "email": "broken"},
        {"name": "Old Renamed", "email": "old@example.com"},
    ]

    queued = await api.post("/api/v2/users/create_or_update_many.json", json={"users": users})
    job = queued.json()["job_status"]
    polls = [(await api.get(f"/api/v2/job_statuses/{job['id']}.json")).json()["job_status"]
             for _ in range(3)]

    assert (200, "queued", 3) == (queued.status_code, job["status"], job["total"])
    assert ["working", "completed", "completed"] == [p["status"] for p in polls]
    assert polls[0]["results"] is None
    assert sim.find_user_id(email="new@example.com") is not None
    results = polls[1]["results"]
    assert ["Created", "Failed", "Updated"] == [r["status"] for r in results]
    assert (sim.find_user_id(email="new@example.com"), 0) == (results[0]["id"], results[0]["index"])
    assert (1, False) == (results[1]["index"], results[1]["success"])
    assert "Email: broken is not properly formatted" == results[1]["details"]
    assert (existing, "Old Renamed") == (results[2]["id"], sim.get_user(existing)["name"])


async def test_bulk_writes_wait_for_the_job(sim: ZendeskSimulator,
                                            api: httpx.AsyncClient) -> None:
    """Nothing is written before the job runs; complete_jobs() runs it without polling."""
    queued = await api.post("/api/v2/users/create_or_update_many.json",
                            json={"users": [{"name": "Later", "email": "later@example.com"}]})
    before = sim.find_user_id(email="later@example.com")

    assert [queued.json()["job_status"]["id"]] == sim.complete_jobs()
    assert (None, True) == (before, sim.find_user_id(email="later@example.com") is not None)


async def test_bulk_upsert_limits(clock: ManualClock) -> None:
    """More than 100 users is refused; an account without bulk imports answers 403."""
    users = [{"name": f"U{i}", "email": f"u{i}@example.com"} for i in range(101)]
    async with client_for(ZendeskSimulator(clock=clock)) as api:
        too_many = await api.post("/api/v2/users/create_or_update_many.json",
                                  json={"users": users})
    async with client_for(ZendeskSimulator(clock=clock, bulk_import_enabled=False)) as api:
        forbidden = await api.post("/api/v2/users/create_or_update_many.json",
                                   json={"users": users[:1]})

    assert (400, 403) == (too_many.status_code, forbidden.status_code)


# ---------------------------------------------------------------------------- identities


async def test_identities_list_create_and_reject_duplicates(
    sim: ZendeskSimulator, api: httpx.AsyncClient
) -> None:
    """Identities list the primary email first; a new one is 201; an email another user holds
    is 422; an added email then identifies the user for create_or_update."""
    ann = sim.add_user(name="Ann", email="ann@example.com")
    sim.add_identity(ann, "phone_number", "+15551230000")
    sim.add_user(name="Bob", email="bob@example.com")

    created = await api.post(f"/api/v2/users/{ann}/identities.json",
                             json={"identity": {"type": "email", "value": "ann2@example.com"}})
    duplicate = await api.post(f"/api/v2/users/{ann}/identities.json",
                               json={"identity": {"type": "email", "value": "bob@example.com"}})
    listed = (await api.get(f"/api/v2/users/{ann}/identities.json")).json()["identities"]
    emails_only = (await api.get(f"/api/v2/users/{ann}/identities.json",
                                 params={"type[]": "email"})).json()["identities"]
    upsert = await api.post("/api/v2/users/create_or_update.json",
                            json={"user": {"name": "Ann B", "email": "ann2@example.com"}})

    assert (201, ann, False) == (created.status_code, created.json()["identity"]["user_id"],
                                 created.json()["identity"]["primary"])
    assert (422, "RecordInvalid") == (duplicate.status_code, duplicate.json()["error"])
    assert [("email", "ann@example.com"), ("phone_number", "+15551230000"),
            ("email", "ann2@example.com")] == [(i["type"], i["value"]) for i in listed]
    assert 2 == len(emails_only)
    assert (200, ann) == (upsert.status_code, upsert.json()["user"]["id"])


# ---------------------------------------------------------------------------- deletes


async def test_delete_is_visible_in_export_as_inactive(sim: ZendeskSimulator,
                                                       api: httpx.AsyncClient,
                                                       clock: ManualClock) -> None:
    """A soft delete moves updated_at and the user comes back in the export with active false.
    (CONTRACTS.md marks this UNVERIFIED; `export_deleted=False` simulates the other answer.)"""
    user_id = sim.add_user(name="Hal", email="hal@example.com")
    _, cursor = await export_all(api)
    clock.advance(2)

    deleted = await api.delete(f"/api/v2/users/{user_id}.json")
    body = await resume(api, cursor)

    assert (200, False) == (deleted.status_code, deleted.json()["user"]["active"])
    assert [(user_id, False)] == [(u["id"], u["active"]) for u in body["users"]]


async def test_deleted_user_hidden_from_export_when_so_configured(clock: ManualClock) -> None:
    """With export_deleted=False a deleted user silently drops out of the export."""
    sim = ZendeskSimulator(clock=clock, export_deleted=False)
    user_id = sim.add_user(name="Ivy")
    sim.delete_user(user_id)

    async with client_for(sim) as api:
        pages, _ = await export_all(api)

    assert [sim.owner_id] == [u["id"] for page in pages for u in page]


async def test_deleted_user_reads_inactive_refuses_writes_and_frees_its_email(
    sim: ZendeskSimulator, api: httpx.AsyncClient
) -> None:
    """After a delete: GET shows active false, PUT and DELETE are 404, the email can be reused."""
    user_id = sim.add_user(name="Jon", email="jon@example.com")
    sim.delete_user(user_id)

    shown = await api.get(f"/api/v2/users/{user_id}.json")
    put = await api.put(f"/api/v2/users/{user_id}.json", json={"user": {"name": "Back"}})
    again = await api.delete(f"/api/v2/users/{user_id}.json")
    reused = await api.post("/api/v2/users/create_or_update.json",
                            json={"user": {"name": "New Jon", "email": "jon@example.com"}})

    assert (200, False) == (shown.status_code, shown.json()["user"]["active"])
    assert (404, 404) == (put.status_code, again.status_code)
    assert 201 == reused.status_code
    assert user_id != reused.json()["user"]["id"]


# ---------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "auth",
    [
        httpx.BasicAuth("admin@example.com/token", "wrong-token"),
        httpx.BasicAuth("someone@example.com/token", "sandbox-api-token"),
        httpx.BasicAuth("admin@example.com", "sandbox-api-token"),
    ],
    ids=["wrong-token", "wrong-email", "password-style"],
)
async def test_bad_credentials_are_401(sim: ZendeskSimulator, auth: httpx.Auth) -> None:
    """Bad API-token credentials get 401 and Zendesk's error body, on every endpoint."""
    async with client_for(sim, auth=auth) as api:
        me = await api.get("/api/v2/users/me.json")
        export = await api.get(EXPORT, params={"start_time": 0})

    assert (401, {"error": "Couldn't authenticate you"}) == (me.status_code, me.json())
    assert 401 == export.status_code


async def test_bearer_token_is_accepted(sim: ZendeskSimulator) -> None:
    """An OAuth access token works as `Authorization: Bearer`, and /users/me is the owner."""
    async with client_for(sim, auth=None) as api:
        response = await api.get("/api/v2/users/me.json",
                                 headers={"Authorization": "Bearer sandbox-oauth-token"})

    assert (200, sim.owner_id, "admin") == (
        response.status_code, response.json()["user"]["id"], response.json()["user"]["role"])


async def test_me_without_credentials_is_anonymous_not_401(sim: ZendeskSimulator) -> None:
    """UNVERIFIED shape: /users/me is "Allowed For: Anonymous users", so no credentials get 200
    with a null id; a check() must look at the id, not only the status."""
    async with client_for(sim, auth=None) as api:
        me = await api.get("/api/v2/users/me.json")
        show = await api.get(f"/api/v2/users/{sim.owner_id}.json")

    assert (200, None) == (me.status_code, me.json()["user"]["id"])
    assert 401 == show.status_code


# ---------------------------------------------------------------------------- rate limits, faults


async def test_account_rate_limit_is_429_with_retry_after_until_the_minute_ends(
    clock: ManualClock,
) -> None:
    """Past the per-minute limit: 429 with Retry-After (seconds to the window end) and the
    X-Rate-Limit headers; the next minute is served again."""
    clock.advance(15)  # 15 s into a minute window
    sim = ZendeskSimulator(clock=clock, rate_limit=(3, 60.0))
    async with client_for(sim) as api:
        ok = [await api.get(f"/api/v2/users/{sim.owner_id}.json") for _ in range(3)]
        limited = await api.get(f"/api/v2/users/{sim.owner_id}.json")
        clock.advance(45)
        recovered = await api.get(f"/api/v2/users/{sim.owner_id}.json")

    assert [("3", "2"), ("3", "1"), ("3", "0")] == [
        (r.headers["X-Rate-Limit"], r.headers["X-Rate-Limit-Remaining"]) for r in ok]
    assert (429, "45") == (limited.status_code, limited.headers["Retry-After"])
    assert 200 == recovered.status_code


async def test_list_endpoints_send_ratelimit_headers(sim: ZendeskSimulator,
                                                     api: httpx.AsyncClient,
                                                     clock: ManualClock) -> None:
    """Search Users (a list endpoint) also sends ratelimit-limit/-remaining/-reset."""
    clock.advance(19)

    response = await api.get("/api/v2/users/search.json", params={"query": "nobody"})

    assert ("700", "699", "41") == (response.headers["ratelimit-limit"],
                                    response.headers["ratelimit-remaining"],
                                    response.headers["ratelimit-reset"])


async def test_incremental_export_has_its_own_lower_limit(clock: ManualClock) -> None:
    """The incremental export allows 10 requests a minute while other endpoints still answer."""
    sim = ZendeskSimulator(clock=clock)
    async with client_for(sim) as api:
        statuses = [(await api.get(EXPORT, params={"start_time": 0})).status_code
                    for _ in range(11)]
        other = await api.get("/api/v2/users/me.json")

    assert [200] * 10 + [429] == statuses
    assert 200 == other.status_code


@pytest.mark.parametrize(("status", "retry_after"), [(429, "7"), (500, None), (503, "7"),
                                                     (401, None)],
                         ids=["429", "500", "503", "401"])
async def test_fail_next_injects_failures_then_recovers(
    sim: ZendeskSimulator, api: httpx.AsyncClient, status: int, retry_after: str | None
) -> None:
    """fail_next(n, status) answers the next n requests with that status, then serves again."""
    sim.fail_next(2, status)

    responses = [await api.get("/api/v2/users/me.json") for _ in range(3)]

    assert [status, status, 200] == [r.status_code for r in responses]
    assert retry_after == responses[0].headers.get("Retry-After")


async def test_fail_next_can_target_one_route(sim: ZendeskSimulator,
                                              api: httpx.AsyncClient) -> None:
    """A route-targeted failure waits for that route and leaves other calls alone."""
    sim.fail_next(1, 500, route="GET /api/v2/incremental/users/cursor")

    me = await api.get("/api/v2/users/me.json")
    export = await api.get(EXPORT, params={"start_time": 0})

    assert (200, 500) == (me.status_code, export.status_code)


async def test_requests_are_counted_by_route(sim: ZendeskSimulator, api: httpx.AsyncClient) -> None:
    """Every request counts, under its OAS path template; unknown paths count as UNMATCHED."""
    user_id = sim.add_user(name="Kim")
    await api.get(f"/api/v2/users/{user_id}.json")
    await api.get(f"/api/v2/users/{user_id}")
    await api.get("/api/v2/tickets.json")

    assert 3 == sim.request_count
    assert {"GET /api/v2/users/{user_id}": 2, "UNMATCHED": 1} == dict(sim.count_by_route)


# ---------------------------------------------------------------------------- webhooks


def test_sign_matches_the_contract_example() -> None:
    """sign() reproduces the worked example computed in CONTRACTS.md from the documented formula."""
    body = '{"type":"zen:event-type:user.created","account_id":1}'

    assert "W3T6D+Nm4xmf/S1NjBOWlZsVAT8rWz1j6KmNHAJQlUs=" == sign(
        "my_secret", "2024-04-17T17:18:10Z", body)


async def test_webhooks_are_signed_and_verify_independently(clock: ManualClock) -> None:
    """Flushed events carry X-Zendesk-Webhook-Signature(-Timestamp) that an independent
    HMAC-SHA256 over timestamp + raw body reproduces; the payload has the documented shape."""
    received: list[httpx.Request] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        received.append(request)
        return httpx.Response(200)

    sim = ZendeskSimulator(clock=clock, webhook_url="https://hooks.example.com/zendesk",
                           webhook_secret="s3cret")
    user_id = sim.add_user(name="Lia", email="lia@example.com", external_id="crm-9")
    sim.edit_user(user_id, name="Lia B")
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        responses = await sim.flush_webhooks(client)

    assert 2 == len(responses) == len(received)
    for request in received:
        timestamp = request.headers["X-Zendesk-Webhook-Signature-Timestamp"]
        expected = base64.b64encode(
            hmac.new(b"s3cret", timestamp.encode() + request.content, hashlib.sha256).digest()
        ).decode()
        assert expected == request.headers["X-Zendesk-Webhook-Signature"]
    created, renamed = (json.loads(r.content) for r in received)
    assert ["zen:event-type:user.created", "zen:event-type:user.name_changed"] == [
        created["type"], renamed["type"]]
    assert (f"zen:user:{user_id}", str(user_id), "crm-9") == (
        created["subject"], created["detail"]["id"], created["detail"]["external_id"])
    assert {"current": "Lia B", "previous": "Lia"} == renamed["event"]
    assert [] == sim.pending_webhooks


async def test_delete_and_api_writes_emit_events(clock: ManualClock) -> None:
    """API writes (the connector's own, i.e. echoes) and deletes are reported too."""
    sim = ZendeskSimulator(clock=clock, webhook_url="https://hooks.example.com/zendesk")
    user_id = sim.add_user(name="Max", user_fields={"plan": "free"})
    async with client_for(sim) as api:
        await api.put(f"/api/v2/users/{user_id}.json",
                      json={"user": {"user_fields": {"plan": "pro"}}})
        await api.delete(f"/api/v2/users/{user_id}.json")

    assert [
        "zen:event-type:user.created",
        "zen:event-type:user.custom_field_changed",
        "zen:event-type:user.active_changed",
        "zen:event-type:user.deleted",
    ] == [e["type"] for e in sim.pending_webhooks if e["subject"] == f"zen:user:{user_id}"]


async def test_failed_webhook_delivery_stays_pending(clock: ManualClock) -> None:
    """An event the receiver refuses is kept, in order, for the next flush."""
    sim = ZendeskSimulator(clock=clock, webhook_url="https://hooks.example.com/zendesk")
    sim.add_user(name="Ned")
    answers = iter([httpx.Response(503), httpx.Response(204)])

    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: next(answers))) as client:
        first = await sim.flush_webhooks(client)
        pending = len(sim.pending_webhooks)
        second = await sim.flush_webhooks(client)

    assert ([503], [204]) == ([r.status_code for r in first], [r.status_code for r in second])
    assert (1, 0) == (pending, len(sim.pending_webhooks))


def test_no_webhook_url_records_no_events(sim: ZendeskSimulator) -> None:
    """Without a webhook_url nothing is queued, so seeding 100k users costs no memory for events."""
    sim.add_user(name="Oz")

    assert [] == sim.pending_webhooks


# ---------------------------------------------------------------------------- seeding helpers


def test_seeding_rejects_duplicate_email(sim: ZendeskSimulator) -> None:
    """add_user enforces the same uniqueness as the API, raising RecordInvalid."""
    sim.add_user(name="Pat", email="pat@example.com")

    with pytest.raises(RecordInvalid, match="already being used"):
        sim.add_user(name="Pat Again", email="PAT@example.com")


def test_edit_user_replaces_primary_email_like_an_agent(sim: ZendeskSimulator) -> None:
    """edit_user(email=...) changes the primary address (the UI can), freeing the old one."""
    user_id = sim.add_user(name="Quin", email="quin@example.com")

    sim.edit_user(user_id, email="quin@new.example.com")

    assert "quin@new.example.com" == sim.get_user(user_id)["email"]
    assert (None, user_id) == (sim.find_user_id(email="quin@example.com"),
                               sim.find_user_id(email="quin@new.example.com"))


def test_add_user_can_backdate_history(sim: ZendeskSimulator) -> None:
    """created_at/updated_at place a seeded user in the past for history-shaped fixtures."""
    user_id = sim.add_user(name="Old", updated_at=T0 - timedelta(days=30))

    assert "2026-01-30T12:00:00Z" == sim.get_user(user_id)["updated_at"]
