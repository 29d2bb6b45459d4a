"""One daemon per store: the lock `customer-sync run` holds (`store.lock.daemon_lock`).

Each test runs on SQLite (an OS lock on a file beside the store) and on PostgreSQL (a session
advisory lock). A holder in another process is a child Python that takes the lock and waits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from customer_sync.errors import StoreLocked
from customer_sync.store.db import Store, open_store
from customer_sync.store.lock import daemon_lock

HOLDER = """\
import sys, time
from customer_sync.store.db import open_store
from customer_sync.store.lock import daemon_lock

with open_store(sys.argv[1]) as store, daemon_lock(store):
    print("locked", flush=True)
    time.sleep(600)
"""


@contextmanager
def holder(store_url: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the store's lock, killed (SIGKILL) when the block ends at the
    latest."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, store_url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the child holds the lock (or dies)
        assert "locked\n" == line, proc.stderr.read() if proc.stderr else ""
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def refusal(store: Store) -> str:
    """The message of the StoreLocked that taking the lock raises."""
    with pytest.raises(StoreLocked) as refused, daemon_lock(store):
        pass
    return str(refused.value)


def test_a_second_lock_on_a_store_is_refused_and_the_message_names_the_holder(
    store_url: str,
) -> None:
    """While one process holds the lock, another is refused with one line that says who
    holds it: the pid and host for SQLite, the server process and its client for PostgreSQL."""
    with open_store(store_url) as store, holder(store_url) as proc:
        message = refusal(store)

    assert "\n" not in message
    assert message.startswith("another customer-sync daemon is running on the store at ")
    if store.dialect_name == "sqlite":
        assert f"pid {proc.pid} on {socket.gethostname()}" in message
    else:
        assert "server process " in message and "customer-sync from " in message


def test_two_locks_in_one_process_exclude_each_other(store_url: str) -> None:
    """The lock is the store's, not the process's: a second store object in the same process
    is refused too, and takes the lock once the first lets go."""
    with open_store(store_url) as first, open_store(store_url) as second:
        with daemon_lock(first):
            refusal(second)
        with daemon_lock(second):
            pass


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(store_url: str) -> None:
    """kill -9 of the holder frees the lock without anyone cleaning up: at once on SQLite (the
    OS drops the file lock with the process), as soon as the server sees the connection gone
    on PostgreSQL (it ends the session)."""
    with open_store(store_url) as store:
        with holder(store_url) as proc:
            refusal(store)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            killed_at = time.monotonic()
            if store.dialect_name == "sqlite":
                with daemon_lock(store):
                    pass
            else:
                _lock_within(store, seconds=10.0)
        print(f"lock taken {time.monotonic() - killed_at:.3f}s after the holder's kill -9")


def _lock_within(store: Store, *, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with daemon_lock(store):
                return
        except StoreLocked:
            assert time.monotonic() < deadline, "the killed holder's lock is still held"
            time.sleep(0.02)


def test_an_in_memory_store_takes_no_lock() -> None:
    """An in-memory SQLite store lives in one process: there is nothing to share, no lock."""
    with open_store("sqlite://") as store, daemon_lock(store), daemon_lock(store):
        pass


def test_the_lock_file_stays_beside_the_store_and_says_who_held_it_last(sqlite_url: str) -> None:
    """The lock file is `STORE.db.lock`; it outlives its holder (the lock, not the file, is
    what counts) and names the last holder."""
    with open_store(sqlite_url) as store, daemon_lock(store):
        pass
    path = make_url(sqlite_url).database
    assert path is not None
    text = Path(path + ".lock").read_text(encoding="utf-8")
    assert text.startswith(f"pid {os.getpid()} on {socket.gethostname()}, since ")


def test_stores_in_two_schemas_of_one_database_are_locked_apart(pg_store_url: str) -> None:
    """Two stores in one PostgreSQL database (each in its own schema) are two stores: a daemon
    on each runs at the same time."""
    url = make_url(pg_store_url)
    other_schema = f"{url.query['options'].rpartition('=')[2]}_other"
    admin = create_engine(url.set(query={}), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{other_schema}"')
    try:
        other_url = url.update_query_dict({"options": f"-csearch_path={other_schema}"})
        other = other_url.render_as_string(hide_password=False)
        with open_store(pg_store_url) as first, open_store(other) as second, \
                daemon_lock(first), daemon_lock(second):
            pass
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{other_schema}" CASCADE')
        admin.dispose()
