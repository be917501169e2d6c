"""Anthropic's Messages API at our edge: ``POST /v1/messages`` bodies -> canonical types, and back.

Any model the gateway serves answers in this shape. The body is checked for what the
translation needs (``max_tokens``, turns and blocks it reads) and translated into a
:class:`ChatRequest`: ``system`` (top-level or a ``system`` turn anywhere, as Claude Code sends)
is a system message in place, ``tool_use`` blocks are tool calls, ``tool_result`` blocks are
tool messages, images are data or plain URLs, ``thinking`` / ``output_config.effort`` are the
reasoning effort, tool names are made safe for every target (:mod:`cb.llm.tools`). The body
itself rides along in ``ChatRequest.anthropic_body`` so an Anthropic deployment gets it
unchanged. For other vendors the translation is lenient: what cannot cross (thinking blocks,
``cache_control``, ``context_management``, server tools other than web search, unknown blocks
and fields) is left out and listed in ``ChatRequest.dropped``, never a 400.

Answers are rendered as ``message`` objects, and streams as Anthropic's named events
(:class:`MessageEvents`). Errors use Anthropic's envelope (:func:`error_body`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from cb.llm.errors import InvalidRequest
from cb.llm.tools import TOOL_IMAGES, Crossing, arguments_object, canonical_name
from cb.llm.types import (
    ChatRequest,
    ChatResponse,
    ClientTool,
    ContentPart,
    Message,
    StreamChunk,
    ToolCall,
    Usage,
)
from cb.llm.wire import _integer, _number, _typed

#: Anthropic's error type for each status it uses (others: api_error for 5xx, else invalid_request_error)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

#: blocks of earlier assistant turns that only Anthropic can read back; dropped for other providers
ANTHROPIC_ONLY_BLOCKS = ("thinking", "redacted_thinking")


def error_body(status: int, message: str, code: str | None = None) -> dict:
    """Anthropic's error envelope: ``{"type": "error", "error": {"type", "message"}}``. A prompt too
    long for another vendor's model says so in Anthropic's words, which Claude Code compacts on."""
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    if code == "context_length_exceeded" and "prompt is too long" not in message:
        message = f"prompt is too long: {message}"
    return {"type": "error", "error": {"type": kind, "message": message}}


def _fail(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param)


# -- requests ------------------------------------------------------------------------------

#: top-level fields translated for other vendors; any other one is named in x-cb-dropped
TRANSLATED = {
    "model", "messages", "system", "max_tokens", "stream", "temperature", "top_p", "top_k",
    "stop_sequences", "tools", "tool_choice", "metadata", "thinking", "output_config", "circuit_breaker",
}  # fmt: skip
BILLING_HEADER = "x-anthropic-billing-header"  # the first system block Claude Code sends
#: server tools (run by Anthropic) by type prefix that other vendors may have (search, fetch, code)
SERVER_TOOLS = ("web_search", "web_fetch", "code_execution")


class _Parse(Crossing):
    """A Messages request's :class:`Crossing`, noting ``cache_control`` wherever it is set."""

    def cached(self, block: dict) -> None:
        if "cache_control" in block:
            self.drop("cache_control")


