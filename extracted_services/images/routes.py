"""The images REST route, on the service's own path:

- ``GET /v1/images/titles/{id}`` -- the monolith serves the same answer at
  ``/api/titles/{id}/images``; the proxy's route ``rewrite`` maps one to the
  other. Images come back in id order (the monolith's order is random; the
  contract says the order is not guaranteed).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from extracted_services.common import validation
from extracted_services.common.db import ENGINE
from extracted_services.common.responses import envelope, json_response, not_found
from extracted_services.images.models import images, titles

TITLE_IMAGES_PATH = "/v1/images/titles/{id}"


async def known_titles(conn: AsyncConnection, ids: Sequence[str]) -> set[str]:
    return set((await conn.execute(select(titles.c.id).where(titles.c.id.in_(set(ids))))).scalars())


async def images_of(conn: AsyncConnection, title_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    rows = await conn.execute(
        select(images.c.title_id, images.c.id, images.c.url, images.c.width, images.c.height, images.c.caption)
        .where(images.c.title_id.in_(set(title_ids)))
        .order_by(images.c.id)
    )
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        out[r.title_id].append({"id": r.id, "url": r.url, "width": r.width, "height": r.height, "caption": r.caption})
    return out


async def get_title_images(request: web.Request) -> web.Response:
    title_id = validation.title_id(request.match_info["id"])
    async with request.app[ENGINE].connect() as conn:
        if not await known_titles(conn, [title_id]):
            raise not_found(f"no title {title_id!r}")
        found = (await images_of(conn, [title_id])).get(title_id, [])
    return json_response(envelope({"title_id": title_id, "images": found}))


ROUTES = (web.get(TITLE_IMAGES_PATH, get_title_images),)
