"""Model discovery: endpoints that list their own models (Ollama's ``/api/tags``, the
``/v1/models`` of a self-hosted OpenAI-compatible server such as vLLM or llama.cpp).

:class:`ModelDiscovery` asks every such deployment once at start and then every
``OLLAMA_REFRESH_SECONDS`` (Ollama) or ``OPENAI_MODELS_REFRESH_SECONDS`` (OpenAI-compatible)
in a background greenlet, and registers what it finds in the
:class:`~cb.llm.catalog.Catalog` (with the context length the endpoint reports), so a
model pulled into Ollama or loaded into vLLM is served without a restart.
``found`` (the router's :attr:`~cb.llm.router.Router.discovered`) holds, per deployment,
what it listed at the last round. When an endpoint cannot be reached, an Ollama is dropped
from it, so the router sends no bare or virtual model there until it answers again; an
OpenAI-compatible endpoint keeps its last list (the breakers judge whether it is up). A
failing endpoint is logged once and tried again on the next round; it never stops the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gevent

from cb.llm.catalog import Catalog
from cb.llm.providers.base import Deployment, ListedModel, Provider
from cb.logs import get_logger

log = get_logger("llm.discovery")

FIRST_ROUND_SECONDS = 2.0


class ModelDiscovery:
    """Keeps the catalog in step with the models the deployments report."""

    def __init__(
        self,
        catalog: Catalog,
        deployments: list[Deployment] | Callable[[], list[Deployment]],
        providers: Mapping[str, Provider],
        transport: Any,
        interval: float,
        found: dict[str, list[str]] | None = None,
    ):
        self.catalog = catalog
        self.deployments = deployments if callable(deployments) else (lambda: deployments)
        self.providers = providers
        self.transport = transport
        self.interval = interval
        self.found: dict[str, list[str]] = {} if found is None else found  # deployment id -> model ids listed
        self._greenlet: gevent.Greenlet | None = None
        self._warned: set[str] = set()
        self._rounds = 0

    def refresh(self) -> dict[str, list[str]]:
        """Ask every enabled deployment for its models once; register them in the catalog."""
        for deployment in self.deployments():
            provider = self.providers.get(deployment.provider_type)
            if provider is None or type(provider).discover_models is Provider.discover_models:
                continue
            if not deployment.enabled or not deployment.base_url:
                self.found.pop(deployment.id, None)
                continue
            try:
                names = provider.discover_models(deployment, self.transport)
            except Exception as exc:  # an unreachable endpoint must not end discovery
                dropped = not provider.keeps_listing_on_failure and self.found.pop(deployment.id, None) is not None
                if dropped or deployment.id not in self._warned:
                    kept = " (keeping its last list)" if deployment.id in self.found else ""
                    log.warning(
                        "could not list the models of %s: %s%s", deployment.id, getattr(exc, "message", exc), kept
                    )
                self._warned.add(deployment.id)
                continue
            if names is None:  # it does not list its models (OpenAI's own API: the catalog's)
                self.found.pop(deployment.id, None)
                continue
            listed = [n if isinstance(n, ListedModel) else ListedModel(n) for n in names]
            ids = [self.catalog.discovered(deployment.provider_type, m.id, m.context_window).id for m in listed]
            if ids != self.found.get(deployment.id):
                log.info("%s serves %d models: %s", deployment.id, len(ids), ", ".join(ids))
            self.found[deployment.id] = ids
            self._warned.discard(deployment.id)
        return self.found

    def start(self, first_round_seconds: float = FIRST_ROUND_SECONDS) -> gevent.Greenlet:
        """Refresh now (waiting at most ``first_round_seconds``, so the first requests of a
        worker already see the models), then every ``interval`` seconds in a background greenlet."""
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
            self._greenlet.join(0)  # let it start its first round
            first = gevent.Timeout(first_round_seconds)
            first.start()
            try:
                while not self._rounds:
                    gevent.sleep(0.01)
            except gevent.Timeout as exc:
                if exc is not first:
                    raise
                log.warning("model discovery is slow; continuing in the background")
            finally:
                first.close()
        return self._greenlet

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        while True:
            self.refresh()
            self._rounds += 1
            gevent.sleep(self.interval)


def build_discovery(gateway: Any, settings: Any) -> list[ModelDiscovery]:
    """Discovery for the gateway's deployments whose provider can list models (also ones
    added later): Ollama's every OLLAMA_REFRESH_SECONDS, OpenAI-compatible ones' every
    OPENAI_MODELS_REFRESH_SECONDS, into the router's one ``discovered`` map; each one's
    :meth:`ModelDiscovery.start` starts it."""
    from cb.llm.providers import PROVIDERS

    router = gateway.router

    def listing(types: tuple[str, ...]) -> Callable[[], list[Deployment]]:
        return lambda: [d for d in router.deployments if d.provider_type in types]

    rounds = [
        (("ollama",), settings.ollama_refresh_seconds),
        (("openai", "openai_compatible"), settings.openai_models_refresh_seconds),
    ]
    return [
        ModelDiscovery(
            gateway.catalog,
            listing(types),
            PROVIDERS,
            gateway.transport,
            interval,
            found=getattr(router, "discovered", None),
        )
        for types, interval in rounds
    ]
