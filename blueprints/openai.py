"""The OpenAI-compatible REST API (port 3000)."""

from __future__ import annotations

from flask import Blueprint, Flask, jsonify
from werkzeug.exceptions import HTTPException

from cb.errors import CircuitBreakerError
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


def error_response(status: int, message: str, code: str | None = None, param: str | None = None, headers=None):
    """The OpenAI error envelope: {"error": {"message", "type", "param", "code"}}."""
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return jsonify(body), status, headers or {}


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
        return error_response(exc.http_status, exc.message, getattr(exc, "openai_code", None) or exc.code.lower())

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "Internal server error", "internal_error")
