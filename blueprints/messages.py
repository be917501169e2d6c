"""Anthropic's Messages API on the OpenAI port: ``POST /v1/messages`` (JSON and named SSE
events) and ``POST /v1/messages/count_tokens``, for any model the gateway serves.

Claude Code and the Anthropic SDKs reach it with ``ANTHROPIC_BASE_URL`` pointed at this
port. Translation lives in :mod:`cb.llm.messages_api`; serving (routes, failover, usage,
streaming) is the chat completions' own. Errors leave in Anthropic's envelope
(:func:`blueprints.openai.error_body` picks it by path). ``anthropic-version`` and
``anthropic-beta`` are accepted and not needed.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from blueprints import services
from blueprints.openai import json_body, json_response, prepare, route_headers, stream_response
from cb.llm import messages_api
from cb.llm.estimate import estimate_prompt

bp = Blueprint("messages", __name__)


@bp.post("/v1/messages")
def create_message():
    chat = messages_api.parse_request(json_body())
    ctx, routing = prepare(chat)
    gateway = services().gateway
    if chat.stream:
        events = messages_api.MessageEvents(chat.model, estimate_prompt(chat), chat.client_tools)
        return stream_response(gateway.stream(chat, ctx), events, ctx, routing)
    result = gateway.complete(chat, ctx)
    return json_response(
        messages_api.render_message(result.response, chat.model, chat.client_tools),
        route_headers(result.route, ctx, result.upstream_ms, chat) | routing,
    )


@bp.post("/v1/messages/count_tokens")
def count_tokens():
    """``input_tokens`` of a request: the provider's count where it has one (Anthropic), else an
    estimate; ``x-cb-token-count`` says which (``provider`` or ``estimated``)."""
    chat = messages_api.parse_request(json_body(), counting=True)
    chat.stream = False
    ctx, _ = prepare(chat)
    count, estimated = services().gateway.count_tokens(chat, ctx)
    return jsonify({"input_tokens": count}), 200, {"x-cb-token-count": "estimated" if estimated else "provider"}
