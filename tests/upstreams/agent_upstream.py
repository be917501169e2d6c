"""One scripted model for coding agents, on all four wires: Anthropic Messages, OpenAI Responses,
chat completions and Gemini, streamed (as the agents ask) or not.

The script is a list of steps, chosen by how far the conversation has got: step *i* is played
when the request carries *i* tool results. A :class:`Call` asks for a tool the client offers
(matched by exact name, else by substring, so ``"create_token"`` finds the MCP tool
``mcp__cb__create_token``); a :class:`Say` answers with text, where ``{result}`` is the last
tool result the client sent. Requests that offer none of the step's tools (an agent's
background calls: titles, quota checks, summaries) get :data:`IDLE` text and move nothing.
The default script, a :class:`Say` of ``{result}``, echoes a tool's output back.

Usage, in a test::

    with AgentUpstream() as upstream:
        upstream.script(Call("Read", {"file_path": str(secret_file)}), Say("It says: {result}"))
        ...  # point the gateway's deployments at upstream.url; run the agent through the gateway
        assert upstream.tool_results() == [...]
        upstream.offered_tools()    # the tool names the client sent, per request
        upstream.received[-1].json  # the last request as it arrived (every request is kept)

``Call`` arguments may be a callable of the offered tool's name (Codex offers ``exec_command``
or ``shell`` depending on the model), and ``Call(("exec_command", "shell"), ...)`` tries names
in order. On Responses a matched ``custom`` tool is called with ``custom_tool_call`` (its input
the arguments' ``input`` string) and a tool inside a ``namespace`` comes back with that
namespace. Gemini function calls carry a ``thoughtSignature``; a later request that sends the
call back without it is refused, as Gemini 3 does. With ``thinking`` on, the Anthropic wire
opens its answers with a signed ``thinking`` block and refuses a tool loop whose last
assistant turn lost it, as Anthropic does. Each request's JSON can be written to
``upstream.log_path`` (one line each) to see what a client really sends.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.upstreams.base import Received, Reply, UpstreamServer

IDLE = "OK."
GEMINI_PATH = re.compile(r"^/v1beta/models/(?P<model>[^/:]+):(?P<action>\w+)$")
SIGNATURE = base64.b64encode(b"gemini-thought-signature-" + b"x" * 40).decode()


@dataclass
class Call:
    """Ask for one tool: ``tool`` is a name (or names, tried in order) matched exactly, else as a substring."""

    tool: str | tuple[str, ...]
    arguments: dict | str | Callable[[str], dict | str] = field(default_factory=dict)

    def names(self) -> tuple[str, ...]:
        return (self.tool,) if isinstance(self.tool, str) else self.tool

    def arguments_for(self, name: str) -> dict | str:
        return self.arguments(name) if callable(self.arguments) else self.arguments


@dataclass
class Say:
    """Answer with text; ``{result}`` is replaced by the last tool result the client sent."""

    text: str = "{result}"


@dataclass
class Offered:
    """A tool as the client offered it."""

    name: str
    namespace: str | None = None
    kind: str = "function"  # "function" | "custom"


@dataclass
class Turn:
    """What one request gets: text, or a call of ``tool`` with ``arguments``."""

    text: str | None = None
    tool: Offered | None = None
    arguments: dict | str | None = None
    call_id: str = field(default_factory=lambda: "call_" + uuid.uuid4().hex[:24])

    def arguments_json(self) -> str:
        if isinstance(self.arguments, str):
            return json.dumps({"input": self.arguments})
        return json.dumps(self.arguments or {})


class AgentUpstream(UpstreamServer):
    """Anthropic (``/v1/messages``), Responses (``/v1/responses``), chat completions
    (``/v1/chat/completions``) and Gemini (``/v1beta/models/…``) on one port, any key accepted."""

    listing_paths = frozenset({"/v1/models", "/v1beta/models"})

    def __init__(self, log_path: Path | None = None) -> None:
        super().__init__()
        self.steps: list[Call | Say] = [Say()]
        self.log_path = log_path
        self._log_lock = threading.Lock()

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL (``/v1`` included)."""
        return self.url + "/v1"

    def script(self, *steps: Call | Say) -> None:
        self.steps = list(steps) or [Say()]

    # -- what clients sent ----------------------------------------------------------------
    def chat_requests(self) -> list[Received]:
        return [r for r in self.received if r.method == "POST" and isinstance(r.json, dict)]

    def offered_tools(self) -> list[list[str]]:
        return [[t.name for t in offered(wire_of(r), r.json)] for r in self.chat_requests()]

    def tool_results(self) -> list[str]:
        return [results(wire_of(r), r.json)[-1] for r in self.chat_requests() if results(wire_of(r), r.json)]

    # -- serving ---------------------------------------------------------------------------
    def handle(self, request: Received, reply: Reply) -> None:
        if self.log_path is not None:
            with self._log_lock, open(self.log_path, "a") as log:
                log.write(json.dumps({"path": request.path, "headers": request.headers, "body": request.json}) + "\n")
        if request.method == "GET":
            return reply.json({"object": "list", "data": [], "models": [], "has_more": False})
        wire = wire_of(request)
        body = request.json
        if wire is None or not isinstance(body, dict):
            return reply.json({"error": {"message": f"no such endpoint: {request.path}"}}, 404)
        if request.path.endswith("/count_tokens"):
            return reply.json({"input_tokens": len(json.dumps(body)) // 4})
        problem = PROBLEMS[wire](body)
        if problem:
            return reply.json(ERRORS[wire](problem), 400)
        turn = self.turn(wire, body)
        stream = body.get("stream") is True or request.path.endswith(":streamGenerateContent")
        model = (GEMINI_PATH.match(request.path) or {"model": None})["model"] if wire == "gemini" else body["model"]
        if not stream:
            return reply.json(RENDER[wire](model, turn, body))
        reply.start_stream("text/event-stream")
        for frame in STREAM[wire](model, turn, body):
            reply.chunk(frame.encode())
        reply.end_stream()

    def turn(self, wire: str, body: dict) -> Turn:
        done = results(wire, body)
        step = self.steps[min(len(done), len(self.steps) - 1)]
        if isinstance(step, Say):
            return Turn(text=step.text.replace("{result}", done[-1] if done else ""))
        tools = offered(wire, body)
        for name in step.names():
            tool = next((t for t in tools if t.name == name), None) or next((t for t in tools if name in t.name), None)
            if tool is not None:
                return Turn(tool=tool, arguments=step.arguments_for(tool.name))
        return Turn(text=IDLE)


def wire_of(request: Received) -> str | None:
    if request.path.startswith("/v1/messages"):
        return "anthropic"
    if request.path == "/v1/responses":
        return "responses"
    if request.path == "/v1/chat/completions":
        return "chat"
    if GEMINI_PATH.match(request.path):
        return "gemini"
    return None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return json.dumps(content)
    texts = []
    for part in content or []:
        if isinstance(part, dict):
            texts.append(part.get("text") or _text(part.get("content") or "") if part.get("type") != "image" else "")
    return "".join(texts)


def results(wire: str, body: dict) -> list[str]:
    """The tool results in the conversation, in order, as text."""
    found: list[str] = []
    if wire == "anthropic":
        for turn in body.get("messages") or []:
            for block in turn.get("content") if isinstance(turn.get("content"), list) else []:
                if block.get("type") == "tool_result":
                    found.append(_text(block.get("content") or ""))
    elif wire == "responses":
        for item in body.get("input") if isinstance(body.get("input"), list) else []:
            if item.get("type") in ("function_call_output", "custom_tool_call_output"):
                found.append(_text(item.get("output") or ""))
    elif wire == "chat":
        found = [_text(m.get("content") or "") for m in body.get("messages") or [] if m.get("role") == "tool"]
    else:
        for content in body.get("contents") or []:
            for part in content.get("parts") or []:
                if "functionResponse" in part:
                    found.append(_text(part["functionResponse"].get("response") or {}))
    return found


def offered(wire: str, body: dict) -> list[Offered]:
    tools = body.get("tools") or []
    if wire == "anthropic":
        return [Offered(t["name"]) for t in tools if isinstance(t.get("name"), str) and "input_schema" in t]
    if wire == "chat":
        return [Offered(t["function"]["name"]) for t in tools if t.get("type") == "function"]
    if wire == "gemini":
        return [Offered(d["name"]) for t in tools for d in t.get("functionDeclarations") or []]
    found = []
    for tool in tools:
        if tool.get("type") in ("function", "custom"):
            found.append(Offered(tool["name"], kind=tool["type"]))
        elif tool.get("type") == "namespace":
            for inner in tool.get("tools") or []:
                found.append(Offered(inner["name"], tool.get("name"), inner.get("type") or "function"))
    return found


# -- checks the real APIs make, so a translation mistake fails --------------------------------


def _anthropic_problem(body: dict) -> str | None:
    for name in ("model", "messages", "max_tokens"):
        if name not in body:
            return f"{name}: Field required"
    turns = body["messages"]
    for i, turn in enumerate(turns):
        if turn.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if i and turns[i - 1].get("role") == turn.get("role"):
            return 'messages: roles must alternate between "user" and "assistant"'
    thinking = (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")
    last = next((t for t in reversed(turns) if t.get("role") == "assistant"), None)
    blocks = last.get("content") if last and isinstance(last.get("content"), list) else []
    if thinking and any(b.get("type") == "tool_use" for b in blocks) and turns[-1] is not last:
        if blocks[0].get("type") not in ("thinking", "redacted_thinking"):
            return (
                "messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. "
                "When `thinking` is enabled, a final `assistant` message must start with a thinking block"
            )
    for tool in body.get("tools") or []:
        if "input_schema" in tool and len(tool.get("name", "")) > 128:
            return "tools.0.name: String should have at most 128 characters"
    return None


def _responses_problem(body: dict) -> str | None:
    if "model" not in body or "input" not in body:
        return "Missing required parameter: 'input'."
    return None


def _chat_problem(body: dict) -> str | None:
    for message in body.get("messages") or []:
        if message.get("role") not in ("system", "developer", "user", "assistant", "tool"):
            return f"Invalid value: '{message.get('role')}'. Supported values are: 'system', 'assistant', ..."
    for tool in body.get("tools") or []:
        name = (tool.get("function") or {}).get("name") or ""
        if tool.get("type") != "function" or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
            return f"Invalid 'tools[].function.name': string does not match pattern or is too long: {name!r}"
    return None


def _gemini_problem(body: dict) -> str | None:
    contents = body.get("contents") or []
    if not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(contents):
        if content.get("role") not in ("user", "model"):
            return "Please use a valid role: user, model."
        for part in content.get("parts") or []:
            if "functionCall" in part and part.get("thoughtSignature") != SIGNATURE:
                return f"Function call is missing a thought_signature in functionCall parts (contents[{i}])"
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or []:
            if "$schema" in json.dumps(declaration.get("parameters") or {}):
                return 'Invalid JSON payload received. Unknown name "$schema"'
    return None


PROBLEMS = {
    "anthropic": _anthropic_problem,
    "responses": _responses_problem,
    "chat": _chat_problem,
    "gemini": _gemini_problem,
}
ERRORS = {
    "anthropic": lambda m: {"type": "error", "error": {"type": "invalid_request_error", "message": m}},
    "responses": lambda m: {"error": {"message": m, "type": "invalid_request_error", "param": None, "code": None}},
    "chat": lambda m: {"error": {"message": m, "type": "invalid_request_error", "param": None, "code": None}},
    "gemini": lambda m: {"error": {"code": 400, "message": m, "status": "INVALID_ARGUMENT"}},
}


# -- answers, per wire --------------------------------------------------------------------------


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


def _named(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


def _anthropic_blocks(turn: Turn, body: dict) -> list[dict]:
    blocks = []
    if (body.get("thinking") or {}).get("type") in ("enabled", "adaptive"):
        blocks.append({"type": "thinking", "thinking": "Let me look.", "signature": "sig-" + uuid.uuid4().hex})
    if turn.text is not None:
        blocks.append({"type": "text", "text": turn.text})
    if turn.tool is not None:
        blocks.append({"type": "tool_use", "id": "toolu_" + turn.call_id[5:], "name": turn.tool.name,
                       "input": json.loads(turn.arguments_json())})  # fmt: skip
    return blocks


def _anthropic_usage() -> dict:
    return {"input_tokens": 20, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 9}


def _anthropic_message(model: str, turn: Turn, body: dict) -> dict:
    return {
        "id": "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _anthropic_blocks(turn, body),
        "stop_reason": "tool_use" if turn.tool else "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(),
    }


def _anthropic_stream(model: str, turn: Turn, body: dict) -> Iterator[str]:
    start = _anthropic_message(model, turn, body)
    blocks = start["content"]
    start.update(content=[], stop_reason=None, usage=dict(_anthropic_usage(), output_tokens=1))
    yield _named("message_start", {"type": "message_start", "message": start})
    for index, block in enumerate(blocks):
        empty = {"text": {"text": ""}, "thinking": {"thinking": "", "signature": ""}, "tool_use": {"input": {}}}
        opened = dict(block, **empty[block["type"]])
        yield _named("content_block_start", {"type": "content_block_start", "index": index, "content_block": opened})
        if block["type"] == "text":
            deltas = [{"type": "text_delta", "text": p} for p in _pieces(block["text"])]
        elif block["type"] == "thinking":
            deltas = [{"type": "thinking_delta", "thinking": block["thinking"]},
                      {"type": "signature_delta", "signature": block["signature"]}]  # fmt: skip
        else:
            arguments = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": arguments[i : i + 9]}
                      for i in range(0, len(arguments), 9)]  # fmt: skip
        for delta in deltas:
            yield _named("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        yield _named("content_block_stop", {"type": "content_block_stop", "index": index})
    yield _named("ping", {"type": "ping"})
    delta = {"stop_reason": "tool_use" if turn.tool else "end_turn", "stop_sequence": None}
    yield _named("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": 9}})
    yield _named("message_stop", {"type": "message_stop"})


def _responses_items(turn: Turn, body: dict) -> list[dict]:
    items: list[dict] = []
    if "reasoning.encrypted_content" in (body.get("include") or []):
        items.append({"type": "reasoning", "id": "rs_" + uuid.uuid4().hex, "summary": [],
                      "encrypted_content": "gAAAA" + uuid.uuid4().hex})  # fmt: skip
    if turn.text is not None:
        items.append({"type": "message", "id": "msg_" + uuid.uuid4().hex, "status": "completed", "role": "assistant",
                      "content": [{"type": "output_text", "text": turn.text, "annotations": []}]})  # fmt: skip
    if turn.tool is not None:
        item = {"id": "fc_" + uuid.uuid4().hex, "status": "completed", "call_id": turn.call_id, "name": turn.tool.name}
        if turn.tool.kind == "custom":
            arguments = turn.arguments
            item.update(
                type="custom_tool_call", input=arguments if isinstance(arguments, str) else json.dumps(arguments)
            )
        else:
            item.update(type="function_call", arguments=turn.arguments_json())
        if turn.tool.namespace:
            item["namespace"] = turn.tool.namespace
        items.append(item)
    return items


def _response(model: str, status: str, output: list[dict]) -> dict:
    usage = {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 9,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 29}  # fmt: skip
    return {"id": "resp_" + uuid.uuid4().hex, "object": "response", "created_at": int(time.time()), "status": status,
            "model": model, "output": output, "usage": usage if status == "completed" else None, "error": None}  # fmt: skip


def _responses_json(model: str, turn: Turn, body: dict) -> dict:
    return _response(model, "completed", _responses_items(turn, body))


def _responses_stream(model: str, turn: Turn, body: dict) -> Iterator[str]:
    sequence = iter(range(10_000))

    def event(kind: str, **data) -> str:
        return _named(kind, {"type": kind, "sequence_number": next(sequence), **data})

    items = _responses_items(turn, body)
    started = _response(model, "in_progress", [])
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    for index, item in enumerate(items):
        opened = dict(item, status="in_progress")
        if item["type"] == "message":
            opened["content"] = []
        elif item["type"] == "function_call":
            opened["arguments"] = ""
        elif item["type"] == "custom_tool_call":
            opened["input"] = ""
        yield event("response.output_item.added", output_index=index, item=opened)
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            text = item["content"][0]["text"]
            yield event("response.content_part.added", **at, content_index=0,
                        part={"type": "output_text", "text": "", "annotations": []})  # fmt: skip
            for piece in _pieces(text):
                yield event("response.output_text.delta", **at, content_index=0, delta=piece, logprobs=[])
            yield event("response.output_text.done", **at, content_index=0, text=text, logprobs=[])
            yield event("response.content_part.done", **at, content_index=0, part=item["content"][0])
        elif item["type"] == "function_call":
            yield event("response.function_call_arguments.delta", **at, delta=item["arguments"])
            yield event("response.function_call_arguments.done", **at, arguments=item["arguments"])
        elif item["type"] == "custom_tool_call":
            yield event("response.custom_tool_call_input.delta", **at, delta=item["input"])
            yield event("response.custom_tool_call_input.done", **at, input=item["input"])
        yield event("response.output_item.done", output_index=index, item=item)
    yield event("response.completed", response=_response(model, "completed", items))


def _chat_message(turn: Turn) -> dict:
    message: dict = {"role": "assistant", "content": turn.text}
    if turn.tool is not None:
        message["tool_calls"] = [{"id": turn.call_id, "type": "function",
                                  "function": {"name": turn.tool.name, "arguments": turn.arguments_json()}}]  # fmt: skip
    return message


def _chat_usage() -> dict:
    return {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}


def _chat_json(model: str, turn: Turn, body: dict) -> dict:
    finish = "tool_calls" if turn.tool else "stop"
    return {"id": "chatcmpl-" + uuid.uuid4().hex[:24], "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": _chat_message(turn), "finish_reason": finish}],
            "usage": _chat_usage()}  # fmt: skip


