"""Security of the two APIs: client keys, per-key rate limits, request limits, redaction.

:class:`Security` is the one object the HTTP edges talk to (one per worker, in
``Services.security``); the parts live beside it: :mod:`cb.security.keys`,
:mod:`cb.security.ratelimit`, :mod:`cb.security.redaction`.
"""

from __future__ import annotations

import hmac

from cb.config import Settings
from cb.llm.errors import InvalidRequest
from cb.security.errors import InvalidApiKey, ModelNotAllowed, RateLimited
from cb.security.keys import ApiKey, KeyStore
from cb.security.ratelimit import RateLimiter, Reservation, estimate_tokens
from cb.security.redaction import protect, scrub
from cb.storage import Storage

__all__ = [
    "ApiKey",
    "InvalidApiKey",
    "KeyStore",
    "ModelNotAllowed",
    "RateLimited",
    "RateLimiter",
    "Reservation",
    "Security",
    "estimate_tokens",
    "protect",
    "scrub",
]

ANONYMOUS = "anonymous"


class Security:
    """Decides who a request is, whether it may run now, and whether it is too big."""

    def __init__(self, settings: Settings, storage: Storage):
        self.settings = settings
        self.keys = KeyStore(storage, settings.api_keys)
        self.limiter = RateLimiter(storage)
        protect(*settings.secrets)

    def identify(self, presented: str | None) -> ApiKey | None:
        """The client key's record; ``None`` for an anonymous caller when keys are optional.

        With OPENAI_API_KEY_REQUIRED=false a key that is not ours is ignored (clients such
        as the openai package always send one), so the request runs anonymously.
        """
        try:
            key = self.keys.authenticate(presented)
        except InvalidApiKey:
            if self.settings.openai_api_key_required:
                raise
            return None
        protect(presented)
        return key

    def admit(self, key: ApiKey | None, model: str | None, body: dict) -> Reservation:
        """Check the model against the key and take one request and the tokens estimated from
        ``body`` (estimated only under a token limit: a walk of every message's text)."""
        if key is not None:
            KeyStore.check_model(key, model)
        rpm = (key.rpm_limit if key else None) or self.settings.rate_limit_rpm
        tpm = (key.tpm_limit if key else None) or self.settings.rate_limit_tpm
        estimated = estimate_tokens(body) if tpm is not None else 0
        return self.limiter.acquire(key.id if key else ANONYMOUS, rpm, tpm, estimated)

    def check_body(self, body: dict) -> None:
        """Request limits beyond the byte size: the number of chat messages."""
        messages = body.get("messages")
        if isinstance(messages, list) and len(messages) > self.settings.max_messages:
            raise InvalidRequest(
                f"Too many messages: {len(messages)} (this server accepts at most {self.settings.max_messages}).",
                "messages",
                "too_many_messages",
            )

    def graphql_authorized(self, presented: str | None) -> bool:
        """Whether a GraphQL request or WebSocket may proceed (always, when no key is set)."""
        expected = self.settings.graphql_api_key
        if not expected:
            return True
        return bool(presented) and hmac.compare_digest(presented.encode(), expected.encode())


def bearer(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value (or a bare token)."""
    if not value:
        return None
    value = value.strip()
    scheme, _, token = value.partition(" ")
    if token and scheme.lower() == "bearer":
        return token.strip() or None
    return None if " " in value else value or None
