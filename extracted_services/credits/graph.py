"""The credits subgraph: contributes ``Title.cast`` and ``Person.knownFor``
with the monolith's field names and types."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from extracted_services.common.db import ENGINE
from extracted_services.common.subgraph import Subgraph
from extracted_services.credits import store

SDL = """
type Title @key(fields: "id") {
  id: ID!
  cast: [Credit!]! @shareable
}

type Person @key(fields: "id") {
  id: ID!
  knownFor: [Title!]! @shareable
}

type Credit @shareable {
  person: Person!
  category: String!
  characters: [String!]
  ordering: Int!
}
"""


async def load_titles(app: web.Application, ids: list[str]) -> Mapping[str, dict[str, Any]]:
    async with app[ENGINE].connect() as conn:
        known = await store.known_titles(conn, ids)
        casts = await store.cast_of(conn, list(known))
    return {
        tid: {
            "id": tid,
            "cast": [
                {"person": {"id": c["person_id"]}, "category": c["category"], "characters": c["characters"],
                 "ordering": c["ordering"]}
                for c in casts.get(tid, [])
            ],
        }
        for tid in known
    }


async def load_people(app: web.Application, ids: list[str]) -> Mapping[str, dict[str, Any]]:
    async with app[ENGINE].connect() as conn:
        known = await store.known_people(conn, ids)
        known_for = await store.known_for(conn, list(known))
    return {pid: {"id": pid, "knownFor": [{"id": t["id"]} for t in known_for.get(pid, [])]} for pid in known}


def make_subgraph() -> Subgraph:
    return Subgraph(SDL, loaders={"Title": load_titles, "Person": load_people})
