"""The dashboard over HTTP (in process, ASGI) on a real engine and store with two `sql` apps:
admin auth (off, no session, wrong and right token), CSRF, resolving a conflict, the customer
page, escaping, the busy store, and that no personal value reaches a log line."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import structlog
from sqlalchemy import event, select, update

from customer_sync.api.app import create_app
from customer_sync.api.auth import SESSION_COOKIE, AdminAuth
from customer_sync.engine import admin
from customer_sync.engine.runner import Engine
from customer_sync.errors import StoreBusy
from customer_sync.store.tables import CustomerRow
from tests.integration.dashboard_world import ARABIC, HOSTILE, PERSIAN, TOKEN, DashboardWorld

BASE_URL = "http://sync.test"


@dataclass
class Site:
    world: DashboardWorld
    engine: Engine
    auth: AdminAuth
    http: httpx.AsyncClient

    async def login(self) -> None:
        response = await self.http.post("/login", data={"token": TOKEN, "next": "/"})
        assert 303 == response.status_code


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[DashboardWorld]:
    w = DashboardWorld(tmp_path)
    await w.seed()
    yield w
    w.close()


@pytest.fixture
async def site(world: DashboardWorld) -> AsyncIterator[Site]:
    auth = AdminAuth(TOKEN)
    async with Engine(world.config, world.store) as engine:
        transport = httpx.ASGITransport(app=create_app(engine, auth=auth))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield Site(world, engine, auth, http)


async def test_no_token_means_the_dashboard_is_off(world: DashboardWorld) -> None:
    """With no admin token configured, `/` answers 404 and says how to turn the dashboard on;
    the customer pages do not exist."""
    async with Engine(world.config, world.store) as engine:
        transport = httpx.ASGITransport(app=create_app(engine, auth=None))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            root = await http.get("/")
            login = await http.post("/login", data={"token": TOKEN})
            customer = await http.get("/customers/maryam@example.com")
    assert 404 == root.status_code
    assert "dashboard is off" in root.text and "CUSTOMER_SYNC_ADMIN_TOKEN" in root.text
    assert 404 == login.status_code and SESSION_COOKIE not in login.cookies
    assert 404 == customer.status_code and "maryam" not in customer.text


@pytest.mark.parametrize("path", ["/", "/customers/maryam@example.com", "/customers?q=x", "/logout",
                                  "/customers/Mary%20Smith"],
                         ids=["overview", "customer", "search", "logout", "space"])
async def test_a_page_without_a_session_redirects_to_login(site: Site, path: str) -> None:
    """Every page needs the session: without it, a redirect to `/login` that comes back here
    once logged in."""
    response = await site.http.get(path)
    assert 303 == response.status_code
    assert "/login?" + "next=" + quote(path, safe="") == response.headers["location"]
    login = await site.http.post("/login", data={"token": TOKEN, "next": path})
    assert path == login.headers["location"]


async def test_a_wrong_token_is_refused(site: Site) -> None:
    """A wrong token shows the form again with an error, status 401, and sets no cookie."""
    response = await site.http.post("/login", data={"token": "not-the-token-at-all", "next": "/"})
    assert 401 == response.status_code
    assert "not the admin token" in response.text
    assert "set-cookie" not in response.headers
    assert 303 == (await site.http.get("/")).status_code


async def test_the_right_token_sets_a_strict_httponly_session(site: Site) -> None:
    """The right token sets the session cookie (the HMAC, never the token), HttpOnly and
    SameSite=Strict, and redirects to where the operator was going."""
    response = await site.http.post("/login", data={"token": TOKEN, "next": "/customers/maryam@example.com"})
    assert 303 == response.status_code
    assert "/customers/maryam@example.com" == response.headers["location"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}={site.auth.session_value};")
    assert TOKEN not in cookie
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert 200 == (await site.http.get("/customers/maryam@example.com")).status_code


@pytest.mark.parametrize("target", ["//evil.example/x", "/\\evil.example", "/\t/evil.example",
                                    "https://evil.example/", "javascript:alert(1)"],
                         ids=["scheme-relative", "backslash", "tab", "absolute", "javascript"])
async def test_login_never_redirects_off_site(site: Site, target: str) -> None:
    """A `next` naming another site is replaced by the overview."""
    response = await site.http.post("/login", data={"token": TOKEN, "next": target})
    assert "/" == response.headers["location"]


async def test_the_bearer_token_also_opens_the_pages(site: Site) -> None:
    """Scripts may use the bearer token, as on the admin API."""
    response = await site.http.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert 200 == response.status_code
    wrong = await site.http.get("/", headers={"Authorization": "Bearer wrong-token-wrong-token"})
    assert 303 == wrong.status_code


async def test_the_overview_shows_health_conflicts_and_rejections(site: Site) -> None:
    """The overview lists both apps with a state, the charts, the parked conflict with a
    resolve form per side, and the rejected phone with its record and reason."""
    await site.login()
    response = await site.http.get("/")
    assert 200 == response.status_code
    page = response.text
    assert '<html lang="en" dir="ltr">' in page
    for app in ("crm", "shop"):
        row = re.search(rf'<tr data-app="{app}">(.*?)</tr>', page)
        assert row is not None, app
        assert re.search(r'class="state (ok|warn)">(in sync|lagging)<', row.group(1)), row.group(1)
    assert "Changes written per hour" in page and "Conflicts per hour" in page
    assert page.count("<svg") == 2 and "<rect" in page
    conflict = site.world.conflicts()[0]
    row = re.search(rf'<tr data-conflict="{conflict["id"]}">(.*?)</tr>', page, re.DOTALL)
    assert row is not None
    for app in ("crm", "shop"):
        assert f'<input type="hidden" name="take" value="{app}">' in row.group(1)
    assert "+14155550102" in row.group(1) and "+14155550103" in row.group(1)
    assert f'<div dir="auto">{PERSIAN[0]} {PERSIAN[1]}</div>' in row.group(1)  # whose conflict
    assert row.group(1).count(f'name="csrf" value="{site.auth.csrf_value}"') == 2
    assert "not a phone" in page and "not a phone number" in page
    assert "Content-Security-Policy" in response.headers and "no-store" == response.headers["cache-control"]


async def test_a_form_without_the_right_csrf_field_is_refused(site: Site) -> None:
    """A resolve posted without the csrf field, or with a wrong one, is refused (403) and
    changes nothing."""
    await site.login()
    conflict_id = site.world.conflicts()[0]["id"]
    missing = await site.http.post(f"/conflicts/{conflict_id}/resolve", data={"take": "crm"})
    wrong = await site.http.post(f"/conflicts/{conflict_id}/resolve", data={"take": "crm", "csrf": "0" * 64})
    assert (403, 403) == (missing.status_code, wrong.status_code)
    assert [conflict_id] == [c["id"] for c in site.world.conflicts()]


async def test_a_post_without_a_session_is_refused(site: Site) -> None:
    """Even with the right csrf value, a post needs the session."""
    conflict_id = site.world.conflicts()[0]["id"]
    response = await site.http.post(f"/conflicts/{conflict_id}/resolve",
                                    data={"take": "crm", "csrf": site.auth.csrf_value})
    assert 401 == response.status_code
    assert [conflict_id] == [c["id"] for c in site.world.conflicts()]


async def test_resolving_a_conflict_takes_that_apps_value_everywhere(site: Site) -> None:
    """Taking the shop's phone resolves the conflict, the overview says so and lists it no more,
    and the next sync writes the shop's phone to the CRM."""
    await site.login()
    conflict_id = site.world.conflicts()[0]["id"]
    response = await site.http.post(f"/conflicts/{conflict_id}/resolve",
                                    data={"take": "shop", "csrf": site.auth.csrf_value})
    assert 303 == response.status_code
    assert f"/?resolved={conflict_id}&took=shop" == response.headers["location"]
    assert [] == site.world.conflicts()
    page = (await site.http.get(response.headers["location"])).text
    assert f"Conflict {conflict_id} resolved: took shop" in page
    assert "No conflicts waiting." in page

    await site.world.sync()
    phones = {r["email"]: r["phone"] for app in ("crm", "shop") for r in site.world.rows(app)
              if r["email"] == "maryam@example.com" and app == "crm"}
    assert {"maryam@example.com": "+14155550103"} == phones
    again = await site.http.post(f"/conflicts/{conflict_id}/resolve",
                                 data={"take": "crm", "csrf": site.auth.csrf_value})
    assert 409 == again.status_code and "already resolved" in again.text


