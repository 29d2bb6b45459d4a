"""The modified times the `sql` connector writes are the database's, never the daemon's.

The cursor follows the modified column. A daemon whose clock runs ahead of the app's, stamping
its own writes, would carry the cursor past the app's later edits; so every write asks the
database for the time, spelled as the column already spells times (SQLite compares them as
text). The daemon's clock is set far off in these tests: nothing of it may reach the table.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from customer_sync.sdk import ChangePage, Connector, Cursor
from customer_sync_connectors.sql import SqlConnector, SqlSettings

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from connectors.sql.tests.conftest import Database, MakeConnector

FAR_OFF = datetime(2031, 7, 1, tzinfo=UTC)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def ids_listed(sql: Connector[Any], since: Cursor | None = None) -> tuple[list[str], Cursor]:
    pages: list[ChangePage] = [page async for page in sql.list_changes(since)]
    return [r.app_record_id for p in pages for r in p.records], pages[-1].cursor


async def test_writes_carry_the_databases_clock_not_the_daemons(
    database: Database, connector: MakeConnector
) -> None:
    """Create, update and soft delete stamp the time the database tells while they run, and
    the receipts carry the stamp stored, whatever the daemon's clock says."""
    table = database.create()
    database.put(table, "c1", at=T0, email="ada@example.test")
    database.put(table, "c2", at=T0, email="grace@example.test")
    async with connector(clock=lambda: FAR_OFF, deleted_column="deleted_at") as sql:
        before = database.now()
        created = await sql.create({"email": "new@example.test"}, idempotency_key="cust-9:crm")
        updated = await sql.update("c1", {"first_name": "Augusta"})
        await sql.delete("c2")
        after = database.now()
    stamps = {rid: database.stamp(table, rid) for rid in (created.app_record_id, "c1", "c2")}
    assert all(before <= at <= after for at in stamps.values()), stamps
    assert stamps[created.app_record_id] == created.modified_at
    assert stamps["c1"] == updated.modified_at
    deleted_at = database.rows(table)["c2"]["deleted_at"]
    assert before <= deleted_at.replace(tzinfo=deleted_at.tzinfo or UTC) <= after


async def test_a_daemon_clock_ahead_no_longer_hides_the_apps_edits(
    database: Database, connector: MakeConnector
) -> None:
    """With the daemon's clock five minutes ahead, an edit the app makes after a daemon write
    (stamped by the database's clock, as the app's own writes are) is listed from the cursor
    taken after that write."""
    table = database.create()
    database.put(table, "mine", at=database.now(), email="ada@example.test")
    database.put(table, "theirs", at=database.now(), email="grace@example.test")
    async with connector(clock=lambda: datetime.now(UTC) + timedelta(minutes=5)) as sql:
        written = await sql.update("mine", {"first_name": "Augusta"})
        assert written.modified_at is not None
        listed, cursor = await ids_listed(sql)
        edited_at = database.now_after(written.modified_at)
        with database.engine.begin() as conn:
            conn.execute(update(table).where(table.c.id == "theirs")
                         .values(first_name="Grace", updated_at=edited_at))
        later, _ = await ids_listed(sql, cursor)
    assert "mine" == listed[-1]
    assert ["theirs"] == later


# -- SQLite: stamps are spelled like the stored times -----------------------------------------


def shape(value: Any) -> Any:
    """A stored time with its digits masked (text), or its type (a number)."""
    return re.sub(r"\d", "9", value) if isinstance(value, str) else type(value)


