"""A fake Anthropic Messages API: ``POST /v1/messages``, JSON or server-sent events.

Shaped after Anthropic's documentation: the message object, the streaming event sequence
(message_start, content_block_start/delta/stop with text_delta and input_json_delta,
ping, message_delta with usage, message_stop, error events) and the error body
``{"type": "error", "error": {"type", "message"}}``. It checks requests the way the real
API does (key, version header, max_tokens, alternating roles, tool_result ids), so a
translation mistake fails a test instead of passing silently.
"""

from __future__ import annotations

import json
import re
import uuid

from tests.upstreams.base import Received, Reply, UpstreamServer
from tests.upstreams.script import Answer, Scripted, split_json

KEY = "sk-ant-test-key"


def error_body(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


OVERLOADED = error_body("overloaded_error", "Overloaded")

#: what GET /v1/models lists, newest first as Anthropic does: (id, display name, created, input and output limits)
MODELS = (
    ("claude-opus-4-8", "Claude Opus 4.8", "2026-11-20T00:00:00Z", 1000000, 128000),
    ("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z", 200000, 64000),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z", 200000, 64000),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z", 1000000, 64000),
    ("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z", 200000, 32000),
    ("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z", 1000000, 64000),
    ("claude-3-7-sonnet-20250219", "Claude Sonnet 3.7", "2025-02-24T00:00:00Z", 200000, 64000),
    ("claude-3-5-sonnet-20241022", "Claude Sonnet 3.5 (New)", "2024-10-22T00:00:00Z", 200000, 8192),
    ("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z", 200000, 8192),
    ("claude-3-haiku-20240307", "Claude Haiku 3", "2024-03-07T00:00:00Z", 200000, 4096),
    ("claude-3-opus-20240229", "Claude Opus 3", "2024-02-29T00:00:00Z", 200000, 4096),
)
_DATED = re.compile(r"^(?P<name>.+)-\d{8}$")


def model_entry(model_id: str, name: str, created: str, max_input: int, max_output: int) -> dict:
    """One model of GET /v1/models, in the API's shape."""
    return {
        "type": "model",
        "id": model_id,
        "display_name": name,
        "created_at": created,
        "max_input_tokens": max_input,
        "max_tokens": max_output,
        "capabilities": {
            "batch": {"supported": True},
            "citations": {"supported": True},
            "code_execution": {"supported": True},
            "context_management": {"supported": True},
            "effort": {"supported": model_id.startswith("claude-opus-4-5")},
            "image_input": {"supported": True},
            "pdf_input": {"supported": True},
            "structured_outputs": {"supported": True},
            "thinking": {"supported": not model_id.startswith("claude-3-5")},
        },
    }


class AnthropicUpstream(Scripted, UpstreamServer):
    """Answers like api.anthropic.com. ``models`` is what GET /v1/models lists (``page_size`` per
    page at most, whatever ``limit`` asks); with ``strict`` a model it does not list (nor its
    undated name) answers 404 ``not_found_error``, as the real API does; ``listing_down`` makes the
    listing answer 500."""

    listing_paths = frozenset({"/v1/models"})

    def __init__(self, models=MODELS, page_size: int = 1000, strict: bool = False):
        super().__init__()
        self.models = list(models)
        self.page_size = page_size
        self.strict = strict
        self.listing_down = False

    def knows(self, model: str) -> bool:
        ids = {m[0] for m in self.models}
        undated = {match["name"] for i in ids if (match := _DATED.match(i))}
        return model in ids or model in undated or model.removesuffix("-latest") in undated

    def handle(self, request: Received, reply: Reply) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if request.method == "GET" and request.path == "/v1/models":
            return self.list_models(request, headers, reply)
        if request.method != "POST" or request.path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return reply.json(error_body("not_found_error", "Not Found"), 404)
        if headers.get("x-api-key") != KEY:
            return reply.json(error_body("authentication_error", "invalid x-api-key"), 401)
        if not headers.get("anthropic-version"):
            return reply.json(error_body("invalid_request_error", "anthropic-version: header is required"), 400)
        model = (request.json or {}).get("model") if isinstance(request.json, dict) else None
        if self.strict and isinstance(model, str) and not self.knows(model):
            return reply.json(error_body("not_found_error", f"model: {model}"), 404)
        if request.path == "/v1/messages/count_tokens":
            return self.count_tokens(request.json, reply)
        betas = [b.strip() for b in headers.get("anthropic-beta", "").split(",") if b.strip()]
        problem = validate(request.json, betas)
        if problem:
            return reply.json(error_body("invalid_request_error", problem), 400)
        answer = self.next_answer()
        if request.json.get("stream"):
            return reply.sse(self.stream(request.json["model"], answer), done=False, event_names=True)
        reply.json(message(request.json["model"], answer, (request.json.get("stop_sequences") or ["END"])[0]))

    def stream(self, model: str, answer: Answer):
        """The (event name, data) pairs of a streamed answer."""
        return stream_events(model, answer)

    def list_models(self, request: Received, headers: dict, reply: Reply) -> None:
        """GET /v1/models: ``limit`` (default 20, at most 1000), ``after_id``; ``has_more``, ``first_id``, ``last_id``."""
        if headers.get("x-api-key") != KEY:
            return reply.json(error_body("authentication_error", "invalid x-api-key"), 401)
        if self.listing_down:
            return reply.json(error_body("api_error", "Internal server error"), 500)
        try:
            limit = int((request.query.get("limit") or ["20"])[0])
        except ValueError:
            return reply.json(error_body("invalid_request_error", "limit: Input should be a valid integer"), 400)
        if not 1 <= limit <= 1000:
            return reply.json(error_body("invalid_request_error", "limit: Input should be between 1 and 1000"), 400)
        ids = [m[0] for m in self.models]
        after = (request.query.get("after_id") or [None])[0]
        start = ids.index(after) + 1 if after in ids else 0
        page = self.models[start : start + min(limit, self.page_size)]
        reply.json(
            {
                "data": [model_entry(*m) for m in page],
                "has_more": start + len(page) < len(ids),
                "first_id": page[0][0] if page else None,
                "last_id": page[-1][0] if page else None,
            }
        )

    @staticmethod
    def count_tokens(body: dict | None, reply: Reply) -> None:
        if not isinstance(body, dict) or "messages" not in body or "model" not in body:
            return reply.json(error_body("invalid_request_error", "messages: Field required"), 400)
        if "max_tokens" in body or "stream" in body:
            return reply.json(error_body("invalid_request_error", "max_tokens: Extra inputs are not permitted"), 400)
        reply.json({"input_tokens": counted_tokens(body)})


