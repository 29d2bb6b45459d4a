"""The `sql` connector against real databases: SQLite files, and PostgreSQL.

`TestSqlConnector` runs every test on both (the `database` fixture of `conftest.py`). Creates
and their exactly-once guarantees are in `test_creates.py`; the modified stamps writes make are
in `test_stamps.py`.
"""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from importlib import resources
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from pydantic import SecretStr, ValidationError
from sqlalchemy import create_engine, event
from sqlalchemy.pool import NullPool

from customer_sync.canonical import field_spec
from customer_sync.sdk import (
    Capability,
    ChangePage,
    ConfigError,
    Connector,
    ConnectorError,
    Cursor,
    RecordGone,
    RecordRejected,
    TransientError,
    WriteOp,
)
from customer_sync_connectors.sql import SqlConnector, SqlSettings

if TYPE_CHECKING:
    from pathlib import Path

    from connectors.sql.tests.conftest import Database, MakeConnector

APP = "crm"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
SENTINEL_EMAIL = "sentinel.leak.7f3c@example.test"
# A daemon clock far from every database's: no write may carry it into the table.
FAR_OFF = datetime(2031, 7, 1, tzinfo=UTC)


async def pages_of(sql: Connector[Any], since: Cursor | None = None) -> list[ChangePage]:
    return [page async for page in sql.list_changes(since)]


def ids_of(pages: list[ChangePage]) -> list[str]:
    return [r.app_record_id for page in pages for r in page.records]


def creates(*fields: dict[str, Any]) -> list[WriteOp]:
    return [
        WriteOp(key=f"op{i}", op="create", fields=f, idempotency_key=f"customer-{i}:{APP}")
        for i, f in enumerate(fields)
    ]


# -- the connector, on every database ----------------------------------------------------------


