"""Starting a worker process from a small module of its own, talking over a socket pair.

A worker is `python -m customer_sync.engine._worker KIND FD`: a fresh interpreter that imports
only what its kind of work needs. Started through `multiprocessing`'s spawn instead, a worker
re-imported the daemon's main module (the whole CLI), and spawn also started multiprocessing's
resource tracker, a third process; neither is needed to pass pickled messages over a pipe.

The parent keeps a `multiprocessing.connection.Connection` on its end of the socket pair (the
same framed pickles as before, and a file descriptor an event loop can watch). The worker gets
the parent's `sys.path` in its first message, so that whatever the parent can unpickle, it can.
It ends with its parent (`_orphan.die_with_parent`), and when its end of the pipe closes.

Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["WorkerProcess"]

ENTRY = "customer_sync.engine._worker"


class WorkerProcess:
    """One worker process of `kind` ("list" or "normalize"), and the parent's end of its pipe.

    Args:
        kind: which worker `customer_sync.engine._worker` runs.
        args: picklable arguments for that worker, sent with its first message.
    """

    def __init__(self, kind: str, *args: Any) -> None:
        ours, theirs = socket.socketpair()
        try:
            # From the thread that will outlive it (the event loop's): on Linux the worker's
            # parent-death signal fires when the thread that started it ends.
            self.process = subprocess.Popen(
                [sys.executable, "-m", ENTRY, kind, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        try:
            self.conn.send(("setup", list(sys.path), args))
        except (OSError, ValueError):
            pass  # it died at once: the caller sees the pipe closed

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def exitcode(self) -> int | None:
        """None while it runs; its exit status (or minus the signal that ended it) after."""
        return self.process.poll()

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def join(self, timeout: float | None = None) -> None:
        """Wait up to `timeout` seconds for it to end (and reap it)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            self.process.kill()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask it to exit, wait `timeout` seconds, then kill it (it ignores SIGTERM); close the pipe."""
        with contextlib.suppress(OSError, ValueError):
            self.conn.send(("exit",))
        self.join(timeout)
        if self.is_alive():
            self.kill()
            self.join(timeout)
        self.close()

    def close(self) -> None:
        """Close the parent's end of the pipe (the worker then sees end of file)."""
        with contextlib.suppress(OSError):
            self.conn.close()


def inherit_fd(fd: int) -> Connection:
    """In the worker: the pipe the parent handed down as `fd` (not inherited by its children)."""
    os.set_inheritable(fd, False)
    return Connection(fd)
