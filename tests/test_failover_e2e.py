"""Failover end to end: gunicorn, two local OpenAI upstreams told to fail, the official openai client.

The main deployment (OPENAI_BASE_URL) is tried first, the ``backup`` deployment (CB_CONFIG,
priority 1) second. Each test tags its requests with its own X-CB-Project, so analytics of
that project are the usage records of that test alone.
"""

from __future__ import annotations

import time
import uuid

import openai
import pytest
import requests

from tests.harness import backup_config, free_port
from tests.upstreams.base import Fault
from tests.upstreams.openai_server import API_KEY, REPLY, OpenAIUpstream

GPT_4O = (2.5, 10.0)  # USD per 1M prompt, completion tokens
DOWN = {"error": {"message": "upstream exploded", "type": "server_error"}}
ANALYTICS = """query($p: String) { costAnalytics(input: {project_id: $p}) {
  total_cost total_requests total_tokens model_breakdown provider_breakdown } }"""


def cost(usage, price=GPT_4O) -> float:
    return (usage.prompt_tokens * price[0] + usage.completion_tokens * price[1]) / 1_000_000


def start(server_factory, tmp_path, main_url: str, backup: OpenAIUpstream, prices: str = "", **env):
    config = backup_config(tmp_path, backup.base_url, prices)
    env = {
        "ROUTING_STRATEGY": "cost_optimized",
        "BREAKER_FAILURE_THRESHOLD": "100",
        "BREAKER_MIN_REQUESTS": "100",
        "UPSTREAM_FIRST_TOKEN_TIMEOUT": "1",
        "UPSTREAM_READ_TIMEOUT": "1",
        **env,
    }
    return server_factory(
        OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=main_url, BACKUP_OPENAI_KEY=API_KEY, CB_CONFIG=str(config), **env
    )


@pytest.fixture(scope="module")
def upstreams():
    with OpenAIUpstream() as main, OpenAIUpstream() as backup:
        yield main, backup


@pytest.fixture(scope="module")
def served(upstreams, tmp_path_factory):
    """One server for the tests that leave no lasting mark on the deployments' health."""
    from tests.harness import Server

    main, backup = upstreams
    tmp = tmp_path_factory.mktemp("failover")
    config = backup_config(tmp, backup.base_url)
    server = Server(
        tmp,
        env={
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_BASE_URL": main.base_url,
            "BACKUP_OPENAI_KEY": API_KEY,
            "CB_CONFIG": str(config),
            "ROUTING_STRATEGY": "cost_optimized",
            "BREAKER_FAILURE_THRESHOLD": "100",
            "BREAKER_MIN_REQUESTS": "100",
            "UPSTREAM_FIRST_TOKEN_TIMEOUT": "1",
            "UPSTREAM_READ_TIMEOUT": "1",
        },
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def server(served, upstreams):
    for upstream in upstreams:
        upstream.reset()
    return served


@pytest.fixture
def project() -> str:
    return "p-" + uuid.uuid4().hex[:8]


def client_for(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_url + "/v1", api_key="unused", max_retries=0, timeout=20)


def ask(server, project: str, stream: bool = False, model: str = "gpt-4o", **kw):
    """A chat through the openai client: (headers, text, usage)."""
    with client_for(server) as client:
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": "Hello"}],
            stream=stream,
            extra_headers={"X-CB-Project": project, **kw.pop("headers", {})},
            **kw,
            **({"stream_options": {"include_usage": True}} if stream else {}),
        )
        if not stream:
            completion = raw.parse()
            return raw.headers, completion.choices[0].message.content, completion.usage
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return raw.headers, text, chunks[-1].usage


def analytics(server, project: str) -> dict:
    return server.graphql(ANALYTICS, {"p": project})["data"]["costAnalytics"]


