"""The seed generator: deterministic, internally consistent, safe to re-run."""

from __future__ import annotations

from pathlib import Path

import pytest

from legacy_monolith.seed import SeedPlan, seed_database
from strangler_proxy.errors import StoreError
from tests.monolith.helpers import query, scalar

TABLE_ORDER = {
    "titles": "id",
    "people": "id",
    "credits": "title_id, ordering",
    "votes": "title_id, user_id",
    "ratings": "title_id",
    "images": "id",
}


async def _dump(url: str) -> dict[str, list[tuple]]:
    # Surrogate ids (credits.id, votes.id) are left out: they are the database's business.
    columns = {"credits": "title_id, person_id, category, characters, ordering", "votes": "title_id, user_id, value, created_at"}
    return {
        table: await query(url, f"SELECT {columns.get(table, '*')} FROM {table} ORDER BY {order}")
        for table, order in TABLE_ORDER.items()
    }


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def test_same_seed_same_catalogue_other_seed_other(tmp_path: Path) -> None:
    plan = SeedPlan(titles=150, seed=11)
    a, b, c = _url(tmp_path / "a.sqlite3"), _url(tmp_path / "b.sqlite3"), _url(tmp_path / "c.sqlite3")
    stats = await seed_database(a, plan)
    await seed_database(b, plan)
    await seed_database(c, SeedPlan(titles=150, seed=12))
    dump_a = await _dump(a)
    assert dump_a == await _dump(b)
    assert dump_a != await _dump(c)
    assert stats is not None and stats.rows["titles"] == 150 and stats.rows["people"] == plan.people
    assert {t: len(rows) for t, rows in dump_a.items()} == stats.rows


async def test_catalogue_is_consistent(tmp_path: Path) -> None:
    url = _url(tmp_path / "m.sqlite3")
    await seed_database(url, SeedPlan(titles=200, seed=3))
    mismatched = await query(
        url,
        "SELECT r.title_id FROM ratings r JOIN (SELECT title_id, count(*) n, sum(value) s FROM votes GROUP BY title_id) v "
        "ON v.title_id = r.title_id WHERE r.num_votes != v.n OR r.average_rating != CAST(v.s AS REAL) / v.n",
    )
    assert mismatched == []
    assert await scalar(url, "SELECT count(*) FROM ratings") == await scalar(
        url, "SELECT count(DISTINCT title_id) FROM votes"
    )
    assert await scalar(url, "SELECT count(*) FROM titles WHERE id NOT IN (SELECT title_id FROM credits)") == 0
    assert await scalar(url, "SELECT min(value) FROM votes") >= 1 and await scalar(url, "SELECT max(value) FROM votes") <= 10
    assert await scalar(url, "SELECT count(*) FROM images WHERE title_id IS NULL AND person_id IS NOT NULL") > 0
    assert await scalar(url, "SELECT count(*) FROM outbox") == 0  # seeding is not a change to sync


async def test_existing_catalogue_is_kept_refused_or_replaced(tmp_path: Path) -> None:
    url = _url(tmp_path / "m.sqlite3")
    await seed_database(url, SeedPlan(titles=50, seed=1))
    assert await seed_database(url, SeedPlan(titles=80, seed=1), if_empty=True) is None
    assert await scalar(url, "SELECT count(*) FROM titles") == 50
    with pytest.raises(StoreError, match="already has 50 titles"):
        await seed_database(url, SeedPlan(titles=80, seed=1))
    await seed_database(url, SeedPlan(titles=80, seed=1), replace=True)
    assert await scalar(url, "SELECT count(*) FROM titles") == 80
