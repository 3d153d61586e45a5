"""The GraphQL gateway: one composed schema, each field served by the backend that owns it.

    compose.py       backends' SDL -> ComposedSchema (conflicts refused)
    ownership.py     graphql.fields + runtime flips -> Ownership (who serves Type.field)
    planner.py       operation -> Plan (root fetches, entity fetches, shadows)
    executor.py      Plan -> merged answer (batched _entities per backend per level)
    shaping.py       merged answer -> the client's answer (graphql-core semantics)
    field_shadow.py  shadowed fields -> ShadowPairs keyed graphql:Type.field
    codes.py         the errors a client gets: extensions.code, serviceName only when allowed
    gateway.py       the aiohttp handler, caches, introspection
"""

from strangler_proxy.graphql.compose import ComposedSchema, compose, fetch_sdl, load_sdls
from strangler_proxy.graphql.executor import BackendClient, Executor
from strangler_proxy.graphql.field_shadow import FieldShadower
from strangler_proxy.graphql.gateway import GraphQLGateway, graphql_handler
from strangler_proxy.graphql.ownership import FieldRule, Ownership, in_canary
from strangler_proxy.graphql.planner import Plan, plan_operation

__all__ = [
    "BackendClient",
    "ComposedSchema",
    "Executor",
    "FieldRule",
    "FieldShadower",
    "GraphQLGateway",
    "Ownership",
    "Plan",
    "compose",
    "fetch_sdl",
    "graphql_handler",
    "in_canary",
    "load_sdls",
    "plan_operation",
]
