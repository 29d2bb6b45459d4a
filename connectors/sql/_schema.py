"""Open the database and describe the synced table.

`build_engine` turns the settings into a SQLAlchemy engine (driver, password, SQLite pragmas);
`describe_table` reflects the table, creating it first when the quickstart asks for that,
checks that every configured column exists, and learns how the modified column spells times.
Both report settings problems as `ConfigError`s whose lines name the app's settings key, as
the config loader does.
"""

from __future__ import annotations

import uuid
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    inspect,
    select,
    text,
    type_coerce,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SAWarning
from sqlalchemy.pool import StaticPool

from customer_sync.sdk import ConfigError
from customer_sync_connectors.sql._values import (
    ClockStyle,
    clock_style,
    deleted_marker,
    python_type,
    server_now,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import Connection, Engine, Inspector
    from sqlalchemy.sql.elements import ColumnElement
    from sqlalchemy.types import TypeEngine

    from customer_sync_connectors.sql.connector import SqlSettings

__all__ = [
    "COLUMN_TYPES",
    "IN_CHUNK",
    "IdKind",
    "TableSpec",
    "build_engine",
    "describe_table",
    "in_chunks",
    "safe_url",
]

IdKind = Literal["text", "integer", "uuid"]

# The column types `column_types` may name when `create_table` creates the table.
COLUMN_TYPES: dict[str, TypeEngine[Any]] = {
    "text": Text(),
    "integer": Integer(),
    "real": Float(),
    "boolean": Boolean(),
    "timestamp": DateTime(timezone=True),
}
IN_CHUNK = 500  # values per IN (...) list, well under SQLite's bound-parameter limit
_BUSY_TIMEOUT_MS = 5000
_CONNECT_TIMEOUT_S = 10


@dataclass(frozen=True)
class TableSpec:
    """The synced table and the role of each column.

    Attributes:
        table: the reflected table.
        id: the primary id column (`app_record_id` is its value as text).
        modified: the last-modified column.
        deleted: the soft-delete column, when configured.
        columns: the app fields: the columns records expose and writes may set.
        email: the column `search_by_email` matches, when there is one.
        id_kind: how new ids are made: uuid5 of the idempotency key (text, uuid) or by the
            database (integer).
        text_clock: the modified column is compared as stored (SQLite keeps times as text, and
            only comparing the text itself agrees with the order the database sorts in).
        dialect: the database's SQLAlchemy dialect name (`sqlite`, `postgresql`, ...).
        key: the column that holds each created row's idempotency key, when configured.
        key_unique: a unique index or constraint covers the key column alone.
        stamp_style: how the modified column spells times (a stamp must sort among them).
        created: the table did not exist and was created now.
    """

    table: Table
    id: Column[Any]
    modified: Column[Any]
    deleted: Column[Any] | None
    columns: tuple[str, ...]
    email: Column[Any] | None
    id_kind: IdKind
    text_clock: bool
    dialect: str
    key: Column[Any] | None = None
    key_unique: bool = False
    stamp_style: ClockStyle = field(default_factory=ClockStyle)
    created: bool = False

    @property
    def clock(self) -> ColumnElement[Any]:
        """The modified column as listing sorts and compares it."""
        if self.text_clock:
            return type_coerce(self.modified, String())
        return self.modified

    def modified_now(self) -> ColumnElement[Any]:
        """SQL for the database's time now, as the modified column stores times."""
        return server_now(self.modified, self.stamp_style, dialect=self.dialect)

    def deleted_now(self) -> Any:
        """What a soft delete writes into the deleted column (see `deleted_marker`)."""
        assert self.deleted is not None
        return deleted_marker(self.deleted, dialect=self.dialect, text_clock=self.text_clock)

    def id_value(self, app_record_id: Any) -> Any:
        """An id as the id column holds it.

        Raises:
            ValueError: the id cannot be one of this column's values.
        """
        if self.id_kind == "integer":
            return int(app_record_id)
        if self.id_kind == "uuid":
            return uuid.UUID(str(app_record_id))
        return str(app_record_id)

    def id_or_none(self, app_record_id: str | None) -> Any:
        """`id_value`, or None for an id no row of this table can have."""
        if app_record_id is None:
            return None
        try:
            return self.id_value(app_record_id)
        except ValueError:
            return None


def in_chunks(values: list[Any], size: int = IN_CHUNK) -> Iterator[list[Any]]:
    """`values` in slices of at most `size`, one per IN (...) list."""
    for start in range(0, len(values), size):
        yield values[start : start + size]


def safe_url(url: URL) -> str:
    """The URL without password or query (query strings can carry secrets), for messages."""
    return url.set(password=None, query={}).render_as_string(hide_password=True)


def build_engine(settings: SqlSettings, *, app: str) -> Engine:
    """A SQLAlchemy engine for the app's database; connects lazily.

    `postgresql://` selects psycopg 3. For SQLite the file's folder is created, and each
    connection gets WAL (readers do not block the writer) and a busy timeout (a writer waits
    for another instead of failing at once).

    Raises:
        ConfigError: the URL is malformed or its driver is not installed.
    """
    try:
        url = make_url(settings.url)
    except ArgumentError:
        raise ConfigError(f"apps.{app}.settings.url: not a SQLAlchemy database URL") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if settings.password is not None:
        url = url.set(password=settings.password.get_secret_value())
    options: dict[str, Any] = {"hide_parameters": True}  # statement errors never show values
    is_sqlite = url.get_backend_name() == "sqlite"
    in_memory = is_sqlite and url.database in (None, "", ":memory:")
    if in_memory:
        # One shared connection, or every worker thread would see its own empty database.
        options |= {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    elif is_sqlite:
        if url.database and not url.database.startswith("file:"):
            try:
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"apps.{app}.settings.url: cannot create the folder of the SQLite file "
                    f"({type(exc).__name__})"
                ) from None
    else:
        options["pool_pre_ping"] = True  # a server may drop idle connections between polls
        if url.get_driver_name() == "psycopg" and "connect_timeout" not in url.query:
            options["connect_args"] = {"connect_timeout": _CONNECT_TIMEOUT_S}
    try:
        engine = create_engine(url, **options)
    except (NoSuchModuleError, ImportError) as exc:
        raise ConfigError(
            f"apps.{app}.settings.url: no driver for {url.drivername!r} is installed "
            f"({type(exc).__name__})"
        ) from None
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas(wal=not in_memory))
    return engine


