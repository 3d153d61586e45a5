"""GraphQL in cells, through the real proxy: a request's key picks its cell; every field is
fetched from that cell's backends, in that cell's mode; results are named per cell.

Each cell is its own pair of loopback subgraphs (gql_subgraphs.py) over a world of its own,
whose product names say which cell they are in and whose call logs say who was asked.
"""

from __future__ import annotations

import asyncio
import doctest
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import graphql
import pytest
from aiohttp.test_utils import TestServer
from gql_subgraphs import World, products_app, reviews_app

from strangler_proxy.config import Mode
from strangler_proxy.diff.result import ShadowResult, Verdict
from strangler_proxy.graphql import ownership, planner
from strangler_proxy.graphql.planner import operation_of, root_argument_values
from strangler_proxy.routing.cells import CellTable
from strangler_proxy.server import ProxyServer

CELLS = ("c1", "c2", "c3")
PINS = "{t1: c1, t2: c2, t3: c3, p1: c1, p2: c2, p3: c3}"
QUERY = '{ product(id: "p2") { name rating } }'


@dataclass
class Cell:
    world: World
    products: TestServer
    reviews: TestServer

    def asked(self) -> list[str]:
        """Which of this cell's backends were asked, in order."""
        return [backend for backend, _ in self.world.calls]


class Collector:
    def __init__(self) -> None:
        self.results: list[ShadowResult] = []

    def observe(self, result: ShadowResult) -> None:
        self.results.append(result)


@pytest.fixture
async def cells() -> AsyncIterator[dict[str, Cell]]:
    out: dict[str, Cell] = {}
    try:
        for name in CELLS:
            world = World.demo()
            for p in world.products.values():
                p["name"] = f"{p['name']} @{name}"
            cell = Cell(world, TestServer(products_app(world), host="127.0.0.1"),
                        TestServer(reviews_app(world), host="127.0.0.1"))
            await cell.products.start_server()
            await cell.reviews.start_server()
            out[name] = cell
        yield out
    finally:
        for cell in out.values():
            await cell.products.close()
            await cell.reviews.close()


@asynccontextmanager
async def proxy(tmp_path: Path, cells: dict[str, Cell], *, mode: str = "legacy", key: str = "header:X-Tenant",
                unkeyed: str = "refuse", field_extra: str = "") -> AsyncIterator[ProxyServer]:
    listed = "\n".join(
        f'    - {{name: {n}, upstreams: {{legacy: "http://127.0.0.1:{c.products.port}", '
        f'reviews: "http://127.0.0.1:{c.reviews.port}"}}}}' for n, c in cells.items())
    config = tmp_path / "strangler.yaml"
    config.write_text(f"""
proxy: {{default_upstream: legacy, state_poll_interval_s: 0.1}}
upstreams: {{legacy: {{timeout_s: 2}}, reviews: {{timeout_s: 2}}}}
graphql:
  enabled: true
  backends: {{legacy: {{upstream: legacy}}, reviews: {{upstream: reviews}}}}
  fields:
    Product.rating: {{target: reviews, mode: {mode}{field_extra}}}
cells:
  partition_key: {key}
  unkeyed: {unkeyed}
  pins: {PINS}
  cells:
{listed}
""")
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    async with ProxyServer(config, port=0, admin_port=0, state_url=state, watch=False) as server:
        for cell in cells.values():
            cell.world.calls.clear()  # the SDL fetches at start (from the first cell)
        yield server


async def ask(server: ProxyServer, query: str = QUERY, *, tenant: str | None = None,
              variables: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"X-Tenant": tenant} if tenant is not None else {}
    async with aiohttp.ClientSession() as session, session.post(
            f"{server.url}/graphql", json={"query": query, "variables": variables or {}}, headers=headers) as resp:
        return resp.status, await resp.json()


def table(server: ProxyServer) -> CellTable:
    cells = server.runtime.snapshot.cells
    assert cells is not None
    return cells