def usage_log(server, request_id: str, timeout: float = 5.0) -> list[str]:
    """The access lines of one request that carry its usage (waits for the first)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in server.logs().splitlines() if "usage_status=" in line and request_id in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def assert_billed_once(server, project: str, usage, price=GPT_4O) -> None:
    report = analytics(server, project)
    assert report["total_requests"] == 1
    assert report["total_tokens"] == usage.prompt_tokens + usage.completion_tokens
    assert report["total_cost"] == pytest.approx(cost(usage, price), abs=1e-12)


# -- streams: failover only before the first chunk -------------------------------------------


def test_stream_fails_over_when_the_upstream_breaks_before_the_first_chunk(server, upstreams, project):
    main, backup = upstreams
    main.faults.append(Fault(fail_after_chunks=1))  # the opening role chunk, then the connection drops
    headers, text, usage = ask(server, project, stream=True)
    assert text == REPLY
    assert (headers["x-cb-attempts"], headers["x-cb-deployment"], headers["x-cb-provider"]) == ("2", "backup", "openai")
    assert headers["x-cb-fallback-used"] == "false" and headers["x-cb-routing-strategy"] == "cost_optimized"
    assert (len(main.chats()), len(backup.chats())) == (1, 1)
    assert_billed_once(server, project, usage)


def test_stream_fails_over_when_the_first_token_is_late(server, upstreams, project):
    main, backup = upstreams
    main.slow_next(0, first_chunk_delay=10)  # headers at once, then nothing (UPSTREAM_FIRST_TOKEN_TIMEOUT=1)
    started = time.monotonic()
    headers, text, usage = ask(server, project, stream=True)
    assert text == REPLY and headers["x-cb-deployment"] == "backup" and headers["x-cb-attempts"] == "2"
    assert time.monotonic() - started < 8
    assert main.wait_for_disconnect(5) is not None  # the late attempt was closed, not left running
    assert_billed_once(server, project, usage)


def test_stream_fails_over_when_the_upstream_hangs_before_answering(server, upstreams, project):
    main, backup = upstreams
    main.hang_next(10)  # not even headers
    headers, text, usage = ask(server, project, stream=True)
    assert text == REPLY and headers["x-cb-deployment"] == "backup" and headers["x-cb-attempts"] == "2"
    assert_billed_once(server, project, usage)


def test_stream_broken_after_the_first_chunk_is_an_error_event_not_a_failover(server, upstreams, project):
    main, backup = upstreams
    main.faults.append(Fault(fail_after_chunks=3))  # role, "Hello!", " I'm", then the connection drops
    received = []
    request_id = "broken-" + project
    with client_for(server) as client:
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Hello"}],
            stream=True,
            extra_headers={"X-CB-Project": project, "X-Request-ID": request_id},
        )
        with pytest.raises(openai.APIError, match="connection broke"):
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Hello! I'm"
    assert (len(main.chats()), len(backup.chats())) == (1, 0)
    lines = usage_log(server, request_id)
    assert len(lines) == 1 and "usage_status=error" in lines[0]
    report = analytics(server, project)
    assert report["total_requests"] == 1 and report["total_tokens"] > 0  # what was delivered is billed once


# -- JSON requests ---------------------------------------------------------------------------


def test_json_request_fails_over_on_500_and_is_billed_once(server, upstreams, project):
    main, backup = upstreams
    main.fail_next(500, DOWN)
    headers, text, usage = ask(server, project)
    assert text == REPLY and (headers["x-cb-attempts"], headers["x-cb-deployment"]) == ("2", "backup")
    assert_billed_once(server, project, usage)


def test_json_request_fails_over_when_the_upstream_hangs(server, upstreams, project):
    main, backup = upstreams
    main.hang_next(10)  # UPSTREAM_READ_TIMEOUT=1
    headers, text, usage = ask(server, project)
    assert text == REPLY and (headers["x-cb-attempts"], headers["x-cb-deployment"]) == ("2", "backup")
    assert_billed_once(server, project, usage)


def test_first_route_success_reports_one_attempt(server, upstreams, project):
    headers, _, usage = ask(server, project)
    assert (headers["x-cb-attempts"], headers["x-cb-deployment"], headers["x-cb-fallback-used"]) == (
        "1",
        "openai",
        "false",
    )
    assert_billed_once(server, project, usage)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_request_failing_everywhere_writes_one_error_record_and_bills_nothing(server, upstreams, project, stream):
    main, backup = upstreams
    main.fail_next(500, DOWN)
    backup.fail_next(503, DOWN)
    request_id = f"fails-{stream}-{project}"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello"}], "stream": stream}
    response = requests.post(
        server.openai_url + "/v1/chat/completions",
        json=body,
        timeout=20,
        headers={"X-CB-Project": project, "X-Request-ID": request_id},
    )
    assert response.status_code == 502 and response.json()["error"]["type"] == "server_error"
    assert response.headers["x-cb-attempts"] == "2"
    lines = usage_log(server, request_id)
    assert len(lines) == 1 and "usage_status=error" in lines[0] and "cost_usd=0.0 " in lines[0] + " "
    report = analytics(server, project)
    assert (report["total_requests"], report["total_cost"], report["total_tokens"]) == (1, 0.0, 0)


def test_unknown_model_is_recorded_as_a_failed_request(server, project):
    response = requests.post(
        server.openai_url + "/v1/chat/completions",
        timeout=20,
        headers={"X-CB-Project": project},
        json={"model": "gpt-17", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert response.status_code == 404 and response.headers["x-cb-attempts"] == "0"
    assert analytics(server, project)["total_requests"] == 1


# -- faults that leave a mark: a server each -------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_refused_connection_fails_over(server_factory, tmp_path, upstreams, project, stream):
    main, backup = upstreams
    backup.reset()
    nowhere = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    server = start(server_factory, tmp_path, nowhere, backup)
    headers, text, usage = ask(server, project, stream=stream)
    assert text == REPLY and (headers["x-cb-attempts"], headers["x-cb-deployment"]) == ("2", "backup")
    assert_billed_once(server, project, usage)


def test_429_with_retry_after_fails_over_and_rests_that_deployment(server_factory, tmp_path, upstreams, project):
    main, backup = upstreams
    main.reset()
    backup.reset()
    server = start(server_factory, tmp_path, main.base_url, backup)
    main.fail_next(
        429,
        {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}},
        headers={"Retry-After": "30"},
    )
    first, _, _ = ask(server, project)
    assert (first["x-cb-attempts"], first["x-cb-deployment"]) == ("2", "backup")
    second, _, _ = ask(server, project)
    assert (second["x-cb-attempts"], second["x-cb-deployment"]) == ("1", "backup")  # no sleeping, no retry
    assert (len(main.chats()), len(backup.chats())) == (1, 2)


# -- strategies ------------------------------------------------------------------------------


def test_strategies_choose_by_price_and_by_measured_latency(server_factory, tmp_path, upstreams, project):
    main, backup = upstreams
    main.reset()
    backup.reset()
    cheap = (1.0, 2.0)
    server = start(
        server_factory,
        tmp_path,
        main.base_url,
        backup,
        ROUTING_STRATEGY="reliability_first",
        prices='prices = { "gpt-4o" = { input = 1.0, output = 2.0 } }',
    )
    headers, _, usage = ask(server, project)  # reliability_first: equal error rates, so priority: main
    assert (headers["x-cb-deployment"], headers["x-cb-routing-strategy"]) == ("openai", "reliability_first")
    headers, _, usage = ask(
        server, "cheap-" + project, extra_body={"circuit_breaker": {"routing_strategy": "cost_optimized"}}
    )
    assert (headers["x-cb-deployment"], headers["x-cb-routing-strategy"]) == ("backup", "cost_optimized")
    assert_billed_once(server, "cheap-" + project, usage, cheap)  # billed at the backup's own price

    for _ in range(4):
        # main answers, slowly: 1 s, so that after one sample its latency (EWMA, alpha 0.3) stays
        # far above anything a loaded machine adds to the backup's (0.3 s was overrun once)
        main.hang_next(1.0)
    chosen = []
    for _ in range(4):
        headers, _, _ = ask(server, project, headers={"X-CB-Routing-Strategy": "performance_first"})
        assert headers["x-cb-routing-strategy"] == "performance_first"
        chosen.append(headers["x-cb-deployment"])
    # main, never measured on its own, is tried once; after that the measured-faster backup wins
    assert chosen[-3:] == ["backup"] * 3


# -- virtual models and Ollama ---------------------------------------------------------------


def test_virtual_models_skip_an_unreachable_ollama(server_factory, upstreams, project):
    main, _ = upstreams
    main.reset()
    server = server_factory(
        OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=main.base_url, OLLAMA_BASE_URL=f"http://127.0.0.1:{free_port()}"
    )  # configured, but nobody home
    for virtual in ("auto", "cb:cost-optimal", "cb:fastest"):
        headers, text, _ = ask(server, project, model=virtual)
        assert headers["x-cb-provider"] == "openai" and text == REPLY
    ids = [m["id"] for m in requests.get(server.openai_url + "/v1/models", timeout=5).json()["data"]]
    assert "gpt-4o-mini" in ids and "auto" in ids and "llama3.2" not in ids
    missing = requests.post(
        server.openai_url + "/v1/chat/completions",
        timeout=10,
        json={"model": "llama3.2", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert missing.status_code == 404 and "has not listed it" in missing.json()["error"]["message"]
    assert [r.json["model"] for r in main.chats()][:2] == ["gpt-4o-mini", "gpt-4o-mini"]  # auto is balanced
    assert len(main.chats()) == 3


def test_cost_optimal_reaches_a_reachable_ollama(server_factory, upstreams, project):
    from tests.upstreams.ollama_server import OllamaUpstream

    main, _ = upstreams
    main.reset()
    with OllamaUpstream() as ollama:
        server = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=main.base_url, OLLAMA_BASE_URL=ollama.url)
        headers, _, _ = ask(server, project, model="cb:cost-optimal")
        assert (headers["x-cb-provider"], headers["x-cb-model"]) == ("ollama", "llama3.2")
        assert [r.path for r in ollama.received][-1] == "/api/chat" and not main.chats()


# -- /v1/models ------------------------------------------------------------------------------


def test_models_list_file_and_graphql_deployments_with_prices(server_factory, tmp_path, upstreams):
    main, backup = upstreams
    config = tmp_path / "models.toml"
    config.write_text(
        f'[[deployments]]\nid = "vllm"\ntype = "openai_compatible"\nbase_url = "{backup.base_url}"\n'
        'models = ["my-llama"]\nprices = { "my-llama" = { input = 0.2, output = 0.4 } }\n'
    )
    server = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=main.base_url, CB_CONFIG=str(config))
    added = server.graphql(
        'mutation($url: String, $p: JSON) { configureLlmProvider(input: {id: "lab", provider_type: "openai_compatible",'
        ' base_url: $url, models: ["lab-model"], prices: $p}) { id } }',
        {"url": backup.base_url, "p": {"lab-model": {"input": 0.5, "output": 1.5}}},
    )
    assert added.get("data", {}).get("configureLlmProvider", {}).get("id") == "lab", added
    time.sleep(0.6)  # every worker reloads managed deployments at least every half second
    with client_for(server) as client:
        ids = [m.id for m in client.models.list()]
    assert {"gpt-4o", "my-llama", "lab-model", "auto", "cb:cost-optimal"} <= set(ids)
    listed = {m["id"]: m for m in requests.get(server.openai_url + "/v1/models", timeout=5).json()["data"]}
    assert (listed["my-llama"]["input_price_per_million"], listed["my-llama"]["output_price_per_million"]) == (0.2, 0.4)
    assert (listed["lab-model"]["input_price_per_million"], listed["lab-model"]["deployments"]) == (0.5, ["lab"])
    assert listed["gpt-4o"]["input_price_per_million"] == 2.5 and listed["auto"]["virtual"] is True
    one = requests.get(server.openai_url + "/v1/models/lab-model", timeout=5).json()
    assert one["output_price_per_million"] == 1.5


def test_total_deadline_ends_a_request_whose_upstreams_all_hang_with_504(server_factory, tmp_path, upstreams):
    """ROUTER_DEADLINE_SECONDS=1 with 5-second read and first-token timeouts: every kind of request gives
    up on the hanging upstream at the deadline and answers 504, instead of waiting out each route's timeout."""
    main, backup = upstreams
    main.reset()
    backup.reset()
    server = start(
        server_factory,
        tmp_path,
        main.base_url,
        backup,
        ROUTER_DEADLINE_SECONDS="1",
        UPSTREAM_READ_TIMEOUT="5",
        UPSTREAM_FIRST_TOKEN_TIMEOUT="5",
    )
    hello = [{"role": "user", "content": "Hello"}]
    requests_ = {
        "json": ("/v1/chat/completions", {"model": "gpt-4o", "messages": hello}),
        "stream": ("/v1/chat/completions", {"model": "gpt-4o", "messages": hello, "stream": True}),
        "embeddings": ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "Hello"}),
    }
    for kind, (path, body) in requests_.items():
        main.hang_next(10)
        backup.hang_next(10)
        began = time.monotonic()
        answer = requests.post(server.openai_url + path, json=body, timeout=30)
        took = time.monotonic() - began
        assert answer.status_code == 504, kind
        error = answer.json()["error"]
        assert error["code"] == "upstream_timeout" and "1-second deadline" in error["message"], kind
        assert 0.9 < took < 4, (kind, took)  # the deadline, not one read timeout (5 s), let alone two
        assert len(main.received) == 1 and not backup.received, kind  # no route tried after the deadline
        main.reset()
        backup.reset()
