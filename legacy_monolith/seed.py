"""A deterministic generator of a realistic catalogue, and its bulk loader.

The same ``(titles, seed)`` always gives the same rows: every random choice
comes from one ``random.Random(seed)`` consumed in a fixed order, and no
clock is read (vote timestamps are offsets from a fixed epoch). Rows are
produced in chunks of titles with their credits, votes, ratings and images,
and inserted with Core ``executemany`` -- no ORM objects -- so 100,000 titles
load in well under a minute on SQLite (``bench/seed_bench.py``).

The seed writes no outbox rows: the outbox records changes made after the
catalogue exists; extracted services take the initial data by backfill.

    >>> a = [rows for _, rows in generate(SeedPlan(titles=30, seed=7))]
    >>> b = [rows for _, rows in generate(SeedPlan(titles=30, seed=7))]
    >>> a == b
    True
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from legacy_monolith import models
from legacy_monolith.migrations import MIGRATIONS
from legacy_monolith.seed_words import (
    ADJECTIVES,
    CHARACTER_NAMES,
    FEMALE_FIRST,
    FOREIGN_WORDS,
    GENRES,
    LAST_NAMES,
    MALE_FIRST,
    NOUNS,
    PLACES,
)
from strangler_proxy import migrate
from strangler_proxy.databases import make_engine
from strangler_proxy.errors import StoreError

DEFAULT_TITLES = 2_000
DEFAULT_SEED = 42
CHUNK_TITLES = 2_000  # titles per generated chunk (and per progress step)
MEAN_VOTES_PER_TITLE = 5.0
MAX_VOTES_PER_TITLE = 60
VOTE_EPOCH = datetime(2015, 1, 1)
VOTE_SPAN_S = 10 * 365 * 86_400
LAST_YEAR = 2024

Rows = list[dict[str, Any]]
Progress = Callable[[str, int], None]  # (table name, rows just written)

_KINDS = ("movie", "short", "tvSeries", "tvMovie", "tvMiniSeries", "video")
_KIND_WEIGHTS = (55, 12, 13, 8, 5, 7)
_RUNTIME = {
    "movie": (75, 180),
    "short": (4, 40),
    "tvSeries": (20, 60),
    "tvMovie": (70, 120),
    "tvMiniSeries": (40, 70),
    "video": (30, 110),
}
_PROFESSIONS = ("actor", "actress", "director", "writer", "producer", "composer")
_PROFESSION_WEIGHTS = (34, 30, 10, 12, 9, 5)
_IMAGE_SIZES = ((1000, 1500), (1920, 1080), (1280, 720), (800, 1200))

# Tables in insertion (foreign key) order; clearing goes the other way.
SEED_TABLES: tuple[Table, ...] = (
    models.people,
    models.titles,
    models.credits,
    models.votes,
    models.ratings,
    models.images,
)


@dataclass(frozen=True, slots=True)
class SeedPlan:
    """How big a catalogue to make, and from which seed."""

    titles: int = DEFAULT_TITLES
    seed: int = DEFAULT_SEED

    @property
    def people(self) -> int:
        return max(60, self.titles // 2)

    @property
    def users(self) -> int:
        return max(500, self.titles // 4)


@dataclass(frozen=True, slots=True)
class SeedStats:
    """Rows written per table."""

    rows: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.rows.values())


def _person_rows(rng: random.Random, plan: SeedPlan) -> tuple[Rows, dict[str, list[str]]]:
    rows: Rows = []
    pools: dict[str, list[str]] = {p: [] for p in _PROFESSIONS}
    for n in range(1, plan.people + 1):
        pid = f"nm{n:07d}"
        main = rng.choices(_PROFESSIONS, _PROFESSION_WEIGHTS)[0]
        female = main == "actress" or (main != "actor" and rng.random() < 0.4)
        first = rng.choice(FEMALE_FIRST if female else MALE_FIRST)
        name = f"{first} {rng.choice(LAST_NAMES)}"
        professions = [main]
        if rng.random() < 0.25:
            extra = rng.choice(("director", "writer", "producer"))
            if extra != main:
                professions.append(extra)
                pools[extra].append(pid)
        birth = None if rng.random() < 0.12 else 1890 + int(rng.random() * 115)
        death = None
        if birth is not None and birth < 1950 and rng.random() < 0.6:
            death = min(LAST_YEAR, birth + 40 + int(rng.random() * 55))
        pools[main].append(pid)
        rows.append(
            {"id": pid, "name": name, "birth_year": birth, "death_year": death, "professions": ",".join(professions)}
        )
    # Tiny catalogues may miss a profession; any person can then fill in.
    everyone = [r["id"] for r in rows]
    for prof in _PROFESSIONS:
        if not pools[prof]:
            pools[prof] = everyone
    return rows, pools


def _pick(rng: random.Random, pool: list[str]) -> str:
    # Skewed: low indices are "stars" with many credits, the tail has few.
    return pool[int(len(pool) * rng.random() ** 2.5)]


def _title_name(rng: random.Random) -> str:
    pattern = rng.random()
    if pattern < 0.3:
        return f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    if pattern < 0.5:
        return f"{rng.choice(NOUNS)} of {rng.choice(PLACES)}"
    if pattern < 0.65:
        return f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}s"
    if pattern < 0.8:
        return f"The {rng.choice(NOUNS)} and the {rng.choice(NOUNS)}"
    if pattern < 0.9:
        return f"{rng.choice(CHARACTER_NAMES)}'s {rng.choice(NOUNS)}"
    return f"{rng.choice(NOUNS)} in {rng.choice(PLACES)}"


def generate(plan: SeedPlan) -> Iterator[tuple[Table, Rows]]:
    """Every row of the catalogue, in foreign-key order, in chunks."""
    rng = random.Random(plan.seed)
    people, pools = _person_rows(rng, plan)
    names = {p["id"]: p["name"] for p in people}
    yield models.people, people
    image_no = 0
    for start in range(1, plan.titles + 1, CHUNK_TITLES):
        chunk: dict[Table, Rows] = {t: [] for t in SEED_TABLES[1:]}
        for n in range(start, min(start + CHUNK_TITLES, plan.titles + 1)):
            tid = f"tt{n:07d}"
            kind = rng.choices(_KINDS, _KIND_WEIGHTS)[0]
            year = LAST_YEAR - int(rng.random() ** 2 * 104)
            end_year = None
            if kind in ("tvSeries", "tvMiniSeries") and rng.random() < 0.7:
                end_year = min(LAST_YEAR, year + int(rng.random() * 12))
            low, high = _RUNTIME[kind]
            runtime = None if rng.random() < 0.05 else rng.randint(low, high)
            name = _title_name(rng)
            original = name if rng.random() < 0.85 else f"{rng.choice(FOREIGN_WORDS)} {rng.choice(FOREIGN_WORDS)}"
            genres = sorted(rng.sample(GENRES, rng.randint(1, 3)))
            chunk[models.titles].append(
                {
                    "id": tid,
                    "primary_title": name,
                    "original_title": original,
                    "kind": kind,
                    "start_year": year,
                    "end_year": end_year,
                    "runtime_minutes": runtime,
                    "genres": ",".join(genres),
                }
            )
            cast = _credits(rng, tid, pools)
            chunk[models.credits].extend(cast)
            _votes(rng, plan, tid, chunk[models.votes], chunk[models.ratings])
            for _ in range(rng.choices((0, 1, 2, 3), (25, 35, 25, 15))[0]):
                image_no += 1
                chunk[models.images].append(_title_image(rng, image_no, tid, name, year, cast, names))
        for table in SEED_TABLES[1:]:
            yield table, chunk[table]
    headshots: Rows = []
    for person in people:
        if rng.random() < 0.3:
            image_no += 1
            iid = f"rm{image_no:07d}"
            headshots.append(
                {
                    "id": iid,
                    "title_id": None,
                    "person_id": person["id"],
                    "url": f"https://images.example.com/{iid}.jpg",
                    "width": 800,
                    "height": 1200,
                    "caption": person["name"],
                }
            )
    yield models.images, headshots


def _credits(rng: random.Random, tid: str, pools: dict[str, list[str]]) -> Rows:
    wanted = ["director"]
    wanted += ["writer"] * rng.randint(0, 2)
    wanted += [rng.choice(("actor", "actress")) for _ in range(rng.randint(2, 6))]
    if rng.random() < 0.5:
        wanted.append("producer")
    if rng.random() < 0.3:
        wanted.append("composer")
    rows: Rows = []
    seen: set[tuple[str, str]] = set()
    for category in wanted:
        pid = _pick(rng, pools[category])
        if (pid, category) in seen:
            continue
        seen.add((pid, category))
        characters = None
        if category in ("actor", "actress"):
            characters = json.dumps([rng.choice(CHARACTER_NAMES)])
        rows.append(
            {
                "title_id": tid,
                "person_id": pid,
                "category": category,
                "characters": characters,
                "ordering": len(rows) + 1,
            }
        )
    return rows


def _votes(rng: random.Random, plan: SeedPlan, tid: str, votes: Rows, ratings: Rows) -> None:
    count = min(MAX_VOTES_PER_TITLE, int(rng.expovariate(1 / MEAN_VOTES_PER_TITLE)))
    if count == 0:
        return
    quality = rng.gauss(6.5, 1.3)
    total = 0
    for user in rng.sample(range(1, plan.users + 1), count):
        value = max(1, min(10, round(rng.gauss(quality, 1.5))))
        total += value
        when = VOTE_EPOCH + timedelta(seconds=rng.randrange(VOTE_SPAN_S))
        votes.append({"title_id": tid, "user_id": f"u{user}", "value": value, "created_at": when})
    # The same int/int division the write path uses: aggregates match the votes exactly.
    ratings.append({"title_id": tid, "average_rating": total / count, "num_votes": count})


def _title_image(
    rng: random.Random, image_no: int, tid: str, name: str, year: int, cast: Rows, names: dict[str, str]
) -> dict[str, Any]:
    iid = f"rm{image_no:07d}"
    width, height = rng.choice(_IMAGE_SIZES)
    person_id = None
    roll = rng.random()
    if roll < 0.35:
        caption: str | None = f"Poster of {name} ({year})"
    elif roll < 0.8:
        actors = [c["person_id"] for c in cast if c["category"] in ("actor", "actress")]
        person_id = rng.choice(actors) if actors and rng.random() < 0.6 else None
        caption = f"{names[person_id]} in {name}" if person_id else f"Still from {name}"
    else:
        caption = None
    return {
        "id": iid,
        "title_id": tid,
        "person_id": person_id,
        "url": f"https://images.example.com/{iid}.jpg",
        "width": width,
        "height": height,
        "caption": caption,
    }


async def count_titles(conn: AsyncConnection) -> int:
    return int(await conn.scalar(select(func.count()).select_from(models.titles)) or 0)


async def clear(conn: AsyncConnection) -> None:
    """Delete the whole catalogue (and the outbox, whose events it invalidates)."""
    await conn.execute(delete(models.outbox))
    for table in reversed(SEED_TABLES):
        await conn.execute(delete(table))


async def load(conn: AsyncConnection, plan: SeedPlan, progress: Progress | None = None) -> SeedStats:
    """Insert the catalogue of ``plan`` on ``conn`` (the caller owns the transaction)."""
    written: dict[str, int] = {t.name: 0 for t in SEED_TABLES}
    for table, rows in generate(plan):
        if rows:
            await conn.execute(insert(table), rows)
        written[table.name] += len(rows)
        if progress is not None:
            progress(table.name, len(rows))
    return SeedStats(rows=written)


async def seed_database(
    url: str,
    plan: SeedPlan,
    *,
    replace: bool = False,
    if_empty: bool = False,
    progress: Progress | None = None,
) -> SeedStats | None:
    """Migrate the monolith database at ``url`` and load ``plan`` into it.

    A catalogue that already has titles is left alone when ``if_empty`` (the
    answer is None), replaced when ``replace``, and otherwise refused.
    """
    await migrate.upgrade(MIGRATIONS, url)
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            existing = await count_titles(conn)
            if existing and if_empty:
                return None
            if existing and not replace:
                raise StoreError(
                    f"the monolith database already has {existing} titles; "
                    "pass --replace to start over or --if-empty to keep it"
                )
            if existing:
                await clear(conn)
            return await load(conn, plan, progress)
    except SQLAlchemyError as exc:
        raise StoreError(f"seeding the monolith database failed: {exc}") from exc
    finally:
        await engine.dispose()
