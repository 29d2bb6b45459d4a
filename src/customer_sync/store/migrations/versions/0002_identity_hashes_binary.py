"""Identities: keyed hashes stored as their 32 raw bytes, in a table without rowid on SQLite.

An identity hash is random by design, so every new identity lands on a random page of the
table's key index, and each batch of new customers dirtied about one page per identity. As 64
hex characters in a rowid table with a separate key index, that index was most of what a
batch's commit wrote (measured: 2.0 s of 3.1 s of commits on a 100k-contact pull). Raw bytes
halve the key, and WITHOUT ROWID makes the key index the table itself.

The change is lossless both ways: the bytes are exactly the hex the earlier schema held, so a
downgrade gives back the same text.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def _rebuild_sqlite(value_hash: sa.types.TypeEngine, convert: str, *, without_rowid: bool) -> None:  # type: ignore[type-arg]
    """SQLite cannot change a column's type or drop the rowid in place: copy into a new table."""
    op.create_table(
        "identities_new",
        sa.Column("kind", sa.String(16), primary_key=True, nullable=False),
        sa.Column("value_hash", value_hash, primary_key=True, nullable=False),
        sa.Column("customer_id", sa.String(36), primary_key=True, nullable=False),
        sqlite_with_rowid=not without_rowid,
    )
    op.execute(f"INSERT INTO identities_new (kind, value_hash, customer_id) "
               f"SELECT kind, {convert}, customer_id FROM identities")
    op.drop_index("ix_identities_customer", table_name="identities")
    op.drop_table("identities")
    op.rename_table("identities_new", "identities")
    op.create_index("ix_identities_customer", "identities", ["customer_id"])


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite 3.40 has no unhex(): the hex text is decoded by a function of this connection.
        raw = op.get_bind().connection.driver_connection
        raw.create_function("cs_unhex", 1, bytes.fromhex, deterministic=True)
        _rebuild_sqlite(sa.LargeBinary(32), "cs_unhex(value_hash)", without_rowid=True)
    else:
        op.alter_column("identities", "value_hash", type_=sa.LargeBinary(32),
                        postgresql_using="decode(value_hash, 'hex')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(sa.String(64), "lower(hex(value_hash))", without_rowid=False)
    else:
        op.alter_column("identities", "value_hash", type_=sa.String(64),
                        postgresql_using="encode(value_hash, 'hex')")