def counted_tokens(body: dict) -> int:
    """What this fake's count_tokens answers: a number our estimate would not give."""
    return 1000 + len(json.dumps(body.get("messages"))) + len(json.dumps(body.get("system") or ""))


def validate(body: dict | None, betas: list[str] = ()) -> str | None:
    """The first reason the real API would refuse ``body``, or None. With a
    ``mid-conversation-system-*`` beta, ``system`` turns may appear among the messages."""
    if not isinstance(body, dict):
        return "request body must be JSON"
    for name in ("model", "messages", "max_tokens"):
        if name not in body:
            return f"{name}: Field required"
    previous: dict | None = None
    for i, turn in enumerate(body["messages"]):
        role = turn.get("role")
        if role == "system" and any(b.startswith("mid-conversation-system") for b in betas):
            continue
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant' (got \"{role}\")"
        if previous and previous["role"] == role:
            return f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" roles in a row'
        content = turn.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for block in blocks:
            if block.get("type") == "text" and not block.get("text"):
                return f"messages.{i}: text content blocks must be non-empty"
            if block.get("type") == "tool_result":
                asked = [
                    b.get("id")
                    for b in (previous or {}).get("content") or []
                    if isinstance(b, dict) and b.get("type") == "tool_use"
                ]
                if block.get("tool_use_id") not in asked:
                    return (
                        f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block.get('tool_use_id')}. Each `tool_result` block must have a corresponding "
                        "`tool_use` block in the previous message."
                    )
        previous = turn
    return None


def _tool_id() -> str:
    return "toolu_01" + uuid.uuid4().hex[:22]


def _stop_reason(answer: Answer) -> str:
    return answer.finish or ("tool_use" if answer.tool_calls else "end_turn")


def message(model: str, answer: Answer, stop_sequence: str | None = None) -> dict:
    content: list[dict] = [{"type": "text", "text": answer.text}] if answer.text else []
    content += [{"type": "tool_use", "id": _tool_id(), "name": name, "input": args} for name, args in answer.tool_calls]
    return {
        "id": "msg_01" + uuid.uuid4().hex[:22],
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": _stop_reason(answer),
        "stop_sequence": stop_sequence if _stop_reason(answer) == "stop_sequence" else None,
        "usage": _usage(answer, answer.completion_tokens),
    }


def _usage(answer: Answer, output_tokens: int) -> dict:
    """Anthropic counts cache reads and writes apart from ``input_tokens``, and splits the writes
    by how long they are kept."""
    hour = answer.cache_write_1h_tokens
    return {
        "input_tokens": answer.prompt_tokens - answer.cached_tokens - answer.cache_write_tokens,
        "cache_creation_input_tokens": answer.cache_write_tokens,
        "cache_read_input_tokens": answer.cached_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": answer.cache_write_tokens - hour,
            "ephemeral_1h_input_tokens": hour,
        },
        "output_tokens": output_tokens,
    }


def stream_events(model: str, answer: Answer):
    """(event name, data) pairs, in the order Anthropic sends them."""
    start = message(model, answer)
    start.update(content=[], stop_reason=None)
    start["usage"] = _usage(answer, 1)
    yield "message_start", {"type": "message_start", "message": start}
    index = 0
    if answer.text:
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
        yield "ping", {"type": "ping"}
        for sent, piece in enumerate(answer.text_pieces()):
            if answer.error_after is not None and sent == answer.error_after:
                yield "error", OVERLOADED
                return
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            )
        yield "content_block_stop", {"type": "content_block_stop", "index": 0}
        index = 1
    for name, args in answer.tool_calls:
        yield (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "tool_use", "id": _tool_id(), "name": name, "input": {}},
            },
        )
        for piece in ["", *split_json(json.dumps(args))]:
            yield (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                },
            )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
        index += 1
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(answer), "stop_sequence": None},
            "usage": {"output_tokens": answer.completion_tokens},
        },
    )
    yield "message_stop", {"type": "message_stop"}
