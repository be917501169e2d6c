"""Request ids, access logs and Prometheus metrics."""

import json
import time

import requests


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


def test_metrics_count_requests_by_port_route_and_status(server):
    series = 'cb_http_requests_total{port="openai",route="/health",status="200"}'
    before = _sample(requests.get(server.graphql_url + "/metrics", timeout=5).text, series)
    for _ in range(3):
        requests.get(server.openai_url + "/health", timeout=5)
    text = requests.get(server.graphql_url + "/metrics", timeout=5).text
    assert _sample(text, series) == before + 3
    assert 'cb_http_request_duration_seconds_bucket{le="0.005",port="openai",route="/health"}' in text
