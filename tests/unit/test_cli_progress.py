"""`run --once` draws a progress bar of initial pulls on a terminal, and none elsewhere."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from customer_sync._cli_progress import progress_bar
from customer_sync.store.db import open_store
from tests.integration.conftest import World
from tests.unit.test_cli import Setup, _restore_logging, setup  # noqa: F401 (fixtures)


def test_run_once_off_a_terminal_draws_no_bar(setup: Setup) -> None:  # noqa: F811
    """Captured output (not a terminal) holds the summary and no bar, cursor moves or colour."""
    setup.ok("run", "--once")  # creates the tables
    for i in range(3):
        setup.insert("a", f"a{i}", f"p{i}@example.com", f"P{i}")
    setup.ok("resync", "a")

    result = setup.ok("run", "--once")

    assert result.stdout.startswith("pass finished in ")
    for output in (result.stdout, result.stderr):
        assert "━" not in output and "\x1b[" not in output and "\r" not in output
        assert "pulling" not in output


async def test_on_a_terminal_each_initial_pull_gets_a_bar(tmp_path: Path) -> None:
    """On a terminal, an app pulled from the start shows a bar that ends at its record count."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    store = open_store(f"sqlite:///{tmp_path}/store.db")
    try:
        world = World(store, apps=("crm", "desk"))
        for i in range(20):
            world.apps["crm"].put({"email": f"p{i}@example.com"})
        async with world.engine() as engine:
            with progress_bar(engine, console=console):
                await engine.run_once()
            assert [] == engine.progress_listeners
    finally:
        store.close()
    text = out.getvalue()
    assert "pulling crm" in text
    assert "20/20" in text