def parse_request(body: Any, counting: bool = False) -> ChatRequest:
    """Validate a Messages API body into a :class:`ChatRequest` (``counting``: for count_tokens,
    where ``max_tokens`` is not needed).

    Lenient, as Claude Code needs: ``system`` turns anywhere, unknown blocks and fields and
    Anthropic's server tools are accepted; what cannot reach another vendor is listed in
    ``ChatRequest.dropped`` (an Anthropic deployment gets the body itself)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail("model", "Field required" if model is None else "Input should be a valid string")
    max_tokens = _integer(body, "max_tokens", 1)
    if max_tokens is None and not counting:
        raise _fail("max_tokens", "Field required")
    turns = body.get("messages")
    if not isinstance(turns, list) or not turns:
        raise _fail("messages", "Field required" if turns is None else "Input should be a non-empty list")
    parse = _Parse()
    messages = _system(body.get("system"), parse)
    for i, turn in enumerate(turns):
        messages.extend(_turn(turn, i, parse))
    _tools(body.get("tools"), parse)
    tools = parse.tools or None
    parallel = None
    choice = _tool_choice(body.get("tool_choice"))
    if isinstance(choice, tuple):
        choice, parallel = choice
    forced = isinstance(choice, dict) and choice["function"]["name"] in parse.server_names
    if forced:
        choice = None
    metadata = _typed(body, "metadata", dict, "an object") or {}
    user = metadata.get("user_id")
    if user is not None and not isinstance(user, str):
        raise _fail("metadata.user_id", "Input should be a valid string")
    for name in body:
        if name not in TRANSLATED:
            parse.drop(name)
    effort, budget, response_format = _reasoning(body, parse)
    native = {k: v for k, v in body.items() if k != "circuit_breaker"}
    return ChatRequest(
        model=model,
        messages=messages,
        stream=bool(_typed(body, "stream", bool, "a boolean")),
        temperature=_number(body, "temperature", 0, 1),
        top_p=_number(body, "top_p", 0, 1),
        top_k=_integer(body, "top_k", 0),
        max_tokens=max_tokens,
        stop=_stop_sequences(body.get("stop_sequences")),
        user=hashed_user(user),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        response_format=response_format,
        routing=_typed(body, "circuit_breaker", dict, "an object") or {},
        anthropic_body=native,
        reasoning_effort=effort,
        reasoning_budget=budget,
        server_tools=parse.server_tools,
        server_tools_required=bool(parse.server_tools) and (forced or not tools),
        client_tools=parse.client_tools,
        dropped=parse.dropped,
    )


def hashed_user(user: str | None) -> str | None:
    """``metadata.user_id`` as a ``user`` other vendors take: itself when short, else a digest of it
    (Claude Code sends about 150 characters of JSON; OpenAI takes at most 64), of its account or
    device rather than its session when it is Claude Code's JSON, so usage is one user's."""
    if user is None or (len(user) <= 64 and user.isprintable()):
        return user
    try:  # Claude Code's: {"device_id", "account_uuid", "session_id"}; a user is not one session
        fields = json.loads(user)
    except ValueError:
        fields = None
    if isinstance(fields, dict):
        stable = fields.get("account_uuid") or fields.get("device_id")
        user = stable if isinstance(stable, str) and stable else user
    return "user-" + hashlib.sha256(user.encode()).hexdigest()[:32]


def _reasoning(body: dict, parse: _Parse) -> tuple[str | None, int | None, dict | None]:
    """``thinking`` and ``output_config`` as (effort, budget, response_format)."""
    thinking = body.get("thinking") if isinstance(body.get("thinking"), dict) else {}
    config = body.get("output_config") if isinstance(body.get("output_config"), dict) else {}
    effort = config.get("effort") if isinstance(config.get("effort"), str) else None
    budget = thinking.get("budget_tokens") if thinking.get("type") == "enabled" else None
    if thinking.get("type") == "disabled":
        effort = None
    elif thinking.get("type") in ("enabled", "adaptive") and effort is None and not isinstance(budget, int):
        effort = "medium"
    response_format = None
    spec = config.get("format")
    if isinstance(spec, dict) and spec.get("type") == "json_schema" and isinstance(spec.get("schema"), dict):
        response_format = {"type": "json_schema", "json_schema": {"name": "output", "schema": spec["schema"]}}
    elif spec is not None:
        parse.drop("output_config.format")
    return effort, budget if isinstance(budget, int) and not isinstance(budget, bool) else None, response_format


def _text_blocks(raw: Any, param: str, parse: _Parse) -> str:
    """A string, or text blocks (``cache_control`` allowed), as one text."""
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise _fail(param, "Input should be a valid string or a list of text blocks")
    texts = []
    for i, block in enumerate(raw):
        if not isinstance(block, dict) or block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise _fail(f"{param}.{i}", "Input should be a text block ({type: 'text', text})")
        parse.cached(block)
        if block["text"].startswith(BILLING_HEADER):
            parse.drop(BILLING_HEADER)  # Claude Code's attribution for Anthropic, not an instruction
            continue
        texts.append(block["text"])
    return "\n\n".join(texts)


def _system(raw: Any, parse: _Parse) -> list[Message]:
    if raw is None:
        return []
    text = _text_blocks(raw, "system", parse)
    return [Message("system", text)] if text else []


def _turn(raw: Any, i: int, parse: _Parse) -> list[Message]:
    """One Messages API turn as canonical messages: tool results first (as tool messages), then the rest.
    A ``system`` turn (Claude Code's mid-conversation instructions) is a system message."""
    at = f"messages.{i}"
    if not isinstance(raw, dict):
        raise _fail(at, "Input should be an object with 'role' and 'content'")
    role = raw.get("role")
    if role not in ("user", "assistant", "system"):
        raise _fail(f"{at}.role", f"Input should be 'user', 'assistant' or 'system' (got {role!r})")
    content = raw.get("content")
    if role == "system":
        if isinstance(content, list):
            for block in content:
                if not isinstance(block, dict) or block.get("type") != "text":
                    parse.drop(f"{block.get('type') if isinstance(block, dict) else 'unknown'} blocks in system turns")
            content = [b for b in content if isinstance(b, dict) and b.get("type") == "text"]
        text = _text_blocks(content, f"{at}.content", parse)
        return [Message("system", text)] if text else []
    if isinstance(content, str):
        return [Message(role, content)]
    if not isinstance(content, list):
        raise _fail(f"{at}.content", "Input should be a valid string or a list of content blocks")
    parts: list[ContentPart] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    shown: list[ContentPart] = []  # images tool results returned (a screenshot Read)
    for j, block in enumerate(content):
        where = f"{at}.content.{j}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind is None:
            raise _fail(where, "Input should be a content block with a 'type'")
        parse.cached(block)
        if kind == "text":
            if not isinstance(block.get("text"), str):
                raise _fail(f"{where}.text", "Field required")
            parts.append(ContentPart("text", text=block["text"]))
        elif kind == "image" and isinstance(block.get("source"), dict) and block["source"].get("type") != "file":
            parts.append(ContentPart("image_url", image_url=_image_url(block.get("source"), f"{where}.source")))
        elif kind == "document" and (block.get("source") or {}).get("type") == "text":
            parts.append(ContentPart("text", text=str(block["source"].get("data") or "")))
        elif kind == "tool_use" and role == "assistant":
            calls.append(_tool_use(block, where))
        elif kind == "tool_result" and role == "user":
            result, images = _tool_result(block, where, parse)
            results.append(result)
            shown += images
        elif kind in ANTHROPIC_ONLY_BLOCKS:
            parse.drop("thinking")
        else:  # server tool blocks, documents, search results, container uploads, blocks newer than us
            parse.drop(f"{kind} blocks")
    messages = results
    if shown:  # other vendors take no images in a tool result: they follow it, in the user turn
        parts = [ContentPart("text", text=TOOL_IMAGES), *shown, *parts]
    if parts or calls or not results:
        if len(parts) == 1 and parts[0].type == "text":
            body: str | list[ContentPart] | None = parts[0].text
        else:
            body = parts or None
        messages.append(Message(role, body, calls))
    return messages


def _image_url(source: Any, at: str) -> str:
    if isinstance(source, dict) and source.get("type") == "base64":
        media, data = source.get("media_type"), source.get("data")
        if isinstance(media, str) and isinstance(data, str):
            return f"data:{media};base64,{data}"
    if isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise _fail(at, "Input should be {type: 'base64', media_type, data} or {type: 'url', url}")


def _tool_use(block: dict, at: str) -> ToolCall:
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise _fail(at, "a tool_use block needs 'id' and 'name' strings")
    arguments = block.get("input", {})
    if not isinstance(arguments, dict):
        raise _fail(f"{at}.input", "Input should be a valid dictionary")
    return ToolCall(block["id"], canonical_name(block["name"]), json.dumps(arguments))


def _tool_result(block: dict, at: str, parse: _Parse) -> tuple[Message, list[ContentPart]]:
    """A tool result as a tool message with its text, and the images it returned."""
    if not isinstance(block.get("tool_use_id"), str):
        raise _fail(f"{at}.tool_use_id", "Field required")
    content = block.get("content", "")
    images: list[ContentPart] = []
    if isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text") or ""))
            elif kind == "image" and (part.get("source") or {}).get("type") in ("base64", "url"):
                images.append(ContentPart("image_url", image_url=_image_url(part["source"], f"{at}.content.{k}")))
            elif kind == "tool_reference":  # Claude Code's ToolSearch loaded a deferred tool: it is in `tools` now
                texts.append(f"Tool {part.get('tool_name')} is loaded and can be called now.")
            else:
                parse.drop(f"{kind} blocks in tool results")
        content = "\n\n".join(texts)
    elif not isinstance(content, str):
        raise _fail(f"{at}.content", "Input should be a valid string or a list of blocks")
    if block.get("is_error") is True:
        content = "Error: " + content
    return Message("tool", content, tool_call_id=block["tool_use_id"]), images


def _tools(raw: Any, parse: _Parse) -> None:
    """Client tools (``defer_loading`` ones too) under names every target takes; Anthropic's
    server tools noted (search, fetch, code execution: other vendors may run them) or dropped (the rest)."""
    if raw is None:
        return
    if not isinstance(raw, list):
        raise _fail("tools", "Input should be a valid list")
    for i, tool in enumerate(raw):
        at = f"tools.{i}"
        if not isinstance(tool, dict):
            raise _fail(at, "Input should be an object with 'name' and 'input_schema'")
        parse.cached(tool)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            if isinstance(tool.get("name"), str):
                parse.server_names.add(tool["name"])
            server = next((name for name in SERVER_TOOLS if isinstance(kind, str) and kind.startswith(name)), None)
            if server:
                parse.server_tools.append(server)
            else:
                parse.drop(str(kind))
            continue
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise _fail(f"{at}.name", "Field required")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _fail(f"{at}.input_schema", "Field required" if schema is None else "Input should be an object")
        description = tool.get("description")
        parse.add_tool(tool["name"], description if isinstance(description, str) else None, schema)


def _tool_choice(raw: Any) -> str | dict | tuple | None:
    """Anthropic's tool_choice as the canonical one; (choice, False) when parallel tool use is disabled."""
    if raw is None:
        return None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "tool":
        if not isinstance(raw.get("name"), str):
            raise _fail("tool_choice.name", "Field required")
        choice: str | dict = {"type": "function", "function": {"name": canonical_name(raw["name"])}}
    elif kind in ("auto", "any", "none"):
        choice = {"auto": "auto", "any": "required", "none": "none"}[kind]
    else:
        raise _fail("tool_choice", "Input should be {type: 'auto' | 'any' | 'tool' | 'none'}")
    if raw.get("disable_parallel_tool_use") is True:
        return choice, False
    return choice


def _stop_sequences(raw: Any) -> list[str] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise _fail("stop_sequences", "Input should be a list of strings")
    return raw or None


# -- answers ---------------------------------------------------------------------------


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex[:24]


def new_tool_use_id() -> str:
    return "toolu_" + uuid.uuid4().hex[:24]


def stop_reason(finish: str | None, stop_sequence: str | None = None) -> str:
    if stop_sequence:
        return "stop_sequence"
    return STOP_REASONS.get(finish or "stop", "end_turn")


def render_usage(usage: Usage) -> dict:
    """Anthropic's usage: cache reads and writes apart from ``input_tokens``, as Claude Code sums them."""
    cached, written = usage.cached_tokens, usage.cache_write_tokens
    return {
        "input_tokens": max(usage.prompt_tokens - cached - written, 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
        "output_tokens": usage.completion_tokens,
    }


def render_message(response: ChatResponse, model: str, client_tools: dict[str, ClientTool] | None = None) -> dict:
    """A canonical answer as Anthropic's ``message`` object, named after ``model``; tools called
    under the names the client gave them (``client_tools``, see :mod:`cb.llm.tools`)."""
    choice = response.choices[0]
    content: list[dict] = []
    text = choice.message.text()
    if text or not choice.message.tool_calls:
        content.append({"type": "text", "text": text})
    for call in choice.message.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id or new_tool_use_id(),
                "name": (client_tools or {}).get(call.name, ClientTool(call.name)).name,
                "input": arguments_object(call.arguments),
            }
        )
    return {
        "id": response.id if response.id.startswith("msg_") else new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.finish_reason, choice.stop_sequence),
        "stop_sequence": choice.stop_sequence,
        "usage": render_usage(response.usage),
    }


