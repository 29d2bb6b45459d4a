"""Progress of long work: an initial pull (an app listed from no cursor) says how far it is.

A `PullProgress` lives from the first page of a listing from no cursor to the end of that
listing, across the rounds that take it in slices. It logs `pull.progress` at info level at most
every `every_s` seconds (records so far, rate, and, when the connector can tell how many records
the app holds, the total and an estimate of the time left), and `pull.finished` at the end. It
also tells its listeners after every batch (the CLI draws a progress bar with them).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

__all__ = ["DEFAULT_EVERY_S", "ProgressListener", "PullProgress"]

log = structlog.get_logger("customer_sync.engine")

#: How often an initial pull logs its progress, in seconds.
DEFAULT_EVERY_S = 5.0

#: Called with the progress after each batch taken, and once more at the end (`done` True).
ProgressListener = Callable[["PullProgress"], None]


@dataclass
class PullProgress:
    """How far one app's initial pull is.

    Args:
        app: the app being listed.
        total: how many records the app holds, when its connector can tell; else None.
        every_s: the least time between two `pull.progress` lines.
        clock: a monotonic clock in seconds (a seam for tests).
        listeners: told after every batch.
    """

    app: str
    total: int | None = None
    every_s: float = DEFAULT_EVERY_S
    clock: Callable[[], float] = time.monotonic
    listeners: list[ProgressListener] = field(default_factory=list)
    records: int = 0
    done: bool = False

    def __post_init__(self) -> None:
        self.started = self.clock()
        self._logged = self.started

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.started

    @property
    def rate(self) -> float:
        """Records per second since the pull started."""
        elapsed = self.elapsed_s
        return self.records / elapsed if elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far, when the total is known (else None)."""
        if self.total is None or self.rate <= 0:
            return None
        return max(self.total - self.records, 0) / self.rate

    def add(self, records: int) -> None:
        """`records` more were taken; log when `every_s` has passed since the last line."""
        self.records += records
        now = self.clock()
        if now - self._logged >= self.every_s:
            self._logged = now
            log.info("pull.progress", app=self.app, records=self.records, total=self.total,
                     rate_per_s=round(self.rate, 1),
                     eta_s=None if self.eta_s is None else round(self.eta_s))
        self._tell()

    def finish(self) -> None:
        """The listing reached its end."""
        self.done = True
        log.info("pull.finished", app=self.app, records=self.records,
                 duration_s=round(self.elapsed_s, 1), rate_per_s=round(self.rate, 1))
        self._tell()

    def _tell(self) -> None:
        for listener in self.listeners:
            listener(self)
