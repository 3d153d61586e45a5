"""The query planner: one client operation -> a tree of backend fetches.

Each field goes to the backend that owns it (:mod:`.ownership`). Root fields
are grouped per backend (run in parallel for a query, in order for a
mutation). A field whose owner differs from its parent's backend becomes an
*entity fetch*: ``_entities`` on the owner with the parent's key fields, which
the planner adds to the parent's selection under ``_gw_`` aliases (the
response shaping never shows them). Entity fetches hang under the fetch that
produces their parents, as deep as the query goes; the executor runs them
level by level, batched per backend.

Plans depend only on the document, the operation name, the ownership version
and the per-request choice of canary root fields, and are cached on that.

    plan = plan_operation(composed, ownership, document, None)
    plan.roots[0].backend  # 'legacy'
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import graphql
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLCompositeType,
    GraphQLObjectType,
    InlineFragmentNode,
    NamedTypeNode,
    NameNode,
    OperationDefinitionNode,
    OperationType,
    SelectionNode,
    SelectionSetNode,
    get_named_type,
    is_abstract_type,
    print_ast,
)

from strangler_proxy.config import Mode
from strangler_proxy.errors import GraphQLGatewayError
from strangler_proxy.graphql.compose import ComposedSchema, EntityKey
from strangler_proxy.graphql.ownership import FieldRule, Ownership

INTERNAL_PREFIX = "_gw_"  # aliases the planner adds; never shown to clients
TYPENAME_ALIAS = INTERNAL_PREFIX + "t"
KEY_ALIAS_PREFIX = INTERNAL_PREFIX + "k_"

Path = tuple[str, ...]
_FETCH_IDS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class KeyFields:
    """How to build ``_entities`` representations of one type from a parent object."""

    type_name: str
    fields: tuple[tuple[str, str], ...]  # (alias in the parent object, key field name)

    def representation(self, obj: Mapping[str, object]) -> dict[str, object] | None:
        rep: dict[str, object] = {"__typename": self.type_name}
        for alias, name in self.fields:
            v = obj.get(alias)
            if v is None:
                return None  # an entity without its key cannot be fetched
            rep[name] = v
        return rep


@dataclass(frozen=True, slots=True)
class Split:
    """A canary split of an entity fetch: only entities on one side of the percent."""

    rule: FieldRule
    canary_side: bool  # True: the fetch takes the entities in the canary


@dataclass(frozen=True, slots=True)
class Fetch:
    """One request to one backend; ``children`` need its answer first."""

    id: int
    backend: str
    path: Path  # where its objects are in the merged answer; () at the root
    document: str  # root: a whole operation; entity: "... on T { ... }"
    variables: tuple[str, ...]  # client variables it uses
    variable_defs: tuple[str, ...] = ()  # "$a: Int" each (entity fetches: joined in the batch)
    keys: KeyFields | None = None  # entity fetches only
    type_filter: str | None = None  # in abstract positions, only objects of this type
    split: Split | None = None
    response_keys: tuple[str, ...] = ()  # what it fills in each object (for errors)
    fields: tuple[str, ...] = ()  # "Type.field" it resolves
    children: tuple[Fetch, ...] = ()


@dataclass(frozen=True, slots=True)
class ShadowSpec:
    """A field occurrence to mirror: fetch it from ``backend`` for the same entities."""

    field_name: str  # "Type.field"
    mode: str
    served_by: str  # "legacy" or "target": whose answer the client gets
    served_backend: str
    backend: str  # where the shadow request goes
    path: Path  # parent objects (() for a root field)
    response_key: str
    field_node: FieldNode
    keys: KeyFields | None  # None for root fields
    type_filter: str | None
    rule: FieldRule
    split: Split | None = None  # canary: shadow only the entities legacy serves
    variable_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    operation: OperationType
    roots: tuple[Fetch, ...]
    shadows: tuple[ShadowSpec, ...] = ()

    @property
    def sequential(self) -> bool:
        return self.operation == OperationType.MUTATION

    def all_fetches(self) -> list[Fetch]:
        out: list[Fetch] = []
        stack = list(self.roots)
        while stack:
            f = stack.pop()
            out.append(f)
            stack.extend(f.children)
        return out


def operation_of(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode:
    ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        for op in ops:
            if op.name and op.name.value == operation_name:
                return op
        raise GraphQLGatewayError(f"unknown operation named {operation_name!r}")
    if len(ops) != 1:
        raise GraphQLGatewayError("must provide operation name if query contains multiple operations")
    return ops[0]


def root_argument_values(document: DocumentNode, op: OperationDefinitionNode, name: str,
                         variables: Mapping[str, object]) -> set[str]:
    """The distinct values the operation's root fields give their argument ``name`` (fragments
    on the root type included; variables resolved, with their defaults), as text. A null or
    absent argument gives nothing.

    >>> doc = graphql.parse('query($t: ID = "tt2") { a: title(id: $t) { x } b: title(id: "tt1") { x } top { x } }')
    >>> sorted(root_argument_values(doc, operation_of(doc, None), "id", {}))
    ['tt1', 'tt2']
    >>> sorted(root_argument_values(doc, operation_of(doc, None), "id", {"t": "tt1"}))
    ['tt1']
    """
    values = dict(variables)
    for d in op.variable_definitions or ():
        if d.default_value is not None and d.variable.name.value not in values:
            values[d.variable.name.value] = graphql.value_from_ast_untyped(d.default_value)
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    found: set[str] = set()
    todo: list[SelectionNode] = list(op.selection_set.selections)
    seen_fragments: set[str] = set()
    while todo:
        sel = todo.pop()
        if isinstance(sel, FieldNode):
            for arg in sel.arguments or ():
                if arg.name.value == name:
                    v = graphql.value_from_ast_untyped(arg.value, values)
                    if v is not None and v is not graphql.Undefined and v != "":
                        found.add(str(v))
        elif isinstance(sel, InlineFragmentNode):
            todo.extend(sel.selection_set.selections)
        elif isinstance(sel, FragmentSpreadNode) and sel.name.value not in seen_fragments:
            seen_fragments.add(sel.name.value)
            frag = fragments.get(sel.name.value)
            if frag is not None:
                todo.extend(frag.selection_set.selections)
    return found


def root_canary_fields(composed: ComposedSchema, ownership: Ownership, op: OperationDefinitionNode) -> list[FieldRule]:
    """Canary rules on the operation's top-level fields: decided once per request."""
    root = _root_type(composed, op).name
    out = []
    for sel in op.selection_set.selections:
        if isinstance(sel, FieldNode):
            rule = ownership.rule(root, sel.name.value)
            if rule is not None and rule.mode == Mode.CANARY:
                out.append(rule)
    return out


