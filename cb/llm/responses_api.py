"""OpenAI's Responses API at our edge: ``POST /v1/responses`` bodies -> canonical types, and back.

``input`` (a string, or items: messages of any role, ``function_call``, ``custom_tool_call``
and their outputs) and ``instructions`` become a :class:`ChatRequest` for any provider; a
``previous_response_id`` puts the stored conversation before the new input (see
:mod:`cb.llm.responses_store`), without the earlier ``instructions``, as OpenAI does.
``text.format`` becomes the canonical ``response_format``, ``reasoning.effort`` the reasoning
effort, ``prompt_cache_key`` the cache key. Tools as Codex sends them: ``function``,
``namespace`` (flattened), ``custom`` (a function of one string), ``tool_search`` (a function;
the tools its output found join the request's), live web search (the target's own search, if it
has one); the names the target sees are mapped back in the answer
(:mod:`cb.llm.tools`). Claude's thinking blocks go to a client that keeps encrypted reasoning
as ``reasoning`` items of ours (:func:`encode_reasoning`) and come back to Claude with the turn.
What cannot cross (other vendors' reasoning items, other vendor-run tools, unknown items and
fields) is left out and listed in ``ChatRequest.dropped``.

Answers are ``response`` objects with ``message``, ``function_call`` and ``custom_tool_call``
output items; streams are the API's typed events (:class:`ResponseEvents`), each with its
``sequence_number``, ended by ``response.completed`` or ``response.failed`` with a code Codex
acts on (:func:`failure_code`). Errors use OpenAI's envelope (the port's default).
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from cb.llm.errors import InvalidRequest
from cb.llm.providers.errors import is_context_overflow
from cb.llm.tools import (
    FREEFORM_PARAMETERS,
    TOOL_IMAGES,
    Crossing,
    arguments_object,
    canonical_name,
    client_name,
    custom_input,
)
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

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = ("input_text", "output_text", "text", "refusal")


def _fail(message: str, param: str | None, code: str | None = None) -> InvalidRequest:
    return InvalidRequest(message, param, code)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass
class ResponsesRequest:
    """A parsed Responses API request: the chat to send and what the response object echoes."""

    chat: ChatRequest
    input: list[Message]  # this request's input, without the instructions
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    metadata: dict = field(default_factory=dict)
    echo: dict = field(default_factory=dict)  # tools, tool_choice, text, sampling: as the client sent them

    history: list[Message] = field(default_factory=list)  # of the previous response, when continuing one
    #: the client asked for reasoning items it keeps and sends back (``include: reasoning.encrypted_content``)
    encrypted_reasoning: bool = False

    def continuing(self, history: list[Message]) -> None:
        """Put a stored conversation between the instructions and the new input."""
        self.history = history
        system = [Message("system", self.instructions)] if self.instructions else []
        self.chat = replace(self.chat, messages=system + history + self.input)

    def conversation(self, answer: Message) -> list[Message]:
        """What a continuation of this response starts from: everything but the instructions."""
        return self.history + self.input + [answer]


# -- requests --------------------------------------------------------------------------------


#: top-level fields translated for other vendors, or with no effect on the answer; any other is named
#: in x-cb-dropped
TRANSLATED = {
    "model", "input", "instructions", "previous_response_id", "store", "tool_choice", "stream", "temperature",
    "top_p", "max_output_tokens", "user", "tools", "parallel_tool_calls", "text", "circuit_breaker", "metadata",
    "reasoning", "include", "prompt_cache_key", "client_metadata", "safety_identifier", "service_tier",
    "truncation", "stream_options", "background",
}  # fmt: skip
TOOL_SEARCH = "tool_search"  # Codex's search over its deferred tools (MCP), run by Codex itself
#: tools the vendor runs: web search has an equivalent elsewhere, the others are dropped
SEARCH_TOOLS = ("web_search", "web_search_preview")


def parse_request(body: Any) -> ResponsesRequest:
    """Validate a Responses body. Lenient, as Codex needs: ``developer`` messages anywhere,
    ``namespace`` and ``custom`` tools, reasoning items and options are accepted; what cannot
    reach another vendor is listed in ``ChatRequest.dropped``."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _fail(
            "Missing required parameter: 'model'." if model is None else "Invalid type for 'model': expected a string.",
            "model",
        )
    if body.get("input") is None:
        raise _fail("Missing required parameter: 'input'.", "input")
    parse = Crossing()
    messages = _input(body["input"], parse)
    instructions = _typed(body, "instructions", str, "a string")
    previous = _typed(body, "previous_response_id", str, "a string")
    store = _typed(body, "store", bool, "a boolean")
    _tools(body.get("tools"), parse)
    choice = _tool_choice(body.get("tool_choice"), parse)
    for name in body:
        if name not in TRANSLATED:
            parse.drop(name)
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    effort = reasoning.get("effort") if isinstance(reasoning.get("effort"), str) else None
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    if text.get("verbosity") not in (None, "medium"):
        parse.drop("text.verbosity")
    cache_key = body.get("prompt_cache_key")
    user = _typed(body, "user", str, "a string") or _typed(body, "safety_identifier", str, "a string")
    required = bool(parse.server_tools) and (not parse.tools or choice == "web_search")
    chat = ChatRequest(
        model=model,
        messages=([Message("system", instructions)] if instructions else []) + messages,
        stream=bool(_typed(body, "stream", bool, "a boolean")),
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        max_tokens=_integer(body, "max_output_tokens", 1),
        user=user,
        tools=parse.tools or None,
        tool_choice=None if choice == "web_search" else choice,
        parallel_tool_calls=_typed(body, "parallel_tool_calls", bool, "a boolean"),
        response_format=_text_format(body.get("text")),
        routing=_typed(body, "circuit_breaker", dict, "an object") or {},
        reasoning_effort=effort,
        cache_key=cache_key if isinstance(cache_key, str) else None,
        server_tools=parse.server_tools,
        server_tools_required=required,
        client_tools=parse.client_tools,
        dropped=parse.dropped,
    )
    echo = {
        name: body.get(name)
        for name in (
            "tools",
            "tool_choice",
            "text",
            "temperature",
            "top_p",
            "max_output_tokens",
            "parallel_tool_calls",
            "user",
            "reasoning",
            "prompt_cache_key",
        )
    }
    return ResponsesRequest(
        chat,
        messages,
        instructions,
        previous,
        True if store is None else store,
        _typed(body, "metadata", dict, "an object") or {},
        echo,
        encrypted_reasoning=isinstance(body.get("include"), list) and "reasoning.encrypted_content" in body["include"],
    )


