"""Anthropic's Messages API (``POST /v1/messages``), streamed or not.

Translation notes:

- Leading system messages are lifted to the top-level ``system`` field (later ones become an
  operator note in the user turn); tool results become
  ``tool_result`` blocks of a user turn, and consecutive turns of one role are merged,
  because Anthropic wants user and assistant turns to alternate.
- ``max_tokens`` is required by Anthropic: :data:`DEFAULT_MAX_TOKENS` when unset (plus the
  thinking budget, when the request asks for reasoning: ``thinking`` with ``budget_tokens``).
- Thinking blocks the client kept (``Message.reasoning``) go back first in their turn; web
  search is Anthropic's own; a prompt cache key marks cache breakpoints.
- ``response_format`` has no Anthropic field. It is emulated with a system instruction
  asking for JSON only (and the schema, for ``json_schema``); the answer is not validated.
- ``n`` > 1, ``seed``, presence/frequency penalties and ``logprobs`` have no equivalent and
  are refused with a 400 naming the field.
- A request that arrived in Anthropic's own shape (``POST /v1/messages``) carries its body
  in ``anthropic_body``: that body goes upstream as it is, only ``model`` and ``stream``
  set, so nothing (``cache_control``, ``thinking``, document blocks) is lost on the way.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from cb.llm.errors import UpstreamError
from cb.llm.providers.base import MAX_PAGES, Deployment, ListedModel, Provider, UpstreamCall
from cb.llm.providers.wire import (
    event_json,
    in_tool_loop,
    join_url,
    leading_system,
    parse_arguments,
    refuse_choices_and_logprobs,
    refuse_server_tools,
    relay_events,
    safe_call_id,
    split_data_url,
    sse_data,
    with_role,
)
from cb.llm.tools import EFFORT_BUDGETS, thinking_budget
from cb.llm.types import ChatRequest, ChatResponse, Choice, Message, StreamChunk, ToolCall, ToolCallDelta, Usage

if TYPE_CHECKING:
    from cb.llm.passthrough import NativeRequest

API_VERSION = "2023-06-01"
WEB_SEARCH = "web_search_20250305"
THINKING_BLOCKS = ("thinking", "redacted_thinking")  # Anthropic's own search, for clients that offer theirs
DEFAULT_MAX_TOKENS = 4096
LIST_PAGE = 1000  # models per page of GET /v1/models (Anthropic's largest)

LABEL = "Anthropic"  # how errors name this provider

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Anthropic error types worth trying another deployment for
RETRYABLE_ERRORS = {"overloaded_error", "api_error", "rate_limit_error"}


class AnthropicProvider(Provider):
    """Claude models through the Messages API."""

    type = "anthropic"
    unsupported = frozenset({"seed", "presence_penalty", "frequency_penalty", "top_logprobs"})
    relays = frozenset({"messages"})

    keeps_listing_on_failure = True

    def models_call(self, deployment: Deployment, after_id: str | None = None) -> UpstreamCall:
        headers = {"x-api-key": deployment.api_key or "", "anthropic-version": API_VERSION}
        query = f"?limit={LIST_PAGE}" + (f"&after_id={quote(after_id, safe='')}" if after_id else "")
        return UpstreamCall("GET", join_url(deployment.base_url, "/v1/models") + query, headers)

    def discover_models(self, deployment: Deployment, transport: Any) -> list[ListedModel]:
        """Every page of ``GET /v1/models`` (``has_more`` / ``last_id`` -> ``after_id``), with each
        model's ``max_input_tokens`` as its context window. Raises UpstreamError."""
        listed: list[ListedModel] = []
        after: str | None = None
        for _ in range(MAX_PAGES):
            body = transport.json(deployment, self.models_call(deployment, after), self)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise UpstreamError("Anthropic", "GET /v1/models answered without a 'data' list", retryable=False)
            for entry in data:
                if isinstance(entry, dict) and isinstance(entry.get("id"), str) and entry["id"]:
                    context = entry.get("max_input_tokens")
                    context = context if isinstance(context, int) and not isinstance(context, bool) else None
                    listed.append(ListedModel(entry["id"], context or None, chat=True, embeddings=False))
            after = body.get("last_id") if body.get("has_more") else None
            if not isinstance(after, str) or not after:
                return listed
        raise UpstreamError("Anthropic", f"GET /v1/models had more than {MAX_PAGES} pages", retryable=False)

    def check(self, request: ChatRequest) -> None:
        super().check(request)
        refuse_choices_and_logprobs(self.type, request)

    # -- request -------------------------------------------------------------------

    def chat_call(self, deployment: Deployment, request: ChatRequest, model: str) -> UpstreamCall:
        self.check(request)
        body = self._native_body(request, model) if request.anthropic_body is not None else self._body(request, model)
        return UpstreamCall(
            "POST", join_url(deployment.base_url, "/v1/messages"), _headers(deployment), body, request.stream
        )

    def count_tokens_call(self, deployment: Deployment, request: ChatRequest, model: str) -> UpstreamCall:
        """Anthropic's own count of a request's input tokens (``POST /v1/messages/count_tokens``)."""
        body = self._native_body(request, model) if request.anthropic_body is not None else self._body(request, model)
        for name in ("max_tokens", "stream", "temperature", "top_p", "top_k", "stop_sequences", "metadata"):
            body.pop(name, None)
        return UpstreamCall(
            "POST", join_url(deployment.base_url, "/v1/messages/count_tokens"), _headers(deployment), body
        )

    def parse_count(self, body: dict) -> int | None:
        count = body.get("input_tokens")
        return count if isinstance(count, int) else None

    @staticmethod
    def _native_body(request: ChatRequest, model: str) -> dict[str, Any]:
        body = dict(request.anthropic_body, model=model)
        body.pop("stream", None)
        if request.stream:
            body["stream"] = True
        return body

    def _body(self, request: ChatRequest, model: str) -> dict[str, Any]:
        system, rest = leading_system(request.messages)
        body: dict[str, Any] = {
            "model": model,
            "messages": _turns(rest),
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        }
        system = "\n\n".join(p for p in (system, _json_instruction(request.response_format)) if p)
        if system:
            body["system"] = system
        for ours, theirs in (
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("top_k", "top_k"),
            ("stop", "stop_sequences"),
        ):
            value = getattr(request, ours)
            if value is not None:
                body[theirs] = value
        if request.tools:
            body["tools"] = [
                {
                    "name": t.name,
                    "description": t.description or "",
                    "input_schema": t.parameters or {"type": "object", "properties": {}},
                }
                for t in request.tools
            ]
            choice = _tool_choice(request)
            if choice:
                body["tool_choice"] = choice
        if "web_search" in refuse_server_tools(LABEL, request, ("web_search",)):
            body.setdefault("tools", []).append({"type": WEB_SEARCH, "name": "web_search"})
        _reasoning(request, body)
        if request.cache_key:
            _cache_breakpoints(body)
        if request.user:
            body["metadata"] = {"user_id": request.user}
        if request.stream:
            body["stream"] = True
        return body

    # -- response ------------------------------------------------------------------

    def parse_chat(self, body: dict, model: str) -> ChatResponse:
        text, calls, reasoning = [], [], []
        for block in body.get("content") or []:
            if block.get("type") == "text":
                text.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                calls.append(ToolCall(block["id"], block["name"], json.dumps(block.get("input") or {})))
            elif block.get("type") in THINKING_BLOCKS:
                reasoning.append(block)
        message = Message("assistant", "".join(text) if text or not calls else None, calls, reasoning=reasoning)
        finish = FINISH_REASONS.get(body.get("stop_reason") or "end_turn", "stop")
        return ChatResponse(
            id=body.get("id") or "msg",
            model=model,
            choices=[Choice(0, message, finish, stop_sequence=body.get("stop_sequence"))],
            usage=_usage(body.get("usage") or {}),
            created=int(time.time()),
        )

    def parse_stream(self, lines: Iterable[bytes], model: str) -> Iterator[StreamChunk]:
        return with_role(self._events(lines))

    def _events(self, lines: Iterable[bytes]) -> Iterator[StreamChunk]:
        usage = Usage()
        tool_index: dict[int, int] = {}  # content block index -> OpenAI tool call index
        thinking: dict[int, dict] = {}  # content block index -> the thinking block being streamed
        stopped = False
        for event in sse_data(lines, LABEL):
            kind = event.get("type")
            if kind == "message_start":
                usage = _usage((event.get("message") or {}).get("usage") or {})
            elif kind == "content_block_start":
                block = event.get("content_block") or {}
                if block.get("type") == "tool_use":
                    index = tool_index[event.get("index", 0)] = len(tool_index)
                    yield StreamChunk(tool_calls=[ToolCallDelta(index, block.get("id"), block.get("name"), "")])
                elif block.get("type") == "text" and block.get("text"):
                    yield StreamChunk(content=block["text"])
                elif block.get("type") == "thinking":
                    thinking[event.get("index", 0)] = {"type": "thinking", "thinking": "", "signature": ""}
                elif block.get("type") == "redacted_thinking":
                    yield StreamChunk(reasoning=[block])
            elif kind == "content_block_delta":
                delta = event.get("delta") or {}
                if delta.get("type") == "text_delta":
                    yield StreamChunk(content=delta.get("text", ""))
                elif delta.get("type") == "thinking_delta" and event.get("index") in thinking:
                    thinking[event["index"]]["thinking"] += delta.get("thinking", "")
                elif delta.get("type") == "signature_delta" and event.get("index") in thinking:
                    thinking[event["index"]]["signature"] += delta.get("signature", "")
                elif delta.get("type") == "input_json_delta" and event.get("index") in tool_index:
                    arguments = delta.get("partial_json", "")
                    if arguments:
                        yield StreamChunk(tool_calls=[ToolCallDelta(tool_index[event["index"]], arguments=arguments)])
            elif kind == "content_block_stop" and event.get("index") in thinking:
                yield StreamChunk(reasoning=[thinking.pop(event["index"])])
            elif kind == "message_delta":
                counted = event.get("usage") or {}
                later = _usage(counted)
                usage = Usage(
                    max(usage.prompt_tokens, later.prompt_tokens),
                    counted.get("output_tokens", usage.completion_tokens),
                    prompt_details=later.prompt_details or usage.prompt_details,
                )
                reason = (event.get("delta") or {}).get("stop_reason") or "end_turn"
                yield StreamChunk(finish_reason=FINISH_REASONS.get(reason, "stop"), usage=usage)
            elif kind == "message_stop":
                stopped = True
                break
            elif kind == "error":
                raise _stream_error(event.get("error") or {})
        if not stopped:
            raise UpstreamError(LABEL, "the stream ended before message_stop", retryable=True)

    # -- pass-through (Messages in, Messages out) ------------------------------------------

    def relay_call(self, deployment: Deployment, request: NativeRequest, model: str) -> UpstreamCall:
        """The client's own request, to this deployment: its body with ``model`` set, its
        ``anthropic-*`` headers (over our default version) and its query string."""
        headers = _headers(deployment) | request.headers
        url = join_url(deployment.base_url, request.path) + ("?" + request.query if request.query else "")
        return UpstreamCall("POST", url, headers, stream=request.stream, data=request.upstream_body(model))

    def relay_usage(self, body: dict) -> Usage | None:
        usage = body.get("usage")
        return _usage(usage) if isinstance(usage, dict) else None

    def relay_stream(self, lines: Iterable[bytes | None]) -> Iterator[StreamChunk]:
        """The upstream's events as they came (:func:`relay_events`), with the usage read from
        ``message_start`` and ``message_delta``; ``message_start`` and pings wait for the first
        event with output, so an error before it (``overloaded_error``) can still fail over."""
        return relay_events(lines, _RelayedMessages())


