"""The monolith's tables as the data movers read and write them.

Declared here from the schema contract (docs/monolith.md, the team brief)
instead of importing ``legacy_monolith.models``: a service must not depend on
the monolith's code, only on the shape of its data.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Float, Integer, MetaData, String, Table, Text

from extracted_services.common.db import outbox_table, sync_state_table

monolith = MetaData()

titles = Table(
    "titles",
    monolith,
    Column("id", String, primary_key=True),
    Column("primary_title", String),
    Column("original_title", String),
    Column("kind", String),
    Column("start_year", Integer),
    Column("end_year", Integer),
    Column("runtime_minutes", Integer),
    Column("genres", Text),
)
people = Table(
    "people",
    monolith,
    Column("id", String, primary_key=True),
    Column("name", String),
    Column("birth_year", Integer),
    Column("death_year", Integer),
    Column("professions", Text),
)
credits = Table(
    "credits",
    monolith,
    Column("id", Integer, primary_key=True),
    Column("title_id", String),
    Column("person_id", String),
    Column("category", String),
    Column("characters", Text),
    Column("ordering", Integer),
)
ratings = Table(
    "ratings",
    monolith,
    Column("title_id", String, primary_key=True),
    Column("average_rating", Float),
    Column("num_votes", Integer),
)
votes = Table(
    "votes",
    monolith,
    Column("id", Integer, primary_key=True),
    Column("title_id", String),
    Column("user_id", String),
    Column("value", Integer),
    Column("created_at", DateTime),
)
images = Table(
    "images",
    monolith,
    Column("id", String, primary_key=True),
    Column("title_id", String),
    Column("person_id", String),
    Column("url", String),
    Column("width", Integer),
    Column("height", Integer),
    Column("caption", Text),
)
outbox = outbox_table(monolith)
# Where the reverse sync keeps its cursor: in the monolith's database, so the
# cursor moves in the same transaction as the rows it applied there.
reverse_sync_state = sync_state_table(monolith, "strangler_sync_state")
