"""The router: which deployments can serve a request, in which order.

:meth:`Router.plan` resolves the model name and ranks every eligible
(deployment, model) pair with a strategy (:mod:`cb.llm.strategies`):

* ``provider/model`` picks explicitly; ``provider`` is a provider type (``anthropic``,
  ``ollama`` …) or a deployment id (``vllm-gpu/llama3.2``);
* a bare model or alias resolves through the catalog, or names a model a deployment
  lists in its ``models``, or follows a vendor's naming (``claude-*``, ``gpt-*``, ``o3``,
  ``gemini-*``: :func:`cb.llm.catalog.vendor_of`) and goes to that vendor's deployments
  whose listing has not succeeded yet (the provider's own 404 answers a name it lacks);
* a virtual model (``auto``, ``cb:cost-optimal`` …) ranks every configured deployment's
  models carrying the virtual model's tag, so it never lands on a provider without a key.

A deployment serves its ``models`` list, else what its endpoint listed at discovery
(:attr:`Router.discovered`: OpenAI, Anthropic, Gemini, Ollama, any OpenAI-compatible
server; a listed dated id also answers to its undated name), else (never listed yet) the
catalog's models of its type and names in its vendor's style. An Ollama deployment
without a list serves only the models discovery found on it, so while Ollama is
unreachable no bare or virtual model resolves to it (``ollama/<model>`` is still sent as
asked). An explicit ``openai/<model>`` goes to a deployment that lists it, else as asked
to any of that type. Listed models that cannot chat are not chosen by virtual models, and
the gateway refuses them for chat.
A deployment's own ``prices`` override genai-prices' for the routes through it, so
``cost_optimized`` can tell two endpoints of one model apart and each request is billed at
its endpoint's price; then CB_CONFIG's ``[prices]``; a model nobody priced costs 0 and is
marked unpriced (virtual models leave out a vendor's unpriced model: it would rank as free).

Eligible means enabled, configured (has its key), breaker closed or with its probe free,
not inside a Retry-After, and within ``max_cost_per_1k_tokens``. ``max_latency_ms``
drops measured-slower deployments unless that would drop all. ``preferred_providers``
move matching routes to the front, in the order given. Fallback models (the request's
``fallback_models``, else the CB_CONFIG chain) follow with ``Route.fallback`` set. The
list is cut at ``max_attempts``.

The gateway calls :meth:`Router.started` before sending on a route (False: skip it, a
half-open breaker's single probe is taken) and :meth:`Router.finished` after (or
:meth:`Router.abandoned` when the client left before the attempt had an outcome).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cb import metrics
from cb.config import Settings
from cb.llm.catalog import VIRTUAL_MODELS, Catalog, ModelInfo, vendor_of
from cb.llm.deployments import KEY_VARIABLES, LISTING_TYPES, PROVIDER_TYPES, RouterConfig, is_configured
from cb.llm.discovery import NOTHING, Listing
from cb.llm.errors import InvalidRequest, LLMError, ModelNotFound, ProviderNotConfigured
from cb.llm.health import BreakerPolicy, HealthBook
from cb.llm.providers.base import Deployment
from cb.llm.routing import RequestContext, Route
from cb.llm.strategies import STRATEGIES, Candidate, normalize_strategy

PRICED_ROUTES_LIMIT = 4096  # (deployment, model) prices kept


class RateLimitedUpstream(LLMError):
    """Every deployment that could serve the request asked us to wait (its Retry-After)."""

    http_status = 429
    code = "RATE_LIMITED"
    openai_code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.param = "model"
        self.retry_after = retry_after


class ModelNotServed(ModelNotFound):
    """A known model that no reachable deployment lists (an Ollama that is down or lacks it)."""

    def __init__(self, model: str, where: str):
        super().__init__(model)
        self.message = (
            f"The model '{model}' is not available: {where} has not listed it "
            "(is the server reachable and the model pulled?)"
        )
        self.args = (self.message,)


class NoRouteAvailable(LLMError):
    """Every deployment that could serve the request is open, cooling down, or too expensive."""

    http_status = 503
    code = "NO_ROUTE_AVAILABLE"
    openai_code = "service_unavailable"

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.param = "model"
        self.retry_after = retry_after


@dataclass
class RoutePlan:
    """The router's decision for one request: the strategy used and the routes, best first."""

    model: str
    strategy: str
    routes: list[Route]
    virtual: bool = False


