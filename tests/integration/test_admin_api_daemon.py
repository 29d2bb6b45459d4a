"""The admin API of the real daemon (`customer-sync run` in a process of its own, two `sql`
apps in SQLite files, the token in its environment), over real HTTP: a pause holds an app's
writes until the resume, and a reload through the API refuses an invalid config and swaps in
a valid one, whose new app then syncs. Waits for conditions, never for fixed times."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.unit import test_lifecycle as lifecycle
from tests.unit.test_lifecycle import _insert_a, _problems, _seed, rows, wait_for, write_config

TOKEN = "daemon-admin-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
daemon_procs = lifecycle.daemon_procs  # the fixture: daemons killed by pid if a test left one


def test_pause_resume_and_reload_through_the_admin_api_of_the_running_daemon(
    tmp_path: Path, daemon_procs: list[subprocess.Popen[str]],
) -> None:
    config = write_config(tmp_path)
    _seed(tmp_path, config, 1)
    log_path = tmp_path / "daemon.log"
    with log_path.open("w", encoding="utf-8") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "customer_sync", "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=log_file, text=True,
                                env={**os.environ, "CUSTOMER_SYNC_ADMIN_TOKEN": TOKEN})
    daemon_procs.append(proc)
    valid = config.read_text(encoding="utf-8")
    port = re.search(r'listen = "127.0.0.1:(\d+)"', valid).group(1)  # type: ignore[union-attr]
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api", timeout=30)

    def status() -> dict[str, dict[str, object]]:
        response = api.get("/status", headers=AUTH)
        assert 200 == response.status_code, response.text
        return {row["app"]: row for row in response.json()}

    wait_for(lambda: bool(rows(tmp_path / "b.db", "people")), "the first sync", proc=proc)
    assert 401 == api.get("/status").status_code
    assert 401 == api.get("/status", headers={"Authorization": "Bearer not-the-token-at-all"}).status_code

    # paused, b receives nothing: the write waits in the outbox
    assert {"app": "b", "paused": True, "changed": True} == api.post("/apps/b/pause", headers=AUTH).json()
    assert "paused by operator" == status()["b"]["state"]
    _insert_a(tmp_path, "a-paused", "paused@example.com")
    wait_for(lambda: status()["b"]["pending_writes"] == 1, "the write to b to wait", proc=proc)
    assert 200 == api.get("/customers/paused@example.com", headers=AUTH).status_code
    assert ["p0@example.com"] == [email for email, _ in rows(tmp_path / "b.db", "people")]

    # resumed, the waiting write goes out
    assert {"app": "b", "paused": False, "changed": True} == api.post("/apps/b/resume", headers=AUTH).json()
    wait_for(lambda: len(rows(tmp_path / "b.db", "people")) == 2, "the write to b after the resume", proc=proc)

    # an invalid config is refused with the reason, and the running one stays
    config.write_text(valid.replace("poll_interval_s = 0.2", 'poll_interval_s = "soon"'), encoding="utf-8")
    refused = api.post("/config/reload", headers=AUTH)
    assert 409 == refused.status_code
    assert False is refused.json()["applied"]
    assert "daemon.poll_interval_s" in refused.json()["reason"]

    # a valid one with an app added is swapped in; the new app opens and syncs
    config.write_text(valid + lifecycle.APP_C.format(tmp=tmp_path.as_posix()), encoding="utf-8")
    applied = api.post("/config/reload", headers=AUTH)
    assert (200, True) == (applied.status_code, applied.json()["applied"])
    assert ["a", "b", "c"] == applied.json()["apps"]
    wait_for(lambda: "c" in _status_or_empty(api), "the new engine to answer with app c", proc=proc)
    _insert_a(tmp_path, "a-after-reload", "after.reload@example.com")
    wait_for(lambda: [("after.reload@example.com", "N")] == rows(tmp_path / "c.db", "folks"),
             "the added app to receive a new customer", proc=proc)

    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    text = log_path.read_text(encoding="utf-8")
    assert 0 == proc.returncode, text
    assert [] == [ln for ln in _problems(text) if "daemon.reload_refused" not in ln]
    assert TOKEN not in text


def _status_or_empty(api: httpx.Client) -> set[str]:
    """The apps of /status, or none while the daemon swaps its engine (the socket queues)."""
    try:
        response = api.get("/status", headers=AUTH)
    except httpx.TransportError:
        return set()
    return {row["app"] for row in response.json()} if response.status_code == 200 else set()