def _content(raw: Any, at: str, parse: Crossing) -> str | list[ContentPart]:
    if isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise _fail(f"Invalid type for '{at}': expected a string or an array of content parts.", at)
    parts = []
    for i, part in enumerate(raw):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind is None:
            raise _fail(f"Invalid '{at}[{i}]': expected a content part with a 'type'.", f"{at}[{i}]")
        if kind in TEXT_PARTS:
            text = part.get("text", part.get("refusal"))
            if not isinstance(text, str):
                raise _fail(f"Missing '{at}[{i}].text'.", f"{at}[{i}].text")
            parts.append(ContentPart("text", text=text))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append(ContentPart("image_url", image_url=part["image_url"], detail=part.get("detail")))
        else:  # files, images by file_id, audio: nothing another vendor can fetch
            parse.drop(f"{kind} parts")
    if len(parts) == 1 and parts[0].type == "text":
        return parts[0].text or ""
    return parts


def _call_name(item: dict, at: str) -> str:
    if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
        raise _fail(f"Invalid '{at}': a {item.get('type')} needs 'call_id' and 'name'.", at)
    namespace = item.get("namespace")
    return canonical_name(item["name"], namespace if isinstance(namespace, str) else None)


def _found_tools(tools: list) -> str:
    """What a tool search found, for the model: each tool's name and description (now callable)."""
    lines = []
    for tool in tools:
        if not isinstance(tool, dict):
            continue
        inner = tool.get("tools") if tool.get("type") == "namespace" and isinstance(tool.get("tools"), list) else [tool]
        for entry in inner:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                namespace = tool.get("name") if entry is not tool else None
                name = canonical_name(entry["name"], namespace if isinstance(namespace, str) else None)
                lines.append(f"- {name}: {str(entry.get('description') or '').strip()}")
    return "Tools found, now available:\n" + "\n".join(lines) if lines else "No tools found."


