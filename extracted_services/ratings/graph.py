"""The ratings subgraph: contributes ``Title.rating``.

Field names and types are the monolith's own (``Rating { averageRating
numVotes }``, null while a title has no votes), so the gateway can move the
field between the two without the API schema changing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from extracted_services.common.db import ENGINE
from extracted_services.common.subgraph import Subgraph
from extracted_services.ratings import store
from extracted_services.ratings.settings import RatingsSettings

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


def make_subgraph(settings: RatingsSettings) -> Subgraph:
    async def load_titles(app: web.Application, ids: list[str]) -> Mapping[str, dict[str, Any]]:
        async with app[ENGINE].connect() as conn:
            known = await store.known_titles(conn, ids)
            found = await store.aggregates(conn, list(known))
        out: dict[str, dict[str, Any]] = {}
        for title_id in known:
            a = found.get(title_id)
            rating = None if a is None else {"averageRating": settings.present(a.average_rating), "numVotes": a.num_votes}
            out[title_id] = {"id": title_id, "rating": rating}
        return out

    return Subgraph(SDL, loaders={"Title": load_titles})
