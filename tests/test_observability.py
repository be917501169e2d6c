"""Request ids, access logs and Prometheus metrics."""

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import requests

from tests.ws_client import WsClient


def test_request_id_is_echoed_when_valid_and_generated_otherwise(server):
    given = requests.get(server.openai_url + "/health", headers={"X-Request-ID": "abc-123"}, timeout=5)
    assert given.headers["X-Request-ID"] == "abc-123"
    bad = requests.get(server.openai_url + "/health", headers={"X-Request-ID": "bad id\twith junk"}, timeout=5)
    assert bad.headers["X-Request-ID"] != "bad id\twith junk" and len(bad.headers["X-Request-ID"]) == 32
    fresh = requests.get(server.graphql_url + "/health", timeout=5)
    assert len(fresh.headers["X-Request-ID"]) == 32


def _access_lines(server, wait_for: str) -> list[dict]:
    """Access-log entries, once the one for ``wait_for`` has been written (it is, on close)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in server.logs().splitlines() if line.startswith("{")]
        access = [e for e in lines if e["logger"] == "circuit_breaker.access"]
        if any(e.get("request_id") == wait_for for e in access) or time.monotonic() > deadline:
            return access
        time.sleep(0.05)


def test_one_access_log_line_per_request_with_its_id(server_factory):
    server = server_factory(ENVIRONMENT="production")
    requests.get(server.openai_url + "/health", headers={"X-Request-ID": "trace-me-1"}, timeout=5)
    requests.get(server.openai_url + "/nowhere", headers={"X-Request-ID": "trace-me-2"}, timeout=5)
    access = _access_lines(server, "trace-me-2")
    ok = [e for e in access if e.get("request_id") == "trace-me-1"]
    missing = [e for e in access if e.get("request_id") == "trace-me-2"]
    assert len(ok) == 1 and ok[0]["status"] == 200 and ok[0]["method"] == "GET" and ok[0]["path"] == "/health"
    assert len(missing) == 1 and missing[0]["status"] == 404
    assert "duration_ms" in ok[0]


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_websocket_session_is_logged_and_stops_counting_as_in_flight_when_it_ends(server):
    def in_flight() -> float:  # the scrape itself is in flight while it is answered
        return _value(_metrics(server), "cb_http_requests_in_flight", port="graphql")

    before = in_flight()
    ws = WsClient(server)
    ws.init()
    assert in_flight() == before + 1
    ws.close()
    for _ in range(50):
        if in_flight() == before:
            break
        time.sleep(0.1)
    assert in_flight() == before
    assert re.search(r"GET /ws \d{3}", server.logs())


def test_metrics_count_requests_by_port_route_and_status(server):
    series = 'cb_http_requests_total{port="openai",route="/health",status="200"}'
    before = _sample(requests.get(server.graphql_url + "/metrics", timeout=5).text, series)
    for _ in range(3):
        requests.get(server.openai_url + "/health", timeout=5)
    text = requests.get(server.graphql_url + "/metrics", timeout=5).text
    assert _sample(text, series) == before + 3
    assert 'cb_http_request_duration_seconds_bucket{le="0.005",port="openai",route="/health"}' in text


# -- the LLM side of the metrics -------------------------------------------------------------

WORKFLOW_MUTATIONS = """
mutation($wf: ID!) { createToken(input: {workflow_id: $wf}) { id } }
"""


def _metrics(server) -> str:
    return requests.get(server.graphql_url + "/metrics", timeout=5).text


def _value(text: str, name: str, **labels) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


def _chat(server, **body) -> requests.Response:
    payload = {"model": "gpt-4", "messages": [{"role": "user", "content": "Hi"}], **body}
    return requests.post(
        server.openai_url + "/v1/chat/completions",
        json=payload,
        timeout=10,
        headers={"X-Request-ID": body.pop("rid", "r-" + str(time.monotonic_ns()))},
    )


def test_chat_requests_feed_upstream_token_cost_and_overhead_metrics(server_factory):
    from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

    with OpenAIUpstream() as upstream:
        server = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url, ENVIRONMENT="production")
        assert _chat(server).status_code == 200
        streamed = _chat(server, stream=True)
        assert streamed.text.rstrip().endswith("data: [DONE]")
        text = _metrics(server)
    assert _value(text, "cb_llm_tokens_total", provider="openai", model="gpt-4", kind="prompt") > 0
    assert _value(text, "cb_llm_tokens_total", provider="openai", model="gpt-4", kind="completion") > 0
    assert _value(text, "cb_llm_cost_usd_total", provider="openai", model="gpt-4") > 0
    assert _value(text, "cb_upstream_latency_seconds_count", provider="openai", model="gpt-4") == 2
    assert _value(text, "cb_upstream_time_to_first_token_seconds_count", provider="openai", model="gpt-4") == 1
    assert _value(text, "cb_gateway_overhead_seconds_count") == 2
    assert 'cb_circuit_breaker_state{deployment="openai"} 0.0' in text
    assert _value(text, "cb_open_streams") == 0


def test_access_line_and_usage_record_carry_provider_model_tokens_cost_and_the_request_id(server_factory):
    from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

    with OpenAIUpstream() as upstream:
        server = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url, ENVIRONMENT="production")
        answer = _chat(server, stream=True, rid="stream-trace-7")
        assert answer.headers["X-Request-ID"] == "stream-trace-7"
        access = [e for e in _access_lines(server, "stream-trace-7") if e.get("request_id") == "stream-trace-7"]
    assert len(access) == 1
    line = access[0]
    assert line["provider"] == "openai" and line["model"] == "gpt-4" and line["client"] == "127.0.0.1"
    assert line["prompt_tokens"] > 0 and line["completion_tokens"] > 0 and line["cost_usd"] > 0
    # the access line is the request's usage line too: no second line says the same
    assert (line["usage_status"], line["streamed"], line["estimated"], line["attempts"]) == ("success", True, False, 1)
    logged = [json.loads(raw) for raw in server.logs().splitlines() if raw.startswith("{")]
    assert not [e for e in logged if e.get("request_id") == "stream-trace-7" and e["message"] == "usage recorded"]
    assert API_KEY not in server.logs()


def test_retries_fallbacks_upstream_rate_limits_and_budget_refusals_are_counted(server_factory):
    from tests.upstreams.openai_server import API_KEY, OpenAIUpstream, openai_error

    with OpenAIUpstream() as upstream:
        server = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url)
        upstream.fail_next(500, openai_error("boom", "server_error"))
        served = _chat(server, circuit_breaker={"fallback_models": ["gpt-3.5-turbo"]})
        assert served.status_code == 200 and served.headers["x-cb-fallback-used"] == "true"
        upstream.fail_next(429, openai_error("slow down", "rate_limit_error"), {"Retry-After": "30"})
        assert _chat(server).status_code == 429  # the provider's own 429
        refused = _chat(server)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
        budget = server.graphql("mutation { setBudget(input: {scope: GLOBAL, limit_usd: 0}) { is_exhausted } }")
        assert budget["data"]["setBudget"]["is_exhausted"] is True
        assert _chat(server, model="gpt-3.5-turbo").json()["error"]["code"] == "insufficient_quota"
        text = _metrics(server)
    assert _value(text, "cb_router_retries_total") == 1
    assert _value(text, "cb_router_fallbacks_total") == 1
    assert _value(text, "cb_rate_limited_total", limit="upstream") == 1
    assert _value(text, "cb_budget_refused_total") == 1


def test_workflow_tokens_and_transitions_are_counted_by_workflow(server):
    token = server.graphql(WORKFLOW_MUTATIONS, {"wf": "document_review"})["data"]["createToken"]["id"]
    fired = server.graphql(
        'mutation($t: ID!) { fireTransition(input: {token_id: $t, transition_id: "submit"}) { place } }', {"t": token}
    )
    assert fired["data"]["fireTransition"]["place"] == "pending_review"
    text = _metrics(server)
    assert _value(text, "cb_workflow_tokens_created_total", workflow="document_review") == 1
    assert _value(text, "cb_workflow_transitions_fired_total", workflow="document_review") == 1


def test_metrics_fold_every_worker_and_report_the_nats_connection(server_factory):
    server = server_factory("nats", WEB_CONCURRENCY=2, ENVIRONMENT="production")
    sent, pids = 0, set()
    deadline = time.monotonic() + 20
    while len(pids) < 2 and time.monotonic() < deadline:
        for _ in range(10):  # a fresh connection each: the kernel hands them to either worker
            requests.get(server.openai_url + "/health/live", headers={"X-Request-ID": f"w-{sent}"}, timeout=5)
            sent += 1
        access = _access_lines(server, f"w-{sent - 1}")
        pids = {e["pid"] for e in access if e.get("path") == "/health/live"}
    assert len(pids) == 2, "both workers served requests"
    deadline = time.monotonic() + 5  # a worker's counts reach the shared files within 0.5 s (README, Metrics)
    while (
        time.monotonic() < deadline
        and _value(_metrics(server), "cb_http_requests_total", port="openai", route="/health/live", status="200")
        != sent
    ):
        time.sleep(0.1)
    for _ in range(4):  # whichever worker answers the scrape reports the requests of both
        text = _metrics(server)
        assert _value(text, "cb_http_requests_total", port="openai", route="/health/live", status="200") == sent
    assert _value(text, "cb_nats_connected") == 1


_WORKER_FILE = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import os, gevent
    from prometheus_client import CollectorRegistry, multiprocess
    from cb import metrics

    def scraped(name):  # what another worker's /metrics reads: this worker's file
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=os.environ["PROMETHEUS_MULTIPROC_DIR"])
        return sum(s.value for f in registry.collect() for s in f.samples if s.name == name)

    metrics.retries.inc()
    metrics.retries.inc()
    metrics.open_streams.inc()
    print(scraped("cb_open_streams"))
    gevent.sleep(metrics.FLUSH_SECONDS + 0.2)
    print(scraped("cb_router_retries_total"))
    metrics.retries.inc()
    metrics.flush()
    print(scraped("cb_router_retries_total"))
""")


