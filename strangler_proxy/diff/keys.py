"""What a result key names: a REST route or a GraphQL field.

    >>> key_kind("ratings"), key_kind("graphql:Title.rating")
    ('route', 'graphql-field')
"""

from __future__ import annotations

from typing import Literal

from strangler_proxy.config import FieldConfig, RouteConfig, StranglerConfig
from strangler_proxy.diff.result import GRAPHQL_KEY_PREFIX
from strangler_proxy.routing.cells import split_scoped

KeyKind = Literal["route", "graphql-field"]


def key_kind(key: str) -> KeyKind:
    return "graphql-field" if key.startswith(GRAPHQL_KEY_PREFIX) else "route"


def configured_for_key(config: StranglerConfig | None, key: str) -> RouteConfig | FieldConfig | None:
    """The route or field a key belongs to (a per-cell key, ``ratings@eu-1``, its route's),
    if the config still has it."""
    if config is None:
        return None
    key = split_scoped(key)[0]
    if key.startswith(GRAPHQL_KEY_PREFIX):
        return config.graphql.fields.get(key[len(GRAPHQL_KEY_PREFIX) :])
    return config.route(key)


def configured_keys(config: StranglerConfig | None) -> list[str]:
    """Every key the config knows, routes first."""
    if config is None:
        return []
    return [r.name for r in config.routes] + [GRAPHQL_KEY_PREFIX + f for f in config.graphql.fields]
