"""The monolith's tables -- the schema contract every other part relies on.

Extracted services copy from these tables and the sync worker drains
``outbox``, so names and types here change only with a migration and a note
to everyone. Timestamps are naive UTC (``TIMESTAMP WITHOUT TIME ZONE`` on
PostgreSQL) so SQLite and PostgreSQL hand back the same values.

    >>> sorted(Base.metadata.tables)
    ['credits', 'images', 'outbox', 'people', 'ratings', 'titles', 'votes']
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names are deterministic so migrations can drop them by name on
# both SQLite (batch mode) and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MIN_VOTE = 1
MAX_VOTE = 10


class Base(DeclarativeBase):
    """Declarative base carrying the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Title(Base):
    """A film, series or short; ``id`` looks like ``tt0000001``."""

    __tablename__ = "titles"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    primary_title: Mapped[str] = mapped_column(Text)
    original_title: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(Text)  # movie, tvSeries, short, ...
    start_year: Mapped[int | None] = mapped_column(Integer)
    end_year: Mapped[int | None] = mapped_column(Integer)
    runtime_minutes: Mapped[int | None] = mapped_column(Integer)
    genres: Mapped[str] = mapped_column(Text, default="")  # comma-joined: "Drama,Comedy"


class Person(Base):
    """Someone credited on titles; ``id`` looks like ``nm0000001``."""

    __tablename__ = "people"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    birth_year: Mapped[int | None] = mapped_column(Integer)
    death_year: Mapped[int | None] = mapped_column(Integer)
    professions: Mapped[str] = mapped_column(Text, default="")  # comma-joined


class Credit(Base):
    """One person's part in one title, in billing order."""

    __tablename__ = "credits"
    __table_args__ = (
        UniqueConstraint("title_id", "ordering"),
        Index("ix_credits_person_id", "person_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title_id: Mapped[str] = mapped_column(Text, ForeignKey("titles.id"))
    person_id: Mapped[str] = mapped_column(Text, ForeignKey("people.id"))
    category: Mapped[str] = mapped_column(Text)  # actor, actress, director, writer, producer, ...
    characters: Mapped[str | None] = mapped_column(Text)  # JSON list of names, or null
    ordering: Mapped[int] = mapped_column(Integer)


class Rating(Base):
    """The aggregate of a title's votes; exists only while it has votes."""

    __tablename__ = "ratings"

    title_id: Mapped[str] = mapped_column(Text, ForeignKey("titles.id"), primary_key=True)
    average_rating: Mapped[float] = mapped_column(Float)  # plain mean of votes, never rounded
    num_votes: Mapped[int] = mapped_column(Integer)


class Vote(Base):
    """One user's vote on one title (one per user and title; re-voting updates it)."""

    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("title_id", "user_id"),
        CheckConstraint(f"value BETWEEN {MIN_VOTE} AND {MAX_VOTE}", name="value_range"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    title_id: Mapped[str] = mapped_column(Text, ForeignKey("titles.id"))
    user_id: Mapped[str] = mapped_column(Text)
    value: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class Image(Base):
    """A picture of a title, a person, or both; ``id`` looks like ``rm0000001``."""

    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_title_id", "title_id"),
        Index("ix_images_person_id", "person_id"),
    )

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    title_id: Mapped[str | None] = mapped_column(Text, ForeignKey("titles.id"))
    person_id: Mapped[str | None] = mapped_column(Text, ForeignKey("people.id"))
    url: Mapped[str] = mapped_column(Text)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    caption: Mapped[str | None] = mapped_column(Text)


class Outbox(Base):
    """The transactional outbox: one row per changed entity, written in the same
    transaction as the change. Readers take rows with ``id > cursor`` in id order.
    """

    __tablename__ = "outbox"
    # AUTOINCREMENT on SQLite: ids are never reused, even after the newest row
    # is deleted, so a reader's cursor can never skip a row.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(Text)  # 'vote' | 'rating'
    entity_id: Mapped[str] = mapped_column(Text)  # 'tt0000001:u42' | 'tt0000001'
    op: Mapped[str] = mapped_column(Text)  # 'upsert' | 'delete'
    payload: Mapped[str | None] = mapped_column(Text)  # JSON of the row after the change; null on delete
    created_at: Mapped[datetime] = mapped_column(DateTime)


titles = Title.__table__
people = Person.__table__
credits = Credit.__table__
ratings = Rating.__table__
votes = Vote.__table__
images = Image.__table__
outbox = Outbox.__table__