class TestSqlConnector:
    """Behaviour that must hold on SQLite and on PostgreSQL alike."""

    async def test_full_listing_pages_to_the_end(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """A full listing returns every row once, in modified order, each page with a cursor."""
        table = database.create()
        for i in range(5):
            database.put(table, f"c{i}", at=T0 + timedelta(seconds=5 - i))
        async with connector(page_size=2) as sql:
            pages = await pages_of(sql)
        assert [2, 2, 1] == [len(p.records) for p in pages]
        assert ["c4", "c3", "c2", "c1", "c0"] == ids_of(pages)
        assert all(p.cursor.value for p in pages)

    async def test_incremental_listing_returns_only_newer_rows(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """Listing from a stored cursor returns only rows modified after it."""
        table = database.create()
        for i in range(3):
            database.put(table, f"old{i}", at=T0 + timedelta(seconds=i))
        async with connector() as sql:
            cursor = (await pages_of(sql))[-1].cursor
            database.put(table, "new0", at=T0 + timedelta(minutes=1))
            database.put(table, "new1", at=T0 + timedelta(minutes=2))
            pages = await pages_of(sql, cursor)
        assert ["new0", "new1"] == ids_of(pages)

    async def test_nothing_new_gives_one_empty_page_with_the_same_cursor(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """When no row changed, listing yields one empty page that carries the cursor back."""
        table = database.create()
        database.put(table, "c1", at=T0)
        async with connector() as sql:
            cursor = (await pages_of(sql))[-1].cursor
            pages = await pages_of(sql, cursor)
        assert [([], cursor)] == [(list(p.records), p.cursor) for p in pages]

    async def test_equal_timestamps_across_a_page_boundary_are_not_skipped(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """Rows sharing one modified time are all listed, also when resuming between them."""
        table = database.create()
        for rid in ("a", "b", "c", "d", "e"):
            database.put(table, rid, at=T0)
        async with connector(page_size=2) as sql:
            full = await pages_of(sql)
            resumed = await pages_of(sql, full[0].cursor)
        assert ["a", "b", "c", "d", "e"] == ids_of(full)
        assert ["c", "d", "e"] == ids_of(resumed)

    async def test_late_row_within_lookback_is_seen(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """A row committed after the cursor but stamped before it is read when within lookback_s."""
        table = database.create()
        database.put(table, "early", at=T0 + timedelta(seconds=10))
        database.put(table, "last", at=T0 + timedelta(seconds=20))
        async with connector(lookback_s=60) as with_window, connector() as without_window:
            cursor = (await pages_of(with_window))[-1].cursor
            database.put(table, "late", at=T0 + timedelta(seconds=15))
            seen_with = ids_of(await pages_of(with_window, cursor))
            seen_without = ids_of(await pages_of(without_window, cursor))
        assert "late" in seen_with
        assert [] == seen_without

    async def test_records_carry_json_values_and_utc_times(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """Field values are JSON-friendly (times as ISO text in UTC); modified_at is aware UTC."""
        table = database.create()
        day_before = T0 - timedelta(days=1)
        database.put(table, "c1", at=T0, email="ada@example.test", age=36, signed_up_at=day_before)
        async with connector(deleted_column="deleted_at") as sql:
            [record] = [r for p in await pages_of(sql) for r in p.records]
        assert T0 == record.modified_at
        assert {
            "email": "ada@example.test", "first_name": None, "last_name": None, "age": 36,
            "signed_up_at": "2025-12-31T00:00:00+00:00",
        } == dict(record.fields)

    async def test_null_modified_rows_are_read_on_a_full_pass_only(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """Rows without a modified time come first on a full pass and not from a timed cursor."""
        table = database.create()
        database.put(table, "timed", at=T0)
        database.put(table, "undated2", at=None)
        database.put(table, "undated1", at=None)
        async with connector() as sql:
            full = await pages_of(sql)
            database.put(table, "newer", at=T0 + timedelta(seconds=1))
            later = await pages_of(sql, full[-1].cursor)
        assert ["undated1", "undated2", "timed"] == ids_of(full)
        assert ["newer"] == ids_of(later)

    async def test_create_with_text_id_inserts_a_stamped_row(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """A create inserts the fields, stamps the modified column with the database's time and
        returns a receipt carrying that stamp."""
        table = database.create()
        async with connector(clock=lambda: FAR_OFF) as sql:
            fields = {"email": "ada@example.test", "age": 36}
            before = database.now()
            receipt = await sql.create(fields, idempotency_key="cust-1:crm")
            after = database.now()
            [record] = await sql.read([receipt.app_record_id])
        assert receipt.modified_at is not None
        assert before <= receipt.modified_at <= after
        assert receipt.modified_at == record.modified_at
        assert fields == {k: record.fields[k] for k in ("email", "age")}
        assert [receipt.app_record_id] == list(database.rows(table))

    async def test_create_twice_with_the_same_key_makes_one_row(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """Re-sending a create with the same idempotency key gives the same id, not a new row."""
        table = database.create()
        fields = {"email": "ada@example.test"}
        async with connector() as sql:
            first = await sql.create(fields, idempotency_key="cust-1:crm")
            again = await sql.create(fields, idempotency_key="cust-1:crm")
        assert first.app_record_id == again.app_record_id
        assert 1 == len(database.rows(table))

    async def test_integer_ids_page_in_numeric_order(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """Integer ids sharing a modified time page as numbers (9 before 10), none skipped."""
        table = database.create(integer_id=True)
        for rid in range(1, 13):
            database.put(table, rid, at=T0)
        async with connector(page_size=5) as sql:
            full = await pages_of(sql)
            resumed = await pages_of(sql, full[1].cursor)
        assert [str(i) for i in range(1, 13)] == ids_of(full)
        assert ["11", "12"] == ids_of(resumed)

    async def test_update_sets_only_given_columns_and_bumps_modified(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """An update changes the named columns and the modified time (the database's), and
        nothing else."""
        table = database.create()
        database.put(table, "c1", at=T0, first_name="Ada", last_name="Lovelace", age=36)
        async with connector(clock=lambda: FAR_OFF) as sql:
            before = database.now()
            receipt = await sql.update("c1", {"first_name": "Augusta"})
            after = database.now()
            [record] = await sql.read(["c1"])
        assert receipt.modified_at is not None
        assert before <= receipt.modified_at <= after
        assert receipt.modified_at == record.modified_at
        kept = tuple(record.fields[k] for k in ("first_name", "last_name", "age"))
        assert ("Augusta", "Lovelace", 36) == kept

    async def test_iso_strings_are_written_to_timestamp_columns(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """An ISO time in a field is stored as a timestamp and read back in UTC."""
        table = database.create()
        database.put(table, "c1", at=T0)
        async with connector() as sql:
            await sql.update("c1", {"signed_up_at": "2026-02-01T01:30:00+01:00"})
            [record] = await sql.read(["c1"])
        assert "2026-02-01T00:30:00+00:00" == record.fields["signed_up_at"]

    async def test_update_of_a_missing_id_is_record_gone(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """Updating an id no row has gives a RecordGone outcome, and the other updates apply."""
        table = database.create()
        database.put(table, "c1", at=T0)
        ops = [
            WriteOp(key="k1", op="update", app_record_id="c1", fields={"age": 40}),
            WriteOp(key="k2", op="update", app_record_id="nobody", fields={"age": 41}),
        ]
        async with connector() as sql:
            outcomes = {o.key: o for o in await sql.update_many(ops)}
            with pytest.raises(RecordGone):
                await sql.update("nobody", {"age": 1})
        assert isinstance(outcomes["k2"].error, RecordGone)
        assert outcomes["k1"].receipt is not None
        assert 40 == database.rows(table)["c1"]["age"]

    async def test_batch_with_one_bad_row_rejects_only_that_row(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """A row the database refuses is rejected, named by its constraint and not its values; the
        rest of the batch is written."""
        table = database.create()
        database.put(table, "taken", at=T0, email=SENTINEL_EMAIL)
        ops = creates(
            {"email": "a@example.test"}, {"email": SENTINEL_EMAIL}, {"email": "c@example.test"}
        )
        async with connector() as sql:
            outcomes = {o.key: o for o in await sql.create_many(ops)}
        error = outcomes["op1"].error
        assert isinstance(error, RecordRejected)
        assert "email" in str(error)
        assert SENTINEL_EMAIL not in str(error)
        assert outcomes["op0"].receipt is not None and outcomes["op2"].receipt is not None
        emails = {r["email"] for r in database.rows(table).values()}
        assert {SENTINEL_EMAIL, "a@example.test", "c@example.test"} == emails

    async def test_unknown_or_unfit_fields_are_rejected_not_raised(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """A write naming a column the table lacks, or a value its column cannot hold, is a
        RecordRejected outcome that names the column."""
        database.create()
        ops = creates({"email": "a@example.test", "shoe_size": 42}, {"age": ["not", "a", "number"]})
        async with connector() as sql:
            outcomes = {o.key: o for o in await sql.create_many(ops)}
        assert isinstance(outcomes["op0"].error, RecordRejected)
        assert "shoe_size" in str(outcomes["op0"].error)
        assert isinstance(outcomes["op1"].error, RecordRejected)
        assert "age" in str(outcomes["op1"].error)

    async def test_soft_delete_marks_the_row_and_listing_reports_it(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """With deleted_column, a delete stamps it; the row lists as deleted and reads as gone."""
        table = database.create()
        database.put(table, "c1", at=T0, email="ada@example.test")
        async with connector(deleted_column="deleted_at", clock=lambda: FAR_OFF) as sql:
            cursor = (await pages_of(sql))[-1].cursor
            before = database.now()
            await sql.delete("c1")
            after = database.now()
            [deleted] = [r for p in await pages_of(sql, cursor) for r in p.records]
            read_back = await sql.read(["c1"])
            with pytest.raises(RecordGone):
                await sql.delete("c1")
        assert (True, {}) == (deleted.deleted, dict(deleted.fields))
        assert deleted.modified_at is not None
        assert before <= deleted.modified_at <= after
        assert [] == read_back
        assert database.rows(table)["c1"]["deleted_at"] is not None

    async def test_hard_delete_removes_the_row(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """Without deleted_column, a delete removes the row; deleting it again is RecordGone."""
        table = database.create()
        database.put(table, "c1", at=T0)
        database.put(table, "c2", at=T0)
        async with connector() as sql:
            await sql.delete("c1")
            with pytest.raises(RecordGone):
                await sql.delete("c1")
        assert ["c2"] == list(database.rows(table))

    async def test_list_ids_yields_live_ids_in_chunks(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """list_ids yields every live id in page_size chunks and leaves soft-deleted rows out."""
        table = database.create()
        for rid in ("a", "b", "c", "d", "e"):
            database.put(table, rid, at=T0)
        database.put(table, "gone", at=T0, deleted_at=T0)
        async with connector(deleted_column="deleted_at", page_size=2) as sql:
            chunks = [chunk async for chunk in sql.list_ids()]
        assert [["a", "b"], ["c", "d"], ["e"]] == chunks

    async def test_search_by_email_ignores_case(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """search_by_email finds a row whatever the case of either email."""
        table = database.create()
        database.put(table, "c1", at=T0, email="Ada@Example.test")
        database.put(table, "c2", at=T0, email="grace@example.test")
        async with connector() as sql:
            found = await sql.search_by_email("ada@EXAMPLE.test")
        assert ["c1"] == [r.app_record_id for r in found]

    async def test_search_by_emails_finds_live_rows_once_whatever_the_case(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """search_by_emails returns every live row holding one of the emails, in any case, once
        each; soft-deleted rows and emails nobody holds give nothing."""
        table = database.create()
        database.put(table, "c1", at=T0, email="Ada@Example.test", first_name="Ada")
        database.put(table, "c2", at=T0, email="grace@example.test")
        database.put(table, "c3", at=T0, email="linus@example.test")
        database.put(table, "gone", at=T0, email="gone@example.test", deleted_at=T0)
        emails = ["ada@example.TEST", "ADA@example.test", "grace@example.test",
                  "gone@example.test", "nobody@example.test"]
        async with connector(deleted_column="deleted_at") as sql:
            found = await sql.search_by_emails(emails)
            nothing = await sql.search_by_emails([])
        assert ["c1", "c2"] == sorted(r.app_record_id for r in found)
        assert "Ada" == next(r for r in found if r.app_record_id == "c1").fields["first_name"]
        assert [] == nothing

    async def test_search_by_emails_asks_once_per_chunk_of_emails(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """1,201 emails are looked up in three queries of at most 500, and rows matching emails
        in the first, middle and last chunk are all found."""
        table = database.create()
        wanted = [f"nobody{i}@example.test" for i in range(1201)]
        for rid, at_index in (("first", 0), ("middle", 700), ("last", 1200)):
            wanted[at_index] = f"{rid}@example.test"
            database.put(table, rid, at=T0, email=f"{rid.upper()}@example.test")
        statements: list[str] = []
        async with connector() as sql:
            engine = sql._engine  # count what the connector's own engine sends

            def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                statements.append(statement)

            event.listen(engine, "before_cursor_execute", seen)
            found = await sql.search_by_emails(wanted)
            event.remove(engine, "before_cursor_execute", seen)
        assert ["first", "last", "middle"] == sorted(r.app_record_id for r in found)
        assert 3 == len(statements)
        assert all("lower(" in s.lower() and " IN " in s.upper() for s in statements)

    async def test_missing_table_is_a_config_error(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """Opening an app whose table does not exist is a ConfigError naming app and table."""
        sql = connector(table="no_such_table")
        with pytest.raises(ConfigError) as caught:
            await sql.open()
        assert APP in str(caught.value)
        assert "no_such_table" in str(caught.value)

    async def test_missing_configured_column_is_a_config_error(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """A configured column the table lacks is a ConfigError naming the setting and column."""
        database.create()
        sql = connector(columns=["email", "loyalty_points"])
        with pytest.raises(ConfigError) as caught:
            await sql.open()
        assert "columns" in str(caught.value)
        assert "loyalty_points" in str(caught.value)

    async def test_check_fails_without_retry_once_the_table_is_dropped(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """check() passes while the table exists; once it is dropped, check() raises a
        ConnectorError that is not a TransientError (retrying will not bring the table back)."""
        table = database.create()
        async with connector() as sql:
            await sql.check()
            table.drop(database.engine)
            with pytest.raises(ConnectorError) as caught:
                await sql.check()
        assert not isinstance(caught.value, TransientError)

    async def test_capabilities_follow_the_settings_and_table(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """DELETES_VISIBLE needs a deleted column, ID_SCAN can be turned off, and SEARCH_BY_EMAIL
        needs the email column to exist."""
        database.create()
        everything = Capability.DELETES_VISIBLE | Capability.ID_SCAN | Capability.SEARCH_BY_EMAIL
        async with (
            connector(deleted_column="deleted_at") as soft,
            connector(id_scan=False, columns=["email"]) as plain,
        ):
            assert everything in soft.capabilities
            assert Capability.DELETES_VISIBLE not in plain.capabilities
            assert Capability.ID_SCAN not in plain.capabilities
        async with connector(email_column="last_name", deleted_column="deleted_at") as by_name:
            assert Capability.SEARCH_BY_EMAIL in by_name.capabilities

    async def test_logs_never_carry_field_values(
        self, database: Database, connector: MakeConnector
    ) -> None:
        """A sentinel email read, searched, written and rejected never appears in the logs."""
        table = database.create()
        database.put(table, "c1", at=T0, email=SENTINEL_EMAIL)
        with structlog.testing.capture_logs() as logs:
            async with connector() as sql:
                await pages_of(sql)
                await sql.read(["c1"])
                await sql.search_by_email(SENTINEL_EMAIL)
                await sql.update("c1", {"first_name": SENTINEL_EMAIL})
                await sql.create_many(
                    creates({"email": "fresh@example.test"}, {"email": SENTINEL_EMAIL})
                )
        assert "app.opened" in {entry["event"] for entry in logs}
        assert SENTINEL_EMAIL not in repr(logs)


# -- SQLite specifics and the package ----------------------------------------------------------


async def test_create_table_makes_the_folder_and_a_working_table(tmp_path: Path) -> None:
    """With create_table, a missing database file, folder and table are created, in WAL mode,
    with a modified column that stamps rows inserted without one."""
    url = f"sqlite:///{tmp_path / 'data' / 'nested' / 'crm.db'}"
    settings = SqlSettings(
        url=url, table="contacts", create_table=True, deleted_column="deleted_at",
        column_types={"email": "text", "points": "integer", "vip": "boolean"},
    )
    fields = {"email": "ada@example.test", "points": 3, "vip": True}
    async with SqlConnector(settings, app=APP, clock=lambda: FAR_OFF) as sql:
        receipt = await sql.create(fields, idempotency_key="k")
        engine = create_engine(url, poolclass=NullPool)
        with engine.begin() as conn:
            journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            conn.exec_driver_sql("INSERT INTO contacts (id, email) VALUES ('typed-in', 'x@y.test')")
        engine.dispose()
        records = {r.app_record_id: r for p in await pages_of(sql) for r in p.records}
    assert "wal" == journal
    assert fields == dict(records[receipt.app_record_id].fields)
    # A row inserted by hand without a modified time gets one from the column's default.
    assert records["typed-in"].modified_at is not None


async def test_sqlite_text_timestamps_tie_break_across_pages(tmp_path: Path) -> None:
    """Times another program stored as text (CURRENT_TIMESTAMP style) keep the tie-break."""
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE customers (id TEXT PRIMARY KEY, modified TEXT)")
        for rid in ("a", "b", "c"):
            conn.exec_driver_sql(f"INSERT INTO customers VALUES ('{rid}', '2026-01-01 10:00:00')")
    engine.dispose()
    settings = SqlSettings(url=url, table="customers", modified_column="modified", page_size=2)
    async with SqlConnector(settings, app=APP) as sql:
        full = await pages_of(sql)
        resumed = await pages_of(sql, full[0].cursor)
    assert ["a", "b", "c"] == ids_of(full)
    assert ["c"] == ids_of(resumed)
    assert {datetime(2026, 1, 1, 10, tzinfo=UTC)} == {r.modified_at for r in full[0].records}


async def test_unreachable_database_is_transient_and_masks_the_password() -> None:
    """A server that refuses connections is a TransientError whose message hides the password."""
    settings = SqlSettings(
        url="postgresql://sync@127.0.0.1:1/crm", password=SecretStr("sentinel-secret-9d1"),
        table="customers",
    )
    sql = SqlConnector(settings, app=APP)
    with pytest.raises(TransientError) as caught:
        await sql.open()
    assert "sentinel-secret-9d1" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


def test_settings_refuse_a_column_in_two_roles() -> None:
    """The id, modified, deleted and key columns must differ and stay out of the app columns."""
    with pytest.raises(ValidationError):
        SqlSettings(url="sqlite://", table="t", deleted_column="updated_at")
    with pytest.raises(ValidationError):
        SqlSettings(url="sqlite://", table="t", columns=["id", "email"])
    with pytest.raises(ValidationError):
        SqlSettings(url="sqlite://", table="t", key_column="id")
    with pytest.raises(ValidationError):
        SqlSettings(url="sqlite://", table="t", key_column="sync_key", columns=["sync_key"])


def test_entry_point_loads_the_connector() -> None:
    """The `sql` entry point of the connectors group is this class."""
    assert SqlConnector is entry_points(group="customer_sync.connectors")["sql"].load()


def test_default_mapping_maps_canonical_fields_to_columns() -> None:
    """mapping.toml maps canonical field names, each to a column name or a table naming one."""
    mapping = resources.files("customer_sync_connectors.sql") / "mapping.toml"
    fields = tomllib.loads(mapping.read_text(encoding="utf-8"))["fields"]
    assert [] == [name for name in fields if field_spec(name) is None]
    assert all(isinstance(v, str) or isinstance(v.get("field"), str) for v in fields.values())
    assert {"email", "first_name", "last_name"} <= set(fields)
