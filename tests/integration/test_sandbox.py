"""`customer-sync sandbox` as a new user runs it: a real process, its simulators on loopback, the
daemon's own loop; the seeded customers converge across all four vendor apps, and SIGTERM ends
it all cleanly.

What converged means is read through the daemon's store and its commands (`status`, `errors`,
`conflicts` with `--json`), and, for HubSpot and Chatwoot, through the simulators' own APIs as
a user's curl would: each person once in every app that can hold them, nobody twice, Persian
and Arabic names intact, the refused values recorded, the unsubscribe kept, the phone conflict
decided by the configured rule.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from sqlalchemy import select

from customer_sync.sandbox.seed import APPS, Expected, expected
from customer_sync.store.db import open_store
from customer_sync.store.tables import ChangeLogEntry, CustomerRow, LinkRow, OutboxItem

T = TypeVar("T")
START_DEADLINE_S = 60.0
CONVERGE_DEADLINE_S = 90.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(what: str, check: Callable[[], T | None], deadline_s: float, every_s: float = 0.5) -> T:
    """`check()`'s first truthy answer, polled until the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every_s)


class SandboxProcess:
    """`customer-sync sandbox` in its own session, its stdout read line by line."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        env = {k: v for k, v in os.environ.items()
               if k != "CUSTOMER_SYNC_ADMIN_TOKEN" and not k.startswith("SANDBOX_")}
        self.stderr_path = folder.parent / "sandbox.stderr"
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "customer_sync", "sandbox", "--dir", str(folder), "--port", str(port)],
            cwd=folder.parent, env=env, stdout=subprocess.PIPE, stderr=self._stderr,
            start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_for_line(self, pattern: str, deadline_s: float) -> re.Match[str]:
        end = time.monotonic() + deadline_s
        while True:
            for line in self.seen:
                if m := re.search(pattern, line):
                    return m
            if self.proc.poll() is not None:
                raise AssertionError(f"sandbox exited {self.proc.returncode}: {self.stderr()[-3000:]}")
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line matching {pattern!r}; saw {self.seen}")
            try:
                self.seen.append(self.lines.get(timeout=min(remaining, 0.5)))
            except queue.Empty:
                pass

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def env(self) -> dict[str, str]:
        """The environment a user gets from `. sandbox.env`."""
        pairs = {}
        for line in (self.folder / "sandbox.env").read_text(encoding="utf-8").splitlines():
            if line.startswith("export "):
                var, _, value = line.removeprefix("export ").partition("=")
                pairs[var] = value
        return {**os.environ, **pairs}

    def cli(self, *args: str) -> Any:
        """A command run in another terminal while the sandbox runs, its --json output."""
        done = subprocess.run(
            [sys.executable, "-m", "customer_sync", *args, "--config", str(self.folder / "config.toml"),
             "--json"], env=self.env(), capture_output=True, text=True, timeout=60, check=False)
        assert 0 == done.returncode, done.stderr
        return json.loads(done.stdout)

    def group(self) -> list[int]:
        """Pids of live processes in the sandbox's process group (its session)."""
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) == self.proc.pid:  # state, ppid, pgrp
                out.append(int(stat.parent.name))
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._stderr.close()


def _store_view(store_url: str) -> Callable[[], dict[str, Any] | None]:
    """Reads the daemon's store; answers the customers and their links once nothing waits."""
    store = open_store(store_url, migrate=False)

    def view() -> dict[str, Any] | None:
        with store.transaction() as conn:
            customers = [dict(r) for r in conn.execute(
                select(CustomerRow.__table__).where(CustomerRow.__table__.c.deleted_at.is_(None))).mappings()]
            links = [dict(r) for r in conn.execute(
                select(LinkRow.__table__).where(LinkRow.__table__.c.state == "active")).mappings()]
            waiting = conn.execute(select(OutboxItem.__table__.c.app).where(
                OutboxItem.__table__.c.state.in_(("pending", "sending")))).all()
        if waiting or len(customers) != len(expected()):
            return None
        by_customer: dict[str, list[str]] = {}
        for link in links:
            by_customer.setdefault(link["customer_id"], []).append(link["app"])
        people = {}
        for person in expected():
            found = [c for c in customers if _is(person, c["values"])]
            if len(found) != 1:
                return None
            (customer,) = found
            people[person.name] = {**customer["values"], "apps": sorted(by_customer.get(customer["customer_id"], []))}
            if people[person.name]["apps"] != sorted(person.apps):
                return None
        return people

    view.close = store.close  # type: ignore[attr-defined]
    return view


