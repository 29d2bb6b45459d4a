"""Opening the store: one SQLAlchemy engine on SQLite or PostgreSQL, migrated to head.

The embedded default is a SQLite file in WAL mode; several replicas share one PostgreSQL
database. Every failure to open, reach or migrate the store is a `StoreError` whose message
names the store by its URL with the password masked.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from customer_sync.errors import StoreError
from customer_sync.store._revisions import current_revisions, head_revisions, known_revisions

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

__all__ = ["Store", "check_store", "migrate_store", "open_store", "store_to_create"]

log = structlog.get_logger("customer_sync.store")

_SQLITE_PRAGMAS = (
    "PRAGMA busy_timeout=10000",  # first, so that switching to WAL waits for a busy file
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    # 64 MiB of page cache instead of 2: links, bases and the change log are indexed by random
    # customer ids, and with a small cache every batch's inserts miss it as the store grows.
    "PRAGMA cache_size=-65536",
    "PRAGMA wal_autocheckpoint=8000",
)
_PG_CONNECT_TIMEOUT_S = 10


class Store:
    """The store's engine, and the one way the rest of the code runs a transaction on it."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def dialect_name(self) -> str:
        """`sqlite` or `postgresql`."""
        return self.engine.dialect.name

    @property
    def display_url(self) -> str:
        """The store's URL with the password masked: safe for messages and logs."""
        return _display(self.engine.url)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection in one transaction: committed when the block ends, rolled back if it raises.

        On SQLite the transaction takes the write lock when it begins (BEGIN IMMEDIATE), so a
        read followed by a write in one block is atomic against other processes.
        """
        with self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store at `url`, creating a SQLite file and migrating the schema to head.

    Args:
        url: `sqlite:///path/to/file.db` (parent folders are created) or
            `postgresql://user:password@host/db` (`postgresql+psycopg://` is the same).
        migrate: run the migrations to head; a no-op when the schema is already there.

    Raises:
        StoreError: the URL is invalid, or the store cannot be reached or migrated.
    """
    parsed = _parse(url)
    engine = _create_engine(parsed, create_dirs=True)
    try:
        with engine.connect():
            pass
        if migrate:
            _migrate(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = _reason(exc, parsed)
        raise StoreError(f"cannot reach the store at {_display(parsed)}: {reason}") from exc
    except BaseException:
        engine.dispose()
        raise
    return Store(engine)


def migrate_store(store: Store) -> None:
    """Bring an opened store's schema to head; a no-op when it is there already.

    Raises:
        StoreError: the store cannot be migrated.
    """
    _migrate(store.engine)


def store_to_create(url: str) -> str | None:
    """For `check` before the first run: None when the store exists (check it with
    `check_store`); a line saying where it will be created when it is a SQLite file that does not
    exist yet and can be made there. Touches nothing.

    Raises:
        StoreError: the SQLite file does not exist and cannot be made (its folder is a file, or
            not writable).
    """
    parsed = _parse(url)
    path = _sqlite_path(parsed)
    if path is None or path.exists():
        return None
    shown = _display(parsed)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the nearest folder that exists: the daemon makes the rest
    if not folder.is_dir():
        raise StoreError(f"cannot create the store at {shown}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise StoreError(f"cannot create the store at {shown}: {folder} is not writable")
    return f"{shown} does not exist yet: the daemon creates it when it starts"


def check_store(url: str) -> None:
    """Check that the store at `url` is reachable and its schema at head; never changes it.

    Raises:
        StoreError: the store is missing, unreachable, not migrated, or migrated by a newer
            version of customer-sync.
    """
    parsed = _parse(url)
    shown = _display(parsed)
    path = _sqlite_path(parsed)
    if path is not None and not path.is_file():
        raise StoreError(
            f"no store at {shown}: the file does not exist (the daemon creates it when it starts)"
        )
    engine = _create_engine(parsed, create_dirs=False)
    try:
        with engine.connect() as conn:
            current = current_revisions(conn)
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot reach the store at {shown}: {_reason(exc, parsed)}") from exc
    finally:
        engine.dispose()
    expected = head_revisions()
    if current == expected:
        return
    if not current:
        raise StoreError(
            f"the store at {shown} has no schema yet: start the daemon once to create it"
        )
    if set(current) - known_revisions():
        raise StoreError(
            f"the store at {shown} is at schema revision {', '.join(current)}, which this version "
            "of customer-sync does not know: a newer version migrated it; upgrade customer-sync"
        )
    raise StoreError(
        f"the store at {shown} is at schema revision {', '.join(current)}, this version of "
        f"customer-sync expects {', '.join(expected)}: start the daemon to migrate it"
    )


def _migrate(engine: Engine) -> None:
    """Bring the schema to head, in one transaction; StoreError on any failure.

    Alembic is imported only here, and only when the store is not at head: checking a store's
    revision (`_revisions`) needs none of it.
    """
    shown = _display(engine.url)
    try:
        # A store at head (every start but the first after an upgrade) needs no Alembic.
        with engine.connect() as conn:
            if current_revisions(conn) == head_revisions():
                return
        from customer_sync.store._alembic import upgrade_to_head

        with engine.begin() as conn:
            before, after = upgrade_to_head(conn)
    except StoreError as exc:
        raise StoreError(f"cannot migrate the store at {shown}: {exc}") from exc
    except Exception as exc:  # Alembic raises its own errors besides SQLAlchemy's
        reason = _reason(exc, engine.url)
        raise StoreError(f"cannot migrate the store at {shown}: {reason}") from exc
    if before != after:
        log.info(
            "store.migrated",
            dialect=engine.dialect.name,
            from_revision=list(before),
            to_revision=list(after),
        )


# -- URLs --------------------------------------------------------------------------------------


def _parse(url: str) -> URL:
    """Parse and normalize a store URL: plain `postgresql://` means psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # `from None`: SQLAlchemy's message repeats the raw URL, password included.
        raise StoreError(
            "the store URL is not a valid URL: expected sqlite:///path/to/file.db or "
            "postgresql://user@host/database"
        ) from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres"):
        if driver not in ("", "psycopg"):
            raise StoreError(
                f"the store URL asks for the PostgreSQL driver {driver!r}; customer-sync uses "
                "psycopg 3: write postgresql:// or postgresql+psycopg://"
            )
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise StoreError(
                f"the store URL asks for the SQLite driver {driver!r}; write sqlite:///path"
            )
        return parsed
    raise StoreError(
        f"unsupported store {backend!r}: use sqlite:///path/to/file.db or "
        "postgresql://user@host/database"
    )


def _display(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def _sqlite_path(url: URL) -> Path | None:
    """The file a SQLite URL names; None for other stores and in-memory databases."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _reason(exc: BaseException, url: URL) -> str:
    """The driver's own words, first line only, with the password scrubbed just in case."""
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = str(original).strip().splitlines()
    reason = lines[0] if lines else type(original).__name__
    if url.password:
        reason = reason.replace(str(url.password), "***")
    return reason


# -- engines -----------------------------------------------------------------------------------


def _json_dumps(value: Any) -> str:
    """JSON columns' text: orjson (a tenth of json.dumps' time; five documents per customer
    decided), falling back to json.dumps for what orjson refuses (ints past 64 bits), so the
    same values are accepted and refused as before (a datetime is still an error)."""
    try:
        return orjson.dumps(value, default=_not_json, option=_ORJSON_OPTIONS).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value)


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# keys as json.dumps makes them (non-str keys turned into text); date-times refused, as json does
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_JSON_ARGS: dict[str, Any] = {"json_serializer": _json_dumps, "json_deserializer": orjson.loads}


def _create_engine(url: URL, *, create_dirs: bool) -> Engine:
    if url.get_backend_name() == "sqlite":
        return _create_sqlite_engine(url, create_dirs=create_dirs)
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = _PG_CONNECT_TIMEOUT_S
    if "application_name" not in url.query:
        connect_args["application_name"] = "customer-sync"  # shows in pg_stat_activity
    try:
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args, **_JSON_ARGS)
    except ImportError as exc:
        raise StoreError(
            "a PostgreSQL store needs psycopg 3: pip install 'customer-sync[postgres]'"
        ) from exc


def _create_sqlite_engine(url: URL, *, create_dirs: bool) -> Engine:
    path = _sqlite_path(url)
    if create_dirs and path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder of the store at {_display(url)}: {exc.strerror}"
            ) from exc
    engine = create_engine(url, **_JSON_ARGS)
    event.listen(engine, "connect", _on_sqlite_connect)
    event.listen(engine, "begin", _on_sqlite_begin)
    return engine


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # Turn off the sqlite3 module's own transaction handling: it would BEGIN only before the
    # first write, leaving the reads before it outside the transaction. `_on_sqlite_begin`
    # begins instead (the recipe in SQLAlchemy's SQLite dialect docs).
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock up front. A deferred transaction that reads and then writes
    # fails at once with SQLITE_BUSY if another process wrote in between (busy_timeout cannot
    # help there); an immediate one waits for the lock instead.
    conn.exec_driver_sql("BEGIN IMMEDIATE")
