"""REST handlers under ``/api`` (the contract is in docs/monolith.md).

Handlers read input through :mod:`legacy_monolith.validation`, ask
:mod:`legacy_monolith.catalogue` or :mod:`legacy_monolith.voting`, and shape
JSON -- adding the volatile fields every body of a real monolith carries.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncSession

from legacy_monolith import catalogue, validation, voting
from legacy_monolith.catalogue import TitleFilter
from legacy_monolith.db import SESSIONS, WRITE_LOCK, Sessions
from legacy_monolith.errors import BadRequest, NotFound
from legacy_monolith.quirks import unordered, volatile

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
MAX_OFFSET = 1_000_000
MIN_YEAR = 1800
MAX_YEAR = 2200
VOTE_FIELDS = ("user_id", "value")


def _sessions(request: web.Request) -> Sessions:
    return request.app[SESSIONS]


def _respond(request: web.Request, body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response({**body, **volatile(request)}, status=status)


async def _title_or_404(session: AsyncSession, title_id: str) -> catalogue.TitleRecord:
    found = (await catalogue.titles_by_ids(session, [title_id])).get(title_id)
    if found is None:
        raise NotFound(f"no title {title_id!r}")
    return found


async def _person_or_404(session: AsyncSession, person_id: str) -> catalogue.PersonRecord:
    found = (await catalogue.people_by_ids(session, [person_id])).get(person_id)
    if found is None:
        raise NotFound(f"no person {person_id!r}")
    return found


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def list_titles(request: web.Request) -> web.Response:
    q = request.query
    limit = validation.int_param(q, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    offset = validation.int_param(q, "offset", default=0, low=0, high=MAX_OFFSET)
    year_from = validation.int_param(q, "year_from", default=None, low=MIN_YEAR, high=MAX_YEAR)
    year_to = validation.int_param(q, "year_to", default=None, low=MIN_YEAR, high=MAX_YEAR)
    if year_from is not None and year_to is not None and year_from > year_to:
        raise BadRequest(f"year_from ({year_from}) is after year_to ({year_to})")
    filters = TitleFilter(genre=validation.genre(q.get("genre")), year_from=year_from, year_to=year_to)
    assert limit is not None and offset is not None  # both have defaults
    async with _sessions(request)() as session:
        items, total = await catalogue.list_titles(session, filters, limit=limit, offset=offset)
    return _respond(
        request, {"items": [t.to_json() for t in items], "total": total, "limit": limit, "offset": offset}
    )


async def get_title(request: web.Request) -> web.Response:
    title_id = validation.title_id(request.match_info["id"])
    async with _sessions(request)() as session:
        title = await _title_or_404(session, title_id)
    return _respond(request, title.to_json())


async def get_cast(request: web.Request) -> web.Response:
    title_id = validation.title_id(request.match_info["id"])
    async with _sessions(request)() as session:
        await _title_or_404(session, title_id)
        cast = (await catalogue.cast_of(session, [title_id])).get(title_id, [])
    return _respond(request, {"title_id": title_id, "cast": [c.to_json() for c in cast]})


async def get_ratings(request: web.Request) -> web.Response:
    title_id = validation.title_id(request.match_info["id"])
    async with _sessions(request)() as session:
        await _title_or_404(session, title_id)
        rating = (await catalogue.ratings_of(session, [title_id])).get(title_id)
    return _respond(request, (rating or catalogue.RatingRecord.empty(title_id)).to_json())


async def post_vote(request: web.Request) -> web.Response:
    title_id = validation.title_id(request.match_info["id"])
    body = await _json_object(request)
    unknown = sorted(set(body) - set(VOTE_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; a vote has only 'user_id' and 'value'")
    for name in VOTE_FIELDS:
        if name not in body:
            raise BadRequest(f"{name} is required; a vote looks like {{\"user_id\": \"u42\", \"value\": 8}}")
    user_id = validation.user_id(body["user_id"])
    value = validation.vote_value(body["value"])
    outcome = await voting.cast_vote(_sessions(request), request.app[WRITE_LOCK], title_id, user_id, value)
    return _respond(request, outcome.rating.to_json(), status=201 if outcome.created else 200)


async def delete_vote(request: web.Request) -> web.Response:
    title_id = validation.title_id(request.match_info["id"])
    user_id = validation.user_id(request.match_info["user_id"])
    await voting.retract_vote(_sessions(request), request.app[WRITE_LOCK], title_id, user_id)
    return web.Response(status=204)


async def get_images(request: web.Request) -> web.Response:
    title_id = validation.title_id(request.match_info["id"])
    async with _sessions(request)() as session:
        await _title_or_404(session, title_id)
        images = (await catalogue.images_of(session, [title_id])).get(title_id, [])
    return _respond(request, {"title_id": title_id, "images": [i.to_json() for i in unordered(images)]})


async def get_person(request: web.Request) -> web.Response:
    person_id = validation.person_id(request.match_info["id"])
    async with _sessions(request)() as session:
        person = await _person_or_404(session, person_id)
    return _respond(request, person.to_json())


async def get_known_for(request: web.Request) -> web.Response:
    person_id = validation.person_id(request.match_info["id"])
    async with _sessions(request)() as session:
        await _person_or_404(session, person_id)
        titles = (await catalogue.known_for(session, [person_id])).get(person_id, [])
    return _respond(request, {"person_id": person_id, "titles": [t.summary_json() for t in titles]})


async def search(request: web.Request) -> web.Response:
    text = validation.search_text(request.query.get("q"))
    limit = validation.int_param(
        request.query, "limit", default=validation.DEFAULT_SEARCH_LIMIT, low=1, high=validation.MAX_SEARCH_LIMIT
    )
    assert limit is not None
    async with _sessions(request)() as session:
        titles, people = await catalogue.search(session, text, limit=limit)
    return _respond(
        request, {"q": text, "titles": [t.summary_json() for t in titles], "people": [p.to_json() for p in people]}
    )


async def _json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw:
        raise BadRequest("the body is empty; send a JSON object")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/api/titles", list_titles)
    app.router.add_get("/api/titles/{id}", get_title)
    app.router.add_get("/api/titles/{id}/cast", get_cast)
    app.router.add_get("/api/titles/{id}/ratings", get_ratings)
    app.router.add_post("/api/titles/{id}/ratings", post_vote)
    app.router.add_delete("/api/titles/{id}/ratings/{user_id}", delete_vote)
    app.router.add_get("/api/titles/{id}/images", get_images)
    app.router.add_get("/api/people/{id}", get_person)
    app.router.add_get("/api/people/{id}/known-for", get_known_for)
    app.router.add_get("/api/search", search)
