"""result_buckets.served: requests the candidate served with nothing compared.

Existing rows get 0 (nothing was recorded as served before this revision).
The column is dropped in batch mode on downgrade because older SQLite cannot
``ALTER TABLE .. DROP COLUMN``; on PostgreSQL batch mode is a plain ALTER.

Revision ID: results_0002
Revises: results_0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "results_0002"
down_revision: str | None = "results_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NOT NULL needs a server default so rows written before this revision get one.
    op.add_column(
        "result_buckets",
        sa.Column("served", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
    )


def downgrade() -> None:
    with op.batch_alter_table("result_buckets") as batch:
        batch.drop_column("served")
