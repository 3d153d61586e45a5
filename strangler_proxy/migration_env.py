"""The body of every ``migrations/<name>/env.py`` (one alembic environment per database).

Async engine, a version table of its own (``alembic_version_<name>``) so
several environments can share one database, batch mode on SQLite (which
cannot ALTER most things). The URL comes in programmatically (see
strangler_proxy/migrate.py): ``config.attributes["url"]`` or the
``sqlalchemy.url`` main option, else ``databases.database_url(database)``; a
caller already inside an event loop may hand over a sync ``connection`` instead.

    # migrations/orders/env.py -- an app's own environment
    from orders.models import metadata
    from strangler_proxy.migration_env import run_environment

    run_environment("orders", metadata)
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from strangler_proxy.databases import database_url, is_sqlite, make_engine


def run_environment(name: str, metadata: MetaData, *, database: str | None = None) -> None:
    """Run environment ``name`` on ``database`` (default: the database of the same name)."""
    config = context.config
    version_table = f"alembic_version_{name}"
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or database_url(database or name)

    def configure(connection: Connection | None) -> None:
        opts = dict(
            target_metadata=metadata,
            version_table=version_table,
            render_as_batch=is_sqlite(url),
            compare_type=True,
        )
        if connection is None:
            context.configure(url=url, literal_binds=True, **opts)  # type: ignore[arg-type]
        else:
            context.configure(connection=connection, **opts)  # type: ignore[arg-type]

    def run_sync(connection: Connection) -> None:
        configure(connection)
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        configure(None)
        with context.begin_transaction():
            context.run_migrations()
        return
    given = config.attributes.get("connection")
    if given is not None:
        run_sync(given)
        return

    async def run_async() -> None:
        engine = make_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(run_sync)
        finally:
            await engine.dispose()

    asyncio.run(run_async())