def _thinking_only(messages: list[Message]) -> bool:
    """Whether the last message is an assistant turn holding only its reasoning so far."""
    last = messages[-1] if messages else None
    return bool(last and last.role == "assistant" and last.reasoning and not last.content and not last.tool_calls)


#: reasoning items we made: Anthropic's thinking blocks for the client to keep and send back
REASONING_PREFIX = "cb1.anthropic."


def encode_reasoning(blocks: list[dict]) -> str:
    """Anthropic's thinking blocks as a reasoning item's ``encrypted_content`` (opaque to the client)."""
    data = json.dumps(blocks, separators=(",", ":")).encode()
    return REASONING_PREFIX + base64.urlsafe_b64encode(data).decode()


def decode_reasoning(content: Any) -> list[dict]:
    """The thinking blocks an ``encrypted_content`` we made carries; [] for anything else (OpenAI's own)."""
    if not isinstance(content, str) or not content.startswith(REASONING_PREFIX):
        return []
    try:
        blocks = json.loads(base64.urlsafe_b64decode(content[len(REASONING_PREFIX) :]))
    except ValueError:
        return []
    return [b for b in blocks if isinstance(b, dict)] if isinstance(blocks, list) else []


def reasoning_item(blocks: list[dict]) -> dict:
    """A ``reasoning`` output item carrying Claude's thinking blocks, for the client to send back."""
    return {"type": "reasoning", "id": new_id("rs"), "summary": [], "encrypted_content": encode_reasoning(blocks)}


def _add_call(messages: list[Message], call: ToolCall) -> None:
    if messages and messages[-1].role == "assistant":
        messages[-1].tool_calls.append(call)  # one assistant turn: its text and its calls
    else:
        messages.append(Message("assistant", None, [call]))


def _output(raw: Any, at: str, parse: Crossing) -> tuple[str, list[ContentPart]]:
    """A tool's output as text (every target takes that), and the images it returned (Codex's view_image)."""
    content = _content(raw if raw is not None else "", at, parse)
    if not isinstance(content, list):
        return content, []
    text = "".join(p.text or "" for p in content if p.type == "text")
    return text, [p for p in content if p.type == "image_url"]


def _input(raw: Any, parse: Crossing) -> list[Message]:
    if isinstance(raw, str):
        return [Message("user", raw)]
    if not isinstance(raw, list) or not raw:
        raise _fail("Invalid 'input': expected a string or a non-empty array of input items.", "input")
    messages: list[Message] = []
    shown: list[ContentPart] = []  # images tool outputs returned, shown after the run of outputs
    for i, item in enumerate(raw):
        at = f"input[{i}]"
        if not isinstance(item, dict):
            raise _fail(f"Invalid type for '{at}': expected an object.", at)
        kind = item.get("type") or ("message" if "role" in item else None)
        if shown and kind not in ("function_call_output", "custom_tool_call_output"):
            messages.append(Message("user", [ContentPart("text", text=TOOL_IMAGES), *shown]))
            shown = []
        if kind == "message":
            role = ROLES.get(item["role"]) if isinstance(item.get("role"), str) else None
            if role is None:
                raise _fail(
                    f"Invalid value for '{at}.role': {item.get('role')!r} (supported: user, assistant, "
                    "system, developer).",
                    f"{at}.role",
                )
            content = _content(item.get("content"), f"{at}.content", parse)
            if role == "assistant" and _thinking_only(messages):
                messages[-1].content = content  # the text of the turn whose reasoning came first
            else:
                messages.append(Message(role, content))
        elif kind == "function_call":
            arguments = item.get("arguments") or ""
            if not isinstance(arguments, str):
                raise _fail(f"Invalid type for '{at}.arguments': expected a JSON string.", f"{at}.arguments")
            _add_call(messages, ToolCall(item.get("call_id"), _call_name(item, at), arguments))
        elif kind == "custom_tool_call":
            arguments = json.dumps({"input": str(item.get("input") or "")})
            _add_call(messages, ToolCall(item.get("call_id"), _call_name(item, at), arguments))
        elif kind == "tool_search_call":
            if not isinstance(item.get("call_id"), str):
                raise _fail(f"Missing '{at}.call_id'.", f"{at}.call_id")
            arguments = item.get("arguments") if isinstance(item.get("arguments"), dict) else {}
            _add_call(messages, ToolCall(item["call_id"], TOOL_SEARCH, json.dumps(arguments)))
        elif kind == "tool_search_output":
            if not isinstance(item.get("call_id"), str):
                raise _fail(f"Missing '{at}.call_id'.", f"{at}.call_id")
            found = item.get("tools") if isinstance(item.get("tools"), list) else []
            for j, tool in enumerate(found):  # callable from now on
                _listed_tool(tool, f"{at}.tools[{j}]", parse)
            messages.append(Message("tool", _found_tools(found), tool_call_id=item["call_id"]))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            if not isinstance(item.get("call_id"), str):
                raise _fail(f"Missing '{at}.call_id'.", f"{at}.call_id")
            output, images = _output(item.get("output"), f"{at}.output", parse)
            messages.append(Message("tool", output, tool_call_id=item["call_id"]))
            shown += images
        elif kind == "reasoning":
            blocks = decode_reasoning(item.get("encrypted_content"))
            if blocks and _thinking_only(messages):
                messages[-1].reasoning += blocks
            elif blocks:  # the turn's calls and text follow
                messages.append(Message("assistant", None, reasoning=blocks))
            elif item.get("encrypted_content"):
                parse.drop("reasoning.encrypted_content")
        else:  # web_search_call, tool_search_call, local_shell_call, compaction, items newer than us
            parse.drop(f"{kind} items")
    if shown:
        messages.append(Message("user", [ContentPart("text", text=TOOL_IMAGES), *shown]))
    return messages