class MessageEvents:
    """One stream's canonical chunks as Anthropic's named events: (event name, data) pairs.

    Text and each tool call are content blocks, opened with ``content_block_start``, fed by
    ``text_delta`` / ``input_json_delta`` and closed with ``content_block_stop`` before the
    next one opens; the finish reason and usage come last, in ``message_delta``. While the
    upstream is silent the stream sends ``ping`` events (:attr:`keepalive`), as Anthropic does."""

    keepalive = b'event: ping\ndata: {"type":"ping"}\n\n'

    def __init__(self, model: str, input_tokens: int, client_tools: dict[str, ClientTool] | None = None):
        self.model = model
        self.client_tools = client_tools or {}
        self.input_tokens = input_tokens  # an estimate: the real count arrives in message_delta
        self.id = new_message_id()
        self._blocks = 0
        self._open: tuple[str, int] | None = None  # ("text" | "tool_use", block index)
        self._tools: dict[int, int] = {}  # canonical tool call index -> block index
        self._finish: str | None = None

    def start(self) -> list[tuple[str, dict]]:
        message = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": render_usage(Usage(self.input_tokens, 0)),
        }
        return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]

    def _close(self) -> list[tuple[str, dict]]:
        if self._open is None:
            return []
        index, self._open = self._open[1], None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]

    def _begin(self, block: dict) -> list[tuple[str, dict]]:
        events = self._close()
        self._open = (block["type"], self._blocks)
        self._blocks += 1
        return events + [
            ("content_block_start", {"type": "content_block_start", "index": self._open[1], "content_block": block})
        ]

    def _delta(self, index: int, delta: dict) -> tuple[str, dict]:
        return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}

    def chunk(self, chunk: StreamChunk) -> list[tuple[str, dict]]:
        events: list[tuple[str, dict]] = []
        if chunk.content:
            if self._open is None or self._open[0] != "text":
                events += self._begin({"type": "text", "text": ""})
            events.append(self._delta(self._open[1], {"type": "text_delta", "text": chunk.content}))
        for call in chunk.tool_calls:
            if call.index not in self._tools:
                events += self._begin(
                    {
                        "type": "tool_use",
                        "id": call.id or new_tool_use_id(),
                        "name": self.client_tools.get(call.name or "", ClientTool(call.name or "")).name,
                        "input": {},
                    }
                )
                self._tools[call.index] = self._open[1]
            if call.arguments:
                events.append(
                    self._delta(self._tools[call.index], {"type": "input_json_delta", "partial_json": call.arguments})
                )
        if chunk.finish_reason:
            self._finish = chunk.finish_reason
        return events

    def end(self, usage: Usage) -> list[tuple[str, dict]]:
        delta = {"stop_reason": stop_reason(self._finish), "stop_sequence": None}
        return self._close() + [
            ("message_delta", {"type": "message_delta", "delta": delta, "usage": render_usage(usage)}),
            ("message_stop", {"type": "message_stop"}),
        ]

    def fail(self, status: int, message: str, code: str | None = None) -> list[tuple[str, dict]]:
        return [("error", error_body(status, message, code))]


