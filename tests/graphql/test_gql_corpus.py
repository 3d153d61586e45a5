"""The corpus through the gateway equals the monolith's own /graphql, before and after extraction."""

from __future__ import annotations

from typing import Any

import pytest
from gql_corpus import CORPUS, normalise
from gql_demo import SERVICE_FIELDS, Demo, demo, demo_template  # noqa: F401  (fixtures)
from gql_shapes import both_shapes

from strangler_proxy.graphql import GraphQLGateway

ALL_FIELDS = tuple(f for fs in SERVICE_FIELDS.values() for f in fs)
CONFIGS = {
    "all-legacy": (),
    **{f"{s}-extracted": fs for s, fs in SERVICE_FIELDS.items()},
    "all-extracted": ALL_FIELDS,
}


def _split(variables: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    v = dict(variables)
    return v, v.pop("__operationName", None)


async def _monolith(demo: Demo, query: str, variables: dict[str, Any], op: str | None) -> Any:
    async with demo.session.post(f"http://127.0.0.1:{demo.ports['monolith']}/graphql",
                                 json={"query": query, "variables": variables, "operationName": op}) as resp:
        return await resp.json()


@pytest.mark.parametrize("config_name", list(CONFIGS))
async def test_corpus_equals_the_monolith(demo: Demo, config_name: str) -> None:
    gw = await GraphQLGateway.create(demo.config(CONFIGS[config_name]), demo.session)
    mismatches = []
    for name, query, raw_vars in CORPUS:
        variables, op = _split(raw_vars)
        expected = await _monolith(demo, query, variables, op)
        _, got = await gw.execute(query, variables, op)
        if normalise(got) != normalise(expected):
            mismatches.append((name, got, expected))
    assert not mismatches, f"{len(mismatches)} of {len(CORPUS)} differ; first: {mismatches[0]}"


async def test_extracted_fields_really_leave_the_monolith(demo: Demo) -> None:
    """Guard for the test above: after extraction the monolith is not asked for those fields."""
    gw = await GraphQLGateway.create(demo.config(ALL_FIELDS), demo.session)
    plan = gw.plan('{ title(id: "tt0000002") { id rating { numVotes } cast { person { knownFor { id } } } images { id } } }',
                   gw.parse('{ title(id: "tt0000002") { id rating { numVotes } cast { person { knownFor { id } } } images { id } } }').document,  # type: ignore[arg-type]
                   None, {}, {})[1]
    assert [f.backend for f in plan.roots] == ["monolith"]
    assert "rating" not in plan.roots[0].document and "cast" not in plan.roots[0].document
    assert sorted(c.backend for c in plan.roots[0].children) == ["credits", "images", "ratings"]
    credits = next(c for c in plan.roots[0].children if c.backend == "credits")
    # Person.knownFor is credits' too, so it rides in the same fetch: no extra hop.
    assert credits.children == () and "knownFor" in credits.document


@pytest.mark.parametrize("config_name", ["all-legacy", "all-extracted"])
async def test_corpus_compiled_shapes_equal_graphql_core(demo: Demo, config_name: str) -> None:
    """The fast path (compiled shape) answers byte for byte what graphql-core's executor does."""
    gw = await GraphQLGateway.create(demo.config(CONFIGS[config_name]), demo.session)
    projected = 0
    for name, query, raw_vars in CORPUS:
        variables, op = _split(raw_vars)
        compiled, core = await both_shapes(gw, query, variables, op)
        if compiled is not None:
            projected += 1
            assert compiled == core, name
    # Only errors, null propagation and introspection go to graphql-core (about 10 of the corpus).
    assert projected >= len(CORPUS) - 12, projected
