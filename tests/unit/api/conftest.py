"""Fixtures for the intake tests: the daemon's HTTP surface over HubSpot and Zendesk apps, in
process (ASGI) or as a real uvicorn server in a process of its own, and deliveries signed as
each vendor signs them (the sandbox simulators' signing functions)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from customer_sync.api.app import create_app
from customer_sync.engine.runner import Engine
from customer_sync.sandbox._common import epoch_ms
from customer_sync.sandbox.hubspot import sign_v3
from customer_sync.sandbox.zendesk import sign as sign_zendesk
from customer_sync.store.db import Store, open_store
from customer_sync.store.tables import InboxItem

_SERVER_SCRIPT = Path(__file__).with_name("_intake_server.py")
_spec = importlib.util.spec_from_file_location("intake_server", _SERVER_SCRIPT)
assert _spec is not None and _spec.loader is not None
server_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(server_script)

BASE_URL = "http://sync.test"


def hubspot_headers(url: str, body: bytes) -> dict[str, str]:
    """HubSpot's v3 signature over (POST, url, body, now in epoch ms). The simulator's `sign_v3`
    takes text, so the same formula is applied here to bodies that are not UTF-8."""
    timestamp = str(epoch_ms(datetime.now(UTC)))
    secret = server_script.HUBSPOT_SECRET
    try:
        signature = sign_v3(secret, "POST", url, body.decode("utf-8"), timestamp)
    except UnicodeDecodeError:
        message = b"POST" + url.encode() + body + timestamp.encode()
        digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
        signature = base64.b64encode(digest).decode()
    return {"Content-Type": "application/json", "X-HubSpot-Request-Timestamp": timestamp,
            "X-HubSpot-Signature-v3": signature}


def zendesk_headers(body: bytes) -> dict[str, str]:
    """Zendesk's signature over (now as ISO 8601, body)."""
    timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"Content-Type": "application/json", "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
            "X-Zendesk-Webhook-Signature": sign_zendesk(server_script.ZENDESK_SECRET, timestamp,
                                                        body)}


def signed(app: str, base_url: str, body: bytes) -> dict[str, str]:
    """Headers that make `body` a validly signed delivery to `app` ("crm" or "desk")."""
    if app == "crm":
        return hubspot_headers(f"{base_url}/webhooks/crm", body)
    return zendesk_headers(body)


def inbox(store_or_path: Store | Path) -> list[dict[str, Any]]:
    """Every inbox row, oldest first, read without the store's own (write-locking) transaction."""
    if isinstance(store_or_path, Path):
        import sqlite3

        with sqlite3.connect(store_or_path) as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM inbox ORDER BY seq").fetchall()
        return [{**dict(r), "payload": json.loads(r["payload"]) if r["payload"] else None}
                for r in rows]
    table = InboxItem.__table__
    with store_or_path.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).order_by(table.c.seq)).mappings()]


@pytest.fixture
async def intake(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Store]]:
    """The ASGI app over an opened engine with `crm` (HubSpot) and `desk` (Zendesk), on a SQLite
    store in `tmp_path`; an HTTP client on it, and the store."""
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = server_script.intake_config(url)
    store = open_store(url)
    async with Engine(config, store, connectors=server_script.intake_connectors(config)) as engine:
        transport = httpx.ASGITransport(app=create_app(engine))
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            yield http, store
    store.close()


@dataclass
class Server:
    """A real intake server process: where it listens, its pid, its store file and its log."""

    base_url: str
    pid: int
    store_path: Path
    log_path: Path

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON lines it has logged so far (a torn last line is left for the next read)."""
        lines = []
        for text in self.log_path.read_text().splitlines():
            try:
                lines.append(json.loads(text))
            except ValueError:
                lines.append({"unparsed": text})
        return lines

    def peak_rss_kb(self) -> int:
        """The process's peak resident set so far (`VmHWM`), in kB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc status")


@pytest.fixture
def intake_server(tmp_path: Path) -> Iterator[Server]:
    """`_intake_server.py` running under uvicorn in its own process, on a fresh SQLite store."""
    store_path = tmp_path / "store.db"
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, str(_SERVER_SCRIPT), f"sqlite:///{store_path}"],
            stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()  # printed once the socket listens
        if not port.isdigit():
            process.kill()
            process.wait()
            raise AssertionError(f"the intake server did not start:\n{log_path.read_text()}")
        yield Server(f"http://127.0.0.1:{port}", process.pid, store_path, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(condition: Any, *, timeout_s: float = 30.0, what: str = "condition") -> None:
    """Return once `condition()` is true; fail after `timeout_s`. Polls, never a fixed sleep
    that the test relies on."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
