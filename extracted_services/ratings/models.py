"""The ratings service's database.

``titles`` holds only the ids of titles that exist (copied from the monolith)
so a vote on an unknown title is refused the same way; ``votes`` and
``ratings`` are the service's own copy and, after cut-over, the truth.
``outbox`` feeds the reverse sync that keeps the monolith's copy current.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Column, DateTime, Float, Integer, Table, Text, UniqueConstraint

from extracted_services.common.db import outbox_table, service_metadata
from extracted_services.common.validation import MAX_VOTE, MIN_VOTE

metadata = service_metadata()

titles = Table("titles", metadata, Column("id", Text, primary_key=True))

ratings = Table(
    "ratings",
    metadata,
    Column("title_id", Text, primary_key=True),
    Column("average_rating", Float, nullable=False),  # plain mean, never rounded in storage
    Column("num_votes", Integer, nullable=False),
)

votes = Table(
    "votes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("title_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("value", Integer, nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("title_id", "user_id"),
    CheckConstraint(f"value BETWEEN {MIN_VOTE} AND {MAX_VOTE}", name="value_range"),
)
# (title_id, user_id) is unique, and that index also serves lookups by title.

outbox = outbox_table(metadata)
backfill_state = metadata.tables["backfill_state"]
sync_state = metadata.tables["sync_state"]
