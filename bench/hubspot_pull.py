"""Benchmark: the initial pull of N HubSpot contacts into an empty store (the read side).

The HubSpot simulator holds N contacts and is served on loopback over real HTTP
(`customer_sync.sandbox._common.serve`) from a child process, so that the daemon's peak RSS is
its own and the simulator does not share its interpreter lock (it still shares the machine's
cores). Only `engine.poll("hubspot")` is timed: it lists, normalizes, matches and records every
contact in the store. With `--with-target` the engine also has an empty `sql` app on a temp
SQLite file, and the pull plans (but does not send) a create there for every contact.

    python bench/hubspot_pull.py                       # N = 10,000, no rate limit
    python bench/hubspot_pull.py --n 100000
    python bench/hubspot_pull.py --n 3000 --rate-limit 100/10
    python bench/hubspot_pull.py --n 10000 --n 100000  # each N in a fresh process
    python bench/hubspot_pull.py --no-history          # without per-property modified times
    python bench/hubspot_pull.py --with-target         # also plan a create per contact in a sql app
    python bench/hubspot_pull.py --cold-worker         # the poll starts the normalizing worker

Prints one JSON line per run: records/s, requests the simulator served, seconds, peak RSS and,
under `--rate-limit`, the share of the quota used: requests / (seconds x calls/window_s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
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

PROPERTIES = ("email", "firstname", "lastname", "phone", "company", "jobtitle", "city", "lifecyclestage")


def _simulator(n: int, rate_limit: tuple[int, float] | None, conn: Any) -> None:
    """Child process: seed N contacts, serve them on loopback, report counts when told to stop."""
    from customer_sync.sandbox._common import serve
    from customer_sync.sandbox.hubspot import HubSpotSimulator

    sim = HubSpotSimulator(
        rate_limit=rate_limit,
        # under a documented app limit, search keeps its own documented limit too
        search_rate_limit=(5, 1.0) if rate_limit else None,
    )
    start = datetime(2025, 1, 1, tzinfo=UTC)
    stages = ("subscriber", "lead", "customer")
    for i in range(n):
        sim.add_contact(
            {"email": f"Customer.{i}@Example.com", "firstname": f"First{i}", "lastname": f"Last{i}",
             "phone": f"+1415{2_000_000 + i % 8_000_000:07d}", "company": f"Company {i % 500}",
             "jobtitle": "Buyer", "city": "Berlin", "lifecyclestage": stages[i % 3]},
            updated_at=start + timedelta(seconds=i),
        )
    statuses: Counter[int] = Counter()

    async def counted(scope: Any, receive: Any, send: Any) -> None:
        async def send_counted(message: Any) -> None:
            if message["type"] == "http.response.start":
                statuses[message["status"]] += 1
            await send(message)

        await sim.app(scope, receive, send_counted)

    served = serve(counted)
    conn.send(served.base_url)
    cpu0 = time.process_time()  # serving only, not seeding
    conn.recv()  # stop
    conn.send({"request_count": sim.request_count, "by_route": dict(sim.count_by_route),
               "statuses": {str(k): v for k, v in sorted(statuses.items())},
               "cpu_s": time.process_time() - cpu0})
    served.stop()


def python_loop_s() -> float:
    """Seconds this machine takes for a fixed pure-Python loop (best of three): a yardstick
    for comparing runs made on different machines, or on one machine at different moments."""
    best = float("inf")
    for _ in range(3):
        t0, total = time.perf_counter(), 0
        for i in range(2_000_000):
            total += i
        best = min(best, time.perf_counter() - t0)
    return round(best, 3)


def _cpu_s_of(pids: list[int]) -> float | None:
    """CPU seconds (user + system) the processes have used so far; None where /proc is not."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / tick
    except (OSError, ValueError, IndexError):
        return None


def config(tmp: Path, base_url: str, *, rate_limit: tuple[int, float] | None, history: bool,
           with_target: bool = False) -> dict:
    calls, window = rate_limit or (1_000_000, 1.0)  # no limit: a client limiter that never waits
    sql_cols = ("email", "first_name", "last_name", "phone", "company")
    data = {
        "daemon": {"store_url": f"sqlite:///{tmp}/store.db", "batch_size": 1000, "log_level": "warning",
                   # the workers this script reports on (off by default since issue 16)
                   "normalize_workers": 1},
        "apps": {
            "hubspot": {"connector": "hubspot", "settings": {
                "base_url": base_url, "access_token": "${HUBSPOT_TOKEN}",
                "rate_limit_calls": calls, "rate_limit_window_s": window,
                "search_per_s": 4 if rate_limit else 1_000_000, "field_history": history}},
            "warehouse": {"connector": "sql", "fields": {c: c for c in sql_cols}, "settings": {
                "url": f"sqlite:///{tmp}/warehouse.db", "table": "people", "create_table": True,
                "column_types": {c: "text" for c in sql_cols}}},
        },
    }
    if not with_target:
        del data["apps"]["warehouse"]
    return data


