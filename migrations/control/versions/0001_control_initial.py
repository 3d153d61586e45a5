"""route_state (runtime flips) and flip_audit (who changed what, when, why)

Revision ID: control_0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "control_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "route_state",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("mode", sa.String(20), nullable=False),
        sa.Column("percent", sa.Float(), nullable=False),
        sa.Column("file_mode", sa.String(20), nullable=False),
        sa.Column("file_percent", sa.Float(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_route_state")),
    )
    op.create_table(
        "flip_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("from_mode", sa.String(20), nullable=False),
        sa.Column("from_percent", sa.Float(), nullable=False),
        sa.Column("to_mode", sa.String(20), nullable=False),
        sa.Column("to_percent", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_flip_audit")),
    )
    op.create_index(op.f("ix_flip_audit_at"), "flip_audit", ["at"])
    op.create_index(op.f("ix_flip_audit_name"), "flip_audit", ["name"])


def downgrade() -> None:
    op.drop_index(op.f("ix_flip_audit_name"), table_name="flip_audit")
    op.drop_index(op.f("ix_flip_audit_at"), table_name="flip_audit")
    op.drop_table("flip_audit")
    op.drop_table("route_state")
