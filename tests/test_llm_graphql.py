"""GraphQL on a real gunicorn: deployments, cost analytics and budgets."""

from __future__ import annotations

import requests

from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

PROVIDERS = """{ llmProviders { id provider_type name base_url models { id context_window input_price output_price }
  health { is_healthy circuit_state error_rate average_latency_ms consecutive_failures last_error } } }"""

CONFIGURE = """mutation($input: LlmProviderInput!) { configureLlmProvider(input: $input) {
  id provider_type name base_url has_api_key configured source models { id } } }"""


def test_llm_providers_lists_environment_deployments_with_health(server_factory):
    with OpenAIUpstream() as upstream:  # what it lists, at genai-prices' prices and context windows
        server = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url)
        providers = {p["id"]: p for p in server.graphql(PROVIDERS)["data"]["llmProviders"]}
    openai = providers["openai"]
    assert openai["provider_type"] == "openai"
    assert {"id": "gpt-4o-mini", "context_window": 128000, "input_price": 0.15, "output_price": 0.6} in openai["models"]
    assert openai["health"] == {
        "is_healthy": True,
        "circuit_state": "closed",
        "error_rate": 0.0,
        "average_latency_ms": None,
        "consecutive_failures": 0,
        "last_error": None,
    }


def test_configure_and_remove_a_provider_never_returning_its_key(server_factory):
    server = server_factory(CB_SECRET_KEY="server-secret-for-tests")
    key = "sk-managed-secret-98765"
    result = server.graphql(
        CONFIGURE,
        {
            "input": {
                "id": "vllm",
                "name": "vLLM",
                "provider_type": "openai_compatible",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key": key,
                "models": ["llama3.2"],
                "weight": 2,
                "priority": 1,
                "enabled": True,
            }
        },
    )
    assert result["data"]["configureLlmProvider"] == {
        "id": "vllm",
        "provider_type": "openai_compatible",
        "name": "vLLM",
        "base_url": "http://127.0.0.1:9/v1",
        "has_api_key": True,
        "configured": True,
        "source": "managed",
        "models": [{"id": "llama3.2"}],
    }
    listed = requests.post(server.graphql_url + "/graphql", json={"query": PROVIDERS}, timeout=10).text
    assert "vllm" in listed and key not in listed
    assert key not in server.logs()
    health = requests.get(server.graphql_url + "/health", timeout=5).json()
    assert health["deployments"]["vllm"]["circuit_state"] == "closed"
    assert server.graphql('mutation { removeLlmProvider(id: "vllm") }') == {"data": {"removeLlmProvider": True}}
    ids = [p["id"] for p in server.graphql(PROVIDERS)["data"]["llmProviders"]]
    assert "vllm" not in ids


def test_configure_with_a_bad_type_is_a_validation_error(server):
    result = server.graphql(CONFIGURE, {"input": {"id": "x", "provider_type": "telepathy"}})
    assert result["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"
    assert "telepathy" in result["errors"][0]["message"]


def test_removing_an_unknown_provider_is_not_found(server):
    result = server.graphql('mutation { removeLlmProvider(id: "nope") }')
    assert result["errors"][0]["extensions"]["code"] == "NOT_FOUND"


def test_guide_cost_analytics_query_works_verbatim(server):
    response = requests.post(
        server.graphql_url + "/graphql",
        headers={"Content-Type": "application/json"},
        data='{"query": "{ costAnalytics { total_cost daily_usage monthly_usage provider_breakdown top_models } }"}',
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json() == {
        "data": {
            "costAnalytics": {
                "total_cost": 0.0,
                "daily_usage": [],
                "monthly_usage": [],
                "provider_breakdown": {},
                "top_models": [],
            }
        }
    }
    short = server.graphql("{ costAnalytics { total_cost daily_usage provider_breakdown } }")
    assert short["data"]["costAnalytics"]["total_cost"] == 0.0


def test_cost_analytics_with_input_and_bad_date(server):
    ok = server.graphql(
        '{ costAnalytics(input: {start_date: "2025-01-01", end_date: "2025-01-31", user_id: "u"}) '
        "{ total_requests period_start period_end } }"
    )
    assert ok["data"]["costAnalytics"] == {
        "total_requests": 0,
        "period_start": "2025-01-01T00:00:00Z",
        "period_end": "2025-02-01T00:00:00Z",
    }
    bad = server.graphql('{ costAnalytics(input: {start_date: "soon"}) { total_cost } }')
    assert bad["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"


def test_set_budget_and_read_its_status(server):
    result = server.graphql(
        'mutation { setBudget(input: {scope: USER, scope_id: "alice", limit_usd: 5, period: DAILY, '
        "warning_threshold: 0.9}) { scope scope_id period limit_usd used_usd remaining_usd percentage_used "
        "is_warning is_exhausted } }"
    )
    assert result["data"]["setBudget"] == {
        "scope": "USER",
        "scope_id": "alice",
        "period": "DAILY",
        "limit_usd": 5.0,
        "used_usd": 0.0,
        "remaining_usd": 5.0,
        "percentage_used": 0.0,
        "is_warning": False,
        "is_exhausted": False,
    }
    status = server.graphql('{ budgetStatus(scope: USER, scope_id: "alice") { limit_usd remaining_usd is_exhausted } }')
    assert status["data"]["budgetStatus"] == {"limit_usd": 5.0, "remaining_usd": 5.0, "is_exhausted": False}
    missing = server.graphql('{ budgetStatus(scope: PROJECT, scope_id: "x") { limit_usd } }')
    assert missing["errors"][0]["extensions"]["code"] == "NOT_FOUND"
