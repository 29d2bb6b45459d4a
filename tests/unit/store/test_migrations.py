"""The migrations build exactly the schema `tables.py` declares, on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic import command as alembic_command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, event, insert, inspect, select
from sqlalchemy.engine import Engine

from customer_sync.store import tables
from customer_sync.store._alembic import alembic_config, head_revisions
from customer_sync.store.db import Store, check_store, open_store

NOW = datetime(2026, 1, 1, tzinfo=UTC)
_CHANGING_STATEMENTS = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A store migrated to head, once per backend."""
    with open_store(store_url) as store:
        yield store


def _schema_diffs(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, tables.metadata))


def test_migrated_store_matches_the_tables(store: Store) -> None:
    """Migrating an empty store gives exactly the tables, columns and indexes in tables.py."""
    with store.transaction() as conn:
        diffs = _schema_diffs(conn)
        revision = MigrationContext.configure(conn).get_current_revision()

    assert [] == diffs
    assert head_revisions() == (revision,)


def test_migrated_store_has_every_table(store: Store) -> None:
    """Every table in tables.py exists after migrating, whatever compare_metadata reports."""
    with store.transaction() as conn:
        names = set(inspect(conn).get_table_names())

    assert set(tables.metadata.tables) <= names


def test_reopening_a_migrated_store_runs_no_ddl(store_url: str) -> None:
    """Opening a store already at head changes nothing: no DDL, rows kept, same revision."""
    cursors = tables.CursorRow.__table__
    with open_store(store_url) as store, store.transaction() as conn:
        conn.execute(insert(cursors).values(app="crm", value="c1", updated_at=NOW))
    statements: list[str] = []

    def record(_conn: Connection, _cursor: object, statement: str, *_rest: object) -> None:
        statements.append(statement.lstrip().upper())

    event.listen(Engine, "before_cursor_execute", record)
    try:
        with open_store(store_url) as store, store.transaction() as conn:
            values = conn.execute(select(cursors.c.value)).scalars().all()
            revision = MigrationContext.configure(conn).get_current_revision()
    finally:
        event.remove(Engine, "before_cursor_execute", record)

    changes = [s for s in statements if s.startswith(_CHANGING_STATEMENTS)]
    assert [] == changes
    assert ["c1"] == values
    assert head_revisions() == (revision,)


def test_downgrade_to_base_removes_every_table(store: Store) -> None:
    """The initial migration's downgrade drops all it created, leaving only Alembic's own table."""
    with store.transaction() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        alembic_command.downgrade(config, "base")
        names = set(inspect(conn).get_table_names())

    assert {"alembic_version"} == names


def test_replicas_opening_a_new_store_together_all_succeed(store_url: str) -> None:
    """Processes opening one empty store at once all succeed: one migrates, the others wait."""
    script = (
        "import sys; "
        "from customer_sync.store.db import open_store; open_store(sys.argv[1]).close()"
    )
    command = [sys.executable, "-c", script, store_url]
    processes = [
        subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=60)[1] for p in processes]

    assert [0, 0, 0, 0] == [p.returncode for p in processes], errors
    assert check_store(store_url) is None


def test_sequence_keys_are_assigned_by_the_store(store: Store) -> None:
    """Rows inserted without their sequence key get increasing keys, on SQLite as on PostgreSQL."""
    changelog = tables.ChangeLogEntry.__table__
    with store.transaction() as conn:
        conn.execute(insert(changelog), [
            {"at": NOW, "kind": "observed"}, {"at": NOW, "kind": "written"},
        ])
        seqs = conn.execute(select(changelog.c.seq).order_by(changelog.c.seq)).scalars().all()

    assert 2 == len(seqs)
    assert seqs[0] < seqs[1]


def _migrate(conn: Connection, how: str, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = conn
    getattr(alembic_command, how)(config, revision)


def test_identity_hashes_become_raw_bytes_and_back_losslessly(store: Store) -> None:
    """0002 stores each identity's keyed hash as its 32 bytes instead of 64 hex characters:
    hashes written at 0001 still match after the upgrade, and a downgrade gives the same text."""
    import hashlib

    hexes = [hashlib.sha256(f"email:{i}@example.com".encode()).hexdigest() for i in range(3)]
    with store.transaction() as conn:
        _migrate(conn, "downgrade", "0001")
        conn.exec_driver_sql(
            "INSERT INTO identities (kind, value_hash, customer_id) VALUES " + ", ".join(
                f"('email', '{h}', 'c{i}')" for i, h in enumerate(hexes)))
        _migrate(conn, "upgrade", "head")
        identities = tables.IdentityRow.__table__
        rows = conn.execute(select(identities).order_by(identities.c.customer_id)).all()
        found = conn.execute(select(identities.c.customer_id).where(
            identities.c.kind == "email", identities.c.value_hash == bytes.fromhex(hexes[1]))).scalars().all()
        indexes = {i["name"] for i in inspect(conn).get_indexes("identities")}
        if conn.dialect.name == "sqlite":
            ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'identities'").scalar_one()
            assert "WITHOUT ROWID" in ddl
        _migrate(conn, "downgrade", "0001")
        back = conn.exec_driver_sql("SELECT value_hash FROM identities ORDER BY customer_id").scalars().all()
        _migrate(conn, "upgrade", "head")
        assert [] == _schema_diffs(conn)

    assert [("email", bytes.fromhex(h), f"c{i}") for i, h in enumerate(hexes)] == [tuple(r) for r in rows]
    assert ["c1"] == found
    assert {"ix_identities_customer"} <= indexes
    assert hexes == back


def test_rejections_table_comes_and_goes_with_0005(store: Store) -> None:
    """0005 adds the rejections table with its indexes; its downgrade drops exactly that, and
    upgrading again gives the schema tables.py declares."""
    with store.transaction() as conn:
        _migrate(conn, "downgrade", "0004")
        before = set(inspect(conn).get_table_names())
        _migrate(conn, "upgrade", "head")
        after = set(inspect(conn).get_table_names())
        indexes = {i["name"] for i in inspect(conn).get_indexes("rejections")}
        primary = inspect(conn).get_pk_constraint("rejections")["constrained_columns"]
        diffs = _schema_diffs(conn)

    assert {"rejections"} == after - before
    assert {"ix_rejections_status_app", "ix_rejections_customer"} <= indexes
    assert ["app", "app_record_id", "field"] == primary
    assert [] == diffs


def test_operator_pause_and_replay_columns_come_and_go_with_0006(store: Store) -> None:
    """0006 adds app_state.operator_paused_at and dead_letters.replayed_at, keeping the rows
    there; its downgrade drops exactly those columns, and upgrading again gives tables.py."""
    with store.transaction() as conn:
        conn.execute(insert(tables.AppState.__table__).values(app="crm", parked=False, consecutive_failures=0))
        _migrate(conn, "downgrade", "0005")
        before = {t: {c["name"] for c in inspect(conn).get_columns(t)} for t in ("app_state", "dead_letters")}
        _migrate(conn, "upgrade", "head")
        after = {t: {c["name"] for c in inspect(conn).get_columns(t)} for t in ("app_state", "dead_letters")}
        kept = conn.execute(select(tables.AppState.__table__.c.app)).scalars().all()
        diffs = _schema_diffs(conn)

    assert {"operator_paused_at"} == after["app_state"] - before["app_state"]
    assert {"replayed_at"} == after["dead_letters"] - before["dead_letters"]
    assert ["crm"] == kept
    assert [] == diffs
