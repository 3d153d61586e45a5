"""Starting the gateway when a backend is not there yet: it waits (graphql.sdl_wait_s), then refuses clearly."""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from gql_stack import Stack, stack  # noqa: F401  (fixture)
from gql_subgraphs import reviews_app

from strangler_proxy.config import StranglerConfig, load_config_text
from strangler_proxy.errors import GraphQLGatewayError
from strangler_proxy.graphql import GraphQLGateway


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(products_port: int, reviews_port: int, wait_s: float) -> StranglerConfig:
    return load_config_text(f"""
upstreams:
  legacy: {{url: "http://127.0.0.1:{products_port}"}}
  reviews: {{url: "http://127.0.0.1:{reviews_port}"}}
graphql:
  enabled: true
  sdl_wait_s: {wait_s}
  backends: {{legacy: {{upstream: legacy}}, reviews: {{upstream: reviews}}}}
  fields: {{}}
""")


async def test_a_backend_that_starts_late_is_waited_for(stack: Stack) -> None:
    port = free_port()
    late = TestServer(reviews_app(stack.world), host="127.0.0.1", port=port)
    async with aiohttp.ClientSession() as session:
        creating = asyncio.create_task(GraphQLGateway.create(config(stack.products.port, port, 10), session))
        await asyncio.sleep(0.6)
        assert not creating.done()  # still asking
        await late.start_server()
        try:
            gw = await asyncio.wait_for(creating, 5)
            status, body = await gw.execute('{ product(id: "p1") { name topReview { id } } }')
            assert status == 200 and body["data"]["product"]["name"] == "Product 1"
        finally:
            await late.close()


async def test_a_backend_that_never_answers_stops_the_start_with_the_way_out(stack: Stack) -> None:
    dead = free_port()
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(GraphQLGatewayError) as err:
            await GraphQLGateway.create(config(stack.products.port, dead, 0.5), session)
    assert time.monotonic() - started < 3
    message = str(err.value)
    assert "'reviews'" in message and "sdl_file" in message and "waited 0.5s" in message
