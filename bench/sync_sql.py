"""Benchmark: sync N customers between two `sql` apps from an empty store.

App "source" starts with N customers in a SQLite table; app "target" is empty. One
`Engine.run_once()` reads them, normalizes, matches, merges, plans, creates every customer in
the target, and then reads the target's echoes back (recognised by fingerprint, no writes).
Prints records/s and the process's peak RSS. Run it at several N to see memory stay flat:

    python bench/sync_sql.py --n 100000
    python bench/sync_sql.py --n 10000 --n 50000 --n 100000     # each N in a fresh process

A second phase (`--quiet`) measures a quiet round: nothing changed, how long a full pass costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path


def seed(path: Path, n: int) -> None:
    """N customers, written straight into SQLite (not timed)."""
    db = sqlite3.connect(path)
    db.execute(
        "create table people (id text primary key, email text, first_name text, last_name text,"
        " phone text, country text, tags text, updated_at text)"
    )
    start = datetime(2025, 1, 1, tzinfo=UTC)
    rows = (
        (f"s{i}", f"Customer.{i}@Example.com", f"First{i}", f"Last{i}", f"+1415{2_000_000 + i % 8_000_000:07d}",
         ("DE", "FR", "US")[i % 3], "vip,b2b" if i % 5 == 0 else "b2c",
         (start + timedelta(seconds=i)).isoformat())
        for i in range(n)
    )
    db.executemany("insert into people values (?,?,?,?,?,?,?,?)", rows)
    # a table synced by modified time has this index (the sql connector creates it for tables
    # it creates); without it every page is a full scan and sort of the table
    db.execute("create index ix_people_updated_at_id on people (updated_at, id)")
    db.commit()
    db.close()


def config(tmp: Path) -> dict:
    cols = {c: "text" for c in ("email", "first_name", "last_name", "phone", "country", "tags")}
    fields = {
        "email": "email", "first_name": "first_name", "last_name": "last_name", "phone": "phone",
        "address.country": "country", "tags": {"field": "tags", "transform": "csv"},
    }
    return {
        "daemon": {"store_url": f"sqlite:///{tmp}/store.db", "batch_size": 1000, "log_level": "warning",
                   "normalize_workers": 1},  # as measured before the default became 0
        "apps": {
            "source": {"connector": "sql", "fields": fields, "settings": {
                "url": f"sqlite:///{tmp}/source.db", "table": "people", "page_size": 2000}},
            "target": {"connector": "sql", "fields": fields, "settings": {
                "url": f"sqlite:///{tmp}/target.db", "table": "people", "page_size": 2000,
                "create_table": True, "column_types": cols}},
        },
    }


async def run(n: int, quiet: bool) -> dict:
    from customer_sync.config import load_config
    from customer_sync.engine.runner import Engine
    from customer_sync.logs import configure_logging
    from customer_sync.store.db import open_store

    configure_logging(level="warning", fmt="json")
    tmp = Path(tempfile.mkdtemp(prefix="cs-bench-"))
    seed(tmp / "source.db", n)
    cfg = load_config(data=config(tmp))
    store = open_store(cfg.daemon.store_url)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with Engine(cfg, store) as engine:
        t0 = time.perf_counter()
        summary = await engine.run_once(reconcile=False)
        elapsed = time.perf_counter() - t0
        result = {
            "n": n, "seconds": round(elapsed, 2), "records_per_s": round(n / elapsed),
            "created_in_target": summary.dispatch.created, "echoes": summary.process.echoes,
            "failed_apps": summary.failed_apps,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_sync_mb": round(rss_before / 1024, 1),
        }
        if quiet:
            t0 = time.perf_counter()
            q = await engine.run_once(reconcile=False)
            result["quiet_round_s"] = round(time.perf_counter() - t0, 3)
            result["quiet_round_written"] = q.dispatch.written
            t0 = time.perf_counter()
            q = await engine.run_once(reconcile=True)
            result["quiet_round_with_id_scan_s"] = round(time.perf_counter() - t0, 3)
    store.close()
    target = sqlite3.connect(tmp / "target.db").execute("select count(*) from people").fetchone()[0]
    result["rows_in_target"] = target
    shutil.rmtree(tmp, ignore_errors=True)  # the store and both databases: hundreds of MB at 100k
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, action="append", help="customers (repeatable); default 100000")
    parser.add_argument("--quiet", action="store_true", help="also time a quiet round afterwards")
    args = parser.parse_args()
    sizes = args.n or [100_000]
    if len(sizes) == 1:
        print(json.dumps(asyncio.run(run(sizes[0], args.quiet))))
        return
    for n in sizes:  # a fresh process per size, so peak RSS is per size
        cmd = [sys.executable, __file__, "--n", str(n)] + (["--quiet"] if args.quiet else [])
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
