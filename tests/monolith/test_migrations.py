"""The monolith's alembic environment: up, down and up again, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect

from legacy_monolith.migrations import MIGRATIONS
from strangler_proxy import migrate
from strangler_proxy.config import load_config
from strangler_proxy.databases import make_engine
from strangler_proxy.errors import ConfigError
from strangler_proxy.stack.registry import load_stack
from tests.monolith.helpers import scalar

CATALOGUE = {"titles", "people", "credits", "ratings", "votes", "images"}

REPO = Path(__file__).resolve().parents[2]


async def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def _constraint_names(url: str) -> set[str]:
    def names(conn) -> set[str]:  # type: ignore[no-untyped-def]
        insp = inspect(conn)
        out = {insp.get_pk_constraint("votes")["name"]}
        out |= {u["name"] for u in insp.get_unique_constraints("votes")}
        out |= {f["name"] for f in insp.get_foreign_keys("votes")}
        return out

    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(names)
    finally:
        await engine.dispose()


async def _round_trip(url: str) -> None:
    await migrate.upgrade(MIGRATIONS, url)
    assert CATALOGUE | {"outbox", "alembic_version_monolith"} <= await _tables(url)
    assert await scalar(url, "SELECT version_num FROM alembic_version_monolith") == migrate.head_revision(MIGRATIONS)
    # The naming convention gives every constraint a predictable name.
    assert {"uq_votes_title_id_user_id", "fk_votes_title_id_titles"} <= await _constraint_names(url)

    await migrate.downgrade(MIGRATIONS, url, "0001")  # the outbox is its own revision
    tables = await _tables(url)
    assert CATALOGUE <= tables and "outbox" not in tables

    await migrate.downgrade(MIGRATIONS, url, "base")
    assert not (CATALOGUE | {"outbox"}) & await _tables(url)

    await migrate.upgrade(MIGRATIONS, url)
    await migrate.upgrade(MIGRATIONS, url)  # idempotent at head
    assert CATALOGUE | {"outbox"} <= await _tables(url)


async def test_sqlite_up_down_up(tmp_path: Path) -> None:
    await _round_trip(f"sqlite+aiosqlite:///{tmp_path / 'm.sqlite3'}")


@pytest.mark.postgres
async def test_postgres_up_down_up(pg_database: Callable[[], Awaitable[str]]) -> None:
    await _round_trip(await pg_database())


def test_the_monolith_registers_its_environment_through_the_stack() -> None:
    stack = load_stack(load_config(REPO / "strangler.yaml"))
    env = stack.migration("monolith")
    assert env == MIGRATIONS
    assert env.version_table == "alembic_version_monolith" and (env.directory / "env.py").is_file()
    assert migrate.head_revision(MIGRATIONS) == "0002"
    with pytest.raises(ConfigError, match="unknown database 'nope'"):
        stack.migration("nope")


async def test_a_missing_environment_and_an_unknown_revision_are_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.sqlite3'}"
    with pytest.raises(ConfigError, match="no env.py"):
        await migrate.upgrade(migrate.migration_env("nope", tmp_path / "nope"), url)
    with pytest.raises(ConfigError, match="zzz"):
        await migrate.downgrade(MIGRATIONS, url, "zzz")
