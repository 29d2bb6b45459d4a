"""The entry point of a worker process: `python -m customer_sync.engine._worker KIND FD`.

Started by `engine._spawn.WorkerProcess`. It guards against outliving the daemon first, then
reads the parent's `sys.path` and its arguments from the pipe on file descriptor FD, and runs
one kind of worker:
- `list`: an app's listing (`engine._list_worker.main`);
- `normalize`: normalizing pages (`engine._normalize_worker.serve`).

Nothing else is imported here: each kind imports what it needs.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    kind, fd = argv[1], int(argv[2])
    from customer_sync.engine._orphan import die_with_parent

    die_with_parent()
    from customer_sync.engine._spawn import inherit_fd

    conn = inherit_fd(fd)
    try:
        _, sys_path, args = conn.recv()
    except (EOFError, OSError):
        return  # the daemon went away before it sent anything
    sys.path[:] = list(dict.fromkeys([*sys_path, *sys.path]))  # as the parent finds modules
    if kind == "list":
        from customer_sync.engine._list_worker import main as run_listing

        run_listing(conn, *args)
    elif kind == "normalize":
        from customer_sync.engine._normalize_worker import serve

        serve(conn, *args)
    else:
        raise SystemExit(f"unknown worker kind {kind!r}")


if __name__ == "__main__":
    main(sys.argv)
