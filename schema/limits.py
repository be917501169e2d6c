"""Bounds on a query's shape, checked at validation time before anything runs.

Depth counts nested selections (fragments expanded); introspection (``__schema``,
``__type``) is not counted, so GraphiQL's own deep introspection query passes. Size
counts every field selected after fragment expansion.
"""

from __future__ import annotations

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)

MAX_DEPTH = 12
MAX_FIELDS = 2000


class _TooBig(Exception):
    pass


class QueryLimitsRule(ValidationRule):
    """Refuses operations nested deeper than MAX_DEPTH or selecting more than MAX_FIELDS fields."""

    def enter_operation_definition(self, node: OperationDefinitionNode, *_args):
        self.fields = 0
        try:
            depth = self._depth(node.selection_set, 0, frozenset())
        except _TooBig:
            self.report_error(
                GraphQLError(
                    f"Query selects more than {MAX_FIELDS} fields; split it into smaller queries.",
                    node,
                    extensions={"code": "QUERY_TOO_COMPLEX"},
                )
            )
            return
        if depth > MAX_DEPTH:
            name = f"'{node.name.value}' " if node.name else ""
            self.report_error(
                GraphQLError(
                    f"Query {name}is too deep: depth {depth} exceeds the maximum of {MAX_DEPTH}.",
                    node,
                    extensions={"code": "QUERY_TOO_COMPLEX"},
                )
            )

    def _depth(self, selection_set: SelectionSetNode | None, depth: int, seen: frozenset) -> int:
        if selection_set is None:
            return depth
        deepest = depth
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                if selection.name.value.startswith("__"):
                    continue
                self.fields += 1
                if self.fields > MAX_FIELDS:
                    raise _TooBig
                deepest = max(deepest, self._depth(selection.selection_set, depth + 1, seen))
            elif isinstance(selection, InlineFragmentNode):
                deepest = max(deepest, self._depth(selection.selection_set, depth, seen))
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.context.get_fragment(name)
                if fragment is None or name in seen:
                    continue  # reported by the standard rules
                deepest = max(deepest, self._depth(fragment.selection_set, depth, seen | {name}))
        return deepest


VALIDATION_RULES = [QueryLimitsRule]
