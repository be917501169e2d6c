"""Routing end to end: gunicorn, fake OpenAI upstreams that fail on demand, real HTTP clients."""

from __future__ import annotations

import time

import pytest
import requests

from tests.harness import backup_config
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

ANALYTICS = "{ costAnalytics { total_cost total_requests total_tokens provider_breakdown model_breakdown } }"
HEALTH = '{ llmProvider(id: "openai") { health { circuit_state consecutive_failures last_error } } }'


@pytest.fixture
def upstreams():
    with OpenAIUpstream() as main, OpenAIUpstream() as backup:
        yield main, backup


def chat(server, model="gpt-4o", **extra):
    body = {"model": model, "messages": [{"role": "user", "content": "Hello"}], **extra}
    return requests.post(server.openai_url + "/v1/chat/completions", json=body, timeout=30)


def start_two(server_factory, tmp_path, main, backup, **env):
    config = backup_config(tmp_path, backup.base_url)
    return server_factory(
        OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=main.base_url, BACKUP_OPENAI_KEY=API_KEY, CB_CONFIG=str(config), **env
    )


def test_failover_to_the_next_deployment_bills_once(server_factory, tmp_path, upstreams):
    main, backup = upstreams
    server = start_two(server_factory, tmp_path, main, backup, ROUTING_STRATEGY="cost_optimized")
    main.fail_next(500, {"error": {"message": "boom", "type": "server_error"}})
    response = chat(server)
    assert response.status_code == 200, response.text
    assert (len(main.chats()), len(backup.chats())) == (1, 1)
    assert response.headers["x-cb-routing-strategy"] == "cost_optimized"
    assert response.headers["x-cb-fallback-used"] == "false"
    usage = response.json()["usage"]
    analytics = server.graphql(ANALYTICS)["data"]["costAnalytics"]
    expected = (usage["prompt_tokens"] * 2.5 + usage["completion_tokens"] * 10.0) / 1_000_000
    assert analytics["total_requests"] == 1
    assert analytics["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert analytics["total_cost"] == pytest.approx(expected, abs=1e-12)


def test_fallback_model_is_used_after_every_deployment_failed(server_factory, upstreams):
    main, _ = upstreams
    server = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=main.base_url)
    main.fail_next(503, {"error": {"message": "overloaded", "type": "server_error"}})
    response = chat(server, "gpt-4o", circuit_breaker={"fallback_models": ["gpt-4o-mini"]})
    assert response.status_code == 200, response.text
    assert [r.json["model"] for r in main.chats()] == ["gpt-4o", "gpt-4o-mini"]
    assert response.headers["x-cb-fallback-used"] == "true"
    breakdown = server.graphql(ANALYTICS)["data"]["costAnalytics"]["model_breakdown"]
    assert list(breakdown) == ["gpt-4o-mini"] and breakdown["gpt-4o-mini"]["requests"] == 1


def test_client_errors_do_not_fail_over(server_factory, tmp_path, upstreams):
    main, backup = upstreams
    server = start_two(server_factory, tmp_path, main, backup)
    main.fail_next(400, {"error": {"message": "bad thing", "type": "invalid_request_error"}})
    assert chat(server).status_code == 400
    assert (len(main.chats()), len(backup.chats())) == (1, 0)


def test_breaker_opens_probes_once_after_cooldown_and_closes(server_factory, upstreams):
    main, _ = upstreams
    server = server_factory(
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=main.base_url,
        BREAKER_FAILURE_THRESHOLD="2",
        BREAKER_COOLDOWN_SECONDS="1",
    )
    main.fail_next(500, {"error": {"message": "down", "type": "server_error"}}, times=3)
    assert chat(server).status_code == 502
    assert server.graphql(HEALTH)["data"]["llmProvider"]["health"]["circuit_state"] == "closed"
    assert chat(server).status_code == 502
    health = server.graphql(HEALTH)["data"]["llmProvider"]["health"]
    assert (health["circuit_state"], health["consecutive_failures"]) == ("open", 2)
    refused = chat(server)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "service_unavailable"
    assert len(main.chats()) == 2  # the open breaker sent nothing upstream
    time.sleep(1.1)
    assert server.graphql(HEALTH)["data"]["llmProvider"]["health"]["circuit_state"] == "half_open"
    assert chat(server).status_code == 502  # the probe meets the third queued failure
    assert len(main.chats()) == 3
    assert server.graphql(HEALTH)["data"]["llmProvider"]["health"]["circuit_state"] == "open"
    time.sleep(1.1)
    assert chat(server).status_code == 200  # this probe succeeds
    assert server.graphql(HEALTH)["data"]["llmProvider"]["health"]["circuit_state"] == "closed"
    assert chat(server).status_code == 200
    assert len(main.chats()) == 5


def test_exhausted_budget_refuses_with_insufficient_quota(server_factory, upstreams):
    main, _ = upstreams
    server = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=main.base_url)
    result = server.graphql(
        'mutation { setBudget(input: {scope: PROJECT, scope_id: "apollo", limit_usd: 0.0001, '
        "period: DAILY, warning_threshold: 0.5}) { is_exhausted } }"
    )
    assert result["data"]["setBudget"]["is_exhausted"] is False
    headers = {"X-CB-Project": "apollo"}
    first = requests.post(
        server.openai_url + "/v1/chat/completions",
        headers=headers,
        timeout=30,
        json={"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]},
    )
    assert first.status_code == 200 and "x-cb-budget-warning" not in first.headers
    refused = requests.post(
        server.openai_url + "/v1/chat/completions",
        headers=headers,
        timeout=30,
        json={"model": "gpt-4", "messages": [{"role": "user", "content": "Hello"}]},
    )
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota" and "PROJECT budget 'apollo'" in error["message"]
    assert len(main.chats()) == 1
    other = chat(server, "gpt-4o-mini")  # no project: no budget applies
    assert other.status_code == 200
    status = server.graphql('{ budgetStatus(scope: PROJECT, scope_id: "apollo") { is_exhausted used_usd } }')
    assert status["data"]["budgetStatus"]["is_exhausted"] is True
