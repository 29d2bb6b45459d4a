"""Benchmark: the daemon's deciding alone, replaying the pages of a captured HubSpot pull.

`hubspot_pull.py` times three processes sharing the machine's cores (the daemon, its listing
worker and the simulator), so its seconds move with all three, and with the machine. This
script times only what the daemon does with pages once they are read and normalized: the echo
check, matching, merging, planning and the store's writes (`Engine._take_pages`), one
transaction per take, into a fresh SQLite store. The input is captured once from a real pull,
so two revisions decide exactly the same pages:

    python bench/decide_replay.py capture /tmp/pull-10k.pkl --n 10000   # a pull; keep its takes
    python bench/decide_replay.py replay /tmp/pull-10k.pkl              # one JSON line
    python bench/decide_replay.py replay /tmp/pull-10k.pkl --pages-per-take 20
    python bench/compare.py HEAD --bench decide_replay.py -- replay /tmp/pull-10k.pkl

`capture` takes the pull benchmark's `--n` and `--no-history`. The file pickles the pages
(`ChangePage`, `AppRecord`) and the normalizing worker's results (`Normalized`): replay it with
revisions in which those unpickle the same. A 10k history pull is ~7 MB, 100k ~65 MB.

`replay` prints `seconds` (wall time of the transactions), `daemon_cpu_s` (their CPU time; in
one thread, with no other process of ours running) and `commit_cpu_s` (the CPU of the commits
alone), with the transactions' count. `--pages-per-take K` regroups the pages K to a
transaction instead of as the pull took them: the difference is what a transaction costs
beyond its records.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pickle
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hubspot_pull  # this directory's pull benchmark: its config and its run


def capture(path: Path, n: int, history: bool) -> dict[str, Any]:
    """Run the pull benchmark once, keeping every take: (app, pages, normalization per record)."""
    from customer_sync.engine.runner import Engine

    takes: list[tuple[str, list[Any], list[Any]]] = []
    take_pages = Engine._take_pages

    def keep(self: Engine, app: str, pages: Any, normalized: Any = None, full: bool = False) -> int:
        records = [rec for page in pages for rec in page.records]
        # keyed by id(record) in the engine: by position here, which survives pickling
        takes.append((app, list(pages), [(normalized or {}).get(id(rec)) for rec in records]))
        return take_pages(self, app, pages, normalized, full)

    Engine._take_pages = keep  # type: ignore[method-assign]
    try:
        result = asyncio.run(hubspot_pull.run(n, None, history))
    finally:
        Engine._take_pages = take_pages  # type: ignore[method-assign]
    if result["error"]:
        raise SystemExit(f"the pull failed: {result['error']}")
    with path.open("wb") as f:
        pickle.dump({"n": n, "field_history": history, "takes": takes}, f, protocol=5)
    return {"captured": str(path), "n": n, "field_history": history, "takes": len(takes),
            "pull_seconds": result["seconds"]}


def _regroup(takes: list[Any], pages_per_take: int) -> list[Any]:
    pages = []
    for app, take_pages, normalized in takes:
        at = 0
        for page in take_pages:
            pages.append((app, page, normalized[at:at + len(page.records)]))
            at += len(page.records)
    out = []
    for i in range(0, len(pages), pages_per_take):
        group = pages[i:i + pages_per_take]
        out.append((group[0][0], [p for _, p, _ in group], [x for _, _, norm in group for x in norm]))
    return out


def replay(path: Path, pages_per_take: int | None) -> dict[str, Any]:
    from customer_sync.config import load_config
    from customer_sync.engine._gc import collect_young, gc_paused
    from customer_sync.engine.runner import Engine
    from customer_sync.logs import configure_logging
    from customer_sync.store.db import open_store

    configure_logging(level="warning", fmt="json")
    with path.open("rb") as f:
        captured = pickle.load(f)
    takes = captured["takes"]
    if pages_per_take:
        takes = _regroup(takes, pages_per_take)
    tmp = Path(tempfile.mkdtemp(prefix="cs-bench-replay-"))
    try:
        data = hubspot_pull.config(tmp, "http://127.0.0.1:9", rate_limit=None,
                                   history=captured["field_history"])
        data["daemon"]["normalize_workers"] = 0  # nothing is normalized here: it was captured
        data["daemon"]["list_in_worker"] = False
        cfg = load_config(data=data, env={"HUBSPOT_TOKEN": "bench-token"})
        store = open_store(cfg.daemon.store_url)
        commit_cpu = 0.0
        dialect = store.engine.dialect
        do_commit = dialect.do_commit

        def timed_commit(dbapi_connection: Any) -> None:
            nonlocal commit_cpu
            c0 = time.process_time()
            try:
                do_commit(dbapi_connection)
            finally:
                commit_cpu += time.process_time() - c0

        dialect.do_commit = timed_commit  # type: ignore[method-assign]
        engine = Engine(cfg, store)  # not entered: no connector is opened, nothing is sent
        wall = cpu = 0.0
        records = 0
        with gc_paused():  # as a poll runs them (see engine._gc)
            for app, pages, normalized in takes:
                recs = [rec for page in pages for rec in page.records]
                by_id = {id(rec): done for rec, done in zip(recs, normalized, strict=True) if done is not None}
                t0, c0 = time.perf_counter(), time.process_time()
                engine._take_pages(app, pages, by_id)
                cpu += time.process_time() - c0
                wall += time.perf_counter() - t0
                records += len(recs)
                collect_young()
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "replayed": str(path), "field_history": captured["field_history"], "records": records,
        "takes": len(takes), "seconds": round(wall, 3), "daemon_cpu_s": round(cpu, 3),
        "commit_cpu_s": round(commit_cpu, 3), "records_per_cpu_s": round(records / cpu) if cpu else None,
        "python_loop_s": hubspot_pull.python_loop_s(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture", help="run a pull and keep the pages it decided")
    cap.add_argument("file", type=Path)
    cap.add_argument("--n", type=int, default=10_000, help="contacts (default 10000)")
    cap.add_argument("--no-history", action="store_true", help="turn off field_history")
    rep = sub.add_parser("replay", help="decide captured pages into a fresh store")
    rep.add_argument("file", type=Path)
    rep.add_argument("--pages-per-take", type=int, help="regroup the pages K to a transaction")
    args = parser.parse_args()
    if args.command == "capture":
        if args.n < 1:
            parser.error("--n must be at least 1")
        out = capture(args.file, args.n, not args.no_history)
    else:
        if not args.file.is_file():
            parser.error(f"{args.file}: no such capture (make one with `capture`)")
        if args.pages_per_take is not None and args.pages_per_take < 1:
            parser.error("--pages-per-take must be at least 1")
        out = replay(args.file, args.pages_per_take)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
