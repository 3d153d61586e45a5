"""GraphQL fields through the real proxy: shadowed, compared, flipped with the admin API.

The gateway is mounted in a full ``ProxyServer`` (config file, control database,
shadow dispatcher, diff engine, admin API) over the real monolith and services.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import aiohttp
import graphql
import pytest
from aiohttp.test_utils import TestServer
from gql_demo import (  # noqa: F401  (fixtures)
    Demo,
    backends_yaml,
    copy_databases,
    demo,
    demo_template,
    running_demo,
    upstreams_yaml,
)

from extracted_services.ratings.app import create_app as create_ratings
from extracted_services.ratings.settings import RatingsSettings, Rounding
from strangler_proxy.diff.result import ShadowResult, Verdict
from strangler_proxy.server import ProxyServer

TOKEN = "gql-admin-token"
QUERY = '{ title(id: "tt0000001") { primaryTitle rating { averageRating numVotes } } }'


class Collector:
    def __init__(self) -> None:
        self.results: list[ShadowResult] = []

    def observe(self, result: ShadowResult) -> None:
        self.results.append(result)


def write_config(path: Path, demo: Demo, mode: str, graphql_extra: str = "", field_extra: str = "") -> None:
    ups, backends = upstreams_yaml(demo.ports), backends_yaml(demo.ports)
    path.write_text(f"""
proxy:
  default_upstream: monolith
  admin_tokens: {{ops: {TOKEN}}}
  state_poll_interval_s: 0.1
upstreams:
{ups}
compare:
  ignore: ["$..generated_at", "$..request_id"]
graphql:
  enabled: true
  legacy_backend: monolith
{graphql_extra}
  backends:
{backends}
  fields:
    Title.rating: {{target: ratings, mode: {mode}{field_extra}}}
""")


async def post_query(session: aiohttp.ClientSession, url: str, query: str = QUERY) -> dict[str, Any]:
    async with session.post(f"{url}/graphql", json={"query": query}) as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_shadowed_field_is_compared_and_a_flip_moves_it(demo: Demo, tmp_path: Path) -> None:
    config = tmp_path / "strangler.yaml"
    write_config(config, demo, "shadow")
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server:
        collector = Collector()
        server.shadow.add_listener(collector)

        # shadow: the client gets the monolith's answer, the field is compared per entity
        expected = await demo.monolith(QUERY)
        assert await post_query(demo.session, server.url) == expected
        await wait_for(lambda: any(r.key == "graphql:Title.rating" for r in collector.results))
        [result] = [r for r in collector.results if r.key == "graphql:Title.rating"]
        assert result.verdict is Verdict.MATCH, result
        assert result.partition == "tt0000001"

        # a flip through the admin API, audited like a route's
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with demo.session.post(f"{server.admin_url}/routes/Title.rating/flip", headers=headers,
                                     json={"mode": "extracted", "reason": "ratings owns it"}) as resp:
            assert resp.status == 200, await resp.text()
        async with demo.session.get(f"{server.admin_url}/audit", headers=headers) as resp:
            audit = await resp.json()
        entry = audit["entries"][0]
        assert (entry["name"], entry["who"], entry["to"]["mode"]) == ("Title.rating", "ops", "extracted")
        assert entry["from"]["mode"] == "shadow" and entry["reason"] == "ratings owns it"

        # extracted: the ratings service answers Title.rating (still the same data) ...
        assert await post_query(demo.session, server.url) == expected
        # ... which shows when it goes away: the field is null with an error at its path,
        # while the monolith's fields still arrive.
        await demo.servers["ratings"].close()
        partial = await post_query(demo.session, server.url)
        assert partial["data"]["title"]["primaryTitle"] == expected["data"]["title"]["primaryTitle"]
        assert partial["data"]["title"]["rating"] is None
        assert partial["errors"][0]["path"] == ["title", "rating"]


async def test_an_extracted_field_whose_backend_dies_mid_load_is_rolled_back(demo: Demo, tmp_path: Path) -> None:
    """No shadow to compare with: the requests the target serves are recorded (served, or a
    candidate error when it fails), and the guardrails roll the field back on the error rate;
    the monolith answers the field again."""
    config = tmp_path / "strangler.yaml"
    write_config(config, demo, "extracted", field_extra=", guardrails: {min_samples: 10, window: 20}")
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server:
        collector = Collector()
        server.shadow.add_listener(collector)
        expected = await demo.monolith(QUERY)
        for _ in range(10):
            assert await post_query(demo.session, server.url) == expected
        await wait_for(lambda: len(collector.results) >= 10)
        assert {(r.key, r.mode, r.verdict) for r in collector.results} == {
            ("graphql:Title.rating", "extracted", Verdict.SERVED)}
        await demo.servers["ratings"].close()  # the service dies under load
        sent = 0
        while server.flips.state("Title.rating").mode.value == "extracted":  # type: ignore[union-attr]
            body = await post_query(demo.session, server.url)
            assert body["data"]["title"]["primaryTitle"] == expected["data"]["title"]["primaryTitle"]
            sent += 1
            assert sent <= 40, "no rollback"
            await asyncio.sleep(0.01)
        errors = [r for r in collector.results if r.verdict is Verdict.CANDIDATE_ERROR]
        assert errors and all(r.key == "graphql:Title.rating" for r in errors)
        assert server.flips.state("Title.rating").mode.value == "shadow"  # type: ignore[union-attr]
        # The monolith serves the field again; the client sees no error.
        assert await post_query(demo.session, server.url) == expected
        async with demo.session.get(f"{server.admin_url}/audit", headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            entry = (await resp.json())["entries"][0]
        assert (entry["name"], entry["who"], entry["kind"]) == ("Title.rating", "guardrails", "rollback")


async def test_a_graphql_backend_down_at_start_does_not_keep_the_proxy_down(
        demo_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy starts without its gateway (/graphql goes to the monolith untouched), composes
    again in the background, and mounts the gateway once the backend answers."""
    monkeypatch.setattr("strangler_proxy.server.GRAPHQL_RECOMPOSE_S", 0.2)
    dbs = copy_databases(demo_template, tmp_path)
    async with running_demo(dbs) as demo:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            late_port = sock.getsockname()[1]
        config = tmp_path / "strangler.yaml"
        write_config(config, Demo({**demo.ports, "ratings": late_port}, demo.session), "shadow",
                     graphql_extra="  sdl_wait_s: 0.2")
        state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
        async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server:
            assert server.graphql is None
            expected = await demo.monolith(QUERY)
            assert await post_query(demo.session, server.url) == expected  # passed through to the monolith
            late = TestServer(create_ratings(RatingsSettings(dbs["ratings"], Rounding.LEGACY)), host="127.0.0.1",
                              port=late_port)
            await late.start_server()
            try:
                await wait_for(lambda: server.graphql is not None, timeout_s=10)
                collector = Collector()
                server.shadow.add_listener(collector)
                assert await post_query(demo.session, server.url) == expected  # now through the gateway
                await wait_for(lambda: any(r.key == "graphql:Title.rating" for r in collector.results))
            finally:
                await late.close()


