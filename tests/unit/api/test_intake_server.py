"""The intake as the daemon serves it: uvicorn in a process of its own, measured from outside.

Its memory while a 200 MB chunked body streams in, its logs when a client goes away, and its
answers while another process holds the SQLite store's write lock.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from customer_sync.api.app import MAX_BODY_BYTES, RETRY_AFTER_S
from customer_sync.sandbox.hubspot import HubSpotSimulator
from customer_sync.sandbox.zendesk import ZendeskSimulator

from .conftest import Server, inbox, server_script, signed, wait_for  # noqa: TID252

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads the server's peak memory from /proc")

STREAMED_BYTES = 200 * 1024 * 1024
CHUNK = 64 * 1024


def test_a_200_mb_chunked_body_never_grows_the_server_by_more_than_a_few_mb(
    intake_server: Server,
) -> None:
    """The body is read as it streams in and given up on at the cap: the server's peak resident
    memory (VmHWM) grows by a few MB while a client streams 200 MB, where buffering it first
    grew it by 370 MB (87 to 458 MB, seen before the fix)."""
    sent = 0

    def body() -> Iterator[bytes]:
        nonlocal sent
        while sent < STREAMED_BYTES:
            sent += CHUNK
            yield b"[" * CHUNK

    with httpx.Client(base_url=intake_server.base_url, timeout=60) as http:
        # Warm up every code path of a refusal first, so that the measure is of the body alone.
        warmup = http.post("/webhooks/crm", content=iter([b"[" * CHUNK] * 40))
        before_kb = intake_server.peak_rss_kb()
        response = http.post("/webhooks/crm", content=body(),
                             headers=signed("crm", intake_server.base_url, b""))
        after_kb = intake_server.peak_rss_kb()

    grown_mb = (after_kb - before_kb) / 1024
    print(f"client streamed {sent / 2**20:.0f} MB; server peak RSS {before_kb / 1024:.1f} -> "
          f"{after_kb / 1024:.1f} MB (+{grown_mb:.1f} MB); cap {MAX_BODY_BYTES / 1e6:.0f} MB")
    assert (413, 413) == (warmup.status_code, response.status_code)
    assert grown_mb < 16, f"the server grew by {grown_mb:.1f} MB"
    assert [] == inbox(intake_server.store_path)


@pytest.mark.parametrize(
    "framing", [b"Content-Length: 100000\r\n", b"Transfer-Encoding: chunked\r\n"],
    ids=["content-length", "chunked"])
def test_a_client_that_goes_away_mid_body_is_an_info_line_not_an_error(
    intake_server: Server, framing: bytes
) -> None:
    """A vendor that drops the connection halfway through the body is logged once at info
    (`webhook.client_disconnected`); nothing is logged as an error, with a traceback or not."""
    host, port = intake_server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(b"POST /webhooks/crm HTTP/1.1\r\nHost: sync.test\r\n" + framing + b"\r\n")
        conn.sendall(b"400\r\n" + b"[" * 1024 if b"chunked" in framing else b"[" * 1024)

    def is_noted(line: dict[str, object]) -> bool:
        return line.get("event") == "webhook.client_disconnected" or line.get("level") == "error"

    wait_for(lambda: any(is_noted(line) for line in intake_server.log_lines()),
             what="the disconnect to be logged")
    with httpx.Client(base_url=intake_server.base_url) as http:
        assert 200 == http.get("/healthz").status_code  # and the server is still there
    lines = intake_server.log_lines()
    assert [] == [line for line in lines if line.get("level") in ("error", "critical")
                  or "exception" in line or "unparsed" in line]
    (disconnect,) = [line for line in lines if line.get("event") == "webhook.client_disconnected"]
    assert ("info", "crm") == (disconnect["level"], disconnect["app"])


class Vendors:
    """A HubSpot portal and a Zendesk account that deliver to the server, as they would."""

    def __init__(self, base_url: str) -> None:
        self.hubspot = HubSpotSimulator(app_secret=server_script.HUBSPOT_SECRET,
                                        webhook_url=f"{base_url}/webhooks/crm")
        self.zendesk = ZendeskSimulator(webhook_secret=server_script.ZENDESK_SECRET,
                                        webhook_url=f"{base_url}/webhooks/desk")

    def make_changes(self) -> tuple[str, str]:
        """A contact created in HubSpot and a user created in Zendesk; their ids."""
        contact_id = self.hubspot.add_contact({"email": "a.person@example.org"})
        user_id = self.zendesk.add_user(name="A Person", email="a.person@example.org")
        return str(contact_id), str(user_id)

    async def deliver(self, http: httpx.AsyncClient) -> None:
        """Each vendor delivers what it holds (HubSpot keeps a refused batch for a retry,
        Zendesk a refused event)."""
        await self.hubspot.flush_webhooks(http)
        await self.zendesk.flush_webhooks(http)


async def test_a_busy_store_is_a_quick_503_and_the_redelivery_is_kept(
    intake_server: Server,
) -> None:
    """While another process holds the SQLite store's write lock, each vendor's delivery gets 503
    with Retry-After within 2 s (by design about 0.5 s), /healthz answers 200 while a delivery
    waits, and /readyz says the store is busy; once the lock is released the vendors' retries are
    accepted and the inbox holds each change exactly once."""
    vendors = Vendors(intake_server.base_url)
    contact_id, user_id = vendors.make_changes()
    answers: list[tuple[str, int, str | None, float]] = []

    async def timed(request: httpx.Request) -> None:
        request.extensions["started"] = time.monotonic()

    async def record(response: httpx.Response) -> None:
        took = time.monotonic() - response.request.extensions["started"]
        answers.append((response.request.url.path, response.status_code,
                        response.headers.get("retry-after"), took))

    lock = sqlite3.connect(intake_server.store_path, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # another process's writer (a backup, a CLI command)
        hooks = {"request": [timed], "response": [record]}
        async with httpx.AsyncClient(base_url=intake_server.base_url, timeout=30,
                                     event_hooks=hooks) as http:
            delivery = asyncio.create_task(vendors.deliver(http))
            health = await http.get("/healthz")
            delivery_was_waiting = not delivery.done()
            await delivery
            ready = await http.get("/readyz")
            during = list(answers)
            lock.execute("ROLLBACK")
            answers.clear()
            await vendors.deliver(http)  # the vendors retry
            after = list(answers)
    finally:
        lock.close()

    print("while locked:", [(p, s, r, f"{t:.3f} s") for p, s, r, t in during])
    deliveries = [(path, status, retry) for path, status, retry, _ in during
                  if "/webhooks/" in path]
    assert [("/webhooks/crm", 503, str(RETRY_AFTER_S)),
            ("/webhooks/desk", 503, str(RETRY_AFTER_S))] == deliveries
    assert all(took < 2.0 for path, _, _, took in during if "/webhooks/" in path)
    assert (200, True) == (health.status_code, delivery_was_waiting)
    assert (503, "store busy") == (ready.status_code, ready.json()["status"])
    assert [("/webhooks/crm", 200), ("/webhooks/desk", 200)] == [(p, s) for p, s, _, _ in after]
    assert ([], []) == (vendors.hubspot.pending_webhooks, vendors.zendesk.pending_webhooks)
    rows = inbox(intake_server.store_path)
    assert [("crm", contact_id, None, "webhook", "pending"),
            ("desk", user_id, None, "webhook", "pending")] == [
        (r["app"], r["app_record_id"], r["payload"], r["source"], r["state"]) for r in rows]


def test_the_served_app_reads_deliveries_as_the_vendors_sign_them(intake_server: Server) -> None:
    """A sanity check of the server fixture itself: signed deliveries are accepted, with the
    changes in the inbox."""
    body = json.dumps([{"subscriptionType": "contact.deletion", "objectId": 77,
                        "occurredAt": int(datetime.now(UTC).timestamp() * 1000)}]).encode()
    with httpx.Client(base_url=intake_server.base_url) as http:
        response = http.post("/webhooks/crm", content=body,
                             headers=signed("crm", intake_server.base_url, body))
    assert (200, {"accepted": 1}) == (response.status_code, response.json())
    assert [("crm", "77", True)] == [(r["app"], r["app_record_id"], bool(r["deleted"]))
                                     for r in inbox(intake_server.store_path)]