@pytest.mark.parametrize(
    ("declared", "sample", "expected"),
    [
        pytest.param("TEXT", "2026-01-01T10:00:00Z", "9999-99-99T99:99:99Z", id="iso-z"),
        pytest.param("TEXT", "2026-01-01T10:00:00.123456+00:00",
                     "9999-99-99T99:99:99.999999+99:99", id="iso-micro-offset"),
        pytest.param("DATETIME", "2026-01-01 10:00:00", "9999-99-99 99:99:99",
                     id="current-timestamp"),
        pytest.param("TEXT", "2026-01-01 10:00:00.123", "9999-99-99 99:99:99.999",
                     id="strftime-millis"),
        pytest.param("INTEGER", 1767261600, int, id="epoch-seconds"),
        pytest.param("REAL", 1767261600.25, float, id="epoch-real"),
        pytest.param("DATETIME", None, "9999-99-99 99:99:99.999999", id="empty-datetime"),
        pytest.param("INTEGER", None, int, id="empty-integer"),
    ],
)
async def test_sqlite_stamps_follow_the_stored_time_format(
    tmp_path: Path, declared: str, sample: Any, expected: Any
) -> None:
    """A stamp is written in the format of the times the column holds (or, in an empty table,
    the one its declared type suggests), sorts after them, and is listed from their cursor."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE people (id TEXT PRIMARY KEY, email TEXT, "
                             f"modified {declared})")
        if sample is not None:
            conn.execute(text("INSERT INTO people VALUES ('app', 'a@example.test', :m)"),
                         {"m": sample})
    settings = SqlSettings(url=url, table="people", modified_column="modified")
    async with SqlConnector(settings, app="shop", clock=lambda: FAR_OFF) as sql:
        _, cursor = await ids_listed(sql)
        receipt = await sql.create({"email": "b@example.test"}, idempotency_key="cust-1:shop")
        listed, _ = await ids_listed(sql, cursor)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT modified FROM people WHERE id != 'app'").scalar()
        last = conn.exec_driver_sql("SELECT id FROM people ORDER BY modified DESC").first()
    engine.dispose()
    assert expected == shape(stored)
    assert (receipt.app_record_id,) == tuple(last)
    assert [receipt.app_record_id] == listed
    assert receipt.modified_at is not None
    assert abs(receipt.modified_at - datetime.now(UTC)) < timedelta(minutes=1)


# -- PostgreSQL: a column without a zone is stamped in UTC ------------------------------------


@pytest.fixture
def pg_table(sql_pg_url: str) -> Iterator[tuple[str, str]]:
    """A table of PostgreSQL's test database whose modified column has no zone; its URL gives
    sessions a time zone 14 hours from UTC."""
    name = f"cs_stamp_{datetime.now(UTC).strftime('%H%M%S%f')}"
    engine = create_engine(sql_pg_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE TABLE "{name}" (id TEXT PRIMARY KEY, email TEXT, '
                             "updated_at TIMESTAMP WITHOUT TIME ZONE)")
    url = make_url(sql_pg_url).update_query_dict({"options": "-ctimezone=Pacific/Kiritimati"})
    try:
        yield url.render_as_string(hide_password=False), name
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')
        engine.dispose()


@pytest.mark.postgres
async def test_postgres_stamps_a_column_without_zone_in_utc(pg_table: tuple[str, str]) -> None:
    """In a session whose time zone is UTC+14, a `timestamp without time zone` column is still
    stamped with the UTC time (the connector reads such times as UTC)."""
    url, name = pg_table
    engine = create_engine(url, poolclass=NullPool)

    def utc_now() -> datetime:
        with engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT timezone('UTC', clock_timestamp())").scalar().replace(tzinfo=UTC)

    async with SqlConnector(SqlSettings(url=url, table=name), app="crm",
                            clock=lambda: FAR_OFF) as sql:
        before = utc_now()
        receipt = await sql.create({"email": "a@example.test"}, idempotency_key="cust-1:crm")
        after = utc_now()
    with engine.connect() as conn:
        stored = conn.exec_driver_sql(f'SELECT updated_at FROM "{name}"').scalar()
    engine.dispose()
    assert before <= stored.replace(tzinfo=UTC) <= after
    assert stored.replace(tzinfo=UTC) == receipt.modified_at
