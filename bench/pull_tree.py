"""The initial HubSpot pull as a user measures it: `customer-sync run --once` as a whole process,
wall time from its start to its exit, and the peak of the summed RSS of its process tree (the
daemon and every process it starts: listing worker, normalizing worker, resource tracker).

    python bench/pull_tree.py                          # 10,000 contacts, 3 runs
    python bench/pull_tree.py --n 10000 --runs 5 --history
    python bench/pull_tree.py --set normalize_workers=0  # a [daemon] setting for this run
    python bench/pull_tree.py --runs 5 --vs normalize_workers=0   # interleaved: default, then B

The HubSpot simulator (`customer_sync.sandbox.hubspot`) runs in a separate process, seeded with
N contacts and served over loopback HTTP; it is not part of the measured tree. Each run gets an
empty SQLite store. The tree is sampled from /proc every `--sample-ms` (Linux only), as the
peer-comparison harness does: at each sample, the RSS of every live process of the tree is
summed, and the peak of those sums is reported, with each process's own peak beside it.
Prints one JSON line per run, then a summary line with the medians.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hubspot_pull import _simulator

PAGE = os.sysconf("SC_PAGE_SIZE")


def _cli() -> list[str]:
    found = shutil.which("customer-sync")
    return [found] if found else [sys.executable, "-m", "customer_sync"]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                kids += [int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return kids


def _rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _label(pid: int) -> str:
    """What the process is, from its command line (the module a worker runs, when it says)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    text = " ".join(argv)
    for mark, name in (("_worker list", "listing worker"), ("_worker normalize", "normalizing worker"),
                       ("_list_worker", "listing worker"), ("_normalize_worker", "normalizing worker"),
                       ("resource_tracker", "resource tracker"), ("spawn_main", "spawned worker"),
                       ("forkserver", "forkserver")):
        if mark in text:
            return name
    return "daemon" if "customer" in text else Path(argv[0]).name


class TreeSampler(threading.Thread):
    """Peak of the summed RSS of a process and its descendants, sampled from /proc."""

    def __init__(self, root: int, every_s: float) -> None:
        super().__init__(daemon=True)
        self.root, self.every_s = root, every_s
        self.peak_sum = 0
        self.peak_procs = 0
        self.peak_by_pid: dict[int, int] = {}
        self.labels: dict[int, str] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            seen, todo = [self.root], [self.root]
            while todo:
                kids = _children(todo.pop())
                seen += kids
                todo += kids
            total = 0
            for pid in seen:
                rss = _rss(pid)
                total += rss
                if rss > self.peak_by_pid.get(pid, 0):
                    self.peak_by_pid[pid] = rss
                    self.labels.setdefault(pid, _label(pid))
            self.peak_sum = max(self.peak_sum, total)
            self.peak_procs = max(self.peak_procs, len(seen))
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def _toml(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str | bool | int | float) else str(value)


def write_config(folder: Path, base_url: str, *, history: bool, daemon: dict[str, Any]) -> Path:
    lines = ["[daemon]", f'store_url = "sqlite:///{folder}/store.db"', 'log_level = "warning"']
    lines += [f"{key} = {_toml(value)}" for key, value in daemon.items()]
    lines += ["", "[apps.hubspot]", 'connector = "hubspot"', "", "[apps.hubspot.settings]",
              f'base_url = "{base_url}"', 'access_token = "${HUBSPOT_TOKEN}"',
              # no client-side limit, as the peers have none: the pull's own speed
              "rate_limit_calls = 1000000", "rate_limit_window_s = 1", "search_per_s = 1000000",
              f"field_history = {_toml(history)}"]
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_once(base_url: str, *, history: bool, daemon: dict[str, Any], sample_s: float) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="cs-bench-tree-"))
    try:
        config = write_config(folder, base_url, history=history, daemon=daemon)
        argv = [*_cli(), "run", "--once", "--json", "--config", str(config)]
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "HUBSPOT_TOKEN": "bench-token"})
        sampler = TreeSampler(proc.pid, sample_s)
        sampler.start()
        out, err = proc.communicate()
        wall = time.perf_counter() - started
        sampler.stop()
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {err.decode()[-2000:]}")
        summary = json.loads(out)
        peaks = sorted(((sampler.labels.get(pid, "?"), round(rss / 2**20, 1))
                        for pid, rss in sampler.peak_by_pid.items()), key=lambda x: -x[1])
        return {"wall_s": round(wall, 2), "tree_peak_mb": round(sampler.peak_sum / 2**20, 1),
                "processes": sampler.peak_procs, "per_process_peak_mb": peaks,
                "read": summary.get("read"), "created": summary.get("created")}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="contacts in the simulator")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--history", action="store_true", help="field_history = true (default off)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a [daemon] setting, e.g. normalize_workers=0 (repeatable)")
    parser.add_argument("--vs", action="append", default=[], metavar="KEY=VALUE",
                        help="also run with these [daemon] settings, interleaved (A B A B ...), "
                             "and print both medians and the B/A ratio of each pair")
    parser.add_argument("--sample-ms", type=float, default=20.0)
    args = parser.parse_args()
    daemon, other = _settings(args.set), _settings(args.vs)
    ours, theirs = mp.Pipe()
    child = mp.get_context("spawn").Process(target=_simulator, args=(args.n, None, theirs))
    child.start()
    base_url = ours.recv()  # seeded and listening
    sides = [("A", daemon)] + ([("B", {**daemon, **other})] if args.vs else [])
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in sides}
    try:
        for _ in range(args.runs):
            for name, settings in sides:
                result = run_once(base_url, history=args.history, daemon=settings,
                                  sample_s=args.sample_ms / 1000)
                results[name].append(result)
                print(json.dumps({"side": name, **result}), flush=True)
    finally:
        ours.send("stop")
        ours.recv()
        child.join(timeout=30)
    summary: dict[str, Any] = {"n": args.n, "runs": args.runs, "field_history": args.history}
    for name, settings in sides:
        runs = results[name]
        summary[name] = {"daemon": settings, "wall_s_median": statistics.median(r["wall_s"] for r in runs),
                         "tree_peak_mb_median": statistics.median(r["tree_peak_mb"] for r in runs),
                         "tree_peak_mb_max": max(r["tree_peak_mb"] for r in runs)}
    if args.vs:
        ratios = [b["wall_s"] / a["wall_s"] for a, b in zip(results["A"], results["B"], strict=True)]
        summary["wall_b_over_a"] = {"median": round(statistics.median(ratios), 3),
                                    "b_faster_in": sum(r < 1 for r in ratios), "pairs": len(ratios)}
    print(json.dumps(summary))


def _settings(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs; a value that reads as JSON (a number, true, a list) is that."""
    settings: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            settings[key] = json.loads(raw)
        except ValueError:
            settings[key] = raw
    return settings


if __name__ == "__main__":
    main()
