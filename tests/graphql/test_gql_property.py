"""Property: for queries generated from the schema, gateway (fields extracted) == monolith."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import graphql
import pytest
from gql_corpus import normalise
from gql_demo import SERVICE_FIELDS, Demo, copy_databases, make_template, running_demo
from gql_shapes import both_shapes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from strangler_proxy.graphql import GraphQLGateway

ALL_FIELDS = tuple(f for fs in SERVICE_FIELDS.values() for f in fs)
TITLE_IDS = [f"tt{i:07d}" for i in (1, 2, 3, 5, 8, 13, 21, 34, 40, 99)]  # 99: unknown
PERSON_IDS = [f"nm{i:07d}" for i in (1, 2, 4, 9, 16, 999)]


@st.composite
def selection(draw: st.DrawFn, t: graphql.GraphQLObjectType, depth: int) -> str:
    names = draw(st.lists(st.sampled_from(sorted(t.fields)), min_size=1, max_size=4, unique=True))
    parts = []
    for n in names:
        ft = graphql.get_named_type(t.fields[n].type)
        head = draw(st.sampled_from([n, f"x_{n}: {n}"]))
        if graphql.is_leaf_type(ft):
            parts.append(head)
        elif depth <= 0:
            parts.append(f"{head} {{ __typename }}")
        else:
            parts.append(f"{head} {{ {draw(selection(ft, depth - 1))} }}")  # type: ignore[arg-type]
    body = " ".join(parts)
    if draw(st.integers(0, 3)) == 0:
        body = f"... on {t.name} {{ {body} }}"
    if draw(st.integers(0, 4)) == 0:
        body = "__typename " + body
    return body


@st.composite
def operation(draw: st.DrawFn, schema: graphql.GraphQLSchema) -> str:
    q = schema.query_type
    assert q is not None
    roots = []
    for i in range(draw(st.integers(1, 2))):
        root = draw(st.sampled_from(["title", "person", "search"]))
        t = graphql.get_named_type(q.fields[root].type)
        sel = draw(selection(t, draw(st.integers(1, 3))))  # type: ignore[arg-type]
        if root == "title":
            args = f'id: "{draw(st.sampled_from(TITLE_IDS))}"'
        elif root == "person":
            args = f'id: "{draw(st.sampled_from(PERSON_IDS))}"'
        else:
            args = f'q: "{draw(st.sampled_from(["the", "a", "on", "zz"]))}", limit: {draw(st.integers(1, 4))}'
        roots.append(f"r{i}: {root}({args}) {{ {sel} }}")
    return "{ " + " ".join(roots) + " }"


class _World:
    def __init__(self, loop: asyncio.AbstractEventLoop, demo: Demo, gateway: GraphQLGateway) -> None:
        self.loop, self.demo, self.gateway = loop, demo, gateway


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_World]:
    template = make_template(tmp_path_factory.mktemp("gql-prop-template"))
    dbs = copy_databases(template, tmp_path_factory.mktemp("gql-prop"))
    loop = asyncio.new_event_loop()
    stack = AsyncExitStack()
    try:
        demo = loop.run_until_complete(stack.enter_async_context(running_demo(dbs)))
        gw = loop.run_until_complete(GraphQLGateway.create(demo.config(ALL_FIELDS), demo.session))
        yield _World(loop, demo, gw)
    finally:
        loop.run_until_complete(stack.aclose())
        loop.close()


async def _both(w: _World, query: str) -> tuple[Any, Any]:
    _, got = await w.gateway.execute(query)
    return got, await w.demo.monolith(query)


def test_generated_queries_answer_like_the_monolith(world: _World) -> None:
    schema = world.gateway.composed.schema

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(operation(schema))
    def check(query: str) -> None:
        got, expected = world.loop.run_until_complete(_both(world, query))
        assert normalise(got) == normalise(expected), query
        compiled, core = world.loop.run_until_complete(both_shapes(world.gateway, query))
        assert compiled is None or compiled == core, query  # the fast path is exact, key order included

    check()