# -- model listing -------------------------------------------------------------------------


def render_model(model: dict) -> dict:
    """One of the gateway's models as Anthropic describes a model."""
    created = datetime.fromtimestamp(model.get("created") or 0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "model",
        "id": model["id"],
        "display_name": model.get("display_name") or model["id"],
        "created_at": created,
    }


def render_models(models: list[dict], limit: str | None, after_id: str | None, before_id: str | None) -> dict:
    """The gateway's models as Anthropic's ``GET /v1/models`` lists them (what Claude Code reads
    for gateway model discovery): one page of ``limit`` (1-1000, 20 by default) after ``after_id``
    or before ``before_id``, with ``first_id``, ``last_id`` and ``has_more``."""
    try:
        size = 20 if limit in (None, "") else int(limit)
    except ValueError:
        size = 0
    if not 1 <= size <= 1000:
        raise InvalidRequest("limit: Input should be an integer between 1 and 1000", "limit")
    ids = [m["id"] for m in models]
    start, end = 0, len(models)
    if after_id:
        start = ids.index(after_id) + 1 if after_id in ids else end
    elif before_id:
        end = ids.index(before_id) if before_id in ids else 0
        start = max(0, end - size)
    page = models[start : min(end, start + size)]
    data = [render_model(m) for m in page]
    more = start > 0 if before_id else start + len(page) < end
    return {
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": more,
    }