class _RelayedMessages:
    """What a relayed Messages stream's events mean (a :class:`RelayReader`)."""

    label = LABEL
    opening = frozenset({"message_start", "ping"})
    final = frozenset({"message_stop"})
    unfinished = "the stream ended before message_stop"

    def __init__(self) -> None:
        self.counted: dict = {}

    def failure(self, kind: str | None, data: bytes) -> UpstreamError | None:
        return _stream_error(event_json(data).get("error") or {}) if kind == "error" else None

    def usage(self, kind: str | None, data: bytes) -> Usage | None:
        if kind == "message_start":
            self.counted = dict((event_json(data).get("message") or {}).get("usage") or {})
        elif kind == "message_delta":
            later = event_json(data).get("usage") or {}
            self.counted.update({k: v for k, v in later.items() if v is not None})
            return _usage(self.counted)
        return None


def _headers(deployment: Deployment) -> dict[str, str]:
    return {"x-api-key": deployment.api_key or "", "anthropic-version": API_VERSION, "content-type": "application/json"}


def _reasoning(request: ChatRequest, body: dict[str, Any]) -> None:
    """The request's effort or budget as ``thinking`` with a token budget (``max_tokens``, when the
    client set none, grows by it: Anthropic counts thinking within it). Not in a tool loop of a
    translated history (Anthropic wants the loop's thinking blocks back, which no other vendor
    kept), nor with a temperature other than 1 or a forced tool (thinking refuses both)."""
    if request.max_tokens is None:  # room to think besides the default answer length
        budget = thinking_budget(request, DEFAULT_MAX_TOKENS + EFFORT_BUDGETS["high"] + 1024)
        body["max_tokens"] = DEFAULT_MAX_TOKENS + (budget or 0)
    budget = thinking_budget(request, body["max_tokens"])
    if budget is None:
        if request.reasoning_effort or request.reasoning_budget:
            request.drop("reasoning")  # no room under max_tokens
        return
    forced = (body.get("tool_choice") or {}).get("type") in ("any", "tool")
    if in_tool_loop(request.messages) or body.get("temperature", 1) != 1 or "top_k" in body or forced:
        return
    body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body.pop("top_p", None)


