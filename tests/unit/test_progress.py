"""Progress of an initial pull: logged at info level every few seconds, with an estimate only
when the total is known."""

from __future__ import annotations

from pathlib import Path

import structlog

from customer_sync.progress import PullProgress
from customer_sync.store.db import open_store
from tests.integration.conftest import World


class FakeClock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_is_logged_every_interval_with_rate_and_estimate() -> None:
    """Batches within the interval log nothing; past it, one line with records, rate and time left."""
    clock = FakeClock()
    progress = PullProgress("crm", total=1000, every_s=5.0, clock=clock)
    with structlog.testing.capture_logs() as logs:
        clock.t += 2
        progress.add(100)
        clock.t += 3
        progress.add(150)  # 250 records in 5 s: 50/s, 750 left: 15 s
    lines = [e for e in logs if e["event"] == "pull.progress"]
    assert [{"app": "crm", "records": 250, "total": 1000, "rate_per_s": 50.0, "eta_s": 15,
             "log_level": "info", "event": "pull.progress"}] == lines


def test_without_a_total_there_is_no_estimate() -> None:
    """A connector that cannot tell its total gets records and rate, and no estimate."""
    clock = FakeClock()
    progress = PullProgress("desk", every_s=1.0, clock=clock)
    with structlog.testing.capture_logs() as logs:
        clock.t += 2
        progress.add(10)
        progress.finish()
    (line,) = [e for e in logs if e["event"] == "pull.progress"]
    assert (None, None, 5.0) == (line["total"], line["eta_s"], line["rate_per_s"])
    (end,) = [e for e in logs if e["event"] == "pull.finished"]
    assert 10 == end["records"]


async def test_an_initial_pull_logs_its_progress_and_tells_listeners(tmp_path: Path) -> None:
    """An engine's initial pull logs `pull.started` with the app's total, then progress, and its
    listeners see every batch up to the end; a later incremental poll is not a pull."""
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    try:
        world = World(store, apps=("crm", "desk"))
        for i in range(20):
            world.apps["crm"].put({"email": f"p{i}@example.com"})
        seen: list[tuple[str, int, bool]] = []
        async with world.engine() as engine:
            engine.progress_every_s = 0.0
            engine.progress_listeners.append(lambda p: seen.append((p.app, p.records, p.done)))
            with structlog.testing.capture_logs() as logs:
                await engine.run_once()
            started = {e["app"]: e["total"] for e in logs if e["event"] == "pull.started"}
            assert {"crm": 20, "desk": 0} == started
            assert any(e["event"] == "pull.progress" and e["app"] == "crm" for e in logs)
            assert ("crm", 20, True) in seen
            assert {} == engine.pulls
            with structlog.testing.capture_logs() as later:
                await engine.run_once()
            assert not [e for e in later if e["event"].startswith("pull.")]
    finally:
        store.close()
