"""Webhook intake over HTTP: verified deliveries are durable in the inbox before the 2xx."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping

import httpx
import pytest
from sqlalchemy import select

from customer_sync.api.app import MAX_BODY_BYTES, create_app
from customer_sync.config import load_config
from customer_sync.engine.runner import Engine
from customer_sync.errors import ConnectorError
from customer_sync.sdk.connector import Capability, Change
from customer_sync.store.tables import InboxItem
from customer_sync.testing.fake_connector import FakeApp, FakeConnector

SECRET = b"hook-secret"


class HookedConnector(FakeConnector):
    """The fake connector with HMAC-signed webhooks, as a vendor with webhooks would have."""

    capabilities = FakeConnector.capabilities | Capability.WEBHOOKS

    def verify_webhook(self, headers: Mapping[str, str], body: bytes, *, url: str = "", method: str = "POST") -> bool:
        given = {k.lower(): v for k, v in headers.items()}.get("x-signature", "")
        expected = hmac.new(SECRET, method.encode() + url.encode() + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(given, expected)

    def parse_webhook(self, body: bytes) -> list[Change]:
        try:
            events = json.loads(body)
            return [Change(app_record_id=str(e["id"]), kind=e.get("kind", "upsert")) for e in events]
        except (ValueError, KeyError, TypeError) as exc:
            raise ConnectorError("malformed webhook body", app=self.app, connector=self.name) from exc


def sign(url: str, body: bytes) -> str:
    return hmac.new(SECRET, b"POST" + url.encode() + body, hashlib.sha256).hexdigest()


@pytest.fixture
async def client(tmp_path):
    from customer_sync.store.db import open_store

    store = open_store(f"sqlite:///{tmp_path}/store.db")
    config = load_config(data={"apps": {
        "crm": {"connector": "hooked", "fields": {"email": "email"}},
        "desk": {"connector": "fake", "fields": {"email": "email"}},
    }}, connectors={"hooked": HookedConnector, "fake": FakeConnector})
    crm = HookedConnector(config.apps["crm"].connector_settings, app="crm", data=FakeApp("hook-crm"))
    engine = Engine(config, store, connectors={"crm": crm})
    async with engine:
        transport = httpx.ASGITransport(app=create_app(engine))
        async with httpx.AsyncClient(transport=transport, base_url="http://sync.test") as http:
            yield http, store
    store.close()


def pending(store) -> list[str]:
    with store.transaction() as conn:
        return list(conn.execute(select(InboxItem.__table__.c.app_record_id)).scalars())


async def test_verified_delivery_is_in_the_inbox_before_the_answer(client):
    """A correctly signed delivery is answered 200 and its changes are already in the inbox."""
    http, store = client
    body = json.dumps([{"id": 7}, {"id": 8, "kind": "delete"}]).encode()
    url = "http://sync.test/webhooks/crm"
    response = await http.post("/webhooks/crm", content=body, headers={"X-Signature": sign(url, body)})
    assert (200, {"accepted": 2}) == (response.status_code, response.json())
    assert ["7", "8"] == sorted(pending(store))


@pytest.mark.parametrize(("path", "headers", "body", "status"), [
    ("/webhooks/crm", {"X-Signature": "0" * 64}, b"[]", 401),
    ("/webhooks/crm", {}, b"[]", 401),
    ("/webhooks/nope", {}, b"[]", 404),
    ("/webhooks/desk", {}, b"[]", 404),
], ids=["bad signature", "missing signature", "unknown app", "app without webhooks"])
async def test_refused_deliveries_get_a_clear_status_and_store_nothing(client, path, headers, body, status):
    """Bad, unsigned, unknown-app and no-webhook deliveries are refused and leave the inbox empty."""
    http, store = client
    response = await http.post(path, content=body, headers=headers)
    assert status == response.status_code
    assert [] == pending(store)


async def test_an_app_without_webhooks_has_no_webhook_url(client):
    """A POST or GET to the webhook URL of an app whose connector takes no webhooks is 404
    (there is nothing there), not a 400 "malformed delivery" that blames the body."""
    http, store = client
    posted = await http.post("/webhooks/desk", content=b"[]")
    checked = await http.get("/webhooks/desk")
    assert (404, 404) == (posted.status_code, checked.status_code)
    assert {"error": "app takes no webhooks"} == posted.json()
    assert [] == pending(store)


async def test_malformed_signed_body_is_400(client):
    """A signed body that is not the vendor's shape is a 400, not a crash."""
    http, store = client
    body = b"{not json"
    response = await http.post("/webhooks/crm", content=body,
                               headers={"X-Signature": sign("http://sync.test/webhooks/crm", body)})
    assert 400 == response.status_code
    assert [] == pending(store)


async def test_oversized_body_is_413(client):
    """A body over the cap is refused before it is read into memory."""
    http, _ = client
    response = await http.post("/webhooks/crm", content=b"x" * (MAX_BODY_BYTES + 1))
    assert 413 == response.status_code


async def test_health_and_readiness(client):
    """/healthz answers while the process runs; /readyz is ready when every app is open."""
    http, _ = client
    assert 200 == (await http.get("/healthz")).status_code
    ready = await http.get("/readyz")
    assert (200, "ready") == (ready.status_code, ready.json()["status"])


async def test_a_vendors_url_check_is_answered_and_stores_nothing(client):
    """A GET on a configured app's webhook URL (how Mailchimp checks a callback URL before it
    saves a webhook) is 200 and writes nothing; an unknown app is 404."""
    http, store = client
    ok = await http.get("/webhooks/crm?secret=anything")
    unknown = await http.get("/webhooks/nope")
    assert (200, 404) == (ok.status_code, unknown.status_code)
    assert [] == pending(store)
