"""The MCP endpoint ``/mcp`` on the GraphQL port: the Streamable HTTP transport of the Model
Context Protocol (revisions 2025-03-26 to 2025-11-25), over :class:`cb.mcp.McpServer`.

* ``POST`` carries JSON-RPC: answered as JSON (or, for a client that accepts only that, as an
  SSE stream of ``message`` events); notifications and responses get 202. ``initialize``
  starts a session, whose id comes back in ``Mcp-Session-Id``; every later request carries it
  (400 without, 404 once the session ended or expired) and may carry ``MCP-Protocol-Version``.
* ``GET`` opens the session's stream of server-initiated messages: an SSE stream that says
  ``notifications/resources/list_changed`` when a workflow is created or deleted, with
  keep-alive comments, until the session ends or the worker drains.
* ``DELETE`` ends the session.

The port's own checks apply first: Host (421) and the body's read time (408), answered in the
port's GraphQL error shape, and its size (413, answered here). Then ``Origin``, when a browser
sends one, must be loopback, listed in GRAPHQL_CORS_ORIGINS, or this very server (403
otherwise: DNS rebinding); and with GRAPHQL_API_KEY set or client keys required
(OPENAI_API_KEY_REQUIRED), ``Authorization: Bearer`` must carry GRAPHQL_API_KEY or a valid
client key (401 with ``WWW-Authenticate`` otherwise). Every error from here on is a JSON-RPC
error object, never HTML.
"""

from __future__ import annotations

import json
import math
import re
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from blueprints import services
from cb import lifecycle
from cb.errors import CircuitBreakerError
from cb.jsondepth import NestingTooDeep, check_json
from cb.mcp import McpError, McpServer
from cb.mcp.errors import METHOD_NOT_FOUND, PARSE_ERROR
from cb.mcp.notifications import END
from cb.mcp.server import INTERNAL_ERROR, check_message, check_version, error, is_request
from cb.network import LOOPBACK_ORIGINS
from cb.security import InvalidApiKey, bearer

bp = Blueprint("mcp", __name__)

SESSION_HEADER = "Mcp-Session-Id"
VERSION_HEADER = "MCP-Protocol-Version"
_LOOPBACK = [re.compile(p) for p in LOOPBACK_ORIGINS]
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def install(app, svc) -> None:
    """Serve ``/mcp`` on ``app`` over the worker's services."""
    app.extensions["mcp"] = McpServer(svc)
    app.register_blueprint(bp)


def _server() -> McpServer:
    return current_app.extensions["mcp"]


def _reply(payload, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status, headers, mimetype="application/json")


def _failure(exc: McpError, message_id=None, headers: dict | None = None) -> Response:
    if exc.http_status == 503:
        headers = {**(headers or {}), "Retry-After": "10"}
    return _reply(error(message_id, exc), exc.http_status, headers)


# --- who may call --------------------------------------------------------------------


def _origin_allowed(origin: str) -> bool:
    """A browser's Origin we serve: loopback, GRAPHQL_CORS_ORIGINS, or this server itself (whose
    Host already passed ALLOWED_HOSTS, so a rebinding name never gets this far)."""
    allowed = services().settings.graphql_cors_origins
    if origin in allowed or "*" in allowed or any(p.match(origin) for p in _LOOPBACK):
        return True
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


def _authorized() -> bool:
    svc = services()
    settings = svc.settings
    if not settings.graphql_api_key and not settings.openai_api_key_required:
        return True
    presented = bearer(request.headers.get("Authorization"))
    if settings.graphql_api_key and svc.security.graphql_authorized(presented):
        return True
    try:
        svc.security.keys.authenticate(presented)
    except InvalidApiKey:
        return False
    return True


@bp.before_request
def check_caller():
    if request.method == "OPTIONS":
        return None  # a CORS preflight carries no key; flask_cors answers it (GRAPHQL_CORS_ORIGINS)
    origin = request.headers.get("Origin")
    if origin is not None and not _origin_allowed(origin):
        return _failure(
            McpError(f"Origin {origin!r} may not use this MCP server (see GRAPHQL_CORS_ORIGINS).", http_status=403)
        )
    if not _authorized():
        message = "Missing or invalid key: send GRAPHQL_API_KEY or a client key as Authorization: Bearer <key>."
        return _failure(McpError(message, http_status=401), headers={"WWW-Authenticate": 'Bearer realm="mcp"'})
    return None


@bp.errorhandler(McpError)
def mcp_error(exc: McpError):
    return _failure(exc)


@bp.errorhandler(CircuitBreakerError)
def domain_error(exc: CircuitBreakerError):
    """Storage unreachable while a session is looked up (503), and the like, as JSON-RPC errors."""
    return _failure(McpError(exc.message, INTERNAL_ERROR, max(exc.http_status, 400)))


