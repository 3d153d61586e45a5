"""The credits service's first schema and its backfill/sync cursors.

Revision ID: 0001
Revises: 
Create Date: 2026-11-27 00:13:14.588368
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
    op.create_table('credits',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('title_id', sa.Text(), nullable=False),
    sa.Column('person_id', sa.Text(), nullable=False),
    sa.Column('category', sa.Text(), nullable=False),
    sa.Column('characters', sa.Text(), nullable=True),
    sa.Column('ordering', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_credits')),
    sa.UniqueConstraint('title_id', 'ordering', name=op.f('uq_credits_title_id'))
    )
    with op.batch_alter_table('credits', schema=None) as batch_op:
        batch_op.create_index('ix_credits_person_id', ['person_id'], unique=False)

    op.create_table('people',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_people'))
    )
    op.create_table('sync_state',
    sa.Column('stream', sa.String(length=64), nullable=False),
    sa.Column('last_id', sa.BigInteger(), nullable=False),
    sa.Column('applied', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('stream', name=op.f('pk_sync_state'))
    )
    op.create_table('title_votes',
    sa.Column('title_id', sa.Text(), nullable=False),
    sa.Column('num_votes', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('title_id', name=op.f('pk_title_votes'))
    )
    op.create_table('titles',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('primary_title', sa.Text(), nullable=False),
    sa.Column('kind', sa.Text(), nullable=False),
    sa.Column('start_year', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_titles'))
    )



def downgrade() -> None:
    
    op.drop_table('titles')
    op.drop_table('title_votes')
    op.drop_table('sync_state')
    op.drop_table('people')
    with op.batch_alter_table('credits', schema=None) as batch_op:
        batch_op.drop_index('ix_credits_person_id')

    op.drop_table('credits')
    op.drop_table('backfill_state')

