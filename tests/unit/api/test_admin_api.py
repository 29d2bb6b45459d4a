"""The admin API under `/api` over a real engine on a real SQLite store with two `sql` apps
("crm" and "desk", SQLite databases in the test's folder), through the ASGI app in process."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from customer_sync.api.app import create_app
from customer_sync.api.auth import SESSION_COOKIE, AdminAuth
from customer_sync.config import Config, load_config
from customer_sync.engine.runner import Engine
from customer_sync.reload import Reloader
from customer_sync.store.db import Store, open_store

TOKEN = "admin-token-for-the-tests-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}

CONFIG = """\
[daemon]
store_url = "sqlite:///{tmp}/store.db"
normalize_workers = 0
poll_interval_s = 60

[conflicts]
default = "{rule}"

[apps.crm]
connector = "sql"
on_delete = "approve"

[apps.crm.settings]
url = "sqlite:///{tmp}/crm.db"
table = "people"
create_table = true
column_types = {{ email = "text", first_name = "text" }}

[apps.crm.fields]
email = "email"
first_name = "first_name"

[apps.desk]
connector = "sql"

[apps.desk.settings]
url = "sqlite:///{tmp}/desk.db"
table = "people"
create_table = true
column_types = {{ email = "text", first_name = "text" }}

[apps.desk.fields]
email = "email"
first_name = "first_name"
"""


def write_config(tmp: Path, *, rule: str = "last_writer") -> Path:
    path = tmp / "config.toml"
    path.write_text(CONFIG.format(tmp=tmp, rule=rule))
    return path


@dataclass
class Admin:
    """An engine over the two apps, its HTTP app with the admin token, and the apps' tables."""

    tmp: Path
    config_path: Path
    config: Config
    store: Store
    engine: Engine
    http: httpx.AsyncClient

    def rows(self, app: str) -> list[dict[str, Any]]:
        with sqlite3.connect(self.tmp / f"{app}.db") as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT id, email, first_name FROM people ORDER BY id")]

    def execute(self, app: str, sql: str, *params: Any) -> None:
        with sqlite3.connect(self.tmp / f"{app}.db") as conn:
            conn.execute(sql, params)

    def insert(self, app: str, rid: str, email: str, first_name: str) -> None:
        self.execute(app, "INSERT INTO people (id, email, first_name) VALUES (?, ?, ?)", rid, email, first_name)

    def edit(self, app: str, rid: str, first_name: str) -> None:
        self.execute(app, "UPDATE people SET first_name = ?, updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') "
                          "WHERE id = ?", first_name, rid)

    async def run(self) -> None:
        """One pass of a fresh engine (as `run --once`), on the same store and config."""
        async with Engine(self.config, self.store) as engine:
            await engine.run_once()

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.http.get(path, headers=BEARER, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        return await self.http.post(path, headers=BEARER, **kw)


@pytest.fixture
async def admin_env(tmp_path: Path) -> AsyncIterator[Admin]:
    path = write_config(tmp_path)
    config = load_config(path)
    store = open_store(config.daemon.store_url)
    try:
        async with Engine(config, store) as engine:
            await engine.run_once()  # creates the apps' tables
            app = create_app(engine, auth=AdminAuth(TOKEN), reloader=Reloader(path, config))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://sync.test") as http:
                yield Admin(tmp_path, path, config, store, engine, http)
    finally:
        store.close()


# -- auth -------------------------------------------------------------------------------------------


async def test_with_no_token_configured_the_admin_api_is_off(admin_env: Admin) -> None:
    app = create_app(admin_env.engine, auth=None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sync.test") as http:
        for path in ("/api/status", "/api/openapi.json", "/api/anything"):
            response = await http.get(path, headers=BEARER)
            assert 404 == response.status_code
            assert "CUSTOMER_SYNC_ADMIN_TOKEN" in response.json()["error"]
        assert 404 == (await http.post("/api/apps/crm/pause", headers=BEARER)).status_code
    assert [] == [r for r in (await admin_env.get("/api/status")).json() if r["state"] == "paused by operator"]


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token-wrong-token-wrong"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN}x"},
])
async def test_a_missing_or_wrong_token_is_a_401(admin_env: Admin, headers: dict[str, str]) -> None:
    for method, path in (("GET", "/api/status"), ("GET", "/api/openapi.json"),
                         ("POST", "/api/apps/crm/pause"), ("POST", "/api/config/reload")):
        response = await admin_env.http.request(method, path, headers=headers)
        assert 401 == response.status_code, path
        assert "Bearer" == response.headers["www-authenticate"]
        assert TOKEN not in response.text
    assert [None, None] == [r["paused_by_operator_at"] for r in (await admin_env.get("/api/status")).json()]