IDE = "http://ide.example"


async def test_an_ide_in_a_browser_introspects_through_the_proxy(demo: Demo, tmp_path: Path) -> None:
    """What GraphiQL or Apollo Sandbox on another origin does: a CORS preflight, then the
    introspection query; the answer builds a client schema of the composed API."""
    config = tmp_path / "strangler.yaml"
    write_config(config, demo, "extracted", graphql_extra=f'  cors_origins: ["{IDE}"]')
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server, \
            aiohttp.ClientSession() as s:
        preflight = {"Origin": IDE, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"}
        async with s.options(f"{server.url}/graphql", headers=preflight) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == IDE
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            assert r.headers["Access-Control-Allow-Headers"] == "content-type"
        async with s.post(f"{server.url}/graphql", json={"query": graphql.get_introspection_query()},
                          headers={"Origin": IDE}) as r:
            assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == IDE
            body = await r.json()
        schema = graphql.build_client_schema(body["data"])
        title = schema.get_type("Title")
        assert isinstance(title, graphql.GraphQLObjectType)
        assert {"rating", "cast", "images", "primaryTitle"} <= set(title.fields)
        assert "_entities" not in schema.query_type.fields  # type: ignore[union-attr]
        # Another origin gets no CORS header: the browser keeps the answer from that page.
        async with s.post(f"{server.url}/graphql", json={"query": "{ __typename }"},
                          headers={"Origin": "http://elsewhere.example"}) as r:
            assert r.status == 200 and "Access-Control-Allow-Origin" not in r.headers


async def test_without_cors_origins_no_cors_headers_and_other_methods_are_refused(demo: Demo, tmp_path: Path) -> None:
    config = tmp_path / "strangler.yaml"
    write_config(config, demo, "legacy")
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server, \
            aiohttp.ClientSession() as s:
        async with s.options(f"{server.url}/graphql", headers={"Origin": IDE}) as r:
            assert r.status == 204 and "Access-Control-Allow-Origin" not in r.headers
            assert r.headers["Allow"] == "GET, POST, OPTIONS"
        async with s.put(f"{server.url}/graphql", json={"query": "{ __typename }"}) as r:
            assert r.status == 405 and r.headers["Allow"] == "GET, POST, OPTIONS"
            assert "not allowed" in (await r.json())["errors"][0]["message"]
        # A desktop IDE (no Origin) introspects as before.
        async with s.get(f"{server.url}/graphql", params={"query": "{ __schema { queryType { name } } }"}) as r:
            assert r.status == 200
            assert (await r.json())["data"]["__schema"]["queryType"]["name"] == "Query"
