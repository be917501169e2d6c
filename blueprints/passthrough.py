"""Native pass-through at the edge (:mod:`cb.llm.passthrough`): a Messages or Responses request
whose model is served by a deployment speaking that API goes there as the client sent it,
and its answer, stream or error comes back as the upstream sent it.

The views of :mod:`blueprints.messages` and :mod:`blueprints.responses` ask :func:`relay`
first; it answers None when the model's first route needs a translation, and the view
translates as before. What the gateway adds is the same as for any request: routing and
failover (within the API), keys, limits, budgets, the ledger and the ``x-cb-*`` headers.
"""

from __future__ import annotations

import json

from flask import Response, request

from blueprints import services
from blueprints.openai import prepare_request, route_headers, stream_response
from cb.llm.errors import UpstreamError
from cb.llm.passthrough import NativeRequest, RelayEvents, native_request

#: upstream statuses whose body is the gateway's own business, not the client's: the server's
#: credentials were refused (the client gets the gateway's 502 instead)
_NOT_RELAYED = frozenset({401, 403})


def native(api: str, body) -> NativeRequest:
    """The request as its own API's, to relay (400 unless it is a JSON object naming a model)."""
    query = request.query_string.decode("latin-1")
    return native_request(api, request.path, body, request.get_data(cache=True), query, request.headers)


def relay(api: str, body) -> Response | None:
    """Serve the request natively when its model's first route speaks ``api``; None when it must
    be translated."""
    req = native(api, body)
    ctx, routing = prepare_request(req.model, req.user, req.routing, req.stream)
    gateway = services().gateway
    pairs = gateway.native_routes(req, ctx)
    if pairs is None:
        return None
    try:
        if req.stream:
            return stream_response(gateway.relay_stream(req, ctx, pairs), RelayEvents(api), ctx, routing)
        result = gateway.relay(req, ctx, pairs)
    except UpstreamError as exc:
        if exc.deployment_id and _no_such_endpoint(exc):
            gateway.lacks(exc.deployment_id, api)
            return None
        return upstream_error(exc)
    return answer(result.body, route_headers(result.route, ctx, result.upstream_ms) | routing)


def relay_count(body) -> Response | None:
    """``/v1/messages/count_tokens`` relayed to an Anthropic deployment; None when the model's
    first route is not one (the view estimates)."""
    req = native("messages", body)
    ctx, _ = prepare_request(req.model, req.user, req.routing, False)
    gateway = services().gateway
    pairs = gateway.native_routes(req, ctx)
    if pairs is None:
        return None
    try:
        return answer(gateway.relay_count(req, ctx, pairs), {"x-cb-token-count": "provider"})
    except UpstreamError as exc:
        return upstream_error(exc)


def answer(body: bytes, headers: dict) -> Response:
    response = Response(body, mimetype="application/json")
    response.headers.extend(headers)
    return response


def upstream_error(exc: UpstreamError) -> Response:
    """The upstream's own error answer, status and body as it sent them (clients match on its
    wording, e.g. Claude Code's "prompt is too long"); an error the gateway must word itself
    (no answer, a page that is not JSON, refused server credentials) is raised to the app's handler."""
    status, body = exc.upstream_status, exc.body
    if status is None or body is None or status in _NOT_RELAYED or not _json_object(body):
        raise exc
    response = answer(body, {})
    response.status_code = status
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


def _no_such_endpoint(exc: UpstreamError) -> bool:
    """The upstream has no such path (vLLM's ``{"detail": "Not Found"}``, llama.cpp's "File Not
    Found"), as opposed to OpenAI's own 404 for a model it does not have."""
    if exc.upstream_status not in (404, 405, 501):
        return False
    try:
        error = json.loads(exc.body or b"null")
    except ValueError:
        return True
    detail = error.get("error") if isinstance(error, dict) else None
    return not (
        isinstance(detail, dict) and (detail.get("code") == "model_not_found" or detail.get("param") == "model")
    )


def _json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False
