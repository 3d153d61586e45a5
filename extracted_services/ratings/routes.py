"""The ratings REST routes -- the same paths and contract as the monolith's,
so the proxy can shadow them without a rewrite:

- ``GET    /api/titles/{id}/ratings``            the aggregate
- ``POST   /api/titles/{id}/ratings``            vote ``{"user_id", "value"}`` (201 new, 200 changed)
- ``DELETE /api/titles/{id}/ratings/{user_id}``  retract (204)

and, for the demo, ``GET|PUT /admin/rounding`` (``{"rounding": "legacy"}`` or
``"one-decimal"``): the rounding this process answers with, switched at run
time -- the divergence in one cell's service alone (docs/walkthrough.md, "Cells").

Writes run in :func:`~extracted_services.common.dryrun.write_transaction`,
so ``X-Strangler-Dry-Run: 1`` answers as the write would and keeps nothing.
"""

from __future__ import annotations

import logging

from aiohttp import web

from extracted_services.common import validation
from extracted_services.common.db import ENGINE
from extracted_services.common.dryrun import write_transaction
from extracted_services.common.responses import bad_request, envelope, json_response, read_json_object
from extracted_services.ratings import store
from extracted_services.ratings.settings import RatingsSettings, Rounding, RoundingSwitch

log = logging.getLogger("ratings")

SETTINGS = web.AppKey("ratings_settings", RatingsSettings)
ROUNDING = web.AppKey("ratings_rounding", RoundingSwitch)
VOTE_FIELDS = ("user_id", "value")


def _body(request: web.Request, a: store.Aggregate) -> dict[str, object]:
    average = request.app[ROUNDING].present(a.average_rating)
    return envelope({"title_id": a.title_id, "average_rating": average, "num_votes": a.num_votes})


async def get_rating(request: web.Request) -> web.Response:
    title_id = validation.title_id(request.match_info["id"])
    async with request.app[ENGINE].connect() as conn:
        await store.require_title(conn, title_id)
        found = (await store.aggregates(conn, [title_id])).get(title_id)
    return json_response(_body(request, found or store.Aggregate(title_id, None, 0)))


async def post_vote(request: web.Request) -> web.Response:
    title_id = validation.title_id(request.match_info["id"])
    body = await read_json_object(request)
    unknown = sorted(set(body) - set(VOTE_FIELDS))
    if unknown:
        raise bad_request(f"unknown field(s) {unknown}; a vote has only 'user_id' and 'value'")
    for name in VOTE_FIELDS:
        if name not in body:
            raise bad_request(f'{name} is required; a vote looks like {{"user_id": "u42", "value": 8}}')
    user_id = validation.user_id(body["user_id"])
    value = validation.vote_value(body["value"])
    async with write_transaction(request) as conn:
        outcome = await store.cast_vote(conn, title_id, user_id, value)
    return json_response(_body(request, outcome.aggregate), status=201 if outcome.created else 200)


async def delete_vote(request: web.Request) -> web.Response:
    title_id = validation.title_id(request.match_info["id"])
    user_id = validation.user_id(request.match_info["user_id"])
    async with write_transaction(request) as conn:
        await store.retract_vote(conn, title_id, user_id)
    return web.Response(status=204)


async def get_rounding(request: web.Request) -> web.Response:
    return json_response({"rounding": request.app[ROUNDING].rounding.value})


async def put_rounding(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    allowed = ", ".join(r.value for r in Rounding)
    if set(body) != {"rounding"}:
        raise bad_request(f'send {{"rounding": ...}} and nothing else; one of {allowed}')
    try:
        rounding = Rounding(body["rounding"])
    except ValueError as exc:
        raise bad_request(f"rounding must be one of {allowed}; got {body['rounding']!r}") from exc
    switch = request.app[ROUNDING]
    if switch.rounding is not rounding:
        log.warning("rounding switched: %s -> %s (PUT /admin/rounding)", switch.rounding.value, rounding.value)
    switch.rounding = rounding
    return json_response({"rounding": rounding.value})


ROUTES = (
    web.get("/admin/rounding", get_rounding),
    web.put("/admin/rounding", put_rounding),
    web.get("/api/titles/{id}/ratings", get_rating),
    web.post("/api/titles/{id}/ratings", post_vote),
    web.delete("/api/titles/{id}/ratings/{user_id}", delete_vote),
)
