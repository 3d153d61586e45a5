"""The credits service's database: who is in which title, and what a
person is known for.

Besides ``credits`` it keeps the columns it shows of ``titles`` and
``people`` (copied from the monolith) and ``title_votes`` -- each title's
vote count, which orders "known for" (most voted first). ``title_votes``
follows the monolith's ``rating`` outbox events so the order stays current.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, Table, Text, UniqueConstraint

from extracted_services.common.db import service_metadata

metadata = service_metadata()

titles = Table(
    "titles",
    metadata,
    Column("id", Text, primary_key=True),
    Column("primary_title", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("start_year", Integer, nullable=True),
)

people = Table(
    "people",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
)

credits = Table(
    "credits",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("title_id", Text, nullable=False),
    Column("person_id", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("characters", Text, nullable=True),  # JSON list of names, or null
    Column("ordering", Integer, nullable=False),
    UniqueConstraint("title_id", "ordering"),
)
Index("ix_credits_person_id", credits.c.person_id)

title_votes = Table(
    "title_votes",
    metadata,
    Column("title_id", Text, primary_key=True),
    Column("num_votes", Integer, nullable=False),
)

backfill_state = metadata.tables["backfill_state"]
sync_state = metadata.tables["sync_state"]
