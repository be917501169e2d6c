"""A Claude Code-sized request for the ``agent`` mode: Anthropic's Messages API, streamed.

The body is shaped like what Claude Code sends mid-session: about 100 KB, 24 tools whose
schemas carry ``$schema``, a system prompt in cache-controlled blocks, ``thinking``,
``context_management``, a JSON ``metadata.user_id`` and a conversation with tool calls and
their results (file contents). The upstream's answer is a fixed Anthropic event stream with
cache usage. Our server relays both unchanged (native pass-through), so it is measured
beside nginx answering the same request directly.
"""

from __future__ import annotations

import json

MODEL = "claude-sonnet-4-5"  # a bare Claude name, as Claude Code sends it: routed to the Anthropic deployment
TOOLS = 24
TARGET_BYTES = 100_000
BETAS = (
    "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,prompt-caching-scope-2026-01-05"
)
TEXT = ["Hello", " from", " the", " benchmark", " upstream."]
CONTENT = "".join(TEXT)


def _tool(i: int) -> dict:
    return {
        "name": f"Tool{i:02d}",
        "description": (
            f"Tool number {i}: does one thing an agent needs, described at the length Claude Code "
            "describes its tools. " * 12
        ),
        "input_schema": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {
                "file_path": {"type": "string", "description": "The absolute path to the file"},
                "offset": {"type": "number", "description": "The line number to start reading from"},
                "limit": {"type": "number", "description": "The number of lines to read"},
            },
            "required": ["file_path"],
            "additionalProperties": False,
        },
    }


def body() -> str:
    """The request's JSON text (compact, about TARGET_BYTES)."""
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332; cc_entrypoint=cli"},
        {"type": "text", "text": "You are Claude Code. " * 400, "cache_control": {"type": "ephemeral"}},
    ]
    request = {
        "model": MODEL,
        "max_tokens": 32000,
        "stream": True,
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "metadata": {"user_id": json.dumps({"device_id": "d" * 64, "session_id": "0" * 36, "account_uuid": ""})},
        "system": system,
        "tools": [_tool(i) for i in range(TOOLS)],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Read the project's files."}]}],
    }
    turn = 0
    while len(json.dumps(request, separators=(",", ":"))) < TARGET_BYTES:
        call = f"toolu_{turn:024d}"
        request["messages"] += [
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": call, "name": "Tool00", "input": {"file_path": f"/src/{turn}.py"}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call, "content": "def f():\n    return 1\n" * 150}],
            },
        ]
        turn += 1
    request["messages"][-1]["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return json.dumps(request, separators=(",", ":"))


SESSION = "7f3c2a9e-4b1d-4c8e-9a6f-2d5b8e1c0f47"  # Claude Code names its session in every request


def headers() -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": BETAS,
        "X-Claude-Code-Session-Id": SESSION,
    }


def sse_body() -> str:
    """The upstream's fixed answer: Anthropic's event sequence, usage with cache reads and writes."""
    usage = {
        "input_tokens": 12,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 24000,
        "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 1,
    }
    message = {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    events = [("message_start", {"type": "message_start", "message": message})]
    events.append(
        (
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        )
    )
    events.append(("ping", {"type": "ping"}))
    events += [
        (
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
        )
        for piece in TEXT
    ]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 7},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return "".join(f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n" for name, data in events)


def stream_text(lines) -> str:
    """The text of an Anthropic event stream (ValueError when it does not end with message_stop)."""
    pieces, stopped = [], False
    for line in lines:
        if not line or not line.startswith("data:"):
            continue
        event = json.loads(line[5:])
        if event.get("type") == "content_block_delta":
            pieces.append(event["delta"].get("text", ""))
        stopped = stopped or event.get("type") == "message_stop"
    if not stopped:
        raise ValueError("stream ended without message_stop")
    return "".join(pieces)
