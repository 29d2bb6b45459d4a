"""An app paused by the operator, and dead letters that were replayed.

`app_state.operator_paused_at`: when an operator paused the app (`customer-sync pause APP`,
`POST /api/apps/APP/pause`); while set, the engine neither polls nor dispatches the app, and
the pause survives a restart. `resume` clears it.

`dead_letters.replayed_at`: when an operator put the dead letter's write back in the outbox;
a second replay of the same dead letter plans nothing more.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    with op.batch_alter_table("app_state") as batch:
        batch.add_column(sa.Column("operator_paused_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("dead_letters") as batch:
        batch.add_column(sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dead_letters") as batch:
        batch.drop_column("replayed_at")
    with op.batch_alter_table("app_state") as batch:
        batch.drop_column("operator_paused_at")
