"""GraphQL at /graphql: queries, nesting, federation entities, the SDL, errors."""

from __future__ import annotations

import json
from typing import Any

from graphql import build_ast_schema, parse

from legacy_monolith.graphql_view import DocumentCache
from tests.monolith.conftest import Live
from tests.monolith.helpers import query, scalar


async def gql(live: Live, document: str, variables: dict | None = None, **extra: Any) -> tuple[int, dict]:
    payload = {"query": document, "variables": variables, **extra}
    async with live.http.post(live.url("/graphql"), json=payload) as resp:
        return resp.status, await resp.json()


async def test_title_with_nested_fields_matches_rest(live: Live) -> None:
    status, body = await gql(
        live,
        """query One($id: ID!) { title(id: $id) {
             id primaryTitle originalTitle kind startYear endYear runtimeMinutes genres
             rating { averageRating numVotes }
             cast { category characters ordering person { id name } }
             images { id url width height caption } } }""",
        {"id": "tt0000004"},
    )
    assert status == 200 and "errors" not in body
    title = body["data"]["title"]
    async with live.http.get(live.url("/api/titles/tt0000004")) as r:
        rest = await r.json()
    assert (title["id"], title["primaryTitle"], title["genres"]) == (rest["id"], rest["primary_title"], rest["genres"])
    async with live.http.get(live.url("/api/titles/tt0000004/cast")) as r:
        cast = (await r.json())["cast"]
    assert [(c["person"]["id"], c["category"], c["ordering"]) for c in title["cast"]] == [
        (c["person_id"], c["category"], c["ordering"]) for c in cast
    ]
    (n, total), = await query(live.database_url, "SELECT count(*), sum(value) FROM votes WHERE title_id='tt0000004'")
    if n:
        assert title["rating"] == {"averageRating": total / n, "numVotes": n}
    else:
        assert title["rating"] is None
    images = await query(live.database_url, "SELECT id FROM images WHERE title_id = 'tt0000004'")
    assert sorted(i["id"] for i in title["images"]) == sorted(r[0] for r in images)


async def test_person_known_for_matches_rest(live: Live) -> None:
    person_id = await scalar(
        live.database_url, "SELECT person_id FROM credits GROUP BY person_id ORDER BY count(*) DESC LIMIT 1"
    )
    status, body = await gql(
        live, "query($id: ID!) { person(id: $id) { id name professions knownFor { id primaryTitle } } }", {"id": person_id}
    )
    async with live.http.get(live.url(f"/api/people/{person_id}/known-for")) as r:
        rest = await r.json()
    assert status == 200
    assert [t["id"] for t in body["data"]["person"]["knownFor"]] == [t["id"] for t in rest["titles"]]


async def test_unknown_ids_are_null_without_errors(live: Live) -> None:
    status, body = await gql(live, '{ title(id: "tt9999999") { id } person(id: "nm9999999") { id } }')
    assert status == 200 and body == {"data": {"title": None, "person": None}}


async def test_search(live: Live) -> None:
    word = (await scalar(live.database_url, "SELECT name FROM people ORDER BY id LIMIT 1")).split()[-1]
    status, body = await gql(live, "query($q: String!) { search(q: $q, limit: 5) { titles { id } people { name } } }", {"q": word})
    assert status == 200 and 0 < len(body["data"]["search"]["people"]) <= 5
    assert all(word in p["name"] for p in body["data"]["search"]["people"])


async def test_get_with_variables_and_operation_name(live: Live) -> None:
    document = 'query A { title(id: "tt0000001") { id } } query B($id: ID!) { person(id: $id) { id } }'
    params = {"query": document, "operationName": "B", "variables": json.dumps({"id": "nm0000002"})}
    async with live.http.get(live.url("/graphql"), params=params) as resp:
        assert resp.status == 200
        assert await resp.json() == {"data": {"person": {"id": "nm0000002"}}}
    status, body = await gql(live, document)
    assert status == 400 and "operationName is required" in body["errors"][0]["message"]
    status, body = await gql(live, document, operationName="C")
    assert status == 400 and "no operation named 'C'" in body["errors"][0]["message"]


