"""Worker processes never outlive the daemon: each calls `die_with_parent()` first thing.

Two guards, as neither alone covers every platform and every way a daemon ends:
- on Linux, `prctl(PR_SET_PDEATHSIG, SIGKILL)`: the kernel kills the worker the moment its
  parent ends, SIGKILL of the parent included;
- everywhere, a thread that waits on the parent's sentinel (a pipe the parent holds open, which
  multiprocessing gives every spawned child) and ends the worker when it closes; or, where there
  is no sentinel, that polls the parent's pid.

A worker also ignores SIGINT and SIGTERM: Ctrl-C in a terminal (or a signal sent to the whole
process group) reaches the workers too, and the daemon, which drains its work before it stops
them, decides when they end; they do not end mid-page with a traceback of their own.

Standard library only: a worker imports this before anything else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Make this process end when its parent does (see the module's doc)."""
    parent = os.getppid()
    with contextlib.suppress(ValueError, OSError):  # not the main thread, or no such signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):  # no libc to load: the thread below still watches
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:  # the parent ended before the guard was set
        os._exit(0)
    threading.Thread(target=_watch, args=(parent,), name="customer-sync-parent-watch",
                     daemon=True).start()


def _watch(parent: int) -> None:
    import multiprocessing
    from multiprocessing.connection import wait

    process = multiprocessing.parent_process()
    sentinel = getattr(process, "sentinel", None)
    if sentinel is not None:
        with contextlib.suppress(OSError, ValueError):
            wait([sentinel])  # readable (end of file) once the parent has ended
            os._exit(0)
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)
