"""Compiled response shapes: the merged answer projected straight onto the client's selection.

:mod:`.shaping` runs graphql-core's executor over the merged backend answers:
exact, but it costs a resolver call, a ``ResolveInfo`` and a path object per
field on every request. The shape of a clean answer, though, depends only on
the document, the operation and the values of the variables that ``@skip`` /
``@include`` read. So a :class:`Projector` (one per prepared operation)
compiles, per such set of values, a tree of field lists (response key, how to
complete the value) and builds the client's answer with plain dict and list
comprehensions: field order, aliases, merged fields, fragments, type
conditions, ``__typename`` and abstract types (by the ``_gw_t`` typename the
planner asks for) come out exactly as graphql-core would produce them; the
planner's ``_gw_`` fields are never selected, so they vanish.

Anything that needs the executor's error machinery is *not* projected: the
caller falls back to :func:`.shaping.shape` when the backends reported errors,
when a value is null where the schema says non-null (null propagation and its
error), when a leaf does not serialize, or for introspection (``__schema``,
``__type``). ``project`` returns ``None`` in those cases.

    projector = Projector(schema, document, operation)
    body = projector.project(merged_data, coerced_variables)  # None -> use shaping.shape
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    BooleanValueNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLAbstractType,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLSchema,
    InlineFragmentNode,
    NameNode,
    OperationDefinitionNode,
    SelectionNode,
    VariableNode,
    is_abstract_type,
    is_leaf_type,
)

from strangler_proxy.graphql.planner import TYPENAME_ALIAS

JSON = dict[str, Any]
MAX_VARIANTS = 64  # compiled shapes kept per operation (one per set of @skip/@include values)
_INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})


class _Fallback(Exception):
    """Internal: this answer needs graphql-core's execution (errors, null propagation)."""


# A field of an object: (response key, kind, argument). Kinds, cheapest first:
_TYPENAME = 0  # argument: the type name (a constant)
_LEAF = 1  # argument: the leaf type's serialize; null passes through
_COMPLETE = 2  # argument: a completer (non-null, list, object, abstract)
_Entry = tuple[str, int, Any]
Completer = Callable[[Any], Any]


def _directive_if(node: SelectionNode, name: str, values: Mapping[str, Any]) -> bool | None:
    for d in node.directives or ():
        if d.name.value == name:
            for arg in d.arguments or ():
                if arg.name.value == "if":
                    v = arg.value
                    if isinstance(v, BooleanValueNode):
                        return v.value
                    if isinstance(v, VariableNode):
                        return bool(values.get(v.name.value))
    return None


def _included(node: SelectionNode, values: Mapping[str, Any]) -> bool:
    return _directive_if(node, "skip", values) is not True and _directive_if(node, "include", values) is not False


def directive_variables(document: DocumentNode) -> tuple[str, ...]:
    """The variables any ``@skip``/``@include`` of the document reads (the compiled shape depends on them)."""
    names: dict[str, None] = {}

    def walk(selections: Sequence[SelectionNode]) -> None:
        for sel in selections:
            for d in sel.directives or ():
                if d.name.value in ("skip", "include"):
                    for arg in d.arguments or ():
                        if isinstance(arg.value, VariableNode):
                            names[arg.value.name.value] = None
            sub = getattr(sel, "selection_set", None)
            if sub is not None:
                walk(sub.selections)

    for definition in document.definitions:
        if isinstance(definition, (OperationDefinitionNode, FragmentDefinitionNode)):
            walk(definition.selection_set.selections)
    return tuple(names)


