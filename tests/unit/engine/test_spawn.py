"""Worker processes start from a small module of their own (`engine._spawn`), without
multiprocessing's spawn: no re-import of the daemon's main module, no resource tracker; and
they never outlive the daemon, SIGKILL of the daemon included."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from customer_sync.engine._spawn import WorkerProcess
from customer_sync.engine.normalizing import PageNormalizer
from tests._procs import alive, children

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")

# setup arguments per kind: the listing worker takes its logging settings
ARGS = {"normalize": (), "list": ("warning", "json", True)}


def _cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


async def test_the_normalizing_worker_runs_its_own_module_and_starts_no_resource_tracker() -> None:
    """The worker is `python -m customer_sync.engine._worker normalize`, and it is the only
    process the normalizer starts."""
    before = children(os.getpid())
    normalizer = PageNormalizer(1, min_records=1)
    try:
        await normalizer.start()
        assert normalizer.ready
        [pid] = normalizer.pids
        assert ["-m", "customer_sync.engine._worker", "normalize"] == _cmdline(pid)[1:4]
        started = children(os.getpid()) - before
        assert {pid} == started, [_cmdline(p) for p in started]
    finally:
        normalizer.close()
    _wait_for(lambda: not alive(pid), "the worker to exit")


@pytest.mark.parametrize("kind", ["normalize", "list"])
def test_a_worker_imports_neither_the_cli_nor_the_store(kind: str) -> None:
    """What a worker's entry and its kind's module import at start: no CLI, no SQLAlchemy,
    no engine runner (a worker once re-imported the whole CLI as its main module)."""
    probe = (
        "import json, sys\n"
        "import customer_sync.engine._worker, customer_sync.engine._spawn, customer_sync.engine._orphan\n"
        + ("from customer_sync.engine._normalize_worker import warm_up; warm_up()\n" if kind == "normalize"
           else "import customer_sync.engine._list_worker, customer_sync.logs\n")
        + "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    modules = set(json.loads(done.stdout))
    heavy = sorted(m for m in modules if m.split(".")[0] in ("sqlalchemy", "sqlmodel", "alembic", "typer", "click")
                   or m in ("customer_sync.cli", "customer_sync.engine.runner", "customer_sync.store.db"))
    assert [] == heavy


@pytest.mark.parametrize("kind", ["normalize", "list"])
def test_a_worker_ends_when_its_parent_is_killed(kind: str) -> None:
    """SIGKILL of the process that started a worker ends the worker too (no orphan)."""
    parent = subprocess.Popen(
        [sys.executable, "-c",
         ("import sys, time\n"
          "from customer_sync.engine._spawn import WorkerProcess\n"
          f"w = WorkerProcess({kind!r}, *{ARGS[kind]!r})\n"
          "assert w.conn.recv() == ('ready',)\n"
          "print(w.pid, flush=True)\n"
          "time.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert alive(worker)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        _wait_for(lambda: not alive(worker), "the worker to end with its parent")
    finally:
        parent.kill()
        parent.wait(timeout=30)


@pytest.mark.parametrize("kind", ["normalize", "list"])
def test_a_worker_exits_when_asked_and_when_its_pipe_closes(kind: str) -> None:
    """`stop` ends a worker cleanly (exit status 0); so does closing the daemon's end of the
    pipe (the daemon went away without a word)."""
    asked = WorkerProcess(kind, *ARGS[kind])
    closed = WorkerProcess(kind, *ARGS[kind])
    try:
        assert ("ready",) == asked.conn.recv()
        assert ("ready",) == closed.conn.recv()
        asked.stop(timeout=30)
        assert 0 == asked.exitcode
        closed.close()
        closed.join(30)
        assert 0 == closed.exitcode
    finally:
        for worker in (asked, closed):
            worker.kill()
            worker.join(30)
