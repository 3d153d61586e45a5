"""The ratings service's first schema: title ids, votes, the aggregate, its outbox
and the backfill/sync cursors.

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 00:12:16.151967
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
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('entity', sa.String(length=32), nullable=False),
    sa.Column('entity_id', sa.String(length=64), nullable=False),
    sa.Column('op', sa.String(length=16), nullable=False),
    sa.Column('payload', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sqlite_autoincrement=True
    )
    op.create_table('ratings',
    sa.Column('title_id', sa.Text(), nullable=False),
    sa.Column('average_rating', sa.Float(), nullable=False),
    sa.Column('num_votes', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('title_id', name=op.f('pk_ratings'))
    )
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
    op.create_table('votes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('title_id', sa.Text(), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint('value BETWEEN 1 AND 10', name=op.f('ck_votes_value_range')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_votes')),
    sa.UniqueConstraint('title_id', 'user_id', name=op.f('uq_votes_title_id'))
    )



def downgrade() -> None:
    
    op.drop_table('votes')
    op.drop_table('titles')
    op.drop_table('sync_state')
    op.drop_table('ratings')
    op.drop_table('outbox')
    op.drop_table('backfill_state')