def _is(person: Expected, values: dict[str, Any]) -> bool:
    if person.email is not None:
        return str(values.get("email") or "").lower() == person.email
    return values.get("phone") == person.phone


def _poll_count(port: int, app: str) -> float:
    """How many times the daemon has polled `app`, from its /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    m = re.search(rf'^customer_sync_poll_duration_seconds_count{{app="{app}"}} (\S+)$', text, re.MULTILINE)
    assert m is not None, "no poll count for " + app
    return float(m[1])


def _written_everywhere(store_url: str, email: str, last_name: str) -> Callable[[], bool]:
    """Whether the daemon has written `last_name` for the customer with `email` to the apps
    other than the CRM (its change log's `written` entries)."""
    store = open_store(store_url, migrate=False)

    def check() -> bool:
        t, log = CustomerRow.__table__, ChangeLogEntry.__table__
        with store.transaction() as conn:
            (customer_id,) = [r["customer_id"] for r in conn.execute(select(t)).mappings()
                              if str(r["values"].get("email") or "").lower() == email]
            entries = conn.execute(select(log.c.app, log.c.diff).where(
                log.c.customer_id == customer_id, log.c.kind == "written")).all()
        return {"desk", "list", "inbox"} <= {e.app for e in entries if last_name in json.dumps(e.diff)}

    check.close = store.close  # type: ignore[attr-defined]
    return check


def test_sandbox_converges_every_customer_across_every_vendor_app_and_stops_cleanly(tmp_path: Path) -> None:
    folder = tmp_path / "sandbox-data"
    port = _free_port()
    sandbox = SandboxProcess(folder, port)
    try:
        url = sandbox.wait_for_line(r"^dashboard: (\S+)$", START_DEADLINE_S)[1]
        token = sandbox.wait_for_line(r"^admin token: (\S+)", 5)[1]
        hubspot = sandbox.wait_for_line(r"HubSpot (http://\S+)", 5)[1]
        chatwoot = sandbox.wait_for_line(r"Chatwoot (http://\S+)", 5)[1]
        assert f"http://127.0.0.1:{port}/" == url
        assert len(token) >= 32
        config_text = (folder / "config.toml").read_text(encoding="utf-8")
        assert token not in config_text
        assert [] == [v for k, v in sandbox.env().items() if k.startswith("SANDBOX_") and v in config_text]

        store_url = re.search(r'^store_url = "(.+)"$', config_text, re.MULTILINE)[1]  # type: ignore[index]
        view = _store_view(store_url)
        try:
            people = _wait_for("the sandbox customers to converge", view, CONVERGE_DEADLINE_S)
        finally:
            view.close()  # type: ignore[attr-defined]

        # -- names as written, Persian and Arabic included; the phone decided by its rule ------
        for person in expected():
            first, last = person.name.split(" ")
            values = people[person.name]
            assert (first, last) == (values.get("first_name"), values.get("last_name")), person
            assert person.phone == values.get("phone"), person
            if person.email_consent:
                assert person.email_consent == values.get("email_consent"), person
        assert "+14155550199" == people["Eve Park"]["phone"]  # the helpdesk's, by priority

        # -- through the daemon's commands, as a user in another terminal ------------------------
        status = {row["app"]: row for row in sandbox.cli("status")}
        assert set(APPS) == set(status)
        linked = Counter(app for person in expected() for app in person.apps)
        assert {app: linked[app] for app in APPS} == {app: row["linked"] for app, row in status.items()}
        assert all(0 == row["dead_letters"] and not row["parked"] for row in status.values()), status
        rejected = {(row["app"], row["field"]) for row in sandbox.cli("errors")}
        assert {r for person in expected() for r in person.rejected} == rejected
        (conflict,) = [c for c in sandbox.cli("conflicts", "--all") if c["field"] == "phone"]
        assert ("priority", "desk", "+14155550199", "crm", "+14155550105") == (
            conflict["rule"], conflict["winner_app"], conflict["winner_value"],
            conflict["loser_app"], conflict["loser_value"])

        # -- in the vendor apps themselves: once each, names intact, the unsubscribe kept ------
        env = sandbox.env()
        contacts = httpx.get(
            f"{hubspot}/crm/v3/objects/contacts",
            params={"limit": 100, "properties": "email,firstname,lastname,phone,email_consent"},
            headers={"Authorization": f"Bearer {env['SANDBOX_HUBSPOT_TOKEN']}"}).json()["results"]
        crm = [c["properties"] for c in contacts]
        assert linked["crm"] == len(crm)
        emails = Counter(str(p.get("email") or "").lower() for p in crm if p.get("email"))
        assert [] == [e for e, n in emails.items() if n > 1]
        names = {(p.get("firstname"), p.get("lastname")) for p in crm}
        assert {tuple(person.name.split(" ")) for person in expected()} == names
        (frank,) = [p for p in crm if p.get("email") == "frank.moore@example.com"]
        assert "unsubscribed" == frank.get("email_consent")
        inbox: list[dict[str, Any]] = []
        for page in range(1, 10):  # 15 contacts a page
            payload = httpx.get(f"{chatwoot}/api/v1/accounts/1/contacts", params={"page": page},
                                headers={"api_access_token": env["SANDBOX_CHATWOOT_TOKEN"]}).json()["payload"]
            inbox += payload
        assert linked["inbox"] == len(inbox)
        assert {person.name for person in expected()} == {c["name"] for c in inbox}

        # -- an edit in HubSpot reaches the other apps by HubSpot's webhook ---------------------
        # Proven by the CRM not being polled between the edit and its last write elsewhere (the
        # daemon polls every 10 s); an attempt a poll happened to overlap is tried again.
        (ann,) = [c["id"] for c in contacts if str(c["properties"].get("email")).lower() == "ann.lee@example.com"]
        by_webhook = False
        for attempt in range(5):
            last_name = f"Lee-Smith{attempt}"
            polls = _poll_count(port, "crm")
            edited = httpx.patch(f"{hubspot}/crm/v3/objects/contacts/{ann}",
                                 json={"properties": {"lastname": last_name}},
                                 headers={"Authorization": f"Bearer {env['SANDBOX_HUBSPOT_TOKEN']}"})
            assert 200 == edited.status_code, edited.text
            arrived = _written_everywhere(store_url, "ann.lee@example.com", last_name)
            try:
                _wait_for(f"{last_name} in every app", arrived, CONVERGE_DEADLINE_S, every_s=0.2)
            finally:
                arrived.close()  # type: ignore[attr-defined]
            if polls == _poll_count(port, "crm"):
                by_webhook = True
                break
        assert by_webhook, "every edit was met by a poll of the CRM before it reached the other apps"

        assert 200 == httpx.get(f"http://127.0.0.1:{port}/healthz").status_code
        children = sandbox.group()
    except BaseException:
        sandbox.close()
        raise

    # -- SIGTERM: the daemon drains, the simulators stop, nothing is left behind ----------------
    sandbox.proc.send_signal(signal.SIGTERM)
    try:
        code = sandbox.proc.wait(timeout=60)
    finally:
        sandbox.close()
    err = sandbox.stderr()
    assert 0 == code, err[-3000:]
    assert "Traceback" not in err
    assert [] == sandbox.group()
    assert [] == [pid for pid in children if Path(f"/proc/{pid}").exists() and pid != sandbox.proc.pid]