def _root_type(composed: ComposedSchema, op: OperationDefinitionNode) -> GraphQLObjectType:
    t = composed.schema.get_root_type(op.operation)
    if t is None:
        raise GraphQLGatewayError(f"the schema has no {op.operation.value} type")
    return t


def _variables_in(node: graphql.Node) -> list[str]:
    names: list[str] = []

    class _V(graphql.Visitor):
        def enter_variable(self, n: graphql.VariableNode, *_: object) -> None:
            if n.name.value not in names:
                names.append(n.name.value)

    graphql.visit(node, _V())
    return names


@dataclass(frozen=True, slots=True)
class _Decision:
    served: str
    split: tuple[str, str] | None = None  # canary per entity: (target, default)
    shadow_to: str | None = None
    served_by: str = "legacy"


@dataclass
class _Planner:
    composed: ComposedSchema
    ownership: Ownership
    fragments: Mapping[str, FragmentDefinitionNode]
    var_defs: Mapping[str, graphql.VariableDefinitionNode]
    root_choices: Mapping[str, bool]  # canary root field -> in canary
    shadowing: bool
    force: tuple[str, str] | None = None  # ("Type.field", backend): shadow sub-plans
    # Fetch ids are unique process-wide: the executor caches batch documents by them.
    ids: Iterator[int] = field(default_factory=lambda: _FETCH_IDS)
    shadows: list[ShadowSpec] = field(default_factory=list)

    # ------------------------------------------------------------ ownership
    def default_owner(self, type_name: str, field_name: str, current: str | None) -> str:
        c = self.composed
        resolvers = c.resolvers.get(f"{type_name}.{field_name}", frozenset())
        if current is not None and current in resolvers:
            key = c.key(type_name, current)
            key_names = {s.name.value for s in key.selection.selections if isinstance(s, FieldNode)} if key else set()
            # Key fields and fields of value types stay with whoever fetched the object.
            if not c.is_entity(type_name) or field_name in key_names:
                return current
        if c.legacy in resolvers:
            return c.legacy
        if current in resolvers:
            return current  # type: ignore[return-value]
        if not resolvers:
            raise GraphQLGatewayError(f"{type_name}.{field_name}: no backend resolves it")
        return sorted(resolvers)[0]

    def decide(self, type_name: str, field_name: str, current: str | None, is_root: bool) -> _Decision:
        if self.force is not None and self.force[0] == f"{type_name}.{field_name}":
            return _Decision(self.force[1])
        rule = self.ownership.rule(type_name, field_name)
        default = self.default_owner(type_name, field_name, current)
        if rule is None or rule.mode == Mode.LEGACY or rule.target == default and rule.mode != Mode.EXTRACTED:
            return _Decision(default)
        if rule.mode == Mode.SHADOW:
            return _Decision(default, shadow_to=rule.target)
        if rule.mode == Mode.EXTRACTED:
            back = default if rule.reverse_shadow and default != rule.target else None
            return _Decision(rule.target, shadow_to=back, served_by="target")
        if is_root:  # canary on a root field: one choice per request
            if self.root_choices.get(rule.name, False):
                return _Decision(rule.target, served_by="target")
            return _Decision(default, shadow_to=rule.target)
        return _Decision(default, split=(rule.target, default), shadow_to=rule.target)

    # ------------------------------------------------------------ selections
    def expand(self, sel: SelectionNode) -> SelectionNode:
        if isinstance(sel, FragmentSpreadNode):
            frag = self.fragments[sel.name.value]
            return InlineFragmentNode(type_condition=frag.type_condition, directives=sel.directives,
                                      selection_set=frag.selection_set)
        return sel

    def plan_selections(
        self, parent: GraphQLCompositeType, selections: Sequence[SelectionNode], backend: str,
        path: Path, abstract_position: bool, decided: bool = False,
    ) -> tuple[list[SelectionNode], list[Fetch]]:
        """The part of ``selections`` that ``backend`` answers, and the fetches for the rest.

        ``decided``: the top-level fields were already given to ``backend`` (an entity fetch's body).
        """
        out: list[SelectionNode] = []
        children: list[Fetch] = []
        # (owner, split side or None) -> fields fetched from it through _entities
        pending: dict[tuple[str, bool | None], list[FieldNode]] = {}
        pending_rule: dict[tuple[str, bool | None], FieldRule] = {}
        keys_needed: dict[str, KeyFields] = {}  # owner backend -> key fields added here
        for raw in selections:
            sel = self.expand(raw)
            if isinstance(sel, InlineFragmentNode):
                cond = (self.composed.schema.get_type(sel.type_condition.name.value)
                        if sel.type_condition else parent)
                sub, ch = self.plan_selections(cond, sel.selection_set.selections, backend, path,  # type: ignore[arg-type]
                                               abstract_position)
                out.append(replace(sel, selection_set=SelectionSetNode(selections=tuple(sub))))
                children.extend(ch)
                continue
            assert isinstance(sel, FieldNode)
            name = sel.name.value
            if name.startswith("__") or not isinstance(parent, GraphQLObjectType):
                # Meta fields, and fields asked through an interface, stay with the parent's backend.
                out.append(self._same_backend(parent, sel, backend, path, children))
                continue
            d = _Decision(backend) if decided else self.decide(parent.name, name, backend, is_root=False)
            rk = sel.alias.value if sel.alias else name
            rule = self.ownership.rule(parent.name, name)
            if d.split is not None:
                assert rule is not None
                target, default = d.split
                for owner, side in ((target, True), (default, False)):
                    pending.setdefault((owner, side), []).append(sel)
                    pending_rule[(owner, side)] = rule
            elif d.served == backend:
                out.append(self._same_backend(parent, sel, backend, path, children))
            else:
                pending.setdefault((d.served, None), []).append(sel)
            if d.shadow_to is not None and self.shadowing and rule is not None:
                kf = self._keys(parent.name, d.shadow_to, backend, keys_needed)
                split = Split(rule, canary_side=False) if d.split else None
                self.shadows.append(ShadowSpec(
                    field_name=rule.name, mode=rule.mode.value, served_by=d.served_by,
                    served_backend=d.served, backend=d.shadow_to, path=path, response_key=rk, field_node=sel,
                    keys=kf, type_filter=parent.name if abstract_position else None, rule=rule, split=split,
                    variable_names=tuple(_variables_in(sel)),
                ))
        for (owner, side), fields_ in pending.items():
            assert isinstance(parent, GraphQLObjectType)
            kf = self._keys(parent.name, owner, backend, keys_needed)
            sub, ch = self.plan_selections(parent, fields_, owner, path, False, decided=True)
            frag = InlineFragmentNode(type_condition=NamedTypeNode(name=NameNode(value=parent.name)),
                                      selection_set=SelectionSetNode(selections=tuple(sub)))
            variables = _variables_in(frag)
            rule = pending_rule.get((owner, side))
            children.append(Fetch(
                id=next(self.ids), backend=owner, path=path, document=print_ast(frag),
                variables=tuple(variables), variable_defs=self._defs(variables), keys=kf,
                type_filter=parent.name if abstract_position else None,
                split=Split(rule, side) if rule is not None and side is not None else None,
                response_keys=tuple(dict.fromkeys(f.alias.value if f.alias else f.name.value for f in fields_)),
                fields=tuple(dict.fromkeys(f"{parent.name}.{f.name.value}" for f in fields_)),
                children=tuple(ch),
            ))
        # In an abstract position the concrete type is always asked for: the response shaping needs
        # it to pick the fragments that apply (and entity fetches to pick their objects).
        if abstract_position and (keys_needed or is_abstract_type(parent)):
            out.append(FieldNode(alias=NameNode(value=TYPENAME_ALIAS), name=NameNode(value="__typename")))
        seen: set[str] = set()
        for kf in keys_needed.values():
            for alias, key_name in kf.fields:
                if alias not in seen:
                    seen.add(alias)
                    out.append(self._key_field(parent.name, backend, alias, key_name))
        return out, children

    def _same_backend(self, parent: GraphQLCompositeType, sel: FieldNode, backend: str, path: Path,
                      children: list[Fetch]) -> FieldNode:
        if sel.selection_set is None:
            return sel
        fdef = parent.fields[sel.name.value]  # type: ignore[union-attr]
        ftype = get_named_type(fdef.type)
        rk = sel.alias.value if sel.alias else sel.name.value
        sub, ch = self.plan_selections(ftype, sel.selection_set.selections, backend,  # type: ignore[arg-type]
                                       path + (rk,), is_abstract_type(ftype))
        children.extend(ch)
        return replace(sel, selection_set=SelectionSetNode(selections=tuple(sub)))

    def _keys(self, type_name: str, owner: str, current: str, needed: dict[str, KeyFields]) -> KeyFields:
        if owner in needed:
            return needed[owner]
        key: EntityKey | None = self.composed.key(type_name, owner)
        if key is None:
            raise GraphQLGatewayError(
                f"{type_name}: backend {owner!r} has no @key on it, so it cannot resolve fields of {type_name} "
                f"fetched from {current!r}")
        kf = KeyFields(type_name, tuple(
            (KEY_ALIAS_PREFIX + s.name.value, s.name.value) for s in key.selection.selections
            if isinstance(s, FieldNode)))
        needed[owner] = kf
        return kf

    def _key_field(self, type_name: str, backend: str, alias: str, key_name: str) -> SelectionNode:
        if not self.composed.can_resolve(backend, type_name, key_name):
            raise GraphQLGatewayError(f"{type_name}.{key_name}: key field not resolvable by {backend!r}")
        key = next(k for k in self.composed.keys[type_name].values()
                   if any(isinstance(s, FieldNode) and s.name.value == key_name for s in k.selection.selections))
        node = next(s for s in key.selection.selections if isinstance(s, FieldNode) and s.name.value == key_name)
        return replace(node, alias=NameNode(value=alias))

    def _defs(self, variables: Sequence[str]) -> tuple[str, ...]:
        return tuple(print_ast(self.var_defs[v]) for v in variables if v in self.var_defs)

    # ------------------------------------------------------------ root
    def plan_root(self, op: OperationDefinitionNode) -> tuple[Fetch, ...]:
        root = _root_type(self.composed, op)
        groups = self._split_root(root, op.selection_set.selections, ordered=op.operation == OperationType.MUTATION)
        fetches = []
        for owner, sels in groups:
            # _split_root decided each root field's owner (and its shadow) already: deciding again here
            # would take a shadowed root field for an entity field of Query.
            sub, ch = self.plan_selections(root, sels, owner, (), False, decided=True)
            body = SelectionSetNode(selections=tuple(sub))
            variables = _variables_in(body)
            defs = ", ".join(self._defs(variables))
            doc = f"{op.operation.value}{'(' + defs + ')' if defs else ''} {print_ast(body)}"
            fetches.append(Fetch(
                id=next(self.ids), backend=owner, path=(), document=doc, variables=tuple(variables),
                response_keys=tuple(dict.fromkeys(_response_keys(sels, self))),
                fields=tuple(f"{root.name}.{n}" for n in dict.fromkeys(_field_names(sels, self))),
                children=tuple(ch),
            ))
        return tuple(fetches)

    def _split_root(self, root: GraphQLObjectType, selections: Sequence[SelectionNode],
                    ordered: bool) -> list[tuple[str, list[SelectionNode]]]:
        groups: list[tuple[str, list[SelectionNode]]] = []
        for raw in selections:
            sel = self.expand(raw)
            if isinstance(sel, InlineFragmentNode):
                for owner, sub in self._split_root(root, sel.selection_set.selections, ordered):
                    part = replace(sel, selection_set=SelectionSetNode(selections=tuple(sub)))
                    _add(groups, owner, part, ordered)
                continue
            assert isinstance(sel, FieldNode)
            if sel.name.value.startswith("__"):
                continue  # __typename, __schema, __type: answered from the composed schema
            d = self.decide(root.name, sel.name.value, None, is_root=True)
            _add(groups, d.served, sel, ordered)
            if d.shadow_to is not None and self.shadowing and not ordered:
                rule = self.ownership.rule(root.name, sel.name.value)
                assert rule is not None
                self.shadows.append(ShadowSpec(
                    field_name=rule.name, mode=rule.mode.value, served_by=d.served_by, served_backend=d.served,
                    backend=d.shadow_to, path=(), response_key=sel.alias.value if sel.alias else sel.name.value,
                    field_node=sel, keys=None, type_filter=None, rule=rule,
                    variable_names=tuple(_variables_in(sel)),
                ))
        return groups


