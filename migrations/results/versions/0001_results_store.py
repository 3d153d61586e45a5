"""The results store: buckets, diff paths, samples, noise.

Revision ID: results_0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "results_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "result_buckets",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("bucket_start", sa.BigInteger(), nullable=False),
        sa.Column("match", sa.BigInteger(), nullable=False),
        sa.Column("mismatch", sa.BigInteger(), nullable=False),
        sa.Column("candidate_error", sa.BigInteger(), nullable=False),
        sa.Column("legacy_error", sa.BigInteger(), nullable=False),
        sa.Column("skipped", sa.BigInteger(), nullable=False),
        sa.Column("legacy_latency", sa.Text(), nullable=False),
        sa.Column("candidate_latency", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", "bucket_start", name="pk_result_buckets"),
    )
    op.create_index("ix_result_buckets_bucket_start", "result_buckets", ["bucket_start"])
    op.create_table(
        "diff_paths",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("bucket_start", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", "bucket_start", "path", "kind", name="pk_diff_paths"),
    )
    op.create_index("ix_diff_paths_bucket_start", "diff_paths", ["bucket_start"])
    op.create_table(
        "samples",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("legacy_status", sa.Integer(), nullable=True),
        sa.Column("candidate_status", sa.Integer(), nullable=True),
        sa.Column("legacy_latency_s", sa.Float(), nullable=True),
        sa.Column("candidate_latency_s", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("differences", sa.Text(), nullable=False),
        sa.Column("legacy_body", sa.LargeBinary(), nullable=True),
        sa.Column("candidate_body", sa.LargeBinary(), nullable=True),
        sa.Column("extra", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_samples"),
    )
    op.create_index("ix_samples_key_path_at", "samples", ["key", "path", "at"])
    op.create_index("ix_samples_at", "samples", ["at"])
    op.create_table(
        "noise",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key", "path", name="pk_noise"),
    )


def downgrade() -> None:
    op.drop_table("noise")
    op.drop_index("ix_samples_at", table_name="samples")
    op.drop_index("ix_samples_key_path_at", table_name="samples")
    op.drop_table("samples")
    op.drop_index("ix_diff_paths_bucket_start", table_name="diff_paths")
    op.drop_table("diff_paths")
    op.drop_index("ix_result_buckets_bucket_start", table_name="result_buckets")
    op.drop_table("result_buckets")
