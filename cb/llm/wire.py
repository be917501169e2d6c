"""OpenAI's public wire format at our edge: request JSON -> canonical types, and back.

Parsing validates types and names the offending field in ``param`` (as OpenAI does,
e.g. ``messages[1].content``). Rendering puts the model the *client* asked for in every
response, whatever deployment served it.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import time
from collections.abc import Mapping
from typing import Any

from cb.llm.errors import InvalidRequest
from cb.llm.routing import RequestContext
from cb.llm.types import (
    ChatRequest,
    ChatResponse,
    ContentPart,
    EmbeddingRequest,
    EmbeddingResponse,
    Message,
    StreamChunk,
    Tool,
    ToolCall,
    Usage,
)

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
TOOL_CHOICES = ("none", "auto", "required")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")


def _fail(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(message, param)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value):
        raise _fail(f"Invalid type for '{name}': expected a number, got {type(value).__name__}.", name)
    if not low <= value <= high:
        raise _fail(f"Invalid '{name}': {value} is out of range ({low} to {high}).", name)
    return value


def _integer(body: dict, name: str, low: int | None = None, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise _fail(f"Invalid type for '{name}': expected an integer, got {type(value).__name__}.", name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise _fail(f"Invalid '{name}': {value} is out of range.", name)
    return value


def _typed(body: dict, name: str, kind: type | tuple, what: str) -> Any:
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        raise _fail(f"Invalid type for '{name}': expected {what}.", name)
    return value


def _parts(content: list, where: str) -> list[ContentPart]:
    parts = []
    for i, raw in enumerate(content):
        at = f"{where}[{i}]"
        if not isinstance(raw, dict):
            raise _fail(f"Invalid content part at '{at}': expected an object.", at)
        kind = raw.get("type")
        if kind == "text":
            if not isinstance(raw.get("text"), str):
                raise _fail(f"Invalid '{at}.text': expected a string.", f"{at}.text")
            parts.append(ContentPart("text", text=raw["text"]))
        elif kind == "image_url":
            image = raw.get("image_url")
            if isinstance(image, str):
                image = {"url": image}
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise _fail(f"Invalid '{at}.image_url': expected an object with a 'url' string.", f"{at}.image_url")
            parts.append(ContentPart("image_url", image_url=image["url"], detail=image.get("detail")))
        else:
            raise _fail(f"Invalid '{at}.type': {kind!r} (supported: 'text', 'image_url').", f"{at}.type")
    return parts


def _tool_calls(raw: Any, where: str) -> list[ToolCall]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail(f"Invalid type for '{where}': expected an array.", where)
    calls = []
    for i, call in enumerate(raw):
        at = f"{where}[{i}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _fail(f"Invalid '{at}': expected {{id, type: 'function', function: {{name, arguments}}}}.", at)
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            raise _fail(
                f"Invalid type for '{at}.function.arguments': expected a JSON string.", f"{at}.function.arguments"
            )
        calls.append(ToolCall(str(call.get("id") or ""), function["name"], arguments))
    return calls


def _message(raw: Any, i: int) -> Message:
    at = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise _fail(f"Invalid type for '{at}': expected an object.", at)
    role = raw.get("role")
    if role not in ROLES:
        raise _fail(f"Invalid value for '{at}.role': {role!r} (supported: {', '.join(ROLES[:5])}).", f"{at}.role")
    content = raw.get("content")
    if isinstance(content, list):
        content = _parts(content, f"{at}.content")
    elif content is not None and not isinstance(content, str):
        raise _fail(
            f"Invalid type for '{at}.content': expected a string or an array of content parts.", f"{at}.content"
        )
    if role == "developer":
        role = "system"
    if role == "function":  # the legacy form of a tool result
        role = "tool"
    tool_call_id = raw.get("tool_call_id") or (raw.get("name") if raw.get("role") == "function" else None)
    if role == "tool" and not isinstance(tool_call_id, str):
        raise _fail(f"Missing '{at}.tool_call_id': a tool message answers one tool call.", f"{at}.tool_call_id")
    name = raw.get("name")
    return Message(
        role,
        content,
        _tool_calls(raw.get("tool_calls"), f"{at}.tool_calls"),
        tool_call_id,
        name if isinstance(name, str) else None,
    )


def _tools(raw: Any) -> list[Tool] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise _fail("Invalid type for 'tools': expected an array.", "tools")
    tools = []
    for i, item in enumerate(raw):
        at = f"tools[{i}]"
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(item, dict) or item.get("type", "function") != "function" or not isinstance(function, dict):
            raise _fail(f"Invalid '{at}': expected {{type: 'function', function: {{name, parameters}}}}.", at)
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise _fail(f"Missing '{at}.function.name'.", f"{at}.function.name")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise _fail(
                f"Invalid type for '{at}.function.parameters': expected an object.", f"{at}.function.parameters"
            )
        tools.append(Tool(function["name"], function.get("description"), parameters, function.get("strict")))
    return tools


def _tool_choice(raw: Any) -> str | dict | None:
    if raw is None or raw in TOOL_CHOICES:
        return raw
    if isinstance(raw, dict) and isinstance((raw.get("function") or {}).get("name"), str):
        return {"type": "function", "function": {"name": raw["function"]["name"]}}
    raise _fail(
        "Invalid 'tool_choice': expected 'none', 'auto', 'required' or {type: 'function', function: {name}}.",
        "tool_choice",
    )


def _response_format(raw: Any) -> dict | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") not in RESPONSE_FORMATS:
        raise _fail(
            "Invalid 'response_format': type must be 'text', 'json_object' or 'json_schema'.", "response_format"
        )
    if raw["type"] == "json_schema" and not isinstance(raw.get("json_schema"), dict):
        raise _fail("Missing 'response_format.json_schema' for type 'json_schema'.", "response_format.json_schema")
    return None if raw["type"] == "text" else raw


def _stop(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw) and len(raw) <= 4:
        return raw or None
    raise _fail("Invalid 'stop': expected a string or an array of up to 4 strings.", "stop")


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate an OpenAI chat completion body into a :class:`ChatRequest`."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail(
            "Missing required parameter: 'model'." if model is None else "Invalid type for 'model': expected a string.",
            "model",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _fail(
            "Missing required parameter: 'messages'."
            if messages is None
            else "Invalid 'messages': expected a non-empty array of messages.",
            "messages",
        )
    stream = bool(_typed(body, "stream", bool, "a boolean"))
    options = _typed(body, "stream_options", dict, "an object") or {}
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise _fail(
            "Invalid type for 'stream_options.include_usage': expected a boolean.", "stream_options.include_usage"
        )
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    routing = _typed(body, "circuit_breaker", dict, "an object") or {}
    return ChatRequest(
        model=model,
        messages=[_message(m, i) for i, m in enumerate(messages)],
        stream=stream,
        include_usage=stream and include_usage,
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        max_tokens=max_tokens,
        stop=_stop(body.get("stop")),
        n=_integer(body, "n", 1, 128),
        presence_penalty=_number(body, "presence_penalty", -2, 2),
        frequency_penalty=_number(body, "frequency_penalty", -2, 2),
        seed=_integer(body, "seed"),
        user=_typed(body, "user", str, "a string"),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=_typed(body, "parallel_tool_calls", bool, "a boolean"),
        response_format=_response_format(body.get("response_format")),
        logprobs=_typed(body, "logprobs", bool, "a boolean"),
        top_logprobs=_integer(body, "top_logprobs", 0, 20),
        routing=routing,
        reasoning_effort=_typed(body, "reasoning_effort", str, "a string"),  # thinking on Anthropic and Gemini
        cache_key=_typed(body, "prompt_cache_key", str, "a string"),
    )


def apply_routing(ctx: RequestContext, routing: dict, headers: Mapping[str, str] | None = None) -> None:
    """The ``circuit_breaker`` body object (and X-CB-* headers, a mapping whose ``get`` ignores
    case, as Werkzeug's request headers) into the request context."""
    headers = headers if headers is not None else {}
    strategy = routing.get("routing_strategy") or headers.get("x-cb-routing-strategy")
    if strategy is not None and not isinstance(strategy, str):
        raise _fail(
            "Invalid type for 'circuit_breaker.routing_strategy': expected a string.",
            "circuit_breaker.routing_strategy",
        )
    ctx.strategy = strategy or ctx.strategy
    for name in ("max_cost_per_1k_tokens", "max_latency_ms"):
        value = routing.get(name, headers.get("x-cb-" + name.replace("_", "-")))
        if value is None:
            continue
        try:
            value = float(value) if not isinstance(value, bool) else None
        except (TypeError, ValueError):
            value = None
        if value is None:
            raise _fail(f"Invalid type for 'circuit_breaker.{name}': expected a number.", f"circuit_breaker.{name}")
        setattr(ctx, name, value)
    for name in ("fallback_models", "preferred_providers"):
        value = routing.get(name)
        if value is None and headers.get("x-cb-" + name.replace("_", "-")):
            value = [v.strip() for v in headers.get("x-cb-" + name.replace("_", "-")).split(",") if v.strip()]
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(
                f"Invalid type for 'circuit_breaker.{name}': expected an array of strings.", f"circuit_breaker.{name}"
            )
        setattr(ctx, name, value)


def parse_embedding_request(body: Any) -> tuple[EmbeddingRequest, str]:
    """An OpenAI embeddings body -> (request, encoding_format)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("Missing required parameter: 'model'.", "model")
    raw = body.get("input")
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(s, str) for s in raw):
        inputs = raw
    else:
        raise _fail("Invalid 'input': expected a string or a non-empty array of strings.", "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise _fail("Invalid 'encoding_format': expected 'float' or 'base64'.", "encoding_format")
    return EmbeddingRequest(
        model, inputs, _integer(body, "dimensions", 1), _typed(body, "user", str, "a string")
    ), encoding


# -- rendering -------------------------------------------------------------------------


def new_completion_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


def render_usage(usage: Usage) -> dict:
    rendered = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    if usage.prompt_details:
        rendered["prompt_tokens_details"] = dict(usage.prompt_details)
    if usage.completion_details:
        rendered["completion_tokens_details"] = dict(usage.completion_details)
    return rendered


def render_response(response: ChatResponse, model: str) -> dict:
    """A canonical answer as OpenAI's ``chat.completion`` object, named after ``model``."""
    choices = []
    for choice in response.choices:
        message: dict = {"role": "assistant", "content": choice.message.content}
        if choice.message.tool_calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in choice.message.tool_calls
            ]
        choices.append(
            {
                "index": choice.index,
                "message": message,
                "logprobs": choice.logprobs,
                "finish_reason": choice.finish_reason,
            }
        )
    return {
        "id": response.id if response.id.startswith("chatcmpl-") else new_completion_id(),
        "object": "chat.completion",
        "created": response.created or int(time.time()),
        "model": model,
        "choices": choices,
        "usage": render_usage(response.usage),
    }