class _Fixed:
    """A fixed list of deployments with the registry's ``all()``."""

    def __init__(self, deployments: list[Deployment]):
        self.deployments = deployments

    def all(self) -> list[Deployment]:
        return self.deployments


class Router:
    """Chooses routes for a request and hears how each one went."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        deployments=None,
        config: RouterConfig | None = None,
        health: HealthBook | None = None,
    ):
        from cb.llm.deployments import env_deployments

        self.settings = settings
        self.catalog = catalog
        self.config = config or RouterConfig()
        if deployments is None:
            deployments = env_deployments(settings) + self.config.deployments
        self.registry = _Fixed(deployments) if isinstance(deployments, list) else deployments
        self.health = health or HealthBook(BreakerPolicy.from_settings(settings))
        self.default_strategy = self.config.default_strategy or settings.routing_strategy
        self.max_attempts = self.config.max_attempts or settings.router_max_attempts
        self.extra_prices: dict[str, list] = {}  # CB_CONFIG [prices] of models the catalog holds no entry of
        self._priced_routes: dict[tuple[str, str], tuple] = {}  # see _priced
        #: deployment id -> model ids its endpoint listed at the last successful discovery
        self.discovered: dict[str, Listing] = {}
        catalog.context_windows.update(self.config.context_windows)
        for model, price in self.config.prices.items():
            if catalog.get(model):
                catalog.override_price(model, price)
            else:
                self.extra_prices[model] = price

    @property
    def deployments(self) -> list[Deployment]:
        return self.registry.all()

    # -- the decision ---------------------------------------------------------------

    def routes(self, model: str, ctx: RequestContext) -> list[Route]:
        """Routes for ``model`` in order of preference (see :meth:`plan`)."""
        return self.plan(model, ctx).routes

    def strategy_for(self, model: str, ctx: RequestContext) -> str:
        """The strategy a request uses: its own, else the virtual model's, else the server default."""
        try:
            asked = normalize_strategy(ctx.strategy)
        except ValueError as exc:
            raise InvalidRequest(str(exc), "circuit_breaker.routing_strategy") from None
        virtual = VIRTUAL_MODELS.get(model)
        return asked or (virtual or {}).get("strategy") or self.default_strategy

    def plan(self, model: str, ctx: RequestContext) -> RoutePlan:
        """Decide. Raises ModelNotFound, ProviderNotConfigured, InvalidRequest or NoRouteAvailable."""
        strategy = self.strategy_for(model, ctx)
        now = time.monotonic()
        deployments = self.deployments
        if model in VIRTUAL_MODELS:
            primary = self._virtual_candidates(VIRTUAL_MODELS[model]["tag"], deployments)
            if not primary:
                raise ProviderNotConfigured(
                    "any", "OPENAI_API_KEY, ANTHROPIC_API_KEY, GOOGLE_API_KEY or OLLAMA_BASE_URL", model
                )
            fallback_names = list(ctx.fallback_models)
        else:
            info, primary = self._model_candidates(model, ctx, deployments)
            fallback_names = (
                list(ctx.fallback_models) or self.config.fallbacks.get(model) or self.config.fallbacks.get(info.id, [])
            )
        ranked = self._rank(primary, strategy, ctx, now)
        seen = {(r.deployment.id, r.model.id) for r in ranked}
        for name in fallback_names:
            try:
                _, more = self._model_candidates(name, ctx, deployments)
            except (ModelNotFound, ProviderNotConfigured):
                continue
            for route in self._rank(more, strategy, ctx, now):
                if (route.deployment.id, route.model.id) not in seen:
                    seen.add((route.deployment.id, route.model.id))
                    route.fallback = True
                    ranked.append(route)
        if not ranked:
            raise self._why_none(model, primary, ctx, now)
        return RoutePlan(model, strategy, ranked[: self.max_attempts], virtual=model in VIRTUAL_MODELS)

    def _rank(self, candidates: list[Candidate], strategy: str, ctx: RequestContext, now: float) -> list[Route]:
        eligible = [c for c in candidates if c.health.available(now)]
        if ctx.max_cost_per_1k_tokens is not None:
            eligible = [c for c in eligible if c.price_per_1k <= ctx.max_cost_per_1k_tokens]
        if ctx.max_latency_ms is not None:
            fast = [c for c in eligible if (c.health.performance_ms() or 0.0) <= ctx.max_latency_ms]
            eligible = fast or eligible
        ordered = STRATEGIES[strategy](eligible) if len(eligible) > 1 else eligible  # one needs no ranking
        if ctx.preferred_providers:
            wanted = [p.lower() for p in ctx.preferred_providers]

            def rank(c: Candidate) -> int:
                d = c.route.deployment
                hits = [i for i, p in enumerate(wanted) if p in (d.provider_type, d.id.lower())]
                return hits[0] if hits else len(wanted)

            ordered = sorted(ordered, key=rank)
        return [Route(c.route.deployment, c.route.model, c.route.upstream_model) for c in ordered]

    def _why_none(self, model: str, candidates: list[Candidate], ctx: RequestContext, now: float) -> LLMError:
        waiting = [c for c in candidates if not c.health.available(now)]
        if ctx.max_cost_per_1k_tokens is not None and len(waiting) < len(candidates):
            return InvalidRequest(
                f"No deployment of '{model}' costs at most ${ctx.max_cost_per_1k_tokens} per 1k tokens",
                "circuit_breaker.max_cost_per_1k_tokens",
            )
        states = ", ".join(f"{c.route.deployment.id} ({c.health.circuit_state(now)})" for c in waiting)
        retry = [
            max(c.health.opened_at + c.health.policy.cooldown_seconds, c.health.retry_until) - now for c in waiting
        ]
        retry_after = max(0.0, min(retry)) if retry else None
        if waiting and all(now < c.health.retry_until and c.health.circuit_state(now) == "closed" for c in waiting):
            metrics.rate_limited.labels("upstream").inc()
            return RateLimitedUpstream(
                f"Every deployment of '{model}' is rate limited by its provider; retry after {retry_after:.0f} s",
                retry_after,
            )
        return NoRouteAvailable(f"Every deployment of '{model}' is unavailable right now: {states}", retry_after)

    # -- candidates -----------------------------------------------------------------

    def usable(self, deployment: Deployment, ctx: RequestContext | None = None) -> bool:
        """Configured, or the request brings its own key."""
        if is_configured(deployment):
            return True
        return bool(ctx and ctx.provider_key and deployment.enabled and deployment.base_url)

    def listed(self, deployment: Deployment) -> Listing | None:
        """The model ids the deployment's endpoint listed at discovery; None when no listing of it
        has succeeded (yet), so the catalog's models of its type and its vendor's names apply."""
        if deployment.provider_type in LISTING_TYPES:
            return self.discovered.get(deployment.id, NOTHING)
        return self.discovered.get(deployment.id)

    def served_models(self, deployment: Deployment) -> list[ModelInfo]:
        """The models a deployment serves, at its prices (see the module docstring)."""
        names = deployment.models or self.listed(deployment)
        if names is None:
            return [self._priced(deployment, m) for m in self.catalog.for_provider(deployment.provider_type)]
        return [
            self._priced(deployment, self.catalog.get(n) or self._unlisted(n, deployment.provider_type)) for n in names
        ]

    def _priced(self, deployment: Deployment, info: ModelInfo) -> ModelInfo:
        """``info`` at the deployment's own price for it, if it sets one, else at CB_CONFIG's
        ``[prices]`` for a model the catalog holds no entry of (a configured price overrides
        genai-prices'). Kept per deployment and model, so a request does a look-up, not a pricing."""
        if not deployment.prices and not self.extra_prices:  # nothing configured: as the sources price it
            return info
        key = (deployment.id, info.id)
        kept = self._priced_routes.get(key)
        if kept is not None and kept[0] is info and kept[1] == deployment.prices:
            return kept[2]
        price = next((deployment.prices[n] for n in (info.id, *info.aliases) if n in deployment.prices), None)
        if price is None:
            price = next((self.extra_prices[n] for n in (info.id, *info.aliases) if n in self.extra_prices), None)
        priced = info if price is None else info.at_price(price)
        if len(self._priced_routes) >= PRICED_ROUTES_LIMIT:  # model names come from clients: bounded
            self._priced_routes.clear()
        self._priced_routes[key] = (info, deployment.prices, priced)
        return priced

    def _unlisted(self, name: str, provider_type: str) -> ModelInfo:
        return self.catalog.by_vendor_name(provider_type, name)

    def _candidate(self, deployment: Deployment, info: ModelInfo, upstream: str) -> Candidate:
        return Candidate(Route(deployment, self._priced(deployment, info), upstream), self.health[deployment.id])

    def _model_candidates(
        self, model: str, ctx: RequestContext, deployments: list[Deployment]
    ) -> tuple[ModelInfo, list[Candidate]]:
        pinned, name = self.pinned(model, deployments)
        if pinned:
            info = self.catalog.get(name) or self._unlisted(name, pinned[0].provider_type)
            # an explicit name goes as asked (a model loaded since the last listing; vLLM answers 404 for
            # one it lacks), to the deployments that list it if any do
            serving = [d for d in pinned if self._serves(d, info, name)] or [d for d in pinned if not d.models]
        else:
            name = model
            info = self.catalog.get(model)
            if info is None:
                listing = next((d for d in deployments if model in d.models), None)
                vendor = listing.provider_type if listing else vendor_of(model)
                if vendor is None:
                    raise ModelNotFound(model)
                info = self._unlisted(model, vendor)
            serving = [d for d in deployments if self._serves(d, info, model)]
        usable = [d for d in serving if self.usable(d, ctx)]
        silent = [
            d
            for d in (pinned or deployments)
            if (pinned or d.provider_type == info.provider)
            and not d.models
            and self.listed(d) is not None
            and is_configured(d)
        ]
        if not usable and silent:
            raise ModelNotServed(model, ", ".join(f"{d.name or d.id} at {d.base_url}" for d in silent))
        if not usable:
            ptype = serving[0].provider_type if serving else info.provider
            raise ProviderNotConfigured(ptype, KEY_VARIABLES.get(ptype, "its key"), model)
        upstream = name if pinned and self.catalog.get(name) is None else info.upstream_id or info.id
        return info, [self._candidate(d, info, name if name in d.models else upstream) for d in usable]

    def pinned(self, model: str, deployments: list[Deployment] | None = None) -> tuple[list[Deployment], str]:
        """The deployments ``<deployment or provider>/<name>`` names explicitly, and the name; none when
        ``model`` has no such prefix (a bare id, which may itself contain '/')."""
        deployments = self.deployments if deployments is None else deployments
        prefix, _, name = model.partition("/")
        if not name:  # a bare id: nothing pinned (and no walk over the deployments)
            return [], name
        pinned = [d for d in deployments if d.id == prefix]
        if not pinned and name and prefix in (*PROVIDER_TYPES, "gemini"):
            ptype = "google" if prefix == "gemini" else prefix
            pinned = [d for d in deployments if d.provider_type == ptype]
        return pinned, name

    def _serves(self, deployment: Deployment, info: ModelInfo, asked: str) -> bool:
        names = deployment.models
        if not names:
            listed = self.listed(deployment)
            if listed is None:  # not listed (yet): the catalog's models of its type, and names in its vendor's style
                return deployment.provider_type == info.provider and (
                    info.catalogued or vendor_of(asked) == info.provider
                )
            names = listed.names  # a set, with the undated names of dated ids
        return asked in names or info.id in names or any(a in names for a in info.aliases)

    def _virtual_candidates(self, tag: str, deployments: list[Deployment]) -> list[Candidate]:
        found = []
        for deployment in deployments:
            if not is_configured(deployment):
                continue
            for info in self.served_models(deployment):
                # a vendor's model nobody priced would rank as free: virtual models leave it out
                unknown_cost = not info.priced and vendor_of(info.id) is not None
                if info.chat and tag in info.tags and not unknown_cost:
                    found.append(self._candidate(deployment, info, info.upstream_id or info.id))
        return found

    # -- outcomes -------------------------------------------------------------------

    def started(self, route: Route) -> bool:
        """A request is about to be sent on ``route``. False: skip it (its breaker lets nothing through)."""
        return self.health[route.deployment.id].acquire()

    def finished(
        self, route: Route, ok: bool, latency_ms: float, ttft_ms: float | None = None, error: Exception | None = None
    ) -> None:
        """How the attempt on ``route`` went (feeds the breaker, latency and error rate)."""
        health = self.health[route.deployment.id]
        health.record(ok, latency_ms, ttft_ms, error)
        metrics.observe_attempt(
            route.deployment.provider_type,
            route.model.id,
            ok,
            latency_ms,
            ttft_ms,
            route.deployment.id,
            health.circuit_state(),
        )

    def abandoned(self, route: Route) -> None:
        """An attempt on ``route`` stopped by us before any outcome (the client left): no verdict."""
        self.health[route.deployment.id].release()

    def health_of(self, deployment_id: str) -> dict:
        """The GraphQL/health view of one deployment's health."""
        return self.health[deployment_id].snapshot()

    def health_summary(self) -> dict[str, dict]:
        """Health of every configured deployment, for /health."""
        return {d.id: self.health_of(d.id) for d in self.deployments if is_configured(d)}
