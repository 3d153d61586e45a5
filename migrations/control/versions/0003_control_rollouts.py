"""rollout (staggered rollouts over cells: spec, step, per-cell state before, lease) and rollout_event (history)

Revision ID: control_0003
Revises: control_0002
Create Date: 2026-12-01

``rollout.active_name`` is the route's name while the rollout is active and NULL
after: unique, so one route has at most one active rollout (NULLs do not collide
on SQLite or PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "control_0003"
down_revision: str | None = "control_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rollout",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("active_name", sa.String(200), nullable=True),
        sa.Column("target_mode", sa.String(20), nullable=False),
        sa.Column("target_percent", sa.Float(), nullable=False),
        sa.Column("waves", sa.JSON(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("bake_s", sa.Float(), nullable=False),
        sa.Column("max_wait_s", sa.Float(), nullable=False),
        sa.Column("min_samples", sa.Integer(), nullable=True),
        sa.Column("on_failure", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(20), nullable=False),
        sa.Column("step_started_at", sa.Float(), nullable=True),
        sa.Column("before", sa.JSON(), nullable=False),
        sa.Column("global_before", sa.JSON(), nullable=False),
        sa.Column("aborting", sa.Integer(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("gate", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("lease_holder", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout")),
        sa.UniqueConstraint("active_name", name=op.f("uq_rollout_active_name")),
    )
    op.create_index(op.f("ix_rollout_name"), "rollout", ["name"])
    op.create_table(
        "rollout_event",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(30), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("who", sa.String(200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollout.id"], ondelete="CASCADE",
                                name=op.f("fk_rollout_event_rollout_id_rollout")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_event")),
    )
    op.create_index(op.f("ix_rollout_event_rollout_id"), "rollout_event", ["rollout_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_rollout_event_rollout_id"), table_name="rollout_event")
    op.drop_table("rollout_event")
    op.drop_index(op.f("ix_rollout_name"), table_name="rollout")
    op.drop_table("rollout")
