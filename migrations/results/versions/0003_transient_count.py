"""result_buckets.transient: mismatches that disappeared when asked again.

A mismatch on a read is asked again on both sides after
``compare.recheck_after_s``; when they then agree (the candidate's copy was
behind, e.g. the outbox sync had not applied a write yet) the result is
``transient`` and counted here, apart from ``mismatch``. Existing rows get 0
(nothing was recorded as transient before this revision). The column is
dropped in batch mode on downgrade because older SQLite cannot
``ALTER TABLE .. DROP COLUMN``; on PostgreSQL batch mode is a plain ALTER.

Revision ID: results_0003
Revises: results_0002
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "results_0003"
down_revision: str | None = "results_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NOT NULL needs a server default so rows written before this revision get one.
    op.add_column(
        "result_buckets",
        sa.Column("transient", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    with op.batch_alter_table("result_buckets") as batch:
        batch.drop_column("transient")
