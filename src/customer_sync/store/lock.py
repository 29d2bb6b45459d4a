"""One daemon per store: the lock `customer-sync run` holds for as long as it runs.

Two daemons on one store would each poll, decide and dispatch the same changes, and send every
create twice. Until several replicas are designed (leases per app, see the roadmap), a second
daemon on the same store is refused at start with a message that says who holds it:

- **SQLite**: an exclusive OS lock (`flock`) on a file beside the store (`STORE.db.lock`),
  holding the pid and start time of its holder. The OS releases it when the process ends,
  however it ends (kill -9 included), so a crash never leaves a stale lock behind.
- **PostgreSQL**: a session advisory lock, held on a connection of its own for the daemon's
  life; PostgreSQL releases it when that connection closes or its process dies. Its key is
  derived from the store's schema, as advisory locks are database-wide: two stores in two
  schemas of one database are two stores.

An in-memory SQLite store (tests) lives in one process and needs no lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from customer_sync.errors import StoreError, StoreLocked

if TYPE_CHECKING:
    from customer_sync.store.db import Store

__all__ = ["advisory_key", "daemon_lock"]


def advisory_key(schema: str) -> int:
    """The advisory lock's key for a store in `schema`: a 63-bit number derived from the
    project's name and the schema, so that other applications' advisory locks in the same
    database do not collide with it by accident, nor do stores in other schemas."""
    digest = hashlib.blake2b(f"customer-sync/daemon/{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


@contextlib.contextmanager
def daemon_lock(store: Store) -> Iterator[None]:
    """Hold the store's daemon lock for the block.

    Raises:
        StoreLocked: another process holds it; the message says which, where it can tell.
        StoreError: the lock cannot be taken for another reason (an unwritable folder).
    """
    if store.dialect_name == "postgresql":
        with _advisory_lock(store):
            yield
        return
    path = _sqlite_file(store)
    if path is None:
        yield
        return
    with _file_lock(path, store.display_url):
        yield


@contextlib.contextmanager
def _file_lock(db: Path, shown: str) -> Iterator[None]:
    import fcntl

    path = db.with_name(db.name + ".lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreError(f"cannot create the lock file beside the store at {shown}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise StoreLocked(
                f"another customer-sync daemon is running on the store at {shown} ({holder}): "
                "stop it first, or give this one a store of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder().encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def _advisory_lock(store: Store) -> Iterator[None]:
    try:
        conn = store.engine.connect()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot reach the store at {store.display_url} to lock it") from exc
    try:
        try:
            key = advisory_key(conn.execute(text("SELECT current_schema()")).scalar_one())
            taken = conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
            conn.commit()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot lock the store at {store.display_url}: "
                             f"{type(exc).__name__}") from exc
        if not taken:
            # the lock is this database's (advisory locks of other databases show in pg_locks)
            holder = conn.execute(text(
                "SELECT a.pid, a.application_name, a.client_addr, a.backend_start "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND l.classid = (:key >> 32) AND l.objid = (:key & 4294967295)"
            ), {"key": key}).first()
            conn.rollback()
            who = (f"server process {holder.pid}, {holder.application_name or 'no name'} from "
                   f"{holder.client_addr or 'a local socket'} since "
                   f"{holder.backend_start:%Y-%m-%d %H:%M:%S %Z}"
                   if holder is not None else "another session")
            raise StoreLocked(
                f"another customer-sync daemon is running on the store at {store.display_url} "
                f"(it holds advisory lock {key}: {who}): stop it first, or give this one "
                "a database or schema of its own"
            )
        try:
            yield
        finally:
            with contextlib.suppress(SQLAlchemyError):
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
    finally:
        conn.close()


def _sqlite_file(store: Store) -> Path | None:
    database = store.engine.url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _holder() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"
