"""OpenAI's Responses API on the OpenAI port: ``POST /v1/responses`` (JSON and typed SSE
events), ``GET /v1/responses/<id>`` and ``DELETE /v1/responses/<id>``, for any model;
``POST /v1/responses/compact`` for models an OpenAI deployment serves.

The Agents SDK and Codex speak it. A model served by an OpenAI deployment gets the request
as it came, and answers as OpenAI does (:mod:`blueprints.passthrough`; OpenAI then keeps what
it stores, and ``previous_response_id`` names its responses). Other models are translated
(:mod:`cb.llm.responses_api`) and their responses stored here (:mod:`cb.llm.responses_store`);
serving (routes, failover, usage, streaming) is the chat completions' own. A stored response
is visible only to the client key that created it.
"""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from blueprints import passthrough, services
from blueprints.openai import json_body, json_response, prepare, route_headers, stream_response
from cb.errors import NotFound
from cb.llm import responses_api

bp = Blueprint("responses", __name__)


class ResponseNotFound(NotFound):
    openai_code = "not_found"

    def __init__(self, response_id: str):
        super().__init__(f"Response with id '{response_id}' not found.")
        self.param = "response_id"


@bp.post("/v1/responses")
def create_response():
    body = json_body()
    relayed = passthrough.relay("responses", body)  # an OpenAI deployment gets the request as it came
    if relayed is not None:
        return relayed
    req = responses_api.parse_request(body)
    store = services().responses
    key = g.get("api_key_id")
    if req.previous_response_id:
        history = store.history(req.previous_response_id, key)
        if history is None:
            raise ResponseNotFound(req.previous_response_id)
        req.continuing(history)
    ctx, routing = prepare(req.chat)

    def keep(response: dict) -> None:
        if req.store:
            store.save(response, req.conversation(responses_api.answer_of(response["output"])), key)

    gateway = services().gateway
    if req.chat.stream:
        return stream_response(gateway.stream(req.chat, ctx), responses_api.ResponseEvents(req, keep), ctx, routing)
    result = gateway.complete(req.chat, ctx)
    body = responses_api.render(req, result.response)
    keep(body)
    return json_response(body, route_headers(result.route, ctx, result.upstream_ms, req.chat) | routing)


@bp.post("/v1/responses/compact")
def compact_response():
    """OpenAI's remote compaction, relayed to an OpenAI deployment as it came (same routing, keys,
    limits and ledger as ``/v1/responses``); any other model gets a 404 naming why, so a client
    such as Codex compacts locally."""
    return passthrough.relay("responses", json_body(), translatable=False)


@bp.get("/v1/responses/<response_id>")
def get_response(response_id: str):
    store, key = services().responses, g.get("api_key_id")
    response = store.get(response_id, key)
    if response is None:
        deployment = store.relayed(response_id, key)  # stored by OpenAI: asked there
        if deployment is not None:
            return passthrough.stored("GET", response_id, deployment)
        raise ResponseNotFound(response_id)
    return jsonify(response)


@bp.delete("/v1/responses/<response_id>")
def delete_response(response_id: str):
    store, key = services().responses, g.get("api_key_id")
    deployment = store.relayed(response_id, key)
    if not store.delete(response_id, key):
        raise ResponseNotFound(response_id)
    if deployment is not None:
        return passthrough.stored("DELETE", response_id, deployment)
    return jsonify({"id": response_id, "object": "response", "deleted": True})
