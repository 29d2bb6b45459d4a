"""Alembic, configured from code: where the migrations live and how to bring a store to head.

There is no alembic.ini at runtime. `alembic_config` builds the configuration, and the
connection to migrate is handed to `migrations/env.py` through `Config.attributes`, so a
migration runs in the caller's transaction, with the store's own connection settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from customer_sync.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy import Connection

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revisions",
    "head_revisions",
    "unknown_revisions",
    "upgrade_to_head",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

# Replicas that start together on one PostgreSQL database take turns to migrate: the first
# holds this transaction-scoped advisory lock, the others wait and then find the schema at head.
_PG_MIGRATION_LOCK = 0x63735F6D69677261  # "cs_migra"


def alembic_config(url: str | None = None) -> Config:
    """Alembic configuration for our migrations; `url` for commands that open their own engine."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # The option goes through configparser interpolation: a literal % must be doubled.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revisions() -> tuple[str, ...]:
    """The revisions this version of customer-sync expects a store to be at."""
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def current_revisions(conn: Connection) -> tuple[str, ...]:
    """The revisions the store is at; empty when it has no schema yet."""
    return tuple(sorted(MigrationContext.configure(conn).get_current_heads()))


def unknown_revisions(revisions: tuple[str, ...]) -> tuple[str, ...]:
    """Those of `revisions` that no migration here defines (a newer customer-sync wrote them)."""
    scripts = ScriptDirectory.from_config(alembic_config())
    known = {script.revision for script in scripts.walk_revisions()}
    return tuple(rev for rev in revisions if rev not in known)


def upgrade_to_head(conn: Connection) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Migrate the store to head inside the transaction `conn` is in.

    Returns:
        The revisions before and after. They are equal when there was nothing to do, and then
        no DDL was run.

    Raises:
        StoreError: the store is at a revision this version of customer-sync does not know.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
    before = current_revisions(conn)
    unknown = unknown_revisions(before)
    if unknown:
        raise StoreError(
            f"the store is at schema revision {', '.join(unknown)}, which this version of "
            "customer-sync does not know: a newer version migrated it; upgrade customer-sync"
        )
    heads = head_revisions()
    if before == heads:
        return before, before
    config = alembic_config()
    config.attributes["connection"] = conn
    command.upgrade(config, "head")
    return before, current_revisions(conn)