def _add(groups: list[tuple[str, list[SelectionNode]]], owner: str, sel: SelectionNode, ordered: bool) -> None:
    # A mutation keeps its order: only neighbours with one owner share a request.
    if ordered:
        if groups and groups[-1][0] == owner:
            groups[-1][1].append(sel)
        else:
            groups.append((owner, [sel]))
        return
    for o, sels in groups:
        if o == owner:
            sels.append(sel)
            return
    groups.append((owner, [sel]))


def _response_keys(sels: Sequence[SelectionNode], p: _Planner) -> list[str]:
    out: list[str] = []
    for raw in sels:
        s = p.expand(raw)
        if isinstance(s, FieldNode):
            out.append(s.alias.value if s.alias else s.name.value)
        elif isinstance(s, InlineFragmentNode):
            out.extend(_response_keys(s.selection_set.selections, p))
    return out


def _field_names(sels: Sequence[SelectionNode], p: _Planner) -> list[str]:
    out: list[str] = []
    for raw in sels:
        s = p.expand(raw)
        if isinstance(s, FieldNode):
            out.append(s.name.value)
        elif isinstance(s, InlineFragmentNode):
            out.extend(_field_names(s.selection_set.selections, p))
    return out


def plan_operation(
    composed: ComposedSchema, ownership: Ownership, document: DocumentNode, operation_name: str | None,
    root_choices: Mapping[str, bool] | None = None,
) -> Plan:
    """Plan a *validated* document. ``root_choices``: canary root field -> served by its target."""
    op = operation_of(document, operation_name)
    planner = _Planner(
        composed=composed, ownership=ownership,
        fragments={d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)},
        var_defs={v.variable.name.value: v for v in op.variable_definitions or ()},
        root_choices=root_choices or {}, shadowing=op.operation == OperationType.QUERY,
    )
    roots = planner.plan_root(op)
    return Plan(operation=op.operation, roots=roots, shadows=tuple(planner.shadows))


