"""Request limits at the edge: body size, slow bodies, JSON nesting, GraphQL document size.

The body is read once, up front, inside a gevent timeout (REQUEST_BODY_TIMEOUT), so a
client trickling bytes (slowloris) costs a greenlet for a bounded time and never holds
a worker. MAX_CONTENT_LENGTH (MAX_REQUEST_BYTES) applies to chunked bodies as well:
Werkzeug stops reading at the limit and raises 413. Each port answers in its own
error shape: the OpenAI envelope on 3000, a GraphQL error on 4000.

MAX_JSON_DEPTH is checked on the raw body (and GraphQL GET variables and documents) before
anything parses it (:mod:`cb.jsondepth`), except for a JSON body on the OpenAI port, which is
parsed here, once (get_json answers from it), and its containers counted. On the GraphQL port every error answer, an
unknown path or an unexpected exception included, is a GraphQL error in JSON.
"""

from __future__ import annotations

import zlib

import gevent
import zstandard
from flask import Blueprint, Flask, Request, jsonify, request
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge

from blueprints import services
from blueprints.openai import error_response
from cb.jsondepth import NestingTooDeep, check_graphql, check_json, loads_within
from cb.llm.errors import InvalidRequest
from cb.logs import get_logger

log = get_logger("api.graphql")

graphql_bp = Blueprint("limits_graphql", __name__)


def _has_body(req: Request) -> bool:
    return bool(req.content_length) or "chunked" in req.headers.get("Transfer-Encoding", "").lower()


def _abandon_body(req: Request) -> None:
    """Tell gevent's server not to drain the rest of this body: the connection closes instead.

    Without this, after a 408 or 413 gevent reads the remaining body to keep the
    connection usable, which is exactly what a slow or endless client wants.
    """
    stream = req.environ.get("wsgi.input")
    if hasattr(stream, "_chunked_input_error"):
        stream._chunked_input_error = True


def _read_body(req: Request, settings) -> bytes | None:
    """Read and cache the whole body (``b""`` when there is none); None if the client was too slow."""
    if not _has_body(req):
        return b""
    try:
        with gevent.Timeout(settings.body_read_timeout):
            data = _read_declared(req)
            if data is None:
                data = req.get_data(cache=True)
            if req.content_length is None and len(data) >= (req.max_content_length or len(data) + 1):
                req.stream.read(1)  # Werkzeug stops a chunked body at the limit; one more byte raises 413
    except gevent.Timeout:
        _abandon_body(req)
        return None
    except RequestEntityTooLarge:
        _abandon_body(req)
        raise
    return data


def _read_declared(req: Request) -> bytes | None:
    """A body of a declared length within the limit, read from the server's input in one call and
    kept where ``get_data`` finds it (Werkzeug's stream reads it 64 KiB at a time into a buffer it
    copies twice more); None when Werkzeug must read it (chunked, or over the limit: its 413). A
    client that sends less than it declared is refused as Werkzeug refuses it."""
    length, limit = req.content_length, req.max_content_length
    if not length or (limit is not None and length > limit) or "HTTP_TRANSFER_ENCODING" in req.environ:
        return None
    data = req.environ["wsgi.input"].read(length)
    if len(data) != length:
        raise ClientDisconnected()
    req._cached_data = data
    return data


def openai_body(req: Request, settings):
    """The OpenAI port's body limits: a 408 answer for a slow body, a 415 for a content encoding
    we cannot decode, or None to go on (a gzip or zstd body decoded, within MAX_REQUEST_BYTES)."""
    data = _read_body(req, settings)
    if data is None:
        return error_response(
            408, "The request body was not received in time.", "request_timeout", headers={"Connection": "close"}
        )
    encoding = req.environ.get("HTTP_CONTENT_ENCODING", "")  # werkzeug's header lookup costs more, every request
    encoding = encoding.strip().lower() if encoding else ""
    if data and encoding not in ("", "identity"):
        if encoding not in DECODERS:
            return error_response(
                415,
                f"Content-Encoding '{encoding}' is not supported: send the body as it is, or with gzip or zstd.",
                "unsupported_content_encoding",
            )
        data = req._cached_data = inflate(data, encoding, settings.max_request_bytes)
    if data and req.is_json:
        try:  # the body's one parse, kept where get_json finds it; NestingTooDeep is mapped by the app
            value = loads_within(data, settings.max_json_depth)
        except ValueError:
            return None  # not JSON: the view says so in its API's words
        req._cached_json = (value, value)
    elif data:
        check_json(data, settings.max_json_depth)
    return None