def calls(cells: dict[str, Cell]) -> dict[str, list[str]]:
    return {name: cell.asked() for name, cell in cells.items() if cell.asked()}


def clear(cells: dict[str, Cell]) -> None:
    for cell in cells.values():
        cell.world.calls.clear()


async def wait_for(predicate: Any, timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_key_picks_the_cell_and_every_field_comes_from_its_backends(
        tmp_path: Path, cells: dict[str, Cell], caplog: pytest.LogCaptureFixture) -> None:
    async with proxy(tmp_path, cells, mode="extracted") as server:
        placed = table(server)
        tenants = [f"tenant-{i}" for i in range(12)] + ["t1", "t2", "t3"]
        seen = set()
        with caplog.at_level(logging.INFO, logger="strangler.access"):
            for tenant in tenants:
                cell = placed.cell_of(tenant)
                seen.add(cell)
                clear(cells)
                status, body = await ask(server, tenant=tenant)
                assert status == 200, body
                world = cells[cell].world
                assert body == {"data": {"product": {"name": f"Product 2 @{cell}", "rating": world.rating("p2")}}}
                # the name from the cell's monolith, the rating from the cell's service; no other cell asked
                assert calls(cells) == {cell: ["products", "reviews"]}
        assert seen == set(CELLS)
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "strangler.access"]
        assert [line["cell"] for line in lines] == [placed.cell_of(t) for t in tenants]
        assert {line["route"] for line in lines} == {"graphql"}
        for cell in CELLS:
            n = sum(1 for t in tenants if placed.cell_of(t) == cell)
            assert server.runtime.registry.get_sample_value("strangler_proxy_requests_total", {
                "route": "graphql", "mode": "gateway", "upstream": "graphql", "status": "200", "cell": cell}) == n


async def test_the_served_cell_is_never_shown_to_the_client_nor_taken_from_it(
        tmp_path: Path, cells: dict[str, Cell], caplog: pytest.LogCaptureFixture) -> None:
    """The gateway's loopback server names the cell that served in an X-Strangler-Cell header the
    data plane reads and strips; a client sending that header changes neither the cell nor the log."""
    async with proxy(tmp_path, cells, mode="extracted") as server:
        cell = table(server).cell_of("t1")
        other = next(c for c in CELLS if c != cell)
        with caplog.at_level(logging.INFO, logger="strangler.access"):
            async with aiohttp.ClientSession() as session, session.post(
                    f"{server.url}/graphql", json={"query": QUERY},
                    headers={"X-Tenant": "t1", "X-Strangler-Cell": other}) as resp:
                assert resp.status == 200
                assert "X-Strangler-Cell" not in resp.headers
                assert (await resp.json())["data"]["product"]["name"] == f"Product 2 @{cell}"
        assert calls(cells) == {cell: ["products", "reviews"]}
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "strangler.access"]
        assert [line["cell"] for line in lines] == [cell]


async def test_a_per_cell_flip_changes_only_that_cells_keys(tmp_path: Path, cells: dict[str, Cell]) -> None:
    async with proxy(tmp_path, cells, mode="legacy") as server:
        await server.flips.flip("Product.rating@c2", Mode.EXTRACTED, who="test", reason="c2 goes first")
        assert server.flips.field_state("Product.rating@c2").mode is Mode.EXTRACTED  # type: ignore[union-attr]
        assert server.flips.field_state("Product.rating@c1").mode is Mode.LEGACY  # type: ignore[union-attr]
        assert server.flips.field_state("Product.rating").mode is Mode.LEGACY  # type: ignore[union-attr]
        placed = table(server)
        for tenant in [f"tenant-{i}" for i in range(12)] + ["t1", "t2", "t3"]:
            cell = placed.cell_of(tenant)
            clear(cells)
            status, body = await ask(server, tenant=tenant)
            assert status == 200 and body["data"]["product"]["rating"] == cells[cell].world.rating("p2")
            # c2's keys: the rating from c2's service; every other cell's monolith answers it all
            assert calls(cells) == {cell: ["products", "reviews"] if cell == "c2" else ["products"]}
        entry = (await server.flips.audit(limit=1))[0]
        assert (entry.name, entry.to_mode) == ("Product.rating@c2", "extracted")


