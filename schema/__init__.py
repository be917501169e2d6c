"""The GraphQL schema: SDL in ``schema/*.graphql``, thin Ariadne bindables beside it.

Each module in ``BINDABLE_MODULES`` exposes ``bindables`` (a list of Ariadne object
types and scalars) resolving the types of its own ``.graphql`` file.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from pathlib import Path

from ariadne import QueryType, load_schema_from_path, make_executable_schema
from graphql import GraphQLError, GraphQLSchema

from cb import __version__
from cb.errors import CircuitBreakerError
from schema.scalars import json_scalar

BINDABLE_MODULES: list[str] = ["schema.workflows", "schema.llm", "schema.agents", "schema.security"]

query = QueryType()


@query.field("version")
def resolve_version(*_):
    return __version__


@lru_cache(maxsize=1)
def get_schema() -> GraphQLSchema:
    bindables = [query, json_scalar]
    for name in BINDABLE_MODULES:
        bindables.extend(importlib.import_module(name).bindables)
    type_defs = load_schema_from_path(str(Path(__file__).parent))
    return make_executable_schema(type_defs, *bindables)


def format_error(error: GraphQLError, debug: bool = False) -> dict:
    """Every error carries ``extensions.code``; domain errors keep their own code."""
    formatted = error.formatted
    original = error.original_error
    if isinstance(original, CircuitBreakerError):
        code = original.code
        formatted["message"] = original.message
    elif original is not None and not isinstance(original, GraphQLError):  # a scalar's own error keeps its words
        code = "INTERNAL_SERVER_ERROR"
        formatted["message"] = "Internal server error"
    else:
        code = "GRAPHQL_VALIDATION_FAILED"
    formatted.setdefault("extensions", {})
    formatted["extensions"]["code"] = formatted["extensions"].get("code", code)
    return formatted
