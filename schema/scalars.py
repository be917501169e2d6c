"""The JSON scalar.

Takes any JSON literal; a string that holds a JSON object or array is decoded, so the
guide's ``data: "{\\"title\\": \\"My Document\\"}"`` stores an object.
"""

from __future__ import annotations

import json

from ariadne import ScalarType
from graphql import ValueNode, value_from_ast_untyped

json_scalar = ScalarType("JSON")


@json_scalar.serializer
def serialize_json(value):
    return value


@json_scalar.value_parser
def parse_json_value(value):
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "["):
            try:
                return json.loads(stripped)
            except ValueError:
                return value
    return value


@json_scalar.literal_parser
def parse_json_literal(ast: ValueNode, variables=None):
    return parse_json_value(value_from_ast_untyped(ast, variables))
