"""Start-up cost of the CLI as a user measures it: wall time from process start to exit, and the
process's peak RSS, for `customer-sync --help` and `customer-sync status`.

    python bench/startup.py              # 7 runs of each
    python bench/startup.py --runs 15
    python bench/startup.py --floor      # also: what the libraries alone cost, layer by layer

`status` runs against `config.example.toml`'s two `sql` apps in a temporary folder, synced once
first (`run --once`, not timed) so that it has a store to read. Each figure is the whole process:
interpreter start, imports, the command, exit. The last line is one JSON object; its `seconds`
is `status`'s median, for `bench/compare.py`.

`--floor` times `python -c "import ..."` for what `status` imports, adding one layer at a time:
the interpreter alone, then the libraries it cannot do without (typer, pydantic, ...), then our
modules. It prints the fastest wall time of each cumulative step and what the step added: what
is left between the last step and the fastest `status` is the command's own work.
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


# What `status` imports, in the order a layer builds on the one before: first the libraries it
# cannot do without, then our own modules (each with whatever it imports that is not loaded yet).
_FLOOR = (
    ("python", "pass"),
    ("+ typer", "import typer"),
    ("+ pydantic", "from pydantic import BaseModel"),
    ("+ pydantic-settings (and asyncio)", "import pydantic_settings"),
    ("+ sqlalchemy core, sqlite dialect", "import sqlalchemy, sqlalchemy.dialects.sqlite"),
    ("+ sqlmodel (sqlalchemy orm)", "import sqlmodel"),
    ("+ sqlalchemy's postgresql dialect", "import sqlalchemy.dialects.postgresql"),
    ("+ structlog (customer_sync.logs)", "import customer_sync.logs"),
    ("+ customer_sync.cli", "import customer_sync.cli"),
    ("+ customer_sync.config", "import customer_sync.config"),
    ("+ the sql connector", "import customer_sync_connectors.sql"),
    ("+ store.tables (13 table classes)", "import customer_sync.store.tables"),
    ("+ engine.admin", "import customer_sync.engine.admin"),
)


def _floor(runs: int, cwd: Path) -> dict[str, float]:
    """The fastest wall time of each cumulative layer of `_FLOOR`, in seconds: on a shared machine
    the differences of medians wander by tens of milliseconds, those of the fastest runs much less."""
    fastest: dict[str, float] = {}
    code: list[str] = []
    for name, statement in _FLOOR:
        code.append(statement)
        argv = [sys.executable, "-c", "; ".join(code)]
        fastest[name] = round(min(_once(argv, cwd)[0] for _ in range(runs)), 3)
    return fastest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--floor", action="store_true", help="also time the libraries alone, layer by layer")
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
        if args.floor:
            results["floor"] = _floor(args.runs, folder)
            before = 0.0
            for name, seconds in results["floor"].items():
                print(f"{name:>36}: {seconds:.3f} s ({seconds - before:+.3f})")
                before = seconds
    # `seconds` is what bench/compare.py pairs: the median of `status`.
    print(json.dumps({"runs": args.runs, "seconds": results["status"]["median_s"], **results}))


if __name__ == "__main__":
    main()
