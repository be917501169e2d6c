"""The JSON scalar.

Takes any JSON literal; a string that holds a JSON object or array is decoded, so the
guide's ``data: "{\\"title\\": \\"My Document\\"}"`` stores an object. Such a string is
refused (BAD_REQUEST) when it nests deeper than MAX_JSON_DEPTH, like a request body.
"""

from __future__ import annotations

import json

from ariadne import ScalarType
from graphql import GraphQLError, ValueNode, value_from_ast_untyped

from cb.jsondepth import NestingTooDeep, check_json

json_scalar = ScalarType("JSON")
max_depth = 64  # MAX_JSON_DEPTH, set by the app at start (configure_depth)


def configure_depth(limit: int) -> None:
    """Apply MAX_JSON_DEPTH to JSON values sent as strings."""
    global max_depth
    max_depth = limit


@json_scalar.serializer
def serialize_json(value):
    return value


@json_scalar.value_parser
def parse_json_value(value):
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "["):
            try:
                check_json(stripped, max_depth, "The JSON value")
            except NestingTooDeep as exc:
                raise GraphQLError(exc.message, extensions={"code": "BAD_REQUEST"}) from None
            try:
                return json.loads(stripped)
            except ValueError:
                return value
    return value


@json_scalar.literal_parser
def parse_json_literal(ast: ValueNode, variables=None):
    return parse_json_value(value_from_ast_untyped(ast, variables))
