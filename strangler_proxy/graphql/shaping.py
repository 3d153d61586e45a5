"""Response shaping: the merged backend answers -> exactly the client's answer.

The client's document is executed by graphql-core against the composed schema,
with resolvers that only read the merged data by response key. That one step
gives the spec's semantics for free: field order, aliases, fragments,
``@include``/``@skip``, ``__typename``, abstract types (from the ``_gw_t``
typename the planner added), non-null propagation, and introspection answered
from the composed schema. Fields the planner added (``_gw_*``) are never
selected, so they vanish. A backend error is raised where its path is reached,
so it lands at the right place with the client document's locations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import graphql
from graphql import DocumentNode, GraphQLError, GraphQLResolveInfo, GraphQLSchema, is_non_null_type

from strangler_proxy.graphql.planner import TYPENAME_ALIAS

JSON = dict[str, Any]


class _Propagated(GraphQLError):
    """A null whose cause is an error deeper down that is reported as it came."""


class _Errors:
    """Backend errors indexed by path (and by every prefix of it)."""

    def __init__(self, errors: list[JSON]) -> None:
        self.exact: dict[tuple[Any, ...], list[JSON]] = {}
        self.prefixes: set[tuple[Any, ...]] = set()
        self.unplaced: list[JSON] = []
        for e in errors:
            path = e.get("path")
            if isinstance(path, list) and path:
                t = tuple(path)
                self.exact.setdefault(t, []).append(e)
                for n in range(1, len(t)):
                    self.prefixes.add(t[:n])
            else:
                self.unplaced.append(e)
        self.consumed: set[int] = set()

    def remaining(self) -> list[JSON]:
        out = list(self.unplaced)
        for errs in self.exact.values():
            out.extend(e for e in errs if id(e) not in self.consumed)
        return out


def _resolver(errors: _Errors | None) -> Any:
    def resolve(source: Any, info: GraphQLResolveInfo, **_: Any) -> Any:
        v = source.get(info.path.key) if isinstance(source, dict) else None
        if v is None and errors is not None:
            p = tuple(info.path.as_list())
            for e in errors.exact.get(p, ()):
                if id(e) not in errors.consumed:
                    errors.consumed.add(id(e))
                    raise GraphQLError(str(e.get("message", "error")), extensions=e.get("extensions"))
            if p in errors.prefixes and is_non_null_type(info.return_type):
                raise _Propagated("null because of an error below")
        return v

    return resolve


def _type_resolver(value: Any, info: GraphQLResolveInfo, abstract_type: Any) -> str | None:
    if isinstance(value, dict):
        return value.get(TYPENAME_ALIAS) or value.get("__typename")
    return None


_FAST = _resolver(None)


def shape(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None,
    variables: Mapping[str, Any] | None, data: JSON, errors: list[JSON],
) -> JSON:
    """The client's response (``{"data": ..., "errors": [...]}``)."""
    idx = _Errors(errors) if errors else None
    result = graphql.execute(
        schema, document, root_value=data, variable_values=dict(variables or {}), operation_name=operation_name,
        field_resolver=_resolver(idx) if idx else _FAST, type_resolver=_type_resolver,
    )
    assert isinstance(result, graphql.ExecutionResult)  # the resolvers never return awaitables
    out: JSON = {"data": result.data}
    errs = [e.formatted for e in result.errors or () if not isinstance(e.original_error or e, _Propagated)]
    if idx is not None:
        errs.extend(_located(e, document, operation_name) for e in idx.remaining())
    if errs:
        out["errors"] = errs
    return out


def _located(e: JSON, document: DocumentNode, operation_name: str | None) -> JSON:
    """A backend error not reached by shaping, given the client document's location of its field."""
    path = e.get("path")
    if not isinstance(path, list) or "locations" in e:
        return e
    node = _field_at(document, operation_name, path)
    if node is None or node.loc is None:
        return e
    loc = graphql.get_location(node.loc.source, node.loc.start)
    out = {"message": e.get("message"), "locations": [{"line": loc.line, "column": loc.column}]}
    out.update({k: v for k, v in e.items() if k != "message"})
    return out


def _field_at(document: DocumentNode, operation_name: str | None, path: list[Any]) -> graphql.FieldNode | None:
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, graphql.FragmentDefinitionNode)}
    ops = [d for d in document.definitions if isinstance(d, graphql.OperationDefinitionNode)
           and (operation_name is None or (d.name and d.name.value == operation_name))]
    if not ops:
        return None
    selections: list[graphql.SelectionNode] = list(ops[0].selection_set.selections)
    found: graphql.FieldNode | None = None
    for seg in path:
        if isinstance(seg, int):
            continue
        found = None
        stack = list(selections)
        while stack and found is None:
            sel = stack.pop(0)
            if isinstance(sel, graphql.FieldNode):
                if (sel.alias or sel.name).value == seg:
                    found = sel
            elif isinstance(sel, graphql.InlineFragmentNode):
                stack[:0] = sel.selection_set.selections
            elif isinstance(sel, graphql.FragmentSpreadNode) and sel.name.value in fragments:
                stack[:0] = fragments[sel.name.value].selection_set.selections
        if found is None:
            return None
        selections = list(found.selection_set.selections) if found.selection_set else []
    return found
