"""GET /openapi.json on the OpenAI port: an OpenAPI 3.1 description of the REST API.

Kept next to the endpoints it describes; the test suite fuzzes the server against it
(schemathesis), so a response that drifts from this description fails a test.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from cb import __version__

bp = Blueprint("openapi", __name__)


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_RATE_HEADERS = {
    f"x-ratelimit-{part}-{kind}": {"schema": {"type": "string"}, "description": f"{part} of the {kind} window"}
    for part in ("limit", "remaining", "reset")
    for kind in ("requests", "tokens")
}
_ERRORS = {
    "400": _json(_ref("Error"), "Invalid request"),
    "401": _json(_ref("Error"), "Missing or invalid client API key"),
    "403": _json(_ref("Error"), "The key may not use this model"),
    "404": _json(_ref("Error"), "Unknown model or URL"),
    "413": _json(_ref("Error"), "Request body too large"),
    "429": {
        **_json(_ref("Error"), "Rate limit reached"),
        "headers": {"Retry-After": {"schema": {"type": "string"}}, **_RATE_HEADERS},
    },
    "502": _json(_ref("Error"), "The provider failed"),
    "503": _json(_ref("Error"), "No provider available"),
    "504": _json(_ref("Error"), "The provider timed out"),
}
_MESSAGE_CONTENT = {
    "anyOf": [
        {"type": "string"},
        {"type": "null"},
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
                "required": ["type"],
            },
        },
    ]
}

SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    },
    "Message": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": _MESSAGE_CONTENT,
            "name": {"type": "string"},
            "tool_call_id": {"type": "string"},
            "tool_calls": {"type": "array"},
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "examples": ["gpt-4o-mini"]},
            "messages": {"type": "array", "minItems": 1, "items": _ref("Message")},
            "stream": {"type": "boolean"},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "max_tokens": {"type": "integer", "minimum": 1},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            "n": {"type": "integer", "minimum": 1, "maximum": 1},
            "stop": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
            "user": {"type": "string"},
            "tools": {"type": "array"},
            "tool_choice": {},
            "response_format": {"type": "object"},
            "circuit_breaker": {"type": "object"},
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message", "finish_reason"],
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {"type": "object"},
                        "finish_reason": {"type": ["string", "null"]},
                    },
                },
            },
            "usage": _ref("Usage"),
        },
    },
    "Usage": {
        "type": "object",
        "required": ["prompt_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": {"type": "integer"},
            "completion_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "provider": {"type": "string"},
            "context_window": {"type": ["integer", "null"]},
            "input_price_per_million": {"type": ["number", "null"], "description": "USD, in force now"},
            "cached_input_price_per_million": {"type": ["number", "null"]},
            "cache_write_price_per_million": {"type": ["number", "null"], "description": "a 5-minute cache write"},
            "cache_write_1h_price_per_million": {"type": ["number", "null"]},
            "output_price_per_million": {"type": ["number", "null"]},
            "long_context": {
                "type": ["object", "null"],
                "description": "the prices of every token once a prompt is above above_prompt_tokens",
                "properties": {
                    "above_prompt_tokens": {"type": "integer"},
                    "input_price_per_million": {"type": "number"},
                    "output_price_per_million": {"type": "number"},
                    "cached_input_price_per_million": {"type": "number"},
                    "cache_write_price_per_million": {"type": "number"},
                },
            },
            "priced": {
                "type": "boolean",
                "description": "false: no source prices it; its requests are recorded unpriced",
            },
            "chat": {"type": "boolean", "description": "false: it cannot chat (embeddings, speech, images)"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
    },
    "EmbeddingRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "examples": ["text-embedding-3-small"]},
            "input": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
            "encoding_format": {"enum": ["float", "base64"]},
            "dimensions": {"type": "integer", "minimum": 1},
            "user": {"type": "string"},
        },
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"const": "list"},
            "model": {"type": "string"},
            "usage": _ref("Usage"),
            "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"]}},
        },
    },
    "AnthropicError": {
        "type": "object",
        "required": ["type", "error"],
        "properties": {
            "type": {"const": "error"},
            "error": {
                "type": "object",
                "required": ["type", "message"],
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "MessageRequest": {
        "type": "object",
        "required": ["model", "max_tokens", "messages"],
        "properties": {
            "model": {"type": "string", "examples": ["claude-3-5-sonnet"]},
            "max_tokens": {"type": "integer", "minimum": 1},
            "messages": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["role", "content"],
                    "properties": {"role": {"enum": ["user", "assistant"]}, "content": {}},
                },
            },
            "system": {},
            "stream": {"type": "boolean"},
            "tools": {"type": "array"},
            "tool_choice": {"type": "object"},
            "temperature": {"type": "number", "minimum": 0, "maximum": 1},
            "stop_sequences": {"type": "array", "items": {"type": "string"}},
            "metadata": {"type": "object"},
        },
    },
    "AnthropicMessage": {
        "type": "object",
        "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
        "properties": {
            "id": {"type": "string"},
            "type": {"const": "message"},
            "role": {"const": "assistant"},
            "model": {"type": "string"},
            "content": {"type": "array"},
            "stop_reason": {"type": "string"},
            "stop_sequence": {"type": ["string", "null"]},
            "usage": {"type": "object", "required": ["input_tokens", "output_tokens"]},
        },
    },
    "TokenCount": {"type": "object", "required": ["input_tokens"], "properties": {"input_tokens": {"type": "integer"}}},
    "ResponseRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "examples": ["gpt-4o-mini"]},
            "input": {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": {"type": "object"}}]},
            "instructions": {"type": "string"},
            "stream": {"type": "boolean"},
            "store": {"type": "boolean"},
            "previous_response_id": {"type": "string"},
            "tools": {"type": "array"},
            "max_output_tokens": {"type": "integer", "minimum": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "text": {"type": "object"},
        },
    },
    "Response": {
        "type": "object",
        "required": ["id", "object", "created_at", "status", "model", "output"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "response"},
            "created_at": {"type": "integer"},
            "status": {"type": "string"},
            "model": {"type": "string"},
            "output": {"type": "array"},
            "usage": {"type": ["object", "null"]},
        },
    },
    "DeletedResponse": {
        "type": "object",
        "required": ["id", "object", "deleted"],
        "properties": {"id": {"type": "string"}, "object": {"const": "response"}, "deleted": {"const": True}},
    },
    "Health": {
        "type": "object",
        "required": ["status", "version", "storage", "providers"],
        "properties": {
            "status": {"enum": ["healthy", "unhealthy"]},
            "version": {"type": "string"},
            "storage": {"type": "object"},
            "providers": {"type": "object"},
        },
    },
}


_ANTHROPIC_ERRORS = {
    status: _json(_ref("AnthropicError"), answer["description"])
    | ({"headers": answer["headers"]} if "headers" in answer else {})
    for status, answer in _ERRORS.items()
}
_STREAM = {"text/event-stream": {"schema": {"type": "string"}}}
_RESPONSE_ID = [{"name": "response_id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _operation(
    summary: str, ok: dict, body: str | None = None, secured: bool = True, errors: dict | None = None, **extra
) -> dict:
    operation = {
        "summary": summary,
        "responses": {"200": {**ok, "headers": dict(_RATE_HEADERS)}, **(errors or _ERRORS)},
        **extra,
    }
    if body:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if not secured:
        operation["security"] = []
        operation["responses"] = {"200": ok, "503": _json(_ref("Health"), "Storage unreachable")}
    return operation


SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "Circuit Breaker OpenAI-compatible API", "version": __version__},
    "servers": [{"url": "/"}],
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "azure": {"type": "apiKey", "in": "header", "name": "api-key"},
        },
    },
    "security": [{"bearer": []}, {"azure": []}, {}],
    "paths": {
        "/health": {"get": _operation("Server health", _json(_ref("Health"), "Healthy"), secured=False)},
        "/v1/models": {"get": _operation("List models", _json(_ref("ModelList"), "Models"))},
        "/v1/models/{model}": {
            "get": _operation(
                "One model",
                _json(_ref("Model"), "The model"),
                parameters=[{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
            )
        },
        "/v1/chat/completions": {
            "post": _operation(
                "Create a chat completion",
                {
                    "description": "A completion (JSON) or a stream of chunks (text/event-stream)",
                    "content": {
                        "application/json": {"schema": _ref("ChatCompletion")},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                "ChatCompletionRequest",
            )
        },
        "/v1/embeddings": {
            "post": _operation("Create embeddings", _json(_ref("EmbeddingList"), "Embeddings"), "EmbeddingRequest")
        },
        "/v1/messages": {
            "post": _operation(
                "Create a message (Anthropic's Messages API, any model)",
                {
                    "description": "A message (JSON) or Anthropic's named events (text/event-stream)",
                    "content": {"application/json": {"schema": _ref("AnthropicMessage")}, **_STREAM},
                },
                "MessageRequest",
                errors=_ANTHROPIC_ERRORS,
            )
        },
        "/v1/messages/count_tokens": {
            "post": _operation(
                "Count a message's input tokens (x-cb-token-count: provider or estimated)",
                _json(_ref("TokenCount"), "The count"),
                "MessageRequest",
                errors=_ANTHROPIC_ERRORS,
            )
        },
        "/v1/responses": {
            "post": _operation(
                "Create a response (OpenAI's Responses API, any model)",
                {
                    "description": "A response (JSON) or the Responses API's typed events (text/event-stream)",
                    "content": {"application/json": {"schema": _ref("Response")}, **_STREAM},
                },
                "ResponseRequest",
            )
        },
        "/v1/responses/compact": {
            "post": _operation(
                "Compact a conversation (OpenAI's remote compaction; relayed to an OpenAI deployment, 404 for other models)",
                _json({"type": "object"}, "The compacted conversation, as OpenAI answered it"),
                "ResponseRequest",
            )
        },
        "/v1/responses/{response_id}": {
            "get": _operation("A stored response", _json(_ref("Response"), "The response"), parameters=_RESPONSE_ID),
            "delete": _operation(
                "Delete a stored response", _json(_ref("DeletedResponse"), "Deleted"), parameters=_RESPONSE_ID
            ),
        },
    },
}


@bp.get("/openapi.json")
def openapi():
    return jsonify(SPEC)