def _cache_breakpoints(body: dict[str, Any]) -> None:
    """A client that names a prompt cache key (Codex) wants its prefix cached: Anthropic caches
    up to the blocks marked ``cache_control``, so mark the system prompt and the last turn."""
    if isinstance(body.get("system"), str):
        body["system"] = [{"type": "text", "text": body["system"], "cache_control": {"type": "ephemeral"}}]
    blocks = body["messages"][-1]["content"] if body["messages"] else []
    if blocks:
        blocks[-1]["cache_control"] = {"type": "ephemeral"}


def _json_instruction(response_format: dict | None) -> str | None:
    """The system instruction that stands in for OpenAI's ``response_format``."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return "Respond with a single valid JSON object and nothing else: no prose, no code fences."
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = json.dumps(spec.get("schema") or {}, separators=(",", ":"))
        return (
            "Respond with a single valid JSON value that conforms to this JSON Schema, and nothing else "
            f"(no prose, no code fences): {schema}"
        )
    return None


def _turns(messages: list[Message]) -> list[dict]:
    """OpenAI messages (leading system ones taken out) as alternating Anthropic turns of content blocks."""
    turns: list[dict] = []
    for message in messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _blocks(message: Message) -> list[dict]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": safe_call_id(message.tool_call_id), "content": message.text()}]
    blocks: list[dict] = [block for block in message.reasoning if block.get("type") in THINKING_BLOCKS]
    parts = message.content if isinstance(message.content, list) else None
    if parts is None:
        if message.content:
            blocks.append({"type": "text", "text": message.content})
    else:
        for part in parts:
            if part.type == "text" and part.text:
                blocks.append({"type": "text", "text": part.text})
            elif part.type == "image_url" and part.image_url:
                blocks.append({"type": "image", "source": _image_source(part.image_url)})
    for call in message.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": safe_call_id(call.id),
                "name": call.name,
                "input": parse_arguments(call.arguments),
            }
        )
    return blocks


def _image_source(url: str) -> dict:
    inline = split_data_url(url)
    if inline:
        return {"type": "base64", "media_type": inline[0], "data": inline[1]}
    return {"type": "url", "url": url}


def _tool_choice(request: ChatRequest) -> dict | None:
    choice = request.tool_choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") or choice.get("name")
        result: dict[str, Any] = {"type": "tool", "name": name}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "auto" or request.parallel_tool_calls is False:
        result = {"type": "auto"}
    else:
        return None
    if request.parallel_tool_calls is False:
        result["disable_parallel_tool_use"] = True
    return result


def _usage(usage: dict) -> Usage:
    """Anthropic counts cache reads and writes apart from ``input_tokens``; OpenAI's prompt
    tokens include them, with the reads as ``prompt_tokens_details.cached_tokens``. Writes
    are ``cache_write_tokens``, of which those kept for an hour (``cache_creation``'s
    ``ephemeral_1h_input_tokens``, priced higher than the 5-minute ones) are ``cache_write_1h_tokens``."""
    read = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    split = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
    hour = split.get("ephemeral_1h_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + read + written
    counts = (("cached_tokens", read), ("cache_write_tokens", written), ("cache_write_1h_tokens", hour))
    details = {k: v for k, v in counts if v} or None
    return Usage(prompt, usage.get("output_tokens") or 0, prompt_details=details)


def _stream_error(error: dict) -> UpstreamError:
    kind = error.get("type") or "error"
    message = f"{error.get('message') or 'stream failed'} ({kind})"
    return UpstreamError(
        LABEL,
        message,
        502,
        retryable=kind in RETRYABLE_ERRORS,
        upstream_status=529 if kind == "overloaded_error" else None,
    )
