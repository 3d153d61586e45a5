"""Which backend answered, through the real proxy: told to an admin token or when the config says
so, never to anyone else -- in GraphQL answers (extensions.strangler.servedBy, serviceName of a
backend's errors) and REST answers (X-Strangler-Served-By).

The demo monolith and services on loopback behind a full ``ProxyServer``; one recording upstream
shows the admin-token header is never forwarded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from gql_demo import Demo, backends_yaml, demo, demo_template, upstreams_yaml  # noqa: F401  (fixtures)

from strangler_proxy.server import ProxyServer

TOKEN = "served-by-admin-token"
ENV_TOKEN = "env-admin-token"
QUERY = '{ title(id: "tt0000001") { primaryTitle rating { averageRating } cast { person { name } } } }'
# A path names the backend of that field and of everything under it not named deeper: the cast
# comes from credits, the names of its people from the monolith again.
SERVED_BY = {"title": "monolith", "title.cast": "credits", "title.cast.person.name": "monolith",
             "title.rating": "ratings"}
ASK = {"X-Strangler-Admin-Token": TOKEN}


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[TestServer, list[dict[str, str]]]]:
    """An upstream that answers 200 and keeps the headers of every request it gets."""
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield server, seen
    await server.close()


def config_text(demo: Demo, recorder_port: int, *, expose: bool = False) -> str:
    ups, backends = upstreams_yaml(demo.ports), backends_yaml(demo.ports)
    return f"""
proxy:
  default_upstream: monolith
  admin_tokens: {{ops: {TOKEN}}}
upstreams:
{ups}
  recorder: {{url: "http://127.0.0.1:{recorder_port}"}}
routes:
  - {{name: ratings, path: "/api/titles/{{id}}/ratings", methods: [GET], target: ratings, mode: extracted}}
  - {{name: echo, path: /echo, target: recorder, mode: extracted}}
graphql:
  enabled: true
  legacy_backend: monolith
  expose_served_by: {"true" if expose else "false"}
  backends:
{backends}
  fields:
    Title.rating: {{target: ratings, mode: extracted}}
    Title.cast: {{target: credits, mode: extracted}}
"""


async def gql(session: aiohttp.ClientSession, url: str, query: str = QUERY,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
    async with session.post(f"{url}/graphql", json={"query": query}, headers=headers or {}) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()  # type: ignore[no-any-return]


async def served_by_header(session: aiohttp.ClientSession, url: str, path: str,
                           headers: dict[str, str] | None = None) -> str | None:
    async with session.get(f"{url}{path}", headers=headers or {}) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()
        return resp.headers.get("X-Strangler-Served-By")


async def test_told_with_an_admin_token_and_to_nobody_else(demo: Demo, recorder: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRANGLER_ADMIN_TOKEN", ENV_TOKEN)
    rec, seen = recorder
    config = tmp_path / "strangler.yaml"
    config.write_text(config_text(demo, rec.port))
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    s = demo.session
    async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server:
        # Nobody asked: the answers say nothing about who served them.
        plain = await gql(s, server.url)
        assert "extensions" not in plain and "errors" not in plain
        assert await served_by_header(s, server.url, "/api/titles/tt0000001/ratings") is None
        assert await served_by_header(s, server.url, "/api/titles/tt0000001") is None

        # A wrong token, or an empty one, is nobody.
        for wrong in ("guess", "", TOKEN[:-1]):
            headers = {"X-Strangler-Admin-Token": wrong}
            assert "extensions" not in await gql(s, server.url, headers=headers)
            assert await served_by_header(s, server.url, "/api/titles/tt0000001/ratings", headers) is None

        # An admin token (the file's, or STRANGLER_ADMIN_TOKEN's) is told, field by field.
        for token in (TOKEN, ENV_TOKEN):
            told = await gql(s, server.url, headers={"X-Strangler-Admin-Token": token})
            assert told["extensions"] == {"strangler": {"servedBy": SERVED_BY}}
            assert told["data"] == plain["data"]  # the same answer otherwise
        # REST: the upstream that served; a route's target, or legacy for everything else.
        assert await served_by_header(s, server.url, "/api/titles/tt0000001/ratings", ASK) == "ratings"
        assert await served_by_header(s, server.url, "/api/titles/tt0000001", ASK) == "monolith"

        # The token is read by the proxy, never passed on.
        assert await served_by_header(s, server.url, "/echo", ASK) == "recorder"
        assert seen and all(not k.lower().startswith("x-strangler-admin") for k in seen[-1])

        # Root fields from two backends, aliases: paths are the client's response keys.
        told = await gql(s, server.url, '{ a: title(id: "tt0000002") { r: rating { numVotes } } '
                                        'b: person(id: "nm0000001") { name } }', ASK)
        assert told["extensions"]["strangler"]["servedBy"] == {"a": "monolith", "a.r": "ratings", "b": "monolith"}


async def test_the_config_can_tell_everyone_and_a_reload_changes_it(demo: Demo, recorder: Any,
                                                                   tmp_path: Path) -> None:
    rec, _ = recorder
    config = tmp_path / "strangler.yaml"
    config.write_text(config_text(demo, rec.port, expose=True))
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    s = demo.session
    async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server:
        assert (await gql(s, server.url))["extensions"]["strangler"]["servedBy"] == SERVED_BY
        assert await served_by_header(s, server.url, "/api/titles/tt0000001/ratings") == "ratings"

        config.write_text(config_text(demo, rec.port, expose=False))
        assert (await server.reloader.reload_now(trigger="test"))["ok"]
        assert "extensions" not in await gql(s, server.url)
        assert await served_by_header(s, server.url, "/api/titles/tt0000001/ratings") is None
        assert await served_by_header(s, server.url, "/api/titles/tt0000001/ratings", ASK) == "ratings"


async def test_a_dead_backend_is_named_only_to_those_who_may_know(demo: Demo, recorder: Any,
                                                                 tmp_path: Path) -> None:
    rec, _ = recorder
    config = tmp_path / "strangler.yaml"
    config.write_text(config_text(demo, rec.port))
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server:
        await demo.servers["ratings"].close()
        anonymous = await gql(demo.session, server.url)
        [err] = anonymous["errors"]
        assert err["path"] == ["title", "rating"] and err["extensions"] == {"code": "SUBGRAPH_ERROR"}
        assert "ratings" not in err["message"] and "extensions" not in anonymous

        told = await gql(demo.session, server.url, headers=ASK)
        [err] = told["errors"]
        assert err["extensions"] == {"code": "SUBGRAPH_ERROR", "serviceName": "ratings"}
        assert told["extensions"]["strangler"]["servedBy"]["title.rating"] == "ratings"
