"""What a translation across vendors left out: named to the client and logged once.

The edge parsers and the providers note each field, block or tool that cannot reach the
target (``ChatRequest.dropped``). The answer names them in ``x-cb-dropped``; the log gets one
line per client (its User-Agent product) and feature for the life of the worker, so an
operator learns what an agent loses on a model without a line per request. A request that
went to its own vendor's API unchanged (the Messages body to Anthropic) lost nothing.
"""

from __future__ import annotations

from cb.llm.routing import Route
from cb.llm.types import ChatRequest
from cb.logs import get_logger

log = get_logger("llm.translation")
SEEN_LIMIT = 4096  # (client, feature) pairs remembered; past that, nothing more is logged

_seen: set[tuple[str, str]] = set()


def client_of(user_agent: str | None) -> str:
    """The client's product from its User-Agent (``claude-cli/2.1.3 (…)`` -> ``claude-cli``)."""
    product = (user_agent or "").strip().split(" ", 1)[0].split("/", 1)[0]
    return product[:64] or "unknown"


def dropped_headers(request: ChatRequest, route: Route | None, client: str) -> dict[str, str]:
    """``x-cb-dropped`` for a request served on ``route``, logging what this client had not lost before."""
    if route is None or not request.dropped:
        return {}
    if request.anthropic_body is not None and route.deployment.provider_type == "anthropic":
        return {}
    for feature in request.dropped:
        key = (client, feature)
        if key in _seen or len(_seen) >= SEEN_LIMIT:
            continue
        _seen.add(key)
        log.info(
            "not translated for this provider",
            extra={
                "fields": {
                    "client": client,
                    "feature": feature,
                    "provider": route.deployment.provider_type,
                    "model": request.model,
                }
            },
        )
    return {"x-cb-dropped": ", ".join(request.dropped)}
