"""The monolith's engine and sessions, held by the app for its lifetime.

Writes to one title are serialised so the aggregate in ``ratings`` always
equals the mean of ``votes``: on PostgreSQL the title row is locked
(``SELECT ... FOR UPDATE``); on SQLite the write transaction takes the
database's write lock up front (``BEGIN IMMEDIATE``), because a deferred
transaction that read first and then writes can fail with SQLITE_BUSY when
another writer got in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from legacy_monolith.models import Title

Sessions = async_sessionmaker[AsyncSession]

ENGINE = web.AppKey("monolith_engine", AsyncEngine)
SESSIONS = web.AppKey("monolith_sessions", async_sessionmaker)
WRITE_LOCK = web.AppKey("monolith_write_lock", asyncio.Lock)


def make_sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def write_transaction(sessions: Sessions, lock: asyncio.Lock) -> AsyncIterator[AsyncSession]:
    """A session in one transaction: committed when the block ends, rolled back
    whole on any exception -- never a half-applied write."""
    sqlite = sessions.kw["bind"].dialect.name == "sqlite"
    if sqlite:
        # One writer per process at a time: waiting here is cheaper than
        # SQLite's busy-wait, which sleeps in growing steps.
        await lock.acquire()
    try:
        async with sessions() as session:
            if sqlite:
                await session.execute(text("BEGIN IMMEDIATE"))
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise
    finally:
        if sqlite:
            lock.release()


async def lock_title(session: AsyncSession, title_id: str) -> bool:
    """Serialise writers of one title; False when the title does not exist."""
    stmt = select(Title.id).where(Title.id == title_id)
    if session.bind.dialect.name != "sqlite":  # SQLite already holds the write lock
        stmt = stmt.with_for_update()
    return (await session.scalar(stmt)) is not None
