"""rows_by_ids: the driver shortcut on SQLite returns exactly what SQLAlchemy returns."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Float, Integer, bindparam, column, select, table

from legacy_monolith import catalogue
from legacy_monolith.migrations import MIGRATIONS
from legacy_monolith.seed import SeedPlan, load
from strangler_proxy import migrate
from strangler_proxy.databases import IDS_PARAM, _plain_sql, make_engine, rows_by_ids

STATEMENTS = {
    "titles": catalogue._TITLES_BY_IDS,
    "people": catalogue._PEOPLE_BY_IDS,
    "cast": catalogue._CAST_OF,
    "ratings": catalogue._RATINGS_OF,
    "images": catalogue._IMAGES_OF,
}


@pytest.fixture
async def monolith(tmp_path: Path):  # type: ignore[no-untyped-def]
    url = f"sqlite+aiosqlite:///{tmp_path / 'monolith.sqlite3'}"
    await migrate.upgrade(MIGRATIONS, url)
    engine = make_engine(url)
    async with engine.begin() as conn:
        await load(conn, SeedPlan(titles=30, seed=3))
    yield engine
    await engine.dispose()


@pytest.mark.parametrize("name", list(STATEMENTS))
async def test_the_driver_shortcut_returns_what_sqlalchemy_returns(monolith, name: str) -> None:  # type: ignore[no-untyped-def]
    stmt = STATEMENTS[name]
    ids = [f"nm{i:07d}" for i in (1, 2, 3, 2, 99)] if name == "people" else [f"tt{i:07d}" for i in (1, 5, 7, 5, 99)]
    async with monolith.connect() as conn:
        assert _plain_sql(stmt, conn.dialect, 4) is not None  # the shortcut is really taken
        fast = await rows_by_ids(conn, stmt, ids)
        slow = (await conn.execute(stmt, {IDS_PARAM: list(dict.fromkeys(ids))})).all()
    assert fast  # the seeded ids exist
    assert [tuple(r) for r in fast] == [tuple(r) for r in slow]
    assert [[type(v) for v in r] for r in fast] == [[type(v) for v in r] for r in slow]


def test_a_statement_whose_values_are_converted_takes_sqlalchemys_path() -> None:
    from sqlalchemy.dialects import sqlite

    t = table("t", column("id", Integer), column("avg", Float(asdecimal=True)))
    stmt = select(t.c.id, t.c.avg).where(t.c.id.in_(bindparam(IDS_PARAM, expanding=True)))
    assert _plain_sql(stmt, sqlite.dialect(), 2) is None  # Decimal conversion: no shortcut