def _sqlite_pragmas(*, wal: bool) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
        finally:
            cursor.close()

    return on_connect


_EXPRESSION_INDEX = "Skipped unsupported reflection of expression-based index"


def describe_table(engine: Engine, settings: SqlSettings, *, app: str) -> TableSpec:
    """Reflect the table (creating it first when `create_table` is set) and check the columns.

    Runs blocking database calls; call it in a worker thread.

    Raises:
        ConfigError: the table or a configured column is missing, the modified column is not
            a timestamp, or the key column does not hold text.
    """
    where = f"apps.{app}.settings"
    created = False
    text_clock = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        if not inspect(conn).has_table(settings.table):
            if not settings.create_table:
                raise ConfigError(
                    f"{where}.table: app {app!r}: table {settings.table!r} does not exist "
                    "(create it, or set create_table = true with column_types)"
                )
            _create_table(conn, settings)
            created = True
        with warnings.catch_warnings():
            # SQLAlchemy cannot reflect an index on an expression (the lower(email) index the
            # connector makes, or one of the operator's) and says so; no column depends on it.
            warnings.filterwarnings("ignore", message=_EXPRESSION_INDEX, category=SAWarning)
            table = Table(settings.table, MetaData(), autoload_with=conn)
            spec = _roles(table, settings, where=where, created=created, text_clock=text_clock,
                          dialect=engine.dialect.name)
            sample = _latest_clock(conn, spec) if text_clock else None
            key_unique = spec.key is not None and _is_unique(inspect(conn), spec.key)
    style = clock_style(spec.modified, text_clock=text_clock, sample=sample)
    return replace(spec, stamp_style=style, key_unique=key_unique)


def _latest_clock(conn: Connection, spec: TableSpec) -> Any:
    """The greatest stored modified value, as stored: the style new stamps must follow."""
    query = (select(spec.clock).where(spec.modified.is_not(None))
             .order_by(spec.modified.desc()).limit(1))
    return conn.execute(query).scalar()


def _is_unique(inspector: Inspector, column: Column[Any]) -> bool:
    """True when a unique index, unique constraint or primary key is on `column` alone."""
    table = column.table.name
    alone = [column.name]
    if inspector.get_pk_constraint(table).get("constrained_columns") == alone:
        return True
    if any(uc.get("column_names") == alone for uc in inspector.get_unique_constraints(table)):
        return True
    return any(ix.get("unique") and ix.get("column_names") == alone
               for ix in inspector.get_indexes(table))


