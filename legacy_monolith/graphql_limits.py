"""A validation rule bounding query depth.

Every level is batched, but breadth multiplies with depth
(``person { knownFor { cast { person { knownFor ... } } } }``), so a document
deeper than :data:`MAX_DEPTH` is refused before anything runs.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)

MAX_DEPTH = 10


class MaxDepthRule(ValidationRule):
    """Refuse operations whose fields nest deeper than :data:`MAX_DEPTH`."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args: Any) -> None:
        depth = self._depth(node.selection_set, set())
        if depth > MAX_DEPTH:
            name = f"'{node.name.value}'" if node.name else "the anonymous operation"
            self.report_error(
                GraphQLError(f"{name} nests {depth} levels deep; at most {MAX_DEPTH} are allowed", node)
            )

    def _depth(self, selections: SelectionSetNode | None, seen: set[str]) -> int:
        if selections is None:
            return 0
        deepest = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                deepest = max(deepest, 1 + self._depth(selection.selection_set, seen))
            elif isinstance(selection, InlineFragmentNode):
                deepest = max(deepest, self._depth(selection.selection_set, seen))
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.context.get_fragment(name)
                if fragment is not None and name not in seen:  # cycles are another rule's error
                    deepest = max(deepest, self._depth(fragment.selection_set, seen | {name}))
        return deepest
