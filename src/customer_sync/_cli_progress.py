"""The progress bar of `run --once` on a terminal: one bar per app being pulled from the start
(its first run, or the run after `resync`), fed by the engine's `PullProgress` listeners.

Only when stderr is a terminal: piped or captured output (cron, CI, a log file) gets the
`pull.progress` log lines and no bar, so it stays plain text. rich is imported only then.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from customer_sync.engine.runner import Engine
    from customer_sync.progress import PullProgress

__all__ = ["progress_bar"]


@contextlib.contextmanager
def progress_bar(engine: Engine, *, console: Any = None) -> Iterator[None]:
    """Show a bar per initial pull while the block runs, when stderr is a terminal.

    Args:
        console: a `rich.console.Console` to draw on (tests); by default stderr's, and only
            when stderr is a terminal.
    """
    if console is None and not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console or Console(stderr=True), transient=False)
    tasks: dict[str, Any] = {}

    def show(p: PullProgress) -> None:
        task = tasks.get(p.app)
        if task is None:
            task = tasks[p.app] = bars.add_task(f"pulling {p.app}", total=p.total, rate="0")
        total = max(p.total, p.records) if p.total is not None else (p.records if p.done else None)
        bars.update(task, completed=p.records, total=total, rate=f"{p.rate:.0f}")

    engine.progress_listeners.append(show)
    try:
        with bars:
            yield
    finally:
        engine.progress_listeners.remove(show)
