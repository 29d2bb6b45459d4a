"""The sandbox as a new user meets it: wall time from `customer-sync sandbox` starting to its
dashboard line, and to every seeded customer linked in every app with nothing left to write;
then edits made in the HubSpot simulator, timed from the edit to the daemon's last write of it
to Zendesk, Mailchimp and Chatwoot (by webhook); the time SIGTERM takes to end it; and the
process's peak RSS (the sandbox has no child process).

    python bench/sandbox.py               # 10 edits
    python bench/sandbox.py --edits 30

Each edit is made once the previous one has arrived. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from customer_sync.sandbox.seed import PEOPLE
from customer_sync.store.db import open_store
from customer_sync.store.tables import ChangeLogEntry, CustomerRow, LinkRow, OutboxItem


def _cli() -> list[str]:
    found = shutil.which("customer-sync")
    return [found] if found else [sys.executable, "-m", "customer_sync"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _until(check: Any, deadline_s: float = 120.0, every_s: float = 0.05) -> float:
    """Poll `check()` until true; returns the time.perf_counter() it was first seen true."""
    end = time.perf_counter() + deadline_s
    while not check():
        if time.perf_counter() > end:
            raise SystemExit("timed out")
        time.sleep(every_s)
    return time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "sandbox-data"
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if k != "CUSTOMER_SYNC_ADMIN_TOKEN"}
        started = time.perf_counter()
        proc = subprocess.Popen([*_cli(), "sandbox", "--dir", str(folder), "--port", str(port)],
                                cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        assert proc.stdout is not None
        hubspot = ""
        for line in proc.stdout:
            if line.startswith("dashboard: "):
                dashboard_at = time.perf_counter()
            if m := re.search(r"HubSpot (http://\S+)", line):
                hubspot = m[1]
                break
        config = (folder / "config.toml").read_text(encoding="utf-8")
        store = open_store(re.search(r'^store_url = "(.+)"$', config, re.MULTILINE)[1],  # type: ignore[index]
                           migrate=False)
        linked_wanted = sum(4 if p.email else 3 for p in PEOPLE)

        def converged() -> bool:
            with store.transaction() as conn:
                customers = conn.execute(select(func.count()).select_from(CustomerRow).where(
                    CustomerRow.__table__.c.deleted_at.is_(None))).scalar_one()
                links = conn.execute(select(func.count()).select_from(LinkRow).where(
                    LinkRow.__table__.c.state == "active")).scalar_one()
                waiting = conn.execute(select(func.count()).select_from(OutboxItem).where(
                    OutboxItem.__table__.c.state.in_(("pending", "sending")))).scalar_one()
            return customers == len(PEOPLE) and links == linked_wanted and waiting == 0

        converged_at = _until(converged)
        token = dict(line.removeprefix("export ").split("=", 1)
                     for line in (folder / "sandbox.env").read_text().splitlines()
                     if line.startswith("export "))["SANDBOX_HUBSPOT_TOKEN"]
        headers = {"Authorization": f"Bearer {token}"}
        contacts = httpx.get(f"{hubspot}/crm/v3/objects/contacts", params={"limit": 100},
                             headers=headers).json()["results"]
        (ann,) = [c["id"] for c in contacts if str(c["properties"].get("email")).lower() == "ann.lee@example.com"]
        log = ChangeLogEntry.__table__
        latencies = []
        for i in range(args.edits):
            name = f"Lee{i:03d}"

            def arrived(name: str = name) -> bool:
                with store.transaction() as conn:
                    rows = conn.execute(select(log.c.app, log.c.diff).where(log.c.kind == "written")
                                        .order_by(log.c.seq.desc()).limit(50)).all()
                return {"desk", "list", "inbox"} <= {r.app for r in rows if name in json.dumps(r.diff)}

            edited_at = time.perf_counter()
            httpx.patch(f"{hubspot}/crm/v3/objects/contacts/{ann}",
                        json={"properties": {"lastname": name}}, headers=headers).raise_for_status()
            latencies.append(_until(arrived, every_s=0.02) - edited_at)
        store.close()
        stop_at = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        _, status, usage = os.wait4(proc.pid, 0)
        stopped_s = time.perf_counter() - stop_at
        proc.returncode = os.waitstatus_to_exitcode(status)
    latencies.sort()
    result = {
        "dashboard_line_s": round(dashboard_at - started, 2),
        "converged_s": round(converged_at - started, 2),
        "customers": len(PEOPLE),
        "edits": args.edits,
        "edit_to_written_everywhere_p50_s": round(statistics.median(latencies), 2),
        "edit_to_written_everywhere_max_s": round(latencies[-1], 2),
        "sigterm_to_exit_s": round(stopped_s, 2),
        "exit_code": proc.returncode,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }
    print(f"dashboard line after {result['dashboard_line_s']} s; {len(PEOPLE)} customers converged "
          f"across 4 apps after {result['converged_s']} s")
    print(f"HubSpot edit -> written to Zendesk, Mailchimp and Chatwoot: p50 "
          f"{result['edit_to_written_everywhere_p50_s']} s, max {result['edit_to_written_everywhere_max_s']} s "
          f"({args.edits} edits)")
    print(f"SIGTERM -> exit {proc.returncode} in {result['sigterm_to_exit_s']} s; peak RSS {result['peak_rss_mb']} MB")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
