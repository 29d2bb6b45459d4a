"""Start-up cost of the CLI as a user measures it: wall time from process start to exit, and the
process's peak RSS, for `customer-sync --help` and `customer-sync status`.

    python bench/startup.py              # 7 runs of each
    python bench/startup.py --runs 15

`status` runs against `config.example.toml`'s two `sql` apps in a temporary folder, synced once
first (`run --once`, not timed) so that it has a store to read. Each figure is the whole process:
interpreter start, imports, the command, exit. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cli() -> list[str]:
    found = shutil.which("customer-sync")
    return [found] if found else [sys.executable, "-m", "customer_sync"]


def _once(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one run of `argv`."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024  # KiB on Linux


def _summary(runs: list[tuple[float, float]]) -> dict[str, float]:
    seconds = [s for s, _ in runs]
    return {"median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
            "max_s": round(max(seconds), 3), "peak_rss_mb": round(max(r for _, r in runs), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    cli = _cli()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "config.toml"
        shutil.copy(ROOT / "config.example.toml", config)
        subprocess.run([*cli, "run", "--once", "--config", str(config)], cwd=folder, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = {}
        for name, argv in (("help", [*cli, "--help"]), ("status", [*cli, "status", "--config", str(config)])):
            runs = [_once(argv, folder) for _ in range(args.runs)]
            results[name] = _summary(runs)
            print(f"{name:>6}: median {results[name]['median_s']:.2f} s "
                  f"(min {results[name]['min_s']:.2f}, max {results[name]['max_s']:.2f}), "
                  f"peak RSS {results[name]['peak_rss_mb']:.0f} MB")
    print(json.dumps({"runs": args.runs, **results}))


if __name__ == "__main__":
    main()
