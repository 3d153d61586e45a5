"""Read queries of the credits service; every function takes many ids and
answers a dict keyed by id, so REST asks for one and GraphQL for a batch."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from extracted_services.credits.models import credits, people, title_votes, titles

KNOWN_FOR_SIZE = 4


async def existing(conn: AsyncConnection, table_id: Any, ids: Sequence[str]) -> set[str]:
    return set((await conn.execute(select(table_id).where(table_id.in_(set(ids))))).scalars())


async def known_titles(conn: AsyncConnection, ids: Sequence[str]) -> set[str]:
    return await existing(conn, titles.c.id, ids)


async def known_people(conn: AsyncConnection, ids: Sequence[str]) -> set[str]:
    return await existing(conn, people.c.id, ids)


async def cast_of(conn: AsyncConnection, title_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Each title's credits in billing order, as the REST contract shows them."""
    stmt = (
        select(credits.c.title_id, credits.c.person_id, people.c.name, credits.c.category,
               credits.c.characters, credits.c.ordering)
        .join(people, people.c.id == credits.c.person_id)
        .where(credits.c.title_id.in_(set(title_ids)))
        .order_by(credits.c.title_id, credits.c.ordering)
    )
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in await conn.execute(stmt):
        out[r.title_id].append(
            {
                "person_id": r.person_id,
                "name": r.name,
                "category": r.category,
                "characters": json.loads(r.characters) if r.characters else None,
                "ordering": r.ordering,
            }
        )
    return out


async def known_for(conn: AsyncConnection, person_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Each person's (at most) four most-voted titles, ties by title id, as summaries."""
    pairs = (
        select(credits.c.person_id, credits.c.title_id)
        .where(credits.c.person_id.in_(set(person_ids)))
        .group_by(credits.c.person_id, credits.c.title_id)
        .subquery()
    )
    votes = func.coalesce(title_votes.c.num_votes, 0)
    ranked = (
        select(
            pairs.c.person_id,
            pairs.c.title_id,
            func.row_number().over(partition_by=pairs.c.person_id, order_by=(votes.desc(), pairs.c.title_id)).label("rank"),
        )
        .join(title_votes, title_votes.c.title_id == pairs.c.title_id, isouter=True)
        .subquery()
    )
    stmt = (
        select(ranked.c.person_id, titles.c.id, titles.c.primary_title, titles.c.kind, titles.c.start_year)
        .join(titles, titles.c.id == ranked.c.title_id)
        .where(ranked.c.rank <= KNOWN_FOR_SIZE)
        .order_by(ranked.c.person_id, ranked.c.rank)
    )
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in await conn.execute(stmt):
        out[r.person_id].append({"id": r.id, "primary_title": r.primary_title, "kind": r.kind, "start_year": r.start_year})
    return out