def test_a_workers_counts_reach_its_file_within_the_flush_interval_and_gauges_at_once(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", _WORKER_FILE],
        cwd=Path(__file__).parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1.0", "2.0", "3.0"]


# -- Kubernetes health forms -----------------------------------------------------------------


def test_live_answers_on_both_ports_and_ready_needs_a_provider(server_factory):
    from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

    bare = server_factory()
    for url in (bare.openai_url, bare.graphql_url):
        assert requests.get(url + "/health/live", timeout=5).json() == {"status": "alive"}
        not_ready = requests.get(url + "/health/ready", timeout=5)
        assert not_ready.status_code == 503 and not_ready.json()["checks"]["providers"] is False
    with OpenAIUpstream() as upstream:
        configured = server_factory(OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url)
        for url in (configured.openai_url, configured.graphql_url):
            ready = requests.get(url + "/health/ready", timeout=5)
            assert ready.status_code == 200 and ready.json()["checks"] == {
                "storage": True,
                "providers": True,
                "accepting": True,
            }


def test_ready_fails_when_nats_is_gone_but_live_does_not(server_factory, tmp_path):
    from tests.harness import NatsServer
    from tests.upstreams.openai_server import API_KEY, OpenAIUpstream

    own = NatsServer(tmp_path / "nats")
    own.start()
    try:
        with OpenAIUpstream() as upstream:
            server = server_factory("nats", NATS_URL=own.url, OPENAI_API_KEY=API_KEY, OPENAI_BASE_URL=upstream.base_url)
            assert requests.get(server.openai_url + "/health/ready", timeout=5).status_code == 200
            own.stop()
            deadline = time.monotonic() + 15
            while requests.get(server.openai_url + "/health/ready", timeout=5).status_code != 503:
                assert time.monotonic() < deadline, "readiness notices NATS is gone"
                time.sleep(0.2)
            assert requests.get(server.openai_url + "/health/live", timeout=5).status_code == 200
            assert _value(_metrics(server), "cb_nats_connected") == 0
    finally:
        own.stop()