@dataclass
class _Compiler:
    """Compiles completers for one set of ``@skip``/``@include`` values."""

    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]
    values: Mapping[str, Any]

    def collect(self, runtime: GraphQLObjectType, nodes: Sequence[FieldNode]) -> dict[str, list[FieldNode]]:
        """The spec's CollectFields over the sub-selections of ``nodes`` (fields merged by response key)."""
        out: dict[str, list[FieldNode]] = {}
        for node in nodes:
            if node.selection_set is not None:
                self._collect(runtime, node.selection_set.selections, out, set())
        return out

    def _collect(self, runtime: GraphQLObjectType, selections: Sequence[SelectionNode],
                 out: dict[str, list[FieldNode]], visited: set[str]) -> None:
        for sel in selections:
            if not _included(sel, self.values):
                continue
            if isinstance(sel, FieldNode):
                out.setdefault(sel.alias.value if sel.alias else sel.name.value, []).append(sel)
            elif isinstance(sel, InlineFragmentNode):
                if self._applies(sel.type_condition.name.value if sel.type_condition else None, runtime):
                    self._collect(runtime, sel.selection_set.selections, out, visited)
            elif isinstance(sel, FragmentSpreadNode):
                name = sel.name.value
                frag = self.fragments.get(name)
                if name in visited or frag is None:
                    continue
                visited.add(name)
                if self._applies(frag.type_condition.name.value, runtime):
                    self._collect(runtime, frag.selection_set.selections, out, visited)

    def _applies(self, condition: str | None, runtime: GraphQLObjectType) -> bool:
        if condition is None or condition == runtime.name:
            return True
        t = self.schema.get_type(condition)
        return is_abstract_type(t) and self.schema.is_sub_type(t, runtime)  # type: ignore[arg-type]

    def object_fields(self, runtime: GraphQLObjectType, nodes: Sequence[FieldNode]) -> list[_Entry]:
        entries: list[_Entry] = []
        for key, field_nodes in self.collect(runtime, nodes).items():
            name = field_nodes[0].name.value
            if name == "__typename":
                entries.append((key, _TYPENAME, runtime.name))
                continue
            if name in _INTROSPECTION_ROOTS:
                raise _Fallback  # introspection is answered by graphql-core from the composed schema
            ftype = runtime.fields[name].type
            if is_leaf_type(ftype):
                entries.append((key, _LEAF, ftype.serialize))  # type: ignore[union-attr]
            else:
                entries.append((key, _COMPLETE, self.completer(ftype, field_nodes)))
        return entries

    def completer(self, t: GraphQLOutputType, nodes: Sequence[FieldNode]) -> Completer:
        if isinstance(t, GraphQLNonNull):
            inner = self.completer(t.of_type, nodes)

            def non_null(v: Any) -> Any:
                if v is None:
                    raise _Fallback  # null propagation: graphql-core reports it
                return inner(v)

            return non_null
        if isinstance(t, GraphQLList):
            item = self.completer(t.of_type, nodes)

            def as_list(v: Any) -> Any:
                if v is None:
                    return None
                if not isinstance(v, list):
                    raise _Fallback
                return [item(x) for x in v]

            return as_list
        if is_leaf_type(t):
            serialize = t.serialize  # type: ignore[union-attr]
            return lambda v: None if v is None else serialize(v)
        if isinstance(t, GraphQLObjectType):
            return _object_completer(self.object_fields(t, nodes))
        assert is_abstract_type(t)
        return self._abstract(t, nodes)  # type: ignore[arg-type]

    def _abstract(self, t: GraphQLAbstractType, nodes: Sequence[FieldNode]) -> Completer:
        # The concrete type is known per object only; its field list is compiled on first sight.
        by_type: dict[str, Completer] = {}
        schema = self.schema

        def abstract(v: Any) -> Any:
            if v is None:
                return None
            if not isinstance(v, dict):
                raise _Fallback
            name = v.get(TYPENAME_ALIAS) or v.get("__typename")
            c = by_type.get(name) if isinstance(name, str) else None
            if c is None:
                runtime = schema.get_type(name) if isinstance(name, str) else None
                if not isinstance(runtime, GraphQLObjectType) or not schema.is_sub_type(t, runtime):
                    raise _Fallback
                c = by_type[name] = _object_completer(self.object_fields(runtime, nodes))
            return c(v)

        return abstract


def _object_completer(entries: list[_Entry]) -> Completer:
    def complete(v: Any) -> Any:
        if v is None:
            return None
        if not isinstance(v, dict):
            raise _Fallback
        out: JSON = {}
        for key, kind, arg in entries:
            if kind == _TYPENAME:
                out[key] = arg
            elif kind == _LEAF:
                x = v.get(key)
                out[key] = None if x is None else arg(x)
            else:
                out[key] = arg(v.get(key))
        return out

    return complete


@dataclass
class Projector:
    """The client's answer for one operation, built from merged data without graphql-core's executor."""

    schema: GraphQLSchema
    document: DocumentNode
    operation: OperationDefinitionNode
    _variables: tuple[str, ...] = ()
    _compiled: dict[tuple[Any, ...], Completer | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._variables = directive_variables(self.document)

    def project(self, data: JSON, variables: Mapping[str, Any]) -> JSON | None:
        """``{"data": ...}`` for a clean merged answer; ``None`` when graphql-core must shape it."""
        key = tuple(bool(variables.get(n)) for n in self._variables)
        root = self._compiled.get(key, False)
        if root is False:
            root = self._compile(variables)
            if len(self._compiled) >= MAX_VARIANTS:
                self._compiled.clear()
            self._compiled[key] = root
        if root is None:
            return None
        try:
            return {"data": root(data)}
        except (_Fallback, GraphQLError, TypeError, ValueError):
            return None

    def _compile(self, variables: Mapping[str, Any]) -> Completer | None:
        root = self.schema.get_root_type(self.operation.operation)
        if root is None:
            return None
        compiler = _Compiler(self.schema, {d.name.value: d for d in self.document.definitions
                                           if isinstance(d, FragmentDefinitionNode)}, variables)
        # The operation as a field whose sub-selection is the root selection set.
        top = FieldNode(name=NameNode(value=""), selection_set=self.operation.selection_set)
        try:
            return _object_completer(compiler.object_fields(root, [top]))
        except _Fallback:
            return None


__all__ = ["Projector", "directive_variables"]
