"""Alembic environment of the ``control`` database (flips and their audit log).

The URL comes from ``config.attributes["url"]`` (set by strangler_proxy.migrate)
or, failing that, ``databases.database_url("control")``. The version table is
``alembic_version_control`` so this environment can share a database with others.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from strangler_proxy.databases import database_url, make_engine
from strangler_proxy.state_store import Base

VERSION_TABLE = "alembic_version_control"
target_metadata = Base.metadata
config = context.config


def _url() -> str:
    return config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or database_url("control")


def _configure(**kwargs: object) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=config.attributes.get("version_table", VERSION_TABLE),
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copes
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:  # called from inside run_sync by the caller
        _run_sync(connection)
        return
    asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
