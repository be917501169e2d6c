"""The services one worker shares between its two APIs.

Built once per process (after gunicorn forks), handed to both Flask apps and to the
GraphQL resolvers through the request context. Building connects storage and nothing
more; :meth:`Services.start` is what makes a process a serving worker (layout migrated,
example workflows stored, model discovery and the agent runner running). The operators'
command line builds services without starting them, so it never competes with a server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cb import __version__
from cb.config import Settings
from cb.events import EventBus
from cb.llm.analytics import CostAnalytics
from cb.llm.budgets import Budgets
from cb.llm.catalog import Catalog
from cb.llm.ledger import UsageLedger
from cb.llm.router import Router
from cb.llm.services import llm_services
from cb.logs import get_logger
from cb.security import Security
from cb.storage import Storage, open_storage
from cb.workflow import WorkflowEngine

log = get_logger("server")


@dataclass
class Services:
    """Everything a request handler may need, per worker."""

    settings: Settings
    storage: Storage
    bus: EventBus
    security: Security | None = None
    workflows: WorkflowEngine | None = None
    version: str = __version__
    discovery: Any = (
        None  # [cb.llm.discovery.ModelDiscovery]: refresh the model lists endpoints report (one per interval)
    )
    # the LLM side, built by cb.llm.services.llm_services
    catalog: Catalog | None = None
    router: Router | None = None
    ledger: UsageLedger | None = None
    analytics: CostAnalytics | None = None
    budgets: Budgets | None = None
    gateway: Any = None  # cb.llm.gateway.Gateway: chat, streams, embeddings, models
    agents: Any = None  # cb.agents.Agents: agent definitions, place agents, executions, the runner
    responses: Any = None  # cb.llm.responses_store.ResponseStore: the Responses API's stored responses

    def health(self) -> tuple[dict, bool]:
        """The /health body and whether the server is healthy."""
        connected = self.storage.is_connected()
        body = {
            "status": "healthy" if connected else "unhealthy",
            "version": self.version,
            "storage": {"backend": self.storage.backend, "connected": connected},
            "providers": {name: bool(value) for name, value in self.settings.provider_keys.items()},
        }
        if self.router is not None:
            body["deployments"] = self.router.health_summary()
        return body, connected

    def migrate(self) -> dict[str, int]:
        """Bring the stored layout up to this version (idempotent, safe while servers run):
        how many tokens, agent executions and API keys were indexed."""
        return {
            "tokens": self.workflows.migrate(),
            "executions": self.agents.executions.migrate(),
            "api_keys": self.security.keys.migrate(),
        }

    def layout(self) -> dict[str, dict]:
        """Per indexed kind, the layout version in storage (None: never written) and this version's."""
        from cb.agents import executions
        from cb.security import keys
        from cb.workflow import engine

        found = {}
        for kind, module in (("tokens", engine), ("executions", executions), ("api_keys", keys)):
            entry = self.storage.get(module.META, module.LAYOUT_KEY)
            stored = entry.value.get("version", 1) if entry is not None else None
            found[kind] = {"stored": stored, "expected": module.LAYOUT_VERSION}
        return found

    def start(self) -> Services:
        """Serve: migrate the layout, store the example workflows on a first start, refresh
        Ollama's model list in the background and start the agent runner."""
        self.migrate()
        if self.settings.load_default_workflows:
            self.workflows.load_defaults()
        for discovery in self.discovery:
            discovery.start()
        self.agents.start()
        return self

    def close(self) -> None:
        """At worker exit: write usage records still pending, then close storage (flushes events)."""
        for discovery in self.discovery or ():
            discovery.stop()
        if self.agents is not None:
            self.agents.stop()
        if self.ledger is not None:
            left = self.ledger.flush()
            if left:
                log.error("%d usage record(s) could not be written before exit", left)
        self.storage.close()


def build_services(settings: Settings) -> Services:
    """Connect storage and build every service, starting nothing and writing nothing.

    Raises StorageUnavailable on failure. A server calls :meth:`Services.start` next.
    """
    storage = open_storage(settings.storage_backend, settings.nats_url, settings.nats_prefix, settings.nats_replicas)
    storage.connect()
    from cb.agents import build_agents
    from cb.llm.discovery import build_discovery
    from cb.llm.gateway import build_gateway  # imports requests: only after gevent patched the worker

    services = Services(settings=settings, storage=storage, bus=EventBus(storage), **llm_services(settings, storage))
    services.gateway = build_gateway(settings, storage, services.router, services.ledger, services.catalog)
    from cb.llm.responses_store import ResponseStore

    services.responses = ResponseStore(storage, settings.responses_retention_seconds)
    services.discovery = build_discovery(services.gateway, settings, storage)
    services.security = Security(settings, storage)
    services.workflows = WorkflowEngine(storage, services.bus)
    services.agents = build_agents(services)
    return services


def provider_status_lines(settings: Settings) -> list[tuple[bool, str]]:
    """One line per provider for the start-up log: (configured, message), never the key."""
    lines = []
    for name, label, variable in (
        ("openai", "OpenAI", "OPENAI_API_KEY"),
        ("anthropic", "Anthropic", "ANTHROPIC_API_KEY"),
        ("google", "Google", "GOOGLE_API_KEY"),
    ):
        if settings.provider_keys[name]:
            lines.append((True, f"{label} provider configured ({variable} is set)"))
        else:
            lines.append((False, f"Warning: No {label} API key found (set {variable} to enable {label} models)"))
    if settings.ollama_base_url:
        lines.append((True, f"Ollama provider configured at {settings.ollama_base_url}"))
    else:
        lines.append((False, "Warning: No Ollama base URL (set OLLAMA_BASE_URL to enable Ollama models)"))
    return lines
