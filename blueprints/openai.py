"""The OpenAI-compatible REST API (port 3000): chat completions (JSON and SSE), models,
embeddings. HTTP in, a call into ``cb.llm.gateway``, HTTP out. The helpers here (request
context, routing headers, streaming) serve the other APIs of the port too: Anthropic's
Messages (:mod:`blueprints.messages`) and OpenAI's Responses (:mod:`blueprints.responses`).

Streams run the upstream in a greenlet that feeds a queue, so the response generator can
send ``: keep-alive`` comments while the first token is slow, and a second greenlet
watches the client socket so a departed client stops the upstream at once. The view
waits up to one keep-alive interval for the stream's first event before answering, so
the headers name the route that serves it and a stream that failed on every route
before its first chunk gets a plain error status, like a JSON request.

The queue holds at most ``STREAM_BUFFER_BYTES`` (by the chunks' weight, see
:func:`weight`): the upstream is read only as fast as the client takes what it was sent
(the response's writes wait on the client's socket), so a slow client costs a bounded
buffer, never the whole stream. A client that takes nothing for UPSTREAM_STREAM_IDLE_TIMEOUT
has its connection cut (its socket's write timeout, for each write of at most ``WRITE_SIZE``)
and the upstream closed.
"""

from __future__ import annotations

import json
import socket
import time
from collections import deque

import gevent
import gevent.event
import gevent.queue
from flask import Blueprint, Flask, Response, g, has_request_context, jsonify, request
from werkzeug.exceptions import HTTPException

from blueprints import observability, services
from cb import lifecycle, metrics, runners
from cb.errors import CircuitBreakerError
from cb.llm import affinity, messages_api, translation, wire
from cb.llm.errors import InvalidRequest, LLMError, ModelNotFound, UpstreamError
from cb.llm.routing import RequestContext, Route
from cb.llm.types import ChatRequest
from cb.logs import get_logger

log = get_logger("api.openai")

bp = Blueprint("openai", __name__)

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(status: int, message: str, code: str | None = None, param: str | None = None) -> dict:
    """The error envelope of the API the request spoke: Anthropic's under ``/v1/messages``, else OpenAI's."""
    if has_request_context() and request.path.startswith("/v1/messages"):
        return messages_api.error_body(status, message, code)
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(status: int, message: str, code: str | None = None, param: str | None = None, headers=None):
    """The OpenAI error envelope, {"error": {"message", "type", "param", "code"}} (or Anthropic's, see error_body)."""
    return jsonify(error_body(status, message, code, param)), status, headers or {}


def error_code(exc: CircuitBreakerError) -> str:
    return getattr(exc, "openai_code", None) or exc.code.lower()


def _domain_error_body(exc: CircuitBreakerError) -> tuple[int, dict, dict]:
    code = error_code(exc)
    headers = {}
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(max(1, round(retry_after)))
    return exc.http_status, error_body(exc.http_status, exc.message, code, getattr(exc, "param", None)), headers


def install_error_handlers(app: Flask) -> None:
    """Every error on the OpenAI port leaves in the envelope, never as an HTML page."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.code or 500)
        message = {
            404: "Unknown request URL. Please check the URL and method (see GET /v1/models).",
            413: "Request body is too large.",
        }.get(exc.code or 500, exc.description or "error")
        return error_response(exc.code or 500, message, code)

    @app.errorhandler(CircuitBreakerError)
    def domain_error(exc: CircuitBreakerError):
        status, body, headers = _domain_error_body(exc)
        if status >= 500:
            log.warning("request failed: %s", exc.message)
        return jsonify(body), status, headers

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "Internal server error", "internal_error")


# -- request identity and headers ------------------------------------------------------


def attempts_header(response: Response, state):
    """Also an error answer says how many upstream requests were sent (the request id is set by
    :mod:`blueprints.observability`). ``state`` is the request's ``g``."""
    ctx = state.get("llm_ctx")
    if ctx is not None and "x-cb-attempts" not in response.headers:
        response.headers["x-cb-attempts"] = str(ctx.attempts)
    return response


