"""CORS for browsers, per port: OPENAI_CORS_ENABLED / OPENAI_CORS_ORIGINS on the OpenAI
API, GRAPHQL_CORS_ORIGINS on the GraphQL API (empty: no CORS headers at all).

Unset OPENAI_CORS_ORIGINS means ``*`` only when OPENAI_API_KEY_REQUIRED=true; otherwise only
loopback origins, so a web page elsewhere cannot spend the provider keys through the
operator's browser."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, request
from flask_cors import CORS
from flask_cors.core import get_cors_options, get_cors_origins

from cb.config import Settings
from cb.network import LOOPBACK_ORIGINS

RATE_LIMIT_HEADERS = [
    f"x-ratelimit-{part}-{kind}" for part in ("limit", "remaining", "reset") for kind in ("requests", "tokens")
]


def install_openai(app: Flask, settings: Settings) -> Callable[[Response], Response] | None:
    """CORS on the OpenAI port: the after-request function its one hook calls (None: CORS is off).

    flask_cors's own after-request function is taken out of the app's list: it costs as much
    as a check of the port, and a request without an Origin header gets nothing from it
    unless the options send headers to every request (checked once, here)."""
    if not settings.openai_cors_enabled:
        return None
    default = ["*"] if settings.openai_api_key_required else list(LOOPBACK_ORIGINS)
    origins = list(settings.openai_cors_origins) or default
    options = {
        "origins": origins,
        "send_wildcard": origins == ["*"],
        "max_age": 600,
        # the upstream's request ids a relayed answer carries (what a browser SDK shows for support)
        "expose_headers": [
            *RATE_LIMIT_HEADERS,
            "Retry-After",
            "x-request-id",
            "request-id",
            "x-cb-upstream-request-id",
        ],
    }
    CORS(app, **options)
    answer = app.after_request_funcs[None].pop()
    always = bool(get_cors_origins(get_cors_options(app, options), None))

    def cors_headers(response: Response) -> Response:
        if always or request.environ.get("HTTP_ORIGIN"):
            return answer(response)
        return response

    return cors_headers


def install_graphql(app: Flask, settings: Settings) -> None:
    if settings.graphql_cors_origins:
        # a browser MCP client must read the session id that initialize returns (/mcp)
        CORS(app, origins=list(settings.graphql_cors_origins), max_age=600, expose_headers=["Mcp-Session-Id"])