def _tools(raw: Any, parse: Crossing) -> None:
    """Function tools, ``namespace`` ones flattened, ``custom`` ones as functions of one string and
    Codex's client-run ``tool_search`` as a function, under names every target takes
    (:mod:`cb.llm.tools`); web search noted, other vendor-run tools dropped."""
    if raw is None:
        return
    if not isinstance(raw, list):
        raise _fail("Invalid type for 'tools': expected an array.", "tools")
    for i, tool in enumerate(raw):
        _listed_tool(tool, f"tools[{i}]", parse)


def _listed_tool(tool: Any, at: str, parse: Crossing) -> None:
    """One entry of ``tools`` (or of the tools a ``tool_search_output`` found)."""
    if not isinstance(tool, dict):
        raise _fail(f"Invalid type for '{at}': expected an object.", at)
    kind = tool.get("type")
    if kind == "namespace":
        inner_tools = tool.get("tools")
        if not isinstance(inner_tools, list):
            raise _fail(f"Invalid type for '{at}.tools': expected an array.", f"{at}.tools")
        for j, inner in enumerate(inner_tools):
            _tool(inner, f"{at}.tools[{j}]", parse, tool.get("name") if isinstance(tool.get("name"), str) else None)
    elif kind in ("function", "custom"):
        _tool(tool, at, parse, None)
    elif kind == "tool_search" and tool.get("execution") == "client":  # Codex searches its deferred tools
        description = tool.get("description") if isinstance(tool.get("description"), str) else None
        parameters = tool.get("parameters") if isinstance(tool.get("parameters"), dict) else None
        parse.add_tool(TOOL_SEARCH, description, parameters, kind="tool_search")
    elif kind in SEARCH_TOOLS and tool.get("external_web_access") is False:
        parse.drop("web_search (cached)")  # Codex's default: OpenAI's cached index, no live access
    elif kind in SEARCH_TOOLS:
        parse.server_tools.append("web_search")
    else:
        parse.drop(str(kind))


def _tool(tool: Any, at: str, parse: Crossing, namespace: str | None) -> None:
    kind = tool.get("type", "function") if isinstance(tool, dict) else None
    if kind not in ("function", "custom"):
        parse.drop(str(kind))
        return
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise _fail(f"Missing '{at}.name'.", f"{at}.name")
    description = tool.get("description") if isinstance(tool.get("description"), str) else None
    if kind == "custom":
        spec = tool.get("format") if isinstance(tool.get("format"), dict) else {}
        if spec.get("type") == "grammar" and isinstance(spec.get("definition"), str):
            grammar = f"Its input follows this {spec.get('syntax') or ''} grammar:\n{spec['definition']}"
            description = f"{description}\n\n{grammar}" if description else grammar
        parse.add_tool(tool["name"], description, FREEFORM_PARAMETERS, None, namespace, "custom")
        return
    parameters = tool.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _fail(f"Invalid type for '{at}.parameters': expected an object.", f"{at}.parameters")
    parse.add_tool(tool["name"], description, parameters, tool.get("strict"), namespace)


