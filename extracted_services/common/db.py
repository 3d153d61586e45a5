"""A service's own database: one engine per app, made on start-up, disposed on
clean-up, plus the few tables every service keeps for data movement.

    >>> md = service_metadata()
    >>> sorted(t for t in md.tables)
    ['backfill_state', 'sync_state']
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, Text
from sqlalchemy.ext.asyncio import AsyncEngine

from strangler_proxy.databases import NAMING_CONVENTION, is_sqlite, make_engine

ENGINE = web.AppKey("service_engine", AsyncEngine)
# SQLite has one writer; serialising a process's own writes avoids "database
# is locked" between the pool's connections (other processes wait on busy_timeout).
WRITE_LOCK = web.AppKey("service_write_lock", asyncio.Lock)


def service_metadata() -> MetaData:
    """A MetaData with the naming convention and the data-movement tables.

    ``backfill_state`` holds one keyset cursor per copied table;
    ``sync_state`` holds the last outbox id applied per stream. Both are
    written in the same transaction as the rows they describe.
    """
    md = MetaData(naming_convention=NAMING_CONVENTION)
    backfill_state_table(md)
    sync_state_table(md)
    return md


def backfill_state_table(md: MetaData) -> Table:
    return Table(
        "backfill_state",
        md,
        Column("table_name", String(64), primary_key=True),
        Column("cursor", Text, nullable=True),  # JSON of the last copied key; null: from the start
        Column("rows_copied", BigInteger, nullable=False, default=0),
        Column("started_at", DateTime, nullable=True),
        Column("finished_at", DateTime, nullable=True),  # null while a run is in progress
    )


def sync_state_table(md: MetaData, name: str = "sync_state") -> Table:
    return Table(
        name,
        md,
        Column("stream", String(64), primary_key=True),
        Column("last_id", BigInteger, nullable=False, default=0),
        Column("applied", BigInteger, nullable=False, default=0),
        Column("updated_at", DateTime, nullable=True),
    )


def outbox_table(md: MetaData) -> Table:
    """The transactional outbox shape shared with the monolith (ids never reused)."""
    return Table(
        "outbox",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("entity", String(32), nullable=False),
        Column("entity_id", String(64), nullable=False),
        Column("op", String(16), nullable=False),
        Column("payload", Text, nullable=True),  # JSON of the row after the change; null on delete
        Column("created_at", DateTime, nullable=False),
        sqlite_autoincrement=True,
    )


def engine_context(url: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` entry that owns the app's engine for its lifetime."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        engine = make_engine(url)
        app[ENGINE] = engine
        app[WRITE_LOCK] = asyncio.Lock()
        try:
            yield
        finally:
            await engine.dispose()

    return ctx


def uses_sqlite(engine: AsyncEngine) -> bool:
    return is_sqlite(str(engine.url))
