"""Cost tracking on a cluster: two gunicorn workers on nats, local OpenAI and Anthropic upstreams.

The usage ledger is a JetStream stream, so whichever worker answers a costAnalytics or
budget question sees the records every worker wrote, and they survive a restart.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import openai
import pytest
import requests

from tests.harness import Server
from tests.upstreams.anthropic_server import KEY as ANTHROPIC_KEY
from tests.upstreams.anthropic_server import AnthropicUpstream
from tests.upstreams.openai_server import API_KEY, OpenAIUpstream
from tests.upstreams.script import Answer

PRICES = {"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6), "claude-3-haiku-20240307": (0.25, 1.25)}
PROVIDER = {"gpt-4o": "openai", "gpt-4o-mini": "openai", "claude-3-haiku-20240307": "anthropic"}
REPORT = """{ costAnalytics { total_cost total_requests total_tokens prompt_tokens completion_tokens
  daily_usage monthly_usage provider_breakdown model_breakdown top_models } }"""


@pytest.fixture
def upstreams():
    with OpenAIUpstream() as gpt, AnthropicUpstream() as claude:
        yield gpt, claude


def cluster(server_factory, gpt, claude, **env) -> Server:
    server = server_factory(
        "nats",
        WEB_CONCURRENCY="2",
        OPENAI_API_KEY=API_KEY,
        OPENAI_BASE_URL=gpt.base_url,
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        ANTHROPIC_BASE_URL=claude.url,
        **env,
    )
    assert len(server.worker_pids()) == 2
    return server


def chat(server: Server, model: str, stream: bool, project: str | None = None) -> tuple[str, int, int]:
    """One chat through a fresh official client (a new connection, so either worker may take it)."""
    headers = {"X-CB-Project": project} if project else {}
    with openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused", max_retries=0, timeout=30) as client:
        messages = [{"role": "user", "content": f"Hello from {model}"}]
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model=model,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers=headers,
                )
            )
            usage, served = chunks[-1].usage, chunks[0].model
        else:
            answer = client.chat.completions.create(model=model, messages=messages, extra_headers=headers)
            usage, served = answer.usage, answer.model
    assert served == model
    return model, usage.prompt_tokens, usage.completion_tokens


def catalog_id(model: str) -> str:
    return "claude-3-haiku-20240307" if model == "claude-3-haiku" else model


def expected_totals(calls: list[tuple[str, int, int]]) -> dict:
    """What the analytics must say, summed independently of the server: per model and per provider."""
    per_model: dict[str, dict] = {}
    for model, prompt, completion in calls:
        inp, out = PRICES[catalog_id(model)]
        entry = per_model.setdefault(catalog_id(model), {"costs": [], "requests": 0, "tokens": 0})
        entry["costs"].append((prompt * inp + completion * out) / 1_000_000)
        entry["requests"] += 1
        entry["tokens"] += prompt + completion
    return per_model


def test_analytics_equal_the_ledger_to_the_cent_across_two_workers(server_factory, upstreams):
    gpt, claude = upstreams
    answers = [
        Answer("Hi there, friend.", prompt_tokens=20_000 + 137 * i, completion_tokens=5_000 + 71 * i) for i in range(12)
    ]
    claude.say(*answers)
    server = cluster(server_factory, gpt, claude)
    jobs = [(model, i % 2 == 1) for model in ("gpt-4o", "gpt-4o-mini", "claude-3-haiku") for i in range(12)]
    with ThreadPoolExecutor(8) as pool:
        calls = list(pool.map(lambda job: chat(server, *job), jobs))

    per_model = expected_totals(calls)
    claude_cost = math.fsum((a.prompt_tokens * 0.25 + a.completion_tokens * 1.25) / 1_000_000 for a in answers)
    assert math.fsum(per_model["claude-3-haiku-20240307"]["costs"]) == pytest.approx(claude_cost, abs=1e-12)
    total = math.fsum(c for m in per_model.values() for c in m["costs"])
    tokens = sum(m["tokens"] for m in per_model.values())
    assert total > 0.10  # enough money that "to the cent" means something

    today, month = datetime.now(UTC).strftime("%Y-%m-%d"), datetime.now(UTC).strftime("%Y-%m")
    for _ in range(6):  # each query may land on either worker: all of them see every record
        report = server.graphql(REPORT)["data"]["costAnalytics"]
        assert (report["total_requests"], report["total_tokens"]) == (36, tokens)
        assert round(report["total_cost"], 2) == round(total, 2)
        assert report["total_cost"] == pytest.approx(total, abs=1e-9)
        for model, want in per_model.items():
            got = report["model_breakdown"][model]
            assert (got["requests"], got["tokens"]) == (want["requests"], want["tokens"])
            assert got["cost"] == pytest.approx(math.fsum(want["costs"]), abs=1e-9)
        for provider in ("openai", "anthropic"):
            mine = [m for m in per_model if PROVIDER[m] == provider]
            got = report["provider_breakdown"][provider]
            assert got["requests"] == sum(per_model[m]["requests"] for m in mine)
            assert got["cost"] == pytest.approx(math.fsum(c for m in mine for c in per_model[m]["costs"]), abs=1e-9)
        assert [d["date"] for d in report["daily_usage"]] == [today]
        assert report["daily_usage"][0]["cost"] == pytest.approx(total, abs=1e-9)
        assert report["monthly_usage"][0]["month"] == month and report["monthly_usage"][0]["requests"] == 36
        assert report["top_models"][0]["model"] == max(per_model, key=lambda m: math.fsum(per_model[m]["costs"]))


def test_usage_ledger_survives_a_restart_on_nats(server_factory, upstreams):
    gpt, claude = upstreams
    prefix = Server.fresh_namespace()
    first = cluster(server_factory, gpt, claude, NATS_PREFIX=prefix)
    calls = [chat(first, "gpt-4o", False), chat(first, "claude-3-haiku", True), chat(first, "gpt-4o-mini", True)]
    before = first.graphql(REPORT)["data"]["costAnalytics"]
    assert before["total_requests"] == 3
    assert before["total_tokens"] == sum(p + c for _, p, c in calls)
    first.stop()

    second = cluster(server_factory, gpt, claude, NATS_PREFIX=prefix)
    after = second.graphql(REPORT)["data"]["costAnalytics"]
    assert after == before
    chat(second, "gpt-4o-mini", False)
    assert second.graphql(REPORT)["data"]["costAnalytics"]["total_requests"] == 4


def test_budget_warns_then_refuses_across_workers(server_factory, upstreams):
    gpt, claude = upstreams
    claude.say(*[Answer("Fine.", prompt_tokens=1000, completion_tokens=1000) for _ in range(4)])  # $0.0015 each
    server = cluster(server_factory, gpt, claude)
    result = server.graphql(
        'mutation { setBudget(input: {scope: PROJECT, scope_id: "apollo", limit_usd: 0.004, '
        "period: MONTHLY, warning_threshold: 0.5}) { is_warning is_exhausted } }"
    )
    assert result["data"]["setBudget"] == {"is_warning": False, "is_exhausted": False}

    def post():
        return requests.post(
            server.openai_url + "/v1/chat/completions",
            headers={"X-CB-Project": "apollo"},
            timeout=30,
            json={"model": "claude-3-haiku", "messages": [{"role": "user", "content": "Hi"}]},
        )

    warnings = [post().headers.get("x-cb-budget-warning") for _ in range(3)]  # spent before each: 0, 0.0015, 0.003
    assert warnings[:2] == [None, None]
    assert "PROJECT budget 'apollo' (MONTHLY) at 75.0%" in warnings[2]
    refused = post()
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "insufficient_quota" and "PROJECT budget 'apollo'" in error["message"]
    assert len(claude.received) == 3
    status = server.graphql(
        '{ budgetStatus(scope: PROJECT, scope_id: "apollo") { used_usd remaining_usd '
        "percentage_used is_warning is_exhausted } }"
    )["data"]["budgetStatus"]
    assert status["used_usd"] == pytest.approx(0.0045, abs=1e-12)
    assert (status["remaining_usd"], status["is_warning"], status["is_exhausted"]) == (0.0, True, True)
