"""Every error the gateway answers carries the ``extensions.code`` Apollo Client, urql and Relay
branch on, with the HTTP statuses it always had.

Through the real proxy over the demo monolith and services, and through the gateway mounted
on its own over the two test subgraphs (they have mutations and errors without codes).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from gql_demo import Demo, backends_yaml, demo, demo_template, upstreams_yaml  # noqa: F401  (fixtures)
from gql_stack import Stack, stack  # noqa: F401  (fixture)

from strangler_proxy.server import ProxyServer

TITLE = 'query T($id: ID!) { title(id: $id) { primaryTitle } }'
APQ = {"persistedQuery": {"version": 1, "sha256Hash": "ecf4edb46db40b5132295c0291d62fb65d6759a9eedfa4d5d612dd5ec54a6b38"}}


def codes(body: dict[str, Any]) -> list[str]:
    """The code of each error; every error must have one."""
    assert body.get("errors"), body
    return [e["extensions"]["code"] for e in body["errors"]]


@pytest.fixture
async def proxy(demo: Demo, tmp_path: Path) -> AsyncIterator[tuple[ProxyServer, aiohttp.ClientSession]]:
    ups, backends = upstreams_yaml(demo.ports), backends_yaml(demo.ports)
    config = tmp_path / "strangler.yaml"
    config.write_text(f"""
proxy: {{default_upstream: monolith}}
upstreams:
{ups}
graphql:
  enabled: true
  legacy_backend: monolith
  backends:
{backends}
  fields:
    Title.rating: {{target: ratings, mode: extracted}}
""")
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server:
        yield server, demo.session


async def post(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{url}/graphql", **kwargs) as resp:
        return resp.status, await resp.json()


async def get(session: aiohttp.ClientSession, url: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with session.get(f"{url}/graphql", params=params) as resp:
        return resp.status, await resp.json()


async def test_request_errors_have_their_codes_and_statuses(proxy: tuple[ProxyServer, aiohttp.ClientSession]) -> None:
    server, s = proxy
    url = server.url
    cases: list[tuple[str, tuple[int, dict[str, Any]], int, str]] = [
        ("syntax", await post(s, url, json={"query": "{ title("}), 400, "GRAPHQL_PARSE_FAILED"),
        ("unknown field", await post(s, url, json={"query": '{ title(id: "tt0000001") { nope } }'}),
         400, "GRAPHQL_VALIDATION_FAILED"),
        ("missing variable", await post(s, url, json={"query": TITLE}), 400, "BAD_USER_INPUT"),
        ("variable of the wrong type", await post(s, url, json={"query": TITLE, "variables": {"id": {"x": 1}}}),
         400, "BAD_USER_INPUT"),
        ("unknown operationName", await post(s, url, json={"query": TITLE, "variables": {"id": "tt0000001"},
                                                           "operationName": "Nope"}),
         400, "OPERATION_RESOLUTION_FAILURE"),
        ("two operations, no operationName",
         await post(s, url, json={"query": "query A { __typename } query B { __typename }"}),
         400, "OPERATION_RESOLUTION_FAILURE"),
        ("not JSON", await post(s, url, data=b"{nope", headers={"Content-Type": "application/json"}),
         400, "BAD_REQUEST"),
        ("no query", await post(s, url, json={"variables": {}}), 400, "BAD_REQUEST"),
        ("variables not an object", await post(s, url, json={"query": TITLE, "variables": [1]}), 400, "BAD_REQUEST"),
        ("GET variables not JSON", await get(s, url, {"query": TITLE, "variables": "{"}), 400, "BAD_REQUEST"),
        ("a persisted-query hash alone", await post(s, url, json={"extensions": APQ}),
         400, "PERSISTED_QUERY_NOT_SUPPORTED"),
        ("... by GET", await get(s, url, {"extensions": '{"persistedQuery": {"version": 1, "sha256Hash": "ab"}}'}),
         400, "PERSISTED_QUERY_NOT_SUPPORTED"),
    ]
    async with s.put(f"{url}/graphql", json={"query": "{ __typename }"}) as resp:
        cases.append(("PUT", (resp.status, await resp.json()), 405, "BAD_REQUEST"))
    for name, (status, body), want_status, want_code in cases:
        assert (status, codes(body)[0]) == (want_status, want_code), (name, body)
        assert "data" not in body, name  # nothing ran
    # APQ clients send the whole query once told: it then simply runs.
    status, body = await post(s, url, json={"query": TITLE, "variables": {"id": "tt0000001"}, "extensions": APQ})
    assert status == 200 and "errors" not in body


async def test_backend_errors_keep_their_codes(proxy: tuple[ProxyServer, aiohttp.ClientSession],
                                               demo: Demo) -> None:
    server, s = proxy
    # The monolith's own code for a malformed id passes through as it said it.
    status, body = await post(s, server.url, json={"query": TITLE, "variables": {"id": "nope"}})
    direct = await demo.monolith(TITLE, {"id": "nope"})
    assert status == 200 and codes(body) == codes(direct) == ["BAD_REQUEST"]
    # A backend that is gone: its field is null with SUBGRAPH_ERROR, the rest still arrives.
    await demo.servers["ratings"].close()
    status, body = await post(s, server.url, json={"query": '{ title(id: "tt0000001") { primaryTitle rating { numVotes } } }'})
    assert status == 200 and codes(body) == ["SUBGRAPH_ERROR"]
    assert body["data"]["title"]["rating"] is None and body["data"]["title"]["primaryTitle"]


async def test_a_failure_of_the_gateway_is_an_internal_error_with_an_id(
        proxy: tuple[ProxyServer, aiohttp.ClientSession], caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, s = proxy
    assert server.graphql is not None

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("secret detail: SELECT * FROM votes")

    monkeypatch.setattr(server.graphql.executor, "run", broken)
    with caplog.at_level(logging.ERROR, logger="strangler.graphql"):
        status, body = await post(s, server.url, json={"query": '{ title(id: "tt0000001") { primaryTitle } }'})
    assert status == 500 and codes(body) == ["INTERNAL_SERVER_ERROR"]
    message = body["errors"][0]["message"]
    assert "secret detail" not in message and "Traceback" not in message
    error_id = message.rsplit("error id ", 1)[1].rstrip(")")
    assert any(error_id in r.getMessage() and "secret detail" in r.getMessage() for r in caplog.records)


async def test_mounted_on_its_own(stack: Stack) -> None:
    """A GET mutation, a backend error without a code, and the config's expose_served_by, with the
    gateway as the aiohttp handler of its own app (no proxy deciding for it)."""
    gw = await stack.gateway("    Product.rating: {target: reviews, mode: extracted}",
                             settings="  expose_served_by: true")
    app = web.Application()
    app.router.add_route("*", "/graphql", gw.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        url = f"http://127.0.0.1:{server.port}"
        status, body = await get(stack.session, url, {"query": 'mutation { createProduct(name: "x", price: 1) { id } }'})
        assert (status, codes(body)) == (405, ["BAD_REQUEST"])
        status, body = await post(stack.session, url, json={"query": "{ products(first: 3) { id secret rating } }"})
        assert status == 200
        [err] = body["errors"]
        assert err["path"] == ["products", 2, "secret"]
        assert err["extensions"] == {"code": "DOWNSTREAM_SERVICE_ERROR", "serviceName": "legacy"}
        assert body["extensions"]["strangler"]["servedBy"] == {"products": "legacy", "products.rating": "reviews"}
    finally:
        await server.close()
