"""Secrets never leave in a log line or a response.

Two nets, both in :data:`cb.logs.redactor`: the exact values we know (provider keys,
``CB_API_KEYS``, ``GRAPHQL_API_KEY``, ``CB_SECRET_KEY``, every client or agent key the
moment it is seen), and patterns for things shaped like credentials that we never saw
(an upstream echoing a key in its error body, an ``Authorization`` header in a dump).
:func:`scrub` applies the same nets to response text.
"""

from __future__ import annotations

from cb.logs import redactor

# Shapes of credentials: bearer tokens, header dumps, OpenAI/Anthropic "sk-...", our own
# "cb-..." client keys, Google "AIza...", "key=" query parameters. Each comes with the
# substrings one of which every match contains (any case), so text holding none is skipped.
PATTERNS = (
    (r"(?i)\b(?:bearer|basic)\s+(?P<secret>[A-Za-z0-9._~+/=\-]{8,})", ("bearer", "basic")),
    (
        r"(?i)(?:api-key|x-api-key|authorization|x-goog-api-key)[\"']?\s*[:=]\s*[\"']?(?!(?:bearer|basic)\s)"
        r"(?P<secret>[^\s\"',;]+)",
        ("api-key", "authorization"),
    ),
    (r"\bsk-[A-Za-z0-9_\-*]{8,}", ("sk-",)),
    (r"\bcb-[A-Za-z0-9_\-]{20,}", ("cb-",)),
    (r"\bAIza[A-Za-z0-9_\-]{10,}", ("aiza",)),
    (r"[?&]key=(?P<secret>[^&\s\"']+)", ("key=",)),
)

for _pattern, _screens in PATTERNS:
    redactor.add_pattern(_pattern, _screens)


def protect(*secrets: str | None) -> None:
    """Register secret values (keys read from settings, storage or a request)."""
    redactor.add(*secrets)


def scrub(text: str) -> str:
    """``text`` with every known secret and key-shaped string replaced by ``[REDACTED]``."""
    return redactor.redact(text)
