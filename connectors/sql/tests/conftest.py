"""Real databases for the `sql` connector's tests: SQLite files, and PostgreSQL.

`database` gives every test a SQLite file and, once more, a throwaway table in the PostgreSQL
database named by `CUSTOMER_SYNC_TEST_PG_URL` (default: the local `test` database). Without a
server those runs are skipped, saying why, unless `CI` is set, where they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    create_engine,
    event,
    insert,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from customer_sync_connectors.sql import SqlConnector, SqlSettings

if TYPE_CHECKING:
    from contextlib import AbstractContextManager
    from pathlib import Path

    from sqlalchemy.engine import Connection

APP = "crm"
PG_URL_ENV = "CUSTOMER_SYNC_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

MakeConnector = Callable[..., SqlConnector]
LoseAnswer = Callable[..., "AbstractContextManager[None]"]


def customers_table(name: str, *, integer_id: bool = False) -> Table:
    """The customers table the tests use, portable to SQLite and PostgreSQL."""
    id_column = (
        Column("id", Integer, primary_key=True, autoincrement=True)
        if integer_id else Column("id", Text, primary_key=True)
    )
    return Table(
        name, MetaData(), id_column,
        Column("email", Text, unique=True),
        Column("first_name", Text),
        Column("last_name", Text),
        Column("age", Integer),
        Column("signed_up_at", DateTime(timezone=True)),
        Column("updated_at", DateTime(timezone=True)),
        Column("deleted_at", DateTime(timezone=True)),
    )


@dataclass
class Database:
    """A database the test owns: its URL, an engine to arrange and inspect it, a table name."""

    url: str
    engine: Engine
    table_name: str

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def create(self, *, integer_id: bool = False) -> Table:
        table = customers_table(self.table_name, integer_id=integer_id)
        table.create(self.engine)
        return table

    def create_with_id(
        self, id_sql: str, *, key_column: str | None = None, unique_key: bool = True
    ) -> Table:
        """The customers table, made by hand with the id column declared as `id_sql`, and
        optionally a text key column (with a unique index unless `unique_key` is False)."""
        stamp = "TIMESTAMP" if self.dialect == "sqlite" else "TIMESTAMPTZ"
        key = f", {key_column} TEXT" if key_column else ""
        with self.engine.begin() as conn:
            conn.exec_driver_sql(
                f'CREATE TABLE "{self.table_name}" (id {id_sql}, email TEXT UNIQUE, '
                f"first_name TEXT, last_name TEXT, age INTEGER, updated_at {stamp}, "
                f"deleted_at {stamp}{key})"
            )
            if key_column and unique_key:
                conn.exec_driver_sql(f'CREATE UNIQUE INDEX "ux_{self.table_name}" '
                                     f'ON "{self.table_name}" ({key_column})')
        return Table(self.table_name, MetaData(), autoload_with=self.engine)

    def put(self, table: Table, rid: str | int | None, *, at: datetime | None,
            **fields: Any) -> str:
        """Insert a row as another program using the database would; returns its id."""
        values = {"updated_at": at, **fields}
        if rid is not None:
            values["id"] = rid
        with self.engine.begin() as conn:
            made = conn.execute(insert(table).values(values).returning(table.c.id)).scalar_one()
        return str(made)

    def rows(self, table: Table) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            query = select(table).order_by(table.c.id)
            return {str(r["id"]): dict(r) for r in conn.execute(query).mappings()}

    def stamp(self, table: Table, rid: str) -> datetime:
        """The modified time stored in row `rid`, in UTC."""
        return as_utc(self.rows(table)[rid]["updated_at"])

    def now(self) -> datetime:
        """The database's own clock now, in UTC: the time its writes are stamped with."""
        with self.engine.connect() as conn:
            if self.dialect == "sqlite":
                raw = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar()
                return datetime.fromisoformat(raw).replace(tzinfo=UTC)
            return as_utc(conn.exec_driver_sql("SELECT clock_timestamp()").scalar())

    def now_after(self, moment: datetime) -> datetime:
        """The database's clock, read until it has passed `moment` (bounded: five seconds)."""
        deadline = datetime.now(UTC).timestamp() + 5
        while (now := self.now()) <= moment:
            assert datetime.now(UTC).timestamp() < deadline, "the database clock stands still"
        return now


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def sql_pg_url() -> str:
    """URL of the PostgreSQL test database; skips (or fails in CI) when it is unreachable."""
    url = make_url(os.environ.get(PG_URL_ENV) or DEFAULT_PG_URL)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    shown = url.render_as_string(hide_password=True)
    engine = create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except DBAPIError as exc:
        why = f"no PostgreSQL server at {shown} ({type(exc.orig).__name__}); set {PG_URL_ENV}"
        if _is_ci():
            pytest.fail(f"sql connector PostgreSQL tests cannot run, and CI is set: {why}",
                        pytrace=False)
        pytest.skip(f"sql connector PostgreSQL tests skipped: {why}")
    finally:
        engine.dispose()
    return url.render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A SQLite file in tmp_path, or a throwaway table name in the PostgreSQL test database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'apps' / 'crm.db'}"
        (tmp_path / "apps").mkdir()
        name = "customers"
    else:
        url = request.getfixturevalue("sql_pg_url")
        name = f"cs_sql_{secrets.token_hex(4)}"
    engine = create_engine(url, poolclass=NullPool)
    try:
        yield Database(url=url, engine=engine, table_name=name)
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
        engine.dispose()


@pytest.fixture
def connector(database: Database) -> MakeConnector:
    """Build a connector on the test database; settings are overridable by keyword."""

    def make(*, clock: Callable[[], datetime] | None = None, **settings: Any) -> SqlConnector:
        merged = {"url": database.url, "table": database.table_name, **settings}
        return SqlConnector(SqlSettings(**merged), app=APP, clock=clock)

    return make


@contextmanager
def answer_lost(sql: SqlConnector, *, committed: bool = True) -> Iterator[None]:
    """The connector's next COMMIT reaches the database (unless `committed` is False), and then
    its answer is lost: the client sees a connection error, as when the network drops then.

    The commit is the driver's own, on the connection the write used; only the answer is
    replaced by the error a dropped connection gives.
    """
    engine = sql._engine  # the connector's own engine: the test seam is its connection
    assert engine is not None, "open the connector first"
    armed = [True]

    def on_commit(conn: Connection) -> None:
        if not armed[0]:
            return
        armed[0] = False
        if committed:
            conn.connection.dbapi_connection.commit()  # type: ignore[union-attr]
        raise OperationalError("COMMIT", None, ConnectionError("connection lost"))

    event.listen(engine, "commit", on_commit)
    try:
        yield
    finally:
        event.remove(engine, "commit", on_commit)
    assert not armed[0], "no COMMIT was made while the answer was to be lost"


@pytest.fixture
def lose_answer() -> LoseAnswer:
    """`with lose_answer(sql): ...`: see `answer_lost`."""
    return answer_lost
