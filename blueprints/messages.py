"""Anthropic's Messages API on the OpenAI port: ``POST /v1/messages`` (JSON and named SSE
events) and ``POST /v1/messages/count_tokens``, for any model the gateway serves.

Claude Code and the Anthropic SDKs reach it with ``ANTHROPIC_BASE_URL`` pointed at this
port. A model served by an Anthropic deployment gets the request as it came, ``anthropic-*``
headers and query string included, and answers as Anthropic does (:mod:`blueprints.passthrough`);
other models are translated (:mod:`cb.llm.messages_api`). Serving (routes, failover, usage,
streaming) is the chat completions' own. The gateway's own errors leave in Anthropic's
envelope (:func:`blueprints.openai.error_body` picks it by path).
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from blueprints import passthrough, services
from blueprints.openai import json_body, json_response, prepare, route_headers, stream_response
from cb.llm import messages_api
from cb.llm.estimate import estimate_prompt

bp = Blueprint("messages", __name__)


@bp.post("/v1/messages")
def create_message():
    body = json_body()
    relayed = passthrough.relay("messages", body)  # an Anthropic deployment gets the request as it came
    if relayed is not None:
        return relayed
    chat = messages_api.parse_request(body)
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
    estimate; ``x-cb-token-count`` says which (``provider`` or ``estimated``). An Anthropic
    deployment gets the request as it came, and its answer goes back as it sent it."""
    body = json_body()
    relayed = passthrough.relay_count(body)
    if relayed is not None:
        return relayed
    chat = messages_api.parse_request(body, counting=True)
    chat.stream = False
    ctx, _ = prepare(chat)
    count, estimated = services().gateway.count_tokens(chat, ctx)
    return jsonify({"input_tokens": count}), 200, {"x-cb-token-count": "estimated" if estimated else "provider"}
