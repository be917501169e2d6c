"""Model discovery: endpoints that list their own models (Ollama's ``/api/tags``).

:class:`ModelDiscovery` asks every such deployment once at start and then every
``OLLAMA_REFRESH_SECONDS`` in a background greenlet, and registers what it finds in the
:class:`~cb.llm.catalog.Catalog`, so a model pulled into Ollama is served without a restart.
A failing endpoint is logged and tried again on the next round; it never stops the loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gevent

from cb.llm.catalog import Catalog
from cb.llm.providers.base import Deployment, Provider
from cb.logs import get_logger

log = get_logger("llm.discovery")


class ModelDiscovery:
    """Keeps the catalog in step with the models the deployments report."""

    def __init__(self, catalog: Catalog, deployments: list[Deployment], providers: Mapping[str, Provider],
                 transport: Any, interval: float):
        self.catalog = catalog
        self.deployments = deployments
        self.providers = providers
        self.transport = transport
        self.interval = interval
        self.found: dict[str, list[str]] = {}  # deployment id -> model ids at the last successful refresh
        self._greenlet: gevent.Greenlet | None = None

    def refresh(self) -> dict[str, list[str]]:
        """Ask every enabled deployment for its models once; register them in the catalog."""
        for deployment in self.deployments:
            provider = self.providers.get(deployment.provider_type)
            if provider is None or not deployment.enabled or not deployment.base_url:
                continue
            try:
                names = provider.discover_models(deployment, self.transport)
            except Exception as exc:  # an unreachable endpoint must not end discovery
                log.warning("could not list the models of %s: %s", deployment.id, exc)
                continue
            if names is None:
                continue
            ids = [self.catalog.discovered(deployment.provider_type, name).id for name in names]
            if ids != self.found.get(deployment.id):
                log.info("%s serves %d models: %s", deployment.id, len(ids), ", ".join(ids))
            self.found[deployment.id] = ids
        return self.found

    def start(self) -> gevent.Greenlet:
        """Refresh now and then every ``interval`` seconds, in a background greenlet."""
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        return self._greenlet

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        while True:
            self.refresh()
            gevent.sleep(self.interval)


def start_discovery(gateway: Any, settings: Any) -> ModelDiscovery | None:
    """Start discovery for the gateway's deployments whose provider can list models (None if none can)."""
    from cb.llm.providers import PROVIDERS

    listing = [d for d in gateway.router.deployments if d.enabled and d.base_url
               and type(PROVIDERS.get(d.provider_type)).discover_models is not Provider.discover_models]
    if not listing:
        return None
    discovery = ModelDiscovery(gateway.catalog, listing, PROVIDERS, gateway.transport, settings.ollama_refresh_seconds)
    discovery.start()
    return discovery
