"""Upstream error responses mapped once into :class:`UpstreamError`.

The client's own mistakes keep their status (400, 404, 413, 422, and 429 with its
Retry-After); anything that is the provider's fault becomes a 502. 408, 409, 429, 5xx
and Anthropic's 529 are retryable: the gateway may fail over to another deployment.
The message names the provider and never echoes a key.
"""

from __future__ import annotations

import json
import re

from cb.llm.errors import UpstreamError

CLIENT_STATUSES = frozenset({400, 404, 413, 422, 429})
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
LABELS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "google": "Google",
    "ollama": "Ollama",
    "openai_compatible": "OpenAI-compatible",
}
MESSAGE_LIMIT = 500  # characters of the provider's own message passed on to clients
#: what in an upstream's error message means the prompt did not fit (OpenAI, Anthropic, Gemini wording)
CONTEXT_PHRASES = ("context length", "context_length", "context window", "prompt is too long", "too many tokens",
                   "input token count", "maximum context")  # fmt: skip


def is_context_overflow(message: str, code: str | None = None) -> bool:
    """Whether an upstream error says the prompt does not fit the model's context window."""
    lowered = message.lower()
    return code == "context_length_exceeded" or any(phrase in lowered for phrase in CONTEXT_PHRASES)


# things that look like credentials: OpenAI/Anthropic sk-..., Google AIza..., bearer tokens
_KEYISH = re.compile(r"(sk-[A-Za-z0-9_\-*]{4,}|AIza[A-Za-z0-9_\-]{10,}|Bearer\s+\S+|key=[^&\s\"']+)")


def redact(text: str) -> str:
    """Remove anything that looks like an API key from upstream text."""
    return _KEYISH.sub("[REDACTED]", text)


def provider_label(provider: str) -> str:
    return LABELS.get(provider, provider)


def _message_and_code(body: bytes) -> tuple[str, str | None]:
    """The upstream's own message and code, whatever the provider's error shape."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        return "", None  # a raw page (HTML, a proxy's text) is never passed on
    if isinstance(data, list) and data and isinstance(data[0], dict):  # Gemini sometimes wraps in a list
        data = data[0]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, str):  # Ollama: {"error": "model not found"}
            return error, None
        if isinstance(error, dict):
            message = error.get("message") or error.get("status") or json.dumps(error)[:300]
            code = error.get("code") if isinstance(error.get("code"), str) else error.get("type")
            return str(message), code if isinstance(code, str) else None
    return (data if isinstance(data, str) else ""), None


def _bounded(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"


def _retry_after(headers: dict[str, str]) -> float | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = lowered.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def map_http_error(provider: str, status: int, body: bytes, headers: dict[str, str]) -> UpstreamError:
    """One upstream error response -> the error the client and the router see."""
    message, code = _message_and_code(body)
    message = _bounded(redact(message)) or f"HTTP {status}"
    label = provider_label(provider)
    retryable = status in RETRYABLE_STATUSES or status >= 500
    if status in CLIENT_STATUSES:
        error = UpstreamError(
            label,
            message,
            status=status,
            retryable=retryable,
            retry_after=_retry_after(headers) if status == 429 else None,
            upstream_status=status,
        )
        if code:
            error.openai_code = code
        if status in (400, 413) and is_context_overflow(message, code):
            error.openai_code = "context_length_exceeded"  # one code whichever vendor said it: agents compact on it
        return error
    if status in (401, 403):
        text = f"the provider rejected the server's credentials (HTTP {status}): {message}"
        return UpstreamError(label, text, status=502, retryable=True, upstream_status=status)
    return UpstreamError(
        label, f"upstream error (HTTP {status}): {message}", status=502, retryable=retryable, upstream_status=status
    )
