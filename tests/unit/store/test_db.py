"""Opening and checking the store: SQLite settings, clear errors, and passwords kept out of them."""

from __future__ import annotations

import sqlite3
import traceback
from pathlib import Path

import pytest
from sqlalchemy import text

from customer_sync.errors import StoreError
from customer_sync.store.db import check_store, open_store

PASSWORD = "s3cret-Pa55word"
UNREACHABLE_PG = f"postgresql://sync_user:{PASSWORD}@127.0.0.1:1/customers"


def _sqlite_file(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


def test_sqlite_store_is_created_with_its_folder_in_wal_mode(sqlite_url: str) -> None:
    """A SQLite store is created with its parent folders, and runs in WAL with our PRAGMAs."""
    with open_store(sqlite_url) as store, store.transaction() as conn:
        pragmas = {
            name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")
        }

    expected = {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 10000, "foreign_keys": 1}
    assert expected == pragmas
    assert _sqlite_file(sqlite_url).is_file()


def test_sqlite_transaction_holds_the_write_lock_from_its_start(sqlite_url: str) -> None:
    """A SQLite transaction holds the write lock before it writes, so read-then-write is atomic."""
    with open_store(sqlite_url) as store, store.transaction() as conn:
        conn.execute(text("SELECT count(*) FROM outbox"))
        other = sqlite3.connect(_sqlite_file(sqlite_url), timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()


def test_transaction_rolls_back_when_the_block_raises(store_url: str) -> None:
    """A block that raises leaves nothing behind."""
    with open_store(store_url) as store:
        with pytest.raises(RuntimeError), store.transaction() as conn:
            conn.execute(text(
                "INSERT INTO cursors (app, value, updated_at) VALUES ('crm', 'c1', '2026-01-01')"
            ))
            raise RuntimeError("boom")
        with store.transaction() as conn:
            count = conn.execute(text("SELECT count(*) FROM cursors")).scalar()

    assert 0 == count


def test_plain_postgresql_url_uses_psycopg_3(pg_store_url: str) -> None:
    """`postgresql://` is normalized to the psycopg 3 driver."""
    plain = pg_store_url.replace("postgresql+psycopg://", "postgresql://", 1)

    with open_store(plain) as store:
        assert ("postgresql", "psycopg") == (store.dialect_name, store.engine.dialect.driver)


def test_unreachable_postgresql_raises_store_error_without_the_password() -> None:
    """An unreachable server is a StoreError naming the host, and the password appears nowhere."""
    with pytest.raises(StoreError) as caught:
        open_store(UNREACHABLE_PG)

    message = str(caught.value)
    whole_traceback = "".join(traceback.format_exception(caught.value))
    masked = "postgresql+psycopg://sync_user:***@127.0.0.1:1/customers"
    assert f"cannot reach the store at {masked}" in message
    assert PASSWORD not in whole_traceback


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://root:hunter2@db/customers", "unsupported store 'mysql'"),
        ("postgresql+psycopg2://u:hunter2@db/customers", "uses psycopg 3"),
        ("not a url :// hunter2", "not a valid URL"),
    ],
    ids=["other-database", "other-driver", "garbage"],
)
def test_bad_store_url_raises_store_error_without_the_password(url: str, expected: str) -> None:
    """A URL we cannot use is a StoreError saying what to write instead, without the password."""
    with pytest.raises(StoreError, match=expected) as caught:
        open_store(url)

    assert "hunter2" not in "".join(traceback.format_exception(caught.value))


def test_check_store_passes_on_a_migrated_store(store_url: str) -> None:
    """check_store is silent when the store is reachable and at head."""
    open_store(store_url).close()

    assert check_store(store_url) is None


def test_check_store_rejects_a_store_without_schema(store_url: str) -> None:
    """check_store fails on a reachable store that was never migrated, and does not migrate it."""
    with open_store(store_url, migrate=False):
        pass

    with pytest.raises(StoreError, match="has no schema yet"):
        check_store(store_url)
    with pytest.raises(StoreError, match="has no schema yet"):
        check_store(store_url)


def test_check_store_rejects_a_missing_sqlite_file_without_creating_it(sqlite_url: str) -> None:
    """check_store on a SQLite path that does not exist fails and leaves no file behind."""
    with pytest.raises(StoreError, match="does not exist"):
        check_store(sqlite_url)

    assert not _sqlite_file(sqlite_url).parent.exists()


def test_store_migrated_by_a_newer_version_is_refused(store_url: str) -> None:
    """A store at a revision we do not know is refused by check_store and open_store alike."""
    with open_store(store_url) as store, store.transaction() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    with pytest.raises(StoreError, match="newer version"):
        check_store(store_url)
    with pytest.raises(StoreError, match="newer version"):
        open_store(store_url)


def test_check_store_on_unreachable_postgresql_raises_store_error() -> None:
    """check_store reports an unreachable server as a StoreError, password masked."""
    with pytest.raises(StoreError, match="cannot reach") as caught:
        check_store(UNREACHABLE_PG)

    assert PASSWORD not in "".join(traceback.format_exception(caught.value))


def test_json_columns_take_and_refuse_what_json_dumps_does(store_url: str) -> None:
    """The store writes JSON with orjson, but accepts and refuses the same values as
    json.dumps: non-text keys become text, ints past 64 bits survive, unicode round-trips,
    and a datetime is still an error rather than silently becoming text."""
    from datetime import UTC, datetime

    from sqlalchemy import insert, select
    from sqlalchemy.exc import StatementError

    from customer_sync.store.tables import CustomerRow

    t = CustomerRow.__table__
    at = datetime(2026, 3, 1, tzinfo=UTC)
    row = {"customer_id": "c", "provenance": {}, "created_at": at, "updated_at": at, "deleted_at": None}
    store = open_store(store_url)
    try:
        values = {"custom.big": 2**70, "first_name": "Zoë 🎉", "nested": {1: [1.5, None, True]}}
        with store.transaction() as conn:
            conn.execute(insert(t), [{**row, "values": values}])
        with store.transaction() as conn:
            stored = conn.execute(select(t.c["values"]).where(t.c.customer_id == "c")).scalar_one()
        assert {"custom.big": 2**70, "first_name": "Zoë 🎉", "nested": {"1": [1.5, None, True]}} == stored

        with pytest.raises((StatementError, TypeError), match="not JSON serializable"), store.transaction() as conn:
            conn.execute(insert(t), [{**row, "customer_id": "d", "values": {"when": at}}])
    finally:
        store.close()
