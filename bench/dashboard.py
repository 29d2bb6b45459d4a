"""How long the dashboard's overview takes to answer over a busy day's change log, and how
long intake would wait behind it: the time of `GET /` (HTTP, in process) over a SQLite store
holding N change-log entries spread over the last 24 hours, and the longest single store
transaction the page held (each one holds SQLite's write lock).

    python bench/dashboard.py                 # 100k entries, 5 runs
    python bench/dashboard.py --entries 500000 --runs 3

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from customer_sync.api.app import create_app
from customer_sync.api.auth import AdminAuth
from customer_sync.config import load_config
from customer_sync.engine.runner import Engine
from customer_sync.store.db import Store, open_store
from customer_sync.store.tables import ChangeLogEntry

TOKEN = "bench-dashboard-token-0123456789"
KINDS = ("observed", "decided", "written", "written", "error")


def _seed(store: Store, entries: int, now: datetime) -> None:
    table = ChangeLogEntry.__table__
    step = timedelta(hours=24) / entries
    batch: list[dict[str, Any]] = []
    with store.transaction() as conn:
        for i in range(entries):
            batch.append({"at": now - timedelta(hours=24) + step * i, "kind": KINDS[i % len(KINDS)],
                          "app": ("crm", "shop")[i % 2], "app_record_id": str(i), "customer_id": None,
                          "diff": None, "reason": None, "run_id": "bench"})
            if len(batch) == 10_000:
                conn.execute(insert(table), batch)
                batch.clear()
        if batch:
            conn.execute(insert(table), batch)


@contextlib.contextmanager
def _timed_transactions(store: Store, held: list[float]) -> Iterator[None]:
    """Record how long each store transaction lasts while the block runs."""
    original = store.transaction

    @contextlib.contextmanager
    def timed() -> Iterator[Any]:
        t0 = time.perf_counter()
        with original() as conn:
            yield conn
        held.append(time.perf_counter() - t0)

    store.transaction = timed  # type: ignore[method-assign]
    try:
        yield
    finally:
        store.transaction = original  # type: ignore[method-assign]


async def _measure(folder: Path, entries: int, runs: int) -> dict[str, Any]:
    config = load_config(data={
        "daemon": {"store_url": f"sqlite:///{folder}/store.db", "normalize_workers": 0},
        "apps": {app: {"connector": "sql", "fields": {"email": "email"}, "settings": {
            "url": f"sqlite:///{folder}/{app}.db", "table": "people", "create_table": True,
            "column_types": {"email": "text"}}} for app in ("crm", "shop")},
    })
    store = open_store(config.daemon.store_url)
    _seed(store, entries, datetime.now(UTC))
    times, held = [], []
    async with Engine(config, store) as engine:
        transport = httpx.ASGITransport(app=create_app(engine, auth=AdminAuth(TOKEN)))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            for _ in range(runs):
                with _timed_transactions(store, held):
                    t0 = time.perf_counter()
                    response = await http.get("/", headers=headers)
                    times.append(time.perf_counter() - t0)
                assert response.status_code == 200, response.status_code
    store.close()
    return {"entries": entries, "runs": runs, "overview_median_s": round(statistics.median(times), 3),
            "overview_max_s": round(max(times), 3), "longest_transaction_s": round(max(held), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(_measure(Path(folder), args.entries, args.runs))
    print(f"GET / over {result['entries']} change-log entries in 24 h: median {result['overview_median_s']} s, "
          f"max {result['overview_max_s']} s; longest store transaction {result['longest_transaction_s']} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
