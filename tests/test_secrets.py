"""Secrets never appear in logs or responses, even when an upstream echoes them back."""

from __future__ import annotations

import requests

from tests.upstreams.base import Fault
from tests.upstreams.openai_server import OpenAIUpstream

PROVIDER_KEY = "sk-provider-secret-abcdefghijklmnop"
CLIENT_KEY = "cb-client-secret-abcdefghijklmnopq"
GRAPHQL_KEY = "graphql-secret-abcdefghijklmnop"
SECRETS = (PROVIDER_KEY, CLIENT_KEY, GRAPHQL_KEY)


def test_no_secret_in_logs_or_responses_when_upstreams_echo_them(server_factory):
    with OpenAIUpstream(api_key=PROVIDER_KEY) as upstream:
        server = server_factory(
            OPENAI_API_KEY=PROVIDER_KEY,
            OPENAI_BASE_URL=upstream.base_url,
            RUST_LOG="debug",
            OPENAI_API_KEY_REQUIRED="true",
            CB_API_KEYS=CLIENT_KEY,
            GRAPHQL_API_KEY=GRAPHQL_KEY,
        )
        echo = f"invalid key {PROVIDER_KEY}; headers: Authorization: Bearer {PROVIDER_KEY}; client {CLIENT_KEY}"
        upstream.faults.extend(
            [
                Fault(status=400, body={"error": {"message": echo, "type": "invalid_request_error", "code": None}}),
                Fault(status=500, body={"error": {"message": echo}}),
                Fault(status=401, body={"error": {"message": echo, "code": "invalid_api_key"}}),
                Fault(status=502, body=echo),
            ]
        )
        responses = []
        headers = {"Authorization": f"Bearer {CLIENT_KEY}"}
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(5):
            responses.append(
                requests.post(server.openai_url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
            )
        responses.append(
            requests.post(
                server.openai_url + "/v1/chat/completions",
                json=body,
                timeout=30,
                headers={"Authorization": f"Bearer {GRAPHQL_KEY}"},
            )
        )
        responses.append(
            requests.post(
                server.graphql_url + "/graphql",
                json={"query": "{ version }"},
                timeout=30,
                headers={"Authorization": f"Bearer {PROVIDER_KEY}"},
            )
        )
        responses.append(
            requests.post(
                server.graphql_url + "/graphql",
                json={"query": "{ nope }"},
                timeout=30,
                headers={"Authorization": f"Bearer {GRAPHQL_KEY}"},
            )
        )
        server.stop()
    assert {r.status_code for r in responses[:4]} - {200}, "the upstream errors were served"
    assert responses[4].status_code == 200
    seen = server.logs() + "".join(r.text + str(r.headers) for r in responses)
    for secret in SECRETS:
        assert secret not in seen, seen[max(0, seen.find(secret) - 300) : seen.find(secret) + 100]
    assert "[REDACTED]" in "".join(r.text for r in responses[:4])
