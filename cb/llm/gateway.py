"""The gateway: one chat, stream or embedding request, end to end, provider-neutral.

It asks the router for routes, tries them in order (failing over on retryable errors,
for streams only until the upstream has accepted the request, i.e. before anything
reached the client), reports every attempt to the router, and writes exactly one
:class:`UsageRecord` per request to the ledger, streams included: a stream the client
abandons is recorded as ``interrupted`` with the usage of what it was given.

Token estimates: when the upstream reports no usage, tokens are estimated as one per
four characters of text (prompt: every message's text and tool-call arguments plus
four per message; completion: content and tool-call arguments), rounded up, and the
record is marked ``estimated``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import gevent

from cb import metrics
from cb.config import Settings
from cb.llm.catalog import CREATED, VIRTUAL_MODELS, Catalog, ModelInfo
from cb.llm.errors import InvalidRequest, LLMError, UnsupportedParameter, UpstreamError, UpstreamTimeout
from cb.llm.providers import PROVIDERS
from cb.llm.providers.base import Provider
from cb.llm.providers.errors import provider_label
from cb.llm.routing import RequestContext, Route, UsageRecord
from cb.llm.transport import Transport
from cb.llm.types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, StreamChunk, Usage
from cb.logs import get_logger

log = get_logger("llm.gateway")

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def estimate_tokens(text_chars: int) -> int:
    return math.ceil(text_chars / CHARS_PER_TOKEN)


def estimate_prompt(request: ChatRequest) -> int:
    chars = sum(len(m.text()) + sum(len(c.arguments) for c in m.tool_calls) for m in request.messages)
    return estimate_tokens(chars) + TOKENS_PER_MESSAGE * len(request.messages)


def _ms(since: float) -> float:
    return (time.monotonic() - since) * 1000


@dataclass
class Completion:
    """A finished chat completion and how it was served."""

    response: ChatResponse
    route: Route
    upstream_ms: float


@dataclass
class Embeddings:
    response: EmbeddingResponse
    route: Route
    upstream_ms: float


class Gateway:
    """Serves canonical requests over the router's routes and records their usage."""

    def __init__(self, settings: Settings, router, ledger, transport: Transport, catalog: Catalog):
        self.settings = settings
        self.router = router
        self.ledger = ledger
        self.transport = transport
        self.catalog = catalog

    # -- helpers ---------------------------------------------------------------------
    def _provider(self, route: Route) -> Provider:
        provider = PROVIDERS.get(route.deployment.provider_type)
        if provider is None:
            raise UpstreamError(route.deployment.provider_type, "no adapter is installed for this provider")
        return provider

    @staticmethod
    def _deployment(route: Route, ctx: RequestContext):
        if ctx.provider_key:
            return replace(route.deployment, api_key=ctx.provider_key)
        return route.deployment

    def record(self, ctx: RequestContext, model: str, route: Route | None, usage: Usage, status: str,
               streamed: bool = False, ttft_ms: float | None = None) -> UsageRecord:
        """Write the request's one usage record (never raises: accounting must not break serving)."""
        info = route.model if route else None
        record = UsageRecord(
            id=ctx.request_id, timestamp=time.time(), model=info.id if info else model,
            provider=route.deployment.provider_type if route else None,
            deployment=route.deployment.id if route else None,
            api_key_id=ctx.api_key_id, user=ctx.user, project=ctx.project,
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
            cost_usd=info.cost(usage.prompt_tokens, usage.completion_tokens) if info else 0.0,
            latency_ms=round(_ms(ctx.started), 3), ttft_ms=ttft_ms, status=status, streamed=streamed,
            fallback_used=bool(route and route.fallback), estimated=usage.estimated, request_id=ctx.request_id,
        )
        ctx.usage = record
        try:
            self.ledger.record(record)
        except Exception:
            log.exception("could not record usage")
        metrics.observe_usage(record.provider, record.model, record.prompt_tokens, record.completion_tokens,
                              record.cost_usd)
        log.info("usage recorded", extra={"fields": {
            "request_id": ctx.request_id, "model": record.model, "provider": record.provider, "status": status,
            "prompt_tokens": record.prompt_tokens, "completion_tokens": record.completion_tokens,
            "cost_usd": round(record.cost_usd, 8), "streamed": streamed, "estimated": record.estimated}})
        return record

    def _attempts(self, routes: list[Route], request: ChatRequest | None):
        """Yield (route, provider) in order, skipping providers that cannot express the request."""
        unsupported: UnsupportedParameter | None = None
        for route in routes:
            provider = self._provider(route)
            if request is not None:
                try:
                    provider.check(request)
                except UnsupportedParameter as exc:
                    unsupported = unsupported or exc
                    continue
            yield route, provider
        if unsupported:
            raise unsupported

    # -- chat ------------------------------------------------------------------------
    def complete(self, request: ChatRequest, ctx: RequestContext) -> Completion:
        """A non-streamed chat completion, failing over between routes."""
        routes = self.router.routes(request.model, ctx)
        last: LLMError | None = None
        route = None
        try:
            for route, provider in self._attempts(routes, request):
                deployment = self._deployment(route, ctx)
                call = provider.chat_call(deployment, request, route.upstream_model)
                if self.router.started(route) is False:
                    continue  # its breaker lets nothing through now (a half-open probe is taken)
                if last is not None:
                    metrics.retries.inc()  # an earlier attempt failed: this one is a retry
                started = time.monotonic()
                try:
                    body = self.transport.json(deployment, call, provider)
                    response = provider.parse_chat(body, route.upstream_model)
                except UpstreamError as exc:
                    self.router.finished(route, False, _ms(started), error=exc)
                    last = exc
                    if exc.retryable:
                        log.warning("attempt failed, trying the next route", extra={"fields": {
                            "deployment": route.deployment.id, "error": exc.message}})
                        continue
                    break
                upstream_ms = _ms(started)
                self.router.finished(route, True, upstream_ms)
                if response.usage.estimated or not response.usage.total_tokens:
                    chars = sum(len(c.message.text()) + sum(len(t.arguments) for t in c.message.tool_calls)
                                for c in response.choices)
                    response.usage = Usage(estimate_prompt(request), estimate_tokens(chars), estimated=True)
                self.record(ctx, request.model, route, response.usage, "success")
                _count_fallback(route, routes)
                return Completion(response, route, upstream_ms)
        except LLMError as exc:
            last = exc
        self.record(ctx, request.model, route, Usage(), "error")
        raise last or UpstreamError("gateway", "no route could serve the request")

    def stream(self, request: ChatRequest, ctx: RequestContext) -> ChatStream:
        """Open a streamed completion on the first route that accepts it."""
        routes = self.router.routes(request.model, ctx)
        last: LLMError | None = None
        route = None
        try:
            for route, provider in self._attempts(routes, request):
                deployment = self._deployment(route, ctx)
                call = provider.chat_call(deployment, request, route.upstream_model)
                if self.router.started(route) is False:
                    continue  # its breaker lets nothing through now (a half-open probe is taken)
                if last is not None:
                    metrics.retries.inc()  # an earlier attempt failed: this one is a retry
                started = time.monotonic()
                try:
                    response = self.transport.open(deployment, call, provider)
                except UpstreamError as exc:
                    self.router.finished(route, False, _ms(started), error=exc)
                    last = exc
                    if exc.retryable:
                        continue
                    break
                _count_fallback(route, routes)
                return ChatStream(self, request, ctx, route, provider, response, started)
        except LLMError as exc:
            last = exc
        self.record(ctx, request.model, route, Usage(), "error", streamed=True)
        raise last or UpstreamError("gateway", "no route could serve the request")

    # -- embeddings --------------------------------------------------------------------
    def embed(self, request: EmbeddingRequest, ctx: RequestContext) -> Embeddings:
        routes = self.router.routes(request.model, ctx)
        if not routes[0].model.embeddings:
            raise InvalidRequest(f"The model '{request.model}' does not create embeddings", "model",
                                 "model_not_supported")
        last: LLMError | None = None
        route = None
        try:
            for route, provider in self._attempts(routes, None):
                deployment = self._deployment(route, ctx)
                call = provider.embeddings_call(deployment, request, route.upstream_model)
                if self.router.started(route) is False:
                    continue  # its breaker lets nothing through now (a half-open probe is taken)
                if last is not None:
                    metrics.retries.inc()  # an earlier attempt failed: this one is a retry
                started = time.monotonic()
                try:
                    response = provider.parse_embeddings(self.transport.json(deployment, call, provider),
                                                         route.upstream_model)
                except UpstreamError as exc:
                    self.router.finished(route, False, _ms(started), error=exc)
                    last = exc
                    if exc.retryable:
                        continue
                    break
                upstream_ms = _ms(started)
                self.router.finished(route, True, upstream_ms)
                if response.usage.estimated:
                    response.usage = Usage(estimate_tokens(sum(len(s) for s in request.input)), 0, estimated=True)
                self.record(ctx, request.model, route, response.usage, "success")
                _count_fallback(route, routes)
                return Embeddings(response, route, upstream_ms)
        except LLMError as exc:
            last = exc
        self.record(ctx, request.model, route, Usage(), "error")
        raise last or UpstreamError("gateway", "no route could serve the request")

    # -- models ------------------------------------------------------------------------
    def models(self) -> list[dict]:
        """Models of the configured providers, then the virtual models, in the guide's shape."""
        from cb.llm.router import is_configured

        configured = {d.provider_type for d in getattr(self.router, "deployments", []) if is_configured(d)}
        listed = [describe_model(m) for m in self.catalog.models.values() if m.provider in configured]
        for name, spec in VIRTUAL_MODELS.items():
            listed.append({"id": name, "object": "model", "created": CREATED, "owned_by": "circuit-breaker",
                           "provider": "circuit-breaker", "context_window": None, "supports_streaming": True,
                           "virtual": True, "description": spec.get("description")})
        return listed

    def model(self, name: str) -> dict | None:
        for entry in self.models():
            if entry["id"] == name:
                return entry
        info = self.catalog.get(name)
        if info and any(entry["id"] == info.id for entry in self.models()):
            return describe_model(info) | {"id": name}
        return None


