"""Prometheus metrics, shared by every gunicorn worker (prometheus-client multiprocess mode).

gunicorn.conf.py points PROMETHEUS_MULTIPROC_DIR at a fresh directory before anything
imports prometheus_client (the library picks its multiprocess mode at import), so each
worker writes its samples there and /metrics folds them all. The names below are the
public contract, listed in the README.

Counters and histograms are counted in the worker's memory and written to its file in one
batch (:func:`flush`): at most :data:`FLUSH_SECONDS` after a change, before the worker
renders /metrics itself, and when it exits. A request changes about a dozen samples, and
each write to the file takes a lock. Gauges (in-flight requests, open streams, breaker
states) are written when they change.
"""

from __future__ import annotations

import os

import gevent
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values

from cb.logs import process_id

FLUSH_SECONDS = 0.5
_pending: list = []  # counter and histogram values with increments not yet written
_flush_due = False  # a timed flush is on its way


def flush() -> None:
    """Write every counter and histogram increment not yet written to the worker's file."""
    while _pending:
        _pending.pop().write()


def _timed_flush() -> None:
    global _flush_due
    _flush_due = False
    flush()


def _forget_pending() -> None:
    """In a forked child: the parent's unwritten increments are the parent's to write."""
    global _flush_due
    _flush_due = False
    for value in _pending:
        value._unwritten, value._waiting = 0.0, False
    _pending.clear()


os.register_at_fork(after_in_child=_forget_pending)


def _batched(file_value: type) -> type:
    """``file_value`` (prometheus-client's value backed by the worker's file), with counter and
    histogram increments kept in memory until :func:`flush`, and a gauge set to the value this
    process last wrote for it not written again (a breaker state, after every attempt)."""

    class BatchedValue(file_value):
        def __init__(self, typ, *args, **kwargs):
            super().__init__(typ, *args, **kwargs)
            self._batched = typ in ("counter", "histogram")
            self._unwritten = 0.0
            self._waiting = False
            self._set_by: int | None = None  # the process that last set this gauge, to self._value

        def inc(self, amount):
            global _flush_due
            if not self._batched:
                return super().inc(amount)
            self._unwritten += amount
            if not self._waiting:
                self._waiting = True
                _pending.append(self)
                if not _flush_due:
                    _flush_due = True
                    gevent.spawn_later(FLUSH_SECONDS, _timed_flush)

        def set(self, value, timestamp=None):
            if timestamp or value != self._value or self._set_by != process_id():
                super().set(value, timestamp)
                self._set_by = process_id()

        def get(self):
            return super().get() + self._unwritten

        def write(self) -> None:
            amount, self._unwritten, self._waiting = self._unwritten, 0.0, False
            super().inc(amount)

    return BatchedValue


if values.ValueClass is not values.MutexValue:  # multiprocess mode
    # prometheus-client asks for the process id on every write (to notice a fork): the kept one
    values.ValueClass = _batched(values.MultiProcessValue(process_id))

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_OVERHEAD = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)

http_requests = Counter("cb_http_requests_total", "HTTP requests", ["port", "route", "status"])
http_latency = Histogram(
    "cb_http_request_duration_seconds", "HTTP request latency", ["port", "route"], buckets=_LATENCY
)
in_flight = Gauge("cb_http_requests_in_flight", "Requests being served", ["port"], multiprocess_mode="livesum")
open_streams = Gauge("cb_open_streams", "SSE streams open to clients", multiprocess_mode="livesum")

upstream_latency = Histogram(
    "cb_upstream_latency_seconds", "Provider response time", ["provider", "model"], buckets=_LATENCY
)
upstream_ttft = Histogram(
    "cb_upstream_time_to_first_token_seconds", "Provider time to first token", ["provider", "model"], buckets=_LATENCY
)
gateway_overhead = Histogram(
    "cb_gateway_overhead_seconds", "Time spent in the gateway itself (total - upstream)", buckets=_OVERHEAD
)
llm_tokens = Counter(
    "cb_llm_tokens_total", "Tokens by provider, model and kind (prompt|completion)", ["provider", "model", "kind"]
)
llm_cost = Counter("cb_llm_cost_usd_total", "Cost in USD by provider and model", ["provider", "model"])
llm_unpriced = Counter(
    "cb_llm_unpriced_requests_total",
    "Requests served by a model no source prices (recorded as unpriced, not as $0): add a price",
    ["provider", "model"],
)
fallbacks = Counter("cb_router_fallbacks_total", "Requests served by a fallback model or deployment")
subscriptions_fell_behind = Counter(
    "cb_subscriptions_fell_behind_total", "GraphQL subscriptions ended because the subscriber fell behind"
)
retries = Counter("cb_router_retries_total", "Upstream attempts retried on another deployment")
breaker_state = Gauge(
    "cb_circuit_breaker_state",
    "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open",
    ["deployment"],
    multiprocess_mode="livemax",
)
rate_limited = Counter("cb_rate_limited_total", "Requests refused by a rate limit", ["limit"])
budget_refused = Counter("cb_budget_refused_total", "Requests refused by an exhausted budget")
tokens_created = Counter("cb_workflow_tokens_created_total", "Workflow tokens created", ["workflow"])
transitions_fired = Counter("cb_workflow_transitions_fired_total", "Workflow transitions fired", ["workflow"])
agent_executions = Counter("cb_agent_executions_total", "Agent executions finished", ["status"])
worker_restarts = Counter(
    "cb_worker_restarts_total",
    "Workers that ended while the server ran, replaced by gunicorn (timeout: killed by its timeout)",
    ["reason"],
)
nats_connected = Gauge("cb_nats_connected", "1 when this worker's NATS connection is up", multiprocess_mode="livemin")


def render() -> tuple[bytes, str]:
    """The exposition text of every worker's metrics, and its content type."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        flush()

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


def observe_attempt(
    provider: str, model: str, ok: bool, latency_ms: float, ttft_ms: float | None, deployment: str, breaker: str
) -> None:
    """One upstream attempt finished: its latency and TTFT (successes only) and the breaker it left."""
    if ok:
        _child(upstream_latency, provider, model).observe(latency_ms / 1000)
        if ttft_ms is not None:
            _child(upstream_ttft, provider, model).observe(ttft_ms / 1000)
    _child(breaker_state, deployment).set(_BREAKER_VALUES.get(breaker, 0))


def observe_usage(
    provider: str | None, model: str, prompt_tokens: int, completion_tokens: int, cost_usd: float, priced: bool = True
) -> None:
    """One request's usage record was written (``priced`` False: its model has no price)."""
    provider = provider or "none"
    if not priced:
        _child(llm_unpriced, provider, model).inc()
    if prompt_tokens:
        _child(llm_tokens, provider, model, "prompt").inc(prompt_tokens)
    if completion_tokens:
        _child(llm_tokens, provider, model, "completion").inc(completion_tokens)
    if cost_usd:
        _child(llm_cost, provider, model).inc(cost_usd)