def _create_table(conn: Connection, settings: SqlSettings) -> None:
    # A row inserted without a modified time gets "now", so polling sees it; a NULL would be
    # seen only on a full pass. SQLite's CURRENT_TIMESTAMP has whole seconds, and a row stamped
    # with an earlier second than the cursor would be missed, hence milliseconds there.
    now = (
        text("(strftime('%Y-%m-%d %H:%M:%f', 'now'))") if conn.dialect.name == "sqlite"
        else func.current_timestamp()
    )
    columns: list[Column[Any]] = [
        Column(settings.id_column, Text(), primary_key=True),
        Column(settings.modified_column, DateTime(timezone=True), server_default=now),
    ]
    if settings.deleted_column:
        columns.append(Column(settings.deleted_column, DateTime(timezone=True), nullable=True))
    if settings.key_column:
        columns.append(Column(settings.key_column, Text(), nullable=True))
    columns += [Column(name, COLUMN_TYPES[kind]) for name, kind in settings.column_types.items()]
    table = Table(settings.table, MetaData(), *columns)
    # Listing is keyset-paginated on (modified, id); this index keeps every page cheap.
    Index(f"ix_{settings.table}_{settings.modified_column}_{settings.id_column}",
          table.c[settings.modified_column], table.c[settings.id_column])
    if settings.key_column:
        # One row per idempotency key, whatever happens; rows made by others hold NULL.
        Index(f"ux_{settings.table}_{settings.key_column}", table.c[settings.key_column],
              unique=True)
    email = settings.email_column
    if email and email in table.c:
        # The engine looks a batch of creates' emails up (`search_by_emails`, lower(email) IN
        # ...) before creating: without this index each lookup reads the whole table.
        Index(f"ix_{settings.table}_{email}_lower", func.lower(table.c[email]))
    table.create(conn, checkfirst=True)


def _roles(
    table: Table, settings: SqlSettings, *, where: str, created: bool, text_clock: bool,
    dialect: str,
) -> TableSpec:
    problems: list[str] = []

    def column(key: str, name: str | None) -> Column[Any] | None:
        if name is None:
            return None
        if name not in table.c:
            problems.append(f"{where}.{key}: table {settings.table!r} has no column {name!r}")
            return None
        return table.c[name]

    id_col = column("id_column", settings.id_column)
    modified = column("modified_column", settings.modified_column)
    deleted = column("deleted_column", settings.deleted_column)
    key = column("key_column", settings.key_column)
    if modified is not None and not text_clock and python_type(modified) is not datetime:
        problems.append(
            f"{where}.modified_column: column {modified.name!r} is {modified.type}, not a timestamp"
        )
    if key is not None and python_type(key) not in (str, None):
        problems.append(f"{where}.key_column: column {key.name!r} is {key.type}, not text")
    managed = {settings.id_column, settings.modified_column, settings.deleted_column,
               settings.key_column}
    if settings.columns is None:
        exposed = tuple(c.name for c in table.c if c.name not in managed)
    else:
        for name in settings.columns:
            column("columns", name)
        exposed = tuple(settings.columns)
    email = None
    if settings.email_column is not None:
        if settings.email_column in table.c:
            email = table.c[settings.email_column]
        elif "email_column" in settings.model_fields_set:
            # The default ("email") is a guess and may be absent; a column someone named must exist.
            column("email_column", settings.email_column)
    if problems or id_col is None or modified is None:
        raise ConfigError(problems[0], problems=problems)
    kind = python_type(id_col)
    id_kind: IdKind = "integer" if kind is int else "uuid" if kind is uuid.UUID else "text"
    if id_kind == "integer":
        # A primary key is never NULL (SQLite's INTEGER PRIMARY KEY is the rowid), but SQLite
        # reflects one declared without NOT NULL as nullable, and SQLAlchemy then refuses it as
        # the sentinel that matches the ids RETURNING gives back to the rows sent.
        id_col.nullable = False
    return TableSpec(
        table=table, id=id_col, modified=modified, deleted=deleted, columns=exposed, email=email,
        id_kind=id_kind, text_clock=text_clock, dialect=dialect, key=key, created=created,
    )
