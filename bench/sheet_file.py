"""What a spreadsheet app costs: N rows created through the `csv` or `xlsx` connector in write
batches of 500, a full listing, a quiet listing from the cursor, and one batch of 500 updates.

    python bench/sheet_file.py --kind csv --n 10000
    python bench/sheet_file.py --kind xlsx --n 10000

Prints one JSON line: seconds per step, the file's size and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from customer_sync_connectors.sheet import CsvConnector, CsvSettings, XlsxConnector, XlsxSettings

from customer_sync.sdk import WriteOp

BATCH = 500


async def measure(kind: str, n: int, folder: Path) -> dict[str, object]:
    path = folder / f"customers.{kind}"
    settings_cls, connector_cls = ((CsvSettings, CsvConnector) if kind == "csv"
                                   else (XlsxSettings, XlsxConnector))
    settings = settings_cls(path=str(path), create_file=True,
                            columns=["email", "first_name", "last_name", "phone"])
    out: dict[str, object] = {"kind": kind, "n": n}
    async with connector_cls(settings, app="bench") as sheet:  # type: ignore[arg-type]
        started = time.perf_counter()
        worst = 0.0
        for at in range(0, n, BATCH):
            ops = [WriteOp(key=f"k{i}", op="create", idempotency_key=f"k{i}",
                           fields={"email": f"p{i}@example.org", "first_name": f"نام {i}",
                                   "last_name": "Last", "phone": "+14155550100"})
                   for i in range(at, min(n, at + BATCH))]
            t = time.perf_counter()
            await sheet.write_many(ops)
            worst = max(worst, time.perf_counter() - t)
        out["create_all_s"] = round(time.perf_counter() - started, 3)
        out["last_create_batch_s"] = round(worst, 3)
        t = time.perf_counter()
        pages = [page async for page in sheet.list_changes(None)]
        out["full_listing_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        _ = [page async for page in sheet.list_changes(pages[-1].cursor)]
        out["quiet_listing_s"] = round(time.perf_counter() - t, 3)
        records = [r for page in pages for r in page.records][:BATCH]
        ops = [WriteOp(key=r.app_record_id, op="update", app_record_id=r.app_record_id,
                       fields={"last_name": "Changed"}) for r in records]
        t = time.perf_counter()
        await sheet.write_many(ops)
        out["update_batch_s"] = round(time.perf_counter() - t, 3)
    out["file_kib"] = path.stat().st_size // 1024
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("csv", "xlsx"), default="csv")
    parser.add_argument("--n", type=int, default=10_000)
    args = parser.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(measure(args.kind, args.n, Path(folder)))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