async def test_application_graphql_body(live: Live) -> None:
    async with live.http.post(
        live.url("/graphql"), data='{ title(id: "tt0000002") { id } }', headers={"Content-Type": "application/graphql"}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["data"]["title"]["id"] == "tt0000002"


async def test_entities_resolve_titles_and_people_in_order(live: Live) -> None:
    reps = [
        {"__typename": "Person", "id": "nm0000003"},
        {"__typename": "Title", "id": "tt0000002"},
        {"__typename": "Title", "id": "tt9999999"},
        {"__typename": "Title", "id": "tt0000001"},
    ]
    status, body = await gql(
        live,
        """query($r: [_Any!]!) { _entities(representations: $r) {
             __typename ... on Title { id primaryTitle rating { numVotes } } ... on Person { id name } } }""",
        {"r": reps},
    )
    assert status == 200 and "errors" not in body
    got = body["data"]["_entities"]
    assert [(e["__typename"], e["id"]) if e else None for e in got] == [
        ("Person", "nm0000003"),
        ("Title", "tt0000002"),
        None,
        ("Title", "tt0000001"),
    ]
    name = await scalar(live.database_url, "SELECT name FROM people WHERE id = 'nm0000003'")
    assert got[0]["name"] == name


async def test_entities_reject_bad_representations(live: Live) -> None:
    for reps, fragment in (
        ([{"__typename": "Studio", "id": "x"}], "__typename must be Title or Person"),
        ([{"__typename": "Title"}], "string id"),
        ([{"__typename": "Title", "id": "tt1"}], "malformed title id"),
    ):
        status, body = await gql(live, "query($r: [_Any!]!) { _entities(representations: $r) { __typename } }", {"r": reps})
        assert status == 200 and body["data"] is None
        assert fragment in body["errors"][0]["message"] and body["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_service_sdl_declares_the_entities(live: Live) -> None:
    status, body = await gql(live, "{ _service { sdl } }")
    sdl = body["data"]["_service"]["sdl"]
    assert status == 200
    assert 'type Title @key(fields: "id")' in sdl and 'type Person @key(fields: "id")' in sdl
    assert "_entities" not in sdl and "_Any" not in sdl  # federation plumbing is the gateway's business
    schema = build_ast_schema(parse(sdl), assume_valid_sdl=True)  # a gateway can read it
    assert {"cast", "rating", "images"} <= set(schema.type_map["Title"].fields)  # type: ignore[attr-defined]
    assert "knownFor" in schema.type_map["Person"].fields  # type: ignore[attr-defined]


async def test_field_errors_are_partial_results(live: Live) -> None:
    status, body = await gql(live, '{ ok: title(id: "tt0000001") { id } bad: title(id: "nope") { id } }')
    assert status == 200
    assert body["data"] == {"ok": {"id": "tt0000001"}, "bad": None}
    (error,) = body["errors"]
    assert error["path"] == ["bad"] and "malformed title id 'nope'" in error["message"]
    assert error["locations"] == [{"line": 1, "column": 37}]


async def test_request_errors_are_400(live: Live) -> None:
    cases: list[tuple[Any, str]] = [
        ({"query": "{ title(id: "}, "Syntax Error"),
        ({"query": "{ nope }"}, "Cannot query field 'nope'"),
        ({"query": "query($id: ID!) { title(id: $id) { id } }"}, "Variable '$id'"),
        ({"query": "query($id: ID!) { title(id: $id) { id } }", "variables": {"id": 5.5}}, "Variable '$id'"),
        ({"variables": {}}, "query is required"),
        ({"query": "{ title(id: \"tt0000001\") { id } }", "variables": [1]}, "variables must be a JSON object"),
        ([1, 2], "must be a JSON object"),
    ]
    for payload, fragment in cases:
        async with live.http.post(live.url("/graphql"), json=payload) as resp:
            body = await resp.json()
            assert resp.status == 400, payload
            assert fragment in body["errors"][0]["message"], (payload, body)
    async with live.http.post(live.url("/graphql"), data=b"{oops") as resp:
        assert resp.status == 400 and "not valid JSON" in (await resp.json())["errors"][0]["message"]
    async with live.http.get(live.url("/graphql"), params={"query": "{ title(id: \"tt0000001\") { id } }", "variables": "{"}) as resp:
        assert resp.status == 400


async def test_search_limit_is_checked(live: Live) -> None:
    status, body = await gql(live, '{ search(q: "a", limit: 1000) { titles { id } } }')
    assert status == 200 and body["data"] is None
    assert "limit must be between 1 and 50" in body["errors"][0]["message"]


def test_document_cache_reuses_and_evicts() -> None:
    cache = DocumentCache(size=2)
    first = cache.get("{ title(id: \"tt0000001\") { id } }")
    assert cache.get("{ title(id: \"tt0000001\") { id } }") is first
    bad = cache.get("{ nope }")
    assert bad.document is None and bad.errors
    cache.get("{ person(id: \"nm0000001\") { id } }")
    assert len(cache) == 2
    assert cache.get("{ title(id: \"tt0000001\") { id } }") is not first  # evicted, prepared again


async def test_deep_queries_are_refused(live: Live) -> None:
    deep = '{ person(id: "nm0000001") { knownFor { cast { person { knownFor { cast { person { knownFor { cast { person { id } } } } } } } } } } }'
    status, body = await gql(live, deep)
    assert status == 400 and "nests 11 levels deep; at most 10" in body["errors"][0]["message"]
    via_fragments = """{ person(id: "nm0000001") { ...P } }
      fragment P on Person { knownFor { cast { person { knownFor { cast { person { ...Q } } } } } } }
      fragment Q on Person { knownFor { cast { person { id } } } }"""
    status, body = await gql(live, via_fragments)
    assert status == 400 and "levels deep" in body["errors"][0]["message"]
    ok = '{ person(id: "nm0000001") { knownFor { cast { person { knownFor { id } } } } } }'
    status, body = await gql(live, ok)
    assert status == 200 and body["data"]["person"]["knownFor"]


async def test_batch_loader_batches_and_caches() -> None:
    from legacy_monolith.loaders import BatchLoader

    calls: list[list[int]] = []

    async def fetch(keys: Any) -> dict[int, int]:
        calls.append(list(keys))
        return {k: k * 10 for k in keys if k != 3}

    loader: BatchLoader[int, int] = BatchLoader(fetch)
    assert await loader.load_many([1, 2, 3, 2]) == [10, 20, None, 20]
    assert await loader.load(1) == 10  # cached: no new call
    assert calls == [[1, 2, 3]]
