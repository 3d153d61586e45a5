"""The ratings subgraph: contributes ``Title.rating``.

Field names and types are the monolith's own (``Rating { averageRating
numVotes }``, null while a title has no votes), so the gateway can move the
field between the two without the API schema changing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from extracted_services.common.db import ENGINE
from extracted_services.common.subgraph import Subgraph
from extracted_services.ratings import store
from extracted_services.ratings.settings import RoundingSwitch

SDL = """
type Title @key(fields: "id") {
  id: ID!
  rating: Rating @shareable
}

type Rating @shareable {
  averageRating: Float!
  numVotes: Int!
}
"""


def make_subgraph(rounding: RoundingSwitch) -> Subgraph:
    # Concurrent entity loads are held to the pool's size: past it the pool opens an overflow
    # connection per load and closes it after (a new aiosqlite thread and its PRAGMAs on SQLite),
    # which at a gateway's 16 concurrent fetches cost more CPU than the query itself.
    slots: dict[AsyncEngine, asyncio.Semaphore | None] = {}

    async def load_titles(app: web.Application, ids: list[str]) -> Mapping[str, dict[str, Any]]:
        engine = app[ENGINE]
        if engine not in slots:
            size = getattr(engine.pool, "size", None)
            slots[engine] = asyncio.Semaphore(size()) if callable(size) else None
        async with slots[engine] or contextlib.nullcontext(), engine.connect() as conn:
            found = await store.known_with_aggregates(conn, ids)
        out: dict[str, dict[str, Any]] = {}
        for title_id, a in found.items():
            rating = None if a is None else {"averageRating": rounding.present(a.average_rating), "numVotes": a.num_votes}
            out[title_id] = {"id": title_id, "rating": rating}
        return out

    return Subgraph(SDL, loaders={"Title": load_titles})
