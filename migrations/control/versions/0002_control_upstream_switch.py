"""upstream_switch (operators' failover pins and drained endpoints); flip_audit's from/to take zone names

Revision ID: control_0002
Revises: control_0001
Create Date: 2025-06-01

A failover is audited in ``flip_audit`` from one zone (or ``auto``) to another,
and zone names are not limited to the 20 characters a mode needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "control_0002"
down_revision: str | None = "control_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATE_LENGTH = 200
OLD_STATE_LENGTH = 20


def upgrade() -> None:
    op.create_table(
        "upstream_switch",
        sa.Column("upstream", sa.String(200), nullable=False),
        sa.Column("pinned_zone", sa.String(200), nullable=True),
        sa.Column("drained", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("upstream", name=op.f("pk_upstream_switch")),
    )
    with op.batch_alter_table("flip_audit") as batch:
        for column in ("from_mode", "to_mode"):
            batch.alter_column(column, existing_type=sa.String(OLD_STATE_LENGTH), type_=sa.String(STATE_LENGTH),
                               existing_nullable=False)


def downgrade() -> None:
    # A zone name longer than a mode was is cut to fit again (the rows stay: the audit log keeps its history).
    for column in ("from_mode", "to_mode"):
        op.execute(
            sa.text(f"UPDATE flip_audit SET {column} = SUBSTR({column}, 1, {OLD_STATE_LENGTH}) "
                    f"WHERE LENGTH({column}) > {OLD_STATE_LENGTH}")
        )
    with op.batch_alter_table("flip_audit") as batch:
        for column in ("from_mode", "to_mode"):
            batch.alter_column(column, existing_type=sa.String(STATE_LENGTH), type_=sa.String(OLD_STATE_LENGTH),
                               existing_nullable=False)
    op.drop_table("upstream_switch")