def context(chat_user: str | None = None) -> RequestContext:
    """The gateway's context of this request: its id, start, client key and rate reservation."""
    state = g._get_current_object()
    reservation = state.get("rate_reservation")
    state.llm_ctx = RequestContext(
        request_id=state.cb_request_id,
        user=chat_user,
        started=state.cb_started,
        api_key_id=state.get("api_key_id"),
        settle_tokens=reservation.settle if reservation else None,
        annotate=observability.annotator(),
    )
    return state.llm_ctx


def route_headers(
    route: Route | None, ctx: RequestContext, upstream_ms: float, chat: ChatRequest | None = None
) -> dict:
    """What happened: provider, deployment, model, attempts, fallback, time spent in the gateway,
    and (given the ``chat`` served) what its translation left out (``x-cb-dropped``)."""
    overhead = max(0.0, (time.monotonic() - ctx.started) * 1000 - upstream_ms)
    metrics.gateway_overhead.observe(overhead / 1000)
    headers = {"x-cb-attempts": str(ctx.attempts), "x-cb-overhead-ms": f"{overhead:.2f}"}
    if route is not None:
        headers.update(
            {
                "x-cb-provider": route.deployment.provider_type,
                "x-cb-deployment": route.deployment.id,
                "x-cb-model": route.model.id,
                "x-cb-fallback-used": str(route.fallback).lower(),
            }
        )
    if chat is not None and chat.dropped:
        headers.update(
            translation.dropped_headers(chat, route, translation.client_of(request.headers.get("User-Agent")))
        )
    return headers


def json_body():
    if request.is_json:
        body = request.get_json(silent=True)  # parsed once: the auth hook already asked for it
        if body is not None:
            return body
    raw = request.get_data(cache=False)
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. The body must be valid JSON "
            "(see https://platform.openai.com/docs/api-reference).",
            None,
        ) from None


# -- chat ----------------------------------------------------------------------------


@bp.post("/v1/chat/completions")
def chat_completions():
    chat = wire.parse_chat_request(json_body())
    ctx, routing = prepare(chat)
    gateway = services().gateway
    if chat.stream:
        return stream_response(gateway.stream(chat, ctx), ChatCompletionEvents(chat), ctx, routing)
    result = gateway.complete(chat, ctx)
    return json_response(
        wire.render_response(result.response, chat.model),
        route_headers(result.route, ctx, result.upstream_ms, chat) | routing,
    )


_compact_json = json.JSONEncoder(separators=(",", ":")).encode  # made once: json.dumps with options makes one per call


def json_response(body: dict, headers: dict) -> Response:
    """An answer's JSON (compact, keys in the order the API documents them, as jsonify writes
    it but without its provider's options and sorting) with the view's ``headers``, added as
    they are: none is set yet, so none needs looking for (``Headers.update`` scans every
    header for each one)."""
    response = Response(_compact_json(body), mimetype="application/json")
    response.headers.extend(headers)
    return response


def prepare(chat: ChatRequest) -> tuple[RequestContext, dict]:
    """The context of a chat request and its routing headers (see :func:`prepare_request`)."""
    return prepare_request(chat.model, chat.user, chat.routing, chat.stream)


_NO_HEADERS: dict[str, str] = {}


def prepare_request(model: str, user: str | None, routing: dict, stream: bool) -> tuple[RequestContext, dict]:
    """The context of a request for ``model`` (routing options from its body's ``routing`` and
    X-CB-* headers, project, agent session) and its routing headers; refuses a stream when
    streaming is disabled."""
    ctx = context(user)
    headers = request.headers
    wire.apply_routing(ctx, routing, headers)
    ctx.project = headers.get("X-CB-Project") or ctx.project
    agent_api = request.path != "/v1/chat/completions"  # Messages and Responses: sessions known by content too
    environ = request.environ  # a session header is rare: looked for in the environ, not by werkzeug's headers
    named = "HTTP_X_CLAUDE_CODE_SESSION_ID" in environ or "HTTP_SESSION_ID" in environ
    ctx.session = affinity.session_of(headers if named else _NO_HEADERS, request.get_json(silent=True), agent_api)
    if stream and not services().settings.openai_enable_streaming:
        raise InvalidRequest(
            "Streaming is disabled on this server (OPENAI_ENABLE_STREAMING=false); "
            "send the request without 'stream': true.",
            "stream",
            "streaming_disabled",
        )
    return ctx, routing_headers(model, ctx)