async def test_a_conflict_resolved_on_the_customer_page_comes_back_to_it(site: Site) -> None:
    """The customer page lists the customer's conflict with its resolve forms; resolving there
    redirects back to the customer page, which then shows the value taken, by the operator."""
    await site.login()
    conflict_id = site.world.conflicts()[0]["id"]
    page = (await site.http.get("/customers/maryam@example.com")).text
    back = "/customers/maryam%40example.com"
    assert f'<tr data-conflict="{conflict_id}">' in page and f'name="back" value="{back}"' in page
    response = await site.http.post(f"/conflicts/{conflict_id}/resolve",
                                    data={"take": "shop", "back": back, "csrf": site.auth.csrf_value})
    assert f"{back}?resolved={conflict_id}&took=shop" == response.headers["location"]
    after = (await site.http.get(response.headers["location"])).text
    phone = re.search(r'<tr data-field="phone">(.*?)</tr>', after)
    assert phone is not None
    assert "+14155550103" in phone.group(1) and "<td>shop</td>" in phone.group(1)
    # the operator's decision, naming the conflict it settled
    assert f'<td>operator <span class="muted">(conflict #{conflict_id})</span></td>' in phone.group(1)
    assert "waiting" not in phone.group(1)
    assert f"Conflict {conflict_id} resolved: took shop" in after


