"""The film catalogue: titles, people, credits, ratings, votes, images.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "titles",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("primary_title", sa.Text(), nullable=False),
        sa.Column("original_title", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("start_year", sa.Integer(), nullable=True),
        sa.Column("end_year", sa.Integer(), nullable=True),
        sa.Column("runtime_minutes", sa.Integer(), nullable=True),
        sa.Column("genres", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_titles")),
    )
    op.create_table(
        "people",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("birth_year", sa.Integer(), nullable=True),
        sa.Column("death_year", sa.Integer(), nullable=True),
        sa.Column("professions", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_people")),
    )
    op.create_table(
        "credits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("title_id", sa.Text(), nullable=False),
        sa.Column("person_id", sa.Text(), nullable=False),
        sa.Column("category", sa.Text(), nullable=False),
        sa.Column("characters", sa.Text(), nullable=True),
        sa.Column("ordering", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"], name=op.f("fk_credits_person_id_people")),
        sa.ForeignKeyConstraint(["title_id"], ["titles.id"], name=op.f("fk_credits_title_id_titles")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_credits")),
        sa.UniqueConstraint("title_id", "ordering", name=op.f("uq_credits_title_id_ordering")),
    )
    op.create_index("ix_credits_person_id", "credits", ["person_id"])
    op.create_table(
        "ratings",
        sa.Column("title_id", sa.Text(), nullable=False),
        sa.Column("average_rating", sa.Float(), nullable=False),
        sa.Column("num_votes", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["title_id"], ["titles.id"], name=op.f("fk_ratings_title_id_titles")),
        sa.PrimaryKeyConstraint("title_id", name=op.f("pk_ratings")),
    )
    op.create_table(
        "votes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("title_id", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("value BETWEEN 1 AND 10", name=op.f("ck_votes_value_range")),
        sa.ForeignKeyConstraint(["title_id"], ["titles.id"], name=op.f("fk_votes_title_id_titles")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_votes")),
        sa.UniqueConstraint("title_id", "user_id", name=op.f("uq_votes_title_id_user_id")),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("title_id", sa.Text(), nullable=True),
        sa.Column("person_id", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("caption", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"], name=op.f("fk_images_person_id_people")),
        sa.ForeignKeyConstraint(["title_id"], ["titles.id"], name=op.f("fk_images_title_id_titles")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
    )
    op.create_index("ix_images_title_id", "images", ["title_id"])
    op.create_index("ix_images_person_id", "images", ["person_id"])


def downgrade() -> None:
    op.drop_index("ix_images_person_id", table_name="images")
    op.drop_index("ix_images_title_id", table_name="images")
    op.drop_table("images")
    op.drop_table("votes")
    op.drop_table("ratings")
    op.drop_index("ix_credits_person_id", table_name="credits")
    op.drop_table("credits")
    op.drop_table("people")
    op.drop_table("titles")