@bp.errorhandler(RequestEntityTooLarge)
def too_large(_exc):
    return _failure(
        McpError("Request body is too large (MAX_REQUEST_BYTES).", http_status=413), headers={"Connection": "close"}
    )


# --- the transport -------------------------------------------------------------------


def _session():
    session_id = request.headers.get(SESSION_HEADER)
    if not session_id:
        raise McpError(f"Missing {SESSION_HEADER} header: send initialize first and use the id it returns.")
    return _server().sessions.get(session_id)


def _answer(answers: list[dict], batched: bool, headers: dict | None = None) -> Response:
    accept = request.accept_mimetypes
    if accept["application/json"] or not accept["text/event-stream"]:
        return _reply(answers if batched else answers[0], 200, headers)
    frames = "".join(f"event: message\ndata: {json.dumps(a, ensure_ascii=False)}\n\n" for a in answers)
    return Response(frames, 200, {**_SSE_HEADERS, **(headers or {})}, mimetype="text/event-stream")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _not_json(text: str):
    raise ValueError(text)


def _parse(raw: bytes):
    """The JSON body, or McpError -32700: too deep, not JSON, a number JSON cannot hold (NaN,
    1e999), or a lone surrogate ("\\ud800", which no UTF-8 answer could carry back)."""
    try:
        check_json(raw, services().settings.max_json_depth)
        body = json.loads(raw, parse_float=_finite, parse_constant=_not_json)
        json.dumps(body, ensure_ascii=False).encode()
    except NestingTooDeep as exc:
        raise McpError(exc.message, PARSE_ERROR) from None
    except ValueError:  # UnicodeError included
        raise McpError("Parse error: the body is not valid JSON text.", PARSE_ERROR) from None
    return body


@bp.post("/mcp")
def post_messages():
    accept = request.accept_mimetypes
    if not (accept["application/json"] or accept["text/event-stream"]):
        raise McpError("Not acceptable: send Accept: application/json, text/event-stream.", http_status=406)
    if not request.is_json:
        raise McpError("Request bodies must be JSON-RPC: send Content-Type: application/json.", http_status=415)
    body = _parse(request.get_data(cache=True))
    batched = isinstance(body, list)
    messages = body if batched else [body]
    if not messages:
        raise McpError("An empty batch is not a JSON-RPC message.")
    for message in messages:
        check_message(message)
    server = _server()
    first = messages[0]
    if is_request(first) and first["method"] == "initialize" and not batched:
        try:
            answer, session = server.initialize(first)
        except McpError as exc:
            return _failure(exc, first["id"])
        return _answer([answer], False, {SESSION_HEADER: session.id})
    if any(m.get("method") == "initialize" for m in messages):
        raise McpError("initialize must be sent alone, not in a batch.")
    if not batched and is_request(first) and not server.knows(first["method"]):
        # e.g. the 2026-07-28 probe server/discover: "not found" tells the client to use initialize
        return _failure(McpError(f"Method not found: {first['method']}", METHOD_NOT_FOUND, 200), first["id"])
    session = _session()
    check_version(request.headers.get(VERSION_HEADER))
    answers = [a for a in (server.handle(m, session) for m in messages) if a is not None]
    if not answers:
        return Response(status=202)
    return _answer(answers, batched)


@bp.get("/mcp")
def open_stream():
    if not request.accept_mimetypes["text/event-stream"]:
        raise McpError("GET /mcp opens an SSE stream: send Accept: text/event-stream.", http_status=406)
    session = _session()
    check_version(request.headers.get(VERSION_HEADER))
    server, settings = _server(), services().settings
    server.check_stream_room()

    def stream():
        # everything is opened here, inside the generator: one never started (a HEAD request, a
        # response dropped before its body) then holds nothing that its cleanup would miss
        try:
            feed = server.open_feed()
        except CircuitBreakerError:  # storage unreachable: end the stream; the client opens another later
            return
        stop_on_drain = lifecycle.on_drain(feed.end)
        try:
            yield ": stream open\n\n"
            while True:
                notice = feed.next(settings.keepalive_seconds)
                if notice is END:
                    return
                if notice is not None:
                    yield f"event: message\ndata: {json.dumps(notice)}\n\n"
                elif not server.sessions.alive(session.id):
                    return  # ended (DELETE on any worker) or expired
                else:
                    yield ": keep-alive\n\n"  # a client that left is noticed when this write fails
        finally:
            stop_on_drain()
            server.close_feed(feed)

    return Response(stream(), 200, _SSE_HEADERS, mimetype="text/event-stream")


@bp.delete("/mcp")
def end_session():
    session_id = request.headers.get(SESSION_HEADER)
    if not session_id:
        raise McpError(f"Missing {SESSION_HEADER} header: which session should end?")
    _server().sessions.end(session_id)
    return Response(status=204)
