"""Initial schema: customers, identities, links, bases, change log, inbox, outbox and the rest.

Written by hand to match `customer_sync.store.tables` at the time; a migration is a frozen
record of the schema, so it does not import the tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

# BigInteger autoincrement keys that SQLite still treats as ROWID aliases.
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _seq(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, _SEQ, primary_key=True, autoincrement=True, nullable=False)


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(36), primary_key=True, nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("deleted_at", nullable=True),
    )
    op.create_table(
        "identities",
        sa.Column("kind", sa.String(16), primary_key=True, nullable=False),
        sa.Column("value_hash", sa.String(64), primary_key=True, nullable=False),
        sa.Column("customer_id", sa.String(36), primary_key=True, nullable=False),
    )
    op.create_index("ix_identities_customer", "identities", ["customer_id"])
    op.create_table(
        "links",
        sa.Column("app", sa.String(64), primary_key=True, nullable=False),
        sa.Column("app_record_id", sa.String(255), primary_key=True, nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        _ts("linked_at", nullable=False),
        sa.UniqueConstraint("customer_id", "app", name="uq_links_customer_app"),
    )
    op.create_table(
        "snapshots",
        sa.Column("customer_id", sa.String(36), primary_key=True, nullable=False),
        sa.Column("app", sa.String(64), primary_key=True, nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.Column("app_fingerprint", sa.String(32), nullable=True),
        _ts("source_modified_at", nullable=True),
        _ts("updated_at", nullable=False),
    )
    op.create_table(
        "changelog",
        _seq("seq"),
        _ts("at", nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("app", sa.String(64), nullable=True),
        sa.Column("app_record_id", sa.String(255), nullable=True),
        sa.Column("customer_id", sa.String(36), nullable=True),
        sa.Column("diff", sa.JSON(), nullable=True),
        _ts("source_modified_at", nullable=True),
        sa.Column("reason", sa.String(1000), nullable=True),
        sa.Column("run_id", sa.String(36), nullable=True),
    )
    op.create_index("ix_changelog_customer", "changelog", ["customer_id", "seq"])
    op.create_index("ix_changelog_app_record", "changelog", ["app", "app_record_id"])
    op.create_table(
        "inbox",
        _seq("seq"),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("app_record_id", sa.String(255), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        _ts("received_at", nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.String(1000), nullable=True),
    )
    op.create_index("ix_inbox_state", "inbox", ["state", "seq"])
    op.create_index("ix_inbox_app_record", "inbox", ["app", "app_record_id"])
    op.create_table(
        "outbox",
        _seq("seq"),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("op", sa.String(8), nullable=False),
        sa.Column("app_record_id", sa.String(255), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("reason", sa.String(200), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", nullable=True),
        _ts("created_at", nullable=False),
        sa.Column("error", sa.String(1000), nullable=True),
    )
    op.create_index("ix_outbox_app_state", "outbox", ["app", "state", "seq"])
    op.create_index("ix_outbox_customer_app", "outbox", ["customer_id", "app", "state"])
    op.create_table(
        "cursors",
        sa.Column("app", sa.String(64), primary_key=True, nullable=False),
        sa.Column("value", sa.String(2000), nullable=False),
        _ts("updated_at", nullable=False),
    )
    op.create_table(
        "conflicts",
        _seq("id"),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=True),
        sa.Column("field", sa.String(128), nullable=True),
        sa.Column("rule", sa.String(32), nullable=True),
        sa.Column("winner_app", sa.String(64), nullable=True),
        sa.Column("winner_value", sa.JSON(), nullable=True),
        sa.Column("loser_app", sa.String(64), nullable=True),
        sa.Column("loser_value", sa.JSON(), nullable=True),
        sa.Column("app", sa.String(64), nullable=True),
        sa.Column("app_record_id", sa.String(255), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("created_at", nullable=False),
        _ts("resolved_at", nullable=True),
    )
    op.create_index("ix_conflicts_status", "conflicts", ["status", "id"])
    op.create_table(
        "dead_letters",
        _seq("id"),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("app_record_id", sa.String(255), nullable=True),
        sa.Column("customer_id", sa.String(36), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("error", sa.String(1000), nullable=False),
        _ts("at", nullable=False),
    )
    op.create_table(
        "pending_deletes",
        _seq("id"),
        sa.Column("customer_id", sa.String(36), nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("app_record_id", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("requested_at", nullable=False),
        _ts("decided_at", nullable=True),
    )
    op.create_table(
        "app_state",
        sa.Column("app", sa.String(64), primary_key=True, nullable=False),
        _ts("last_poll_at", nullable=True),
        _ts("last_success_at", nullable=True),
        sa.Column("last_error", sa.String(1000), nullable=True),
        sa.Column("parked", sa.Boolean(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
    )


def downgrade() -> None:
    for table in (
        "app_state", "pending_deletes", "dead_letters", "conflicts", "cursors", "outbox",
        "inbox", "changelog", "snapshots", "links", "identities", "customers",
    ):
        op.drop_table(table)
