"""The gateway's metrics: backend fetches by backend and path, failures, shadows; on the proxy's registry."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from gql_stack import Stack, stack  # noqa: F401  (fixture)

from strangler_proxy.graphql import GraphQLGateway
from strangler_proxy.server import ProxyServer


def sample(gw: GraphQLGateway, name: str, **labels: str) -> float:
    return gw.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_fetches_shadows_and_failures_are_counted_per_backend(stack: Stack) -> None:
    gw = await stack.gateway("    Product.rating: {target: reviews, mode: shadow}")
    assert gw.shadower is not None
    gw.shadower.batch_window_s = 600  # the three shadows wait for drain(): one batch
    for _ in range(3):
        status, body = await gw.execute('{ product(id: "p2") { name rating } }')
        assert status == 200 and "errors" not in body
    assert gw.shadower is not None
    await gw.shadower.drain()
    count = "strangler_graphql_backend_fetch_seconds_count"
    assert sample(gw, count, backend="legacy", path="served") == 3  # rating is served by legacy...
    assert sample(gw, count, backend="reviews", path="served") == 0
    assert sample(gw, count, backend="reviews", path="shadow") == 1  # ...and mirrored to reviews, one batch
    assert sample(gw, "strangler_graphql_shadows_total", field="Product.rating", outcome="completed") == 3
    await stack.reviews.close()
    await gw.execute('{ product(id: "p2") { name rating } }')
    await gw.shadower.drain()
    assert sample(gw, "strangler_graphql_backend_fetch_errors_total", backend="reviews", path="shadow",
                  reason="connection") == 1
    assert sample(gw, "strangler_graphql_backend_fetch_errors_total", backend="legacy", path="served",
                  reason="connection") == 0


async def test_the_proxy_registers_them_on_its_own_registry(stack: Stack, tmp_path: Path) -> None:
    config = tmp_path / "strangler.yaml"
    config.write_text(f"""
proxy: {{default_upstream: legacy}}
upstreams:
  legacy: {{url: "http://127.0.0.1:{stack.products.port}"}}
  reviews: {{url: "http://127.0.0.1:{stack.reviews.port}"}}
graphql:
  enabled: true
  backends: {{legacy: {{upstream: legacy}}, reviews: {{upstream: reviews}}}}
  fields:
    Product.rating: {{target: reviews, mode: extracted}}
""")
    state = f"sqlite+aiosqlite:///{tmp_path / 'control.sqlite3'}"
    async with ProxyServer(config, port=0, admin_port=0, host="127.0.0.1", state_url=state, watch=False) as server, \
            aiohttp.ClientSession() as s:
        async with s.post(f"{server.url}/graphql", json={"query": '{ product(id: "p1") { name rating } }'}) as r:
            assert r.status == 200 and "errors" not in await r.json()
        registry = server.runtime.registry
        assert registry.get_sample_value("strangler_graphql_backend_fetch_seconds_count",
                                         {"backend": "reviews", "path": "served"}) == 1
        assert registry.get_sample_value("strangler_graphql_shaped_total", {"how": "compiled"}) == 1
