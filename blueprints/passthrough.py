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

from flask import Response, g, request

from blueprints import services
from blueprints.openai import context, prepare_request, route_headers, stream_response
from cb.llm import affinity
from cb.llm.errors import NoNativeEndpoint, NotRelayable, UpstreamError
from cb.llm.passthrough import NativeRequest, RelayEvents, native_request, relayed_headers
from cb.llm.types import Usage
from cb.logs import get_logger

log = get_logger("api.passthrough")

_VENDOR = {"messages": "Anthropic", "responses": "OpenAI"}

#: upstream statuses whose body is the gateway's own business, not the client's: the server's
#: credentials were refused (the client gets the gateway's 502 instead)
_NOT_RELAYED = frozenset({401, 403})


def native(api: str, body) -> NativeRequest:
    """The request as its own API's, to relay (400 unless it is a JSON object naming a model)."""
    query = request.query_string.decode("latin-1")
    return native_request(api, request.path, body, request.get_data(cache=True), query, request.headers)


def relay(api: str, body, translatable: bool = True) -> Response | None:
    """Serve the request natively when its model's first route speaks ``api``; None when it must
    be translated. A request no translation serves (``translatable`` False: a vendor's own
    endpoint, like ``/v1/responses/compact``) gets :class:`NotRelayable` instead of None."""
    req = native(api, body)
    ctx, routing = prepare_request(req.model, req.user, req.routing, req.stream)
    gateway = services().gateway
    pairs = gateway.native_routes(req, ctx)
    if pairs is None:
        if translatable:
            return None
        _not_relayable(req, ctx, f"the model '{req.model}' is not served by an {_VENDOR[api]} deployment here")
    previous = req.body.get("previous_response_id") if req.api == "responses" else None
    if isinstance(previous, str):  # a continuation only the deployment that stored the response can serve
        holder = services().responses.relayed(previous, g.get("api_key_id"))
        pairs = affinity.first(pairs, holder) if holder else pairs
    keep = _keeper(req)
    try:
        if req.stream:
            stream = gateway.relay_stream(req, ctx, pairs)
            on_id = (lambda response_id: keep(response_id, stream.route)) if keep else None
            return _with_upstream_headers(stream_response(stream, RelayEvents(api, on_id), ctx, routing), stream)
        result = gateway.relay(req, ctx, pairs)
    except NoNativeEndpoint as exc:  # translated instead (the relay attempt wrote no usage record)
        if not translatable:  # the deployment may well serve the API's main endpoint: nothing to remember
            _not_relayable(req, ctx, f"its deployment '{exc.deployment_id}' has no such endpoint")
        gateway.lacks(exc.deployment_id, api)
        return None
    except UpstreamError as exc:
        return upstream_error(exc)
    if keep and result.answer is not None and isinstance(result.answer.get("id"), str):
        keep(result.answer["id"], result.route)
    own = route_headers(result.route, ctx, result.upstream_ms) | routing
    return answer(result.body, relayed_headers(result.headers) | own)


def _with_upstream_headers(response: Response, stream) -> Response:
    """A relayed stream's answer with the upstream's headers (request-id, rate limits), once the
    stream is committed to the deployment serving it (``ttft_ms``: its first event came); when
    the first event took longer than the keep-alive interval, the answer's headers went before
    the upstream's were known, and only the gateway's are sent, as for its route headers."""
    upstream = stream.response if stream.ttft_ms is not None else None
    if response.status_code == 200 and upstream is not None:
        for name, value in relayed_headers(upstream.headers).items():
            response.headers.setdefault(name, value)
    return response


def _not_relayable(req: NativeRequest, ctx, why: str):
    """Refuse a request only the API's own vendor serves, its one usage record written."""
    services().gateway.record(ctx, req.model, None, Usage(), "error", streamed=req.stream)
    vendor = _VENDOR[req.api]
    message = f"{req.path} is {vendor}'s own endpoint, relayed only to {vendor} deployments: {why}."
    if req.path.endswith("/compact"):
        message += " Compact the conversation locally instead."
    raise NotRelayable(message)


def _keeper(req: NativeRequest):
    """For a Responses request the upstream stores (``store`` is not false): what notes, after
    the answer, which deployment stored the response and for which client key (see
    :meth:`cb.llm.responses_store.ResponseStore.remember_relayed`); None for any other request."""
    if req.path != "/v1/responses" or req.body.get("store") is False:  # a compaction is not stored
        return None
    store, key = services().responses, g.get("api_key_id")

    def keep(response_id: str, route) -> None:
        # before the answer goes on, so a retrieve right after it finds the note (on NATS, one KV
        # write per stored response; Codex sends store: false and writes none)
        try:
            store.remember_relayed(response_id, route.deployment.id, key)
        except Exception:
            log.exception("could not note a relayed response")

    return keep


def stored(method: str, response_id: str, deployment_id: str) -> Response:
    """``GET`` or ``DELETE`` of a relayed response, from the deployment that stored it, answered
    as it came."""
    ctx = context()
    try:
        body, headers = services().gateway.stored(deployment_id, method, f"/v1/responses/{response_id}", ctx)
    except UpstreamError as exc:
        return upstream_error(exc)
    return answer(body, relayed_headers(headers) | {"x-cb-deployment": deployment_id})


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
        body, headers = gateway.relay_count(req, ctx, pairs)
    except UpstreamError as exc:
        return upstream_error(exc)
    return answer(body, relayed_headers(headers) | {"x-cb-token-count": "provider"})


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
    response = answer(body, relayed_headers(exc.headers))
    response.status_code = status
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return response


def _json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False