def _tool_choice(raw: Any, parse: Crossing) -> str | dict | None:
    """The canonical tool choice; "web_search" when the client forces that tool."""
    if raw is None or raw in ("auto", "none", "required"):
        return raw
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind in ("function", "custom") and isinstance(raw.get("name"), str):
        namespace = raw.get("namespace") if isinstance(raw.get("namespace"), str) else None
        return {"type": "function", "function": {"name": canonical_name(raw["name"], namespace)}}
    if kind in SEARCH_TOOLS:
        return "web_search"
    if kind == "allowed_tools" and raw.get("mode") in ("auto", "required"):
        parse.drop("tool_choice.allowed_tools")
        return raw["mode"]
    if isinstance(raw, dict):
        parse.drop(f"tool_choice {kind}")
        return "auto"
    raise _fail(
        "Invalid 'tool_choice': expected 'none', 'auto', 'required' or {type: 'function', name}.", "tool_choice"
    )


def _text_format(raw: Any) -> dict | None:
    if raw is None:
        return None
    spec = raw.get("format") if isinstance(raw, dict) else None
    kind = spec.get("type") if isinstance(spec, dict) else None
    if spec is None or kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema" and isinstance(spec.get("schema"), dict):
        schema = {"name": spec.get("name") or "response", "schema": spec["schema"]}
        if spec.get("strict") is not None:
            schema["strict"] = spec["strict"]
        return {"type": "json_schema", "json_schema": schema}
    raise _fail(
        "Invalid 'text.format': type must be 'text', 'json_object' or 'json_schema' (with a 'schema').", "text.format"
    )


# -- answers ------------------------------------------------------------------------------------


def render_usage(usage: Usage) -> dict:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {
            "reasoning_tokens": int((usage.completion_details or {}).get("reasoning_tokens") or 0)
        },
        "total_tokens": usage.total_tokens,
    }


def message_item(text: str, status: str = "completed", item_id: str | None = None) -> dict:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {
        "type": "message",
        "id": item_id or new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": content,
    }


def function_call_item(
    call: ToolCall, status: str = "completed", item_id: str | None = None, client: ClientTool | None = None
) -> dict:
    """A call as the client knows its tool: ``function_call`` (with its ``namespace``), or
    ``custom_tool_call`` with the raw ``input`` for a freeform tool."""
    client = client or ClientTool(call.name)
    if client.kind == "tool_search":
        item = {
            "type": "tool_search_call",
            "id": item_id or new_id("ts"),
            "call_id": call.id or new_id("call"),
            "execution": "client",
            "arguments": arguments_object(call.arguments),
            "status": status,
        }
    elif client.kind == "custom":
        item = {
            "type": "custom_tool_call",
            "id": item_id or new_id("ctc"),
            "call_id": call.id or new_id("call"),
            "name": client.name,
            "input": custom_input(call.arguments) if call.arguments else "",
            "status": status,
        }
    else:
        item = {
            "type": "function_call",
            "id": item_id or new_id("fc"),
            "call_id": call.id or new_id("call"),
            "name": client.name,
            "arguments": call.arguments,
            "status": status,
        }
    if client.namespace:
        item["namespace"] = client.namespace
    return item


def output_items(
    message: Message, client_tools: dict[str, ClientTool] | None = None, reasoning: bool = False
) -> list[dict]:
    """A canonical answer's output items; its thinking first when the client keeps ``reasoning`` items."""
    items = [reasoning_item(message.reasoning)] if reasoning and message.reasoning else []
    items += [message_item(message.text())] if message.text() or not message.tool_calls else []
    tools = client_tools or {}
    return items + [function_call_item(call, client=tools.get(call.name)) for call in message.tool_calls]


