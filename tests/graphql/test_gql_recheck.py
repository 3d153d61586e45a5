"""Field shadows are rechecked like REST reads: a field that disagreed only because the shadow
backend's copy was behind is fetched again from both backends (the one that served it too) and
recorded as transient; a real divergence stays a mismatch; requests of one batch that saw the
same comparison share one recheck. Entity fields and root fields alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from gql_subgraphs import World, build_subgraph_schema, subgraph_app

from strangler_proxy.config import CompareConfig, load_config_text
from strangler_proxy.diff.comparator import DiffComparator
from strangler_proxy.diff.recheck import EXTRA_KEY, Rechecker
from strangler_proxy.diff.result import ShadowResult, Verdict
from strangler_proxy.graphql import GraphQLGateway

RECHECK_AFTER_S = 0.3

LEGACY_SDL = """
type Query { product(id: ID!): Product  topRating: Float }
type Product @key(fields: "id") { id: ID! name: String! rating: Float }
"""
RATINGS_SDL = """
extend type Query { topRating: Float }
type Product @key(fields: "id") { id: ID! rating: Float }
"""
FIELDS = """
    Product.rating: {target: ratings, mode: shadow}
    Query.topRating: {target: ratings, mode: shadow}
"""
QUERY = '{ product(id: "p1") { name rating } topRating }'


@dataclass
class Ratings:
    """The monolith's ratings (written now) and the service's copy, which is behind for the
    next ``stale_reads`` reads of it after a vote (the shadow's first look), then synced.
    Counted in reads, not seconds: a slow first request cannot let the copy catch up early."""

    legacy: dict[str, float] = field(default_factory=lambda: {"p1": 7.5, "p2": 6.0})
    copy: dict[str, float] = field(default_factory=lambda: {"p1": 7.5, "p2": 6.0})
    synced: bool = True  # False: the copy never follows (a real divergence)
    pending: dict[str, float] = field(default_factory=dict)
    stale_reads: int = 0

    def vote(self, pid: str, rating: float, *, stale_reads: int = 0) -> None:
        self.legacy[pid] = rating
        if self.synced:
            self.pending[pid] = rating
            self.stale_reads = stale_reads

    def read(self) -> dict[str, float]:
        """The copy as the service reads it now (one read)."""
        side = dict(self.copy)
        if self.pending:
            self.stale_reads -= 1
            if self.stale_reads <= 0:
                self.copy.update(self.pending)
                self.pending.clear()
        return side

    def top(self, side: dict[str, float]) -> float:
        return max(side.values())


@dataclass
class Gql:
    world: World  # logs what each backend was asked
    ratings: Ratings
    results: list[ShadowResult]
    gateway: GraphQLGateway
    rechecker: Rechecker

    def asked(self, backend: str, needle: str) -> int:
        return sum(1 for name, query in self.world.calls if name == backend and needle in query)

    async def drain(self) -> None:
        assert self.gateway.shadower is not None
        await self.gateway.shadower.drain()


@pytest.fixture
async def gql() -> AsyncIterator[Gql]:
    world, ratings = World(), Ratings()
    legacy = build_subgraph_schema(LEGACY_SDL, {
        "Query.product": lambda _o, _i, id: {"id": id, "name": f"Product {id}"},
        "Query.topRating": lambda _o, _i: ratings.top(ratings.legacy),
        "Product.rating": lambda p, _i: ratings.legacy.get(p["id"]),
        "Product@ref": lambda rep: {"id": rep["id"], "name": f"Product {rep['id']}"},
    })
    service = build_subgraph_schema(RATINGS_SDL, {
        "Query.topRating": lambda _o, _i: ratings.top(ratings.read()),
        "Product.rating": lambda p, _i: ratings.read().get(p["id"]),
        "Product@ref": lambda rep: {"id": rep["id"]},
    })
    servers = [TestServer(subgraph_app(name, schema, world), host="127.0.0.1")
               for name, schema in (("legacy", legacy), ("ratings", service))]
    for s in servers:
        await s.start_server()
    config = load_config_text(f"""
upstreams:
  legacy: {{url: "http://127.0.0.1:{servers[0].port}"}}
  ratings: {{url: "http://127.0.0.1:{servers[1].port}"}}
compare: {{recheck_after_s: {RECHECK_AFTER_S}}}
graphql:
  enabled: true
  backends:
    legacy: {{upstream: legacy}}
    ratings: {{upstream: ratings}}
  fields:
{FIELDS}""")
    results: list[ShadowResult] = []
    rechecker = Rechecker(results.append)
    async with aiohttp.ClientSession() as session:
        gateway = await GraphQLGateway.create(config, session, shadower_args={
            "comparator": DiffComparator(), "publish": results.append, "rechecker": rechecker,
            "rules_for": lambda name: config.compare_for(config.graphql.fields[name])
            if name in config.graphql.fields else CompareConfig(),
        })
        try:
            yield Gql(world, ratings, results, gateway, rechecker)
        finally:
            await rechecker.stop()
            for s in servers:
                await s.close()


def verdicts(g: Gql) -> dict[str, list[tuple[Verdict, Any]]]:
    out: dict[str, list[tuple[Verdict, Any]]] = {}
    for r in g.results:
        out.setdefault(r.key, []).append((r.verdict, r.extra.get(EXTRA_KEY)))
    return out


async def test_fields_read_right_after_a_write_are_transient(gql: Gql) -> None:
    gql.ratings.vote("p1", 9.0, stale_reads=2)  # the shadow's first look at both fields
    status, body = await gql.gateway.execute(QUERY)
    assert status == 200, body
    assert body["data"] == {"product": {"name": "Product p1", "rating": 9.0}, "topRating": 9.0}
    await asyncio.sleep(0.1)
    assert gql.results == []  # decided only once asked again
    await gql.drain()
    assert verdicts(gql) == {"graphql:Product.rating": [(Verdict.TRANSIENT, "transient")],
                             "graphql:Query.topRating": [(Verdict.TRANSIENT, "transient")]}
    # The backend that served each field was asked again (the entity through _entities), and the shadow backend.
    assert gql.asked("legacy", "_entities") == 1 and gql.asked("legacy", "topRating") == 2
    assert gql.asked("ratings", "_entities") == 2 and gql.asked("ratings", "topRating") == 2


async def test_a_real_divergence_stays_a_mismatch(gql: Gql) -> None:
    gql.ratings.synced = False
    gql.ratings.vote("p1", 9.0)
    await gql.gateway.execute(QUERY)
    await gql.drain()
    assert verdicts(gql) == {"graphql:Product.rating": [(Verdict.MISMATCH, "mismatch")],
                             "graphql:Query.topRating": [(Verdict.MISMATCH, "mismatch")]}
    [rating] = [r for r in gql.results if r.key == "graphql:Product.rating"]
    assert [(d.path, d.legacy, d.candidate) for d in rating.differences] == [("$", 9.0, 7.5)]


async def test_requests_that_saw_the_same_comparison_share_one_recheck(gql: Gql) -> None:
    assert gql.gateway.shadower is not None
    gql.gateway.shadower.batch_window_s = 600  # one batch, sent by drain()
    gql.ratings.vote("p2", 8.0, stale_reads=1)  # the batch's one look
    for _ in range(3):
        await gql.gateway.execute('{ product(id: "p2") { rating } }')
    await gql.drain()
    assert verdicts(gql) == {"graphql:Product.rating": [(Verdict.TRANSIENT, "transient")] * 3}
    assert gql.rechecker.outcomes == {"transient": 3}
    assert gql.asked("legacy", "_entities") == 1 and gql.asked("ratings", "_entities") == 2  # batch + one recheck
