"""Wiring of the LLM side for one worker: catalog, deployments, router, ledger, analytics, budgets."""

from __future__ import annotations

from cb.config import Settings
from cb.llm.analytics import CostAnalytics
from cb.llm.budgets import Budgets
from cb.llm.catalog import Catalog
from cb.llm.deployments import DeploymentRegistry, env_deployments, load_config
from cb.llm.ledger import UsageLedger
from cb.llm.router import Router
from cb.secrets import SecretBox
from cb.storage import Storage


def llm_services(settings: Settings, storage: Storage) -> dict:
    """The LLM services as keyword arguments of :class:`cb.services.Services`."""
    config = load_config(settings.config_file)
    catalog = Catalog.default()
    registry = DeploymentRegistry(
        env_deployments(settings), config.deployments, storage, SecretBox(settings.secret_key)
    )
    ledger = UsageLedger(storage)
    return {
        "catalog": catalog,
        "router": Router(settings, catalog, registry, config),
        "ledger": ledger,
        "analytics": CostAnalytics(ledger),
        "budgets": Budgets(storage, ledger),
    }