def answer_of(items: list[dict]) -> Message:
    """The assistant message an output is, for the stored conversation (canonical tool names)."""
    text = "".join(p["text"] for i in items if i["type"] == "message" for p in i["content"])
    calls = []
    for item in items:
        if item["type"] == "tool_search_call":
            calls.append(ToolCall(item["call_id"], TOOL_SEARCH, json.dumps(item.get("arguments") or {})))
        elif item["type"] in ("function_call", "custom_tool_call"):
            name = canonical_name(item["name"], item.get("namespace"))
            arguments = (
                item.get("arguments") if item["type"] == "function_call" else json.dumps({"input": item["input"]})
            )
            calls.append(ToolCall(item["call_id"], name, arguments))
    reasoning = [b for i in items if i["type"] == "reasoning" for b in decode_reasoning(i.get("encrypted_content"))]
    return Message("assistant", text or None, calls, reasoning=reasoning)


def render_response(
    req: ResponsesRequest,
    response_id: str,
    created_at: int,
    output: list[dict],
    usage: Usage | None,
    status: str = "completed",
    error: dict | None = None,
) -> dict:
    """The ``response`` object, named after the model the client asked for."""
    echo = req.echo
    text = echo.get("text") if isinstance(echo.get("text"), dict) else {"format": {"type": "text"}}
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": error,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": req.instructions,
        "max_output_tokens": echo.get("max_output_tokens"),
        "model": req.chat.model,
        "output": output,
        "parallel_tool_calls": echo.get("parallel_tool_calls") is not False,
        "previous_response_id": req.previous_response_id,
        "store": req.store,
        "temperature": echo.get("temperature"),
        "top_p": echo.get("top_p"),
        "text": text,
        "tool_choice": echo.get("tool_choice") or "auto",
        "tools": echo.get("tools") or [],
        "truncation": "disabled",
        "usage": render_usage(usage) if usage else None,
        "user": echo.get("user"),
        "metadata": req.metadata,
    }


def render(req: ResponsesRequest, response: ChatResponse) -> dict:
    choice = response.choices[0]
    status = "incomplete" if choice.finish_reason == "length" else "completed"
    output = output_items(choice.message, req.chat.client_tools, req.encrypted_reasoning)
    return render_response(req, new_id("resp"), int(time.time()), output, response.usage, status)


