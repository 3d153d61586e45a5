"""Fixtures (imported by the test modules; no conftest.py here, because a package named
``graphql`` would shadow graphql-core): the two test subgraphs and a gateway in front."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from gql_subgraphs import World, products_app, reviews_app

from strangler_proxy.config import CompareConfig, StranglerConfig, load_config_text
from strangler_proxy.diff.result import ShadowResult
from strangler_proxy.graphql import GraphQLGateway


@dataclass
class Results:
    """Collects every published shadow result."""

    items: list[ShadowResult] = field(default_factory=list)

    def publish(self, r: ShadowResult) -> None:
        self.items.append(r)


@dataclass
class Stack:
    world: World
    products: TestServer
    reviews: TestServer
    session: aiohttp.ClientSession
    results: Results

    def config(self, fields: str = "", settings: str = "", top: str = "") -> StranglerConfig:
        """``fields``: lines under ``graphql.fields``; ``settings``: more lines under ``graphql``;
        ``top``: more top-level lines (``shadow:``, ``compare:``...)."""
        return load_config_text(f"""
{top}
upstreams:
  legacy: {{url: "http://127.0.0.1:{self.products.port}"}}
  reviews: {{url: "http://127.0.0.1:{self.reviews.port}"}}
graphql:
  enabled: true
  backends:
    legacy: {{upstream: legacy}}
    reviews: {{upstream: reviews}}
{settings}
  fields:
{fields or "    {}"}
""".replace("  fields:\n    {}", "  fields: {}"))

    async def gateway(self, fields: str = "", comparator: Any = None, settings: str = "",
                      top: str = "") -> GraphQLGateway:
        from strangler_proxy.diff.comparator import DiffComparator

        cfg = self.config(fields, settings, top)
        args = {"comparator": comparator or DiffComparator(), "publish": self.results.publish,
                "rules_for": lambda name: cfg.compare_for(cfg.graphql.fields[name]) if name in cfg.graphql.fields
                else CompareConfig()}
        return await GraphQLGateway.create(cfg, self.session, shadower_args=args)


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    world = World.demo()
    products = TestServer(products_app(world), host="127.0.0.1")
    reviews = TestServer(reviews_app(world), host="127.0.0.1")
    await products.start_server()
    await reviews.start_server()
    session = aiohttp.ClientSession()
    try:
        yield Stack(world, products, reviews, session, Results())
    finally:
        await session.close()
        await products.close()
        await reviews.close()


GatewayFactory = Callable[[str], Awaitable[GraphQLGateway]]