SHADOW_ROOT = INTERNAL_PREFIX + "s"  # where a shadow fetch's entities sit in its own scratch answer


def plan_shadow(composed: ComposedSchema, ownership: Ownership, spec: ShadowSpec,
                document: DocumentNode, operation_name: str | None) -> Fetch:
    """A fetch of ``spec``'s field from ``spec.backend`` alone (with whatever its subtree needs).

    Entity fields: an entity fetch over ``{_gw_s: [objects with keys]}``.
    Root fields: a root fetch of just that field.
    """
    op = operation_of(document, operation_name)
    planner = _Planner(
        composed=composed, ownership=ownership,
        fragments={d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)},
        var_defs={v.variable.name.value: v for v in op.variable_definitions or ()},
        root_choices={}, shadowing=False, force=(spec.field_name, spec.backend),
    )
    type_name = spec.field_name.split(".", 1)[0]
    parent = composed.schema.get_type(type_name)
    assert isinstance(parent, GraphQLObjectType)
    if spec.keys is None:
        fetches = planner.plan_root(replace(op, selection_set=SelectionSetNode(selections=(spec.field_node,))))
        return fetches[0]
    sub, ch = planner.plan_selections(parent, [spec.field_node], spec.backend, (SHADOW_ROOT,), False)
    frag = InlineFragmentNode(type_condition=NamedTypeNode(name=NameNode(value=type_name)),
                              selection_set=SelectionSetNode(selections=tuple(sub)))
    variables = _variables_in(frag)
    return Fetch(
        id=next(planner.ids), backend=spec.backend, path=(SHADOW_ROOT,), document=print_ast(frag),
        variables=tuple(variables), variable_defs=planner._defs(variables), keys=spec.keys,
        response_keys=(spec.response_key,), fields=(spec.field_name,), children=tuple(ch),
    )