class ResponseEvents:
    """One stream's canonical chunks as the Responses API's typed events: (name, data) pairs.

    Text is one ``message`` output item with one ``output_text`` part; each tool call is a
    ``function_call`` item. Items are closed (``.done`` events) in order at the end, or the
    message when a tool call starts; ``response.completed`` carries the whole response, and
    ``on_done(response)`` is called with it (to store it)."""

    def __init__(self, req: ResponsesRequest, on_done: Callable[[dict], None] | None = None):
        self.req = req
        self.on_done = on_done
        self.id = new_id("resp")
        self.created_at = int(time.time())
        self._sequence = 0
        self._items: list[dict] = []  # output items as they grow
        self._open_message: int | None = None  # output index of the message item still being written
        self._calls: dict[int, int] = {}  # canonical tool call index -> output index
        self._done: set[int] = set()
        self._custom: dict[int, str] = {}  # output index -> a freeform call's arguments so far
        self._finish: str | None = None

    def _event(self, kind: str, **data) -> tuple[str, dict]:
        event = {"type": kind, "sequence_number": self._sequence, **data}
        self._sequence += 1
        return kind, event

    def _snapshot(self, status: str, usage: Usage | None = None, error: dict | None = None) -> dict:
        output = [self._items[i] for i in sorted(self._done)] if status != "in_progress" else []
        return render_response(self.req, self.id, self.created_at, output, usage, status, error)

    def start(self) -> list[tuple[str, dict]]:
        return [
            self._event("response.created", response=self._snapshot("in_progress")),
            self._event("response.in_progress", response=self._snapshot("in_progress")),
        ]

    def _close(self, index: int) -> list[tuple[str, dict]]:
        if index in self._done:
            return []
        self._done.add(index)
        item = self._items[index]
        events = []
        if item["type"] == "reasoning":
            return [self._event("response.output_item.done", output_index=index, item=item)]
        if item["type"] == "message":
            self._open_message = None
            part = item["content"][0]
            events += [
                self._event(
                    "response.output_text.done",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                ),
                self._event(
                    "response.content_part.done", item_id=item["id"], output_index=index, content_index=0, part=part
                ),
            ]
        elif item["type"] == "tool_search_call":
            item["arguments"] = arguments_object(self._custom.pop(index, ""))
        elif item["type"] == "custom_tool_call":
            item["input"] = custom_input(self._custom.pop(index, ""))
            at = {"item_id": item["id"], "output_index": index}
            events += [
                self._event("response.custom_tool_call_input.delta", **at, delta=item["input"]),
                self._event("response.custom_tool_call_input.done", **at, input=item["input"]),
            ]
        else:
            events.append(
                self._event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        item["status"] = "completed"
        return events + [self._event("response.output_item.done", output_index=index, item=item)]

    def _add(self, item: dict) -> tuple[int, list[tuple[str, dict]]]:
        index = len(self._items)
        self._items.append(item)
        return index, [
            self._event(
                "response.output_item.added",
                output_index=index,
                item=dict(item, content=[]) if item["type"] == "message" else dict(item),
            )
        ]

    def chunk(self, chunk: StreamChunk) -> list[tuple[str, dict]]:
        events: list[tuple[str, dict]] = []
        if chunk.reasoning and self.req.encrypted_reasoning:  # a whole thinking block: one item, done at once
            if self._open_message is not None:
                events += self._close(self._open_message)
            index, added = self._add(reasoning_item(chunk.reasoning))
            events += added + self._close(index)
        if chunk.content:
            if self._open_message is None:
                self._open_message, events = self._add(message_item("", "in_progress"))
                item = self._items[self._open_message]
                part = {"type": "output_text", "text": "", "annotations": []}
                item["content"] = [part]
                events.append(
                    self._event(
                        "response.content_part.added",
                        item_id=item["id"],
                        output_index=self._open_message,
                        content_index=0,
                        part=dict(part),
                    )
                )
            item = self._items[self._open_message]
            item["content"][0]["text"] += chunk.content
            events.append(
                self._event(
                    "response.output_text.delta",
                    item_id=item["id"],
                    output_index=self._open_message,
                    content_index=0,
                    delta=chunk.content,
                    logprobs=[],
                )
            )
        for call in chunk.tool_calls:
            if call.index not in self._calls:
                if self._open_message is not None:
                    events += self._close(self._open_message)
                client = client_name(self.req.chat, call.name or "")
                index, added = self._add(
                    function_call_item(ToolCall(call.id or "", call.name or "", ""), "in_progress", client=client)
                )
                self._calls[call.index] = index
                events += added
            index = self._calls[call.index]
            if call.arguments and self._items[index]["type"] in ("custom_tool_call", "tool_search_call"):
                self._custom[index] = self._custom.get(index, "") + call.arguments  # its input, whole, at the end
            elif call.arguments:
                item = self._items[index]
                item["arguments"] += call.arguments
                events.append(
                    self._event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=call.arguments,
                    )
                )
        if chunk.finish_reason:
            self._finish = chunk.finish_reason
        return events

    def end(self, usage: Usage) -> list[tuple[str, dict]]:
        events = []
        for index in range(len(self._items)):
            events += self._close(index)
        status = "incomplete" if self._finish == "length" else "completed"
        response = self._snapshot(status, usage)
        if self.on_done is not None:
            self.on_done(response)
        return events + [self._event(f"response.{status}", response=response)]

    def fail(self, status: int, message: str, code: str | None = None) -> list[tuple[str, dict]]:
        error = {"code": failure_code(status, message, code), "message": message}
        return [self._event("response.failed", response=self._snapshot("failed", error=error))]


def failure_code(status: int, message: str, code: str | None = None) -> str:
    """The ``response.failed`` error code, among those Codex acts on: ``context_length_exceeded``
    (it compacts), ``rate_limit_exceeded`` (it waits and retries), else ``server_error``."""
    if is_context_overflow(message, code):
        return "context_length_exceeded"
    if status == 429 or code in ("rate_limit_exceeded", "rate_limited"):
        return "rate_limit_exceeded"
    if status == 402 or code == "insufficient_quota":
        return "insufficient_quota"
    return code if code and status < 500 else "server_error"
