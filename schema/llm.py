"""Bindings of ``llm.graphql``: deployments, cost analytics and budgets."""

from __future__ import annotations

from dataclasses import asdict

from ariadne import MutationType, ObjectType, QueryType

from cb.llm.analytics import AnalyticsFilter
from cb.llm.deployments import is_configured
from cb.llm.providers.base import Deployment

query = QueryType()
mutation = MutationType()
provider = ObjectType("LlmProvider")
analytics = ObjectType("CostAnalytics")


def _services(info):
    return info.context["services"]


def _view(router, deployment: Deployment) -> dict:
    """A deployment as GraphQL shows it: everything but the key."""
    data = {k: v for k, v in asdict(deployment).items() if k not in ("api_key", "key_variable")}
    data["name"] = deployment.name or deployment.id
    data["configured"] = is_configured(deployment)
    data["has_api_key"] = bool(deployment.api_key)
    data["source"] = router.registry.source(deployment.id) if hasattr(router.registry, "source") else "environment"
    data["_deployment"] = deployment
    return data


@query.field("llmProviders")
def resolve_llm_providers(_, info):
    router = _services(info).router
    return [_view(router, d) for d in router.deployments]


@query.field("llmProvider")
def resolve_llm_provider(_, info, id):
    router = _services(info).router
    found = next((d for d in router.deployments if d.id == id), None)
    return _view(router, found) if found else None


@provider.field("models")
def resolve_provider_models(obj, info):
    return [asdict(m) for m in _services(info).router.served_models(obj["_deployment"])]


@provider.field("health")
def resolve_provider_health(obj, info):
    return _services(info).router.health_of(obj["id"])


@mutation.field("configureLlmProvider")
def resolve_configure_llm_provider(_, info, input):
    router = _services(info).router
    return _view(router, router.registry.configure(input))


@mutation.field("removeLlmProvider")
def resolve_remove_llm_provider(_, info, id):
    router = _services(info).router
    router.registry.remove(id)
    router.health.forget(id)
    return True


@query.field("costAnalytics")
def resolve_cost_analytics(_, info, input=None):
    flt = AnalyticsFilter.from_input(input)
    return {**_services(info).analytics.report(flt), "_filter": flt}


@analytics.field("usage_series")
def resolve_usage_series(obj, info, granularity="DAY"):
    return _services(info).analytics.series(obj["_filter"], granularity)


@query.field("budgetStatus")
def resolve_budget_status(_, info, scope, scope_id=None):
    return _services(info).budgets.status(scope, scope_id)


@query.field("budgets")
def resolve_budgets(_, info):
    return _services(info).budgets.statuses()


@mutation.field("setBudget")
def resolve_set_budget(_, info, input):
    budgets = _services(info).budgets
    budget = budgets.set(input)
    return budgets.status(budget.scope, budget.scope_id)


bindables = [query, mutation, provider, analytics]
