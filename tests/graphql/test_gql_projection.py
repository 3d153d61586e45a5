"""The compiled response shape gives graphql-core's answer byte for byte, or steps aside."""

from __future__ import annotations

from typing import Any

import pytest
from gql_shapes import both_shapes
from gql_stack import Stack, stack  # noqa: F401  (fixture)
from test_gql_gateway import EXTRACTED, NESTED

from strangler_proxy.graphql import GraphQLGateway

# (query, variables, does the compiled shape answer it?)
CLEAN: list[tuple[str, dict[str, Any]]] = [
    (NESTED, {"id": "p2", "withTags": True}),
    (NESTED, {"id": "p2", "withTags": False}),
    ('{ search(q: "2") { __typename ... on Product { name rating } ... on User { name reviews { id } } } }', {}),
    ('{ search(q: "1") { ... on User { id } ...P } } fragment P on Product { id name }', {}),
    ('{ a: product(id: "p1") { n: name name price } a: product(id: "p1") { price id } }', {}),
    ('{ __typename product(id: "p3") { __typename ... { id } ... on Product @skip(if: true) { name } } }', {}),
    ('query($s: Boolean = true) { product(id: "p1") { id name @skip(if: $s) tags @include(if: $s) } }', {}),
    ('{ products(first: 5) { id kind tags category { id name } reviews { stars author { name } } } }', {}),
    ('{ product(id: "nope") { id } }', {}),  # a null where null is allowed
]
# Answers that need graphql-core: backend errors, null propagation, introspection.
DEFERRED: list[str] = [
    '{ failing products(first: 4) { id secret } }',
    '{ strictProduct(id: "zz") { id } }',
    '{ __schema { queryType { name } } product(id: "p1") { id } }',
    '{ __type(name: "Product") { name } }',
]


@pytest.mark.parametrize("fields", ["", EXTRACTED])
async def test_clean_answers_are_projected_exactly_like_graphql_core(stack: Stack, fields: str) -> None:
    gw = await stack.gateway(fields)
    for query, variables in CLEAN:
        compiled, core = await both_shapes(gw, query, variables)
        assert compiled is not None, query
        assert compiled == core, query  # bytes: values, key order and aliases


@pytest.mark.parametrize("query", DEFERRED)
async def test_errors_nulls_and_introspection_defer_to_graphql_core(stack: Stack, query: str) -> None:
    gw = await stack.gateway(EXTRACTED)
    compiled, core = await both_shapes(gw, query)
    assert compiled is None, core


async def test_the_gateway_uses_the_compiled_shape_and_can_turn_it_off(stack: Stack) -> None:
    gw = await stack.gateway(EXTRACTED)
    for _ in range(3):
        status, body = await gw.execute(NESTED, {"id": "p2", "withTags": True})
        assert status == 200 and "errors" not in body
    await gw.execute('{ failing }')
    assert shaped(gw, "compiled") == 3 and shaped(gw, "graphql-core") == 1
    gw.compiled_shapes = False
    _, again = await gw.execute(NESTED, {"id": "p2", "withTags": True})
    assert again == body and shaped(gw, "graphql-core") == 2


def shaped(gw: GraphQLGateway, how: str) -> float:
    return gw.metrics.registry.get_sample_value("strangler_graphql_shaped_total", {"how": how}) or 0.0
