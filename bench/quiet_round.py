"""Benchmark: the cost of a quiet round, when nothing changed anywhere.

Syncs N customers between two `sql` apps (as `sync_sql.py` does, not timed), then times R
quiet `run_once()` rounds, with and without the id scan that finds hard deletes, and prints
the median and worst of each, plus what the rounds wrote (it must be nothing):

    python bench/quiet_round.py --n 100000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sync_sql import config, seed


async def run(n: int, rounds: int) -> dict:
    from customer_sync.config import load_config
    from customer_sync.engine.runner import Engine
    from customer_sync.logs import configure_logging
    from customer_sync.store.db import open_store

    configure_logging(level="warning", fmt="json")
    tmp = Path(tempfile.mkdtemp(prefix="cs-quiet-"))
    seed(tmp / "source.db", n)
    cfg = load_config(data=config(tmp))
    store = open_store(cfg.daemon.store_url)
    plain, scanned, written = [], [], 0
    async with Engine(cfg, store) as engine:
        await engine.run_once(reconcile=False)  # the initial sync, not timed
        for _ in range(rounds):
            t0 = time.perf_counter()
            summary = await engine.run_once(reconcile=False)
            plain.append(time.perf_counter() - t0)
            written += summary.dispatch.written
            t0 = time.perf_counter()
            summary = await engine.run_once(reconcile=True)
            scanned.append(time.perf_counter() - t0)
            written += summary.dispatch.written
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "n": n, "rounds": rounds, "written": written,
        "quiet_round_median_s": round(statistics.median(plain), 4), "quiet_round_max_s": round(max(plain), 4),
        "with_id_scan_median_s": round(statistics.median(scanned), 4),
        "with_id_scan_max_s": round(max(scanned), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="customers synced before the quiet rounds")
    parser.add_argument("--rounds", type=int, default=5, help="quiet rounds to time")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.n, args.rounds))))


if __name__ == "__main__":
    main()
