"""The router: which deployments can serve a request, in which order.

This first version resolves the model through the catalog and serves it from the one
deployment its provider has in the environment. Strategies, breakers, virtual models and
extra deployments build on the same three methods: :meth:`Router.routes`,
:meth:`Router.started`, :meth:`Router.finished`.
"""

from __future__ import annotations

from cb.config import Settings
from cb.llm.catalog import Catalog
from cb.llm.errors import ModelNotFound, ProviderNotConfigured
from cb.llm.providers.base import Deployment
from cb.llm.routing import RequestContext, Route

KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "google": "GOOGLE_API_KEY",
    "ollama": "OLLAMA_BASE_URL",
}


def env_deployments(settings: Settings) -> list[Deployment]:
    """The four standard providers as configured in the environment (configured or not)."""
    return [
        Deployment("openai", "openai", settings.openai_base_url, settings.openai_api_key, "OPENAI_API_KEY", "OpenAI"),
        Deployment("anthropic", "anthropic", settings.anthropic_base_url, settings.anthropic_api_key,
                   "ANTHROPIC_API_KEY", "Anthropic"),
        Deployment("google", "google", settings.google_base_url, settings.google_api_key, "GOOGLE_API_KEY", "Google"),
        Deployment("ollama", "ollama", settings.ollama_base_url or "", None, "OLLAMA_BASE_URL", "Ollama",
                   enabled=bool(settings.ollama_base_url)),
    ]


def is_configured(deployment: Deployment) -> bool:
    if not deployment.enabled or not deployment.base_url:
        return False
    return deployment.provider_type == "ollama" or bool(deployment.api_key)


class Router:
    """Chooses routes for a request and hears how each one went."""

    def __init__(self, settings: Settings, catalog: Catalog, deployments: list[Deployment] | None = None):
        self.settings = settings
        self.catalog = catalog
        self.deployments = deployments if deployments is not None else env_deployments(settings)

    def routes(self, model: str, ctx: RequestContext) -> list[Route]:
        """Routes for ``model`` in order of preference. Raises ModelNotFound or ProviderNotConfigured."""
        provider, _, name = model.partition("/")
        if name and provider in KEY_VARIABLES:
            info = self.catalog.get(name) or self.catalog.discovered(provider, name)
        else:
            info = self.catalog.get(model)
        if info is None:
            raise ModelNotFound(model)
        candidates = [d for d in self.deployments if d.provider_type == info.provider]
        usable = [d for d in candidates if is_configured(d) or (ctx.provider_key and d.enabled and d.base_url)]
        if not usable:
            raise ProviderNotConfigured(info.provider, KEY_VARIABLES.get(info.provider, "its key"), model)
        return [Route(d, info, info.id) for d in usable]

    def started(self, route: Route) -> None:
        """A request is about to be sent on ``route``."""

    def finished(self, route: Route, ok: bool, latency_ms: float, ttft_ms: float | None = None,
                 error: Exception | None = None) -> None:
        """How the attempt on ``route`` went (feeds health, breakers and latency)."""