_compact_utf8 = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode  # made once, not per frame


def sse_frame(data: dict) -> bytes:
    """One server-sent event carrying ``data`` as compact JSON."""
    return b"data: " + _compact_utf8(data).encode() + b"\n\n"


class ChunkRenderer:
    """Renders one stream's chunks: shared id and created, role on each choice's first delta.

    A chunk whose upstream already spoke OpenAI's format (``chunk.wire``) is relayed as the
    upstream's bytes when they already say what the rendered chunk would: the same id and
    created as the stream so far, a role where one is due, and ``usage: null`` exactly when
    the client asked for usage (added at the end of the object when the upstream left it out). Only ``model`` is rewritten (to the model the client named),
    as a byte replacement of the one ``"model":"…"`` member; when any of that does not hold,
    the chunk is rendered as from any provider."""

    def __init__(self, model: str, include_usage: bool):
        self.model = model
        self.include_usage = include_usage
        self.id = new_completion_id()
        self.created = int(time.time())
        self._role_sent: set[int] = set()
        self._started = False  # a chunk went out: id and created are fixed
        self._model_member = b'"model":' + json.dumps(model, ensure_ascii=False).encode()
        self._upstream_member: tuple[str, bytes] | None = None

    def frame(self, chunk: StreamChunk) -> bytes | None:
        """The chunk as one SSE event (relayed or rendered), or None when it carries nothing."""
        relayed = self._relay(chunk) if chunk.wire is not None else None
        if relayed is not None:
            return b"data: " + relayed + b"\n\n"
        data = self.chunk(chunk)
        return sse_frame(data) if data else None

    def _relay(self, chunk: StreamChunk) -> bytes | None:
        wire = chunk.wire
        if (
            not self._started
            and isinstance(wire.id, str)
            and wire.id.startswith("chatcmpl-")
            and isinstance(wire.created, int)
        ):
            self.id, self.created = wire.id, wire.created
        if wire.id != self.id or wire.created != self.created or not isinstance(wire.model, str):
            return None
        if chunk.index not in self._role_sent and chunk.role != "assistant":
            return None
        if (
            chunk.content is None
            and not chunk.tool_calls
            and chunk.finish_reason is None
            and chunk.logprobs is None
            and chunk.role is None
        ):
            return None  # nothing for the client: rendering drops it
        data = wire.data
        if self.include_usage:
            if b'"usage"' not in data and data.endswith(b"}"):
                data = data[:-1] + b',"usage":null}'  # what OpenAI itself puts in every chunk but the last
            elif b'"usage":null' not in data:
                return None
        elif b'"usage"' in data:
            if data.count(b',"usage":null') != 1:
                return None
            data = data.replace(b',"usage":null', b"")
        if wire.model != self.model:
            if self._upstream_member is None or self._upstream_member[0] != wire.model:
                self._upstream_member = (wire.model, b'"model":' + json.dumps(wire.model, ensure_ascii=False).encode())
            member = self._upstream_member[1]
            if data.count(member) != 1:
                return None
            data = data.replace(member, self._model_member)
        self._started = True
        self._role_sent.add(chunk.index)
        return data

    def _envelope(self, choices: list) -> dict:
        data = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            data["usage"] = None
        return data

    def chunk(self, chunk: StreamChunk) -> dict | None:
        """The chunk's JSON, or None when it carries nothing for the client (usage only)."""
        delta: dict = {}
        if chunk.index not in self._role_sent:
            self._role_sent.add(chunk.index)
            delta["role"] = "assistant"
        if chunk.content is not None:
            delta["content"] = chunk.content
        if chunk.tool_calls:
            calls = []
            for c in chunk.tool_calls:
                call: dict = {"index": c.index}
                if c.id:
                    call["id"] = c.id
                    call["type"] = "function"
                function = {"arguments": c.arguments}
                if c.name:
                    function = {"name": c.name, "arguments": c.arguments}
                call["function"] = function
                calls.append(call)
            delta["tool_calls"] = calls
        if not delta and chunk.finish_reason is None and chunk.logprobs is None:
            return None
        self._started = True
        return self._envelope(
            [{"index": chunk.index, "delta": delta, "logprobs": chunk.logprobs, "finish_reason": chunk.finish_reason}]
        )

    def usage(self, usage: Usage) -> dict:
        """The final ``include_usage`` chunk: no choices, the totals."""
        data = self._envelope([])
        data["usage"] = render_usage(usage)
        return data


def render_embeddings(response: EmbeddingResponse, model: str, encoding: str) -> dict:
    data = []
    for i, vector in enumerate(response.vectors):
        embedding: Any = vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    usage = response.usage
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.prompt_tokens},
    }
