"""CORS for browsers, per port: OPENAI_CORS_ENABLED / OPENAI_CORS_ORIGINS on the OpenAI
API, GRAPHQL_CORS_ORIGINS on the GraphQL API (empty: no CORS headers at all).

Unset OPENAI_CORS_ORIGINS means ``*`` only when OPENAI_API_KEY_REQUIRED=true; otherwise only
loopback origins, so a web page elsewhere cannot spend the provider keys through the
operator's browser."""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS

from cb.config import Settings
from cb.network import LOOPBACK_ORIGINS

RATE_LIMIT_HEADERS = [
    f"x-ratelimit-{part}-{kind}" for part in ("limit", "remaining", "reset") for kind in ("requests", "tokens")
]


def install_openai(app: Flask, settings: Settings) -> None:
    if settings.openai_cors_enabled:
        default = ["*"] if settings.openai_api_key_required else list(LOOPBACK_ORIGINS)
        origins = list(settings.openai_cors_origins) or default
        CORS(app, origins=origins, send_wildcard=origins == ["*"], max_age=600,
             expose_headers=[*RATE_LIMIT_HEADERS, "Retry-After", "x-request-id"])


def install_graphql(app: Flask, settings: Settings) -> None:
    if settings.graphql_cors_origins:
        CORS(app, origins=list(settings.graphql_cors_origins), max_age=600)
