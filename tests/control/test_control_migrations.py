"""The control database's alembic environment matches the models, up and down."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from strangler_proxy import migrate
from strangler_proxy.control import rollout_store  # noqa: F401 -- its tables are on Base too
from strangler_proxy.control.state_store import Base
from strangler_proxy.databases import make_engine


async def test_control_migrations_match_the_models_and_go_down_and_up(sqlite_url: str) -> None:
    assert migrate.CONTROL in migrate.TOOLKIT_MIGRATIONS
    await migrate.upgrade(migrate.CONTROL, sqlite_url)
    engine = make_engine(sqlite_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert {"route_state", "flip_audit", "rollout", "rollout_event", "alembic_version_control"} <= tables
            diff = await conn.run_sync(lambda c: compare_metadata(
                MigrationContext.configure(c, opts={"version_table": "alembic_version_control"}), Base.metadata))
            assert diff == []
        await migrate.downgrade(migrate.CONTROL, sqlite_url, "base")
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert not {"route_state", "flip_audit", "rollout", "rollout_event"} & tables
        await migrate.upgrade(migrate.CONTROL, sqlite_url)
    finally:
        await engine.dispose()
