"""Errors of the LLM layer, each knowing its OpenAI status and code.

``retryable`` tells the router it may fail over to another deployment.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cb.errors import CircuitBreakerError


class LLMError(CircuitBreakerError):
    code = "llm_error"
    openai_code: str | None = None
    retryable = False
    param: str | None = None


class InvalidRequest(LLMError):
    """The client's request is wrong (400), ``param`` names the field."""

    http_status = 400
    code = "INVALID_REQUEST"
    openai_code = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, openai_code: str | None = None):
        super().__init__(message)
        self.param = param
        if openai_code:
            self.openai_code = openai_code


class UnsupportedParameter(InvalidRequest):
    """A request field the chosen provider has no equivalent for."""

    def __init__(self, provider: str, param: str):
        super().__init__(f"'{param}' is not supported by the {provider} provider", param, "unsupported_parameter")


class ModelNotFound(LLMError):
    http_status = 404
    code = "NOT_FOUND"
    openai_code = "model_not_found"

    def __init__(self, model: str):
        super().__init__(f"The model '{model}' does not exist or is not available on this server")
        self.param = "model"


class ProviderNotConfigured(LLMError):
    """The model's provider has no key: the message names the variable to set."""

    http_status = 400
    code = "PROVIDER_NOT_CONFIGURED"
    openai_code = "provider_not_configured"

    def __init__(self, provider: str, variable: str, model: str | None = None):
        what = f"Model '{model}' needs the {provider} provider, which" if model else f"The {provider} provider"
        super().__init__(f"{what} is not configured: set {variable}")
        self.param = "model"


class UpstreamError(LLMError):
    """The provider answered with an error, or could not be reached.

    ``status`` is what the client gets: the provider's own 400/404/413/422/429 pass
    through; provider faults become 502. ``body`` is the error body the provider answered
    with (None when it did not answer), which a pass-through relays as it came.
    """

    code = "UPSTREAM_ERROR"
    openai_code = "upstream_error"
    body: bytes | None = None
    headers: Mapping[str, str] | None = None  # the upstream's response headers, when it answered
    deployment_id: str | None = None  # the deployment that answered it, once the gateway knows

    def __init__(
        self,
        provider: str,
        message: str,
        status: int = 502,
        retryable: bool = False,
        retry_after: float | None = None,
        upstream_status: int | None = None,
    ):
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.http_status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status


class NoNativeEndpoint(UpstreamError):
    """A deployment has no endpoint for the API a request was relayed in (a 404 for the path
    itself, as vLLM answers ``/v1/responses``): the request is served again by translation,
    which writes its one usage record, so the relay attempt writes none."""

    @classmethod
    def of(cls, exc: UpstreamError) -> UpstreamError:
        """``exc``, or this error in its place when it says the upstream has no such path (vLLM's
        ``{"detail": "Not Found"}``, llama.cpp's "File Not Found"), as opposed to OpenAI's own 404
        for a model it does not have."""
        if exc.upstream_status not in (404, 405, 501) or isinstance(exc, cls):
            return exc
        try:
            error = json.loads(exc.body or b"null")
        except ValueError:
            error = None
        detail = error.get("error") if isinstance(error, dict) else None
        if isinstance(detail, dict) and (detail.get("code") == "model_not_found" or detail.get("param") == "model"):
            return exc
        missing = cls.__new__(cls)  # the same error (status, body, headers), by its meaning
        missing.args, missing.retryable = exc.args, False
        missing.__dict__.update(exc.__dict__)
        return missing


class NotRelayable(LLMError):
    """A vendor's own endpoint (OpenAI's ``/v1/responses/compact``) asked for a model that no
    deployment of that vendor serves first: nothing translates it, so it is a 404 that names why
    (Codex then compacts the conversation itself)."""

    http_status = 404
    code = "NOT_FOUND"
    openai_code = "unsupported_endpoint"
    param = "model"


class AnswerTooLarge(UpstreamError):
    """The upstream's answer (inflated) or one line of its stream passed a size limit: what
    was read is dropped and the connection closed, so a broken upstream cannot fill memory."""

    openai_code = "upstream_response_too_large"

    def __init__(self, provider: str, what: str, variable: str, limit: int):
        super().__init__(provider, f"{what} is larger than {variable} ({limit:,} bytes); it was cut")


class UpstreamTimeout(UpstreamError):
    openai_code = "upstream_timeout"

    def __init__(self, provider: str, message: str = "the provider did not answer in time"):
        super().__init__(provider, message, status=504, retryable=True)


class DeadlinePassed(UpstreamTimeout):
    """The request's total deadline (ROUTER_DEADLINE_SECONDS) passed while an upstream was still
    working on it: the attempt is abandoned and no further route is tried (not retryable)."""

    def __init__(self, seconds: float):
        super().__init__("gateway", f"no provider answered within the request's {seconds:g}-second deadline")
        self.retryable = False
