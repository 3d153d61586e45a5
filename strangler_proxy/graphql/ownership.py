"""Who serves each ``Type.field``: the file's ``graphql.fields`` plus runtime flips.

Every field belongs to the legacy backend unless a rule says otherwise. A rule
names a target backend and a mode:

=========  ==============================================  ===================
mode       served by                                       shadowed to
=========  ==============================================  ===================
legacy     the current owner (legacy)                      --
shadow     the current owner                               the target
canary     the target for a sticky ``percent`` of          the target, for the
           partitions (entity key, header or argument),    rest
           the current owner for the rest
extracted  the target                                      legacy, when
                                                           ``reverse_shadow``
=========  ==============================================  ===================

An :class:`Ownership` is immutable and swapped whole when a flip lands; plans
are cached per ``Ownership.version``. With cells, a field can have a mode of
its own in one cell (an override named ``Type.field@CELL``): such a cell gets
an Ownership of its own (:meth:`Ownership.for_cell`), every other cell follows
the global one.

    >>> from strangler_proxy.config import GraphQLConfig
    >>> o = Ownership.build(GraphQLConfig(backends={"legacy": {"upstream": "legacy"},
    ...     "ratings": {"upstream": "ratings"}},
    ...     fields={"Title.rating": {"target": "ratings", "mode": "shadow"}}))
    >>> o.rule("Title", "rating").mode.value
    'shadow'
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from types import MappingProxyType
from typing import Any, Protocol

from strangler_proxy.config import GraphQLConfig, Mode
from strangler_proxy.errors import GraphQLGatewayError
from strangler_proxy.graphql.compose import ROOT_TYPES, ComposedSchema
from strangler_proxy.routing.canary import bucket
from strangler_proxy.routing.cells import split_scoped

_versions = itertools.count(1)


class RouteStateLike(Protocol):
    """What a runtime override offers (the state store's rows, the proxy's table)."""

    @property
    def mode(self) -> Any: ...  # Mode or its string value

    @property
    def percent(self) -> float: ...


@dataclass(frozen=True, slots=True)
class FieldRule:
    """The effective ownership of one field: file settings with the flip applied."""

    name: str  # "Type.field"
    target: str
    mode: Mode
    percent: float = 0.0
    partition_key: str | None = None  # key:NAME, header:NAME, arg:NAME
    reverse_shadow: bool = False
    sample_rate: float = 1.0


def in_canary(rule: FieldRule, partition: str | None) -> bool:
    """Whether the target serves this entity: the same sticky split as REST routes
    (strangler_proxy/routing/canary.py), so an entity is on one side for every route and
    field split by its key. No partition value: legacy."""
    if rule.percent >= 100:
        return True
    if rule.percent <= 0 or partition is None:
        return False
    return bucket(partition) < rule.percent


@dataclass(frozen=True)
class Ownership:
    """The field table of one moment; build with :meth:`build`."""

    legacy: str
    rules: Mapping[str, FieldRule]
    version: int
    # cell -> its table, for the cells with a field override of their own (Type.field@CELL)
    cells: Mapping[str, Ownership] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def build(cls, config: GraphQLConfig, overrides: Mapping[str, RouteStateLike] | None = None) -> Ownership:
        """``config.fields`` with the runtime ``overrides`` (name -> mode/percent) applied; an
        override named ``Type.field@CELL`` applies in that cell only (:meth:`for_cell`). Overrides
        of routes (and of routes in a cell) are not the gateway's and are ignored.

        >>> from strangler_proxy.config import GraphQLConfig
        >>> from strangler_proxy.routing.router import RouteState
        >>> cfg = GraphQLConfig(backends={"legacy": {"upstream": "legacy"}, "ratings": {"upstream": "ratings"}},
        ...                     fields={"Title.rating": {"target": "ratings", "mode": "shadow"}})
        >>> o = Ownership.build(cfg, {"Title.rating@c2": RouteState(Mode.EXTRACTED, 0.0), "ratings@c1": RouteState(Mode.EXTRACTED, 0.0)})
        >>> [o.for_cell(c).rule("Title", "rating").mode.value for c in (None, "c1", "c2")]
        ['shadow', 'shadow', 'extracted']
        >>> o.for_cell("c1") is o
        True
        """
        plain: dict[str, RouteStateLike] = {}
        per_cell: dict[str, dict[str, RouteStateLike]] = {}
        for name, state in (overrides or {}).items():
            base, cell = split_scoped(name)
            if base not in config.fields:
                continue
            if cell is None:
                plain[base] = state
            else:
                per_cell.setdefault(cell, {})[base] = state
        cells = {cell: cls._table(config, {**plain, **own}) for cell, own in per_cell.items()}
        return replace(cls._table(config, plain), cells=MappingProxyType(cells))

    @classmethod
    def _table(cls, config: GraphQLConfig, overrides: Mapping[str, RouteStateLike]) -> Ownership:
        rules: dict[str, FieldRule] = {}
        for name, fc in config.fields.items():
            mode, percent = fc.mode, fc.percent
            over = overrides.get(name)
            if over is not None:
                mode = over.mode if isinstance(over.mode, Mode) else Mode(str(over.mode))
                percent = float(over.percent)
            rules[name] = FieldRule(
                name=name, target=fc.target, mode=mode, percent=percent, partition_key=fc.partition_key,
                reverse_shadow=fc.reverse_shadow, sample_rate=fc.sample_rate,
            )
        return cls(legacy=config.legacy_backend, rules=rules, version=next(_versions))

    def for_cell(self, cell: str | None) -> Ownership:
        """The table of one cell: its own when it has field overrides of its own, else this one."""
        return self if cell is None else self.cells.get(cell, self)

    @cached_property
    def targets_serve(self) -> bool:
        """Whether any field is served (wholly or in part) by its target."""
        return any(r.mode in (Mode.CANARY, Mode.EXTRACTED) for r in self.rules.values())

    def served_by_target(self, name: str, backend: str) -> FieldRule | None:
        """The rule of ``name`` ("Type.field") if ``backend`` serves it as its target."""
        rule = self.rules.get(name)
        if rule is None or rule.target != backend or rule.mode not in (Mode.CANARY, Mode.EXTRACTED):
            return None
        return rule

    def rule(self, type_name: str, field_name: str) -> FieldRule | None:
        return self.rules.get(f"{type_name}.{field_name}") if self.rules else None

    def check(self, composed: ComposedSchema) -> None:
        """Refuse rules the composed schema cannot honour (unknown field, target unable to serve it)."""
        problems: list[str] = []
        for name, rule in self.rules.items():
            type_name, field_name = name.split(".", 1)
            if name not in composed.resolvers:
                problems.append(f"{name}: no backend defines this field")
                continue
            if not composed.can_resolve(rule.target, type_name, field_name):
                problems.append(f"{name}: backend {rule.target!r} does not resolve it "
                                f"(resolvers: {sorted(composed.resolvers[name])})")
            if type_name not in ROOT_TYPES:
                if not composed.is_entity(type_name):
                    problems.append(f"{name}: {type_name} is not an entity (no @key), so its fields follow "
                                    "their parent and cannot be owned one by one")
                elif composed.key(type_name, rule.target) is None:
                    problems.append(f"{name}: backend {rule.target!r} has no resolvable @key on {type_name}")
        if problems:
            raise GraphQLGatewayError("graphql.fields: " + "; ".join(problems))