def _zlib(wbits: int):
    def decode(data: bytes, limit: int) -> bytes:
        inflater = zlib.decompressobj(wbits)
        out = inflater.decompress(data, limit + 1)
        if len(out) <= limit and not inflater.eof:
            raise ValueError("truncated")
        return out

    return decode


def _zstd(data: bytes, limit: int) -> bytes:
    with zstandard.ZstdDecompressor().stream_reader(data) as reader:
        return reader.read(limit + 1)


#: Content-Encoding -> decode(body, limit): at most limit + 1 bytes (one more than allowed says "too large")
DECODERS = {"gzip": _zlib(16 + zlib.MAX_WBITS), "x-gzip": _zlib(16 + zlib.MAX_WBITS), "zstd": _zstd}


def inflate(data: bytes, encoding: str, limit: int) -> bytes:
    """A compressed body decoded, never past ``limit`` bytes (what it inflates to is what
    MAX_REQUEST_BYTES bounds): 413 when it would be larger, 400 when it does not decode."""
    try:
        body = DECODERS[encoding](data, limit)
    except (ValueError, zlib.error, zstandard.ZstdError):
        raise InvalidRequest(f"The request body could not be decoded as {encoding}.", None) from None
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def graphql_error(status: int, message: str, code: str, headers: dict | None = None):
    return jsonify({"errors": [{"message": message, "extensions": {"code": code}}]}), status, headers or {}


@graphql_bp.before_app_request
def graphql_body():
    settings = services().settings
    if _read_body(request, settings) is None:
        return graphql_error(
            408, "The request body was not received in time.", "REQUEST_TIMEOUT", {"Connection": "close"}
        )
    if request.path != "/graphql":
        return None
    try:
        if request.method == "POST":
            check_json(request.get_data(cache=True), settings.max_json_depth)
        elif request.args.get("variables"):
            check_json(request.args["variables"], settings.max_json_depth, "variables")
    except NestingTooDeep as exc:
        return graphql_error(400, exc.message, "BAD_REQUEST")
    data = request.get_json(silent=True) if request.method == "POST" else request.args
    query = data.get("query") if hasattr(data, "get") else None
    limit = settings.graphql_max_query_bytes
    if isinstance(query, str):
        try:
            size = len(query.encode())
        except UnicodeEncodeError:  # a lone surrogate, e.g. "\ud800" (JSON lets it through)
            return graphql_error(400, "The GraphQL document is not valid Unicode text.", "BAD_REQUEST")
        if size > limit:
            return graphql_error(413, f"The GraphQL document is larger than {limit} bytes.", "QUERY_TOO_LARGE")
        try:
            check_graphql(query, settings.max_json_depth)
        except NestingTooDeep as exc:
            return graphql_error(400, exc.message, "BAD_REQUEST")
    return None


@graphql_bp.app_errorhandler(RequestEntityTooLarge)
def graphql_too_large(exc):
    return graphql_error(413, "Request body is too large.", "REQUEST_TOO_LARGE", {"Connection": "close"})


_HTTP_CODES = {400: "BAD_REQUEST", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "REQUEST_TOO_LARGE"}


def install_graphql_error_handlers(app: Flask) -> None:
    """Every error on the GraphQL port leaves as a GraphQL error in JSON, never as an HTML page."""

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        message = {404: f"Unknown path {request.path}: the GraphQL endpoint is POST or GET /graphql."}.get(
            status, exc.description or exc.name
        )
        allowed = getattr(exc, "valid_methods", None)
        headers = {"Allow": ", ".join(allowed)} if allowed else {}
        code = _HTTP_CODES.get(status, "BAD_REQUEST" if status < 500 else "INTERNAL_SERVER_ERROR")
        return graphql_error(status, message, code, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return graphql_error(500, "Internal server error", "INTERNAL_SERVER_ERROR")