def _count_fallback(route: Route, routes: list[Route]) -> None:
    """A request served by a fallback model, or by another deployment than the first choice."""
    if route.fallback or (routes and route is not routes[0]):
        metrics.fallbacks.inc()


def describe_model(info: ModelInfo) -> dict:
    return {
        "id": info.id, "object": "model", "created": CREATED, "owned_by": "circuit-breaker",
        "provider": info.provider, "context_window": info.context_window,
        "supports_streaming": info.supports_streaming,
        "input_price_per_million": info.input_price, "output_price_per_million": info.output_price,
        "supports_tools": info.supports_tools, "supports_vision": info.supports_vision,
        "embeddings": info.embeddings, "aliases": list(info.aliases),
    }


class ChatStream:
    """A streamed completion in flight: iterate for canonical chunks, then it records itself.

    Iterating to the end records ``success``; an upstream failure records ``error`` and
    re-raises; stopping early (``close()``, or the consuming greenlet being killed because
    the client left) records ``interrupted``. The upstream response is closed in every case.
    """

    def __init__(self, gateway: Gateway, request: ChatRequest, ctx: RequestContext, route: Route,
                 provider: Provider, response, started: float):
        self.gateway, self.request, self.ctx, self.route = gateway, request, ctx, route
        self.provider, self.response, self.started = provider, response, started
        self.upstream_open_ms = _ms(started)
        self.usage: Usage | None = None
        self.delivered_chars = 0
        self.ttft_ms: float | None = None
        self._recorded = False

    def __iter__(self) -> Iterator[StreamChunk]:
        status, error = "interrupted", None
        lines = self.gateway.transport.lines(self.response, self.provider)
        chunks = self.provider.parse_stream(lines, self.route.upstream_model)
        try:
            first = self._first(chunks)
            if first is not None:
                yield self._seen(first)
                for chunk in chunks:
                    yield self._seen(chunk)
            status = "success"
        except UpstreamError as exc:
            status, error = "error", exc
            raise
        finally:
            chunks.close()
            lines.close()
            self.response.close()
            self._finish(status, error)

    def _first(self, chunks: Iterator[StreamChunk]) -> StreamChunk | None:
        """The first chunk, within the time-to-first-token limit."""
        seconds = self.gateway.settings.first_token_timeout
        timer = gevent.Timeout(seconds)
        timer.start()
        try:
            return next(chunks, None)
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise UpstreamTimeout(provider_label(self.provider.type),
                                  f"no first token within {seconds:g} seconds") from None
        finally:
            timer.close()

    def _seen(self, chunk: StreamChunk) -> StreamChunk:
        if self.ttft_ms is None:
            self.ttft_ms = round(_ms(self.started), 3)
        if chunk.usage:
            self.usage = chunk.usage
        self.delivered_chars += len(chunk.content or "") + sum(len(c.arguments) for c in chunk.tool_calls)
        return chunk

    def final_usage(self) -> Usage:
        """The upstream's usage, or an estimate of what was delivered."""
        if self.usage and self.usage.total_tokens:
            return self.usage
        return Usage(estimate_prompt(self.request), estimate_tokens(self.delivered_chars), estimated=True)

    def close(self) -> None:
        """Stop early (client gone): close the upstream now and record ``interrupted``."""
        self.response.close()
        self._finish("interrupted", None)

    def _finish(self, status: str, error: Exception | None) -> None:
        if self._recorded:
            return
        self._recorded = True
        ok = status != "error"
        self.gateway.router.finished(self.route, ok, _ms(self.started), self.ttft_ms, error)
        self.gateway.record(self.ctx, self.request.model, self.route, self.final_usage(), status,
                            streamed=True, ttft_ms=self.ttft_ms)


def build_gateway(settings: Settings, storage, router=None, ledger=None, catalog: Catalog | None = None) -> Gateway:
    """The worker's gateway over the worker's router and usage ledger (or fresh ones)."""
    from cb.llm.ledger import UsageLedger
    from cb.llm.router import Router

    catalog = catalog or Catalog.default()
    router = router or Router(settings, catalog)
    return Gateway(settings, router, ledger or UsageLedger(storage), Transport(settings), catalog)
