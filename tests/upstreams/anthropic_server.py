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
import uuid

from tests.upstreams.base import Received, Reply, UpstreamServer
from tests.upstreams.script import Answer, Scripted, split_json

KEY = "sk-ant-test-key"


def error_body(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


OVERLOADED = error_body("overloaded_error", "Overloaded")


class AnthropicUpstream(Scripted, UpstreamServer):
    """Answers like api.anthropic.com."""

    def handle(self, request: Received, reply: Reply) -> None:
        if request.method != "POST" or request.path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return reply.json(error_body("not_found_error", "Not Found"), 404)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if headers.get("x-api-key") != KEY:
            return reply.json(error_body("authentication_error", "invalid x-api-key"), 401)
        if not headers.get("anthropic-version"):
            return reply.json(error_body("invalid_request_error", "anthropic-version: header is required"), 400)
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
