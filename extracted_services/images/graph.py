"""The images subgraph: contributes ``Title.images`` (the monolith's name and type)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from extracted_services.common.db import ENGINE
from extracted_services.common.subgraph import Subgraph
from extracted_services.images.routes import images_of, known_titles

SDL = """
type Title @key(fields: "id") {
  id: ID!
  images: [Image!]! @shareable
}

type Image @shareable {
  id: ID!
  url: String!
  width: Int!
  height: Int!
  caption: String
}
"""


async def load_titles(app: web.Application, ids: list[str]) -> Mapping[str, dict[str, Any]]:
    async with app[ENGINE].connect() as conn:
        known = await known_titles(conn, ids)
        found = await images_of(conn, list(known))
    return {tid: {"id": tid, "images": found.get(tid, [])} for tid in known}


def make_subgraph() -> Subgraph:
    return Subgraph(SDL, loaders={"Title": load_titles})
