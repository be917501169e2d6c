"""Errors of client authentication and rate limiting, each knowing its OpenAI code."""

from __future__ import annotations

from cb.errors import CircuitBreakerError, Unauthenticated


class InvalidApiKey(Unauthenticated):
    """Missing, unknown, revoked or expired client key (401 invalid_api_key)."""

    openai_code = "invalid_api_key"


class ModelNotAllowed(CircuitBreakerError):
    """The key may not use the requested model (403)."""

    code = "FORBIDDEN"
    http_status = 403
    openai_code = "model_not_allowed"


class RateLimited(CircuitBreakerError):
    """A per-key window is full (429 rate_limit_exceeded); ``retry_after`` in seconds."""

    code = "RATE_LIMITED"
    http_status = 429
    openai_code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: float, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers or {}
