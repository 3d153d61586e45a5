"""The images service's database: the pictures, and the ids of the titles
that exist (so an unknown title is a 404, as in the monolith)."""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, Table, Text

from extracted_services.common.db import service_metadata

metadata = service_metadata()

titles = Table("titles", metadata, Column("id", Text, primary_key=True))

images = Table(
    "images",
    metadata,
    Column("id", Text, primary_key=True),
    Column("title_id", Text, nullable=True),
    Column("person_id", Text, nullable=True),
    Column("url", Text, nullable=False),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("caption", Text, nullable=True),
)
Index("ix_images_title_id", images.c.title_id)

backfill_state = metadata.tables["backfill_state"]
sync_state = metadata.tables["sync_state"]
