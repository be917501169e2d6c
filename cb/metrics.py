"""Prometheus metrics, shared by every gunicorn worker (prometheus-client multiprocess mode).

gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh directory before anything
imports prometheus_client (the library picks its multiprocess mode at import), so each
worker writes its samples there and /metrics folds them all. The names below are the
public contract, listed in the README.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

http_requests = Counter("cb_http_requests_total", "HTTP requests", ["port", "route", "status"])
http_latency = Histogram("cb_http_request_duration_seconds", "HTTP request latency", ["port", "route"],
                         buckets=_LATENCY)
in_flight = Gauge("cb_http_requests_in_flight", "Requests being served", ["port"], multiprocess_mode="livesum")
open_streams = Gauge("cb_open_streams", "SSE streams open to clients", multiprocess_mode="livesum")

upstream_latency = Histogram("cb_upstream_latency_seconds", "Provider response time", ["provider", "model"],
                             buckets=_LATENCY)
upstream_ttft = Histogram("cb_upstream_time_to_first_token_seconds", "Provider time to first token",
                          ["provider", "model"], buckets=_LATENCY)
gateway_overhead = Histogram("cb_gateway_overhead_seconds", "Time spent in the gateway itself (total - upstream)",
                             buckets=_OVERHEAD)
llm_tokens = Counter("cb_llm_tokens_total", "Tokens by provider, model and kind (prompt|completion)",
                     ["provider", "model", "kind"])
llm_cost = Counter("cb_llm_cost_usd_total", "Cost in USD by provider and model", ["provider", "model"])
fallbacks = Counter("cb_router_fallbacks_total", "Requests served by a fallback model or deployment")
subscriptions_fell_behind = Counter(
    "cb_subscriptions_fell_behind_total", "GraphQL subscriptions ended because the subscriber fell behind"
)
retries = Counter("cb_router_retries_total", "Upstream attempts retried on another deployment")
breaker_state = Gauge("cb_circuit_breaker_state", "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open",
                      ["deployment"], multiprocess_mode="livemax")
rate_limited = Counter("cb_rate_limited_total", "Requests refused by a rate limit", ["limit"])
budget_refused = Counter("cb_budget_refused_total", "Requests refused by an exhausted budget")
tokens_created = Counter("cb_workflow_tokens_created_total", "Workflow tokens created", ["workflow"])
transitions_fired = Counter("cb_workflow_transitions_fired_total", "Workflow transitions fired", ["workflow"])
agent_executions = Counter("cb_agent_executions_total", "Agent executions finished", ["status"])
nats_connected = Gauge("cb_nats_connected", "1 when this worker's NATS connection is up", multiprocess_mode="livemin")


def render() -> tuple[bytes, str]:
    """The exposition text of every worker's metrics, and its content type."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


_BREAKER_VALUES = {"closed": 0, "half_open": 1, "open": 2}
_CHILDREN_KEPT = 10_000
_children: dict[tuple, object] = {}


def _child(metric, *labels: str):
    """``metric.labels(*labels)``, looked up once per label set (``labels`` locks and rebuilds a key)."""
    key = (id(metric), labels)
    child = _children.get(key)
    if child is None:
        if len(_children) >= _CHILDREN_KEPT:
            _children.clear()
        child = _children[key] = metric.labels(*labels)
    return child


def observe_attempt(provider: str, model: str, ok: bool, latency_ms: float, ttft_ms: float | None,
                    deployment: str, breaker: str) -> None:
    """One upstream attempt finished: its latency and TTFT (successes only) and the breaker it left."""
    if ok:
        _child(upstream_latency, provider, model).observe(latency_ms / 1000)
        if ttft_ms is not None:
            _child(upstream_ttft, provider, model).observe(ttft_ms / 1000)
    _child(breaker_state, deployment).set(_BREAKER_VALUES.get(breaker, 0))


def observe_usage(provider: str | None, model: str, prompt_tokens: int, completion_tokens: int,
                  cost_usd: float) -> None:
    """One request's usage record was written."""
    provider = provider or "none"
    if prompt_tokens:
        _child(llm_tokens, provider, model, "prompt").inc(prompt_tokens)
    if completion_tokens:
        _child(llm_tokens, provider, model, "completion").inc(completion_tokens)
    if cost_usd:
        _child(llm_cost, provider, model).inc(cost_usd)