def routing_headers(model: str, ctx: RequestContext) -> dict:
    """Refuse a request in an exhausted budget; name the strategy and any budget warnings."""
    svc = services()
    warnings = svc.budgets.check(ctx)
    headers = {"x-cb-budget-warning": "; ".join(warnings)} if warnings else {}
    headers["x-cb-routing-strategy"] = svc.router.strategy_for(model, ctx)
    return headers


_SHUTDOWN = "The server is shutting down; this stream was ended before it completed. Retry the request."


class ChatCompletionEvents:
    """A stream's events in chat completions' shape: unnamed ``data:`` frames ended by ``[DONE]``.

    Every stream format has these four methods, each returning (event name or None, data)
    pairs: ``start`` before the first chunk, ``chunk`` per canonical chunk, ``end`` with the
    stream's usage, ``fail`` with an error's status, message and code. A format may also have
    ``frame``, a chunk's SSE bytes at once (here: the upstream's own bytes relayed)."""

    def __init__(self, chat: ChatRequest):
        self.renderer = wire.ChunkRenderer(chat.model, chat.include_usage)

    def start(self) -> list:
        return []

    def chunk(self, chunk) -> list:
        data = self.renderer.chunk(chunk)
        return [(None, data)] if data else []

    def frame(self, chunk) -> bytes:
        """One chunk's SSE bytes: the upstream's own when it spoke OpenAI's format (only the model
        rewritten), rendered otherwise."""
        return self.renderer.frame(chunk) or b""

    def end(self, usage) -> list:
        return ([(None, self.renderer.usage(usage))] if self.renderer.include_usage else []) + [(None, "[DONE]")]

    def fail(self, status: int, message: str, code: str | None = None) -> list:
        return [(None, error_body(status, message, code)), (None, "[DONE]")]


def frames(events: list) -> bytes:
    """(event name or None, data) pairs as SSE frames; data that is not a string is sent as JSON."""
    out = []
    for name, data in events:
        payload = data if isinstance(data, str) else _compact_json(data)
        out.append(f"event: {name}\ndata: {payload}\n\n" if name else f"data: {payload}\n\n")
    return "".join(out).encode()


class _ClientWatch:
    """Calls ``on_gone`` (in a greenlet) if the client's socket is closed while a stream runs.

    A libev read watcher on the hub, not a greenlet blocked in ``wait_read``: nothing is spawned
    unless the socket becomes readable, which a streaming client's socket only does when it closes
    (or pipelines a next request: then it is not gone, and the watch ends as before)."""

    def __init__(self, sock, on_gone):
        self.sock, self.on_gone = sock, on_gone
        self.check: gevent.Greenlet | None = None
        self.io = gevent.get_hub().loop.io(sock.fileno(), 1)
        self.io.start(self._readable)

    def _readable(self) -> None:  # runs in the hub: must not block, so the check gets a greenlet
        self.io.stop()
        self.check = gevent.spawn(self._check)

    def _check(self) -> None:
        try:
            gone = self.sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            gone = True
        if gone and self.io is not None:
            self.on_gone()

    def stop(self) -> None:
        io, self.io = self.io, None
        if io is not None:
            io.stop()
            io.close()
        if self.check is not None:
            self.check.kill()  # a check still waiting on the socket must not outlive the stream


STREAM_BUFFER_BYTES = 1 << 20  # what one stream may hold that its client has not taken yet
CHUNK_OVERHEAD = 512  # about what a canonical chunk costs in memory beside its text
WRITE_SIZE = 64 * 1024  # most bytes of a stream written to the client at once
TURN = 32  # chunks a stream's producer, or its consumer, handles before the worker's other requests get a turn


def weight(chunk) -> int:
    """About the bytes a queued chunk holds: a frame's length, or a canonical chunk's text, the
    upstream's own bytes (an OpenAI chunk's, or a relayed event's) and the objects around them."""
    if isinstance(chunk, (bytes, bytearray, str)):
        return len(chunk)
    size = CHUNK_OVERHEAD + len(chunk.content or "") + len(chunk.raw or b"")
    if chunk.wire is not None:
        size += len(chunk.wire.data)
    for call in chunk.tool_calls:
        size += len(call.arguments or "")
    return size


