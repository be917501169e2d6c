"""Per-key rate limits: separate request and token windows, headers, exact across workers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.security_helpers import chat, create_key, start_with_upstream
from tests.upstreams.openai_server import OpenAIUpstream

KEY = "cb-rate-limit-test-key-0123456789"


@pytest.fixture
def upstream():
    with OpenAIUpstream() as server:
        yield server


def test_successful_responses_carry_the_ratelimit_headers(server_factory, upstream):
    server = start_with_upstream(server_factory, upstream, CB_API_KEYS=KEY, RATE_LIMIT_RPM="10", RATE_LIMIT_TPM="10000")
    response = chat(server, KEY)
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit-requests"] == "10"
    assert response.headers["x-ratelimit-remaining-requests"] == "9"
    assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    assert response.headers["x-ratelimit-limit-tokens"] == "10000"
    assert int(response.headers["x-ratelimit-remaining-tokens"]) < 10000


def test_over_the_request_limit_is_429_with_retry_after(server_factory, upstream):
    server = start_with_upstream(server_factory, upstream, CB_API_KEYS=KEY, RATE_LIMIT_RPM="2")
    assert [chat(server, KEY).status_code for _ in range(2)] == [200, 200]
    response = chat(server, KEY)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert int(response.headers["Retry-After"]) in range(1, 61)
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(upstream.chats()) == 2


def test_keys_have_their_own_windows(server_factory, upstream):
    server = start_with_upstream(server_factory, upstream, OPENAI_API_KEY_REQUIRED="true")
    first, _ = create_key(server, name="a", rpm_limit=1)
    second, _ = create_key(server, name="b", rpm_limit=1)
    assert chat(server, first).status_code == 200
    assert chat(server, first).status_code == 429
    assert chat(server, second).status_code == 200


def test_token_limit_is_checked_with_the_estimate_before_the_upstream(server_factory, upstream):
    server = start_with_upstream(server_factory, upstream, CB_API_KEYS=KEY, RATE_LIMIT_TPM="500")
    response = chat(server, KEY, max_tokens=1000)
    assert response.status_code == 429
    assert "tokens" in response.json()["error"]["message"]
    assert response.headers["x-ratelimit-limit-tokens"] == "500"
    assert upstream.chats() == []


def test_tokens_are_settled_with_the_real_usage(server_factory, upstream):
    server = start_with_upstream(server_factory, upstream, CB_API_KEYS=KEY, RATE_LIMIT_TPM="5000")
    first = chat(server, KEY, max_tokens=2000)  # reserves ~2002, really uses a few dozen
    used = first.json()["usage"]["total_tokens"]
    second = chat(server, KEY, max_tokens=2000)
    assert second.status_code == 200
    remaining = int(second.headers["x-ratelimit-remaining-tokens"])
    assert remaining == 5000 - used - (2000 + 2)  # the first settled, the second still an estimate
    third = requests.get(server.openai_url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert int(third.headers["x-ratelimit-remaining-tokens"]) == 5000 - 2 * used


def test_streamed_tokens_are_settled_too(server_factory, upstream):
    server = start_with_upstream(server_factory, upstream, CB_API_KEYS=KEY, RATE_LIMIT_TPM="5000")
    with requests.post(
        server.openai_url + "/v1/chat/completions",
        stream=True,
        timeout=30,
        headers={"Authorization": f"Bearer {KEY}"},
        json={
            "model": "gpt-4o-mini",
            "stream": True,
            "max_tokens": 3000,
            "messages": [{"role": "user", "content": "Hello"}],
        },
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit-tokens"] == "5000"
        b"".join(response.iter_content())
    after = requests.get(server.openai_url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    assert 4800 < int(after.headers["x-ratelimit-remaining-tokens"]) < 5000


def test_sixty_rpm_across_four_nats_workers_admits_exactly_sixty_of_a_hundred(server_factory, upstream):
    server = start_with_upstream(
        server_factory, upstream, "nats", WEB_CONCURRENCY="4", CB_API_KEYS=KEY, RATE_LIMIT_RPM="60"
    )
    with ThreadPoolExecutor(100) as pool:
        statuses = list(pool.map(lambda _: chat(server, KEY).status_code, range(100)))
    assert statuses.count(200) == 60, statuses
    assert statuses.count(429) == 40
    assert len(upstream.chats()) == 60
