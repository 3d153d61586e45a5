"""Cells in the data plane: each key is served by its cell's copy of the stack, with its cell's modes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from strangler_proxy.config import Mode, load_config_text
from strangler_proxy.routing.router import RouteState
from tests.conftest import LoopbackHandler
from tests.dataplane.conftest import Proxy, start_test_proxy, stop_test_proxy

CatchAll = Callable[[LoopbackHandler], Awaitable[int]]


def answering(name: str) -> LoopbackHandler:
    async def handle(request: web.Request) -> web.Response:
        return web.json_response({"rating": 7}, headers={"X-Who": name})

    return handle


async def cell_proxy(catch_all: CatchAll, cells: int, *, unkeyed: str = "refuse", pins: str = "{}") -> Proxy:
    listed = ""
    for i in range(1, cells + 1):
        legacy = await catch_all(answering(f"legacy-c{i}"))
        ratings = await catch_all(answering(f"ratings-c{i}"))
        listed += (f'    - {{name: c{i}, upstreams: {{legacy: "http://127.0.0.1:{legacy}", '
                   f'ratings: "http://127.0.0.1:{ratings}"}}}}\n')
    return await start_test_proxy(load_config_text(f"""
upstreams: {{legacy: {{timeout_s: 2}}, ratings: {{timeout_s: 2}}}}
routes: [{{name: ratings, path: "/api/titles/{{id}}/ratings", target: ratings, mode: legacy}}]
cells:
  partition_key: header:X-Tenant
  unkeyed: {unkeyed}
  pins: {pins}
  cells:
{listed}"""))


async def who(session: aiohttp.ClientSession, port: int, tenant: str | None, path: str = "/api/titles/tt1/ratings"
              ) -> tuple[int, str | None]:
    headers = {"X-Tenant": tenant} if tenant is not None else {}
    async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Who")


async def test_each_key_is_served_by_its_cell(catch_all: CatchAll) -> None:
    proxy = await cell_proxy(catch_all, 3, pins="{acme: c2}")
    try:
        cells = proxy.runtime.snapshot.cells
        assert cells is not None
        async with aiohttp.ClientSession() as session:
            for tenant in [f"t{i}" for i in range(30)] + ["acme"]:
                status, served_by = await who(session, proxy.port, tenant)
                assert (status, served_by) == (200, f"legacy-{cells.cell_of(tenant)}")
                # unrouted paths go to the cell's default upstream too
                assert (await who(session, proxy.port, tenant, "/other"))[1] == f"legacy-{cells.cell_of(tenant)}"
            assert (await who(session, proxy.port, "acme"))[1] == "legacy-c2"
    finally:
        await stop_test_proxy(proxy)


async def test_a_request_without_a_key_is_refused_or_sent_to_the_unkeyed_cell(catch_all: CatchAll) -> None:
    refusing = await cell_proxy(catch_all, 2)
    taking = await cell_proxy(catch_all, 2, unkeyed="c2")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{refusing.port}/api/titles/tt1/ratings") as resp:
                assert resp.status == 400
                assert resp.content_type == "application/problem+json"
                assert "header:X-Tenant" in (await resp.json())["detail"]
            assert await who(session, taking.port, None) == (200, "legacy-c2")
            assert await who(session, taking.port, "") == (200, "legacy-c2")
    finally:
        await stop_test_proxy(refusing)
        await stop_test_proxy(taking)


async def test_a_per_cell_mode_changes_only_that_cell(catch_all: CatchAll) -> None:
    proxy = await cell_proxy(catch_all, 3)
    try:
        cells = proxy.runtime.snapshot.cells
        assert cells is not None
        proxy.runtime.apply(overrides={"ratings@c2": RouteState(Mode.EXTRACTED, 0.0)})
        async with aiohttp.ClientSession() as session:
            for tenant in [f"t{i}" for i in range(40)]:
                cell = cells.cell_of(tenant)
                side = "ratings" if cell == "c2" else "legacy"
                assert (await who(session, proxy.port, tenant))[1] == f"{side}-{cell}"
        reg = proxy.runtime.registry
        assert reg.get_sample_value("strangler_proxy_requests_total", {
            "route": "ratings", "mode": "extracted", "upstream": "ratings@c2", "status": "200", "cell": "c2"}) > 0
    finally:
        await stop_test_proxy(proxy)


async def test_shadow_results_are_named_per_cell(catch_all: CatchAll) -> None:
    proxy = await cell_proxy(catch_all, 2)
    try:
        proxy.runtime.apply(overrides={"ratings": RouteState(Mode.SHADOW, 0.0)})
        cells = proxy.runtime.snapshot.cells
        assert cells is not None
        async with aiohttp.ClientSession() as session:
            for tenant in ("t1", "t2", "t3", "t4"):
                await who(session, proxy.port, tenant)
        await proxy.shadow.drain()
        keys = sorted(r.key for r in proxy.results.results)
        assert keys == sorted(f"ratings@{cells.cell_of(t)}" for t in ("t1", "t2", "t3", "t4"))
    finally:
        await stop_test_proxy(proxy)


@pytest.mark.parametrize("bad", ["ratings@c9", "nope@c1"])
def test_a_per_cell_override_for_an_unknown_cell_or_route_is_refused(bad: str) -> None:
    from strangler_proxy.dataplane.runtime import ProxyRuntime
    from strangler_proxy.errors import FlipError

    config = load_config_text("""
upstreams: {legacy: {}, ratings: {}}
routes: [{name: ratings, path: "/r/{id}", target: ratings}]
cells: {partition_key: "header:T", cells: [{name: c1, upstreams: {legacy: "http://127.0.0.1:1", ratings: "http://127.0.0.1:2"}}]}
""")
    runtime = ProxyRuntime(config)
    with pytest.raises(FlipError):
        runtime.apply(overrides={bad: RouteState(Mode.SHADOW, 0.0)})
    assert runtime.snapshot.tables.by_cell == {}
