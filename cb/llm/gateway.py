"""The gateway: one chat, stream or embedding request, end to end, provider-neutral.

It asks the router for routes, tries them in order (failing over on retryable errors;
streams, in :mod:`cb.llm.stream`, only until their first chunk), counts the upstream
requests it sends in ``ctx.attempts`` (within ROUTER_MAX_ATTEMPTS routes and the
ROUTER_DEADLINE_SECONDS total deadline, :mod:`cb.llm.deadline`), reports every attempt to the router, and writes
exactly one :class:`UsageRecord` per request to the ledger: successful, failed (also
when no route could be chosen) or, for a stream the client abandons, ``interrupted`` with
the usage of what it was given. Failed attempts that were retried elsewhere are not billed.

When the upstream reports no usage, tokens are estimated (:mod:`cb.llm.estimate`) and
the record is marked ``estimated``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from cb import metrics
from cb.config import Settings
from cb.llm.affinity import SessionAffinity
from cb.llm.catalog import CREATED, VIRTUAL_MODELS, Catalog, ModelInfo
from cb.llm.deadline import Deadline
from cb.llm.errors import InvalidRequest, LLMError, NoNativeEndpoint, UnsupportedParameter, UpstreamError
from cb.llm.estimate import estimate_prompt, estimate_tokens
from cb.llm.passthrough import NativeRequest, RelayStream
from cb.llm.providers import PROVIDERS
from cb.llm.providers.base import Deployment, Provider, UpstreamCall
from cb.llm.routing import RequestContext, Route, UsageRecord
from cb.llm.stream import ChatStream, elapsed_ms
from cb.llm.transport import Transport
from cb.llm.types import ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse, Usage
from cb.logs import get_logger

log = get_logger("llm.gateway")
T = TypeVar("T")
_unpriced_said: set[tuple] = set()  # (provider, model) this worker logged as unpriced


def _say_unpriced(provider: str | None, model: str) -> None:
    """One log line per model (per worker) that served a request nobody prices."""
    if (provider, model) in _unpriced_said or len(_unpriced_said) >= 1000:
        return
    _unpriced_said.add((provider, model))
    log.warning(
        "model %s at %s has no price (genai-prices does not know it): its requests are recorded as unpriced; "
        "price it in CB_CONFIG [prices] or the deployment's prices",
        model,
        provider,
        extra={"fields": {"provider": provider, "model": model, "unpriced": True}},
    )


@dataclass
class Completion:
    """A finished chat completion and how it was served."""

    response: ChatResponse
    route: Route
    upstream_ms: float


@dataclass
class Relayed:
    """A relayed answer, as the upstream sent it (and parsed, when it is a JSON object), and how it was served."""

    body: bytes
    route: Route
    upstream_ms: float
    answer: dict | None = None
    headers: Mapping[str, str] | None = None  # the upstream's response headers


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
        self.affinity = SessionAffinity()
        #: (deployment id, API) pairs found not to serve that API natively (a self-hosted server
        #: at OPENAI_BASE_URL without the Responses API): their requests are translated instead
        self.lacking: set[tuple[str, str]] = set()

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

    def record(
        self,
        ctx: RequestContext,
        model: str,
        route: Route | None,
        usage: Usage,
        status: str,
        streamed: bool = False,
        ttft_ms: float | None = None,
    ) -> UsageRecord:
        """Write the request's one usage record (never raises: accounting must not break serving)."""
        info = route.model if route else None
        now = time.time()
        record = UsageRecord(
            id=ctx.request_id,
            timestamp=now,
            model=info.id if info else model,
            provider=route.deployment.provider_type if route else None,
            deployment=route.deployment.id if route else None,
            api_key_id=ctx.api_key_id,
            user=ctx.user,
            project=ctx.project,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cost_usd=info.cost(usage, now) if info else 0.0,  # fixed now, at the price in force today
            priced=info.priced if info else True,
            latency_ms=round(elapsed_ms(ctx.started), 3),
            ttft_ms=ttft_ms,
            status=status,
            streamed=streamed,
            fallback_used=bool(route and route.fallback),
            estimated=usage.estimated,
            request_id=ctx.request_id,
            attempts=ctx.attempts,
        )
        try:
            self.ledger.record(record)
        except Exception:
            log.exception("could not record usage")
        if ctx.settle_tokens is not None:
            ctx.settle_tokens(usage.prompt_tokens + usage.completion_tokens)
        metrics.observe_usage(
            record.provider,
            record.model,
            record.prompt_tokens,
            record.completion_tokens,
            record.cost_usd,
            record.priced,
        )
        if not record.priced and status != "error":
            _say_unpriced(record.provider, record.model)
        if status == "success" and route is not None and (route.fallback or ctx.attempts > 1):
            metrics.fallbacks.inc()  # served by a fallback model, or not by the first route tried
        if status == "success" and route is not None and ctx.session:
            self.affinity.remember(ctx.session, model, route.deployment.id)
        fields = {
            "provider": record.provider,
            "model": record.model,
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "cost_usd": round(record.cost_usd, 8),
            "streamed": streamed,
            "estimated": record.estimated,
            "attempts": ctx.attempts,
        }
        if ctx.annotate is not None:  # one line per request: the access line carries the usage
            ctx.annotate(**fields, usage_status=status)
        else:
            log.info("usage recorded", extra={"fields": {"request_id": ctx.request_id, **fields, "status": status}})
        return record

    def plan(self, model: str, request: ChatRequest | None, ctx: RequestContext) -> list[tuple[Route, Provider]]:
        """(route, provider) pairs to try in order, without providers that cannot express the request.

        Raises the router's errors, or UnsupportedParameter when no route can take the request."""
        unsupported: UnsupportedParameter | None = None
        pairs = []
        for route in self.router.routes(model, ctx):
            provider = self._provider(route)
            if request is not None and not route.model.chat:
                raise InvalidRequest(
                    f"The model '{model}' cannot chat (its provider lists it as an embedding, speech or image model)",
                    "model",
                    "model_not_supported",
                )
            if request is not None:
                try:
                    provider.check(request)
                except UnsupportedParameter as exc:
                    unsupported = unsupported or exc
                    continue
            pairs.append((route, provider))
        if not pairs and unsupported:
            raise unsupported
        return self.affinity.order(ctx.session, model, pairs)

    def deadline(self, ctx: RequestContext) -> Deadline:
        """The request's total deadline for trying routes (ROUTER_DEADLINE_SECONDS from its start)."""
        return Deadline(ctx.started, self.settings.router_deadline)

    def _send(self, route: Route, ctx: RequestContext) -> float | None:
        """Claim ``route`` for one attempt: its start time, or None if its breaker lets nothing through."""
        if self.router.started(route) is False:
            return None  # a half-open probe is taken, or it opened since the plan was made
        if ctx.attempts:
            metrics.retries.inc()  # an earlier attempt failed: this one is a retry
        ctx.attempts += 1
        return time.monotonic()

    # -- JSON requests: try each route, failing over --------------------------------------
    def _serve(
        self,
        model: str,
        ctx: RequestContext,
        plan: Callable[[], list[tuple[Route, Provider]]],
        build: Callable[[Provider, Deployment, Route], UpstreamCall],
        parse: Callable[[Provider, dict, Route], T],
        read: Callable | None = None,
    ) -> tuple[Route, T, float]:
        """Try the routes of ``plan()`` in order until one answers: (route, parsed answer, upstream ms).

        Each attempt builds its call, claims the route, sends within the request's deadline and
        reports the outcome to the router; retryable errors move on to the next route. When no
        route answers, the request's one ``error`` usage record is written and the last error raised.
        ``read`` sends a call and reads its answer for ``parse`` (the transport's ``json`` by default)."""
        read = read or self.transport.json
        last: LLMError | None = None
        route = None
        deadline = self.deadline(ctx)
        try:
            for route, provider in plan():
                if deadline.remaining() <= 0:
                    last = last or deadline.passed()
                    break
                deployment = self._deployment(route, ctx)
                call = build(provider, deployment, route)
                started = self._send(route, ctx)
                if started is None:
                    continue
                try:
                    with deadline.bounding():
                        body = read(deployment, call, provider)
                    response = parse(provider, body, route)
                except UpstreamError as exc:
                    self.router.finished(route, False, elapsed_ms(started), error=exc)
                    exc.deployment_id = route.deployment.id
                    last = exc
                    if exc.retryable:
                        log.warning(
                            "attempt failed, trying the next route",
                            extra={"fields": {"deployment": route.deployment.id, "error": exc.message}},
                        )
                        continue
                    break
                upstream_ms = elapsed_ms(started)
                self.router.finished(route, True, upstream_ms)
                return route, response, upstream_ms
        except LLMError as exc:
            last = exc
        if not isinstance(last, NoNativeEndpoint):  # else translated next, and recorded then
            self.record(ctx, model, route, Usage(), "error")
        raise last or UpstreamError("gateway", "no route could serve the request")

    # -- chat ------------------------------------------------------------------------
    def complete(self, request: ChatRequest, ctx: RequestContext) -> Completion:
        """A non-streamed chat completion, failing over between routes."""
        route, response, upstream_ms = self._serve(
            request.model,
            ctx,
            lambda: self.plan(request.model, request, ctx),
            lambda provider, deployment, route: provider.chat_call(deployment, request, route.upstream_model),
            lambda provider, body, route: provider.parse_chat(body, route.upstream_model),
        )
        if response.usage.estimated or not response.usage.total_tokens:
            chars = sum(
                len(c.message.text()) + sum(len(t.arguments) for t in c.message.tool_calls) for c in response.choices
            )
            response.usage = Usage(estimate_prompt(request), estimate_tokens(chars), estimated=True)
        self.record(ctx, request.model, route, response.usage, "success")
        return Completion(response, route, upstream_ms)

    def stream(self, request: ChatRequest, ctx: RequestContext) -> ChatStream:
        """A streamed completion: routes are chosen now, tried as it is iterated (see ChatStream)."""
        try:
            pairs = self.plan(request.model, request, ctx)
        except LLMError:
            self.record(ctx, request.model, None, Usage(), "error", streamed=True)
            raise
        return ChatStream(self, request, ctx, pairs)

    # -- pass-through ------------------------------------------------------------------
    def native_routes(self, request: NativeRequest, ctx: RequestContext) -> list[tuple[Route, Provider]] | None:
        """The routes that relay ``request`` as it came: those whose provider speaks its API, when
        the first route's does (failover stays within that API); None when the first route needs
        a translation. Router errors are recorded and raised, as for any request."""
        try:
            pairs = self.plan(request.model, None, ctx)
        except LLMError:
            self.record(ctx, request.model, None, Usage(), "error", streamed=request.stream)
            raise
        native = [
            p for p in pairs if request.api in p[1].relays and (p[0].deployment.id, request.api) not in self.lacking
        ]
        if not native or native[0] is not pairs[0]:
            return None
        return native

    def lacks(self, deployment_id: str, api: str) -> None:
        """Remember that ``deployment_id`` has no native ``api`` endpoint (it answered 404 for the
        path itself): this worker translates its requests from now on."""
        if (deployment_id, api) not in self.lacking:
            self.lacking.add((deployment_id, api))
            log.warning(
                "deployment has no native endpoint for this API; translating its requests",
                extra={"fields": {"deployment": deployment_id, "api": api}},
            )

    def relay(self, request: NativeRequest, ctx: RequestContext, pairs: list[tuple[Route, Provider]]) -> Relayed:
        """A non-streamed request relayed over ``pairs`` (failing over), its answer as it came;
        the usage is read from it."""
        usage: Usage | None = None
        answer: dict | None = None

        def parse(provider: Provider, read: tuple, route: Route) -> tuple:
            nonlocal usage, answer
            body = read[0]
            try:
                answer = json.loads(body)
            except ValueError:
                answer = None
            answer = answer if isinstance(answer, dict) else None
            usage = provider.relay_usage(answer) if answer is not None else None
            return read

        def read(deployment: Deployment, call: UpstreamCall, provider: Provider) -> tuple:
            try:
                return self.transport.answer(deployment, call, provider)
            except UpstreamError as exc:
                raise NoNativeEndpoint.of(exc) from None

        route, (body, headers), upstream_ms = self._serve(
            request.model,
            ctx,
            lambda: pairs,
            lambda provider, deployment, route: provider.relay_call(deployment, request, route.upstream_model),
            parse,
            read,
        )
        if usage is None or not usage.total_tokens:
            usage = Usage(request.prompt_estimate(), 0, estimated=True)
        self.record(ctx, request.model, route, usage, "success")
        return Relayed(body, route, upstream_ms, answer, headers)

    def relay_stream(self, request: NativeRequest, ctx: RequestContext, pairs: list[tuple[Route, Provider]]):
        """A streamed request relayed over ``pairs``: a :class:`RelayStream` (routes tried as it is iterated)."""
        return RelayStream(self, request, ctx, pairs)

    def stored(self, deployment_id: str, method: str, path: str, ctx: RequestContext) -> tuple[bytes, Mapping]:
        """``GET`` or ``DELETE`` of what a deployment stored for a relayed request (a Responses
        response), answered as it came (body and headers). Nothing is billed."""
        deployment = next((d for d in self.router.deployments if d.id == deployment_id), None)
        provider = PROVIDERS.get(deployment.provider_type) if deployment else None
        call = provider.stored_call(deployment, method, path) if provider else None
        if call is None:
            raise UpstreamError("gateway", f"the deployment '{deployment_id}' that stored it is not configured now")
        with self.deadline(ctx).bounding():
            return self.transport.answer(deployment, call, provider)

    def relay_count(
        self, request: NativeRequest, ctx: RequestContext, pairs: list[tuple[Route, Provider]]
    ) -> tuple[bytes, Mapping]:
        """A token count relayed to the first route as it came, body and headers (nothing is billed)."""
        route, provider = pairs[0]
        deployment = self._deployment(route, ctx)
        call = provider.relay_call(deployment, request, route.upstream_model)
        with self.deadline(ctx).bounding():
            return self.transport.answer(deployment, call, provider)

    def count_tokens(self, request: ChatRequest, ctx: RequestContext) -> tuple[int, bool]:
        """Input tokens of ``request`` and whether they are estimated: the first route's provider
        counts them where it has an endpoint for it (Anthropic), else (or when that fails) they
        are estimated from the text. Nothing is billed."""
        route, provider = self.plan(request.model, request, ctx)[0]
        deployment = self._deployment(route, ctx)
        call = provider.count_tokens_call(deployment, request, route.upstream_model)
        if call is not None:
            try:
                with self.deadline(ctx).bounding():
                    count = provider.parse_count(self.transport.json(deployment, call, provider))
                if count is not None:
                    return count, False
            except UpstreamError as exc:
                log.warning(
                    "could not count tokens upstream, estimating",
                    extra={"fields": {"deployment": route.deployment.id, "error": exc.message}},
                )
        tools = json.dumps([t.__dict__ for t in request.tools or []])
        return estimate_prompt(request) + (estimate_tokens(len(tools)) if request.tools else 0), True

    # -- embeddings --------------------------------------------------------------------
    def embed(self, request: EmbeddingRequest, ctx: RequestContext) -> Embeddings:
        """Embeddings, failing over between routes of a model that makes them."""

        def plan() -> list[tuple[Route, Provider]]:
            pairs = self.plan(request.model, None, ctx)
            if not pairs[0][0].model.embeddings and pairs[0][0].model.catalogued:
                raise InvalidRequest(
                    f"The model '{request.model}' does not create embeddings", "model", "model_not_supported"
                )
            return pairs

        route, response, upstream_ms = self._serve(
            request.model,
            ctx,
            plan,
            lambda provider, deployment, route: provider.embeddings_call(deployment, request, route.upstream_model),
            lambda provider, body, route: provider.parse_embeddings(body, route.upstream_model),
        )
        if response.usage.estimated:
            response.usage = Usage(estimate_tokens(sum(len(s) for s in request.input)), 0, estimated=True)
        self.record(ctx, request.model, route, response.usage, "success")
        return Embeddings(response, route, upstream_ms)

    # -- models ------------------------------------------------------------------------
    def models(self) -> list[dict]:
        """What the configured deployments serve (environment, CB_CONFIG and GraphQL-managed; the
        models Ollama and self-hosted endpoints reported, as ``<deployment>/<id>`` and under the bare
        id unless that names another deployment), at the first deployment's prices, each naming its
        deployments; then the virtual models."""
        from cb.llm.router import is_configured

        listed: dict[str, dict] = {}
        for deployment in getattr(self.router, "deployments", []):
            if not is_configured(deployment):
                continue
            discovered = not deployment.models and self.router.listed(deployment) is not None
            for info in self.router.served_models(deployment):
                names = [info.id]
                if discovered:
                    bare = not self.router.pinned(info.id)[0]  # "anthropic/claude-3" would go to Anthropic
                    names = [info.id, f"{deployment.id}/{info.id}"] if bare else [f"{deployment.id}/{info.id}"]
                for name in names:
                    entry = listed.get(name)
                    if entry is None:
                        entry = listed[name] = describe_model(info) | {"id": name, "deployments": []}
                    entry["deployments"].append(deployment.id)
        models = list(listed.values())
        for name, spec in VIRTUAL_MODELS.items():
            models.append(
                {
                    "id": name,
                    "object": "model",
                    "created": CREATED,
                    "owned_by": "circuit-breaker",
                    "provider": "circuit-breaker",
                    "context_window": None,
                    "supports_streaming": True,
                    "virtual": True,
                    "description": spec.get("description"),
                }
            )
        return models

    def probe(self, deployment: Deployment) -> int | None:
        """Ask ``deployment`` for its model list, the cheapest call that proves it answers and
        takes its key: how many models it listed, or None when its provider has no such call.
        Raises :class:`UpstreamError` (or UpstreamTimeout) when it cannot be used."""
        provider = PROVIDERS.get(deployment.provider_type)
        call = provider.models_call(deployment) if provider is not None else None
        if call is None:
            return None
        body = self.transport.json(deployment, call, provider)
        listed = body.get("data", body.get("models")) if isinstance(body, dict) else None
        return len(listed) if isinstance(listed, list) else 0

    def model(self, name: str) -> dict | None:
        for entry in self.models():
            if entry["id"] == name:
                return entry
        info = self.catalog.get(name)
        if info and any(entry["id"] == info.id for entry in self.models()):
            return describe_model(info) | {"id": name}
        return None


def describe_model(info: ModelInfo) -> dict:
    """A model as /v1/models shows it: prices per 1M tokens in force now (with the long-context
    tier, if any), and ``priced`` False for a model no source prices."""
    return {
        "id": info.id,
        "object": "model",
        "created": CREATED,
        "owned_by": "circuit-breaker",
        "provider": info.provider,
        "context_window": info.context_window,
        "supports_streaming": info.supports_streaming,
        **info.price_view(),
        "priced": info.priced,
        "chat": info.chat,
        "supports_tools": info.supports_tools,
        "supports_vision": info.supports_vision,
        "embeddings": info.embeddings,
        "aliases": list(info.aliases),
    }


def build_gateway(settings: Settings, storage, router=None, ledger=None, catalog: Catalog | None = None) -> Gateway:
    """The worker's gateway over the worker's router and usage ledger (or fresh ones)."""
    from cb.llm.ledger import UsageLedger
    from cb.llm.router import Router

    catalog = catalog or Catalog.default()
    router = router or Router(settings, catalog)
    return Gateway(settings, router, ledger or UsageLedger(storage), Transport(settings), catalog)
