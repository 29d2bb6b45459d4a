"""Rejections: the values apps sent that normalization refused, one row per record and field.

Until now a refused value (an invalid phone, say) was only an `error` entry in the change log,
without a customer when the record was not linked yet, so `log EMAIL` and `status` never
showed it. The table keeps what the operator needs to fix it in the app: the raw value (the
one personal column here), the reason, when it was first and last seen, and the customer once
the record is linked. Nothing is back-filled: rejections are recorded from the next read of
each record on.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | tuple[str, ...] | None = None
depends_on: str | tuple[str, ...] | None = None


def upgrade() -> None:
    op.create_table(
        "rejections",
        sa.Column("app", sa.String(64), primary_key=True, nullable=False),
        sa.Column("app_record_id", sa.String(255), primary_key=True, nullable=False),
        sa.Column("field", sa.String(128), primary_key=True, nullable=False),
        sa.Column("raw_value", sa.JSON(), nullable=True),
        sa.Column("reason", sa.String(1000), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(36), nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_rejections_status_app", "rejections", ["status", "app"])
    op.create_index("ix_rejections_customer", "rejections", ["customer_id"])


def downgrade() -> None:
    op.drop_index("ix_rejections_customer", table_name="rejections")
    op.drop_index("ix_rejections_status_app", table_name="rejections")
    op.drop_table("rejections")
