"""Learned noise through the running proxy: legacy asked twice, its volatile field
learned, and only the real difference counted -- with no manual rule at all."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from strangler_proxy.diff.result import ShadowResult, Verdict
from strangler_proxy.server import ProxyServer


def catalogue(average: float) -> web.Application:
    """A title endpoint with a per-answer nonce (volatile) and an average."""

    async def title(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info["id"], "nonce": uuid.uuid4().hex, "average": average})

    app = web.Application()
    app.router.add_get("/api/titles/{id}", title)
    return app


@pytest.fixture
async def servers() -> AsyncIterator[tuple[int, int, int]]:
    started = [TestServer(catalogue(avg), host="127.0.0.1", port=0) for avg in (7.25, 7.25, 7.3)]
    for s in started:
        await s.start_server()
    yield tuple(s.port for s in started)  # type: ignore[misc]
    for s in started:
        await s.close()


class Collector:
    def __init__(self) -> None:
        self.results: list[ShadowResult] = []

    def observe(self, result: ShadowResult) -> None:
        self.results.append(result)


async def test_legacy_volatility_is_learned_and_only_real_differences_count(
    servers: tuple[int, int, int], tmp_path: Path
) -> None:
    legacy, same, rounded = servers
    config = tmp_path / "strangler.yaml"
    config.write_text(f"""
upstreams:
  legacy: {{url: "http://127.0.0.1:{legacy}"}}
  same: {{url: "http://127.0.0.1:{same}"}}
  rounded: {{url: "http://127.0.0.1:{rounded}"}}
compare:
  noise_sample_rate: 1.0
routes:
  - {{name: agrees, path: "/api/titles/{{id}}", headers: {{X-Case: agrees}}, target: same, mode: shadow}}
  - {{name: differs, path: "/api/titles/{{id}}", headers: {{X-Case: differs}}, target: rounded, mode: shadow}}
""")
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server, \
            aiohttp.ClientSession() as http:
        collector = Collector()
        server.shadow.add_listener(collector)
        for case in ("agrees", "differs"):
            for i in range(3):
                async with http.get(f"{server.url}/api/titles/tt{i}", headers={"X-Case": case}) as resp:
                    assert resp.status == 200
        await server.shadow.drain()
        await asyncio.sleep(0)

    by_route: dict[str, list[ShadowResult]] = {}
    for r in collector.results:
        by_route.setdefault(r.key, []).append(r)
    assert [r.verdict for r in by_route["agrees"]] == [Verdict.MATCH] * 3
    assert all({d.path for d in r.noise} == {"$.nonce"} for r in by_route["agrees"])
    assert [r.verdict for r in by_route["differs"]] == [Verdict.MISMATCH] * 3
    for r in by_route["differs"]:
        assert [(d.path, d.legacy, d.candidate) for d in r.differences] == [("$.average", 7.25, 7.3)]
        assert {d.path for d in r.noise} == {"$.nonce"}
        assert r.extra.get("noise_sources") == ["learned"]
