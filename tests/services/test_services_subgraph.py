"""Each service is a federation subgraph: ``_service { sdl }`` names its
entity keys and contributed fields, and ``_entities`` answers them exactly as
the monolith's subgraph does for the same representations."""

from __future__ import annotations

from graphql import build_schema

from extracted_services.common.app import SUBGRAPH
from extracted_services.common.registry import service_spec
from extracted_services.common.subgraph import _FEDERATION_PLUMBING
from extracted_services.ratings import RatingsSettings, Rounding, create_app
from strangler_proxy.datamove.backfill import backfill
from strangler_proxy.graphql.compose import compose

FIELDS = {
    "ratings": ("Title", "rating { averageRating numVotes }"),
    "credits": ("Title", "cast { person { id } category characters ordering }"),
    "images": ("Title", "images { id url width height caption }"),
}
TITLE_REPS = [{"__typename": "Title", "id": f"tt{n:07d}"} for n in (1, 2, 3, 4, 5, 17, 9999999)]
ENTITIES = "query($r: [_Any!]!) { _entities(representations: $r) { ... on %s { id %s } } }"


async def _gql(client, query, variables=None):
    resp = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    body = await resp.json()
    return resp.status, body


def _sorted_images(body):
    for entity in body["data"]["_entities"]:
        if entity and "images" in entity:
            entity["images"].sort(key=lambda i: i["id"])
    return body


async def _subgraph(name, monolith_url, service_db, engines, serve):
    url = await service_db(name)
    spec = service_spec(name)
    await backfill(spec.datamove.backfill, engines(monolith_url), engines(url))
    app = create_app(RatingsSettings(url, Rounding.LEGACY)) if name == "ratings" else spec.create_app(url)
    return await serve(app)


async def test_entities_match_the_monolith(monolith, monolith_url, service_db, engines, serve):
    for name, (typename, selection) in FIELDS.items():
        service = await _subgraph(name, monolith_url, service_db, engines, serve)
        query = ENTITIES % (typename, selection)
        legacy = _sorted_images((await _gql(monolith, query, {"r": TITLE_REPS}))[1])
        mine = _sorted_images((await _gql(service, query, {"r": TITLE_REPS}))[1])
        assert "errors" not in mine and mine == legacy, name
        assert mine["data"]["_entities"][-1] is None  # unknown title, as in the monolith
        assert sum(1 for e in mine["data"]["_entities"] if e and any(v for k, v in e.items() if k != "id")) >= 3


async def test_known_for_entities_match_the_monolith(monolith, monolith_url, service_db, engines, serve):
    service = await _subgraph("credits", monolith_url, service_db, engines, serve)
    reps = [{"__typename": "Person", "id": f"nm{n:07d}"} for n in range(1, 9)]
    query = ENTITIES % ("Person", "knownFor { id }")
    assert (await _gql(service, query, {"r": reps}))[1] == (await _gql(monolith, query, {"r": reps}))[1]


async def test_sdl_declares_keys_and_composes_with_the_monolith(monolith, monolith_url, service_db, engines, serve):
    sdls = {"legacy": (await _gql(monolith, "{ _service { sdl } }"))[1]["data"]["_service"]["sdl"]}
    for name in FIELDS:
        service = await _subgraph(name, monolith_url, service_db, engines, serve)
        status, body = await _gql(service, "{ _service { sdl } }")
        sdl = body["data"]["_service"]["sdl"]
        assert status == 200 and sdl.startswith("extend schema @link(url: \"https://specs.apollo.dev/federation/v2.3\"")
        assert 'type Title @key(fields: "id")' in sdl and "_entities" not in sdl
        build_schema(_FEDERATION_PLUMBING + sdl.split("\n", 1)[1])  # valid SDL without the schema extension
        sdls[name] = sdl
    composed = compose(sdls, legacy="legacy")
    assert sorted(composed.resolvers["Title.rating"]) == ["legacy", "ratings"]
    assert sorted(composed.resolvers["Title.cast"]) == ["credits", "legacy"]
    assert sorted(composed.resolvers["Person.knownFor"]) == ["credits", "legacy"]
    assert sorted(composed.resolvers["Title.images"]) == ["images", "legacy"]


async def test_bad_requests_are_graphql_errors_and_documents_are_cached(monolith_url, service_db, engines, serve):
    service = await _subgraph("ratings", monolith_url, service_db, engines, serve)
    status, body = await _gql(service, "{ _entities(representations: [{__typename: \"Nope\", id: \"1\"}]) { __typename } }")
    assert status == 200 and "unknown __typename" in body["errors"][0]["message"]
    status, body = await _gql(service, "{ nothing }")
    assert status == 400 and "Cannot query field 'nothing'" in body["errors"][0]["message"]
    sub = service.server.app[SUBGRAPH]
    assert sub.document("{ _service { sdl } }") is sub.document("{ _service { sdl } }")
