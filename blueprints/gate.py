"""The OpenAI port's checks, as one before-request and one after-request hook.

Before: the request id and start time, Host and body type (:mod:`blueprints.hosts`), the
body read and its nesting (:mod:`blueprints.limits`), the client key and rate limits
(:mod:`blueprints.auth`); the first that answers ends the request. After: the attempts
header, the rate-limit headers and error scrubbing, CORS, then the request id and the
access line (:mod:`blueprints.observability`). Flask runs each registered hook through its
own dispatch, which for the hot path cost about as much as the checks themselves.
"""

from __future__ import annotations

from flask import Flask, Response, g, request

from blueprints import auth, cors, hosts, limits, observability, openai, services
from cb.config import Settings


def install(app: Flask, settings: Settings) -> None:
    access = observability.AccessLog(app, "openai")
    guard = hosts.openai_guard(settings)
    cors_headers = cors.install_openai(app, settings)

    @app.before_request
    def check_request():
        req, state, svc = request._get_current_object(), g._get_current_object(), services()
        access.begin(req, state)
        return (
            guard(req) or limits.openai_body(req, svc.settings) or auth.authenticate_and_admit(req, svc.security, state)
        )

    @app.after_request
    def finish_response(response: Response) -> Response:
        state = g._get_current_object()
        response = auth.rate_headers_and_scrub(openai.attempts_header(response, state), state)
        if cors_headers is not None:
            response = cors_headers(response)
        return access.finish(response, request._get_current_object(), state)