class _StreamPump:
    """Runs a stream in a greenlet that feeds a queue; a hub watcher notices the client leaving,
    and the server's shutdown (after its grace period) puts a "shutdown" event in the queue.

    The queue holds at most ``limit`` bytes of chunks (at least one chunk): the producer waits
    for the consumer to take some before it reads the upstream further. Both take turns with the
    worker's other requests every ``TURN`` chunks. While the stream runs, the client's socket
    has a write timeout of ``idle`` seconds, so a client that takes nothing for that long ends
    the response (and with it the upstream)."""

    def __init__(self, stream, sock, idle: float | None = None, limit: int = STREAM_BUFFER_BYTES):
        self.stream = stream
        self.queue: gevent.queue.Queue = gevent.queue.Queue()
        self.limit = limit
        self.held = 0  # weight of the chunks queued and not yet taken
        self.weights: deque[int] = deque()  # of the queued chunks, in order
        self.room = gevent.event.Event()  # set when the consumer took something while the producer waited
        self.full = False  # the producer waits for room
        self.turn = 0  # chunks queued since the producer last let others run
        self.timed = sock if sock is not None and idle else None  # the socket whose timeout is ours meanwhile
        if self.timed is not None:
            self.sock_timeout = sock.gettimeout()
            sock.settimeout(idle)
        self.producer = runners.run(self._pump)  # in a kept greenlet, with the request's context (logs keep its id)
        self.watcher = _ClientWatch(sock, self._client_gone) if sock is not None else None
        self.cancel_shutdown = lifecycle.on_grace_expired(lambda: self.queue.put(("shutdown", None)))

    def _pump(self) -> None:
        try:
            for chunk in self.stream:
                self._put(chunk)
            self.queue.put(("end", None))
        except LLMError as exc:
            self.queue.put(("error", exc))
        except Exception as exc:  # never let a bug surface as a broken stream without a word
            log.exception("stream failed")
            self.queue.put(("error", UpstreamError("gateway", f"internal error in the stream ({type(exc).__name__})")))

    def _put(self, chunk) -> None:
        """Queue ``chunk`` once there is room for it (an empty queue always has room)."""
        size = weight(chunk)
        while self.held and self.held + size > self.limit:
            self.full = True
            self.room.clear()
            self.room.wait()
        self.full = False
        self.held += size
        self.weights.append(size)
        self.queue.put(("chunk", chunk))
        self.turn += 1
        if self.turn >= TURN:  # a fast upstream never makes the socket wait, so gevent would never switch
            self.turn = 0
            gevent.sleep(0)

    def _taken(self, item: tuple) -> tuple:
        if item[0] == "chunk":
            self.held -= self.weights.popleft()
            if self.full:
                self.room.set()
        return item

    def _take_waiting(self) -> tuple:
        """The next queued (kind, item), known to be there: :meth:`_taken`, inlined (once per chunk)."""
        item = self.queue.get_nowait()
        if item[0] == "chunk":
            self.held -= self.weights.popleft()
            if self.full:
                self.room.set()
        return item

    def _client_gone(self) -> None:
        log.info("client disconnected, closing the upstream")
        self.producer.kill()
        self.queue.put(("gone", None))

    def next(self, timeout: float) -> tuple | None:
        """The next (kind, item), or None after ``timeout`` seconds without one."""
        if self.queue.qsize():
            return self._take_waiting()  # no timer needed
        try:
            return self._taken(self.queue.get(timeout=timeout))
        except gevent.queue.Empty:
            return None

    def waiting(self) -> list[tuple]:
        """The (kind, item) pairs already queued, without waiting (sent together, in one write),
        at most ``TURN``."""
        items = []
        queue, take = self.queue, self._take_waiting
        while queue.qsize() and len(items) < TURN:
            items.append(take())
        return items

    def stop(self) -> None:
        self.cancel_shutdown()
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None  # it holds our _client_gone: the stream and its body go when the request does
        self.producer.kill()
        self.stream.close()
        if self.timed is not None:
            try:
                self.timed.settimeout(self.sock_timeout)  # the connection may serve a next request
            except OSError:
                pass


