"""The credits REST routes, on the monolith's own paths:

- ``GET /api/titles/{id}/cast``        the title's credits in billing order
- ``GET /api/people/{id}/known-for``   the person's four most-voted titles

(The service has no write path, so nothing here needs dry-run handling.)
"""

from __future__ import annotations

from aiohttp import web

from extracted_services.common import validation
from extracted_services.common.db import ENGINE
from extracted_services.common.responses import envelope, json_response, not_found
from extracted_services.credits import store


async def get_cast(request: web.Request) -> web.Response:
    title_id = validation.title_id(request.match_info["id"])
    async with request.app[ENGINE].connect() as conn:
        if not await store.known_titles(conn, [title_id]):
            raise not_found(f"no title {title_id!r}")
        cast = (await store.cast_of(conn, [title_id])).get(title_id, [])
    return json_response(envelope({"title_id": title_id, "cast": cast}))


async def get_known_for(request: web.Request) -> web.Response:
    person_id = validation.person_id(request.match_info["id"])
    async with request.app[ENGINE].connect() as conn:
        if not await store.known_people(conn, [person_id]):
            raise not_found(f"no person {person_id!r}")
        titles = (await store.known_for(conn, [person_id])).get(person_id, [])
    return json_response(envelope({"person_id": person_id, "titles": titles}))


ROUTES = (
    web.get("/api/titles/{id}/cast", get_cast),
    web.get("/api/people/{id}/known-for", get_known_for),
)
