"""Both ways of shaping one merged answer: the compiled projection and graphql-core's executor."""

from __future__ import annotations

from typing import Any

import graphql
import orjson

from strangler_proxy.graphql import GraphQLGateway
from strangler_proxy.graphql.projection import Projector
from strangler_proxy.graphql.shaping import shape


async def both_shapes(gw: GraphQLGateway, query: str, variables: dict[str, Any] | None = None,
                      operation_name: str | None = None) -> tuple[bytes | None, bytes]:
    """(compiled answer or None when it defers to graphql-core, graphql-core's answer), as JSON bytes
    (so key order counts), both shaped from the *same* merged data."""
    variables = variables or {}
    parsed = gw.parse(query)
    assert parsed.document is not None, parsed.errors
    op, plan = gw.plan(query, parsed.document, operation_name, variables, {})
    values = graphql.get_variable_values(gw.composed.schema, op.variable_definitions or (), dict(variables))
    assert not isinstance(values, list), values
    data, errors = await gw.executor.run(plan, variables, {})
    core = orjson.dumps(shape(gw.composed.schema, parsed.document, operation_name, variables, data, errors))
    if errors:
        return None, core
    projected = Projector(gw.composed.schema, parsed.document, op).project(data, values.coerced)
    return (None if projected is None else orjson.dumps(projected)), core
