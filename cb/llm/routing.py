"""The seams between the HTTP edge, the router and the cost ledger.

The edge builds a :class:`RequestContext`, asks the router for :class:`Route`\\ s in
order of preference, tries them (failing over on retryable errors before the first
byte reached the client), reports each outcome back, and writes exactly one
:class:`UsageRecord` per request.
"""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from cb.llm.catalog import ModelInfo
from cb.llm.providers.base import Deployment


@dataclass
class RequestContext:
    """Who asked, and the request-level routing options."""

    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    api_key_id: str | None = None
    user: str | None = None
    project: str | None = None
    strategy: str | None = None  # header X-CB-Routing-Strategy or body circuit_breaker.routing_strategy
    max_cost_per_1k_tokens: float | None = None
    max_latency_ms: float | None = None
    preferred_providers: list[str] = field(default_factory=list)
    fallback_models: list[str] = field(default_factory=list)
    provider_key: str | None = None  # an agent's own key (bring your own key)
    session: str | None = None  # the agent session the request belongs to (cb.llm.affinity)
    settle_tokens: Callable[[int], None] | None = None  # replaces the rate limiter's token estimate
    started: float = field(default_factory=time.monotonic)
    attempts: int = 0  # upstream requests sent so far for this request (the gateway counts them)
    # the request's access-log line, which then carries the usage (None outside a request: an
    # agent's call, whose usage gets a line of its own)
    annotate: Callable[..., None] | None = None


@dataclass
class Route:
    """One way to serve a request: a deployment and the model name it expects."""

    deployment: Deployment
    model: ModelInfo
    upstream_model: str  # what is sent on the wire (the deployment may rename it)
    fallback: bool = False  # reached through a fallback model, not the one asked for


@dataclass(slots=True)
class UsageRecord:
    """One request's usage: the source of truth for cost analytics and budgets."""

    id: str
    timestamp: float
    model: str
    provider: str | None = None
    deployment: str | None = None
    api_key_id: str | None = None
    user: str | None = None
    project: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, read from the provider's cache (priced at its cached rate)
    cache_write_tokens: int = 0  # of prompt_tokens, written to it
    cost_usd: float = 0.0
    priced: bool = True  # False: the model has no price anywhere, so the cost of 0 is not a price
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    status: str = "success"  # success | error | interrupted
    streamed: bool = False
    fallback_used: bool = False
    estimated: bool = False
    request_id: str | None = None
    attempts: int = 0  # upstream requests sent; failed ones retried elsewhere are not billed

    def to_dict(self) -> dict:
        return dict(zip(_USAGE_FIELDS, _usage_values(self), strict=True))  # every field is a scalar

    @classmethod
    def from_dict(cls, data: dict) -> UsageRecord:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


_USAGE_FIELDS = tuple(UsageRecord.__dataclass_fields__)
_usage_values = operator.attrgetter(*_USAGE_FIELDS)  # the fields' values as a tuple, in one call