async def test_the_customer_page_shows_each_field_with_its_origin(site: Site) -> None:
    """By email: each field's value in an RTL-safe cell, the app it came from, when and by which
    rule; the links to both apps; the change log."""
    await site.login()
    response = await site.http.get("/customers/maryam@example.com")
    assert 200 == response.status_code
    page = response.text
    first = re.search(r'<tr data-field="first_name">(.*?)</tr>', page)
    assert first is not None
    assert f'<td dir="auto">{PERSIAN[0]}</td><td>crm</td>' in first.group(1)
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</td><td>[a-z_]+", first.group(1))
    phone = re.search(r'<tr data-field="phone">(.*?)</tr>', page)
    conflict_id = site.world.conflicts()[0]["id"]
    assert phone is not None
    # the value the first app read brought is kept while the conflict waits
    assert re.search(r'<td dir="auto">\+1415555010[23]</td><td>(crm|shop)</td>', phone.group(1))
    assert f"conflict #{conflict_id} waiting" in phone.group(1)
    cid = admin.find_customer(site.world.store, "maryam@example.com", identity_key=site.engine.identity_key)
    for app in ("crm", "shop"):
        rid = next(r["id"] for r in site.world.rows(app) if r["email"] == "maryam@example.com")
        assert f'<td>{app}</td><td dir="auto">{rid}</td><td>active</td>' in page
    assert cid in page
    assert "Change log" in page
    assert f'first_name: <bdi dir="auto">(none)</bdi> → <bdi dir="auto">{PERSIAN[0]}</bdi>' in page
    assert "fields: email, first_name, last_name, phone" in page  # a list of names, not old → new


async def test_a_field_a_conflict_decided_names_the_rule_and_the_conflict(site: Site) -> None:
    """A field whose provenance names the conflict that decided it (`conflict_id`, as the engine
    records a rule's decision) shows the rule and the conflict's number."""
    await site.login()
    customers = CustomerRow.__table__
    cid = admin.find_customer(site.world.store, "fatima@example.com", identity_key=site.engine.identity_key)
    with site.world.store.transaction() as conn:
        provenance = conn.execute(select(customers.c.provenance).where(customers.c.customer_id == cid)).scalar_one()
        provenance["last_name"] = {**provenance["last_name"], "rule": "last_writer", "conflict_id": 7}
        conn.execute(update(customers).where(customers.c.customer_id == cid).values(provenance=provenance))
    page = (await site.http.get(f"/customers/{cid}")).text
    row = re.search(r'<tr data-field="last_name">(.*?)</tr>', page)
    assert row is not None
    assert '<td>last_writer <span class="muted">(conflict #7)</span></td>' in row.group(1)