def _chat_stream(model: str, turn: Turn, body: dict) -> Iterator[str]:
    ident, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())

    def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> str:
        choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
        data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model, "choices": choices}
        if usage:
            data["usage"] = usage
        return f"data: {json.dumps(data)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    if turn.text is not None:
        for piece in _pieces(turn.text):
            yield chunk({"content": piece})
    if turn.tool is not None:
        arguments = turn.arguments_json()
        yield chunk({"tool_calls": [{"index": 0, "id": turn.call_id, "type": "function",
                                     "function": {"name": turn.tool.name, "arguments": ""}}]})  # fmt: skip
        for i in range(0, len(arguments), 9):
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": arguments[i : i + 9]}}]})
    yield chunk({}, "tool_calls" if turn.tool else "stop")
    if (body.get("stream_options") or {}).get("include_usage"):
        yield chunk({}, usage=_chat_usage())
    yield "data: [DONE]\n\n"


def _gemini_parts(turn: Turn) -> list[dict]:
    parts: list[dict] = [{"text": "Thinking about it.", "thought": True}]
    if turn.text is not None:
        parts.append({"text": turn.text})
    if turn.tool is not None:
        call = {"name": turn.tool.name, "args": json.loads(turn.arguments_json())}
        parts.append({"functionCall": call, "thoughtSignature": SIGNATURE})
    return parts


