"""Duplicates inside one app join one customer.

A customer holds one *active* record per app (the one it is written to); further records of
the same app that are the same person (a double import) are linked to it in state `duplicate`:
read and merged, never written, listed for review. The unique key on (customer_id, app) now
leaves those out. A duplicate's base is kept under `app#<digest of its id>`, which needs a
longer `snapshots.app`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None

_NOT_DUPLICATE = sa.text("state <> 'duplicate'")


def upgrade() -> None:
    with op.batch_alter_table("links") as batch:
        batch.drop_constraint("uq_links_customer_app", type_="unique")
    op.create_index("uq_links_customer_app", "links", ["customer_id", "app"], unique=True,
                    sqlite_where=_NOT_DUPLICATE, postgresql_where=_NOT_DUPLICATE)
    with op.batch_alter_table("snapshots") as batch:
        batch.alter_column("app", existing_type=sa.String(64), type_=sa.String(128), existing_nullable=False)


def downgrade() -> None:
    op.execute("DELETE FROM snapshots WHERE app LIKE '%#%'")
    op.execute("DELETE FROM links WHERE state = 'duplicate'")
    with op.batch_alter_table("snapshots") as batch:
        batch.alter_column("app", existing_type=sa.String(128), type_=sa.String(64), existing_nullable=False)
    op.drop_index("uq_links_customer_app", table_name="links")
    with op.batch_alter_table("links") as batch:
        batch.create_unique_constraint("uq_links_customer_app", ["customer_id", "app"])
