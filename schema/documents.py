"""GraphQL documents parsed and validated once per worker, keyed by their text.

Clients send the same few documents again and again (createToken, fireTransition, a
dashboard's queries) with different variables. Validating a document is by far the most
expensive step of a small mutation (graphql-core walks the whole AST once per rule), and
its outcome depends only on the text, the schema and the rules, so both the parsed
document and its validation errors are kept in a bounded LRU.

The same cache serves POST and GET /graphql (as Ariadne's ``query_parser`` and
``query_validator`` hooks) and the WebSocket transports (:func:`prepare_document`).
Cached errors are GraphQLError objects; the error formatter builds a fresh dict from
them on every answer, so answers, codes and statuses are those of an uncached run.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection
from typing import Any

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse, specified_rules, validate

CACHE_SIZE = 1000


class DocumentCache:
    """A bounded LRU of parsed documents (or their syntax error) and their validation errors."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._parsed: OrderedDict[str, DocumentNode | GraphQLError] = OrderedDict()
        # validation results, keyed by the cached document object itself (held here too,
        # so its id stays unique while the entry lives) and the rules it was checked with
        self._validated: dict[tuple[int, tuple], tuple[DocumentNode, list[GraphQLError]]] = {}

    def parse(self, query: str) -> DocumentNode:
        """The document for ``query``; raises its GraphQLError if it does not parse."""
        found = self._parsed.get(query)
        if found is None:
            try:
                found = parse(query)
            except GraphQLError as exc:
                found = exc
            self._parsed[query] = found
            if len(self._parsed) > self.size:
                _, evicted = self._parsed.popitem(last=False)
                self._forget(evicted)
        else:
            self._parsed.move_to_end(query)
        if isinstance(found, GraphQLError):
            raise found
        return found

    def validate(
        self, schema: GraphQLSchema, document: DocumentNode, rules: Collection[type[ASTValidationRule]]
    ) -> list[GraphQLError]:
        key = (id(document), tuple(rules))
        cached = self._validated.get(key)
        if cached is not None and cached[0] is document:
            return cached[1]
        errors = validate(schema, document, rules)
        if self._parsed.get(_text_of(document)) is document:  # only documents this cache holds
            self._validated[key] = (document, errors)
        return errors

    def _forget(self, evicted: DocumentNode | GraphQLError) -> None:
        if isinstance(evicted, DocumentNode):
            for key in [k for k in self._validated if k[0] == id(evicted)]:
                del self._validated[key]

    # Ariadne's hooks -------------------------------------------------------------------

    def query_parser(self, _context: Any, data: dict) -> DocumentNode:
        return self.parse(data["query"])

    def query_validator(
        self,
        schema: GraphQLSchema,
        document_ast: DocumentNode,
        rules: Collection[type[ASTValidationRule]] | None = None,
        max_errors: int | None = None,
        **_kwargs: Any,
    ) -> list[GraphQLError]:
        return self.validate(schema, document_ast, rules if rules is not None else specified_rules)


def _text_of(document: DocumentNode) -> str | None:
    return document.loc.source.body if document.loc is not None else None


documents = DocumentCache()
