"""Reloading the daemon's config while it runs (SIGHUP today; an admin endpoint can call the
same `Reloader.reload` later and answer with its result).

A reload re-reads the file the daemon was started with and validates it exactly as a start
would. A config that is invalid, or that changes what only a restart can change (the store,
the listen address), is refused: the running config stays and one log line says why. A valid
one is swapped in: the daemon lets the round in flight finish its writes and commit its
cursors, closes the apps, and opens the new config's apps on the same store and socket, so an
app added, removed or changed takes effect at once, and no webhook connection is refused in
between (the bound socket keeps queueing them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from customer_sync.errors import ConfigError

if TYPE_CHECKING:
    from customer_sync.config import Config

__all__ = ["RESTART_ONLY", "ReloadResult", "Reloader"]

log = structlog.get_logger("customer_sync.daemon")

#: `[daemon]` settings a reload cannot change: the store is held under the daemon's lock and
#: the socket is bound once.
RESTART_ONLY = ("store_url", "listen")


@dataclass(frozen=True)
class ReloadResult:
    """What a reload did: `applied` the new config, or kept the running one for `reason`."""

    applied: bool
    reason: str
    apps: tuple[str, ...] = ()


class Reloader:
    """Holds the config the daemon runs and swaps in a new one that passes validation."""

    def __init__(self, path: Path, config: Config) -> None:
        self.path = path
        self.config = config
        self.swapped = asyncio.Event()  # set when a new config is in `config`, to be opened
        self._lock = asyncio.Lock()

    async def reload(self) -> ReloadResult:
        """Re-read and validate the config file; swap it in, or keep the running one."""
        from customer_sync.config import load_config

        async with self._lock:
            try:
                new = await asyncio.to_thread(load_config, self.path)
            except ConfigError as exc:
                return self._refuse("; ".join(exc.problems))
            fixed = [key for key in RESTART_ONLY
                     if getattr(new.daemon, key) != getattr(self.config.daemon, key)]
            if fixed:
                return self._refuse(", ".join(f"daemon.{key}" for key in fixed)
                                    + " changes only with a restart")
            before = set(self.config.apps)
            self.config = new
            self.swapped.set()
            log.info("daemon.reloading", apps=sorted(new.apps), added=sorted(set(new.apps) - before),
                     removed=sorted(before - set(new.apps)))
            return ReloadResult(True, "the new config is being opened", tuple(sorted(new.apps)))

    def _refuse(self, reason: str) -> ReloadResult:
        log.warning("daemon.reload_refused", reason=reason, detail="the running config stays")
        return ReloadResult(False, reason)
