"""The images service's first schema and its backfill/sync cursors.

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 00:13:15.252823
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    
    op.create_table('backfill_state',
    sa.Column('table_name', sa.String(length=64), nullable=False),
    sa.Column('cursor', sa.Text(), nullable=True),
    sa.Column('rows_copied', sa.BigInteger(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('table_name', name=op.f('pk_backfill_state'))
    )
    op.create_table('images',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('title_id', sa.Text(), nullable=True),
    sa.Column('person_id', sa.Text(), nullable=True),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('caption', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_images'))
    )
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index('ix_images_title_id', ['title_id'], unique=False)

    op.create_table('sync_state',
    sa.Column('stream', sa.String(length=64), nullable=False),
    sa.Column('last_id', sa.BigInteger(), nullable=False),
    sa.Column('applied', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('stream', name=op.f('pk_sync_state'))
    )
    op.create_table('titles',
    sa.Column('id', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_titles'))
    )



def downgrade() -> None:
    
    op.drop_table('titles')
    op.drop_table('sync_state')
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.drop_index('ix_images_title_id')

    op.drop_table('images')
    op.drop_table('backfill_state')

