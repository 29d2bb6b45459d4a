"""Benchmark: the initial pull of N Mailchimp members into an empty store (the read side).

The Mailchimp simulator holds N members of one audience and is served on loopback over real
HTTP (`customer_sync.sandbox._common.serve`) from a child process, with Mailchimp's limit of 10
simultaneous connections, as `hubspot_pull.py` does for HubSpot (its yardstick and CPU helpers
are reused). Only `engine.poll("list")` is timed: it lists, normalizes, matches and records
every member in the store.

    python bench/mailchimp_pull.py                 # N = 10,000
    python bench/mailchimp_pull.py --n 10000 --n 50000

Prints one JSON line per run: records/s, requests per record, seconds, and the peak RSS of every
process started (the daemon, its workers and the simulator, each and summed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hubspot_pull import _cpu_s_of, python_loop_s

LIST_ID = "b3nch0l1st"
API_KEY = "bench0key0000000000000000000000-us21"


def _peak_rss_mb(pid: int | str = "self") -> float | None:
    """The peak resident memory (VmHWM) of a running process, in MB; None where /proc is not."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None


def _simulator(n: int, conn: Any) -> None:
    """Child process: seed N members, serve them on loopback, report counts when told to stop."""
    from customer_sync.sandbox._common import serve
    from customer_sync.sandbox.mailchimp import MailchimpSimulator

    sim = MailchimpSimulator(list_id=LIST_ID, api_key=API_KEY, max_connections=10)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    statuses = ("subscribed", "subscribed", "unsubscribed", "pending", "transactional")
    for i in range(n):
        sim.add_member(
            f"Member.{i}@Example.com", status=statuses[i % len(statuses)],
            merge_fields={"FNAME": f"First{i}", "LNAME": f"Last{i}",
                          "PHONE": f"+1415{2_000_000 + i % 8_000_000:07d}",
                          "ADDRESS": {"addr1": f"{i} Main St", "city": "Berlin", "state": "BE",
                                      "zip": "10115", "country": "DE"}},
            tags=[f"t{i % 7}"], last_changed=start + timedelta(seconds=i))
    sim.take_webhooks()  # seeding is history, not news
    statuses_seen: Counter[int] = Counter()

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        async def send_counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses_seen[message["status"]] += 1
            await send(message)

        await sim.app(scope, receive, send_counted)

    served = serve(counted)
    conn.send(served.base_url)
    cpu0 = time.process_time()  # serving only, not seeding
    conn.recv()  # stop
    conn.send({"request_count": sim.request_count, "by_route": dict(sim.count_by_route),
               "statuses": {str(k): v for k, v in sorted(statuses_seen.items())},
               "peak_connections": sim.peak_connections,
               "cpu_s": time.process_time() - cpu0, "peak_rss_mb": _peak_rss_mb()})
    served.stop()


def config(tmp: Path, base_url: str) -> dict[str, Any]:
    return {
        "daemon": {"store_url": f"sqlite:///{tmp}/store.db", "batch_size": 1000,
                   "log_level": "warning", "normalize_workers": 1},  # the workers it reports on
        "apps": {"list": {"connector": "mailchimp", "settings": {
            "base_url": f"{base_url}/3.0", "list_id": LIST_ID, "api_key": "${MAILCHIMP_KEY}",
            "page_size": 1000}}},
    }


async def run(n: int) -> dict[str, Any]:
    from sqlalchemy import func, select

    from customer_sync.config import load_config
    from customer_sync.engine.runner import Engine
    from customer_sync.logs import configure_logging
    from customer_sync.store.db import open_store
    from customer_sync.store.tables import CustomerRow

    configure_logging(level="warning", fmt="json")
    yardstick = python_loop_s()
    ours, theirs = mp.Pipe()
    child = mp.get_context("spawn").Process(target=_simulator, args=(n, theirs))
    child.start()
    base_url = ours.recv()  # seeded and listening
    tmp = Path(tempfile.mkdtemp(prefix="cs-bench-mailchimp-"))
    cfg = load_config(data=config(tmp, base_url), env={"MAILCHIMP_KEY": API_KEY})
    store = open_store(cfg.daemon.store_url)
    error = None
    workers_rss: dict[str, float | None] = {}
    try:
        async with Engine(cfg, store) as engine:
            # As `customer-sync daemon` does before its first poll (see hubspot_pull.py).
            await engine.normalizer.start()
            for lister in engine.listing.values():
                await lister.wait_ready()
            lister_pids = [w._process.pid for w in engine.listing.values() if w._process is not None]
            worker_pids = [*engine.normalizer.pids, *lister_pids]
            wcpu0 = _cpu_s_of(worker_pids)
            t0, cpu0 = time.perf_counter(), time.process_time()
            try:
                received = (await engine.poll("list")).fresh
            except Exception as exc:  # noqa: BLE001 - a failed run is a result too
                received, error = 0, f"{type(exc).__name__}: {exc}"
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            wcpu1 = _cpu_s_of(worker_pids)
            workers_rss = {str(pid): _peak_rss_mb(pid) for pid in worker_pids}
    finally:
        ours.send("stop")
        served = ours.recv()
        child.join(timeout=30)
    with store.transaction() as conn:
        customers = conn.execute(select(func.count()).select_from(CustomerRow.__table__)).scalar_one()
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    daemon_rss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    all_rss = [daemon_rss, served["peak_rss_mb"], *workers_rss.values()]
    requests = served["request_count"]
    return {
        "n": n, "received": received, "customers_in_store": customers,
        "seconds": round(elapsed, 2),
        "records_per_s": round(received / elapsed) if elapsed else None,
        "requests": requests,
        "requests_per_record": round(requests / received, 4) if received else None,
        "requests_by_route": served["by_route"], "statuses": served["statuses"],
        "peak_connections": served["peak_connections"],
        "daemon_cpu_s": round(cpu, 2),
        "worker_cpu_s": None if wcpu1 is None else round(wcpu1 - (wcpu0 or 0.0), 2),
        "simulator_cpu_s": round(served["cpu_s"], 2),
        "peak_rss_mb": {"daemon": daemon_rss, "simulator": served["peak_rss_mb"],
                        "workers": workers_rss,
                        "sum": round(sum(v for v in all_rss if v is not None), 1)},
        "error": error, "python_loop_s": yardstick,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="members (repeatable); default 10000")
    args = parser.parse_args()
    sizes = args.n or [10_000]
    if len(sizes) > 1:  # a fresh process per size, so peak RSS is per size
        for n in sizes:
            subprocess.run([sys.executable, __file__, "--n", str(n)], check=True)
        return
    print(json.dumps(asyncio.run(run(sizes[0]))), flush=True)


if __name__ == "__main__":
    main()
