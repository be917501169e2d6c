"""Model discovery: which models exist, from each provider's own listing at run time.

OpenAI's ``GET /v1/models`` (its own API and any OpenAI-compatible server: vLLM, llama.cpp,
a proxy), Anthropic's ``GET /v1/models`` (paged with ``has_more``/``after_id``), Gemini's
``models.list`` (paged with ``pageToken``) and Ollama's ``/api/tags`` with ``/api/show``,
every page followed. :class:`ModelDiscovery` asks every such deployment once at start and
then every ``OLLAMA_REFRESH_SECONDS`` (Ollama) or ``OPENAI_MODELS_REFRESH_SECONDS`` (the
others) in a background greenlet, and registers what it finds in the
:class:`~cb.llm.catalog.Catalog` (with the context length and abilities the listing
reports), so a new model is served without a restart.

``found`` (the router's :attr:`~cb.llm.router.Router.discovered`) holds, per deployment,
what it listed at the last successful round. Every worker stores what it found in the
``models`` bucket and adopts, about every second, what any worker stored there, so all
workers serve the same lists (with NATS: across processes and machines). A listing that
fails keeps the last good one (stored, so a worker started while the provider is down
serves it too), except an Ollama's: an Ollama that cannot be reached serves nothing, so no
bare or virtual model goes there until it answers again. A deployment never listed serves
the catalog's models of its type and names in its vendor's style (:func:`cb.llm.catalog.vendor_of`).
A failing endpoint is logged once and tried again on the next round; it never stops the loop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import gevent

from cb.errors import NotFound, StorageUnavailable
from cb.llm.catalog import Catalog
from cb.llm.deployments import is_configured
from cb.llm.providers.base import Deployment, ListedModel, Provider
from cb.logs import get_logger
from cb.storage import Storage

log = get_logger("llm.discovery")

FIRST_ROUND_SECONDS = 2.0
SYNC_SECONDS = 1.0  # how often a worker adopts the lists other workers stored
BUCKET = "models"  # deployment id -> {"models": [[id, context, chat, embeds], ...], "listed_at"}
_DATED = re.compile(r"^(?P<name>.+?)-(?:\d{8}|\d{4}-\d{2}-\d{2})$")


class Listing(list):
    """The model ids an endpoint listed, in its order; ``names`` also holds the names it answers
    to without being listed: a dated id's undated name (Anthropic lists ``claude-sonnet-4-5-20250929``
    and answers ``claude-sonnet-4-5`` and ``claude-sonnet-4-5-latest``), for a set look-up per request."""

    def __init__(self, ids=()):
        super().__init__(ids)
        names = set(self)
        for model_id in self:
            dated = _DATED.match(model_id)
            if dated:
                names.update((dated["name"], dated["name"] + "-latest"))
        self.names = frozenset(names)


NOTHING = Listing()  # what an Ollama never listed serves


class ModelDiscovery:
    """Keeps the catalog and the router's lists in step with the models the deployments report,
    and (with ``storage``) with what every other worker found."""

    def __init__(
        self,
        catalog: Catalog,
        deployments: list[Deployment] | Callable[[], list[Deployment]],
        providers: Mapping[str, Provider],
        transport: Any,
        interval: float,
        found: dict[str, list[str]] | None = None,
        storage: Storage | None = None,
        sync_seconds: float = SYNC_SECONDS,
    ):
        self.catalog = catalog
        self.deployments = deployments if callable(deployments) else (lambda: deployments)
        self.providers = providers
        self.transport = transport
        self.interval = interval
        self.found: dict[str, list[str]] = {} if found is None else found  # deployment id -> model ids listed
        self.storage = storage
        self.sync_seconds = min(sync_seconds, interval)
        self._greenlet: gevent.Greenlet | None = None
        self._warned: set[str] = set()
        self._rounds = 0
        self._seen: dict[str, int] = {}  # deployment id -> revision of the shared list adopted

    def _listing(self) -> list[tuple[Deployment, Provider]]:
        """The deployments whose provider lists models; the others' lists are dropped."""
        pairs = []
        for deployment in self.deployments():
            provider = self.providers.get(deployment.provider_type)
            if provider is None or type(provider).discover_models is Provider.discover_models:
                continue
            if not is_configured(deployment):  # off, no address, or no key: nothing to ask
                self.found.pop(deployment.id, None)
                continue
            pairs.append((deployment, provider))
        return pairs

    def refresh(self) -> dict[str, list[str]]:
        """Ask every enabled deployment for its models once (every page), adopt and share what
        each listed; then adopt what the other workers shared."""
        for deployment, provider in self._listing():
            try:
                names = provider.discover_models(deployment, self.transport)
            except Exception as exc:  # an unreachable endpoint must not end discovery
                dropped = not provider.keeps_listing_on_failure and self._forget(deployment)
                if dropped or deployment.id not in self._warned:
                    kept = " (keeping its last list)" if deployment.id in self.found else ""
                    log.warning(
                        "could not list the models of %s: %s%s", deployment.id, getattr(exc, "message", exc), kept
                    )
                self._warned.add(deployment.id)
                continue
            if names is None:  # it does not list its models: the catalog's
                self.found.pop(deployment.id, None)
                continue
            listed = [n if isinstance(n, ListedModel) else ListedModel(n) for n in names]
            self._adopt(deployment, listed)
            self._share(deployment, listed)
            self._warned.discard(deployment.id)
        self.sync()
        return self.found

    def sync(self) -> None:
        """Adopt the lists stored by any worker since the last sync, so every worker serves the same
        lists; a list another worker dropped (an Ollama it found unreachable) is dropped here too."""
        if self.storage is None:
            return
        listing = self._listing()
        try:  # the lists of the deployments configured now, not the whole bucket (it keeps removed ones)
            stored = self.storage.get_many(BUCKET, [deployment.id for deployment, _ in listing])
        except StorageUnavailable:
            return  # our own lists meanwhile
        for (deployment, provider), entry in zip(listing, stored, strict=True):
            if entry is None:
                if self._seen.pop(deployment.id, None) is not None and not provider.keeps_listing_on_failure:
                    self.found.pop(deployment.id, None)
                continue
            if self._seen.get(deployment.id) == entry.revision:
                continue
            self._seen[deployment.id] = entry.revision
            models = entry.value.get("models")
            if not isinstance(models, list):  # not a list we wrote: our own list meanwhile
                log.warning("ignoring the stored model list of %s: not a list of models", deployment.id)
                continue
            listed = [ListedModel(*m[:4]) for m in models if isinstance(m, list) and m and isinstance(m[0], str)]
            self._adopt(deployment, listed)

    def _adopt(self, deployment: Deployment, listed: list[ListedModel]) -> None:
        ids = Listing(
            self.catalog.discovered(deployment.provider_type, m.id, m.context_window, m.chat, m.embeddings).id
            for m in listed
        )
        if ids != self.found.get(deployment.id):
            log.info("%s serves %d models: %s", deployment.id, len(ids), ", ".join(ids))
        self.found[deployment.id] = ids

    def _share(self, deployment: Deployment, listed: list[ListedModel]) -> None:
        if self.storage is None:
            return
        value = {"models": [[m.id, m.context_window, m.chat, m.embeddings] for m in listed]}
        try:
            entry = self.storage.get(BUCKET, deployment.id)
            if entry is None or entry.value.get("models") != value["models"]:
                self.storage.put(BUCKET, deployment.id, value | {"listed_at": time.time()})
        except StorageUnavailable as exc:
            log.warning("could not share the models of %s: %s", deployment.id, exc.message)

    def _forget(self, deployment: Deployment) -> bool:
        """Drop a deployment's list (here and for every worker); True if there was one."""
        if self.storage is not None:
            try:
                self.storage.delete(BUCKET, deployment.id)
            except (StorageUnavailable, NotFound):
                pass
        return self.found.pop(deployment.id, None) is not None

    def start(self, first_round_seconds: float = FIRST_ROUND_SECONDS) -> gevent.Greenlet:
        """Refresh now (waiting at most ``first_round_seconds``, so the first requests of a
        worker already see the models), then every ``interval`` seconds in a background greenlet,
        adopting the other workers' lists every ``sync_seconds`` in between."""
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
        due = 0.0
        while True:
            refresh = time.monotonic() >= due
            if refresh:
                due = time.monotonic() + self.interval
            try:
                self.refresh() if refresh else self.sync()
            except Exception:  # nothing may end discovery; the next round tries again
                log.exception("model discovery failed; trying again")
            self._rounds += refresh
            gevent.sleep(max(0.0, min(self.sync_seconds, due - time.monotonic())))


def build_discovery(gateway: Any, settings: Any, storage: Storage | None = None) -> list[ModelDiscovery]:
    """Discovery for the gateway's deployments whose provider can list models (also ones
    added later): Ollama's every OLLAMA_REFRESH_SECONDS, OpenAI's, Anthropic's, Gemini's and
    OpenAI-compatible ones' every OPENAI_MODELS_REFRESH_SECONDS, into the router's one
    ``discovered`` map, shared through ``storage``; each one's :meth:`ModelDiscovery.start` starts it."""
    from cb.llm.providers import PROVIDERS

    router = gateway.router

    def listing(types: tuple[str, ...]) -> Callable[[], list[Deployment]]:
        return lambda: [d for d in router.deployments if d.provider_type in types]

    rounds = [
        (("ollama",), settings.ollama_refresh_seconds),
        (("openai", "openai_compatible", "anthropic", "google"), settings.openai_models_refresh_seconds),
    ]
    return [
        ModelDiscovery(
            gateway.catalog,
            listing(types),
            PROVIDERS,
            gateway.transport,
            interval,
            found=getattr(router, "discovered", None),
            storage=storage,
        )
        for types, interval in rounds
    ]