async def run(n: int, rate_limit: tuple[int, float] | None, history: bool,
              with_target: bool = False, cold_worker: bool = False) -> dict[str, Any]:
    from sqlalchemy import func, select

    from customer_sync.config import load_config
    from customer_sync.engine.runner import Engine
    from customer_sync.logs import configure_logging
    from customer_sync.store.db import open_store
    from customer_sync.store.tables import CustomerRow, OutboxItem

    configure_logging(level="warning", fmt="json")
    yardstick = python_loop_s()
    ours, theirs = mp.Pipe()
    child = mp.get_context("spawn").Process(target=_simulator, args=(n, rate_limit, theirs))
    child.start()
    base_url = ours.recv()  # seeded and listening
    tmp = Path(tempfile.mkdtemp(prefix="cs-bench-hubspot-"))
    cfg = load_config(data=config(tmp, base_url, rate_limit=rate_limit, history=history,
                                  with_target=with_target),
                      env={"HUBSPOT_TOKEN": "bench-token"})
    store = open_store(cfg.daemon.store_url)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    error = None
    try:
        async with Engine(cfg, store) as engine:
            # As `customer-sync daemon` does before its first poll (`Engine.run_forever`). With
            # --cold-worker the poll starts it, as `sync --once` does: the first pages are then
            # normalized in this process while the worker spawns.
            t_start = time.perf_counter()
            if not cold_worker:
                await engine.normalizer.start()
                for lister in engine.listing.values():
                    await lister.wait_ready()
            worker_start_s = time.perf_counter() - t_start
            # the workers started above (none yet with --cold-worker, which reports no CPU)
            lister_pids = [w._process.pid for w in engine.listing.values() if w._process is not None]
            worker_pids = [*engine.normalizer.pids, *lister_pids]
            wcpu0, lcpu0 = _cpu_s_of(worker_pids), _cpu_s_of(lister_pids)
            t0, cpu0 = time.perf_counter(), time.process_time()
            try:
                received = (await engine.poll("hubspot")).fresh
            except Exception as exc:  # a failed run is a result too
                received, error = 0, f"{type(exc).__name__}: {exc}"
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            wcpu1, lcpu1 = _cpu_s_of(worker_pids), _cpu_s_of(lister_pids)
            worker_cpu = (None if wcpu1 is None or cold_worker
                          else round(wcpu1 - (wcpu0 or 0.0), 2))
            lister_cpu = (None if lcpu1 is None or cold_worker or not lister_pids
                          else round(lcpu1 - (lcpu0 or 0.0), 2))
    finally:
        ours.send("stop")
        served = ours.recv()
        child.join(timeout=30)
    with store.transaction() as conn:
        customers = conn.execute(select(func.count()).select_from(CustomerRow.__table__)).scalar_one()
        planned = conn.execute(select(func.count()).select_from(OutboxItem.__table__)).scalar_one()
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)  # a 100k store is a few hundred MB
    result: dict[str, Any] = {
        "n": n, "field_history": history,
        "rate_limit": f"{rate_limit[0]}/{rate_limit[1]:g}" if rate_limit else None,
        "received": received, "customers_in_store": customers, "creates_planned": planned,
        "seconds": round(elapsed, 2), "records_per_s": round(received / elapsed) if elapsed else None,
        "daemon_cpu_s": round(cpu, 2), "worker_cpu_s": worker_cpu, "lister_cpu_s": lister_cpu,
        "simulator_cpu_s": round(served["cpu_s"], 2),
        "worker": "cold" if cold_worker else "started", "worker_start_s": round(worker_start_s, 2),
        "requests": served["request_count"], "requests_by_route": served["by_route"],
        "statuses": served["statuses"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_before_poll_mb": round(rss_before / 1024, 1), "error": error,
        "python_loop_s": yardstick,
    }
    if rate_limit:
        calls, window = rate_limit
        result["quota_used"] = round(served["request_count"] / (elapsed * calls / window), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="contacts (repeatable); default 10000")
    parser.add_argument("--rate-limit", help="CALLS/SECONDS, e.g. 100/10 (HubSpot's documented limit)")
    parser.add_argument("--no-history", action="store_true", help="turn off field_history")
    parser.add_argument("--with-target", action="store_true",
                        help="add an empty sql app, so the pull also plans a create per contact")
    parser.add_argument("--cold-worker", action="store_true",
                        help="let the poll start the normalizing worker (as `sync --once` does)")
    args = parser.parse_args()
    sizes = args.n or [10_000]
    if len(sizes) > 1:  # a fresh process per size, so peak RSS is per size
        for n in sizes:
            cmd = [sys.executable, __file__, "--n", str(n)]
            cmd += ["--rate-limit", args.rate_limit] if args.rate_limit else []
            cmd += ["--no-history"] if args.no_history else []
            cmd += ["--with-target"] if args.with_target else []
            cmd += ["--cold-worker"] if args.cold_worker else []
            subprocess.run(cmd, check=True)
        return
    limit = None
    if args.rate_limit:
        calls, _, seconds = args.rate_limit.partition("/")
        limit = (int(calls), float(seconds))
    print(json.dumps(asyncio.run(run(sizes[0], limit, not args.no_history, args.with_target,
                                         args.cold_worker))), flush=True)


if __name__ == "__main__":
    main()
