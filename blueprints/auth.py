"""Who may call: client keys and rate limits on the OpenAI port, the key on the GraphQL port.

On the OpenAI port (called by :mod:`blueprints.gate`), before every ``/v1/*`` request: it
reads the key from ``Authorization: Bearer``, ``api-key`` or (as Anthropic's clients send it)
``x-api-key``, lets :class:`cb.security.Security` identify it and admit the request, and leaves ``g.api_key`` / ``g.api_key_id`` for the gateway and
``g.rate_reservation`` for settling the token estimate. Every answer carries the
``x-ratelimit-*`` headers; error bodies are scrubbed of anything shaped like a key.

``graphql_bp`` makes ``/graphql`` require GRAPHQL_API_KEY when it is set. GraphiQL
(``GET /`` or a browser's ``GET /graphql``) and ``/health`` stay open; ``/ws`` passes
with a valid ``Authorization`` header, otherwise the subscription protocol checks the
``connection_init`` payload (:func:`graphql_key_from_payload`).
"""

from __future__ import annotations

import json
import math

from flask import Blueprint, Request, g, jsonify, request

from blueprints import services
from blueprints.openai import error_response
from cb.security import RateLimited, bearer, scrub

graphql_bp = Blueprint("auth_graphql", __name__)


def presented_key(req: Request) -> str | None:
    """The client key of a request, from either header style."""
    headers = req.headers
    presented = bearer(headers.get("Authorization"))
    for name in ("api-key", "x-api-key"):
        presented = presented or (headers.get(name) or "").strip()
    return presented or None


def _json_object(req: Request) -> dict:
    body = req.get_json(silent=True) if req.method == "POST" else None
    return body if isinstance(body, dict) else {}


def authenticate_and_admit(req: Request, security, state):
    """Identify the client key and admit the request: a 429 answer when a limit is reached, else None.
    ``state`` is the request's ``g``."""
    if req.method == "OPTIONS" or not req.path.startswith("/v1/"):
        return None
    key = security.identify(presented_key(req))  # InvalidApiKey -> 401 through the app's error handler
    state.api_key = key
    state.api_key_id = key.id if key else None
    body = _json_object(req)
    security.check_body(body)
    model = body.get("model") if isinstance(body.get("model"), str) else None
    try:
        state.rate_reservation = security.admit(key, model, body)
    except RateLimited as exc:
        headers = dict(exc.headers, **{"Retry-After": str(max(1, math.ceil(exc.retry_after)))})
        return error_response(429, exc.message, "rate_limit_exceeded", headers=headers)
    return None


def rate_headers_and_scrub(response, state):
    """The ``x-ratelimit-*`` headers, the token estimate settled, error bodies scrubbed of keys.
    ``state`` is the request's ``g``; before this, only a 429 of the admission (which has no
    reservation) and a relayed answer (the upstream's, see below) carry rate headers."""
    reservation = state.get("rate_reservation")
    if reservation is not None:
        own = reservation.headers()
        if own:
            # a relayed answer may carry the upstream's x-ratelimit-* (OpenAI's limits of the
            # server's key): the client's own limits at the gateway win, the whole family, so a
            # client never reads a limit of one source beside the remaining count of the other
            for name in [n for n in response.headers.keys() if n.lower().startswith("x-ratelimit-")]:
                del response.headers[name]
        response.headers.extend(own)
        if not response.is_streamed and reservation.unsettled:  # the gateway settles what it served
            reservation.settle(_total_tokens(response, reservation) if response.status_code < 400 else 0)
    if response.status_code >= 400 and not response.is_streamed:
        text = response.get_data(as_text=True)
        clean = scrub(text)
        if clean != text:
            response.set_data(clean)
    return response


def _total_tokens(response, reservation) -> int:
    data = response.get_json(silent=True) if response.is_json else None
    usage = data.get("usage") if isinstance(data, dict) else None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    if total is None and isinstance(usage, dict) and isinstance(usage.get("input_tokens"), int):
        total = usage["input_tokens"] + (usage.get("output_tokens") or 0)  # Anthropic's shape
    return total if isinstance(total, int) else reservation.reserved_tokens


def graphql_unauthenticated():
    message = "Missing or invalid GraphQL API key: send GRAPHQL_API_KEY in the Authorization header (Bearer scheme)."
    return jsonify({"errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}]}), 401


def graphql_key_from_payload(payload) -> str | None:
    """The key in a WebSocket ``connection_init`` payload (``Authorization`` in any case)."""
    if not isinstance(payload, dict):
        return None
    for name, value in payload.items():
        if isinstance(name, str) and name.lower() in ("authorization", "api-key", "apikey") and isinstance(value, str):
            return bearer(value)
    headers = payload.get("headers")
    return graphql_key_from_payload(headers) if isinstance(headers, dict) else None


@graphql_bp.before_app_request
def require_graphql_key():
    if request.method == "OPTIONS" or request.path not in ("/graphql", "/ws"):
        return None
    security = services().security
    g.graphql_authenticated = security.graphql_authorized(bearer(request.headers.get("Authorization")))
    if g.graphql_authenticated or request.path == "/ws":
        return None
    if request.method == "GET" and "query" not in request.args:
        return None  # GraphiQL's page: the user sets the header in its editor
    return graphql_unauthenticated()


@graphql_bp.after_app_request
def scrub_graphql_errors(response):
    if response.is_streamed or not response.is_json:
        return response
    data = response.get_json(silent=True)
    if isinstance(data, dict) and data.get("errors"):
        errors = json.dumps(data["errors"])
        clean = scrub(errors)
        if clean != errors:
            data["errors"] = json.loads(clean)
            response.set_data(json.dumps(data))
    return response
