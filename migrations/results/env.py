"""Alembic environment of the results store (tables in the ``control`` database).

The URL comes in programmatically -- ``config.attributes["url"]`` or the main
option ``sqlalchemy.url`` (see strangler_proxy/migrate.py) -- and falls back to
``databases.database_url("control")``. The version table is
``alembic_version_results`` because the control plane's own environment
shares the same database.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from strangler_proxy.databases import database_url, make_engine
from strangler_proxy.store.models import RESULTS_METADATA

VERSION_TABLE = "alembic_version_results"

config = context.config
target_metadata = RESULTS_METADATA


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    return database_url("control", url or None)


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=True,  # SQLite cannot ALTER most things in place
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