def stream_response(stream, events, ctx: RequestContext, routing: dict):
    """Wait for the first event (one keep-alive interval at most), then answer: an error status if
    every route failed before the first chunk, else the SSE stream, rendered by ``events`` (see
    :class:`ChatCompletionEvents`), with headers naming its route."""
    settings = services().settings
    pump = _StreamPump(stream, request.environ.get("gunicorn.socket"), settings.stream_idle_timeout)
    keepalive = settings.keepalive_seconds
    try:
        first = pump.next(keepalive)
        failed = first is not None and first[0] in ("error", "gone")
        headers = {} if failed else route_headers(stream.route, ctx, stream.upstream_open_ms, stream.request) | routing
    except BaseException:
        pump.stop()  # its watcher on the client's socket must not outlive the request: gevent aborts the worker
        raise
    if failed:
        pump.stop()
        if first[0] == "error":
            raise first[1]
        return Response(b"", status=200, mimetype="text/event-stream")
    headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    body = _sse(pump, first, events, keepalive)
    return Response(body, status=200, mimetype="text/event-stream", headers=headers)


def _sse(pump: _StreamPump, first: tuple | None, events, keepalive: float):
    """The SSE body: chunks as they come (those already waiting in one write), keep-alives while
    idle, an error event on failure."""
    item = first
    metrics.open_streams.inc()
    try:
        opening = frames(events.start())
        if opening:
            yield opening
        while True:
            if item is None:
                yield getattr(events, "keepalive", b": keep-alive\n\n")  # Anthropic's format: a ping event
            else:
                batch = pump.waiting()
                data, ended = _frames(pump, events, [item, *batch])
                if len(data) <= WRITE_SIZE:
                    if data:
                        yield data
                else:  # in parts: the write timeout is for each, so a slow client still reading is not cut
                    for at in range(0, len(data), WRITE_SIZE):
                        yield data[at : at + WRITE_SIZE]
                if ended:
                    return
                if len(batch) == TURN:
                    gevent.sleep(0)  # more is waiting: let the worker's other requests run first
            item = pump.next(keepalive)
    finally:
        metrics.open_streams.dec()
        pump.stop()


def _frames(pump: _StreamPump, events, items: list[tuple]) -> tuple[bytes, bool]:
    """The SSE bytes for ``items`` in order, and whether the stream ends with them."""
    out = []
    for kind, value in items:
        if kind == "chunk":
            relay = getattr(events, "frame", None)  # a format that can send the upstream's own bytes
            out.append(relay(value) if relay else frames(events.chunk(value)))
            continue
        if kind == "end":
            out.append(frames(events.end(pump.stream.final_usage())))
        elif kind == "error":
            log.warning("stream failed: %s", value.message)
            out.append(frames(events.fail(value.http_status, value.message, error_code(value))))
        elif kind == "shutdown":
            log.warning("stream ended by the server's shutdown")
            pump.producer.kill()
            out.append(frames(events.fail(503, _SHUTDOWN, "server_shutting_down")))
        # else the client is gone: nothing more to send
        return b"".join(out), True
    return b"".join(out), False


# -- models and embeddings ---------------------------------------------------------------


@bp.route("/", methods=["HEAD"])
@bp.route("/api/hello", methods=["HEAD"])
def reachable():
    """What clients probe before their first request (Claude Code asks ``HEAD`` of its base URL)."""
    return Response(status=200)


@bp.get("/v1/models")
def list_models():
    models = services().gateway.models()
    if "anthropic-version" in request.headers:  # Anthropic's clients list models in Anthropic's shape
        args = request.args
        return jsonify(
            messages_api.render_models(models, args.get("limit"), args.get("after_id"), args.get("before_id"))
        )
    return jsonify({"object": "list", "data": models})


@bp.get("/v1/models/<path:model_id>")
def get_model(model_id: str):
    entry = services().gateway.model(model_id)
    if entry is None:
        raise ModelNotFound(model_id)
    if "anthropic-version" in request.headers:
        return jsonify(messages_api.render_model(entry))
    return jsonify(entry)


@bp.post("/v1/embeddings")
def embeddings():
    embedding, encoding = wire.parse_embedding_request(json_body())
    ctx = context(embedding.user)
    result = services().gateway.embed(embedding, ctx)
    body = wire.render_embeddings(result.response, embedding.model, encoding)
    return jsonify(body), 200, route_headers(result.route, ctx, result.upstream_ms)
