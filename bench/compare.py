"""Compare two versions on a benchmark with paired, interleaved runs (A, B, A, B, ...).

On a shared machine whose speed drifts from one minute to the next, single runs of two versions
say little: the drift is as large as most changes. Runs taken in pairs, one of each version back
to back, see the same drift; the ratio B/A per pair is what to read.

    python bench/compare.py HEAD~3                         # HEAD~3 against the working tree
    python bench/compare.py v0.1 HEAD --pairs 10 -- --n 10000 --no-history
    python bench/compare.py main --bench sync_sql.py -- --n 20000

Each version runs from a temporary git worktree of that revision (the working tree, as it is,
when B is not given), with its own `src/` and its own bundled connectors (`connectors/`, imported
as `customer_sync_connectors`) first on PYTHONPATH, and its own copy of the benchmark script (a
revision older than the script runs this checkout's copy). The benchmark must print one JSON
object with `seconds` on its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _worktree(rev: str, into: Path) -> Path:
    done = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(into), rev],
                          check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cannot check out {rev!r}: {done.stderr.strip()}")
    return into


def _imports(tree: Path) -> list[str]:
    """PYTHONPATH entries that make `tree`'s code the one imported. `src/` holds
    `customer_sync` under its own name; the bundled connectors live in `connectors/` and are
    installed as `customer_sync_connectors`, so they are reached through a link of that name
    (without it, both sides would import the installed checkout's connectors)."""
    links = tree / ".compare-imports"
    link = links / "customer_sync_connectors"
    if not link.exists():
        links.mkdir(exist_ok=True)
        link.symlink_to(tree / "connectors", target_is_directory=True)
    return [str(tree / "src"), str(links)]


def _run(tree: Path, bench: str, args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [*_imports(tree), os.environ.get("PYTHONPATH")])))
    script = tree / "bench" / bench
    if not script.is_file():  # a benchmark newer than the revision: run this checkout's copy
        script = ROOT / "bench" / bench
    done = subprocess.run([sys.executable, str(script), *args], env=env, cwd=tree, check=False,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{script} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", help="the baseline revision")
    parser.add_argument("b", nargs="?", help="the revision to compare (default: the working tree)")
    parser.add_argument("--pairs", type=int, default=8, help="pairs of runs (default 8)")
    parser.add_argument("--bench", default="hubspot_pull.py", help="script under bench/ (default hubspot_pull.py)")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])  # after --: the benchmark's own arguments
    bench_args = argv[split + 1:]
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")

    with tempfile.TemporaryDirectory(prefix="cs-compare-") as tmp:
        trees: dict[str, Path] = {}
        try:
            trees["A"] = _worktree(args.a, Path(tmp) / "a")
            trees["B"] = _worktree(args.b, Path(tmp) / "b") if args.b else ROOT
            runs: dict[str, list[dict]] = {"A": [], "B": []}
            for i in range(args.pairs):
                for side in ("A", "B"):
                    runs[side].append(_run(trees[side], args.bench, bench_args))
                a, b = runs["A"][-1]["seconds"], runs["B"][-1]["seconds"]
                print(f"pair {i + 1}/{args.pairs}: A {a:.2f} s, B {b:.2f} s, B/A {b / a:.3f}", file=sys.stderr)
        finally:
            for side, tree in trees.items():
                if tree != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)

    def summary(side: str) -> dict:
        seconds = [r["seconds"] for r in runs[side]]
        out = {"median_s": round(statistics.median(seconds), 3), "min_s": min(seconds), "max_s": max(seconds)}
        if all("daemon_cpu_s" in r for r in runs[side]):
            out["median_cpu_s"] = round(statistics.median(r["daemon_cpu_s"] for r in runs[side]), 3)
        if all("peak_rss_mb" in r for r in runs[side]):
            out["max_peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs[side])
        return out

    ratios = [b["seconds"] / a["seconds"] for a, b in zip(runs["A"], runs["B"], strict=True)]
    print(json.dumps({
        "a": args.a, "b": args.b or "working tree", "bench": [args.bench, *bench_args], "pairs": args.pairs,
        "A": summary("A"), "B": summary("B"),
        "b_over_a_median": round(statistics.median(ratios), 3),
        "b_faster_in_pairs": sum(r < 1 for r in ratios),
    }))


if __name__ == "__main__":
    main()