def _gemini_usage() -> dict:
    return {"promptTokenCount": 20, "candidatesTokenCount": 9, "thoughtsTokenCount": 3, "totalTokenCount": 32}


def _gemini_json(model: str, turn: Turn, body: dict) -> dict:
    candidate = {"content": {"role": "model", "parts": _gemini_parts(turn)}, "finishReason": "STOP", "index": 0}
    return {"candidates": [candidate], "usageMetadata": _gemini_usage(), "modelVersion": model,
            "responseId": uuid.uuid4().hex[:22]}  # fmt: skip


def _gemini_stream(model: str, turn: Turn, body: dict) -> Iterator[str]:
    parts = _gemini_parts(turn)
    for i, part in enumerate(parts):
        candidate: dict = {"content": {"role": "model", "parts": [part]}, "index": 0}
        if i == len(parts) - 1:
            candidate["finishReason"] = "STOP"
        data = {"candidates": [candidate], "usageMetadata": _gemini_usage(), "modelVersion": model}
        yield f"data: {json.dumps(data)}\r\n\r\n"


RENDER = {"anthropic": _anthropic_message, "responses": _responses_json, "chat": _chat_json, "gemini": _gemini_json}
STREAM = {
    "anthropic": _anthropic_stream,
    "responses": _responses_stream,
    "chat": _chat_stream,
    "gemini": _gemini_stream,
}