async def test_an_argument_of_the_root_fields_is_the_key(tmp_path: Path, cells: dict[str, Cell]) -> None:
    async with proxy(tmp_path, cells, key="arg:id", mode="extracted") as server:
        status, body = await ask(server, '{ product(id: "p1") { name } }')
        assert (status, body["data"]["product"]["name"]) == (200, "Product 1 @c1")
        assert calls(cells) == {"c1": ["products"]}
        clear(cells)
        # from a variable, and a header is no key here
        status, body = await ask(server, "query($id: ID!) { product(id: $id) { name rating } }", tenant="t1",
                                 variables={"id": "p3"})
        assert (status, body["data"]["product"]["name"]) == (200, "Product 3 @c3")
        assert calls(cells) == {"c3": ["products", "reviews"]}
        clear(cells)
        # the same key twice is one cell
        status, body = await ask(server, '{ a: product(id: "p2") { name } b: product(id: "p2") { price } }')
        assert (status, body["data"]["a"]["name"]) == (200, "Product 2 @c2")
        clear(cells)
        # a hashed key: the cell the table says
        key = "p7"
        status, body = await ask(server, f'{{ product(id: "{key}") {{ name }} }}')
        assert body["data"]["product"]["name"] == f"Product 7 @{table(server).cell_of(key)}"
        clear(cells)

        # two keys in one request: refused, nothing fetched
        status, body = await ask(server, '{ a: product(id: "p1") { name } b: product(id: "p2") { name } }')
        assert status == 400
        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_REQUEST"
        assert "different partition keys (arg:id: 'p1', 'p2')" in error["message"]
        # no key at all (unkeyed: refuse)
        status, body = await ask(server, "{ products(first: 1) { name } }")
        assert status == 400 and "no partition key (arg:id)" in body["errors"][0]["message"]
        assert calls(cells) == {}
        # not GraphQL: the parse error, as without cells
        status, body = await ask(server, "{ product(id: ")
        assert status == 400 and body["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


async def test_a_request_without_a_key_is_refused_or_goes_to_the_unkeyed_cell(
        tmp_path: Path, cells: dict[str, Cell]) -> None:
    async with proxy(tmp_path, cells) as server:
        status, body = await ask(server)
        assert status == 400
        [error] = body["errors"]
        assert error["extensions"]["code"] == "BAD_REQUEST"
        assert error["message"] == ("the request has no partition key (header:X-Tenant): every request must name "
                                    "its cell's key")
        assert calls(cells) == {}
        assert server.runtime.registry.get_sample_value("strangler_proxy_requests_total", {
            "route": "graphql", "mode": "gateway", "upstream": "graphql", "status": "400", "cell": ""}) == 1
        # a cell the gateway did not start with (a reload added it): a clear 503, nothing fetched
        assert server.graphql is not None
        status, body = await server.graphql.execute(QUERY, cell="c9")
        assert (status, body["errors"][0]["extensions"]["code"]) == (503, "CELL_NOT_SERVED")
        assert calls(cells) == {}
    async with proxy(tmp_path, cells, unkeyed="c3") as server:
        for tenant in (None, ""):
            status, body = await ask(server, tenant=tenant)
            assert (status, body["data"]["product"]["name"]) == (200, "Product 2 @c3")
        assert calls(cells) == {"c3": ["products", "products"]}


async def test_field_shadows_and_served_records_are_named_per_cell(tmp_path: Path, cells: dict[str, Cell]) -> None:
    cells["c2"].world.reviews_rating_skew = 1.0  # c2's service disagrees; c1's and c3's agree
    async with proxy(tmp_path, cells, mode="shadow") as server:
        collector = Collector()
        server.shadow.add_listener(collector)
        for tenant in ("t1", "t2", "t3"):
            status, body = await ask(server, tenant=tenant)
            cell = table(server).cell_of(tenant)
            assert status == 200 and body["data"]["product"]["rating"] == cells[cell].world.rating("p2")
        await wait_for(lambda: len(collector.results) >= 3)
        assert {(r.key, r.verdict) for r in collector.results} == {
            ("graphql:Product.rating@c1", Verdict.MATCH), ("graphql:Product.rating@c2", Verdict.MISMATCH),
            ("graphql:Product.rating@c3", Verdict.MATCH)}
        # each shadow went to its own cell's service; so did c2's recheck of its mismatch (both sides again)
        asked = calls(cells)
        assert asked["c1"] == asked["c3"] == ["products", "reviews"]
        assert sorted(asked["c2"]) == ["products", "products", "reviews", "reviews"]

        collector.results.clear()
        await server.flips.flip("Product.rating@c3", Mode.EXTRACTED, who="test", reason="c3 serves it")
        assert (await ask(server, tenant="t3"))[0] == 200
        await wait_for(lambda: len(collector.results) >= 1)
        assert [(r.key, r.verdict) for r in collector.results] == [("graphql:Product.rating@c3", Verdict.SERVED)]


async def test_a_failing_service_in_one_cell_rolls_back_that_cell_only(tmp_path: Path, cells: dict[str, Cell]) -> None:
    async with proxy(tmp_path, cells, mode="extracted", field_extra=", guardrails: {min_samples: 10, window: 20}"
                     ) as server:
        await cells["c2"].reviews.close()  # c2's service dies
        sent = 0
        while server.flips.state("Product.rating@c2").mode is Mode.EXTRACTED:  # type: ignore[union-attr]
            status, body = await ask(server, tenant="t2")
            assert status == 200 and body["data"]["product"]["name"] == "Product 2 @c2"
            sent += 1
            assert sent <= 40, "no rollback"
            await asyncio.sleep(0.01)
        assert server.flips.state("Product.rating@c2").mode is Mode.SHADOW  # type: ignore[union-attr]
        assert server.flips.state("Product.rating").mode is Mode.EXTRACTED  # type: ignore[union-attr]
        entry = (await server.flips.audit(limit=1))[0]
        assert (entry.name, entry.who, entry.kind) == ("Product.rating@c2", "guardrails", "rollback")
        # c2's monolith answers its keys again; c1's service still serves c1's
        clear(cells)
        status, body = await ask(server, tenant="t2")
        assert status == 200 and body["data"]["product"]["rating"] == cells["c2"].world.rating("p2")
        assert "errors" not in body
        assert (await ask(server, tenant="t1"))[0] == 200
        assert cells["c1"].asked() == ["products", "reviews"]


def test_the_root_fields_arguments_are_read_through_fragments_and_variables() -> None:
    doc = graphql.parse("""
        query Q($a: ID, $b: ID = "p9") { ...Roots ... on Query { c: product(id: $b) { id } } x: product(id: $a) { id } }
        fragment Roots on Query { product(id: "p1") { id } user(id: "u1") { id } products { id } }
    """)
    op = operation_of(doc, "Q")
    assert root_argument_values(doc, op, "id", {"a": None}) == {"p1", "u1", "p9"}
    assert root_argument_values(doc, op, "id", {"a": "p1", "b": "p1"}) == {"p1", "u1"}
    assert root_argument_values(doc, op, "first", {}) == set()


@pytest.mark.parametrize("module", [ownership, planner], ids=lambda m: m.__name__)
def test_docstring_examples(module: Any) -> None:
    failed, attempted = doctest.testmod(module)
    assert attempted > 0 and failed == 0
