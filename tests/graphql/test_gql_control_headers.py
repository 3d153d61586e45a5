"""The gateway's backend fetches (served and shadow) never carry a client's
``X-Strangler-*`` header; only ``forward_headers`` pass, and those can never
name a control header."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from gql_stack import Results, Stack
from gql_subgraphs import World, products_app, reviews_app

from strangler_proxy.errors import ConfigError
from strangler_proxy.graphql.executor import BackendClient
from strangler_proxy.server import ProxyServer

FIELDS = """\
    Product.reviews: {target: reviews, mode: extracted}
    Product.rating: {target: reviews, mode: shadow}"""
QUERY = '{ product(id: "p2") { name reviews { id stars } rating } }'
CLIENT_HEADERS = [
    ("Authorization", "Bearer client"),
    ("X-Strangler-Dry-Run", "0"),
    ("x-strangler-shadow", "1"),
    ("X-STRANGLER-DRY-RUN", "true"),
]

Seen = list[tuple[str, list[tuple[str, str]]]]


def recording(app: web.Application, name: str, seen: Seen) -> web.Application:
    """``app`` that also records the headers of every request it gets."""

    @web.middleware
    async def record(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        seen.append((name, list(request.headers.items())))
        return await handler(request)

    app.middlewares.append(record)
    return app


@pytest.fixture
async def recorded() -> AsyncIterator[tuple[Stack, Seen]]:
    world = World.demo()
    seen: Seen = []
    products = TestServer(recording(products_app(world), "products", seen), host="127.0.0.1")
    reviews = TestServer(recording(reviews_app(world), "reviews", seen), host="127.0.0.1")
    await products.start_server()
    await reviews.start_server()
    session = aiohttp.ClientSession()
    try:
        yield Stack(world, products, reviews, session, Results()), seen
    finally:
        await session.close()
        await products.close()
        await reviews.close()


async def test_backend_fetches_carry_no_client_control_header(recorded: tuple[Stack, Seen]) -> None:
    stack, seen = recorded
    gw = await stack.gateway(FIELDS)
    assert gw.shadower is not None
    app = web.Application()
    app.router.add_route("*", "/graphql", gw.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        seen.clear()  # the SDL fetches at start-up
        async with stack.session.post(server.make_url("/graphql"), json={"query": QUERY},
                                      headers=CLIENT_HEADERS) as resp:
            body = await resp.json()
        assert resp.status == 200 and "errors" not in body, body
        await gw.shadower.drain()
    finally:
        await server.close()
    # served fetches to both backends, and the rating's shadow fetch to reviews
    assert {name for name, _ in seen} == {"products", "reviews"} and len(seen) >= 3
    assert [r.key for r in stack.results.items if r.key.endswith("Product.rating")] == ["graphql:Product.rating"]
    for name, headers in seen:
        assert [k for k, _ in headers if k.lower().startswith("x-strangler-")] == [], name
        assert ("Authorization", "Bearer client") in headers, name  # what forward_headers allows still passes


@pytest.mark.parametrize("name", ["X-Strangler-Dry-Run", "x-strangler-shadow", "X-STRANGLER-ANY"])
async def test_forward_headers_cannot_name_a_control_header(name: str) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ConfigError, match="X-Strangler-"):
            BackendClient(session, {}, forward_headers=("authorization", name))
        assert BackendClient(session, {}, forward_headers=("authorization", "x-request-id")).forward_headers


async def test_each_backend_gets_its_upstreams_header_rules_and_no_other(
    recorded: tuple[Stack, Seen], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through the real proxy (its endpoint pools): the SDL fetch at start-up, the served
    fetches and the shadow fetch carry their own upstream's ``headers`` rules only."""
    monkeypatch.setenv("T_GQL_REVIEWS", "reviews-SECRET")
    monkeypatch.setenv("T_GQL_LEGACY", "legacy-SECRET")
    stack, seen = recorded
    config = tmp_path / "strangler.yaml"
    config.write_text(f"""
upstreams:
  legacy:
    url: "http://127.0.0.1:{stack.products.port}"
    headers: {{set: {{X-Legacy-Key: "${{T_GQL_LEGACY}}"}}}}
  reviews:
    url: "http://127.0.0.1:{stack.reviews.port}"
    headers: {{set: {{Authorization: "Bearer ${{T_GQL_REVIEWS}}"}}, remove: [X-Request-Id]}}
graphql:
  enabled: true
  backends: {{legacy: {{upstream: legacy}}, reviews: {{upstream: reviews}}}}
  fields:
{FIELDS}
""")
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server:
        sdl_fetches = list(seen)
        async with stack.session.post(f"{server.url}/graphql", json={"query": QUERY},
                                      headers=[*CLIENT_HEADERS, ("X-Request-Id", "r1")]) as resp:
            body = await resp.json()
        assert resp.status == 200 and "errors" not in body, body
        assert server.graphql is not None and server.graphql.shadower is not None
        await server.graphql.shadower.drain()

    def values(headers: list[tuple[str, str]], name: str) -> list[str]:
        return [v for k, v in headers if k.lower() == name.lower()]

    assert {name for name, _ in sdl_fetches} == {"products", "reviews"}
    assert len([n for n, _ in seen if n == "reviews"]) >= 3  # its SDL, the served fetch, the rating's shadow fetch
    for name, headers in seen:
        if name == "reviews":  # its own token replaces the client's, and the removed header is gone
            assert values(headers, "Authorization") == ["Bearer reviews-SECRET"], headers
            assert values(headers, "X-Request-Id") == values(headers, "X-Legacy-Key") == []
        else:
            assert values(headers, "X-Legacy-Key") == ["legacy-SECRET"], headers
            assert "Bearer reviews-SECRET" not in values(headers, "Authorization")
