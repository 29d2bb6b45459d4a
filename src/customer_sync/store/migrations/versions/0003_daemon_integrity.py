"""What the running daemon must remember to stay correct across restarts.

- `app_state.listed_at`: when the app's first complete listing was processed. No create is
  sent to an app before: a record the app already holds would otherwise be created again.
- `app_state.reconciled_at`: when the app was last compared whole against the base (hard
  deletes by id, and edits saved with a modified time older than the cursor).
- `app_state.resume_at`: the app is paused until then (a vendor asked to wait longer than the
  daemon will sleep on one request).
- `outbox.sent_at`: when a write was first handed to the app without a clear answer. A create
  that may have reached the app is re-sent as uncertain, so the connector looks for what the
  first send made instead of making a second record.

Nothing is back-filled: after an upgrade, an app counts as listed once its next poll has
listed it to the end (from its cursor, so that costs one incremental poll).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("app_state") as batch:
        batch.add_column(sa.Column("listed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("resume_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_outbox_uncertain", "outbox", ["app", "customer_id"],
                    sqlite_where=sa.text("sent_at IS NOT NULL"),
                    postgresql_where=sa.text("sent_at IS NOT NULL"))


def downgrade() -> None:
    op.drop_index("ix_outbox_uncertain", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("sent_at")
    with op.batch_alter_table("app_state") as batch:
        batch.drop_column("resume_at")
        batch.drop_column("reconciled_at")
        batch.drop_column("listed_at")