async def test_a_customer_is_found_by_app_record_and_search(site: Site) -> None:
    """`APP:RECORD_ID` finds the linked customer; the search box redirects to the page; an
    unknown customer is a 404 that echoes the query as text."""
    await site.login()
    rid = next(r["id"] for r in site.world.rows("crm") if r["email"] == "fatima@example.com")
    page = await site.http.get(f"/customers/crm:{rid}")
    assert 200 == page.status_code and ARABIC[1] in page.text
    search = await site.http.get("/customers", params={"q": f"crm:{rid}"})
    assert 303 == search.status_code and f"/customers/crm%3A{rid}" == search.headers["location"]
    missing = await site.http.get("/customers/" + quote("<b>nobody</b>@example.com"))
    assert 404 == missing.status_code
    assert "&lt;b&gt;nobody&lt;/b&gt;@example.com" in missing.text and "<b>nobody" not in missing.text


async def test_hostile_values_are_shown_as_text(site: Site) -> None:
    """A name holding a script tag shows as text: escaped on the customer page, never markup."""
    await site.login()
    page = (await site.http.get("/customers/mallory@example.com")).text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert HOSTILE not in page and "<script" not in page
    assert "O&#x27;Brien &amp; Co" in page


async def test_logout_ends_the_session(site: Site) -> None:
    """Logging out (a form with the csrf field) clears the cookie; pages redirect to login again."""
    await site.login()
    response = await site.http.post("/logout", data={"csrf": site.auth.csrf_value})
    assert 303 == response.status_code and "/login" == response.headers["location"]
    assert SESSION_COOKIE not in site.http.cookies
    assert 303 == (await site.http.get("/")).status_code


async def test_a_busy_store_is_a_503_page(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's lock held past its wait: a 503 page with Retry-After, not a 500."""
    await site.login()

    def busy(*args: object, **kw: object) -> None:
        raise StoreBusy("the store is locked")

    monkeypatch.setattr(admin, "app_status", busy)
    response = await site.http.get("/")
    assert 503 == response.status_code and "Retry-After" in response.headers
    assert "store is busy" in response.text


async def test_a_store_lock_wait_running_out_is_a_503_page(site: Site) -> None:
    """SQLite's `database is locked` after the store's own wait is a busy page, not a 500."""
    await site.login()
    conn = sqlite3.connect(site.world.folder / "store.db", isolation_level=None, timeout=0)
    conn.execute("BEGIN EXCLUSIVE")  # held by another program, as a backup tool would
    engine = site.world.store.engine

    def short_wait(dbapi_conn: Any, _record: Any) -> None:  # after the store's own 10 s
        dbapi_conn.execute("PRAGMA busy_timeout = 50")

    engine.dispose()
    event.listen(engine, "connect", short_wait)
    try:
        with structlog.testing.capture_logs() as logs:
            response = await site.http.get("/")
    finally:
        conn.rollback()
        conn.close()
        event.remove(engine, "connect", short_wait)
        engine.dispose()
    assert 503 == response.status_code and "store is busy" in response.text
    assert "5" == response.headers["retry-after"]
    assert [("dashboard.store_unavailable", "busy")] == [
        (e["event"], e.get("reason")) for e in logs if e["event"].startswith("dashboard.")]


async def test_no_personal_value_reaches_the_logs(site: Site) -> None:
    """Logging in, reading every page and resolving log ids and names of events, never the
    names, emails, phones or the token shown on the pages."""
    with structlog.testing.capture_logs() as logs:
        await site.http.post("/login", data={"token": "wrong-token-wrong-token"})
        await site.login()
        await site.http.get("/")
        await site.http.get("/customers/maryam@example.com")
        conflict_id = site.world.conflicts()[0]["id"]
        await site.http.post(f"/conflicts/{conflict_id}/resolve", data={"take": "shop", "csrf": site.auth.csrf_value})
    text = repr(logs)
    assert any(e["event"] == "dashboard.conflict_resolved" for e in logs)
    for secret in (TOKEN, "maryam", PERSIAN[0], "+1415555", site.auth.session_value):
        assert secret not in text
