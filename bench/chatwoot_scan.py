"""Benchmark: a full scan of N Chatwoot contacts, first into an empty store, then as the
scheduled reconcile of an unchanged account.

The Chatwoot simulator holds N contacts and is served on loopback over real HTTP
(`customer_sync.sandbox._common.serve`) from a child process, as `hubspot_pull.py` serves
HubSpot's. Two phases are timed:

- `initial`: `engine.poll("inbox")` on an empty store: every page listed, normalized, matched and
  recorded (Chatwoot has no changed-since filter, so the first listing is a scan);
- `reconcile`: `engine.reconcile("inbox")` right after: the id scan (hard deletes) and the content
  scan, every contact recognised by its fingerprint. This is what the daemon pays every
  `reconcile_interval_s`.

    python bench/chatwoot_scan.py                      # N = 10,000, no rate limit
    python bench/chatwoot_scan.py --n 3000 --rate-limit 3000/60

Prints one JSON line: per phase records/s, requests, requests per record and seconds; peak RSS of
the daemon, of the simulator and of every worker process the engine started (VmHWM), and their
sum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hubspot_pull import python_loop_s  # a sibling script, not a package


def _simulator(n: int, rate_limit: tuple[int, float] | None, conn: Any) -> None:
    """Child process: seed N contacts, serve them on loopback, report counts when told to stop."""
    from customer_sync.sandbox._common import serve
    from customer_sync.sandbox.chatwoot import ChatwootSimulator

    sim = ChatwootSimulator(rate_limit=rate_limit, search_rate_limit=None)
    for i in range(n):
        extra: dict[str, Any] = {"city": "Tehran" if i % 2 else "Berlin",
                                 "company_name": f"Company {i % 500}"}
        inboxes = []
        if i % 5 == 0:
            extra["social_profiles"] = {"instagram": f"customer.{i}"}
        if i % 7 == 0:
            inboxes.append((3, f"98912{i:07d}"))
        sim.add_contact(name=f"First{i} Last{i}", email=f"customer.{i}@example.com",
                        phone_number=f"+98912{i:07d}", additional_attributes=extra,
                        custom_attributes={"plan": ("free", "pro", "team")[i % 3]},
                        inboxes=inboxes)
    served = serve(sim.app)
    conn.send(served.base_url)
    cpu0 = time.process_time()
    while True:
        message = conn.recv()
        if message == "count":
            conn.send(sim.request_count)
            continue
        break
    conn.send({"request_count": sim.request_count, "by_route": dict(sim.count_by_route),
               "statuses": {str(s): sim.statuses.count(s) for s in sorted(set(sim.statuses))},
               "cpu_s": time.process_time() - cpu0,
               "peak_rss_mb": _vm_hwm_mb(os.getpid())})
    served.stop()


def _vm_hwm_mb(pid: int) -> float | None:
    """A live process's peak resident set (VmHWM), in MB; None where /proc is not."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def config(tmp: Path, base_url: str, rate_limit: tuple[int, float] | None) -> dict[str, Any]:
    calls, window = rate_limit or (1_000_000, 1.0)
    return {
        "daemon": {"store_url": f"sqlite:///{tmp}/store.db", "batch_size": 1000,
                   "log_level": "warning", "default_region": "IR",
                   "normalize_workers": 1},  # the worker this script reports on (default 0)
        "apps": {"inbox": {"connector": "chatwoot", "settings": {
            "base_url": base_url, "account_id": 1, "api_access_token": "${CW_TOKEN}",
            "rate_limit": calls, "rate_limit_window_s": window}}},
    }


async def run(n: int, rate_limit: tuple[int, float] | None) -> dict[str, Any]:
    from sqlalchemy import func, select

    from customer_sync.config import load_config
    from customer_sync.engine.runner import Engine
    from customer_sync.logs import configure_logging
    from customer_sync.store.db import open_store
    from customer_sync.store.tables import CustomerRow

    configure_logging(level="warning", fmt="json")
    yardstick = python_loop_s()
    ours, theirs = mp.Pipe()
    child = mp.get_context("spawn").Process(target=_simulator, args=(n, rate_limit, theirs))
    child.start()
    base_url = ours.recv()
    tmp = Path(tempfile.mkdtemp(prefix="cs-bench-chatwoot-"))
    cfg = load_config(data=config(tmp, base_url, rate_limit),
                      env={"CW_TOKEN": "sandbox-api-token"})
    store = open_store(cfg.daemon.store_url)
    phases: dict[str, dict[str, Any]] = {}
    worker_rss: list[float] = []
    error = None

    async def phase(name: str, work: Any) -> None:
        ours.send("count")
        before = ours.recv()
        t0 = time.perf_counter()
        found = await work
        elapsed = time.perf_counter() - t0
        ours.send("count")
        requests = ours.recv() - before
        phases[name] = {"seconds": round(elapsed, 2), "requests": requests,
                        "records_per_s": round(n / elapsed) if elapsed else None,
                        "requests_per_record": round(requests / n, 4) if n else None,
                        "changed": found}

    try:
        async with Engine(cfg, store) as engine:
            await engine.normalizer.start()  # as the daemon does before its first poll
            try:
                await phase("initial", _fresh(engine.poll("inbox")))
                await phase("reconcile", engine.reconcile("inbox"))
            except Exception as exc:  # noqa: BLE001 - a failed run is a result too
                error = f"{type(exc).__name__}: {exc}"
            pids = engine.normalizer.pids
            worker_rss = [r for r in (_vm_hwm_mb(p) for p in pids) if r is not None]
    finally:
        ours.send("stop")
        served = ours.recv()
        child.join(timeout=30)
    with store.transaction() as conn:
        customers = conn.execute(select(func.count()).select_from(CustomerRow.__table__)).scalar_one()
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    daemon_rss = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result: dict[str, Any] = {
        "n": n, "rate_limit": f"{rate_limit[0]}/{rate_limit[1]:g}" if rate_limit else None,
        "customers_in_store": customers, **phases,
        "requests_by_route": served["by_route"], "statuses": served["statuses"],
        "peak_rss_mb": {"daemon": daemon_rss, "simulator": served["peak_rss_mb"],
                        "workers": worker_rss,
                        "all": round(daemon_rss + served["peak_rss_mb"] + sum(worker_rss), 1)},
        "simulator_cpu_s": round(served["cpu_s"], 2), "error": error,
        "python_loop_s": yardstick,
    }
    return result


async def _fresh(poll: Any) -> int:
    return (await poll).fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="contacts; default 10000")
    parser.add_argument("--rate-limit", help="CALLS/SECONDS, e.g. 3000/60 (self-hosted default)")
    args = parser.parse_args()
    limit = None
    if args.rate_limit:
        calls, _, seconds = args.rate_limit.partition("/")
        limit = (int(calls), float(seconds))
    print(json.dumps(asyncio.run(run(args.n, limit))), flush=True)


if __name__ == "__main__":
    main()