async def test_the_right_token_or_the_session_cookie_is_let_in(admin_env: Admin) -> None:
    assert 200 == (await admin_env.get("/api/status")).status_code
    cookie = {"Cookie": f"{SESSION_COOKIE}={AdminAuth(TOKEN).session_value}"}
    response = await admin_env.http.get("/api/status", headers=cookie)
    assert 200 == response.status_code
    assert ["crm", "desk"] == [r["app"] for r in response.json()]
    wrong = await admin_env.http.get("/api/status", headers={"Cookie": f"{SESSION_COOKIE}={'0' * 64}"})
    assert 401 == wrong.status_code


async def test_the_openapi_document_names_every_route(admin_env: Admin) -> None:
    doc = (await admin_env.get("/api/openapi.json")).json()
    assert {
        "/status", "/customers/{who}", "/conflicts", "/conflicts/{conflict_id}/resolve",
        "/dead-letters", "/dead-letters/{dead_letter_id}/replay", "/deletes",
        "/deletes/{request_id}/approve", "/deletes/{request_id}/reject", "/apps/{app}/pause",
        "/apps/{app}/resume", "/apps/{app}/resync", "/config/reload",
    } == set(doc["paths"])
    status = doc["paths"]["/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert "AppStatus" in str(status)
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


# -- status, customers ----------------------------------------------------------------------------


async def test_a_customer_by_id_email_or_record_with_links_log_and_explain(admin_env: Admin) -> None:
    admin_env.insert("crm", "c1", "Ann@Example.com", "Ann")
    await admin_env.run()
    [desk] = admin_env.rows("desk")

    by_email = (await admin_env.get("/api/customers/ann@example.com")).json()
    by_record = (await admin_env.get("/api/customers/crm:c1")).json()
    by_id = (await admin_env.get(f"/api/customers/{by_email['customer_id']}")).json()
    assert by_email == by_record == by_id
    assert {("crm", "c1", "active"), ("desk", desk["id"], "active")} == {
        (lk["app"], lk["app_record_id"], lk["state"]) for lk in by_id["links"]}
    assert {"value": "Ann", "app": "crm", "rule": "first_value"} == {
        k: by_id["fields"]["first_name"][k] for k in ("value", "app", "rule")}
    assert {"observed", "decided", "written"} <= {e["kind"] for e in by_id["log"]}
    assert [] == by_id["rejections"]

    # a record id may hold a slash (a path-like id of some apps)
    admin_env.insert("crm", "folder/c2", "bea@example.com", "Bea")
    await admin_env.run()
    assert "Bea" == (await admin_env.get("/api/customers/crm:folder/c2")).json()["fields"]["first_name"]["value"]

    for missing in ("nobody@example.com", "crm:c999", "no-such-id"):
        response = await admin_env.get(f"/api/customers/{missing}")
        assert 404 == response.status_code
        assert response.json()["error"]


async def test_status_per_app(admin_env: Admin) -> None:
    admin_env.insert("crm", "c1", "ann@example.com", "Ann")
    await admin_env.run()
    rows = {r["app"]: r for r in (await admin_env.get("/api/status")).json()}
    assert {"crm", "desk"} == set(rows)
    assert 1 == rows["desk"]["linked"] == rows["crm"]["linked"]
    assert "ok" == rows["crm"]["state"]
    assert rows["crm"]["last_poll_at"].endswith(("+00:00", "Z"))
    # the dashboard's health word, from the same reading: both apps were just synced
    assert {"in sync"} == {r["health"] for r in rows.values()}
    assert 1 == rows["desk"]["recent_written"] and 0 == rows["desk"]["recent_errors"]


# -- pause, resume, resync ------------------------------------------------------------------------


async def test_a_paused_app_stays_unsynced_across_restarts_until_resumed(admin_env: Admin) -> None:
    paused = await admin_env.post("/api/apps/desk/pause")
    assert 200 == paused.status_code
    assert {"app": "desk", "paused": True, "changed": True} == paused.json()
    assert {"app": "desk", "paused": True, "changed": False} == (await admin_env.post("/api/apps/desk/pause")).json()
    status = (await admin_env.get("/api/status")).json()
    assert {"crm": "ok", "desk": "paused by operator"} == {r["app"]: r["state"] for r in status}
    assert "paused" == {r["app"]: r["health"] for r in status}["desk"]

    admin_env.insert("crm", "c1", "ann@example.com", "Ann")
    admin_env.insert("desk", "d1", "bea@example.com", "Bea")
    await admin_env.run()  # a fresh engine: the pause is in the store
    await admin_env.run()
    assert [] == [r["email"] for r in admin_env.rows("desk") if r["email"] == "ann@example.com"]
    assert ["ann@example.com"] == [r["email"] for r in admin_env.rows("crm")]  # desk not polled

    resumed = await admin_env.post("/api/apps/desk/resume")
    assert {"app": "desk", "paused": False, "changed": True} == resumed.json()
    await admin_env.run()
    assert {"ann@example.com", "bea@example.com"} == {r["email"] for r in admin_env.rows("desk")}
    assert {"ann@example.com", "bea@example.com"} == {r["email"] for r in admin_env.rows("crm")}
    log = (await admin_env.get("/api/customers/crm:c1")).json()["log"]
    assert "ok" == {r["app"]: r["state"] for r in (await admin_env.get("/api/status")).json()}["desk"]
    assert log  # the customer exists and was written to desk after the resume
    assert "no app 'nope'" in (await admin_env.post("/api/apps/nope/pause")).json()["error"]
    assert 404 == (await admin_env.post("/api/apps/nope/resume")).status_code


async def test_resync_forgets_the_cursor(admin_env: Admin) -> None:
    admin_env.insert("crm", "c1", "ann@example.com", "Ann")
    await admin_env.run()
    with admin_env.store.transaction() as conn:
        before = conn.exec_driver_sql("SELECT count(*) FROM cursors WHERE app = 'crm'").scalar()
    assert 1 == before
    response = await admin_env.post("/api/apps/crm/resync")
    assert 200 == response.status_code
    assert "crm" == response.json()["app"]
    with admin_env.store.transaction() as conn:
        assert 0 == conn.exec_driver_sql("SELECT count(*) FROM cursors WHERE app = 'crm'").scalar()
    assert 404 == (await admin_env.post("/api/apps/nope/resync")).status_code


# -- conflicts --------------------------------------------------------------------------------------


@pytest.fixture
async def manual_env(tmp_path: Path) -> AsyncIterator[Admin]:
    """As `admin_env`, with every conflict parked for the operator."""
    path = write_config(tmp_path, rule="manual")
    config = load_config(path)
    store = open_store(config.daemon.store_url)
    try:
        async with Engine(config, store) as engine:
            await engine.run_once()
            app = create_app(engine, auth=AdminAuth(TOKEN), reloader=None)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://sync.test") as http:
                yield Admin(tmp_path, path, config, store, engine, http)
    finally:
        store.close()


async def test_a_parked_conflict_is_listed_and_resolved(manual_env: Admin) -> None:
    env = manual_env
    env.insert("crm", "c1", "ann@example.com", "Ann")
    await env.run()
    [desk] = env.rows("desk")
    env.edit("crm", "c1", "Anna")
    env.edit("desk", desk["id"], "Annie")
    await env.run()
    [conflict] = (await env.get("/api/conflicts")).json()
    assert ("field", "first_name", "parked") == (conflict["kind"], conflict["field"], conflict["status"])

    assert 400 == (await env.post(f"/api/conflicts/{conflict['id']}/resolve", json={"take": "nope"})).status_code
    assert 422 == (await env.post(f"/api/conflicts/{conflict['id']}/resolve", json={})).status_code
    assert 404 == (await env.post("/api/conflicts/999/resolve", json={"take": "crm"})).status_code
    resolved = await env.post(f"/api/conflicts/{conflict['id']}/resolve", json={"take": "desk"})
    assert 200 == resolved.status_code
    assert {"field": "first_name", "planned": 1} == {k: resolved.json()[k] for k in ("field", "planned")}
    again = await env.post(f"/api/conflicts/{conflict['id']}/resolve", json={"take": "desk"})
    assert 409 == again.status_code
    assert "already resolved" in again.json()["error"]

    await env.run()
    assert ["Annie"] == [r["first_name"] for r in env.rows("crm")]
    assert [] == (await env.get("/api/conflicts")).json()
    assert [conflict["id"]] == [c["id"] for c in (await env.get("/api/conflicts?status=resolved")).json()]
    explained = (await env.get("/api/customers/crm:c1")).json()["fields"]["first_name"]
    assert ("Annie", "operator", conflict["id"]) == (explained["value"], explained["rule"], explained["conflict_id"])
    assert 422 == (await env.get("/api/conflicts?status=bogus")).status_code


# -- deletes ----------------------------------------------------------------------------------------


async def test_deletes_waiting_for_approval_are_listed_approved_and_rejected(admin_env: Admin) -> None:
    admin_env.insert("crm", "c1", "ann@example.com", "Ann")
    admin_env.insert("crm", "c2", "bea@example.com", "Bea")
    await admin_env.run()
    admin_env.execute("crm", "DELETE FROM people")
    async with Engine(admin_env.config, admin_env.store) as engine:
        await engine.run_once(reconcile=True)  # the id scan sees the deletes
    waiting = (await admin_env.get("/api/deletes")).json()
    assert {"ann@example.com", "bea@example.com"} == {r["email"] for r in admin_env.rows("desk")}
    by_record = {r["app_record_id"]: r["id"] for r in waiting}
    assert {"c1", "c2"} == set(by_record)

    approved = await admin_env.post(f"/api/deletes/{by_record['c1']}/approve")
    assert {"app": "crm", "approved": True} == {k: approved.json()[k] for k in ("app", "approved")}
    rejected = await admin_env.post(f"/api/deletes/{by_record['c2']}/reject")
    assert False is rejected.json()["approved"]
    assert 404 == (await admin_env.post(f"/api/deletes/{by_record['c1']}/approve")).status_code
    assert 404 == (await admin_env.post("/api/deletes/12345/reject")).status_code
    assert [] == (await admin_env.get("/api/deletes")).json()

    await admin_env.run()
    assert ["bea@example.com"] == [r["email"] for r in admin_env.rows("desk")]


# -- dead letters -----------------------------------------------------------------------------------


async def test_a_dead_letter_is_listed_and_its_replay_reaches_the_app(admin_env: Admin) -> None:
    # desk refuses one name (a CHECK constraint), so its create becomes a dead letter
    admin_env.execute("desk", "DROP TABLE people")
    admin_env.execute("desk", "CREATE TABLE people (id TEXT PRIMARY KEY, updated_at TIMESTAMP DEFAULT "
                              "(strftime('%Y-%m-%d %H:%M:%f', 'now')), email TEXT, "
                              "first_name TEXT CHECK (first_name <> 'Refused'))")
    admin_env.insert("crm", "c1", "ann@example.com", "Refused")
    await admin_env.run()
    assert [] == admin_env.rows("desk")
    [dead] = (await admin_env.get("/api/dead-letters")).json()
    assert ("desk", "outbox", None) == (dead["app"], dead["source"], dead["replayed_at"])
    assert "CHECK constraint failed" in dead["error"]
    assert [dead["id"]] == [d["id"] for d in (await admin_env.get("/api/dead-letters?app=desk")).json()]
    assert [] == (await admin_env.get("/api/dead-letters?app=crm")).json()
    assert 404 == (await admin_env.get("/api/dead-letters?app=nope")).status_code

    assert 1 == {r["app"]: r for r in (await admin_env.get("/api/status")).json()}["desk"]["dead_letters"]
    assert 'customer_sync_dead_letters{app="desk"} 1.0' in (await admin_env.http.get("/metrics")).text

    # the operator fixes the table, then replays the write
    admin_env.execute("desk", "DROP TABLE people")
    admin_env.execute("desk", "CREATE TABLE people (id TEXT PRIMARY KEY, updated_at TIMESTAMP DEFAULT "
                              "(strftime('%Y-%m-%d %H:%M:%f', 'now')), email TEXT, first_name TEXT)")
    replayed = await admin_env.post(f"/api/dead-letters/{dead['id']}/replay")
    assert 200 == replayed.status_code
    assert (True, 1) == (replayed.json()["replayed"], replayed.json()["planned"])
    assert 0 == {r["app"]: r for r in (await admin_env.get("/api/status")).json()}["desk"]["dead_letters"]
    assert 'customer_sync_dead_letters{app="desk"} 0.0' in (await admin_env.http.get("/metrics")).text
    again = await admin_env.post(f"/api/dead-letters/{dead['id']}/replay")
    assert (200, False, 0) == (again.status_code, again.json()["replayed"], again.json()["planned"])
    with admin_env.store.transaction() as conn:
        outbox = conn.exec_driver_sql("SELECT app, op, state, attempts FROM outbox").all()
    assert [("desk", "create", "pending", 0)] == [tuple(r) for r in outbox]

    await admin_env.run()
    assert [("ann@example.com", "Refused")] == [(r["email"], r["first_name"]) for r in admin_env.rows("desk")]
    assert [] == (await admin_env.get("/api/dead-letters")).json()
    assert [dead["id"]] == [d["id"] for d in
                            (await admin_env.get("/api/dead-letters?include_replayed=true")).json()]
    log = (await admin_env.get("/api/customers/crm:c1")).json()["log"]
    assert any(e["kind"] == "decided" and f"dead letter {dead['id']} replayed by operator" in (e["reason"] or "")
               for e in log)
    assert 404 == (await admin_env.post("/api/dead-letters/999/replay")).status_code
    assert 422 == (await admin_env.post("/api/dead-letters/0/replay")).status_code
    assert 422 == (await admin_env.post(f"/api/dead-letters/{2**70}/replay")).status_code


# -- reload -----------------------------------------------------------------------------------------


async def test_reload_applies_a_valid_config_and_refuses_an_invalid_one(admin_env: Admin) -> None:
    text = admin_env.config_path.read_text()
    admin_env.config_path.write_text(text.replace('poll_interval_s = 60', 'poll_interval_s = 30'))
    applied = await admin_env.post("/api/config/reload")
    assert 200 == applied.status_code
    assert {"applied": True, "apps": ["crm", "desk"]} == {k: applied.json()[k] for k in ("applied", "apps")}

    admin_env.config_path.write_text(text.replace('connector = "sql"\non_delete', 'connector = "nope"\non_delete'))
    refused = await admin_env.post("/api/config/reload")
    assert 409 == refused.status_code
    assert False is refused.json()["applied"]
    assert "nope" in refused.json()["reason"]

    admin_env.config_path.write_text(text.replace("store.db", "other.db"))
    restart = await admin_env.post("/api/config/reload")
    assert 409 == restart.status_code
    assert "daemon.store_url" in restart.json()["reason"]


async def test_reload_without_a_reloader_is_a_503(manual_env: Admin) -> None:
    response = await manual_env.post("/api/config/reload")
    assert 503 == response.status_code
    assert "config file" in response.json()["error"]


async def test_a_busy_store_is_a_503_with_retry_after(admin_env: Admin, monkeypatch: pytest.MonkeyPatch) -> None:
    from customer_sync.engine import admin
    from customer_sync.errors import StoreBusy

    def busy(*args: Any, **kw: Any) -> Any:
        raise StoreBusy("the store is locked by another writer")

    monkeypatch.setattr(admin, "app_status", busy)
    response = await admin_env.get("/api/status")
    assert 503 == response.status_code
    assert "10" == response.headers["retry-after"]
